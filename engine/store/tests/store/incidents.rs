//! Incidents on both backends: raised with their audit row and one notification event, stored once per IQ and incident number, listed with
//! filters and a cursor, acknowledged once. And the live tail: entries and incidents
//! after an id, the heads a stream starts from, unassigned credentials.

use crate::support::*;
use keyway_core::*;
use keyway_store::{
    Entry, EntryId, ErrorKind, IncidentKind, IncidentQuery, Method, NewIncident, NotificationSetting, StoreError,
};
use std::borrow::Cow;

const NOW: i64 = 1_800_000_000;

fn incident(site: SiteId, kind: IncidentKind, door: Option<DoorId>, iq: Option<(IqId, u64)>) -> NewIncident {
    NewIncident {
        site,
        kind,
        door,
        iq: iq.map(|(i, _)| i),
        iq_seq: iq.map(|(_, s)| s),
        at: crate::t(NOW),
        detail: "reported\nby test".to_owned(),
    }
}

fn setting(site: SiteId, event_kind: &str, target: &str) -> NotificationSetting {
    NotificationSetting {
        id: keyway_store::SettingId(0),
        site,
        account: None,
        event_kind: event_kind.to_owned(),
        channel: "email".to_owned(),
        target: target.to_owned(),
        config: "{}".to_owned(),
        enabled: true,
    }
}

fn query(site: SiteId) -> IncidentQuery {
    IncidentQuery {
        site,
        kind: None,
        door: None,
        acknowledged: None,
        before: None,
        limit: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_are_stored_notified_listed_and_acknowledged() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        for (kind, target) in [
            ("incident.door_forced", "forced@example.com"),
            ("incident.*", "all@example.com"),
            ("entry.denied", "denied@example.com"),
        ] {
            store
                .notifications()
                .put_setting(ACTOR, &setting(ids.site, kind, target), jiff::Timestamp::now())
                .await
                .unwrap();
        }

        let forced = store
            .incidents()
            .raise(
                "iq:1",
                &incident(ids.site, IncidentKind::DoorForced, Some(ids.door), Some((ids.iq, 7))),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert_eq!(forced.detail, "reportedby test", "control characters are dropped");
        // The same report again (its ack was lost) is the same incident, notified once.
        let again = store
            .incidents()
            .raise(
                "iq:1",
                &incident(ids.site, IncidentKind::DoorForced, Some(ids.door), Some((ids.iq, 7))),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert_eq!(again, forced);
        let battery = store
            .incidents()
            .raise(
                "node",
                &incident(ids.site, IncidentKind::BatteryLow, None, None),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();

        // Each incident queued one event for the notification worker (stored once, so
        // notified once), whatever the settings: the worker routes it.
        let claimed = store
            .notifications()
            .claim(crate::t(NOW * 2), crate::t(NOW * 2 + 60), 100)
            .await
            .unwrap();
        let events: Vec<_> = claimed
            .iter()
            .map(|i| (i.channel.as_str(), i.target.as_str()))
            .collect();
        assert_eq!(
            events,
            [("event", "incident.door_forced"), ("event", "incident.battery_low")]
        );
        let payload: serde_json::Value = serde_json::from_str(&claimed[0].payload).unwrap();
        assert_eq!(payload["type"], "incident.door_forced", "{payload}");
        assert_eq!(payload["site"], ids.site.0, "{payload}");
        assert_eq!(payload["data"]["id"], forced.id.get(), "{payload}");

        // Lists: newest first, filters, cursor.
        let all = store.incidents().query(&query(ids.site)).await.unwrap();
        assert_eq!(all.iter().map(|i| i.id).collect::<Vec<_>>(), [battery.id, forced.id]);
        let only_forced = store
            .incidents()
            .query(&IncidentQuery {
                kind: Some(IncidentKind::DoorForced),
                ..query(ids.site)
            })
            .await
            .unwrap();
        assert_eq!(only_forced, std::slice::from_ref(&forced));
        let at_door = store
            .incidents()
            .query(&IncidentQuery {
                door: Some(ids.door),
                ..query(ids.site)
            })
            .await
            .unwrap();
        assert_eq!(at_door.len(), 1);
        let page = store
            .incidents()
            .query(&IncidentQuery {
                limit: 1,
                ..query(ids.site)
            })
            .await
            .unwrap();
        assert_eq!(page, std::slice::from_ref(&battery));
        let next = store
            .incidents()
            .query(&IncidentQuery {
                before: Some(page[0].id),
                ..query(ids.site)
            })
            .await
            .unwrap();
        assert_eq!(next, std::slice::from_ref(&forced));
        assert_eq!(
            store
                .incidents()
                .query(&IncidentQuery {
                    limit: 0,
                    ..query(ids.site)
                })
                .await
                .map_err(|e| e.kind()),
            Err(ErrorKind::Invalid)
        );

        // Acknowledged once; again changes nothing; another site's id is not found.
        let acked = store
            .incidents()
            .acknowledge(ACTOR, ids.site, forced.id, crate::t(NOW + 5))
            .await
            .unwrap();
        assert_eq!(acked.acknowledged_at, Some(crate::t(NOW + 5)));
        assert_eq!(acked.acknowledged_by.as_deref(), Some(ACTOR));
        let twice = store
            .incidents()
            .acknowledge("other", ids.site, forced.id, crate::t(NOW + 9))
            .await
            .unwrap();
        assert_eq!(twice, acked);
        assert!(matches!(
            store
                .incidents()
                .acknowledge(ACTOR, SiteId(ids.site.0 + 1000), forced.id, crate::t(NOW))
                .await,
            Err(StoreError::NotFound { .. })
        ));
        let open = store
            .incidents()
            .query(&IncidentQuery {
                acknowledged: Some(false),
                ..query(ids.site)
            })
            .await
            .unwrap();
        assert_eq!(open, std::slice::from_ref(&battery));
        let audit = store.model().audit(Some(&forced.id.to_string())).await.unwrap();
        let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, ["raise_incident", "acknowledge_incident"]);

        // The live tail after an id, and the heads a stream starts from.
        assert_eq!(
            store.incidents().after(ids.site, forced.id, 10).await.unwrap(),
            std::slice::from_ref(&battery)
        );
        let entry = |person| Entry {
            site: ids.site,
            at: at_nine(),
            door: ids.door,
            person,
            credential: None,
            method: Method::Remote,
            allowed: true,
            reason: Cow::Borrowed("remote_open"),
            revision: Revision(1),
            iq: None,
            rule: None,
        };
        store.entries().append(entry(Some(ids.person))).await.unwrap();
        store.entries().append(entry(None)).await.unwrap();
        store.entries().flush().await.unwrap();
        let tail = store.entries_after(ids.site, None, EntryId(0), 10).await.unwrap();
        assert_eq!(tail.len(), 2);
        assert!(tail[0].id < tail[1].id, "in id order");
        let mine = store
            .entries_after(ids.site, Some(ids.person), EntryId(0), 10)
            .await
            .unwrap();
        assert_eq!(mine.len(), 1);
        assert!(
            store
                .entries_after(ids.site, None, tail[1].id, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.event_heads(ids.site).await.unwrap(), (tail[1].id, battery.id));
        assert_eq!(
            store.event_heads(SiteId(ids.site.0 + 1000)).await.unwrap(),
            (EntryId(0), keyway_store::IncidentId(0))
        );
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unassigned_credentials_and_retention() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        assert!(
            store
                .unassigned_credentials(ids.site, None, 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let loose = store
            .model()
            .create(ACTOR, Record::Credential(tag(ids.site, None, &[1, 2, 3, 4])))
            .await
            .unwrap();
        let loose = CredentialId(loose.id.unwrap());
        // Removing a person leaves their credentials, unassigned.
        store
            .model()
            .write(ACTOR, Change::RemovePerson(ids.person))
            .await
            .unwrap();
        let found = store.unassigned_credentials(ids.site, None, 0, 10).await.unwrap();
        assert_eq!(found, [ids.credential, loose]);
        assert_eq!(
            store
                .unassigned_credentials(ids.site, Some(CredentialKind::Tag), found[0].0, 10)
                .await
                .unwrap(),
            [loose]
        );
        assert!(
            store
                .unassigned_credentials(ids.site, Some(CredentialKind::Pin), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );

        assert_eq!(store.entries_retention(ids.site).await.unwrap(), Some(90));
        store
            .entries()
            .set_retention(ACTOR, ids.site, 7, crate::t(1_000))
            .await
            .unwrap();
        assert_eq!(store.entries_retention(ids.site).await.unwrap(), Some(7));
        assert_eq!(store.entries_retention(SiteId(ids.site.0 + 1000)).await.unwrap(), None);

        store
            .audit_action(
                ACTOR,
                "remote_open",
                "door:1",
                "{\"delivered\":false}",
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        let audit = store.model().audit(Some("door:1")).await.unwrap();
        assert!(audit.iter().any(|a| a.action == "remote_open"), "{audit:?}");
        store.close().await;
    });
}

/// The three times the store stamps on its own (a model write's audit and change log, the
/// event a block queues with it, the queue time of a denied entry's event) come from the
/// store's clock, not the system's; an event's own time stays the entry's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_stamps_come_from_the_store_clock() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    const START: i64 = 1_900_000_000;
    on_each_backend!(|db| {
        let clock = Arc::new(AtomicI64::new(START));
        let mut config = db.config("a");
        config.clock = {
            let clock = clock.clone();
            keyway_store::Clock::new(move || crate::t(clock.load(Ordering::SeqCst)))
        };
        let store = keyway_store::Store::open(config).await.unwrap();
        let ids = model(&store).await;
        store
            .notifications()
            .put_setting(
                ACTOR,
                &setting(ids.site, "entry.denied", "d@example.com"),
                crate::t(START),
            )
            .await
            .unwrap();

        clock.store(START + 10, Ordering::SeqCst);
        store
            .model()
            .write(ACTOR, Change::BlockPerson(ids.person))
            .await
            .unwrap();
        let audit = store
            .model()
            .audit(Some(&format!("person:{}", ids.person.0)))
            .await
            .unwrap();
        let block = audit.last().unwrap();
        assert_eq!(
            (block.action.as_str(), block.at),
            ("block_person", crate::t(START + 10))
        );

        clock.store(START + 20, Ordering::SeqCst);
        let entry_time = crate::t(1_000_000_000);
        store
            .entries()
            .append(Entry {
                site: ids.site,
                at: entry_time,
                door: ids.door,
                person: Some(ids.person),
                credential: Some(ids.credential),
                method: Method::Tag,
                allowed: false,
                reason: Cow::Borrowed("person_blocked"),
                revision: Revision(1),
                iq: None,
                rule: None,
            })
            .await
            .unwrap();
        store.entries().flush().await.unwrap();

        let claimed = store
            .notifications()
            .claim(crate::t(START * 2), crate::t(START * 2 + 60), 100)
            .await
            .unwrap();
        let stamps: Vec<_> = claimed
            .iter()
            .map(|i| {
                let payload: serde_json::Value = serde_json::from_str(&i.payload).unwrap();
                (i.target.as_str(), i.created_at, payload["created_at"].as_i64().unwrap())
            })
            .collect();
        assert_eq!(
            stamps,
            [
                ("person.blocked", crate::t(START + 10), START + 10),
                ("entry.denied", crate::t(START + 20), entry_time.as_second()),
            ]
        );
    });
}
