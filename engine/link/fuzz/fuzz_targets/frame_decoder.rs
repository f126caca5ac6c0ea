//! Arbitrary bytes through the control and bulk frame decoders and every message
//! decoder: never a panic, and whatever decodes re-encodes to itself.

#![no_main]

use bytes::BytesMut;
use keyway_link::codec::FrameCodec;
use keyway_link::message::Message;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn check(msg_type: u16, body: &[u8]) {
    if let Ok(message) = Message::decode(msg_type, body) {
        let mut again = BytesMut::new();
        if message.encode_body(&mut again).is_ok() {
            assert_eq!(Message::decode(msg_type, &again).ok(), Some(message));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for mut codec in [FrameCodec::control(), FrameCodec::bulk()] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            check(frame.msg_type, &frame.body);
        }
    }
    if let [a, b, body @ ..] = data {
        check(u16::from_be_bytes([*a, *b]), body);
    }
});
