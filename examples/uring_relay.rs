//! A minimal io_uring L4 relay, to measure the floor of this machine's kernel path.
//!
//! Not part of luring: a yardstick for benches/compare.sh. It does the least any
//! io_uring proxy can do per request (one upstream connection per client, bytes read
//! from one socket written to the other, no parsing), on one thread, in one ring, with
//! the ring features that cut kernel work the most. What it costs per request is what
//! an io_uring proxy cannot go below here; see docs/perf.md.
//!
//! usage: uring_relay LISTEN_PORT UPSTREAM_ADDR [--basic] [--no-defer]
//!   default:    multishot receives into a provided-buffer ring (the poll stays armed,
//!               no re-arm per receive), DEFER_TASKRUN + SINGLE_ISSUER
//!   --basic:    one plain receive at a time per direction into its own buffer
//!   --no-defer: COOP_TASKRUN instead of DEFER_TASKRUN
//! Prints "listening on PORT" once bound.

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::VecDeque;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

const BUF_SIZE: usize = 16 * 1024;
const RING_BUFS: u16 = 1024;
const GROUP: u16 = 0;
const ACCEPT: u64 = u64::MAX;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;

/// One direction of a relayed connection: bytes read from `from` are written to `to`.
struct Dir {
    from: RawFd,
    to: RawFd,
    /// Received chunks not yet fully sent: (buffer id, offset, length).
    queue: VecDeque<(u16, usize, usize)>,
    sending: bool,
    recv_armed: bool,
    /// `from` reached EOF: once the queue drains, `to` is half-closed.
    eof: bool,
    /// --basic: this direction's own buffer.
    own: Vec<u8>,
}

struct Pair {
    dirs: [Dir; 2],
    inflight: u32,
    closing: bool,
}

struct Relay {
    ring: IoUring,
    pairs: Vec<Option<Pair>>,
    free: Vec<usize>,
    bufs: Vec<u8>,
    buf_ring: *mut types::BufRingEntry,
    ring_tail: u16,
    basic: bool,
    listen_fd: RawFd,
    upstream: String,
}

fn tag(slot: usize, dir: usize, op: u64) -> u64 {
    ((slot as u64) << 8) | ((dir as u64) << 4) | op
}

impl Relay {
    fn push(&mut self, e: squeue::Entry) {
        // SAFETY: every buffer an entry points at lives in `self` until its completion.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit().expect("submit");
        }
    }

    fn give_back(&mut self, bid: u16) {
        let mask = RING_BUFS - 1;
        // SAFETY: the ring holds RING_BUFS entries; the kernel reads entries up to the
        // tail, which is published after the entry is written.
        unsafe {
            let e = &mut *self.buf_ring.add((self.ring_tail & mask) as usize);
            e.set_addr(self.bufs.as_ptr().add(bid as usize * BUF_SIZE) as u64);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
            self.ring_tail = self.ring_tail.wrapping_add(1);
            let tail =
                types::BufRingEntry::tail(self.buf_ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.ring_tail, std::sync::atomic::Ordering::Release);
        }
    }

    fn arm_recv(&mut self, slot: usize, d: usize) {
        let Some(p) = self.pairs[slot].as_mut() else {
            return;
        };
        let dir = &mut p.dirs[d];
        let e = if self.basic {
            opcode::Recv::new(types::Fd(dir.from), dir.own.as_mut_ptr(), BUF_SIZE as u32).build()
        } else {
            opcode::RecvMulti::new(types::Fd(dir.from), GROUP).build()
        };
        dir.recv_armed = true;
        p.inflight += 1;
        self.push(e.user_data(tag(slot, d, OP_RECV)));
    }

    fn send_next(&mut self, slot: usize, d: usize) {
        let basic = self.basic;
        let bufs = self.bufs.as_ptr();
        let Some(p) = self.pairs[slot].as_mut() else {
            return;
        };
        let dir = &mut p.dirs[d];
        if dir.sending || p.closing {
            return;
        }
        let Some(&(bid, off, len)) = dir.queue.front() else {
            return;
        };
        let base = if basic {
            dir.own.as_ptr()
        } else {
            // SAFETY: bid < RING_BUFS, inside `bufs`.
            unsafe { bufs.add(bid as usize * BUF_SIZE) }
        };
        // SAFETY: off < len <= BUF_SIZE.
        let ptr = unsafe { base.add(off) };
        let e = opcode::Send::new(types::Fd(dir.to), ptr, (len - off) as u32).build();
        dir.sending = true;
        p.inflight += 1;
        self.push(e.user_data(tag(slot, d, OP_SEND)));
    }

    /// After EOF from one side and everything before it sent: half-close the other side;
    /// once both directions are done, the pair is closed.
    fn finish_if_drained(&mut self, slot: usize, d: usize) {
        let Some(p) = self.pairs[slot].as_mut() else {
            return;
        };
        let dir = &p.dirs[d];
        if !dir.eof || dir.sending || !dir.queue.is_empty() {
            return;
        }
        // SAFETY: plain shutdown of an owned fd.
        unsafe { libc::shutdown(dir.to, libc::SHUT_WR) };
        if p.dirs[1 - d].eof && p.dirs[1 - d].queue.is_empty() && !p.dirs[1 - d].sending {
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(p) = self.pairs[slot].as_mut() else {
            return;
        };
        if !p.closing {
            p.closing = true;
            for fd in [p.dirs[0].from, p.dirs[1].from] {
                // SAFETY: plain shutdown of an owned fd; pending receives then complete.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
        if p.inflight == 0 {
            let p = self.pairs[slot].take().expect("pair");
            for (bid, _, _) in p
                .dirs
                .iter()
                .flat_map(|d| d.queue.iter().copied())
                .collect::<Vec<_>>()
            {
                if !self.basic {
                    self.give_back(bid);
                }
            }
            for fd in [p.dirs[0].from, p.dirs[1].from] {
                // SAFETY: no operation refers to the fd any more.
                unsafe { libc::close(fd) };
            }
            self.free.push(slot);
        }
    }

    fn on_accept(&mut self, res: i32) {
        self.push(
            opcode::Accept::new(
                types::Fd(self.listen_fd),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .build()
            .user_data(ACCEPT),
        );
        if res < 0 {
            return;
        }
        let client = res;
        let up = match TcpStream::connect(&self.upstream) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("upstream: {e}");
                // SAFETY: the accepted fd is ours.
                unsafe { libc::close(client) };
                return;
            }
        };
        let _ = up.set_nodelay(true);
        let up = up.into_raw_fd();
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a live int.
        unsafe {
            libc::setsockopt(
                client,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        let dir = |from, to| Dir {
            from,
            to,
            queue: VecDeque::new(),
            sending: false,
            recv_armed: false,
            eof: false,
            own: if self.basic {
                vec![0; BUF_SIZE]
            } else {
                Vec::new()
            },
        };
        let pair = Pair {
            dirs: [dir(client, up), dir(up, client)],
            inflight: 0,
            closing: false,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.pairs[s] = Some(pair);
                s
            }
            None => {
                self.pairs.push(Some(pair));
                self.pairs.len() - 1
            }
        };
        self.arm_recv(slot, 0);
        self.arm_recv(slot, 1);
    }

    fn on_recv(&mut self, slot: usize, d: usize, res: i32, flags: u32) {
        let basic = self.basic;
        let Some(p) = self.pairs[slot].as_mut() else {
            return;
        };
        p.inflight -= 1;
        let more = cqueue::more(flags);
        if !more {
            p.dirs[d].recv_armed = false;
        }
        if res <= 0 {
            if res == -libc::ENOBUFS {
                // all buffers are queued for sending; receive again once one is back
                return;
            }
            let eof = res == 0;
            p.dirs[d].eof |= eof;
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.give_back(bid);
            }
            if eof {
                self.finish_if_drained(slot, d);
            } else {
                self.close(slot);
            }
            return;
        }
        if more {
            p.inflight += 1; // the multishot receive is still armed
        }
        let bid = if basic {
            0
        } else {
            cqueue::buffer_select(flags).expect("buffer id")
        };
        p.dirs[d].queue.push_back((bid, 0, res as usize));
        if p.closing {
            self.close(slot);
            return;
        }
        self.send_next(slot, d);
        if basic {
            return; // the next receive is armed once this chunk is sent
        }
        if !more {
            self.arm_recv(slot, d);
        }
    }

    fn on_send(&mut self, slot: usize, d: usize, res: i32) {
        let basic = self.basic;
        let Some(p) = self.pairs[slot].as_mut() else {
            return;
        };
        p.inflight -= 1;
        let dir = &mut p.dirs[d];
        dir.sending = false;
        if res <= 0 || p.closing {
            self.close(slot);
            return;
        }
        let front = dir.queue.front_mut().expect("queued chunk");
        front.1 += res as usize;
        if front.1 < front.2 {
            self.send_next(slot, d);
            return;
        }
        let (bid, _, _) = dir.queue.pop_front().expect("queued chunk");
        let rearm = !dir.recv_armed && !dir.eof;
        if dir.eof {
            if !basic {
                self.give_back(bid);
            }
            self.send_next(slot, d);
            self.finish_if_drained(slot, d);
        } else if basic {
            self.arm_recv(slot, d);
        } else {
            self.give_back(bid);
            self.send_next(slot, d);
            if rearm {
                // a receive that stopped on ENOBUFS resumes now a buffer is back
                self.arm_recv(slot, d);
            }
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: uring_relay LISTEN_PORT UPSTREAM_ADDR [--basic] [--no-defer]");
        std::process::exit(2);
    }
    let basic = args.iter().any(|a| a == "--basic");
    let defer = !args.iter().any(|a| a == "--no-defer");
    let listener = TcpListener::bind(("127.0.0.1", args[1].parse::<u16>().expect("port")))?;
    let mut b = IoUring::builder();
    b.setup_single_issuer();
    if defer {
        b.setup_defer_taskrun();
    } else {
        b.setup_coop_taskrun();
    }
    let ring = b.build(1024)?;
    let bufs = vec![0u8; BUF_SIZE * RING_BUFS as usize];
    let layout =
        std::alloc::Layout::from_size_align(RING_BUFS as usize * 16, 4096).expect("layout");
    // SAFETY: non-zero size; zeroed memory is a valid (empty) ring.
    let buf_ring = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
    let mut relay = Relay {
        ring,
        pairs: Vec::new(),
        free: Vec::new(),
        bufs,
        buf_ring,
        ring_tail: 0,
        basic,
        listen_fd: listener.as_raw_fd(),
        upstream: args[2].clone(),
    };
    if !basic {
        // SAFETY: the ring memory is page-aligned and lives for the whole process.
        unsafe {
            relay
                .ring
                .submitter()
                .register_buf_ring(buf_ring as u64, RING_BUFS, GROUP)?
        };
        for bid in 0..RING_BUFS {
            relay.give_back(bid);
        }
    }
    println!("listening on {}", listener.local_addr()?.port());
    relay.on_accept(-1);
    loop {
        match relay.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        let done: Vec<(u64, i32, u32)> = relay
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (ud, res, flags) in done {
            if ud == ACCEPT {
                relay.on_accept(res);
                continue;
            }
            let slot = (ud >> 8) as usize;
            let d = ((ud >> 4) & 0xf) as usize;
            match ud & 0xf {
                OP_RECV => relay.on_recv(slot, d, res, flags),
                OP_SEND => relay.on_send(slot, d, res),
                _ => {}
            }
        }
    }
}
