//! Webhook endpoints on both backends: refused when malformed, one event expanded once
//! into its e-mails and the deliveries of the endpoints that want it, attempts recorded
//! in the history, an endpoint paused after a run of failures (its rows held, its owner
//! told) and resumed, and removed with its pending deliveries.

use crate::support::*;
use keyway_core::*;
use keyway_store::{ErrorKind, PAUSE_AFTER_FAILURES, QueuedMail, StoreError, WebhookAttempt};

const NOW: i64 = 1_800_000_000;

fn kind<T: std::fmt::Debug>(r: Result<T, StoreError>) -> ErrorKind {
    r.unwrap_err().kind()
}

fn events(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn failure(outbox: i64, at: i64) -> WebhookAttempt {
    WebhookAttempt {
        outbox: keyway_store::OutboxId(outbox),
        at: crate::t(at),
        status: Some(503),
        error: Some("503 service unavailable".into()),
        duration_ms: 12,
        retry_at: crate::t(at + 30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_expand_deliver_pause_and_resume() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let owner = store
            .accounts()
            .create(
                ACTOR,
                "owner@example.com",
                "Correct-Horse-1",
                "Owner",
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        store
            .memberships()
            .set_first_owner(ACTOR, ids.site, owner.id, RoleId(1), jiff::Timestamp::now())
            .await
            .unwrap();
        // The owner is told of pauses; their account cannot go while they own the site.
        assert_eq!(
            kind(store.accounts().delete(ACTOR, owner.id, jiff::Timestamp::now()).await),
            ErrorKind::InUse
        );

        // Refusals, each specific, none stored.
        let long = format!("https://example.com/{}", "a".repeat(2100));
        for (url, subscribed) in [
            ("ftp://example.com/hook", events(&["*"])),
            ("https://exa mple.com/", events(&["*"])),
            (long.as_str(), events(&["*"])),
            ("https://example.com/hook", events(&[])),
            ("https://example.com/hook", events(&["Entry Denied"])),
            ("https://example.com/hook", events(&[".*x"])),
            ("https://example.com/hook", vec!["incident.*".to_owned(); 33]),
        ] {
            assert_eq!(
                kind(
                    store
                        .notifications()
                        .create_webhook(ACTOR, ids.site, url, &subscribed, jiff::Timestamp::now())
                        .await
                ),
                ErrorKind::Invalid,
                "{url} {subscribed:?}"
            );
        }
        assert_eq!(
            kind(
                store
                    .notifications()
                    .create_webhook(
                        ACTOR,
                        SiteId(999),
                        "https://example.com/",
                        &events(&["*"]),
                        jiff::Timestamp::now()
                    )
                    .await
            ),
            ErrorKind::ForeignKey
        );
        assert!(store.notifications().webhooks(ids.site).await.unwrap().is_empty());

        let (incidents, secret) = store
            .notifications()
            .create_webhook(
                ACTOR,
                ids.site,
                "https://example.com/incidents",
                &events(&["incident.*"]),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert!(secret.starts_with("whsec_") && secret.len() == 70, "{secret}");
        let (everything, _) = store
            .notifications()
            .create_webhook(
                ACTOR,
                ids.site,
                "https://example.com/all",
                &events(&["*"]),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        let (_ownership, _) = store
            .notifications()
            .create_webhook(
                ACTOR,
                ids.site,
                "https://example.com/own",
                &events(&["ownership.transferred"]),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        let (_, stored_secret) = store
            .notifications()
            .webhook_with_secret(incidents.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored_secret, secret);
        assert!(
            store.model().audit(None).await.unwrap().iter().all(|a| !a
                .after
                .as_deref()
                .unwrap_or("")
                .contains(&secret)),
            "the secret is never audited"
        );

        // One event: its e-mail and the two endpoints that want it, queued once.
        let event = store
            .notifications()
            .enqueue_event(
                ids.site,
                "incident.tamper",
                crate::t(NOW),
                serde_json::json!({"door": ids.door.0}),
            )
            .await
            .unwrap();
        assert_eq!(
            kind(
                store
                    .notifications()
                    .enqueue_event(ids.site, "incident.tamper", crate::t(NOW), serde_json::json!([1]))
                    .await
            ),
            ErrorKind::Invalid
        );
        let claimed = store
            .notifications()
            .claim(crate::t(NOW * 2), crate::t(NOW * 2 + 60), 10)
            .await
            .unwrap();
        assert_eq!(claimed.iter().map(|i| i.id).collect::<Vec<_>>(), [event]);
        let mail = QueuedMail {
            to: "owner@example.com".into(),
            subject: "HQ: tamper".into(),
            body: "tamper".into(),
        };
        assert_eq!(
            store
                .notifications()
                .expand_event(event, std::slice::from_ref(&mail), crate::t(NOW))
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            kind(store.notifications().expand_event(event, &[mail], crate::t(NOW)).await),
            ErrorKind::NotFound,
            "an event is expanded once"
        );
        let queued = store
            .notifications()
            .claim(crate::t(NOW * 2), crate::t(NOW * 2 + 60), 10)
            .await
            .unwrap();
        let routes: Vec<_> = queued
            .iter()
            .map(|i| (i.channel.as_str(), i.target.as_str(), i.webhook))
            .collect();
        assert_eq!(
            routes,
            [
                ("email", "owner@example.com", None),
                ("webhook", "https://example.com/incidents", Some(incidents.id)),
                ("webhook", "https://example.com/all", Some(everything.id)),
            ]
        );
        let body: serde_json::Value = serde_json::from_str(&queued[1].payload).unwrap();
        assert_eq!(body["id"], format!("evt_{}", event.get()));
        assert_eq!(body["type"], "incident.tamper");
        assert_eq!(body["data"]["door"], ids.door.0);
        store
            .notifications()
            .mark_delivered(queued[0].id, crate::t(NOW))
            .await
            .unwrap();
        let to_incidents = queued[1].id;
        let to_everything = queued[2].id;

        // A success is history and the row is done.
        let ok = WebhookAttempt {
            status: Some(204),
            error: None,
            ..failure(to_everything.get(), NOW + 1)
        };
        assert!(
            !store
                .notifications()
                .record_webhook_attempt(&everything, &ok)
                .await
                .unwrap()
        );
        assert!(
            store
                .notifications()
                .outbox_item(to_everything)
                .await
                .unwrap()
                .unwrap()
                .delivered_at
                .is_some()
        );
        assert_eq!(
            kind(store.notifications().record_webhook_attempt(&everything, &ok).await),
            ErrorKind::NotFound,
            "a delivered row takes no more attempts"
        );
        assert_eq!(
            kind(
                store
                    .notifications()
                    .record_webhook_attempt(&everything, &failure(to_incidents.get(), NOW))
                    .await
            ),
            ErrorKind::NotFound,
            "a row of another endpoint is refused"
        );

        // Failures back off; the run of them pauses the endpoint and tells the owner.
        for n in 1..=PAUSE_AFTER_FAILURES {
            let paused = store
                .notifications()
                .record_webhook_attempt(&incidents, &failure(to_incidents.get(), NOW + i64::from(n)))
                .await
                .unwrap();
            assert_eq!(paused, n == PAUSE_AFTER_FAILURES, "attempt {n}");
        }
        let hook = store
            .notifications()
            .webhook(ids.site, incidents.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (hook.paused_at, hook.failures),
            (
                Some(crate::t(NOW + i64::from(PAUSE_AFTER_FAILURES))),
                PAUSE_AFTER_FAILURES
            )
        );
        let history = store
            .notifications()
            .webhook_deliveries(incidents.id, None, 100)
            .await
            .unwrap();
        assert_eq!(history.len(), PAUSE_AFTER_FAILURES as usize);
        assert_eq!(history[0].attempt, PAUSE_AFTER_FAILURES, "newest first");
        assert!(history.iter().all(|d| !d.succeeded() && d.status == Some(503)));
        let older = store
            .notifications()
            .webhook_deliveries(incidents.id, Some(history[4].id), 100)
            .await
            .unwrap();
        assert_eq!(older.len(), history.len() - 5, "the cursor pages back");
        let due = store
            .notifications()
            .claim(crate::t(NOW * 3), crate::t(NOW * 3 + 60), 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "the paused endpoint's row is held: {due:?}");
        assert_eq!(
            (due[0].channel.as_str(), due[0].target.as_str()),
            ("email", "owner@example.com")
        );
        assert!(due[0].payload.contains("paused"), "{}", due[0].payload);
        store
            .notifications()
            .mark_delivered(due[0].id, crate::t(NOW))
            .await
            .unwrap();

        // Events while paused wait too; resuming makes them due.
        let later = store
            .notifications()
            .enqueue_event(ids.site, "incident.door_forced", crate::t(NOW), serde_json::json!({}))
            .await
            .unwrap();
        store
            .notifications()
            .claim(crate::t(NOW * 3), crate::t(NOW * 3 + 60), 10)
            .await
            .unwrap();
        assert_eq!(
            store
                .notifications()
                .expand_event(later, &[], crate::t(NOW))
                .await
                .unwrap(),
            2
        );
        let due = store
            .notifications()
            .claim(crate::t(NOW * 4), crate::t(NOW * 4 + 60), 10)
            .await
            .unwrap();
        assert_eq!(due.iter().map(|i| i.webhook).collect::<Vec<_>>(), [Some(everything.id)]);
        let resumed = store
            .notifications()
            .resume_webhook(ACTOR, ids.site, incidents.id, crate::t(NOW * 5))
            .await
            .unwrap();
        assert_eq!((resumed.paused_at, resumed.failures), (None, 0));
        let due = store
            .notifications()
            .claim(crate::t(NOW * 5), crate::t(NOW * 5 + 60), 10)
            .await
            .unwrap();
        let held: Vec<_> = due.iter().filter(|i| i.webhook == Some(incidents.id)).collect();
        assert_eq!(held.len(), 2, "both held rows are due again: {due:?}");

        // A refused entry of a listening site queues a denial event in the entries'
        // transaction; a granted one, or one of a site that does not listen, does not.
        let other = crate::admin::second_site(&store).await;
        let entry = |site, allowed| keyway_store::Entry {
            site,
            at: jiff::Timestamp::from_second(NOW).unwrap(),
            door: ids.door,
            person: Some(ids.person),
            credential: None,
            method: keyway_store::Method::Tag,
            allowed,
            reason: std::borrow::Cow::Borrowed(if allowed { "granted" } else { "no_right" }),
            revision: Revision(1),
            iq: None,
            rule: None,
        };
        for (site, allowed) in [(ids.site, false), (ids.site, true), (other, false)] {
            store.entries().append(entry(site, allowed)).await.unwrap();
        }
        store.entries().flush().await.unwrap();
        let denials = store
            .notifications()
            .claim(crate::t(NOW * 6), crate::t(NOW * 6 + 60), 10)
            .await
            .unwrap();
        let denials: Vec<_> = denials.iter().filter(|i| i.channel == "event").collect();
        assert_eq!(denials.len(), 1, "{denials:?}");
        assert_eq!(
            (denials[0].site, denials[0].target.as_str()),
            (ids.site, "entry.denied")
        );
        assert!(denials[0].payload.contains("no_right"), "{}", denials[0].payload);

        // A block queues `person.blocked` with it; blocking again does not.
        store
            .model()
            .write(ACTOR, Change::BlockPerson(ids.person))
            .await
            .unwrap();
        let _ = store.model().write(ACTOR, Change::BlockPerson(ids.person)).await;
        let blocked = store
            .notifications()
            .claim(crate::t(NOW * 7), crate::t(NOW * 7 + 60), 10)
            .await
            .unwrap();
        let blocked: Vec<_> = blocked.iter().filter(|i| i.target == "person.blocked").collect();
        assert_eq!(blocked.len(), 1, "{blocked:?}");
        assert_eq!(blocked[0].site, ids.site);
        assert!(
            blocked[0].payload.contains(&format!("\"person\":{}", ids.person.0)),
            "{}",
            blocked[0].payload
        );

        // A write's follow-up sees the snapshots before and after it and queues its event
        // in the write's transaction; a write it refuses (here, a duplicate tag) queues
        // nothing, and a follow-up answering `None` queues nothing either.
        let follow_up = |site: SiteId| -> keyway_store::FollowUp {
            Box::new(move |before, after| {
                let (was, is) = (before.voucher_counts(site).people, after.voucher_counts(site).people);
                (is > was).then(|| keyway_store::PendingEvent {
                    site,
                    kind: "voucher.near_cap",
                    data: serde_json::json!({ "was": was, "is": is }),
                })
            })
        };
        let person = Record::Person(PersonRecord {
            id: PersonId(0),
            site: ids.site,
            role: RoleId(3),
            blocked: false,
        });
        let before = store.snapshot().load().voucher_counts(ids.site).people;
        store
            .model()
            .create_with(ACTOR, person.clone(), follow_up(ids.site))
            .await
            .unwrap();
        store
            .model()
            .create_with(ACTOR, person, Box::new(|_, _| None))
            .await
            .unwrap();
        let tag = |secret: &[u8]| {
            Record::Credential(CredentialRecord {
                id: CredentialId(0),
                site: ids.site,
                kind: CredentialKind::Tag,
                secret: secret.to_vec(),
                owner: None,
                valid_from: None,
                valid_until: None,
                offline_access: false,
                revoked: false,
            })
        };
        store.model().create(ACTOR, tag(b"\x0a\x0b\x0c\x0d")).await.unwrap();
        let refused = store
            .model()
            .create_with(ACTOR, tag(b"\x0a\x0b\x0c\x0d"), follow_up(ids.site))
            .await;
        assert!(refused.is_err(), "a duplicate tag was written");
        let queued = store
            .notifications()
            .claim(crate::t(NOW * 8), crate::t(NOW * 8 + 60), 10)
            .await
            .unwrap();
        let queued: Vec<_> = queued.iter().filter(|i| i.target == "voucher.near_cap").collect();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(
            queued[0].payload.contains(&format!("\"was\":{before}"))
                && queued[0].payload.contains(&format!("\"is\":{}", before + 1)),
            "{}",
            queued[0].payload
        );

        // Another site's ids are not found; rotating changes the secret; removal takes
        // the pending rows.
        let other = crate::admin::second_site(&store).await;
        assert_eq!(
            kind(
                store
                    .notifications()
                    .resume_webhook(ACTOR, other, incidents.id, crate::t(NOW))
                    .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(
                store
                    .notifications()
                    .delete_webhook(ACTOR, other, incidents.id, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(store.notifications().webhook(other, incidents.id).await.unwrap(), None);
        // Retention: attempts before the cut go with the delivered rows.
        store.notifications().purge_delivered(crate::t(NOW + 5)).await.unwrap();
        assert!(
            store
                .notifications()
                .webhook_deliveries(everything.id, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let kept = store
            .notifications()
            .webhook_deliveries(incidents.id, None, 100)
            .await
            .unwrap();
        assert_eq!(kept.len(), 6, "attempts at NOW + 5 and later stay: {kept:?}");
        let rotated = store
            .notifications()
            .rotate_webhook_secret(ACTOR, ids.site, incidents.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_ne!(rotated, secret);
        store
            .notifications()
            .delete_webhook(ACTOR, ids.site, incidents.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(store.notifications().outbox_item(held[0].id).await.unwrap(), None);
        assert_eq!(store.notifications().webhooks(ids.site).await.unwrap().len(), 2);
        assert!(
            store
                .notifications()
                .webhook_deliveries(incidents.id, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    });
}
