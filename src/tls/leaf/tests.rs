use super::*;
use crate::tls::ca::test_ca;
use x509_parser::prelude::*;

fn store(name: &str, capacity: usize) -> Arc<SharedLeafStore> {
    SharedLeafStore::new(LeafMinter::new(test_ca(name)).unwrap(), capacity)
}

fn parse(ck: &CertifiedKey) -> X509Certificate<'_> {
    parse_x509_certificate(&ck.cert[0]).unwrap().1
}

#[test]
fn leaf_for_dns_name() {
    let s = store("leaf-dns", 16);
    let ck = s.minter().mint("Example.COM.", None).unwrap();
    assert_eq!(ck.cert.len(), 2, "leaf + CA");
    assert_eq!(ck.cert[1], *s.minter().ca().cert_der());
    let cert = parse(&ck);
    assert_eq!(cert.subject().to_string(), "CN=example.com");
    assert_eq!(cert.issuer().to_string(), "CN=luring CA, O=luring");
    assert_eq!(sans_from_der(&ck.cert[0]), vec!["example.com".to_owned()]);
    let v = cert.validity();
    let total = v.not_after.timestamp() - v.not_before.timestamp();
    assert!(total <= 397 * 86400, "validity {total}s");
    let backdate = OffsetDateTime::now_utc().unix_timestamp() - v.not_before.timestamp();
    assert!(
        (2 * 86400 - 60..=2 * 86400 + 60).contains(&backdate),
        "backdated {backdate}s"
    );
    assert!(!cert.is_ca());
    // The key in the chain is the process-wide leaf key.
    assert!(ck.keys_match().is_ok());
}

#[test]
fn leaf_for_ip_and_upstream_sans() {
    let s = store("leaf-ip", 16);
    let ck = s.minter().mint("127.0.0.1", None).unwrap();
    assert_eq!(sans_from_der(&ck.cert[0]), vec!["127.0.0.1".to_owned()]);
    let ck = s.minter().mint("[::1]", None).unwrap();
    assert_eq!(sans_from_der(&ck.cert[0]), vec!["::1".to_owned()]);

    let upstream = vec![
        "*.example.com".to_owned(),
        "example.com".to_owned(),
        "10.1.2.3".to_owned(),
        "bad name".to_owned(),
    ];
    let ck = s.minter().mint("example.com", Some(&upstream)).unwrap();
    assert_eq!(
        sans_from_der(&ck.cert[0]),
        vec![
            "example.com".to_owned(),
            "*.example.com".to_owned(),
            "10.1.2.3".to_owned()
        ]
    );
}

#[test]
fn bad_hosts_are_errors() {
    let s = store("leaf-bad", 16);
    for host in ["", "exa mple.com", "bücher.de", "a\0b"] {
        assert!(
            matches!(s.minter().mint(host, None), Err(LeafError::BadHost { .. })),
            "{host:?}"
        );
    }
    assert!(sans_from_der(b"garbage").is_empty());
    assert!(sans_from_der(&[]).is_empty());
}

#[test]
fn serials_differ() {
    let s = store("leaf-serial", 16);
    let a = s.minter().mint("a.test", None).unwrap();
    let b = s.minter().mint("a.test", None).unwrap();
    assert_ne!(parse(&a).raw_serial(), parse(&b).raw_serial());
}

#[test]
fn two_level_cache() {
    let shared = store("leaf-cache", 3);
    let mut w1 = LeafCache::new(shared.clone(), 2);
    let mut w2 = LeafCache::new(shared.clone(), 2);
    let a1 = w1.get("a.test", None).unwrap();
    assert!(
        Arc::ptr_eq(&a1, &w1.get("a.test", None).unwrap()),
        "local hit"
    );
    assert!(
        Arc::ptr_eq(&a1, &w1.get("A.TEST", None).unwrap()),
        "normalized key"
    );
    assert!(
        Arc::ptr_eq(&a1, &w2.get("a.test", None).unwrap()),
        "other worker hits shared level"
    );
    let sans = vec!["x.test".to_owned()];
    let with_sans = w1.get("a.test", Some(&sans)).unwrap();
    assert!(
        !Arc::ptr_eq(&a1, &with_sans),
        "upstream SANs are part of the key"
    );
    // Bounded: the shared level holds 3, the local level 2.
    for h in ["b.test", "c.test", "d.test", "e.test"] {
        w1.get(h, None).unwrap();
    }
    assert!(w1.local.map.len() <= 2);
    assert!(shared.lock().map.len() <= 3);
    assert!(
        !Arc::ptr_eq(&a1, &w1.get("a.test", None).unwrap()),
        "evicted, re-minted"
    );
}
