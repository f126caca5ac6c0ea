//! Whole sessions over real TLS on 127.0.0.1, against the in-memory backend.

use crate::fake::{FIRMWARE, Fake, GOOD_TAG, PIN};
use bytes::{BufMut, Bytes, BytesMut};
use keyway_core::{CredentialKind, DoorId, Effect, IqId, Revision};
use keyway_link::codec::{Frame, FrameCodec};
use keyway_link::conn::FrameReader;
use keyway_link::message::*;
use keyway_link::{
    ClientError, ClientEvent, IqClient, IqClientConfig, IqCredentials, LinkConfig, LinkServer, OfflineCause, PushEvent,
    Report, SecurityEvent, enrol,
};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

struct Node {
    server: LinkServer<Fake>,
    fake: Arc<Fake>,
    dir: TempDir,
}

async fn start(configure: impl FnOnce(&mut LinkConfig)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LinkConfig::new(dir.path().to_path_buf(), vec!["localhost".into(), "127.0.0.1".into()]);
    config.control_addr = "127.0.0.1:0".parse().unwrap();
    config.bulk_addr = "127.0.0.1:0".parse().unwrap();
    configure(&mut config);
    let fake = Arc::new(Fake::new());
    let server = LinkServer::start(config, Arc::clone(&fake)).await.unwrap();
    Node { server, fake, dir }
}

impl Node {
    fn client_config(&self) -> IqClientConfig {
        IqClientConfig::new(self.server.control_addr(), self.server.bulk_addr(), "localhost")
    }

    async fn enrol(&self, site: u32, iq: u32, doors: &[u32]) -> IqCredentials {
        let code = self.fake.register(site, iq, doors, Duration::from_secs(60));
        enrol(
            self.server.control_addr(),
            "localhost",
            &self.server.link_ca_der(),
            &code,
        )
        .await
        .unwrap()
    }

    async fn connect(&self, credentials: &IqCredentials) -> IqClient {
        IqClient::connect(self.client_config(), credentials.clone())
            .await
            .unwrap()
    }
}

fn tag(door: u32, secret: &[u8]) -> DecideItem {
    DecideItem {
        door,
        kind: Some(CredentialKind::Tag),
        secret: secret.to_vec(),
        at: 1_764_504_000_000,
        direction: Direction::Unknown,
    }
}

fn refused(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Refused(error)) => error.code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// Waits for the next error event, skipping pushes.
async fn next_error(client: &mut IqClient) -> ErrorFrame {
    loop {
        match client.next_event_within(Duration::from_secs(5)).await {
            Some(ClientEvent::Error(error)) => return error,
            Some(ClientEvent::Push { .. }) => continue,
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

async fn closes(client: &mut IqClient) {
    loop {
        match client.next_event_within(Duration::from_secs(5)).await {
            Some(ClientEvent::Closed) | None => return,
            Some(_) => continue,
        }
    }
}

/// A raw TLS connection to the control port, with or without a client certificate.
async fn raw(node: &Node, credentials: Option<&IqCredentials>) -> tokio_rustls::client::TlsStream<TcpStream> {
    raw_to(node, node.server.control_addr(), credentials).await
}

async fn raw_to(
    node: &Node,
    addr: std::net::SocketAddr,
    credentials: Option<&IqCredentials>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let ca = node.server.link_ca_der();
    let config =
        keyway_link::pki::client_config(&ca, credentials.map(|c| (c.certificate.as_slice(), c.key.as_slice())))
            .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(keyway_link::pki::server_name("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn frame(message: &Message, seq: u32) -> BytesMut {
    let mut body = BytesMut::new();
    message.encode_body(&mut body).unwrap();
    let mut out = BytesMut::new();
    FrameCodec::bulk()
        .encode(
            Frame {
                msg_type: message.msg_type(),
                flags: 0,
                seq,
                reply_to: 0,
                body: body.freeze(),
            },
            &mut out,
        )
        .unwrap();
    out
}

fn hello() -> Message {
    Message::Hello(Hello {
        min_version: 1,
        max_version: 1,
        firmware: "raw".into(),
        offline_revision: 0,
    })
}

/// Reads frames until an error frame, and checks that the connection then closes.
async fn error_then_close<R: AsyncRead + Unpin>(read: R) -> ErrorFrame {
    let mut reader = FrameReader::new(read, FrameCodec::bulk());
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .unwrap()
        {
            Ok(Some(received)) => {
                if let Ok(Message::Error(error)) = received.message {
                    break error;
                }
            }
            other => panic!("closed without an error frame: {other:?}"),
        }
    };
    if error.fatal {
        let after = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .unwrap();
        assert!(
            matches!(after, Ok(None) | Err(_)),
            "still open after a fatal error: {after:?}"
        );
    }
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_connect_and_decide_a_batch_on_one_revision() {
    let node = start(|_| {}).await;
    let credentials = node.enrol(1, 7, &[10, 11]).await;
    assert_eq!((credentials.site.get(), credentials.iq.get()), (1, 7));
    let client = node.connect(&credentials).await;
    let welcome = client.welcome();
    assert_eq!(
        (
            welcome.version,
            welcome.site,
            welcome.iq,
            welcome.revision,
            welcome.doors.clone()
        ),
        (VERSION_MAX, 1, 7, 100, vec![10, 11])
    );
    let decisions = client
        .decide(vec![tag(10, GOOD_TAG), tag(11, b"\x01\x02\x03\x04")])
        .await
        .unwrap();
    assert_eq!(decisions.revision, 100);
    let got: Vec<(Effect, &str)> = decisions.items.iter().map(|i| (i.effect, i.reason.as_str())).collect();
    assert_eq!(got, [(Effect::Allow, "granted"), (Effect::Deny, "unknown_credential")]);
    node.fake
        .wait_report(
            7,
            "online",
            |r| matches!(r, Report::Online { firmware } if firmware == "sim-1"),
        )
        .await;
    // PIN checks, table-driven.
    for (person, pin, want) in [
        (1, PIN, PinVerdict::Correct),
        (1, &b"9999"[..], PinVerdict::Wrong),
        (2, PIN, PinVerdict::NotActivated),
    ] {
        assert_eq!(client.check_pin(person, pin).await.unwrap(), want, "person {person}");
    }
    // Incidents are stored, then acknowledged.
    let incident = Incident {
        id: 5,
        kind: IncidentKind::DoorForced,
        door: Some(10),
        at: 0,
        detail: "forced".into(),
    };
    assert_eq!(client.report_incident(incident).await.unwrap(), 5);
    node.fake
        .wait_report(7, "incident", |r| matches!(r, Report::Incident(i) if i.id == 5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_codes_are_refused_when_expired_used_or_unknown() {
    let node = start(|_| {}).await;
    let ca = node.server.link_ca_der();
    let addr = node.server.control_addr();
    let expired = node.fake.register(1, 1, &[1], Duration::ZERO);
    let used = node.fake.register(1, 2, &[2], Duration::from_secs(60));
    enrol(addr, "localhost", &ca, &used).await.unwrap();
    for (what, code) in [
        ("expired", expired),
        ("used", used),
        ("unknown", "0000000000000000000A".to_owned()),
    ] {
        assert_eq!(
            refused(enrol(addr, "localhost", &ca, &code).await),
            ErrorCode::EnrolmentRefused,
            "{what}"
        );
    }
    // A certificate is needed for anything else; the IQ of the expired code has none.
    let mut stream = raw(&node, None).await;
    stream.write_all(&frame(&hello(), 1)).await.unwrap();
    assert_eq!(error_then_close(stream).await.code, ErrorCode::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_pushed_and_acknowledged_before_any_delta() {
    let node = start(|_| {}).await;
    let credentials = node.enrol(1, 7, &[10]).await;
    let mut config = node.client_config();
    config.auto_ack = false;
    let mut client = IqClient::connect(config, credentials).await.unwrap();
    let revocation = PushEvent::Revocation {
        revision: Revision(101),
        items: vec![RevocationItem {
            what: RevocationWhat::Person,
            id: 9,
            door: None,
        }],
    };
    node.fake.push(7, revocation).await;
    node.fake
        .push(
            7,
            PushEvent::OfflineDelta(OfflineDelta {
                from_revision: 100,
                to_revision: 101,
                upserts: vec![],
                removals: vec![3],
            }),
        )
        .await;
    let Some(ClientEvent::Push {
        seq,
        message: Message::Revocation(r),
    }) = client.next_event_within(Duration::from_secs(5)).await
    else {
        panic!("no revocation");
    };
    assert_eq!((r.revision, r.items[0].id), (101, 9));
    // The delta waits for the revocation's acknowledgement.
    assert_eq!(client.next_event_within(Duration::from_millis(300)).await, None);
    client.ack_push(seq, 101).await.unwrap();
    let Some(ClientEvent::Push {
        seq,
        message: Message::OfflineDelta(d),
    }) = client.next_event_within(Duration::from_secs(5)).await
    else {
        panic!("no delta");
    };
    assert_eq!(
        (d.from_revision, d.to_revision, d.removals.clone()),
        (100, 101, vec![3])
    );
    client.ack_push(seq, 101).await.unwrap();
    node.fake
        .wait_report(7, "revocation ack", |r| r == &Report::PushAcked(Revision(101)))
        .await;
    // Door commands reach the IQ and their acknowledgement reaches the node.
    node.fake
        .push(
            7,
            PushEvent::DoorCommand(DoorCommand {
                command_id: 77,
                door: 10,
                command: DoorCommandKind::RemoteOpen,
                duration_s: 5,
            }),
        )
        .await;
    let Some(ClientEvent::Push {
        seq,
        message: Message::DoorCommand(c),
    }) = client.next_event_within(Duration::from_secs(5)).await
    else {
        panic!("no door command");
    };
    assert_eq!(c.command, DoorCommandKind::RemoteOpen);
    client
        .ack_door_command(
            seq,
            DoorCommandAck {
                command_id: 77,
                status: CommandStatus::Done,
            },
        )
        .await
        .unwrap();
    node.fake
        .wait_report(7, "door command ack", |r| {
            r == &Report::DoorCommandAcked {
                command_id: 77,
                status: CommandStatus::Done,
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_command_for_another_iqs_door_is_not_sent_and_reported_unknown() {
    let node = start(|_| {}).await;
    let mut client = node.connect(&node.enrol(1, 7, &[10]).await).await;
    let command = DoorCommand {
        command_id: 78,
        door: 20,
        command: DoorCommandKind::LockdownOn,
        duration_s: 0,
    };
    node.fake.push(7, PushEvent::DoorCommand(command)).await;
    node.fake
        .wait_report(7, "unknown door", |r| {
            r == &Report::DoorCommandAcked {
                command_id: 78,
                status: CommandStatus::UnknownDoor,
            }
        })
        .await;
    assert_eq!(client.next_event_within(Duration::from_millis(200)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sessions_closes_a_bulk_session_open_alone() {
    let node = start(|_| {}).await;
    let credentials = node.enrol(1, 7, &[10]).await;
    let mut stream = raw_to(&node, node.server.bulk_addr(), Some(&credentials)).await;
    stream.write_all(&frame(&hello(), 1)).await.unwrap();
    for _ in 0..100 {
        if node.server.sessions_of(IqId(7)) == (0, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.server.sessions_of(IqId(7)), (0, 1));
    node.server.close_sessions(IqId(7));
    let error = error_then_close(stream).await;
    assert_eq!((error.code, error.fatal), (ErrorCode::Revoked, true));
    assert_eq!(node.server.sessions_of(IqId(7)), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_uploaded_twice_are_stored_once_and_acknowledged_twice() {
    let node = start(|_| {}).await;
    let credentials = node.enrol(1, 7, &[10]).await;
    let entries: Vec<EntryItem> = (1..=3)
        .map(|seq| EntryItem {
            seq,
            door: 10,
            at: 1_764_504_000_000 + seq as i64,
            effect: Effect::Allow,
            reason: "granted".into(),
            kind: Some(CredentialKind::Tag),
            credential: Some(4),
        })
        .collect();
    let client = node.connect(&credentials).await;
    assert_eq!(client.upload_entries(entries.clone()).await.unwrap(), [1, 2, 3]);
    client.close().await;
    // The acknowledgement was "lost": the IQ reconnects and uploads again.
    let client = node.connect(&credentials).await;
    assert_eq!(client.upload_entries(entries).await.unwrap(), [1, 2, 3]);
    assert_eq!(node.fake.entries(7), [1, 2, 3]);
    assert_eq!(node.fake.entry_writes(), 3);
    // An empty upload, and one over the limit, are refused without closing the session.
    assert_eq!(refused(client.upload_entries(vec![]).await), ErrorCode::LimitExceeded);
    assert_eq!(
        client.decide(vec![tag(10, GOOD_TAG)]).await.unwrap().items[0].effect,
        Effect::Allow
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iq_may_only_name_its_own_doors() {
    let node = start(|_| {}).await;
    let credentials = node.enrol(1, 7, &[10]).await;
    let other = node.enrol(2, 8, &[20]).await;
    let client = node.connect(&credentials).await;
    let _other = node.connect(&other).await;
    let foreign_entry = EntryItem {
        seq: 1,
        door: 20,
        at: 0,
        effect: Effect::Allow,
        reason: "granted".into(),
        kind: None,
        credential: None,
    };
    let foreign_incident = Incident {
        id: 1,
        kind: IncidentKind::Tamper,
        door: Some(20),
        at: 0,
        detail: String::new(),
    };
    let attempts: [(&str, Result<(), ClientError>); 3] = [
        (
            "decide",
            client
                .decide(vec![tag(10, GOOD_TAG), tag(20, GOOD_TAG)])
                .await
                .map(drop),
        ),
        ("entries", client.upload_entries(vec![foreign_entry]).await.map(drop)),
        ("incident", client.report_incident(foreign_incident).await.map(drop)),
    ];
    for (what, result) in attempts {
        assert_eq!(refused(result), ErrorCode::Forbidden, "{what}");
    }
    let events = node
        .fake
        .reports(7)
        .into_iter()
        .filter(|r| matches!(r, Report::Security(SecurityEvent::ForeignDoor { door: DoorId(20), .. })))
        .count();
    assert_eq!(events, 3);
    assert!(node.fake.entries(7).is_empty());
    // The session goes on.
    assert_eq!(
        client.decide(vec![tag(10, GOOD_TAG)]).await.unwrap().items[0].effect,
        Effect::Allow
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_closes_every_session_and_is_refused_after() {
    let node = start(|_| {}).await;
    let credentials = node.enrol(1, 7, &[10]).await;
    let mut client = node.connect(&credentials).await;
    let list = client.fetch_offline_list().await.unwrap();
    assert_eq!(list.entries.len(), 3);
    assert_eq!(node.server.sessions_of(IqId(7)), (1, 1));
    node.fake.revoke(7);
    let error = next_error(&mut client).await;
    assert_eq!((error.code, error.fatal), (ErrorCode::Revoked, true));
    closes(&mut client).await;
    for _ in 0..100 {
        if node.server.sessions_of(IqId(7)) == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.server.sessions_of(IqId(7)), (0, 0));
    assert_eq!(
        refused(IqClient::connect(node.client_config(), credentials).await),
        ErrorCode::Revoked
    );
    node.fake
        .wait_report(7, "security event", |r| {
            r == &Report::Security(SecurityEvent::RevokedCertificate)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_deployment_fails_the_handshake() {
    let a = start(|_| {}).await;
    let b = start(|_| {}).await;
    let credentials = a.enrol(1, 7, &[10]).await;
    // Register the same ids on B, so that only the certificate's issuer differs.
    let _code = b.fake.register(1, 7, &[10], Duration::from_secs(60));
    let mut foreign = credentials.clone();
    foreign.link_ca = b.server.link_ca_der();
    let result = IqClient::connect(b.client_config(), foreign).await;
    assert!(
        matches!(result, Err(ClientError::Io(_) | ClientError::Closed)),
        "{result:?}"
    );
    // And A's link CA does not vouch for B's server.
    let result = IqClient::connect(b.client_config(), credentials).await;
    assert!(matches!(result, Err(ClientError::Io(_))), "{result:?}");
}

/// A certificate signed by site 1's CA but naming an IQ of site 2 (forged here with the
/// CA's key from the data directory) is refused: the issuer must be the named site's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_naming_another_site_than_its_issuer_is_refused() {
    let node = start(|_| {}).await;
    let genuine = node.enrol(1, 7, &[10]).await;
    let _code = node.fake.register(2, 8, &[20], Duration::from_secs(60));
    let site1 = node.dir.path().join("link/sites/1");
    let ca_cert = rustls::pki_types::CertificateDer::from(std::fs::read(site1.join("ca.der")).unwrap());
    let ca_key = rcgen::KeyPair::try_from(std::fs::read(site1.join("ca.key.der")).unwrap().as_slice()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_cert, &ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        keyway_link::pki::identity_uri(keyway_core::SiteId(2), IqId(8))
            .try_into()
            .unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let forged = params.signed_by(&key, &issuer).unwrap();
    let credentials = IqCredentials {
        site: keyway_core::SiteId(2),
        iq: IqId(8),
        certificate: forged.der().to_vec(),
        key: key.serialize_der(),
        link_ca: genuine.link_ca.clone(),
    };
    assert_eq!(
        refused(IqClient::connect(node.client_config(), credentials).await),
        ErrorCode::Unauthenticated
    );
    // The genuine certificate of site 1 still works.
    assert_eq!(node.connect(&genuine).await.welcome().site, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_that_connection_only() {
    let node = start(|_| {}).await;
    let credentials = node.enrol(1, 7, &[10]).await;
    let bystander = node.connect(&node.enrol(1, 8, &[11]).await).await;
    // Not TLS at all.
    let mut tcp = TcpStream::connect(node.server.control_addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
    )
    .await
    .unwrap();
    assert!(read.is_err() || sink.len() < 64, "a plaintext client got an answer");
    // Table: what a TLS client sends first, and the error it gets before the close.
    let mut oversized = BytesMut::new();
    oversized.put_u32(65_537);
    oversized.put_slice(&[0; 64]);
    let mut short = BytesMut::new();
    short.put_u32(3);
    short.put_slice(&[0; 3]);
    let cases: [(&str, bool, Vec<u8>, ErrorCode); 6] = [
        (
            "http over tls",
            false,
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            ErrorCode::FrameTooLarge,
        ),
        ("oversized frame", true, oversized.to_vec(), ErrorCode::FrameTooLarge),
        ("length under the header", true, short.to_vec(), ErrorCode::Malformed),
        (
            "decide before hello",
            true,
            frame(&Message::Decide(vec![tag(10, GOOD_TAG)]), 1).to_vec(),
            ErrorCode::UnexpectedMessage,
        ),
        (
            "first frame numbered 2",
            true,
            frame(&hello(), 2).to_vec(),
            ErrorCode::OutOfSequence,
        ),
        (
            "unsupported version",
            true,
            frame(
                &Message::Hello(Hello {
                    min_version: VERSION_MAX + 1,
                    max_version: VERSION_MAX + 2,
                    firmware: String::new(),
                    offline_revision: 0,
                }),
                1,
            )
            .to_vec(),
            ErrorCode::UnsupportedVersion,
        ),
    ];
    for (what, with_cert, bytes, want) in cases {
        let mut stream = raw(&node, with_cert.then_some(&credentials)).await;
        stream.write_all(&bytes).await.unwrap();
        let error = error_then_close(stream).await;
        assert_eq!((error.code, error.fatal), (want, true), "{what}: {}", error.message);
        assert_eq!(
            bystander.decide(vec![tag(11, GOOD_TAG)]).await.unwrap().items[0].effect,
            Effect::Allow,
            "{what}"
        );
    }
    // After HELLO: an oversized frame, and a gap in the frame numbers.
    for (what, second, want) in [
        ("oversized after hello", oversized.to_vec(), ErrorCode::FrameTooLarge),
        ("gap", frame(&Message::PushAck(1), 3).to_vec(), ErrorCode::OutOfSequence),
    ] {
        let mut stream = raw(&node, Some(&credentials)).await;
        stream.write_all(&frame(&hello(), 1)).await.unwrap();
        stream.write_all(&second).await.unwrap();
        let error = error_then_close(stream).await;
        assert_eq!(error.code, want, "{what}");
    }
    assert_eq!(
        bystander.decide(vec![tag(11, GOOD_TAG)]).await.unwrap().items[0].effect,
        Effect::Allow
    );
}

/// A burst of pipelined requests far beyond the session's queue is answered in full:
/// the session stops reading while its queue is full instead of dropping the IQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_burst_larger_than_the_queue_is_answered() {
    let node = start(|c| c.session_queue = 4).await;
    let client = Arc::new(node.connect(&node.enrol(1, 7, &[10]).await).await);
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let client = Arc::clone(&client);
        burst.spawn(async move { client.decide(vec![tag(10, GOOD_TAG); 64]).await });
    }
    let mut answered = 0;
    while let Some(result) = burst.join_next().await {
        assert_eq!(result.unwrap().unwrap().items.len(), 64);
        answered += 1;
    }
    assert_eq!(answered, 300);
    assert_eq!(node.server.sessions_of(IqId(7)), (1, 0));
}

/// An IQ that sends requests but never reads the answers is disconnected (full queue or
/// write timeout), and meanwhile another IQ is answered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iq_that_does_not_read_is_disconnected_without_stalling_others() {
    let node = start(|c| {
        c.write_timeout = Duration::from_millis(300);
        c.session_queue = 16;
    })
    .await;
    let stuck = node.enrol(1, 7, &[10]).await;
    let bystander = node.connect(&node.enrol(1, 8, &[11]).await).await;
    let stream = raw(&node, Some(&stuck)).await;
    let (_read, mut write) = tokio::io::split(stream);
    write.write_all(&frame(&hello(), 1)).await.unwrap();
    for _ in 0..250 {
        if node.server.sessions_of(IqId(7)) == (1, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.server.sessions_of(IqId(7)), (1, 0));
    let flood = tokio::spawn(async move {
        let items: Vec<DecideItem> = (0..64).map(|_| tag(10, GOOD_TAG)).collect();
        let mut bytes = Vec::new();
        for seq in 2..20_000u32 {
            bytes.extend_from_slice(&frame(&Message::Decide(items.clone()), seq));
            if bytes.len() > 256 * 1024 {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
                bytes.clear();
            }
        }
    });
    let started = std::time::Instant::now();
    loop {
        let asked = std::time::Instant::now();
        let answer = bystander.decide(vec![tag(11, GOOD_TAG)]).await.unwrap();
        assert_eq!(answer.items[0].effect, Effect::Allow);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a bystander waited {:?}",
            asked.elapsed()
        );
        if node.server.sessions_of(IqId(7)) == (0, 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stuck iq was never disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_and_bad_bodies_get_an_error_and_the_session_goes_on() {
    let node = start(|_| {}).await;
    let mut client = node.connect(&node.enrol(1, 7, &[10]).await).await;
    let cases = [
        (0x0999u16, Bytes::from_static(b"future"), ErrorCode::UnknownMessageType),
        (types::DECIDE, Bytes::from_static(&[0, 1, 0]), ErrorCode::Malformed),
        (types::DECIDE, Bytes::from_static(&[0, 65]), ErrorCode::LimitExceeded),
    ];
    for (msg_type, body, want) in cases {
        client.send_raw(msg_type, body).await.unwrap();
        let error = next_error(&mut client).await;
        assert_eq!((error.code, error.fatal), (want, false));
        assert_eq!(
            client.decide(vec![tag(10, GOOD_TAG)]).await.unwrap().items[0].effect,
            Effect::Allow
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_missed_heartbeats_mark_an_iq_offline() {
    let node = start(|c| c.heartbeat = Duration::from_millis(100)).await;
    let quiet = node.enrol(1, 7, &[10]).await;
    let alive = node.enrol(1, 8, &[11]).await;
    let mut config = node.client_config();
    config.heartbeats = false;
    // Before the quiet IQ's last frame (its hello): the server counts from that frame.
    let started = std::time::Instant::now();
    let mut quiet = IqClient::connect(config, quiet).await.unwrap();
    let _alive = node.connect(&alive).await;
    node.fake
        .wait_report(7, "offline", |r| r == &Report::Offline(OfflineCause::MissedHeartbeats))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(next_error(&mut quiet).await.code, ErrorCode::Timeout);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !node.fake.reports(8).iter().any(|r| matches!(r, Report::Offline(_))),
        "a heartbeating iq was marked offline"
    );
    assert!(
        node.fake
            .reports(8)
            .iter()
            .any(|r| matches!(r, Report::Heartbeat { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_offline_lists_are_capped_chunked_and_checked() {
    let node = start(|_| {}).await;
    let client = node.connect(&node.enrol(1, 7, &[10, 11]).await).await;
    node.fake.set_offline_entries(10_005);
    let list = client.fetch_offline_list().await.unwrap();
    assert_eq!(
        (list.begin.tags, list.begin.remote_users, list.entries.len()),
        (10_000, 0, 10_000)
    );
    assert!(list.begin.chunks >= 10, "{} chunks", list.begin.chunks);
    assert_eq!(list.entries[9_999].credential, 9_999);
    assert_eq!(list.begin.time_zone, "Europe/Madrid");
    node.fake
        .wait_report(7, "list installed", |r| {
            r == &Report::OfflineListInstalled(Revision(100))
        })
        .await;
    // The IQ decides from it alone.
    let store = keyway_link::offline::OfflineStore::from_list(&list).unwrap();
    let secret = 42u64.to_be_bytes();
    for (door, at, want) in [
        (11, "2026-11-28T03:00:00Z", "granted"),
        (10, "2026-11-30T09:00:00Z", "granted"),
        (10, "2026-11-28T10:00:00Z", "outside_schedule"),
        (10, "2026-12-25T09:00:00Z", "holiday"),
    ] {
        assert_eq!(
            store
                .decide(door, CredentialKind::Tag, &secret, at.parse().unwrap())
                .reason,
            want,
            "door {door} at {at}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_downloads_resume_and_are_checked() {
    let node = start(|_| {}).await;
    let client = node.connect(&node.enrol(1, 7, &[10]).await).await;
    let whole = client.fetch_firmware(FIRMWARE, Vec::new(), 65_536).await.unwrap();
    assert_eq!(whole, node.fake.firmware);
    let resumed = client
        .fetch_firmware(FIRMWARE, node.fake.firmware[..50_000].to_vec(), 524_288)
        .await
        .unwrap();
    assert_eq!(resumed, node.fake.firmware);
    let mut corrupt = node.fake.firmware[..50_000].to_vec();
    corrupt[7] ^= 1;
    assert!(matches!(
        client.fetch_firmware(FIRMWARE, corrupt, 65_536).await,
        Err(ClientError::Integrity(_))
    ));
    assert_eq!(
        refused(client.fetch_firmware("0.0.0", Vec::new(), 1024).await),
        ErrorCode::NotFound
    );
    client.firmware_installed(FIRMWARE).await.unwrap();
    node.fake
        .wait_report(7, "firmware", |r| r == &Report::FirmwareInstalled(FIRMWARE.into()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_iq_are_capped() {
    let node = start(|c| c.max_sessions_per_iq = 1).await;
    let credentials = node.enrol(1, 7, &[10]).await;
    let first = node.connect(&credentials).await;
    assert_eq!(
        refused(IqClient::connect(node.client_config(), credentials.clone()).await),
        ErrorCode::TooManySessions
    );
    first.close().await;
    for _ in 0..100 {
        if node.server.sessions_of(IqId(7)) == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = node.connect(&credentials).await;
    assert_eq!(
        again.decide(vec![tag(10, GOOD_TAG)]).await.unwrap().items[0].effect,
        Effect::Allow
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_every_session_and_waits_for_them() {
    let node = start(|_| {}).await;
    let mut client = node.connect(&node.enrol(1, 7, &[10]).await).await;
    let Node {
        server,
        fake,
        dir: _dir,
    } = node;
    server.shutdown(Duration::from_secs(5)).await;
    let error = next_error(&mut client).await;
    assert_eq!((error.code, error.fatal), (ErrorCode::ShuttingDown, true));
    fake.wait_report(7, "offline", |r| r == &Report::Offline(OfflineCause::Disconnected))
        .await;
}
