//! Published vectors and ClientHellos captured from real clients on this machine.

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn parse_all(bytes: &[u8]) -> ClientHello {
    parse_client_hello(bytes).unwrap().unwrap()
}

// Source of the next four vectors: gchq/CyberChef, tests/operations/tests/JA4.mjs
// ("JA4 Fingerprint: TLS 1.3", "TLS 1.2", "TLS 1.3 with whitespace-only ALPN",
// "TLS 1.3 with ALPN containing a whitespace"), expected JA4 values from that file.
/// Chrome ClientHello (SNI content-autofill.googleapis.com) -> t13d1516h2_8daaf6152771_e5627efa2ab1.
const CYBERCHEF_JA4_CHROME: &str = concat!(
    "1603010200010001fc0303b2c03e7ba990ef540c316a665d4d925f8e9079ac4b15687e587dc99016e75a6c20d0b00992",
    "43c9296a0c84153ea4ada7d87ad017f4211c2ea1350b0b3cc5514d5f00205a5a130113021303c02bc02fc02cc030cca9",
    "cca8c013c014009c009d002f003501000193fafa000000000024002200001f636f6e74656e742d6175746f66696c6c2e",
    "676f6f676c65617069732e636f6d0033002b00293a3a000100001d0020fb2cd8ef3d605b96ab03119ec4f30a6e2088cb",
    "1af86c41a81feace8706068c50000d001200100403080404010503080505010806060100230000000b00020100ff0100",
    "0100000a000a00083a3a001d00170018001b000302000244690005000302683200120000002d000201010010000e000c",
    "02683208687474702f312e31000500050100000000002b0007060a0a03040303001700001a1a000100001500b8000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);
/// Firefox ClientHello (SNI contile.services.mozilla.com) -> t13d1715h2_5b57614c22b0_3d5424432f57.
const CYBERCHEF_JA4_FIREFOX: &str = concat!(
    "1603010200010001fc0303ecb2691addb2bf6c599c7aaae23de5f42561cc04eb41029acc6fc050a16ac1d22046f8617b",
    "580ac9358e2aa44e306d52466bcc989c87c8ca64309f5faf50ba7b4d0022130113031302c02bc02fcca9cca8c02cc030",
    "c00ac009c013c014009c009d002f00350100019100000021001f00001c636f6e74696c652e73657276696365732e6d6f",
    "7a696c6c612e636f6d00170000ff01000100000a000e000c001d00170018001901000101000b00020100002300000010",
    "000e000c02683208687474702f312e310005000501000000000022000a000804030503060302030033006b0069001d00",
    "208909858fbeb6ed2f1248ba5b9e2978bead0e840110192c61daed0096798b184400170041044d183d91f5eed35791fa",
    "982464e3b0214aaa5f5d1b78616d9b9fbebc22d11f535b2f94c686143136aa795e6e5a875d6c08064ad5b76d44caad76",
    "6e2483012748002b00050403040303000d0018001604030503060308040805080604010501060102030201002d000201",
    "01001c000240010015007a00000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);
/// ALPN " " -> t13d181220_85036bcba153_d41ae481755e.
const CYBERCHEF_JA4_ALPN_SPACE: &str = concat!(
    "1603010200010001fc0303ed338a18e711d670cdc472ff570a5b59f1ace12e5365918bf68bf845019147b6207e4437bf",
    "b062d98a4aeb753be8f09022a9dc9413d7694dad4db57fcdcf076e820024130213031301c02cc030c02bc02fcca9cca8",
    "c024c028c023c027009f009e006b006700ff0100018f0000001800160000136465762e636f6e74656e74677261622e6e",
    "6574000b000403000102000a00160014001d0017001e0019001801000101010201030104002300000010000400020120",
    "0016000000170000000d002a0028040305030603080708080809080a080b080408050806040105010601030303010302",
    "040205020602002b00050403040303002d00020101003300260024001d00207af053336d5e2c1675aa4c6ce78de5e5fd",
    "bd296538113f051ea17ccb64289f22001500d20000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);
/// ALPN "a " -> t13d181260_85036bcba153_d41ae481755e.
const CYBERCHEF_JA4_ALPN_A_SPACE: &str = concat!(
    "1603010200010001fc0303273682a603be3f64dd025df4ad0f4d2d13043c3a233405a68bb29b865808749a20f4dfc402",
    "42b2fce38fae26c516ef9bef20a1b9349eba3c003780168d72471f5c0024130213031301c02cc030c02bc02fcca9cca8",
    "c024c028c023c027009f009e006b006700ff0100018f0000001800160000136465762e636f6e74656e74677261622e6e",
    "6574000b000403000102000a00160014001d0017001e0019001801000101010201030104002300000010000500030261",
    "200016000000170000000d002a0028040305030603080708080809080a080b0804080508060401050106010303030103",
    "02040205020602002b00050403040303002d00020101003300260024001d0020f4dd1567bd858d3a9f1d88db1fee6a10",
    "ab0ea1aa6afe96ffb6a7c4d79dea4075001500d100000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);

// Source of the next four vectors: gchq/CyberChef, tests/operations/tests/JA3Fingerprint.mjs,
// with the JA3 MD5 values published there. The JA3 string of the TLS 1.2 one is the
// one CyberChef's tests print ("771,49200-...,11-10-35-13-15,24-23,0-1-2").
const CYBERCHEF_JA3_TLS10: &str = concat!(
    "16030100a4010000a00301543dd2dd48f517ca9a93b1e599f019fdece704a23e86c1dcac588427abbaddf200005cc014",
    "c00a0039003800880087c00fc00500350084c012c00800160013c00dc003000ac013c00900330032009a009900450044",
    "c00ec004002f009600410007c011c007c00cc002000500040015001200090014001100080006000300ff0100001b000b",
    "000403000102000a000600040018001700230000000f000101",
);
const CYBERCHEF_JA3_TLS11: &str = concat!(
    "16030100a4010000a00302543dd2ed907e47d0086f34bee2c52dd6ccd8de63ba9387f5e810b09d9d49b38000005cc014",
    "c00a0039003800880087c00fc00500350084c012c00800160013c00dc003000ac013c00900330032009a009900450044",
    "c00ec004002f009600410007c011c007c00cc002000500040015001200090014001100080006000300ff0100001b000b",
    "000403000102000a000600040018001700230000000f000101",
);
const CYBERCHEF_JA3_TLS12: &str = concat!(
    "1603010102010000fe0303543dd3283283692d85f9416b5ccc65d2aafca45c6530b3c6eafbf6d371b6a015000094c030",
    "c02cc028c024c014c00a00a3009f006b006a0039003800880087c032c02ec02ac026c00fc005009d003d00350084c012",
    "c00800160013c00dc003000ac02fc02bc027c023c013c00900a2009e0067004000330032009a009900450044c031c02d",
    "c029c025c00ec004009c003c002f009600410007c011c007c00cc0020005000400150012000900140011000800060003",
    "00ff01000041000b000403000102000a000600040018001700230000000d002200200601060206030501050205030401",
    "040204030301030203030201020202030101000f000101",
);
const CYBERCHEF_JA3_TLS13: &str = concat!(
    "1603010200010001fc03034355d402c132771a9386b6e9994ae37069e0621af504c26673b1343843c21d8d0000264a4a",
    "130113021303c02bc02fc02cc030cca9cca8cc14cc13c013c014009c009d002f0035000a010001addada0000ff010001",
    "00000000180016000013626c6f672e636c6f7564666c6172652e636f6d0017000000230000000d001400120403080404",
    "01050308050501080606010201000500050100000000001200000010000e000c02683208687474702f312e3175500000",
    "000b000201000028002b00295a5a000100001d0020cf78b9167af054b922a96752b43973107b2a57766357dd288b2b42",
    "ab5df30e08002d00020101002b000b0acaca7f12030303020301000a000a00085a5a001d001700180a0a000100001500",
    "e40000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);

// Captured on this machine (2026-11-21) by a Python socket on 127.0.0.1 that read the
// first flight: curl 7.88.1 / OpenSSL 3.0.19 (`curl -k https://example.test:PORT/`), and
// Python 3 `ssl` (OpenSSL 3.0.19) with and without server_hostname. Expected values
// were cross-checked with an independent throwaway Python JA4/JA3 script.
const CAPTURED_CURL: &str = concat!(
    "1603010200010001fc0303f26812c116f6fd15026629931bd5bfad1df14e0de714b891ba2bc640375cfcb02031d60650",
    "4af934aea0572981f11184cd73cb9d2021d201b0bbfe4d2973a3f514003e130213031301c02cc030009fcca9cca8ccaa",
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff01000175",
    "00000011000f00000c6578616d706c652e74657374000b000403000102000a00160014001d0017001e00190018010001",
    "010102010301040010000e000c02683208687474702f312e31001600000017000000310000000d002a00280403050306",
    "03080708080809080a080b080408050806040105010601030303010302040205020602002b0009080304030303020301",
    "002d00020101003300260024001d00200e3cb701947d87537b9349c6c63c5c6ccf79d61f2f7704b3380d6a09a28ec74f",
    "001500b10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);
const CAPTURED_PYTHON: &str = concat!(
    "1603010200010001fc030383d02af016ab0c3a300334f13fc999ac7d1390bd288bf62c78c8be20c9bb3bc5207b2e4301",
    "49d7ca0ec8f547b0a5b78209376e731991eec0a12e348ce8bded8ce50024130213031301c02cc030c02bc02fcca9cca8",
    "c024c028c023c027009f009e006b006700ff0100018f00000010000e00000b707974686f6e2e74657374000b00040300",
    "0102000a00160014001d0017001e0019001801000101010201030104002300000010000b000908687474702f312e3100",
    "16000000170000000d002a0028040305030603080708080809080a080b08040805080604010501060103030301030204",
    "0205020602002b00050403040303002d00020101003300260024001d00208da58ba136f6b2069e28b2c0f8504255bbcc",
    "cf5c52cd2c72d197fd3880589423001500d3000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);
const CAPTURED_PYTHON_NO_SNI: &str = concat!(
    "1603010200010001fc030354bf096126c79fe803e9e465e603049afe90cc06c975b2f1c336a303be6f0e7a20568f1408",
    "a1ff65d4d1b0766ceff94b0981ccb62d72c3270e4e74723db5c31b9d0024130213031301c02cc030c02bc02fcca9cca8",
    "c024c028c023c027009f009e006b006700ff0100018f000b000403000102000a00160014001d0017001e001900180100",
    "0101010201030104002300000016000000170000000d002a0028040305030603080708080809080a080b080408050806",
    "040105010601030303010302040205020602002b00050403040303002d00020101003300260024001d0020e81e139732",
    "20cdb869751c9e475c34e2a2ba62984a6ac2fcbce47d0d93e1bd34001500f60000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);

#[test]
fn ja4_published_vectors() {
    let cases = [
        (CYBERCHEF_JA4_CHROME, "t13d1516h2_8daaf6152771_e5627efa2ab1"),
        (
            CYBERCHEF_JA4_FIREFOX,
            "t13d1715h2_5b57614c22b0_3d5424432f57",
        ),
        (
            CYBERCHEF_JA4_ALPN_SPACE,
            "t13d181220_85036bcba153_d41ae481755e",
        ),
        (
            CYBERCHEF_JA4_ALPN_A_SPACE,
            "t13d181260_85036bcba153_d41ae481755e",
        ),
    ];
    for (hex, want) in cases {
        assert_eq!(ja4(&parse_all(&unhex(hex))), want);
    }
}

#[test]
fn ja3_published_vectors() {
    let cases = [
        (CYBERCHEF_JA3_TLS10, "503053a0c5b2bd9b9334bf7f3d3b8852"),
        (CYBERCHEF_JA3_TLS11, "a314eb64cee6cb832aaaa372c8295bab"),
        (CYBERCHEF_JA3_TLS12, "c1a36e1a870786cc75edddc0009eaf3a"),
        (CYBERCHEF_JA3_TLS13, "4826a90ec2daf4f7b4b64cc1c8bd343b"),
    ];
    for (hex, want) in cases {
        assert_eq!(ja3(&parse_all(&unhex(hex))), want);
    }
    let tls12 = parse_all(&unhex(CYBERCHEF_JA3_TLS12));
    assert_eq!(
        ja3_string(&tls12),
        concat!(
            "771,49200-49196-49192-49188-49172-49162-163-159-107-106-57-56-136-135-49202-49198-",
            "49194-49190-49167-49157-157-61-53-132-49170-49160-22-19-49165-49155-10-49199-49195-",
            "49191-49187-49171-49161-162-158-103-64-51-50-154-153-69-68-49201-49197-49193-49189-",
            "49166-49156-156-60-47-150-65-7-49169-49159-49164-49154-5-4-21-18-9-20-17-8-6-3-255,",
            "11-10-35-13-15,24-23,0-1-2"
        )
    );
}

#[test]
fn chrome_fields() {
    let h = parse_all(&unhex(CYBERCHEF_JA4_CHROME));
    assert_eq!(h.legacy_version, 0x0303);
    assert_eq!(h.sni.as_deref(), Some("content-autofill.googleapis.com"));
    assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(h.supported_versions, vec![0x0a0a, 0x0304, 0x0303]);
    assert_eq!(h.cipher_suites[0], 0x5a5a, "GREASE kept in the raw list");
    assert_eq!(h.extensions[0], 0xfafa, "GREASE kept in the raw list");
    assert_eq!(h.extensions.len(), 18);
    assert_eq!(h.supported_groups, vec![0x3a3a, 0x001d, 0x0017, 0x0018]);
    assert_eq!(h.ec_point_formats, vec![0]);
    assert_eq!(h.signature_algorithms[..2], [0x0403, 0x0804]);
    assert_eq!(h.consumed, unhex(CYBERCHEF_JA4_CHROME).len());
}

#[test]
fn captured_real_clients() {
    let curl = parse_all(&unhex(CAPTURED_CURL));
    assert_eq!(curl.sni.as_deref(), Some("example.test"));
    assert_eq!(curl.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(ja4(&curl), "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6");
    assert_eq!(ja3(&curl), "0149f47eabf9a20d0893e2a44e5a6323");

    let py = parse_all(&unhex(CAPTURED_PYTHON));
    assert_eq!(py.sni.as_deref(), Some("python.test"));
    assert_eq!(ja4(&py), "t13d1812h1_85036bcba153_d41ae481755e");
    assert_eq!(ja3(&py), "304734bb1c086c3453b387400cf83f11");

    let nosni = parse_all(&unhex(CAPTURED_PYTHON_NO_SNI));
    assert_eq!(nosni.sni, None);
    let fp = ja4(&nosni);
    assert_eq!(fp, "t13i181000_85036bcba153_d41ae481755e");
    // Structure: 10-char prefix, two 12-hex hashes.
    let parts: Vec<&str> = fp.split('_').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].len(), 10);
    assert!(parts[1..]
        .iter()
        .all(|p| p.len() == 12 && p.bytes().all(|b| b.is_ascii_hexdigit())));
}

/// Re-frames a single-record hello into records of at most `chunk` payload bytes.
fn split_records(single: &[u8], chunk: usize) -> Vec<u8> {
    let payload = &single[5..];
    let mut out = Vec::new();
    for part in payload.chunks(chunk) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[test]
fn hello_spanning_records_and_every_prefix() {
    let single = unhex(CYBERCHEF_JA4_CHROME);
    let want = parse_all(&single);
    for chunk in [1usize, 3, 100, 511] {
        let multi = split_records(&single, chunk);
        let got = parse_all(&multi);
        assert_eq!(got.consumed, multi.len());
        assert_eq!(
            ClientHello { consumed: 0, ..got },
            ClientHello {
                consumed: 0,
                ..want.clone()
            }
        );
        if chunk == 100 {
            for cut in 0..multi.len() {
                assert_eq!(parse_client_hello(&multi[..cut]), Ok(None), "prefix {cut}");
            }
        }
    }
    for cut in 0..single.len() {
        assert_eq!(parse_client_hello(&single[..cut]), Ok(None), "prefix {cut}");
    }
    // Bytes after the hello (early data, a second flight) are not consumed.
    let mut extra = single.clone();
    extra.extend_from_slice(b"\x17\x03\x03\x00\x01x");
    assert_eq!(parse_all(&extra).consumed, single.len());
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    assert_eq!(
        parse_client_hello(b"GET / HTTP/1.1\r\n"),
        Err(HelloError::NotHandshake)
    );
    assert_eq!(
        parse_client_hello(b"\x16\x02\x01\x00\x05"),
        Err(HelloError::BadRecord)
    );
    assert_eq!(
        parse_client_hello(b"\x16\x03\x01\x00\x00"),
        Err(HelloError::BadRecord)
    );
    assert_eq!(
        parse_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),
        Err(HelloError::NotClientHello(2))
    );
    assert_eq!(
        parse_client_hello(b"\x16\x03\x01\x00\x04\x01\xff\xff\xff"),
        Err(HelloError::TooLarge(0xff_ffff + 4))
    );
    // A complete handshake message whose body is truncated.
    assert!(matches!(
        parse_client_hello(b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03"),
        Err(HelloError::Malformed(_))
    ));
    // Flip and truncate every byte of a real hello: any result but a panic is fine.
    let base = unhex(CAPTURED_CURL);
    for i in 0..base.len() {
        for v in [0x00u8, 0xff, base[i].wrapping_add(1)] {
            let mut m = base.clone();
            m[i] = v;
            if let Ok(Some(h)) = parse_client_hello(&m) {
                let _ = (ja4(&h), ja3(&h));
            }
        }
    }
    // Deterministic pseudo-random inputs behind a valid header.
    let mut x: u32 = 0x1234_5678;
    for len in 0..600usize {
        let mut m = vec![0x16, 0x03, 0x01, (len >> 8) as u8, len as u8, 0x01];
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            m.push(x as u8);
        }
        let _ = parse_client_hello(&m);
    }
}

#[test]
fn detect_tls_by_peeking() {
    assert_eq!(is_tls_client_hello_start(b""), None);
    assert_eq!(is_tls_client_hello_start(b"\x16"), None);
    assert_eq!(is_tls_client_hello_start(b"\x16\x03"), None);
    assert_eq!(is_tls_client_hello_start(b"\x16\x03\x01"), Some(true));
    assert_eq!(
        is_tls_client_hello_start(b"\x16\x03\x01\x02\x00\x01"),
        Some(true)
    );
    assert_eq!(
        is_tls_client_hello_start(b"\x16\x03\x01\x02\x00\x02"),
        Some(false)
    );
    assert_eq!(is_tls_client_hello_start(b"GET / HTTP/1.1"), Some(false));
    assert_eq!(is_tls_client_hello_start(b"PRI * HTTP/2.0"), Some(false));
    assert_eq!(is_tls_client_hello_start(b"\x16\x02"), Some(false));
    assert_eq!(is_tls_client_hello_start(b"\x16\x03\x09"), Some(false));
}

#[test]
fn grease_and_alpn_rules() {
    assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
    assert!(!is_grease(0x0a1a) && !is_grease(0x1301) && !is_grease(0x0000));
    assert_eq!(ja4_alpn(&[]), "00");
    assert_eq!(ja4_alpn(&[b"h2".to_vec()]), "h2");
    assert_eq!(ja4_alpn(&[b"http/1.1".to_vec()]), "h1");
    assert_eq!(ja4_alpn(&[b"h".to_vec()]), "hh");
    assert_eq!(ja4_alpn(&[vec![]]), "00");
    assert_eq!(ja4_alpn(&[vec![0xab, 0x12]]), "a2");
    // No extensions at all: hash of nothing is twelve zeros.
    let bare = ClientHello {
        legacy_version: 0x0301,
        cipher_suites: vec![0x002f],
        ..ClientHello::default()
    };
    assert_eq!(
        ja4(&bare),
        format!("t10i010000_{}_000000000000", sha256_12("002f"))
    );
}

/// Found by the client_hello fuzz target: a record version above TLS 1.3's (3.5 and
/// up) was parsed as a hello although `is_tls_client_hello_start` says such bytes are
/// not TLS; both now agree.
#[test]
fn record_minor_version_above_tls13_is_refused() {
    let mut bytes = vec![0x16, 0x03, 0x05, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00];
    assert_eq!(is_tls_client_hello_start(&bytes), Some(false));
    assert_eq!(parse_client_hello(&bytes), Err(HelloError::BadRecord));
    bytes[2] = 0x01;
    assert_ne!(parse_client_hello(&bytes), Err(HelloError::BadRecord));
}
