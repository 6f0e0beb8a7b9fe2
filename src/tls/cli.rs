//! Bodies of the `luring ca ...` subcommands, as functions returning text or bytes;
//! the clap wiring lives with the rest of the CLI.

use std::path::Path;

use super::ca::{Ca, CaError, CaKeyType, Confdir};

/// Output format of `luring ca export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// PEM text.
    #[default]
    Pem,
    /// Raw DER bytes.
    Der,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pem" => Ok(Self::Pem),
            "der" => Ok(Self::Der),
            other => Err(format!("unknown format {other:?} (expected pem or der)")),
        }
    }
}

/// `luring ca path`: the directory and the three file paths, one per line.
pub fn ca_path(dir: &Confdir) -> String {
    format!(
        "{}\n{}\n{}\n{}\n",
        dir.path().display(),
        dir.cert_pem_path().display(),
        dir.cert_der_path().display(),
        dir.key_path().display()
    )
}

/// `luring ca show`: subject, fingerprint, validity, files and how to trust the CA.
pub fn ca_show(ca: &Ca) -> String {
    let i = ca.info();
    let fmt = format_utc;
    let pem = i.cert_pem_path.display();
    format!(
        "Subject:      {subject}
SHA-256:      {fp}
Valid from:   {nb}
Valid until:  {na}
Key:          {alg}
Certificate:  {pem} (PEM), {der} (DER)
Private key:  {key} (mode 0600; never share it)

Trust it:
  Debian/Ubuntu (system store, curl, most CLI tools):
    sudo cp {pem} /usr/local/share/ca-certificates/luring.crt
    sudo update-ca-certificates
  Firefox (own store):
    Settings > Privacy & Security > Certificates > View Certificates >
    Authorities > Import... > {pem}, tick \"Trust this CA to identify websites\";
    or for managed installs, policies.json:
    {{\"policies\": {{\"Certificates\": {{\"Install\": [\"{pem}\"]}}}}}}
  Chrome/Chromium on Linux (NSS store):
    certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n luring -i {pem}
",
        subject = i.subject,
        fp = i.sha256_fingerprint,
        nb = fmt(i.not_before),
        na = fmt(i.not_after),
        alg = i.key_algorithm,
        der = i.cert_der_path.display(),
        key = i.key_path.display(),
    )
}

/// `luring ca export --format pem|der`: the certificate bytes (never the key).
pub fn ca_export(ca: &Ca, format: ExportFormat) -> Vec<u8> {
    match format {
        ExportFormat::Pem => ca.cert_pem().as_bytes().to_vec(),
        ExportFormat::Der => ca.cert_der().as_ref().to_vec(),
    }
}

/// `luring ca export ... --out FILE`: writes the export to `out` (mode 0644).
pub fn ca_export_to(ca: &Ca, format: ExportFormat, out: &Path) -> Result<(), CaError> {
    std::fs::write(out, ca_export(ca, format)).map_err(|source| CaError::Io {
        path: out.to_owned(),
        source,
    })
}

/// `luring ca new [--force]`: creates (or with `force`, rotates) the CA and returns
/// a message with the new fingerprint.
pub fn ca_new(dir: &Confdir, key_type: CaKeyType, force: bool) -> Result<String, CaError> {
    let ca = Ca::create_new(dir, key_type, force)?;
    Ok(format!(
        "created new CA in {}\nSHA-256: {}\nClients trusting the previous CA must import the new certificate ({}).\n",
        dir.path().display(),
        ca.info().sha256_fingerprint,
        ca.info().cert_pem_path.display()
    ))
}

/// `2026-11-21 22:40:00 UTC`; avoids needing time's `formatting` feature.
fn format_utc(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
