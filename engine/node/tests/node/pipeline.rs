//! The decision pipeline: core decision, door rule, entry.

use super::support::*;
use keyway_core::*;
use keyway_node::{DecisionRequest, Direction, NodeError, Source};
use keyway_store::EntryQuery;

fn request(door: DoorId, hour: i8, source: Source) -> DecisionRequest<'static> {
    DecisionRequest {
        door,
        presented: Presented::tag(&TAG),
        at: monday(hour),
        direction: Direction::Entry,
        source,
    }
}

/// Every row: which rule (if any) is attached through the store, at which hour the tag
/// is presented, and the effect, reason and rule prefix the pipeline must answer and log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_entries() {
    struct Case {
        name: &'static str,
        rule: Option<(&'static str, bool)>,
        hour: i8,
        effect: Effect,
        reason: &'static str,
        logged_rule: Option<&'static str>,
    }
    let cases = [
        Case {
            name: "no rule",
            rule: None,
            hour: 22,
            effect: Effect::Allow,
            reason: "granted",
            logged_rule: None,
        },
        Case {
            name: "business hours, open",
            rule: Some(("business-hours", false)),
            hour: 9,
            effect: Effect::Allow,
            reason: "granted",
            logged_rule: Some("business-hours@"),
        },
        Case {
            name: "business hours, closed",
            rule: Some(("business-hours", false)),
            hour: 22,
            effect: Effect::Deny,
            reason: "rule_denied",
            logged_rule: Some("business-hours@"),
        },
    ];
    let t = sqlite_node().await;
    let node = &t.node;
    let s = seed(node).await;
    for (i, case) in cases.iter().enumerate() {
        match case.rule {
            // Through the store, as another node with an older bundle could have done:
            // the node itself refuses unknown rules (tested below).
            Some((rule, safe)) => {
                node.store()
                    .policy_records()
                    .attach_door_rule(ACTOR, s.door, rule, safe)
                    .await
                    .unwrap();
            }
            None => {
                let _ = node.store().policy_records().detach_door_rule(ACTOR, s.door).await;
            }
        }
        // The policy task applies the attachment from the feed.
        node.reach(node.store().status().applied, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let mut tries = 0;
        while node
            .policy()
            .door_rules()
            .attachment(s.door)
            .map(|(r, _)| r.to_string())
            != case.rule.map(|(r, _)| r.to_owned())
        {
            tries += 1;
            assert!(tries < 100, "{}: attachment never reached the plugin host", case.name);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Decisions come to report the newest revision, that of the attachment (a policy
        // change, which leaves the model's snapshot at its own revision).
        let applied = node.store().status().applied;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while node.decide_dry(&request(s.door, case.hour, Source::DryRun)).0.revision != applied {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: never reported {applied:?}",
                case.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let d = node
            .decide(&request(
                s.door,
                case.hour,
                Source::Iq {
                    iq: IqId(7),
                    sequence: i as u64,
                },
            ))
            .await;
        assert_eq!(
            (d.effect(), d.reason_code()),
            (case.effect, case.reason),
            "{}",
            case.name
        );
        assert!(d.logged, "{}", case.name);
        assert_eq!(d.ruled.core.person, Some(s.person), "{}", case.name);
        node.store().entries().flush().await.unwrap();
        let page = node.store().entries().query(&EntryQuery::site(s.site)).await.unwrap();
        let entry = &page
            .entries
            .iter()
            .find(|e| e.entry.iq == Some((IqId(7), i as u64)))
            .unwrap()
            .entry;
        assert_eq!(entry.reason, case.reason, "{}", case.name);
        assert_eq!(entry.allowed, case.effect == Effect::Allow, "{}", case.name);
        assert_eq!(entry.iq, Some((IqId(7), i as u64)), "{}", case.name);
        assert_eq!((entry.revision, d.revision), (applied, applied), "{}", case.name);
        match (case.logged_rule, &entry.rule) {
            (None, None) => {}
            (Some(prefix), Some(rule)) => {
                assert!(rule.starts_with(prefix), "{}: {rule}", case.name);
                let sha = &rule[prefix.len()..];
                assert!(
                    sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{}: {rule}",
                    case.name
                );
            }
            (want, got) => panic!("{}: rule {want:?}, logged {got:?}", case.name),
        }
    }
    t.node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_one_revision_and_dry_runs_are_not_logged() {
    let t = sqlite_node().await;
    let node = &t.node;
    let s = seed(node).await;
    let requests: Vec<_> = (0..10).map(|_| request(s.door, 9, Source::DryRun)).collect();
    let out = node.decide_batch(&requests).await;
    assert_eq!(out.len(), 10);
    let revision = out[0].revision;
    assert!(
        out.iter()
            .all(|d| d.revision == revision && !d.logged && d.effect() == Effect::Allow)
    );
    node.store().entries().flush().await.unwrap();
    assert_eq!(node.store().entries().count().await.unwrap(), 0);
    // An unknown door is denied and, having no site, not logged.
    let d = node.decide(&request(DoorId(999), 9, Source::Api)).await;
    assert_eq!(
        (d.effect(), d.reason_code(), d.logged),
        (Effect::Deny, "unknown_door", false)
    );
    t.node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_a_rule_the_bundle_lacks_is_refused() {
    let t = sqlite_node().await;
    let node = &t.node;
    let s = seed(node).await;
    let before = node.store().status().applied;
    match node.attach_door_rule(ACTOR, s.door, "busines-hours", true).await {
        Err(NodeError::UnknownRule { rule, bundle }) => {
            assert_eq!((rule.as_str(), bundle.as_str()), ("busines-hours", "default"))
        }
        other => panic!("expected UnknownRule, got {other:?}"),
    }
    assert_eq!(node.store().status().applied, before, "nothing was written");
    assert!(node.store().policy_records().door_rules().await.unwrap().is_empty());
    // A known rule attaches, and the node's own plugin host has it when the call returns.
    node.attach_door_rule(ACTOR, s.door, "anti-passback", false)
        .await
        .unwrap();
    assert_eq!(
        node.policy()
            .door_rules()
            .attachment(s.door)
            .map(|(r, _)| r.to_string()),
        Some("anti-passback".into())
    );
    node.detach_door_rule(ACTOR, s.door).await.unwrap();
    assert!(node.policy().door_rules().attachment(s.door).is_none());
    t.node.close().await;
}

/// A bundle of the default plugins plus `trapper`, a door rule whose every call traps.
fn bundle_with_trapping_rule(dir: &std::path::Path) {
    use sha2::Digest;
    for entry in std::fs::read_dir(bundle_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let module = wat::parse_str(
        r#"(module
            (memory (export "memory") 2)
            (func (export "keyway_abi_version") (result i32) (i32.const 1))
            (func (export "keyway_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "keyway_dealloc") (param i32 i32))
            (func (export "keyway_configure") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))
            (func (export "keyway_door_rule") (param i32 i32) (result i64) unreachable)
            (data (i32.const 16) "\00"))"#,
    )
    .unwrap();
    std::fs::write(dir.join("trapper.wasm"), &module).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&module));
    let mut manifest = std::fs::read_to_string(dir.join("bundle.toml")).unwrap();
    manifest.push_str(&format!(
        "\n[plugins.trapper]\nfile = \"trapper.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"door_rule\"]\n"
    ));
    std::fs::write(dir.join("bundle.toml"), manifest).unwrap();
}

/// A rule whose plugin traps denies on a fail-secure door and lets the core's allow
/// stand on a fail-safe one, each with a reason of its own and the rule logged: a
/// failure is never logged as a plain `granted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_rule_fails_secure_or_open_as_attached() {
    let bundle = tempfile::tempdir().unwrap();
    bundle_with_trapping_rule(bundle.path());
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(format!("sqlite://{}", dir.path().join("keyway.db").display()));
    config.bundle_dir = Some(bundle.path().to_path_buf());
    let node = keyway_node::Node::open(config).await.unwrap();
    let s = seed(&node).await;
    // (fail-safe attachment, effect, reason)
    let cases = [
        (false, Effect::Deny, "rule_failed"),
        (true, Effect::Allow, "rule_failed_open"),
    ];
    for (sequence, (fail_safe, effect, reason)) in cases.into_iter().enumerate() {
        node.attach_door_rule(ACTOR, s.door, "trapper", fail_safe)
            .await
            .unwrap();
        let d = node
            .decide(&request(
                s.door,
                9,
                Source::Iq {
                    iq: IqId(3),
                    sequence: sequence as u64,
                },
            ))
            .await;
        assert_eq!((d.effect(), d.reason_code()), (effect, reason), "fail-safe {fail_safe}");
        node.store().entries().flush().await.unwrap();
        let page = node.store().entries().query(&EntryQuery::site(s.site)).await.unwrap();
        let entry = &page
            .entries
            .iter()
            .find(|e| e.entry.iq == Some((IqId(3), sequence as u64)))
            .unwrap()
            .entry;
        assert_eq!(
            (entry.reason.as_ref(), entry.allowed),
            (reason, effect == Effect::Allow),
            "fail-safe {fail_safe}"
        );
        assert!(
            entry.rule.as_deref().is_some_and(|r| r.starts_with("trapper@")),
            "fail-safe {fail_safe}: {:?}",
            entry.rule
        );
    }
    node.close().await;
}
