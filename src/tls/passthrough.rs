//! Which connections are intercepted and which are relayed untouched.
//!
//! Same semantics as mitmproxy's `ignore_hosts` / `allow_hosts`: each pattern is a
//! regular expression searched (unanchored, case-insensitive) in `"host:port"`;
//! anchor it yourself (`^example\.com:443$`) for an exact match. `--ignore-hosts`
//! relays matching hosts untouched; `--allow-hosts` intercepts only matching hosts;
//! giving both is an error, as in mitmproxy.

use regex::{RegexSet, RegexSetBuilder};

/// Errors building passthrough rules.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    /// Both lists were given.
    #[error("--ignore-hosts and --allow-hosts are mutually exclusive")]
    BothGiven,
    /// A pattern is not a valid regular expression.
    #[error("invalid host pattern: {0}")]
    BadRegex(#[from] regex::Error),
}

#[derive(Debug, Clone)]
enum Rule {
    InterceptAll,
    Ignore(RegexSet),
    Allow(RegexSet),
}

/// Compiled `--ignore-hosts` / `--allow-hosts` rules.
#[derive(Debug, Clone)]
pub struct Passthrough {
    rule: Rule,
}

impl Default for Passthrough {
    fn default() -> Self {
        Self {
            rule: Rule::InterceptAll,
        }
    }
}

impl Passthrough {
    /// Compiles the patterns; both lists non-empty is an error.
    pub fn new(ignore_hosts: &[String], allow_hosts: &[String]) -> Result<Self, PassthroughError> {
        let build = |pats: &[String]| RegexSetBuilder::new(pats).case_insensitive(true).build();
        let rule = match (ignore_hosts.is_empty(), allow_hosts.is_empty()) {
            (true, true) => Rule::InterceptAll,
            (false, true) => Rule::Ignore(build(ignore_hosts)?),
            (true, false) => Rule::Allow(build(allow_hosts)?),
            (false, false) => return Err(PassthroughError::BothGiven),
        };
        Ok(Self { rule })
    }

    /// Whether a connection to `host:port` is intercepted (false: relay untouched).
    pub fn should_intercept(&self, host: &str, port: u16) -> bool {
        self.should_intercept_any(&[host], port)
    }

    /// Like [`Passthrough::should_intercept`] for a connection known under several
    /// names (CONNECT host, SNI, destination IP): mitmproxy ignores the connection if
    /// any name matches an ignore pattern, and intercepts with allow patterns only if
    /// some name matches.
    pub fn should_intercept_any(&self, hosts: &[&str], port: u16) -> bool {
        let matches = |set: &RegexSet| {
            hosts
                .iter()
                .filter(|h| !h.is_empty())
                .any(|h| set.is_match(&format!("{h}:{port}")))
        };
        match &self.rule {
            Rule::InterceptAll => true,
            Rule::Ignore(set) => !matches(set),
            Rule::Allow(set) => matches(set),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn default_intercepts_everything() {
        let p = Passthrough::new(&[], &[]).unwrap();
        assert!(p.should_intercept("example.com", 443));
    }

    #[test]
    fn ignore_hosts_relays_matches() {
        let p = Passthrough::new(&s(&[r"^example\.com:443$", r"\.apple\.com"]), &[]).unwrap();
        assert!(!p.should_intercept("example.com", 443));
        assert!(
            !p.should_intercept("EXAMPLE.com", 443),
            "case-insensitive like mitmproxy"
        );
        assert!(
            p.should_intercept("example.com", 8443),
            "port is part of the match"
        );
        assert!(
            !p.should_intercept("push.apple.com", 5223),
            "unanchored search"
        );
        assert!(p.should_intercept("example.org", 443));
        assert!(!p.should_intercept_any(&["10.0.0.1", "push.apple.com"], 443));
    }

    #[test]
    fn allow_hosts_intercepts_only_matches() {
        let p = Passthrough::new(&[], &s(&[r"^api\.example\.com:"])).unwrap();
        assert!(p.should_intercept("api.example.com", 443));
        assert!(!p.should_intercept("www.example.com", 443));
        assert!(p.should_intercept_any(&["93.184.216.34", "api.example.com"], 443));
        assert!(!p.should_intercept_any(&[""], 443));
    }

    #[test]
    fn both_lists_or_bad_regex_is_an_error() {
        assert!(matches!(
            Passthrough::new(&s(&["a"]), &s(&["b"])),
            Err(PassthroughError::BothGiven)
        ));
        assert!(matches!(
            Passthrough::new(&s(&["("]), &[]),
            Err(PassthroughError::BadRegex(_))
        ));
    }
}
