//! The link against a real node: `NodeBackend` on a temporary SQLite database with the
//! repository's default bundle, IQs over real TLS on 127.0.0.1.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::*;
use keyway_link::message::{DecideItem, EntryItem, ErrorCode, Message, Passage, RevocationWhat};
use keyway_link::offline::OfflineStore;
use keyway_link::{
    ClientEvent, IqClient, IqClientConfig, IqCredentials, LinkConfig, LinkServer, NodeBackend, NodeBackendConfig, enrol,
};
use keyway_node::{CommandOutcome, Direction, DoorCommand, Node, NodeConfig};
use keyway_store::{EntryQuery, IncidentKind, IncidentQuery};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const TAG: [u8; 4] = [0x04, 0xa2, 0x19, 0x7c];
const ACTOR: &str = "test";

struct Ids {
    site: SiteId,
    iq: IqId,
    door: DoorId,
    person: PersonId,
}

struct Setup {
    node: Node,
    backend: Arc<NodeBackend>,
    server: LinkServer<NodeBackend>,
    ids: Ids,
    url: String,
    _dir: TempDir,
}

async fn create(node: &Node, record: Record) -> u32 {
    node.store().model().create(ACTOR, record).await.unwrap().id.unwrap()
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut LinkConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keyway.db").display());
    let mut config = NodeConfig::new(url.clone());
    config.bundle_dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/default"));
    config.store.poll_interval = Duration::from_millis(100);
    let node = Node::open(config).await.unwrap();
    let site = SiteId(
        create(
            &node,
            Record::Site(SiteRecord {
                id: SiteId(0),
                time_zone: TimeZone::get("Europe/Madrid").unwrap(),
                holiday_calendar: None,
                lockdown: false,
            }),
        )
        .await,
    );
    let iq = IqId(create(&node, Record::Iq(IqRecord { id: IqId(0), site })).await);
    let door = DoorId(
        create(
            &node,
            Record::Door(DoorRecord {
                id: DoorId(0),
                site,
                iq: Some(iq),
                mode: DoorMode::Normal,
                lockdown: false,
            }),
        )
        .await,
    );
    let person = PersonId(
        create(
            &node,
            Record::Person(PersonRecord {
                id: PersonId(0),
                site,
                role: RoleId(3),
                blocked: false,
            }),
        )
        .await,
    );
    create(
        &node,
        Record::Credential(CredentialRecord {
            id: CredentialId(0),
            site,
            kind: CredentialKind::Tag,
            secret: TAG.to_vec(),
            owner: Some(person),
            valid_from: None,
            valid_until: None,
            offline_access: true,
            revoked: false,
        }),
    )
    .await;
    create(
        &node,
        Record::Group(GroupRecord {
            id: GroupId(0),
            site,
            doors: vec![door],
            schedule: None,
            members: vec![person],
        }),
    )
    .await;
    let backend = Arc::new(NodeBackend::new(node.clone(), NodeBackendConfig::default()));
    node.set_door_commands(backend.door_commands());
    let mut link = LinkConfig::new(dir.path().to_path_buf(), vec!["localhost".into()]);
    link.control_addr = "127.0.0.1:0".parse().unwrap();
    link.bulk_addr = "127.0.0.1:0".parse().unwrap();
    tweak(&mut link);
    let server = LinkServer::start(link, Arc::clone(&backend)).await.unwrap();
    Setup {
        node,
        backend,
        server,
        ids: Ids { site, iq, door, person },
        url,
        _dir: dir,
    }
}

impl Setup {
    fn client_config(&self) -> IqClientConfig {
        IqClientConfig::new(self.server.control_addr(), self.server.bulk_addr(), "localhost")
    }

    async fn enrol(&self) -> IqCredentials {
        self.enrol_iq(self.ids.iq).await
    }

    async fn enrol_iq(&self, iq: IqId) -> IqCredentials {
        let code = enrol::new_code();
        let expires = Timestamp::now().as_second() + 600;
        self.node
            .store()
            .devices()
            .issue_enrolment_code(ACTOR, iq, &enrol::hash_code(&code), crate::t(expires), Timestamp::now())
            .await
            .unwrap();
        enrol(
            self.server.control_addr(),
            "localhost",
            &self.server.link_ca_der(),
            &code,
        )
        .await
        .unwrap()
    }

    async fn close(self) {
        self.server.shutdown(Duration::from_secs(1)).await;
        self.node.close().await;
    }
}

fn read(door: DoorId, at: Timestamp) -> DecideItem {
    DecideItem {
        door: door.get(),
        kind: Some(CredentialKind::Tag),
        secret: TAG.to_vec(),
        at: at.as_millisecond(),
        direction: Direction::Unknown,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_iq_decides_hears_a_block_at_once_and_uploads_once() {
    let s = setup().await;
    let credentials = s.enrol().await;
    assert_eq!((credentials.site, credentials.iq), (s.ids.site, s.ids.iq));
    let mut client = IqClient::connect(s.client_config(), credentials.clone()).await.unwrap();
    let now = Timestamp::now();

    let allowed = client.decide(vec![read(s.ids.door, now)]).await.unwrap();
    assert_eq!(allowed.items[0].effect, Effect::Allow, "{allowed:?}");
    assert_eq!(allowed.revision, s.node.snapshot().load().revision().0);
    assert!(s.node.door_commands().state(s.ids.iq).online);

    // A block reaches the IQ as a revocation, and the next decision denies.
    let written = s
        .node
        .store()
        .model()
        .write(ACTOR, Change::BlockPerson(s.ids.person))
        .await
        .unwrap();
    let revision = written.0;
    let revocation = loop {
        match client.next_event_within(Duration::from_secs(5)).await {
            Some(ClientEvent::Push {
                message: Message::Revocation(r),
                ..
            }) => break r,
            Some(ClientEvent::Push { .. }) => {}
            other => panic!("no revocation: {other:?}"),
        }
    };
    assert_eq!(revocation.revision, revision);
    assert_eq!(
        (revocation.items[0].what, revocation.items[0].id),
        (RevocationWhat::Person, s.ids.person.get())
    );
    let denied = client.decide(vec![read(s.ids.door, now)]).await.unwrap();
    assert_eq!(
        (denied.items[0].effect, denied.items[0].reason.as_str(), denied.revision),
        (Effect::Deny, "person_blocked", revision)
    );

    // Offline entries uploaded twice are stored once, with their original time.
    let at = Timestamp::from_second(1_790_000_000).unwrap();
    let entries: Vec<EntryItem> = (1..=3)
        .map(|seq| EntryItem {
            seq,
            door: s.ids.door.get(),
            at: at.as_millisecond() + i64::try_from(seq).unwrap(),
            effect: Effect::Allow,
            reason: "granted".into(),
            kind: Some(CredentialKind::Tag),
            credential: Some(1),
        })
        .collect();
    assert_eq!(client.upload_entries(entries.clone()).await.unwrap(), [1, 2, 3]);
    assert_eq!(client.upload_entries(entries).await.unwrap(), [1, 2, 3]);
    s.node.store().entries().flush().await.unwrap();
    let mut query = EntryQuery::site(s.ids.site);
    query.limit = 100;
    let page = s.node.store().entries().query(&query).await.unwrap();
    let mut offline: Vec<u64> = page
        .entries
        .iter()
        .filter_map(|e| e.entry.iq)
        .filter(|(iq, seq)| *iq == s.ids.iq && *seq < keyway_link::node_backend::ONLINE_SEQ_BASE)
        .map(|(_, seq)| seq)
        .collect();
    offline.sort_unstable();
    assert_eq!(offline, [1, 2, 3]);
    let first = page.entries.iter().find(|e| e.entry.iq == Some((s.ids.iq, 1))).unwrap();
    assert_eq!(first.entry.at.as_millisecond(), at.as_millisecond() + 1);
    // Both online decisions were logged under the IQ too.
    let online = page
        .entries
        .iter()
        .filter(|e| {
            e.entry
                .iq
                .is_some_and(|(_, seq)| seq >= keyway_link::node_backend::ONLINE_SEQ_BASE)
        })
        .count();
    assert_eq!(online, 2);

    // Door commands reach the IQ's session; an unconnected IQ is not delivered to.
    let commands = s.node.door_commands();
    let ids_door = s.ids.door;
    let iq = s.ids.iq;
    let send = tokio::spawn(async move { commands.send(iq, ids_door, DoorCommand::RemoteOpen).await });
    loop {
        match client.next_event_within(Duration::from_secs(5)).await {
            Some(ClientEvent::Push {
                seq,
                message: Message::DoorCommand(command),
            }) => {
                client
                    .ack_door_command(
                        seq,
                        keyway_link::message::DoorCommandAck {
                            command_id: command.command_id,
                            status: keyway_link::message::CommandStatus::Done,
                        },
                    )
                    .await
                    .unwrap();
                break;
            }
            Some(ClientEvent::Push { .. }) => {}
            other => panic!("no door command: {other:?}"),
        }
    }
    assert_eq!(send.await.unwrap(), CommandOutcome::Delivered);
    assert!(matches!(
        s.node
            .door_commands()
            .send(IqId(999), s.ids.door, DoorCommand::RemoteOpen)
            .await,
        CommandOutcome::NotDelivered { .. }
    ));

    client.close().await;
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_decisions_agree_with_the_core_on_the_list_revision() {
    let s = setup().await;
    // A second person with a key but no right, and a revoked tag.
    let other = PersonId(
        create(
            &s.node,
            Record::Person(PersonRecord {
                id: PersonId(0),
                site: s.ids.site,
                role: RoleId(3),
                blocked: false,
            }),
        )
        .await,
    );
    let stranger = [0x0a, 0x0b, 0x0c, 0x0d];
    create(
        &s.node,
        Record::Credential(CredentialRecord {
            id: CredentialId(0),
            site: s.ids.site,
            kind: CredentialKind::Tag,
            secret: stranger.to_vec(),
            owner: Some(other),
            valid_from: None,
            valid_until: None,
            offline_access: false,
            revoked: false,
        }),
    )
    .await;
    let client = IqClient::connect(s.client_config(), s.enrol().await).await.unwrap();
    let list = client.fetch_offline_list().await.unwrap();
    assert_eq!(list.entries.len(), 1, "only the credential that opens the IQ's door");
    let store = OfflineStore::from_list(&list).unwrap();
    let snapshot = s.node.snapshot().load_full();
    assert_eq!(snapshot.revision().0, list.begin.revision);
    let now = Timestamp::now();
    for secret in [&TAG[..], &stranger[..], &[1, 2, 3, 4][..]] {
        for door in [s.ids.door, DoorId(999)] {
            let core = decide(
                &snapshot,
                door,
                Presented {
                    kind: CredentialKind::Tag,
                    secret,
                },
                now,
            );
            let offline = store.decide(door.get(), CredentialKind::Tag, secret, now);
            assert_eq!(
                offline.effect, core.effect,
                "{secret:?} at {door:?}: {offline:?} vs {core:?}"
            );
        }
    }
    assert_eq!(s.backend.offline_overflow(s.ids.iq), (0, 0));
    client.close().await;
    s.close().await;
}

/// The pushes right after `WELCOME` on a reconnection: a revocation (if any), then the
/// delta.
async fn replayed(
    client: &mut IqClient,
) -> (
    Option<keyway_link::message::Revocation>,
    keyway_link::message::OfflineDelta,
) {
    let mut revocation = None;
    loop {
        match client.next_event_within(Duration::from_secs(5)).await {
            Some(ClientEvent::Push {
                message: Message::Revocation(r),
                ..
            }) => revocation = Some(r),
            Some(ClientEvent::Push {
                message: Message::OfflineDelta(d),
                ..
            }) => return (revocation, d),
            other => panic!("no replay: {other:?}"),
        }
    }
}

/// An IQ that was away while keys and people changed is brought up to date by one
/// revocation and one delta, and then decides offline as the core does; a change to its
/// groups makes it fetch a full list instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_iq_is_brought_up_to_date_by_replay() {
    let s = setup().await;
    let credentials = s.enrol().await;
    let client = IqClient::connect(s.client_config(), credentials.clone()).await.unwrap();
    let list = client.fetch_offline_list().await.unwrap();
    let mut offline = OfflineStore::from_list(&list).unwrap();
    let since = list.begin.revision;
    client.close().await;

    // Away: the first person is blocked, a second person gets a right and a tag, a tag of
    // nobody is made, and another site changes.
    let group = s
        .node
        .snapshot()
        .load()
        .records()
        .into_iter()
        .find_map(|r| match r {
            Record::Group(g) if g.site == s.ids.site => Some(g.id),
            _ => None,
        })
        .unwrap();
    let person = |site| {
        Record::Person(PersonRecord {
            id: PersonId(0),
            site,
            role: RoleId(3),
            blocked: false,
        })
    };
    let tag = |site, secret: [u8; 4], owner| {
        Record::Credential(CredentialRecord {
            id: CredentialId(0),
            site,
            kind: CredentialKind::Tag,
            secret: secret.to_vec(),
            owner,
            valid_from: None,
            valid_until: None,
            offline_access: false,
            revoked: false,
        })
    };
    let store = s.node.store();
    store
        .model()
        .write(ACTOR, Change::BlockPerson(s.ids.person))
        .await
        .unwrap();
    let second = PersonId(create(&s.node, person(s.ids.site)).await);
    store
        .model()
        .write(ACTOR, Change::Grant { person: second, group })
        .await
        .unwrap();
    let newcomer = [0x51, 0x52, 0x53, 0x54];
    create(&s.node, tag(s.ids.site, newcomer, Some(second))).await;
    let nobodys = [0x61, 0x62, 0x63, 0x64];
    create(&s.node, tag(s.ids.site, nobodys, None)).await;
    let elsewhere = SiteId(
        create(
            &s.node,
            Record::Site(SiteRecord {
                id: SiteId(0),
                time_zone: TimeZone::UTC,
                holiday_calendar: None,
                lockdown: false,
            }),
        )
        .await,
    );
    let stranger = PersonId(create(&s.node, person(elsewhere)).await);
    create(&s.node, tag(elsewhere, [0x71, 0x72, 0x73, 0x74], Some(stranger))).await;

    let mut config = s.client_config();
    config.offline_revision = since;
    let mut client = IqClient::connect(config, credentials.clone()).await.unwrap();
    let now = s.node.snapshot().load_full();
    assert!(!client.welcome().resync, "a replay, not a full list");
    assert_eq!(client.welcome().revision, now.revision().0);
    let (revocation, delta) = replayed(&mut client).await;
    let revocation = revocation.expect("the block is revoked");
    assert!(
        revocation
            .items
            .iter()
            .any(|i| (i.what, i.id) == (RevocationWhat::Person, s.ids.person.get()))
    );
    assert_eq!((delta.from_revision, delta.to_revision), (since, now.revision().0));
    assert_eq!(delta.upserts.len(), 1, "only the newcomer's tag opens: {delta:?}");
    offline.apply_revocation(&revocation);
    assert_eq!(offline.apply_delta(&delta), keyway_link::offline::DeltaOutcome::Applied);
    let at = Timestamp::now();
    for secret in [TAG, newcomer, nobodys, [0x71, 0x72, 0x73, 0x74]] {
        let core = decide(
            &now,
            s.ids.door,
            Presented {
                kind: CredentialKind::Tag,
                secret: &secret,
            },
            at,
        );
        let off = offline.decide(s.ids.door.get(), CredentialKind::Tag, &secret, at);
        assert_eq!(off.effect, core.effect, "{secret:?}: offline {off:?}, core {core:?}");
    }
    client.close().await;

    // Away again: the group changes. Only a full list says what that did.
    let since = now.revision().0;
    store
        .model()
        .write(
            ACTOR,
            Change::PutGroup(GroupRecord {
                id: group,
                site: s.ids.site,
                doors: vec![s.ids.door],
                schedule: None,
                members: vec![second],
            }),
        )
        .await
        .unwrap();
    let mut config = s.client_config();
    config.offline_revision = since;
    let client = IqClient::connect(config, credentials).await.unwrap();
    assert!(client.welcome().resync, "a group change asks for a full list");
    client.close().await;
    s.close().await;
}

/// Over capacity, the list the link sends holds what the core's `offline_plan` keeps and
/// leaves out what it leaves out, so the API's "pushed out" answers speak of the lists
/// IQs really get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_sent_follows_the_cores_offline_plan() {
    let s = setup().await;
    let first = 200_000u32;
    let records: Vec<Record> = (0..IQ_MAX_TAGS + 5)
        .map(|i| {
            Record::Credential(CredentialRecord {
                id: CredentialId(first + i),
                site: s.ids.site,
                kind: CredentialKind::Tag,
                secret: (first + i).to_be_bytes().to_vec(),
                owner: Some(s.ids.person),
                valid_from: None,
                valid_until: None,
                // Some late keys with offline access jump the queue; one is revoked.
                offline_access: i % 1_000 == 999,
                revoked: i == 3,
            })
        })
        .collect();
    s.node.store().model().import("test", records).await.unwrap();
    let client = IqClient::connect(s.client_config(), s.enrol().await).await.unwrap();
    let list = client.fetch_offline_list().await.unwrap();
    let plan = s.node.snapshot().load().offline_plan(s.ids.iq).unwrap();
    assert_eq!(plan.tags, IQ_MAX_TAGS);
    assert_eq!(
        plan.left_out.len(),
        5,
        "10,006 tags reach the IQ, one is revoked: {:?}",
        plan.left_out
    );
    let sent: std::collections::HashSet<u32> = list.entries.iter().map(|e| e.credential).collect();
    assert_eq!(sent.len(), list.entries.len());
    assert_eq!(u32::try_from(sent.len()).unwrap(), plan.tags + plan.remote_users);
    for c in &plan.left_out {
        assert!(!sent.contains(&c.0), "{c:?} is left out by the plan but was sent");
    }
    for late in (999..IQ_MAX_TAGS + 5).step_by(1_000) {
        assert!(sent.contains(&(first + late)), "offline access goes first: {late}");
    }
    assert!(!sent.contains(&(first + 3)), "a revoked tag is not listed");
    assert_eq!(s.backend.offline_overflow(s.ids.iq), (5, 0));
    client.close().await;
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_superseded_certificate_is_refused() {
    let s = setup().await;
    let first = s.enrol().await;
    let second = s.enrol().await;
    // Only the certificate issued last authenticates.
    assert!(IqClient::connect(s.client_config(), first).await.is_err());
    let client = IqClient::connect(s.client_config(), second.clone()).await.unwrap();
    client.close().await;
    // Revoked: refused from then on, and a used code does not enrol again.
    s.backend.revoke(ACTOR, s.ids.iq).await.unwrap();
    s.server.close_sessions(s.ids.iq);
    let refused = IqClient::connect(s.client_config(), second).await;
    assert!(refused.is_err(), "a revoked certificate connected");
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_measures_decisions() {
    let s = setup().await;
    let credentials = s.enrol().await;
    let iq = keyway_link::sim::SimIq {
        credentials,
        reads: vec![read(s.ids.door, Timestamp::now())],
    };
    let config = keyway_link::sim::SimConfig {
        client: s.client_config(),
        duration: Duration::from_millis(300),
        batch: 4,
        pace: None,
        outage: None,
        idle: false,
    };
    let summary = keyway_link::sim::run(vec![iq.clone()], &config).await.unwrap();
    assert_eq!((summary.connected, summary.errors), (1, 0), "{summary:?}");
    assert!(summary.decisions > 0 && summary.per_second > 0.0, "{summary:?}");
    let [p50, p90, p99, max] = summary.latency_us;
    assert!(0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{summary:?}");
    let back_to_back = summary.decisions;

    // On a schedule: one frame every 50 ms for 300 ms is at most 6 frames (their due
    // times are 0, 50, .. 250 ms), however fast the server answers.
    let paced = keyway_link::sim::SimConfig {
        pace: Some(Duration::from_millis(50)),
        ..config.clone()
    };
    let summary = keyway_link::sim::run(vec![iq.clone()], &paced).await.unwrap();
    assert_eq!((summary.connected, summary.errors), (1, 0), "{summary:?}");
    assert!(
        (4..=6 * 4).contains(&summary.decisions),
        "paced frames of 4 over 300 ms: {summary:?} (back to back: {back_to_back})"
    );
    assert!(summary.latency_us[0] > 0, "{summary:?}");

    // With network cuts: the IQ decides alone while away, is brought up to date when it
    // comes back, and its offline entries are stored once each.
    let before: std::collections::HashSet<keyway_store::EntryId> = entries_of(&s).await.iter().map(|e| e.id).collect();
    let config = keyway_link::sim::SimConfig {
        duration: Duration::from_millis(1_500),
        outage: Some(keyway_link::sim::Outage {
            every: Duration::from_millis(300),
            length: Duration::from_millis(200),
            read_interval: Duration::from_millis(10),
        }),
        ..config
    };
    let writer = {
        // A change while the IQ comes and goes, so reconnections have something to replay.
        let node = s.node.clone();
        let person = s.ids.person;
        tokio::spawn(async move {
            for i in 0..6 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let change = if i % 2 == 0 {
                    Change::BlockPerson(person)
                } else {
                    Change::UnblockPerson(person)
                };
                node.store().model().write(ACTOR, change).await.unwrap();
            }
        })
    };
    let summary = keyway_link::sim::run(vec![iq.clone()], &config).await.unwrap();
    writer.await.unwrap();
    assert_eq!((summary.connected, summary.errors), (1, 0), "{summary:?}");
    assert!(summary.reconnects >= 2, "{summary:?}");
    assert!(
        summary.replays >= 1,
        "reconnections replayed, not refetched: {summary:?}"
    );
    assert!(summary.offline_decisions > 0, "{summary:?}");
    assert_eq!(summary.uploaded, summary.offline_decisions, "{summary:?}");
    assert!(summary.pushes > 0, "{summary:?}");
    s.node.store().entries().flush().await.unwrap();
    let offline: Vec<_> = entries_of(&s)
        .await
        .into_iter()
        .filter(|e| {
            !before.contains(&e.id)
                && e.entry
                    .iq
                    .is_some_and(|(_, seq)| seq < keyway_link::node_backend::ONLINE_SEQ_BASE)
        })
        .collect();
    assert_eq!(
        offline.len() as u64,
        summary.offline_decisions,
        "each offline entry stored once"
    );

    // Idle: the IQ fetches its list, hangs up the bulk session, and only hears pushes.
    let config = keyway_link::sim::SimConfig {
        duration: Duration::from_millis(2_000),
        outage: None,
        idle: true,
        ..config
    };
    let idle = tokio::spawn(async move { keyway_link::sim::run(vec![iq], &config).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.server.sessions_of(s.ids.iq) != (1, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an idle IQ keeps its control session only"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.node
        .store()
        .model()
        .write(ACTOR, Change::BlockPerson(s.ids.person))
        .await
        .unwrap();
    let summary = idle.await.unwrap().unwrap();
    assert_eq!(
        (summary.connected, summary.errors, summary.decisions, summary.full_lists),
        (1, 0, 0, 1),
        "{summary:?}"
    );
    assert!(summary.pushes >= 1, "the idle IQ heard the change: {summary:?}");
    s.close().await;
}

/// Every entry of the site, page by page.
async fn entries_of(s: &Setup) -> Vec<keyway_store::StoredEntry> {
    let log = s.node.store().entries();
    log.flush().await.unwrap();
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = log
            .query(&EntryQuery {
                limit: 10_000,
                cursor,
                ..EntryQuery::site(s.ids.site)
            })
            .await
            .unwrap();
        all.extend(page.entries);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// Protocol version 2: the reader's direction travels with each decision, and a PASSAGE
/// report (the door opened) arms anti-passback, so a second entry without an exit is
/// refused; a passage sent again counts once; a passage at another IQ's door is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passages_over_the_link_arm_anti_passback() {
    let s = setup().await;
    s.node
        .attach_door_rule(ACTOR, s.ids.door, "anti-passback", false)
        .await
        .unwrap();
    let client = IqClient::connect(s.client_config(), s.enrol().await).await.unwrap();
    assert_eq!(client.welcome().version, 2);
    let now = Timestamp::now();
    let badge = |direction| DecideItem {
        direction,
        ..read(s.ids.door, now)
    };
    let passage = |id, direction, opened| Passage {
        id,
        door: s.ids.door.get(),
        kind: Some(CredentialKind::Tag),
        secret: TAG.to_vec(),
        at: now.as_millisecond(),
        direction,
        opened,
    };
    // (what happens, the verdict of the entry badge that follows, or none)
    let steps: [(Option<Passage>, Effect, &str); 5] = [
        (None, Effect::Allow, "granted"),
        // A door that did not open moves nothing.
        (Some(passage(1, Direction::Entry, false)), Effect::Allow, "granted"),
        (
            Some(passage(2, Direction::Entry, true)),
            Effect::Deny,
            "rule:anti-passback",
        ),
        (Some(passage(3, Direction::Exit, true)), Effect::Allow, "granted"),
        (
            Some(passage(4, Direction::Entry, true)),
            Effect::Deny,
            "rule:anti-passback",
        ),
    ];
    for (i, (step, effect, reason)) in steps.into_iter().enumerate() {
        if let Some(p) = step {
            let id = p.id;
            assert_eq!(client.report_passage(p).await.unwrap(), id, "step {i}");
        }
        let d = client.decide(vec![badge(Direction::Entry)]).await.unwrap();
        assert_eq!(
            (d.items[0].effect, d.items[0].reason.as_str()),
            (effect, reason),
            "step {i}"
        );
    }
    // Sent again (its ack was lost), exit 3 does not count twice: still inside.
    assert_eq!(
        client.report_passage(passage(3, Direction::Exit, true)).await.unwrap(),
        3
    );
    let d = client.decide(vec![badge(Direction::Entry)]).await.unwrap();
    assert_eq!(d.items[0].reason, "rule:anti-passback");
    // A reader of unknown direction is not judged (a version 1 IQ's decisions).
    let d = client.decide(vec![badge(Direction::Unknown)]).await.unwrap();
    assert_eq!(d.items[0].effect, Effect::Allow);
    // Another IQ's door: refused, and nothing moves.
    let foreign = Passage {
        door: 999_999,
        ..passage(9, Direction::Exit, true)
    };
    assert!(client.report_passage(foreign).await.is_err());
    let d = client.decide(vec![badge(Direction::Entry)]).await.unwrap();
    assert_eq!(d.items[0].reason, "rule:anti-passback");
    client.close().await;
    s.close().await;
}

/// The firmware an admin assigned is offered to an IQ that connects running another
/// version, and not to one already running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_firmware_is_offered_on_connect() {
    let s = setup().await;
    let store = s.node.store();
    store
        .devices()
        .set_details(ACTOR, s.ids.iq, "IQ2", "SN-OFFER", Timestamp::now())
        .await
        .unwrap();
    let file = store
        .devices()
        .upload_firmware(ACTOR, "IQ2", "5.0.0", b"image bytes", Timestamp::now())
        .await
        .unwrap();
    store
        .devices()
        .assign_firmware(ACTOR, s.ids.iq, Some(file.id), Timestamp::now())
        .await
        .unwrap();
    let credentials = s.enrol().await;
    // (firmware the IQ runs, whether it is offered 5.0.0)
    for (running, offered) in [("4.9.0", true), ("5.0.0", false)] {
        let mut config = s.client_config();
        config.firmware = running.to_owned();
        let mut client = IqClient::connect(config, credentials.clone()).await.unwrap();
        let mut got = None;
        while let Some(event) = client.next_event_within(Duration::from_millis(500)).await {
            if let ClientEvent::Push {
                message: Message::FirmwareAvailable(offer),
                ..
            } = event
            {
                got = Some(offer);
                break;
            }
        }
        match got {
            Some(offer) => {
                assert!(offered, "{running}: offered {offer:?}");
                assert_eq!((offer.version.as_str(), offer.size), ("5.0.0", 11));
                assert_eq!(hex::encode(offer.sha256), file.sha256);
                // The token it carries downloads this file over HTTP (the API's route
                // reads it with `firmware_download`).
                let token = offer.download_token.expect("a download token");
                let now = Timestamp::now().as_second();
                let (iq, good_for) = store
                    .devices()
                    .firmware_download(&token, crate::t(now))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!((iq, good_for.id), (s.ids.iq, file.id));
            }
            None => assert!(!offered, "{running}: no offer"),
        }
        client.close().await;
    }
    s.close().await;
}

/// An owner's reset taken on another node (the IQ's record written again after its
/// certificate was revoked) reaches this node through the change log and closes the
/// IQ's session here; the same write with the certificate still valid closes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_another_node_closes_the_session_here() {
    let s = setup().await;
    let mut client = IqClient::connect(s.client_config(), s.enrol().await).await.unwrap();
    let mut config = NodeConfig::new(s.url.clone());
    config.bundle_dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/default"));
    config.store = config.store.node("b");
    let other = Node::open(config).await.unwrap();
    let touch = Change::PutIq(IqRecord {
        id: s.ids.iq,
        site: s.ids.site,
    });
    let written = other.store().model().write(ACTOR, touch.clone()).await.unwrap();
    s.node.reach(written, Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = client.decide(vec![read(s.ids.door, Timestamp::now())]).await.unwrap();
    assert_eq!(
        d.items[0].effect,
        Effect::Allow,
        "a valid certificate's session was closed"
    );

    other
        .store()
        .devices()
        .revoke_certificate(ACTOR, s.ids.iq, Timestamp::now())
        .await
        .unwrap();
    other.store().model().write(ACTOR, touch).await.unwrap();
    let mut closed = false;
    while let Some(event) = client.next_event_within(Duration::from_secs(5)).await {
        if let ClientEvent::Error(e) = event {
            assert_eq!(e.code, ErrorCode::Revoked, "{e:?}");
            closed = true;
            break;
        }
    }
    assert!(closed, "the session outlived a reset on another node");
    assert!(client.decide(vec![read(s.ids.door, Timestamp::now())]).await.is_err());
    other.close().await;
    s.close().await;
}

/// An IQ that stops sending heartbeats is marked offline, and that raises an IQ-offline
/// incident for its site (which queues the notification); one that keeps sending raises
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeats_raise_an_iq_offline_incident() {
    let s = setup_with(|link| link.heartbeat = Duration::from_millis(100)).await;
    let query = IncidentQuery {
        site: s.ids.site,
        kind: None,
        door: None,
        acknowledged: None,
        before: None,
        limit: 100,
    };
    let mut config = s.client_config();
    config.heartbeats = true;
    let alive = IqClient::connect(config.clone(), s.enrol().await).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(s.node.store().incidents().query(&query).await.unwrap().is_empty());
    alive.close().await;

    config.heartbeats = false;
    let _quiet = IqClient::connect(config, s.enrol().await).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let incident = loop {
        let found = s.node.store().incidents().query(&query).await.unwrap();
        if let Some(i) = found.into_iter().next() {
            break i;
        }
        assert!(std::time::Instant::now() < deadline, "no iq-offline incident");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (incident.kind, incident.iq, incident.door),
        (IncidentKind::IqOffline, Some(s.ids.iq), None)
    );
    assert!(!s.node.door_commands().state(s.ids.iq).online);
    s.close().await;
}

/// The next push that moves the IQ's list (`OFFLINE_DELTA` or `RESYNC`), acknowledging
/// every push read on the way as an IQ does.
async fn next_list_push(client: &mut IqClient) -> Message {
    loop {
        let Some(ClientEvent::Push { seq, message }) = client.next_event_within(Duration::from_secs(5)).await else {
            panic!("no push");
        };
        let revision = match &message {
            Message::Revocation(r) => r.revision,
            Message::OfflineDelta(d) => d.to_revision,
            Message::Resync(r) => *r,
            _ => 0,
        };
        client.ack_push(seq, revision).await.unwrap();
        if matches!(message, Message::OfflineDelta(_) | Message::Resync(_)) {
            return message;
        }
    }
}

fn tag_of(site: SiteId, id: u32, owner: PersonId, offline_access: bool) -> Record {
    Record::Credential(CredentialRecord {
        id: CredentialId(id),
        site,
        kind: CredentialKind::Tag,
        secret: id.to_be_bytes().to_vec(),
        owner: Some(owner),
        valid_from: None,
        valid_until: None,
        offline_access,
        revoked: false,
    })
}

/// An IQ's list at its cap never grows by a live delta: a key that pushes another out,
/// and a revocation that lets a left-out key back in, are sent as `RESYNC`, and the full
/// list fetched then holds what the cap keeps. Within the cap, changes are deltas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_delta_never_grows_a_list_past_its_cap() {
    let s = setup().await;
    let first = 200_000u32;
    // With the setup's own tag, the IQ's list holds exactly its cap.
    let records: Vec<Record> = (0..IQ_MAX_TAGS - 1)
        .map(|i| tag_of(s.ids.site, first + i, s.ids.person, false))
        .collect();
    s.node.store().model().import("test", records).await.unwrap();
    let mut client = IqClient::connect(s.client_config(), s.enrol().await).await.unwrap();
    let list = client.fetch_offline_list().await.unwrap();
    assert_eq!(list.entries.len(), IQ_MAX_TAGS as usize);
    assert_eq!(s.backend.offline_overflow(s.ids.iq), (0, 0));

    // A tag with offline access goes first; the last tag by id drops out.
    let newest = create(&s.node, tag_of(s.ids.site, first + IQ_MAX_TAGS, s.ids.person, true)).await;
    let push = next_list_push(&mut client).await;
    assert!(
        matches!(push, Message::Resync(_)),
        "a delta cannot push a key out: {push:?}"
    );
    let list = client.fetch_offline_list().await.unwrap();
    let held: std::collections::HashSet<u32> = list.entries.iter().map(|e| e.credential).collect();
    assert_eq!(held.len(), IQ_MAX_TAGS as usize);
    assert!(held.contains(&newest));
    assert!(!held.contains(&(first + IQ_MAX_TAGS - 2)), "the last tag is left out");
    assert_eq!(s.backend.offline_overflow(s.ids.iq), (1, 0));

    // Revoking a listed tag lets the left-out one back in: only a full list says so.
    let store = s.node.store();
    store
        .model()
        .write(ACTOR, Change::RevokeCredential(CredentialId(first)))
        .await
        .unwrap();
    let push = next_list_push(&mut client).await;
    assert!(matches!(push, Message::Resync(_)), "{push:?}");
    let list = client.fetch_offline_list().await.unwrap();
    assert_eq!(list.entries.len(), IQ_MAX_TAGS as usize);
    assert!(list.entries.iter().any(|e| e.credential == first + IQ_MAX_TAGS - 2));

    // At the cap but not over it, a revocation is a plain delta.
    store
        .model()
        .write(ACTOR, Change::RevokeCredential(CredentialId(first + 1)))
        .await
        .unwrap();
    match next_list_push(&mut client).await {
        Message::OfflineDelta(delta) => {
            assert_eq!(delta.removals, [first + 1]);
            assert!(delta.upserts.is_empty());
        }
        other => panic!("a delta within the cap: {other:?}"),
    }
    client.close().await;
    s.close().await;
}

/// Every IQ of a site is served by one push hub, however many are connected: a block
/// reaches each of them, an IQ of another site has its own hub, and a hub with no
/// sessions left stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iqs_of_a_site_share_one_push_hub() {
    let s = setup().await;
    let store = s.node.store();
    let mut iqs = vec![s.ids.iq];
    let mut doors = vec![s.ids.door];
    for _ in 0..2 {
        let iq = IqId(
            create(
                &s.node,
                Record::Iq(IqRecord {
                    id: IqId(0),
                    site: s.ids.site,
                }),
            )
            .await,
        );
        let door = DoorId(
            create(
                &s.node,
                Record::Door(DoorRecord {
                    id: DoorId(0),
                    site: s.ids.site,
                    iq: Some(iq),
                    mode: DoorMode::Normal,
                    lockdown: false,
                }),
            )
            .await,
        );
        iqs.push(iq);
        doors.push(door);
    }
    let group = s
        .node
        .snapshot()
        .load()
        .site_records(s.ids.site)
        .into_iter()
        .find_map(|r| match r {
            Record::Group(g) => Some(g.id),
            _ => None,
        })
        .unwrap();
    store
        .model()
        .write(
            ACTOR,
            Change::PutGroup(GroupRecord {
                id: group,
                site: s.ids.site,
                doors: doors.clone(),
                schedule: None,
                members: vec![s.ids.person],
            }),
        )
        .await
        .unwrap();
    let elsewhere = SiteId(
        create(
            &s.node,
            Record::Site(SiteRecord {
                id: SiteId(0),
                time_zone: TimeZone::UTC,
                holiday_calendar: None,
                lockdown: false,
            }),
        )
        .await,
    );
    let stranger = IqId(
        create(
            &s.node,
            Record::Iq(IqRecord {
                id: IqId(0),
                site: elsewhere,
            }),
        )
        .await,
    );

    let mut clients = Vec::new();
    for iq in &iqs {
        let credentials = s.enrol_iq(*iq).await;
        clients.push(IqClient::connect(s.client_config(), credentials).await.unwrap());
    }
    let other = IqClient::connect(s.client_config(), s.enrol_iq(stranger).await)
        .await
        .unwrap();
    assert_eq!(s.backend.push_hubs(), 2, "one hub per site");

    let revision = store
        .model()
        .write(ACTOR, Change::BlockPerson(s.ids.person))
        .await
        .unwrap();
    for (client, iq) in clients.iter_mut().zip(&iqs) {
        let revocation = loop {
            match client.next_event_within(Duration::from_secs(5)).await {
                Some(ClientEvent::Push {
                    message: Message::Revocation(r),
                    ..
                }) => break r,
                Some(ClientEvent::Push { .. }) => {}
                other => panic!("{iq:?} heard no revocation: {other:?}"),
            }
        };
        assert_eq!(revocation.revision, revision.0);
        assert_eq!(
            (revocation.items[0].what, revocation.items[0].id),
            (RevocationWhat::Person, s.ids.person.get())
        );
    }

    for client in clients {
        client.close().await;
    }
    other.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s.backend.push_hubs() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "hubs with no sessions stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.close().await;
}

/// A change that does not touch an IQ (here, another site's) does not make the IQ's next
/// delta ask for a full list: deltas start where the IQ's list is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_after_other_sites_changes_applies_to_the_list() {
    let s = setup().await;
    let mut client = IqClient::connect(s.client_config(), s.enrol().await).await.unwrap();
    let list = client.fetch_offline_list().await.unwrap();
    let mut offline = OfflineStore::from_list(&list).unwrap();
    for _ in 0..3 {
        create(
            &s.node,
            Record::Site(SiteRecord {
                id: SiteId(0),
                time_zone: TimeZone::UTC,
                holiday_calendar: None,
                lockdown: false,
            }),
        )
        .await;
    }
    let newcomer = create(&s.node, tag_of(s.ids.site, 0, s.ids.person, false)).await;
    match next_list_push(&mut client).await {
        Message::OfflineDelta(delta) => {
            assert_eq!(delta.from_revision, list.begin.revision, "{delta:?}");
            assert_eq!(offline.apply_delta(&delta), keyway_link::offline::DeltaOutcome::Applied);
            assert!(delta.upserts.iter().any(|e| e.credential == newcomer));
        }
        other => panic!("a delta: {other:?}"),
    }
    client.close().await;
    s.close().await;
}
