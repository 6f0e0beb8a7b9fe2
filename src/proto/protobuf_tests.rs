use super::*;

fn decode(b: &[u8]) -> Result<Message, DecodeError> {
    Message::decode(&Bytes::copy_from_slice(b))
}

fn kind(b: &[u8]) -> ErrorKind {
    decode(b).unwrap_err().kind
}

#[test]
fn the_documentation_examples() {
    // protobuf.dev encoding guide: 150 in field 1, "testing" in field 2
    let m = decode(&[
        0x08, 0x96, 0x01, 0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g',
    ])
    .unwrap();
    assert_eq!(m.fields.len(), 2);
    assert_eq!(m.fields[0].number, 1);
    assert_eq!(m.fields[0].value, Value::Varint(150));
    assert_eq!(m.get(2).unwrap().value.as_str(), Some("testing"));
    let mut built = Message::new();
    built.push(1, Value::Varint(150));
    built.push(2, Value::string("testing"));
    assert_eq!(built.encode(), m.encode());
    assert_eq!(&built.encode()[..3], &[0x08, 0x96, 0x01]);
}

#[test]
fn every_wire_type() {
    let mut m = Message::new();
    m.push(1, Value::Varint(u64::MAX));
    m.push(2, Value::double(1.5));
    m.push(3, Value::Len(Bytes::from_static(b"\x00\xff")));
    m.push(4, Value::Group(Bytes::from_static(&[0x08, 0x01])));
    m.push(5, Value::float(-2.0));
    m.push(MAX_FIELD_NUMBER, Value::sint(-3));
    let wire = m.encode();
    let back = Message::decode(&wire).unwrap();
    let values: Vec<(u32, Value)> = back
        .fields
        .iter()
        .map(|f| (f.number, f.value.clone()))
        .collect();
    let want: Vec<(u32, Value)> = m
        .fields
        .iter()
        .map(|f| (f.number, f.value.clone()))
        .collect();
    assert_eq!(values, want);
    assert_eq!(back.encode(), wire);
    assert!(back.fields.iter().all(Field::is_unchanged));
    assert_eq!(back.fields[1].value.as_f64(), Some(1.5));
    assert_eq!(back.fields[4].value.as_f32(), Some(-2.0));
    assert_eq!(back.fields[5].value.as_sint(), Some(-3));
    assert_eq!(back.fields[3].value.wire_type(), WireType::StartGroup);
    assert_eq!(
        back.fields[3].value.as_message().unwrap().fields[0].value,
        Value::Varint(1)
    );
    // a group is written start tag, content, end tag
    let mut g = BytesMut::new();
    Field::new(4, Value::Group(Bytes::from_static(&[0x08, 0x01]))).encode_into(&mut g);
    assert_eq!(&g[..], &[0x23, 0x08, 0x01, 0x24]);
}

#[test]
fn non_minimal_encodings_round_trip_byte_for_byte() {
    let wire: &[u8] = &[
        0x88, 0x80, 0x00, // tag of field 1 in 3 bytes
        0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, // 1 in 10 bytes
        0x12, 0x82, 0x00, b'h', b'i', // length 2 in 2 bytes
        0x08, 0x00, // field 1 again
        0x1d, 1, 2, 3, 4, // fixed32
    ];
    let m = decode(wire).unwrap();
    assert_eq!(m.fields.len(), 4);
    assert_eq!(m.fields[0].value, Value::Varint(1));
    assert_eq!(m.fields[1].value.as_str(), Some("hi"));
    assert_eq!(m.get(1).unwrap().value, Value::Varint(0), "last of field 1");
    assert_eq!(m.get_all(1).count(), 2);
    assert_eq!(&m.encode()[..], wire);

    // change one field: only it becomes canonical
    let mut changed = m.clone();
    changed.fields[1].value = Value::string("hey");
    let mut want = wire[..13].to_vec();
    want.extend_from_slice(&[0x12, 0x03, b'h', b'e', b'y']);
    want.extend_from_slice(&wire[18..]);
    assert_eq!(&changed.encode()[..], &want[..]);
    // changing it back restores the original bytes
    changed.fields[1].value = Value::string("hi");
    assert_eq!(&changed.encode()[..], wire);
    // a renumbered field is no longer its raw bytes
    let mut renumbered = m.clone();
    renumbered.fields[0].number = 9;
    assert!(!renumbered.fields[0].is_unchanged());
    assert_eq!(&renumbered.encode()[..2], &[0x48, 0x01]);
}

#[test]
fn nested_messages() {
    let mut inner = Message::new();
    inner.push(1, Value::string("inner"));
    inner.push(2, Value::Varint(7));
    let mut outer = Message::new();
    outer.push(1, Value::Varint(1));
    outer.push(3, Value::message(&inner));
    outer.push(4, Value::Varint(2));
    // a non-minimal varint deep inside, to see it survive
    let mut wire = outer.encode().to_vec();
    let at = wire.iter().position(|&b| b == 0x10).unwrap(); // inner field 2's tag
    wire[at + 1] = 0x87;
    wire.insert(at + 2, 0x00);
    let len_at = at - 8; // outer field 3's length byte
    wire[len_at] += 1;
    let wire = Bytes::from(wire);

    let m = Message::decode(&wire).unwrap();
    let nested = m.get(3).unwrap().value.as_message().unwrap();
    assert_eq!(nested.get(1).unwrap().value.as_str(), Some("inner"));
    assert_eq!(nested.get(2).unwrap().value, Value::Varint(7));
    // re-encoding the unchanged nested message changes nothing
    let mut same = m.clone();
    same.get_mut(3).unwrap().value = Value::message(&nested);
    assert_eq!(same.encode(), wire);
    assert!(same.fields.iter().all(Field::is_unchanged));
    // a change inside is carried out through the outer field
    let mut edited = nested.clone();
    edited.set(1, Value::string("changed"));
    let mut m2 = m.clone();
    m2.get_mut(3).unwrap().value = Value::message(&edited);
    let re = Message::decode(&m2.encode()).unwrap();
    let inner2 = re.get(3).unwrap().value.as_message().unwrap();
    assert_eq!(inner2.get(1).unwrap().value.as_str(), Some("changed"));
    assert_eq!(
        inner2.get(2).unwrap().raw().unwrap().len(),
        3,
        "inner raw kept"
    );
    assert_eq!(re.get(4).unwrap().value, Value::Varint(2));
    // not every byte string is a message
    assert_eq!(Value::string("\u{7}").as_message(), None);
    assert_eq!(Value::Varint(1).as_message(), None);
}

#[test]
fn groups() {
    // field 1 group { field 2 = 5, field 3 group { field 1 = 1 } }, then field 4 = 9
    let wire: &[u8] = &[0x0b, 0x10, 0x05, 0x1b, 0x08, 0x01, 0x1c, 0x0c, 0x20, 0x09];
    let m = decode(wire).unwrap();
    assert_eq!(m.fields.len(), 2);
    let Value::Group(g) = &m.fields[0].value else {
        panic!()
    };
    assert_eq!(&g[..], &wire[1..7]);
    let inner = m.fields[0].value.as_message().unwrap();
    assert_eq!(inner.fields.len(), 2);
    assert_eq!(
        inner.get(3).unwrap().value.as_message().unwrap().fields[0].value,
        Value::Varint(1)
    );
    assert_eq!(&m.encode()[..], wire);
    assert_eq!(m.get(4).unwrap().value, Value::Varint(9));

    assert_eq!(kind(&[0x0b, 0x10, 0x05]), ErrorKind::UnterminatedGroup(1));
    assert_eq!(kind(&[0x0c]), ErrorKind::UnexpectedEndGroup(1));
    assert_eq!(
        kind(&[0x0b, 0x14]),
        ErrorKind::UnexpectedEndGroup(2),
        "end of another group"
    );
    let deep: Vec<u8> = std::iter::repeat_n(0x0b, MAX_GROUP_DEPTH + 1)
        .chain(std::iter::repeat_n(0x0c, MAX_GROUP_DEPTH + 1))
        .collect();
    assert_eq!(kind(&deep), ErrorKind::GroupTooDeep);
    let ok: Vec<u8> = std::iter::repeat_n(0x0b, MAX_GROUP_DEPTH)
        .chain(std::iter::repeat_n(0x0c, MAX_GROUP_DEPTH))
        .collect();
    assert_eq!(&decode(&ok).unwrap().encode()[..], &ok[..]);
}

#[test]
fn malformed_input() {
    assert_eq!(kind(&[0x08]), ErrorKind::TruncatedVarint);
    assert_eq!(kind(&[0x08, 0x80]), ErrorKind::TruncatedVarint);
    assert_eq!(kind(&[0x88]), ErrorKind::TruncatedVarint);
    assert_eq!(
        kind(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
        ErrorKind::VarintTooLong
    );
    assert_eq!(
        kind(&[0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        ErrorKind::VarintTooLong
    );
    assert_eq!(
        decode(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
            .unwrap()
            .fields[0]
            .value,
        Value::Varint(u64::MAX)
    );
    assert_eq!(kind(&[0x12, 0x03, b'a', b'b']), ErrorKind::LengthPastEnd);
    assert_eq!(
        kind(&[0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        ErrorKind::LengthPastEnd
    );
    assert_eq!(
        kind(&[0x09, 1, 2, 3, 4, 5, 6, 7]),
        ErrorKind::TruncatedFixed
    );
    assert_eq!(kind(&[0x0d, 1, 2, 3]), ErrorKind::TruncatedFixed);
    assert_eq!(kind(&[0x0e]), ErrorKind::BadWireType(6));
    assert_eq!(kind(&[0x0f]), ErrorKind::BadWireType(7));
    assert_eq!(kind(&[0x00, 0x01]), ErrorKind::FieldNumberZero);
    assert_eq!(
        kind(&[0x80, 0x80, 0x80, 0x80, 0x10, 0x00]),
        ErrorKind::FieldNumberTooLarge
    );
    // offsets point at the bad element
    assert_eq!(decode(&[0x08, 0x01, 0x12, 0x05]).unwrap_err().offset, 3);
    assert_eq!(decode(&[0x08, 0x01, 0x0f]).unwrap_err().offset, 2);
    assert_eq!(decode(&[]).unwrap(), Message::new());
}

#[test]
fn every_prefix_decodes_or_fails_cleanly() {
    let mut m = Message::new();
    m.push(1, Value::Varint(300));
    m.push(2, Value::string("abc"));
    m.push(3, Value::double(2.5));
    m.push(4, Value::Group(Bytes::from_static(&[0x08, 0x01])));
    m.push(5, Value::float(1.0));
    let wire = m.encode();
    let boundaries = [0, 3, 8, 17, 21, 26];
    for cut in 0..=wire.len() {
        let r = Message::decode(&wire.slice(..cut));
        assert_eq!(r.is_ok(), boundaries.contains(&cut), "cut at {cut}: {r:?}");
        if let Ok(p) = r {
            assert_eq!(p.encode(), wire.slice(..cut));
        }
    }
}

#[test]
fn scalar_views_and_packed() {
    assert_eq!(Value::Varint(-5i64 as u64).as_i64(), Some(-5));
    assert_eq!(Value::I32(-5i32 as u32).as_i64(), Some(-5));
    assert_eq!(Value::I32(7).as_u64(), Some(7));
    assert_eq!(Value::string("x").as_u64(), None);
    assert_eq!(Value::Len(Bytes::from_static(b"\xff")).as_str(), None);
    for v in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
        assert_eq!(zigzag_decode(zigzag_encode(v)), v);
    }
    assert_eq!(zigzag_encode(-1), 1);
    assert_eq!(zigzag_encode(1), 2);
    let p = Value::packed(&[1, 300, u64::MAX]);
    assert_eq!(p.packed_varints(), Some(vec![1, 300, u64::MAX]));
    assert_eq!(
        Value::Len(Bytes::from_static(b"\x80")).packed_varints(),
        None
    );
}

#[test]
fn set_and_remove() {
    let mut m = decode(&[0x08, 0x01, 0x10, 0x02, 0x08, 0x03]).unwrap();
    m.set(1, Value::Varint(4));
    assert_eq!(&m.encode()[..], &[0x10, 0x02, 0x08, 0x04]);
    m.set(5, Value::Varint(5));
    assert_eq!(m.fields.last().unwrap().number, 5);
    assert_eq!(m.remove(2), 1);
    assert_eq!(m.remove(2), 0);
    assert_eq!(&m.encode()[..], &[0x08, 0x04, 0x28, 0x05]);
}
