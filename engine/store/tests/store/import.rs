//! Bulk import on both backends: people, tags and memberships written in one
//! transaction, one revision per change, in order on the change feed; people found again
//! by external id; a clash anywhere in a batch refuses all of it; a node opened afterwards
//! loads what was imported.

use crate::support::*;
use keyway_core::*;
use keyway_store::{ErrorKind, ImportPerson, ImportTag, Logged, MAX_IMPORT_ROWS, Named};
use std::collections::HashMap;

fn new_person(external_id: &str, name: &str, tags: &[[u8; 4]], groups: &[GroupId]) -> ImportPerson {
    ImportPerson {
        person: None,
        external_id: external_id.to_owned(),
        name: name.to_owned(),
        role: RoleId(3),
        tags: tags.iter().map(|t| ImportTag::New(t.to_vec())).collect(),
        groups: groups.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_writes_every_change_once_or_nothing() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let start = store.snapshot().load().revision();
        let mut feed = store.subscribe(start).await.unwrap();
        // An unassigned tag for the existing person to take.
        let loose = store
            .model()
            .create(ACTOR, Record::Credential(tag(ids.site, None, &[9, 9, 9, 9])))
            .await
            .unwrap()
            .id
            .unwrap();
        let loose = store.snapshot().load().credential_record(CredentialId(loose)).unwrap();
        let rows = vec![
            new_person("HR-1", "Ada", &[[1, 2, 3, 4]], &[ids.group]),
            ImportPerson {
                person: Some(ids.person),
                tags: vec![ImportTag::New(vec![5, 6, 7, 8]), ImportTag::Assign(loose.clone())],
                ..new_person("ignored", "ignored", &[], &[])
            },
        ];
        let imported = store.model().import_people(ACTOR, ids.site, rows, None).await.unwrap();
        let ada = imported[0].person;
        assert_eq!(imported[1].person, ids.person);
        assert_eq!(imported[1].tags[1], loose.id);
        // PutPerson, PutCredential, Grant for Ada; two PutCredentials for the other.
        let snapshot = store.snapshot().load_full();
        assert_eq!(snapshot.revision().0, start.0 + 1 + 5);
        let mut kinds = Vec::new();
        for _ in 0..6 {
            let item = feed.next().await.unwrap();
            let Logged::Change(change) = &*item.entry else {
                panic!("{:?}", item.entry)
            };
            kinds.push(match keyway_store::Target::of(change) {
                keyway_store::Target::Person(_) => "person",
                keyway_store::Target::Credential(_) => "credential",
                keyway_store::Target::Group(_) => "group",
                other => panic!("{other:?}"),
            });
        }
        assert_eq!(
            kinds,
            [
                "credential",
                "person",
                "credential",
                "group",
                "credential",
                "credential"
            ]
        );
        assert_eq!(decide_tag(&store, ids.door, &[1, 2, 3, 4]).effect, Effect::Allow);
        assert_eq!(
            snapshot
                .credential_by_secret(ids.site, CredentialKind::Tag, &[9, 9, 9, 9])
                .unwrap()
                .owner,
            Some(ids.person)
        );
        let found = store
            .model()
            .people_by_external_id(ids.site, &["HR-1".to_owned(), "HR-404".to_owned()])
            .await
            .unwrap();
        assert_eq!(found, HashMap::from([("HR-1".to_owned(), ada)]));
        assert_eq!(
            store.names().get(Named::Person, ada.0).await.unwrap().as_deref(),
            Some("Ada")
        );

        // (case, rows, error kind): each refused whole, nothing written.
        let cases = [
            (
                "an external id taken",
                vec![
                    new_person("HR-2", "Bo", &[], &[]),
                    new_person("HR-1", "Ada again", &[], &[]),
                ],
                ErrorKind::Duplicate,
            ),
            (
                "a tag taken",
                vec![
                    new_person("HR-3", "Cy", &[[7, 7, 7, 7]], &[]),
                    new_person("HR-4", "Di", &[[1, 2, 3, 4]], &[]),
                ],
                ErrorKind::Duplicate,
            ),
            (
                "a group of nothing",
                vec![new_person("HR-5", "Ed", &[], &[GroupId(999)])],
                ErrorKind::NotFound,
            ),
            (
                "a blank external id",
                vec![new_person(" ", "Fi", &[], &[])],
                ErrorKind::Invalid,
            ),
            (
                "too many rows",
                (0..=MAX_IMPORT_ROWS)
                    .map(|i| new_person(&format!("X-{i}"), "X", &[], &[]))
                    .collect(),
                ErrorKind::Invalid,
            ),
        ];
        for (case, rows, kind) in cases {
            let before = store.snapshot().load().revision();
            let err = store
                .model()
                .import_people(ACTOR, ids.site, rows, None)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), kind, "{case}: {err}");
            assert_eq!(store.snapshot().load().revision(), before, "{case}");
            let left = store
                .model()
                .people_by_external_id(ids.site, &["HR-2".to_owned(), "HR-3".to_owned(), "HR-5".to_owned()])
                .await
                .unwrap();
            assert!(left.is_empty(), "{case}: {left:?}");
        }
        // Nothing to write is no revision.
        let before = store.snapshot().load().revision();
        let nothing = ImportPerson {
            person: Some(ada),
            ..new_person("HR-1", "Ada", &[], &[])
        };
        store
            .model()
            .import_people(ACTOR, ids.site, vec![nothing], None)
            .await
            .unwrap();
        assert_eq!(store.snapshot().load().revision(), before);

        // A node opened now loads the same from the tables.
        let again = db.open("b").await;
        let loaded = again.snapshot().load_full();
        assert_eq!(loaded.revision(), before);
        assert_eq!(
            loaded
                .credential_by_secret(ids.site, CredentialKind::Tag, &[1, 2, 3, 4])
                .unwrap()
                .owner,
            Some(ada)
        );
        assert_eq!(loaded.person_groups(ada), Some(&[ids.group][..]));
        again.close().await;
        store.close().await;
    });
}
