//! The `luring` binary.

use clap::Parser;
use luring::cli::{Cli, Command};
use std::io::Write;

#[global_allocator]
static GLOBAL: Alloc = Alloc;

/// mimalloc, asked for aligned memory only when the alignment is more than its
/// blocks have anyway. The `mimalloc` crate passes every allocation to
/// `mi_malloc_aligned`, and mimalloc 3 serves an aligned request over 1 KiB whose
/// size class is not a power of two by over-allocating and marking the page as
/// holding interior pointers (about 200 more instructions, and slower frees from
/// that page): nine allocations of every request on a new connection took that way
/// for an alignment of 8 or 16, which every mimalloc block has (as std's System
/// allocator reasons for malloc).
struct Alloc;

/// The alignment every mimalloc block of at least this size has (MI_MAX_ALIGN_SIZE).
const MI_MAX_ALIGN: usize = 16;

/// Whether a block of `size` bytes from plain `mi_malloc` has `align` already.
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= MI_MAX_ALIGN && align <= size
}

// SAFETY: each method forwards to the mimalloc call for the same job; plain
// `mi_malloc` / `mi_zalloc` / `mi_realloc` only serve layouts whose alignment their
// blocks already have.
unsafe impl std::alloc::GlobalAlloc for Alloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        if plain(layout.align(), size) {
            libmimalloc_sys::mi_realloc(ptr.cast(), size).cast()
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, size)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    // the commands that move bulk data; the others stay one quick process
    if matches!(cli.command, Command::Run(_) | Command::Bench(_)) {
        luring::runtime::copy_tuning::reexec_with_fast_copies();
    }
    let code = match cli.command {
        Command::Run(args) => match args.to_config() {
            Ok(cfg) => {
                luring::logging::init(&cfg.log_level);
                match luring::runtime::run(cfg) {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "luring: {e}");
                        1
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "luring: {e}");
                2
            }
        },
        Command::Check { files } => luring::cli::check_command(&files),
        Command::Ca { confdir, action } => luring::cli::ca_command(confdir, action),
        Command::Flows { action } => luring::flows::cli::run(action),
        Command::Bench(args) => luring::bench::cli::run(args),
    };
    std::process::exit(code);
}
