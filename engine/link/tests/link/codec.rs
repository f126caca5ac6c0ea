//! The frame codec and the messages: round trips (proptest), arbitrary bytes, limits,
//! truncation, sequence numbers, extensibility, and the worked example of PROTOCOL.md.

use bytes::{BufMut, Bytes, BytesMut};
use keyway_core::{CredentialKind, Effect};
use keyway_link::codec::{BULK_MAX_FRAME, CONTROL_MAX_FRAME, Frame, FrameCodec, FrameError, HEADER_LEN};
use keyway_link::conn::{FrameReader, ReadError};
use keyway_link::message::*;
use keyway_link::wire::DecodeError;
use proptest::collection::vec;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder};

fn s(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{}}}", max / 4)).unwrap()
}
fn b(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}
fn kind() -> impl Strategy<Value = CredentialKind> {
    prop_oneof![
        Just(CredentialKind::Tag),
        Just(CredentialKind::DigitalKey),
        Just(CredentialKind::Pin)
    ]
}
fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Unknown), Just(Direction::Entry), Just(Direction::Exit)]
}
fn effect() -> impl Strategy<Value = Effect> {
    prop_oneof![Just(Effect::Allow), Just(Effect::Deny)]
}
fn entry() -> impl Strategy<Value = OfflineEntry> {
    (
        any::<u32>(),
        kind(),
        b(MAX_SECRET),
        any::<Option<u32>>(),
        any::<bool>(),
        any::<Option<i64>>(),
        any::<Option<i64>>(),
        vec((any::<u32>(), any::<Option<u32>>()), 0..4),
    )
        .prop_map(
            |(credential, kind, secret, person, offline_access, valid_from, valid_until, grants)| OfflineEntry {
                credential,
                kind,
                secret,
                person,
                offline_access,
                valid_from,
                valid_until,
                grants: grants
                    .into_iter()
                    .map(|(door, schedule)| OfflineGrant { door, schedule })
                    .collect(),
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), s(MAX_SHORT), any::<u64>()).prop_map(|(a, b, f, r)| Message::Hello(Hello {
            min_version: a,
            max_version: b,
            firmware: f,
            offline_revision: r
        })),
        (any::<(u16, u32, u32, u64, u32, u32, bool)>(), vec(any::<u32>(), 0..8)).prop_map(
            |((version, site, iq, revision, heartbeat_ms, max_frame, resync), doors)| Message::Welcome(Welcome {
                version,
                site,
                iq,
                revision,
                heartbeat_ms,
                max_frame,
                resync,
                doors
            })
        ),
        (s(MAX_SHORT), b(64)).prop_map(|(code, csr)| Message::Enrol(Enrol { code, csr })),
        (any::<u32>(), any::<u32>(), b(64), b(64), any::<i64>()).prop_map(
            |(site, iq, certificate, site_ca, not_after)| {
                Message::Enrolled(Enrolled {
                    site,
                    iq,
                    certificate,
                    site_ca,
                    not_after,
                })
            }
        ),
        any::<(i64, u64)>().prop_map(|(iq_time, offline_revision)| Message::Heartbeat(Heartbeat {
            iq_time,
            offline_revision
        })),
        any::<(i64, u64)>()
            .prop_map(|(server_time, revision)| Message::HeartbeatAck(HeartbeatAck { server_time, revision })),
        vec(
            (
                any::<u32>(),
                proptest::option::of(kind()),
                b(MAX_SECRET),
                any::<i64>(),
                direction()
            ),
            0..=MAX_DECIDE_ITEMS
        )
        .prop_map(|items| Message::Decide(
            items
                .into_iter()
                .map(|(door, kind, secret, at, direction)| DecideItem {
                    door,
                    kind,
                    secret,
                    at,
                    direction
                })
                .collect()
        )),
        (any::<u64>(), vec((effect(), s(MAX_REASON)), 0..8)).prop_map(|(revision, items)| Message::Decisions(
            Decisions {
                revision,
                items: items
                    .into_iter()
                    .map(|(effect, reason)| DecisionItem { effect, reason })
                    .collect()
            }
        )),
        vec(
            (
                any::<u64>(),
                any::<u32>(),
                any::<i64>(),
                effect(),
                s(MAX_REASON),
                proptest::option::of(kind()),
                any::<Option<u32>>()
            ),
            0..8
        )
        .prop_map(|items| Message::Entries(
            items
                .into_iter()
                .map(|(seq, door, at, effect, reason, kind, credential)| EntryItem {
                    seq,
                    door,
                    at,
                    effect,
                    reason,
                    kind,
                    credential
                })
                .collect()
        )),
        vec(any::<u64>(), 0..=MAX_ENTRY_ITEMS).prop_map(Message::EntriesAck),
        (
            any::<u64>(),
            vec((any::<u8>(), any::<u32>(), any::<Option<u32>>()), 0..8)
        )
            .prop_map(|(revision, items)| {
                Message::Revocation(Revocation {
                    revision,
                    items: items
                        .into_iter()
                        .map(|(what, id, door)| RevocationItem {
                            what: RevocationWhat::from_u8(what),
                            id,
                            door,
                        })
                        .collect(),
                })
            }),
        (any::<u64>(), any::<u64>(), vec(entry(), 0..4), vec(any::<u32>(), 0..8)).prop_map(
            |(from_revision, to_revision, upserts, removals)| Message::OfflineDelta(OfflineDelta {
                from_revision,
                to_revision,
                upserts,
                removals
            })
        ),
        any::<u64>().prop_map(Message::Resync),
        any::<u64>().prop_map(Message::PushAck),
        vec(any::<u32>(), 0..8).prop_map(Message::Doors),
        any::<(u64, u32, u8, u32)>().prop_map(|(command_id, door, command, duration_s)| Message::DoorCommand(
            DoorCommand {
                command_id,
                door,
                command: DoorCommandKind::from_u8(command),
                duration_s
            }
        )),
        any::<(u64, u8)>().prop_map(|(command_id, status)| Message::DoorCommandAck(DoorCommandAck {
            command_id,
            status: CommandStatus::from_u8(status)
        })),
        (
            any::<u64>(),
            any::<u8>(),
            any::<Option<u32>>(),
            any::<i64>(),
            s(MAX_TEXT)
        )
            .prop_map(|(id, kind, door, at, detail)| {
                Message::Incident(Incident {
                    id,
                    kind: IncidentKind::from_u8(kind),
                    door,
                    at,
                    detail,
                })
            }),
        any::<u64>().prop_map(Message::IncidentAck),
        (
            any::<u64>(),
            any::<u32>(),
            proptest::option::of(kind()),
            b(MAX_SECRET),
            any::<i64>(),
            direction(),
            any::<bool>()
        )
            .prop_map(|(id, door, kind, secret, at, direction, opened)| {
                Message::Passage(Passage {
                    id,
                    door,
                    kind,
                    secret,
                    at,
                    direction,
                    opened,
                })
            }),
        any::<u64>().prop_map(Message::PassageAck),
        (any::<u32>(), b(MAX_PIN)).prop_map(|(person, pin)| Message::PinCheck(PinCheck { person, pin })),
        any::<u8>().prop_map(|v| Message::PinResult(PinVerdict::from_u8(v))),
        (
            s(MAX_SHORT),
            any::<u64>(),
            any::<[u8; 32]>(),
            proptest::option::of(s(MAX_DOWNLOAD_TOKEN).prop_filter("empty is none", |t| !t.is_empty()))
        )
            .prop_map(|(version, size, sha256, download_token)| Message::FirmwareAvailable(
                FirmwareAvailable {
                    version,
                    size,
                    sha256,
                    download_token
                }
            )),
        s(MAX_SHORT).prop_map(Message::FirmwareInstalled),
        (any::<u16>(), any::<bool>(), s(MAX_TEXT)).prop_map(|(code, fatal, message)| Message::Error(ErrorFrame {
            code: ErrorCode::from_u16(code),
            fatal,
            message
        })),
        Just(Message::OfflineListGet),
        (
            any::<(u64, u32, u32, u32)>(),
            s(MAX_SHORT),
            vec(
                (
                    any::<u32>(),
                    vec(any::<(u8, u16, u16)>(), 0..=MAX_PERIODS),
                    any::<Option<u32>>(),
                    any::<Option<u32>>()
                ),
                0..4
            ),
            vec(any::<u32>(), 0..8)
        )
            .prop_map(
                |((revision, tags, remote_users, chunks), time_zone, schedules, holidays)| {
                    Message::OfflineListBegin(OfflineListBegin {
                        revision,
                        tags,
                        remote_users,
                        chunks,
                        time_zone,
                        schedules: schedules
                            .into_iter()
                            .map(|(id, periods, from, until)| OfflineSchedule {
                                id,
                                periods: periods
                                    .into_iter()
                                    .map(|(days, start, end)| OfflinePeriod { days, start, end })
                                    .collect(),
                                from,
                                until,
                            })
                            .collect(),
                        holidays,
                    })
                }
            ),
        (any::<u32>(), vec(entry(), 0..4))
            .prop_map(|(index, entries)| Message::OfflineListChunk(OfflineListChunk { index, entries })),
        any::<[u8; 32]>().prop_map(Message::OfflineListEnd),
        any::<u64>().prop_map(Message::OfflineListAck),
        (s(MAX_SHORT), any::<u64>(), any::<u32>()).prop_map(|(version, offset, max_len)| Message::FirmwareGet(
            FirmwareGet {
                version,
                offset,
                max_len
            }
        )),
        (s(MAX_SHORT), any::<u64>(), any::<[u8; 32]>(), any::<u64>(), b(256)).prop_map(
            |(version, size, sha256, offset, data)| {
                Message::FirmwareChunk(FirmwareChunk {
                    version,
                    size,
                    sha256,
                    offset,
                    data,
                })
            }
        ),
    ]
}

fn body(message: &Message) -> Bytes {
    let mut buf = BytesMut::new();
    message.encode_body(&mut buf).unwrap();
    buf.freeze()
}

fn frame_bytes(message: &Message, seq: u32, reply_to: u32) -> BytesMut {
    let mut out = BytesMut::new();
    FrameCodec::bulk()
        .encode(
            Frame {
                msg_type: message.msg_type(),
                flags: 0,
                seq,
                reply_to,
                body: body(message),
            },
            &mut out,
        )
        .unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_message_round_trips(message in message(), seq in 1u32.., reply_to in any::<u32>()) {
        let mut bytes = frame_bytes(&message, seq, reply_to);
        let frame = FrameCodec::bulk().decode(&mut bytes).unwrap().unwrap();
        prop_assert!(bytes.is_empty());
        prop_assert_eq!((frame.seq, frame.reply_to, frame.msg_type), (seq, reply_to, message.msg_type()));
        prop_assert_eq!(Message::decode(frame.msg_type, &frame.body).unwrap(), message);
    }

    #[test]
    fn every_strict_prefix_of_a_body_is_refused(message in message()) {
        let body = body(&message);
        for cut in 0..body.len() {
            prop_assert!(Message::decode(message.msg_type(), &body[..cut]).is_err(), "prefix {cut} of {} decoded", message.name());
        }
    }

    #[test]
    fn trailing_bytes_of_a_newer_version_are_ignored(message in message(), extra in b(16)) {
        let mut body = BytesMut::from(&body(&message)[..]);
        body.extend_from_slice(&extra);
        prop_assert_eq!(Message::decode(message.msg_type(), &body).unwrap(), message);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in b(2_048), msg_type in any::<u16>()) {
        let _ = Message::decode(msg_type, &bytes);
        let mut codec = FrameCodec::control();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            let _ = Message::decode(frame.msg_type, &frame.body);
        }
    }

    #[test]
    fn frames_arriving_byte_by_byte_decode_once_complete(message in message()) {
        let whole = frame_bytes(&message, 1, 0);
        let mut codec = FrameCodec::bulk();
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            buf.put_u8(*byte);
            let got = codec.decode(&mut buf).unwrap();
            prop_assert_eq!(got.is_some(), i + 1 == whole.len());
        }
    }
}

#[test]
fn every_known_type_decodes_from_its_number_and_unknown_types_are_reported() {
    for t in 0..=u16::MAX {
        if let Err(MessageError::UnknownType(got)) = Message::decode(t, &[]) {
            assert_eq!(got, t);
        }
    }
    assert_eq!(
        Message::decode(0x7777, &[1, 2, 3]),
        Err(MessageError::UnknownType(0x7777))
    );
}

/// The frame's length prefix is checked against the port's limit before anything else:
/// four bytes are enough to refuse it, and nothing is reserved.
#[test]
fn frame_lengths_at_and_over_each_limit() {
    struct Case {
        codec: FrameCodec,
        len: usize,
        expect: &'static str,
    }
    let cases = [
        Case {
            codec: FrameCodec::control(),
            len: CONTROL_MAX_FRAME,
            expect: "ok",
        },
        Case {
            codec: FrameCodec::control(),
            len: CONTROL_MAX_FRAME + 1,
            expect: "too large",
        },
        Case {
            codec: FrameCodec::bulk(),
            len: BULK_MAX_FRAME,
            expect: "ok",
        },
        Case {
            codec: FrameCodec::bulk(),
            len: BULK_MAX_FRAME + 1,
            expect: "too large",
        },
        Case {
            codec: FrameCodec::control(),
            len: u32::MAX as usize,
            expect: "too large",
        },
        Case {
            codec: FrameCodec::control(),
            len: HEADER_LEN,
            expect: "ok",
        },
        Case {
            codec: FrameCodec::control(),
            len: HEADER_LEN - 1,
            expect: "too short",
        },
        Case {
            codec: FrameCodec::control(),
            len: 0,
            expect: "too short",
        },
    ];
    for case in cases {
        let mut codec = case.codec;
        let mut prefix = BytesMut::new();
        prefix.put_u32(case.len as u32);
        let capacity = prefix.capacity();
        let got = codec.decode(&mut prefix);
        let what = match got {
            Ok(None) => "ok",
            Err(FrameError::TooLarge { .. }) => "too large",
            Err(FrameError::TooShort(_)) => "too short",
            other => panic!("length {}: {other:?}", case.len),
        };
        assert_eq!(what, case.expect, "length {}", case.len);
        if what != "ok" {
            assert_eq!(
                prefix.capacity(),
                capacity,
                "length {}: reserved before refusing",
                case.len
            );
        }
        if what == "ok" {
            // The whole frame decodes once it is there.
            let mut whole = BytesMut::new();
            whole.put_u32(case.len as u32);
            whole.put_u16(types::OFFLINE_LIST_GET);
            whole.put_u16(0);
            whole.put_u32(1);
            whole.put_u32(0);
            whole.resize(4 + case.len, 0);
            let frame = codec.decode(&mut whole).unwrap().unwrap();
            assert_eq!(frame.body.len(), case.len - HEADER_LEN);
        }
    }
    // The encoder refuses what the peer's decoder would.
    let mut out = BytesMut::new();
    let big = Frame {
        msg_type: 1,
        flags: 0,
        seq: 1,
        reply_to: 0,
        body: Bytes::from(vec![0; CONTROL_MAX_FRAME - HEADER_LEN + 1]),
    };
    assert!(matches!(
        FrameCodec::control().encode(big, &mut out),
        Err(FrameError::TooLarge { .. })
    ));
    let fits = Frame {
        msg_type: 1,
        flags: 0,
        seq: 1,
        reply_to: 0,
        body: Bytes::from(vec![0; CONTROL_MAX_FRAME - HEADER_LEN]),
    };
    assert!(FrameCodec::control().encode(fits, &mut out).is_ok());
}

fn decide(n: usize, secret: usize) -> Message {
    Message::Decide(
        (0..n)
            .map(|i| DecideItem {
                door: i as u32,
                kind: Some(CredentialKind::Tag),
                secret: vec![7; secret],
                at: 0,
                direction: Direction::Unknown,
            })
            .collect(),
    )
}

/// Each field limit, at and one over: the encoder refuses what is over, and a decoder
/// given a body over it (made by hand) refuses it too.
#[test]
fn field_limits_at_and_over() {
    struct Case {
        name: &'static str,
        at: Message,
        over: Message,
        count_limit: bool,
    }
    let entries = |n: usize| {
        Message::Entries(
            (0..n)
                .map(|i| EntryItem {
                    seq: i as u64 + 1,
                    door: 1,
                    at: 0,
                    effect: Effect::Deny,
                    reason: "x".into(),
                    kind: None,
                    credential: None,
                })
                .collect(),
        )
    };
    let chunk = |n: usize| {
        Message::FirmwareChunk(FirmwareChunk {
            version: "1".into(),
            size: 0,
            sha256: [0; 32],
            offset: 0,
            data: vec![1; n],
        })
    };
    let cases = [
        Case {
            name: "decide items",
            at: decide(MAX_DECIDE_ITEMS, 4),
            over: decide(MAX_DECIDE_ITEMS + 1, 4),
            count_limit: true,
        },
        Case {
            name: "secret",
            at: decide(1, MAX_SECRET),
            over: decide(1, MAX_SECRET + 1),
            count_limit: false,
        },
        Case {
            name: "entries",
            at: entries(MAX_ENTRY_ITEMS),
            over: entries(MAX_ENTRY_ITEMS + 1),
            count_limit: true,
        },
        Case {
            name: "firmware chunk",
            at: chunk(MAX_FIRMWARE_CHUNK),
            over: chunk(MAX_FIRMWARE_CHUNK + 1),
            count_limit: false,
        },
        Case {
            name: "pin",
            at: Message::PinCheck(PinCheck {
                person: 1,
                pin: vec![b'1'; MAX_PIN],
            }),
            over: Message::PinCheck(PinCheck {
                person: 1,
                pin: vec![b'1'; MAX_PIN + 1],
            }),
            count_limit: false,
        },
        Case {
            name: "error message",
            at: Message::Error(ErrorFrame {
                code: ErrorCode::Malformed,
                fatal: false,
                message: "m".repeat(MAX_TEXT),
            }),
            over: Message::Error(ErrorFrame {
                code: ErrorCode::Malformed,
                fatal: false,
                message: "m".repeat(MAX_TEXT + 1),
            }),
            count_limit: false,
        },
        Case {
            name: "doors",
            at: Message::Doors(vec![1; MAX_DOORS]),
            over: Message::Doors(vec![1; MAX_DOORS + 1]),
            count_limit: false,
        },
        Case {
            name: "enrol csr",
            at: Message::Enrol(Enrol {
                code: "c".into(),
                csr: vec![0; MAX_DER],
            }),
            over: Message::Enrol(Enrol {
                code: "c".into(),
                csr: vec![0; MAX_DER + 1],
            }),
            count_limit: false,
        },
    ];
    for case in cases {
        let at = body(&case.at);
        assert_eq!(
            Message::decode(case.at.msg_type(), &at).unwrap(),
            case.at,
            "{}",
            case.name
        );
        let mut sink = BytesMut::new();
        assert!(
            case.over.encode_body(&mut sink).is_err(),
            "{}: encoded over its limit",
            case.name
        );
        // Make the over-limit body by hand: patch the count or length in the at-limit body.
        let over = over_body(&case.at);
        let got = Message::decode(case.at.msg_type(), &over);
        match got {
            Err(e @ MessageError::Decode(DecodeError::TooLong { .. })) => {
                assert_eq!(e.is_count_limit(), case.count_limit, "{}", case.name)
            }
            other => panic!("{}: {other:?}", case.name),
        }
    }
}

/// The at-limit body with its one varying count or length raised by one (and a byte added
/// where a length grew, so that only the limit can fail).
fn over_body(at: &Message) -> Vec<u8> {
    let mut bytes = body(at).to_vec();
    match at {
        Message::Decide(items) if items.len() > 1 => bump_u16(&mut bytes, 0),
        Message::Decide(_) => {
            // count(2) rec-len(2) door(4) kind(1) secret-len(1)
            bytes[2 + 2 + 4 + 1] += 1;
            bytes.push(0);
        }
        Message::Entries(_) | Message::Doors(_) => bump_u16(&mut bytes, 0),
        Message::FirmwareChunk(_) => {
            let at = 2 + 1 + 8 + 32 + 8;
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) + 1;
            bytes[at..at + 4].copy_from_slice(&len.to_be_bytes());
            bytes.push(0);
        }
        Message::PinCheck(_) => {
            bytes[4] += 1;
            bytes.push(b'1');
        }
        Message::Error(_) => {
            bump_u16(&mut bytes, 3);
            bytes.push(b'm');
        }
        Message::Enrol(_) => {
            bump_u16(&mut bytes, 3);
            bytes.push(0);
        }
        other => panic!("no over-limit body for {}", other.name()),
    }
    bytes
}

fn bump_u16(bytes: &mut [u8], at: usize) {
    let v = u16::from_be_bytes([bytes[at], bytes[at + 1]]) + 1;
    bytes[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn bad_values_are_malformed_not_panics() {
    // A bool that is 2, an opt flag that is 7, invalid utf-8, an offline entry of kind 9.
    let welcome = body(&Message::Welcome(Welcome {
        version: 1,
        site: 1,
        iq: 1,
        revision: 1,
        heartbeat_ms: 1,
        max_frame: 1,
        resync: false,
        doors: vec![],
    }));
    let mut bad = welcome.to_vec();
    bad[2 + 4 + 4 + 8 + 4 + 4] = 2;
    assert_eq!(
        Message::decode(types::WELCOME, &bad),
        Err(MessageError::Decode(DecodeError::Invalid("welcome.resync")))
    );
    let incident = body(&Message::Incident(Incident {
        id: 1,
        kind: IncidentKind::Tamper,
        door: None,
        at: 0,
        detail: String::new(),
    }));
    let mut bad = incident.to_vec();
    bad[9] = 7;
    assert!(Message::decode(types::INCIDENT, &bad).is_err());
    let hello = body(&Message::Hello(Hello {
        min_version: 1,
        max_version: 1,
        firmware: "ab".into(),
        offline_revision: 0,
    }));
    let mut bad = hello.to_vec();
    bad[6] = 0xff;
    assert_eq!(
        Message::decode(types::HELLO, &bad),
        Err(MessageError::Decode(DecodeError::Utf8("hello.firmware")))
    );
}

#[test]
fn a_record_of_a_newer_version_is_skipped_to_its_end() {
    // A DECIDE item with two extra bytes inside its record, followed by a second item.
    let mut body = BytesMut::new();
    body.put_u16(2);
    for door in [5u32, 6] {
        body.put_u16(4 + 1 + 1 + 4 + 8 + 2);
        body.put_u32(door);
        body.put_u8(1);
        body.put_u8(4);
        body.put_slice(&[1, 2, 3, 4]);
        body.put_i64(9);
        body.put_slice(&[0xAA, 0xBB]);
    }
    let Message::Decide(items) = Message::decode(types::DECIDE, &body).unwrap() else {
        panic!()
    };
    assert_eq!(items.iter().map(|i| i.door).collect::<Vec<_>>(), [5, 6]);
    assert!(items.iter().all(|i| i.secret == [1, 2, 3, 4] && i.at == 9));
}

/// Frames out of sequence (a gap, a repeat, a first frame that is not 1) stop the reader
/// with `OutOfSequence`; in-order frames pass.
#[tokio::test]
async fn out_of_order_frames_are_refused() {
    let cases: [(&[u32], usize); 4] = [(&[1, 2, 3], 3), (&[1, 3], 1), (&[1, 1], 1), (&[2], 0)];
    for (seqs, good) in cases {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        for seq in seqs {
            client
                .write_all(&frame_bytes(&Message::PushAck(1), *seq, 0))
                .await
                .unwrap();
        }
        drop(client);
        let mut reader = FrameReader::new(server, FrameCodec::control());
        let mut read = 0;
        loop {
            match reader.next().await {
                Ok(Some(_)) => read += 1,
                Ok(None) => break,
                Err(ReadError::OutOfSequence { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(read, good, "{seqs:?}");
        let finished_cleanly = read == seqs.len();
        assert_eq!(finished_cleanly, good == seqs.len());
    }
}

#[test]
fn a_truncated_stream_waits_and_never_yields_a_partial_frame() {
    let whole = frame_bytes(&decide(3, 8), 1, 0);
    for cut in 0..whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert_eq!(FrameCodec::control().decode(&mut buf).unwrap(), None, "cut {cut}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The frames of PROTOCOL.md section 10, byte for byte.
#[test]
fn worked_example_bytes() {
    let hello = Message::Hello(Hello {
        min_version: 1,
        max_version: 1,
        firmware: "2.4.1".into(),
        offline_revision: 1200,
    });
    let welcome = Message::Welcome(Welcome {
        version: 1,
        site: 7,
        iq: 42,
        revision: 1234,
        heartbeat_ms: 2000,
        max_frame: 65536,
        resync: false,
        doors: vec![100, 101],
    });
    let decide = Message::Decide(vec![DecideItem {
        door: 100,
        kind: Some(CredentialKind::Tag),
        secret: vec![0x04, 0xa1, 0xb2, 0xc3],
        at: 1_796_040_000_000,
        direction: Direction::Unknown,
    }]);
    let decisions = Message::Decisions(Decisions {
        revision: 1234,
        items: vec![DecisionItem {
            effect: Effect::Allow,
            reason: "granted".into(),
        }],
    });
    let expected = [
        (
            hex(&frame_bytes(&hello, 1, 0)),
            "0000001f000100000000000100000000000100010005322e342e3100000000000004b0",
        ),
        (
            hex(&frame_bytes(&welcome, 1, 1)),
            "000000310002000000000001000000010001000000070000002a00000000000004d2000007d0000100000000020000006400000065",
        ),
        (
            hex(&frame_bytes(&decide, 3, 0)),
            "000000220010000000000003000000000001001200000064010404a1b2c3000001a22c538200",
        ),
        (
            hex(&frame_bytes(&decisions, 3, 3)),
            "0000002200110000000000030000000300000000000004d20001000a0100076772616e746564",
        ),
    ];
    for (got, want) in expected {
        assert_eq!(got, want.replace(' ', ""));
    }
}

#[test]
fn enrolment_codes_are_crockford_base32_and_hash_as_typed() {
    let code = keyway_link::enrol::new_code();
    assert_eq!(code.len(), keyway_link::enrol::CODE_LEN);
    assert!(
        code.chars().all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)),
        "{code}"
    );
    assert_ne!(code, keyway_link::enrol::new_code());
    let hash = keyway_link::enrol::hash_code("AB1O-0KL2");
    for typed in ["ab1o-0kl2", "AB10 0K12", "ablo0k12", "AB100K12"] {
        assert_eq!(keyway_link::enrol::hash_code(typed), hash, "{typed}");
    }
    assert_ne!(keyway_link::enrol::hash_code("AB100K13"), hash);
}
