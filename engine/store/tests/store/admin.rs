//! The admin API's records on both backends: reset and API tokens, memberships and
//! ownership, invitations, vouchers, IQ activations, firmware, plugins and bundles,
//! door-rule attachments and opening hours, notification settings and the outbox.
//! Each is checked for its happy path, its typed refusals (with state left intact) and
//! its audit rows.

use crate::support::*;
use keyway_core::*;
use keyway_store::{
    AccountId, ChainedRule, ErrorKind, Logged, NotificationSetting, PinCheck, PolicyChange, Store, StoreError,
};
use serde_json::json;
use std::collections::HashSet;

const NOW: i64 = 1_800_000_000;
const HOUR: i64 = 3600;

fn far_future() -> i64 {
    jiff::Timestamp::now().as_second() + 30 * 24 * HOUR
}

fn kind<T: std::fmt::Debug>(r: Result<T, StoreError>) -> ErrorKind {
    r.unwrap_err().kind()
}

async fn account(store: &Store, email: &str) -> AccountId {
    store
        .accounts()
        .create(ACTOR, email, "Correct-Horse-1", "", jiff::Timestamp::now())
        .await
        .unwrap()
        .id
}

pub(crate) async fn second_site(store: &Store) -> SiteId {
    SiteId(
        store
            .model()
            .create(
                ACTOR,
                Record::Site(SiteRecord {
                    id: SiteId(0),
                    time_zone: jiff::tz::TimeZone::UTC,
                    holiday_calendar: None,
                    lockdown: false,
                }),
            )
            .await
            .unwrap()
            .id
            .unwrap(),
    )
}

/// A rule of a chain with its own configuration, a JSON object.
fn configured(rule: &str, config: serde_json::Value) -> ChainedRule {
    match config {
        serde_json::Value::Object(config) => ChainedRule {
            config,
            ..ChainedRule::new(rule, false)
        },
        other => panic!("a configuration is an object, not {other}"),
    }
}

async fn audit_actions(store: &Store, entity: &str) -> Vec<String> {
    store
        .model()
        .audit(Some(entity))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_tokens() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let id = account(&store, "owner@example.com").await;
        store
            .accounts()
            .create_session(id, "session-1", jiff::Timestamp::now(), jiff::Timestamp::MAX)
            .await
            .unwrap();

        // Unknown and disabled accounts get nothing to send, the same shape of answer.
        assert!(
            store
                .accounts()
                .issue_password_reset("nobody@example.com", jiff::Timestamp::now(), crate::t(NOW + HOUR))
                .await
                .unwrap()
                .is_none()
        );
        let issued = store
            .accounts()
            .issue_password_reset(" OWNER@example.com ", jiff::Timestamp::now(), crate::t(NOW + HOUR))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(issued.secret.len(), 64);
        assert!(
            !format!("{issued:?}").contains(&issued.secret),
            "debug output redacts the secret"
        );
        let other = store
            .accounts()
            .issue_password_reset("owner@example.com", jiff::Timestamp::now(), crate::t(NOW + HOUR))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(issued.secret, other.secret);
        for row in store.model().audit(Some(&id.to_string())).await.unwrap() {
            let text = format!("{:?} {:?}", row.before, row.after);
            assert!(!text.contains(&issued.secret), "the audit never holds a secret");
        }

        // Refusals leave the token usable.
        let zeros = "0".repeat(64);
        let refusals = [
            (issued.secret.as_str(), "weakpassword", NOW),
            (zeros.as_str(), "New-Password-9", NOW),
            (issued.secret.as_str(), "New-Password-9", NOW + HOUR),
        ];
        for (secret, password, now) in refusals {
            let e = store
                .accounts()
                .redeem_password_reset(secret, password, crate::t(now))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        }
        let account = store
            .accounts()
            .redeem_password_reset(&issued.secret, "New-Password-9", crate::t(NOW))
            .await
            .unwrap();
        assert_eq!(account.id, id);
        assert!(
            store
                .accounts()
                .verify_password("owner@example.com", "Correct-Horse-1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .accounts()
                .verify_password("owner@example.com", "New-Password-9")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store
                .accounts()
                .session_account("session-1", crate::t(NOW))
                .await
                .unwrap(),
            None,
            "sessions end"
        );

        // Single use, and the account's other link died with it.
        for secret in [&issued.secret, &other.secret] {
            let e = store
                .accounts()
                .redeem_password_reset(secret, "Third-Password-3", crate::t(NOW))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
            assert_eq!(
                e.to_string(),
                "invalid input: the reset link is invalid, used or expired"
            );
        }
        assert!(
            audit_actions(&store, &id.to_string())
                .await
                .contains(&"reset_password".to_owned())
        );

        // A race for one token: exactly one redemption wins.
        let raced = store
            .accounts()
            .issue_password_reset("owner@example.com", jiff::Timestamp::now(), crate::t(NOW + HOUR))
            .await
            .unwrap()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (store, secret) = (store.clone(), raced.secret.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .accounts()
                    .redeem_password_reset(&secret, &format!("Racer-Pass-{i}"), crate::t(NOW))
                    .await
                    .is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);

        store
            .accounts()
            .set_disabled(ACTOR, id, true, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(
            store
                .accounts()
                .issue_password_reset("owner@example.com", jiff::Timestamp::now(), crate::t(NOW + HOUR))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .accounts()
                .purge_expired_secrets(crate::t(NOW + 2 * HOUR))
                .await
                .unwrap()
                >= 3
        );
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let owner = account(&store, "owner@example.com").await;
        let scopes = vec!["entries.read".to_owned()];
        let expiry = far_future();
        let (token, issued) = store
            .accounts()
            .create_token(
                ACTOR,
                owner,
                Some(ids.site),
                " export ",
                &scopes,
                Some(crate::t(expiry)),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert!(issued.secret.starts_with("kw_"));
        assert_eq!(
            (token.name.as_str(), token.site, token.scopes.clone()),
            ("export", Some(ids.site), scopes.clone())
        );
        let now = expiry - HOUR;
        let found = store
            .accounts()
            .token_by_secret(&issued.secret, crate::t(now))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.id, found.last_used_at), (token.id, Some(crate::t(now))));
        // Use is recorded at a resolution, not on every request.
        let soon = now + keyway_store::TOKEN_USE_RESOLUTION.as_secs() - 1;
        let later = now + keyway_store::TOKEN_USE_RESOLUTION.as_secs();
        for (at, recorded) in [(soon, now), (later, later)] {
            store
                .accounts()
                .token_by_secret(&issued.secret, crate::t(at))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                store.accounts().token(token.id).await.unwrap().unwrap().last_used_at,
                Some(crate::t(recorded)),
                "{at}"
            );
        }
        assert_eq!(
            store
                .accounts()
                .token_by_secret("kw_wrong", crate::t(now))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .accounts()
                .token_by_secret(&issued.secret, crate::t(expiry))
                .await
                .unwrap(),
            None,
            "expired"
        );

        let long = "n".repeat(101);
        let many: Vec<String> = (0..33).map(|i| format!("s{}", "x".repeat(i))).collect();
        type Case<'a> = (&'a str, AccountId, Vec<String>, Option<i64>, ErrorKind);
        let cases: [Case<'_>; 6] = [
            ("", owner, vec![], None, ErrorKind::Invalid),
            (&long, owner, vec![], None, ErrorKind::Invalid),
            ("t", owner, vec!["Entries.Read".into()], None, ErrorKind::Invalid),
            ("t", owner, many, None, ErrorKind::Invalid),
            ("t", owner, vec![], Some(1), ErrorKind::Invalid),
            ("t", AccountId(9999), vec![], None, ErrorKind::ForeignKey),
        ];
        for (name, account, scopes, expires, want) in cases {
            let got = kind(
                store
                    .accounts()
                    .create_token(
                        ACTOR,
                        account,
                        None,
                        name,
                        &scopes,
                        expires.map(crate::t),
                        jiff::Timestamp::now(),
                    )
                    .await,
            );
            assert_eq!(got, want, "{name} {account} {scopes:?} {expires:?}");
        }
        assert_eq!(
            store.accounts().tokens(owner).await.unwrap().len(),
            1,
            "refusals wrote nothing"
        );

        // Disabling the account stops the token; enabling brings it back; revoking ends it.
        store
            .accounts()
            .set_disabled(ACTOR, owner, true, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store
                .accounts()
                .token_by_secret(&issued.secret, crate::t(now))
                .await
                .unwrap(),
            None
        );
        store
            .accounts()
            .set_disabled(ACTOR, owner, false, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(
            store
                .accounts()
                .token_by_secret(&issued.secret, crate::t(now))
                .await
                .unwrap()
                .is_some()
        );
        let revoked = store
            .accounts()
            .revoke_token(ACTOR, token.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(
            store
                .accounts()
                .token_by_secret(&issued.secret, crate::t(now))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            kind(
                store
                    .accounts()
                    .revoke_token(ACTOR, keyway_store::TokenId(9999), jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            audit_actions(&store, &token.id.to_string()).await,
            ["create_api_token", "revoke_api_token"]
        );
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_and_ownership() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let (owner_role, admin_role, basic_role) = (RoleId(0), RoleId(1), RoleId(3));
        let a = account(&store, "a@example.com").await;
        let b = account(&store, "b@example.com").await;
        let c = account(&store, "c@example.com").await;

        let first = store
            .memberships()
            .set_first_owner(ACTOR, ids.site, a, owner_role, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(first.is_owner);
        assert_eq!(
            kind(
                store
                    .memberships()
                    .set_first_owner(ACTOR, ids.site, b, owner_role, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::Duplicate
        );
        store
            .memberships()
            .put(ACTOR, ids.site, b, admin_role, Some(ids.person), jiff::Timestamp::now())
            .await
            .unwrap();
        store
            .memberships()
            .put(ACTOR, ids.site, c, basic_role, None, jiff::Timestamp::now())
            .await
            .unwrap();
        // Changing the owner's role leaves it owner.
        let again = store
            .memberships()
            .put(ACTOR, ids.site, a, owner_role, None, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(again.is_owner);

        let refusals = [
            (
                kind(
                    store
                        .memberships()
                        .put(
                            ACTOR,
                            ids.site,
                            AccountId(9999),
                            basic_role,
                            None,
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .memberships()
                        .put(ACTOR, SiteId(999), c, basic_role, None, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .memberships()
                        .put(
                            ACTOR,
                            ids.site,
                            c,
                            basic_role,
                            Some(PersonId(999)),
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .memberships()
                        .remove(ACTOR, ids.site, a, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::InUse,
            ),
            (
                kind(
                    store
                        .memberships()
                        .remove(ACTOR, ids.site, AccountId(9999), jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::NotFound,
            ),
            (
                kind(
                    store
                        .memberships()
                        .transfer_ownership(ACTOR, ids.site, b, c, owner_role, admin_role, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .transfer_ownership(ACTOR, ids.site, a, a, owner_role, admin_role, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .transfer_ownership(
                            ACTOR,
                            ids.site,
                            a,
                            AccountId(9999),
                            owner_role,
                            admin_role,
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::NotFound,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        let owners = |ms: Vec<keyway_store::Membership>| {
            ms.into_iter()
                .filter(|m| m.is_owner)
                .map(|m| m.account)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            owners(store.memberships().of_site(ids.site).await.unwrap()),
            [a],
            "refusals changed nothing"
        );

        let (old, new) = store
            .memberships()
            .transfer_ownership(ACTOR, ids.site, a, b, owner_role, admin_role, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            (old.is_owner, old.role, new.is_owner, new.role),
            (false, admin_role, true, owner_role)
        );
        assert_eq!(new.person, Some(ids.person), "the person link survives");
        assert_eq!(owners(store.memberships().of_site(ids.site).await.unwrap()), [b]);
        store
            .memberships()
            .remove(ACTOR, ids.site, a, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(store.memberships().get(ids.site, a).await.unwrap(), None);
        assert_eq!(store.memberships().of_account(c).await.unwrap().len(), 1);
        assert_eq!(
            audit_actions(&store, &format!("membership:{}:{}", ids.site.0, a.get())).await,
            [
                "set_owner",
                "update_membership",
                "transfer_ownership",
                "remove_membership"
            ]
        );

        // Two transfers racing from the same owner: one wins, and there is one owner.
        let mut tasks = Vec::new();
        for to in [a, c] {
            if to == a {
                store
                    .memberships()
                    .put(ACTOR, ids.site, a, admin_role, None, jiff::Timestamp::now())
                    .await
                    .unwrap();
            }
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .memberships()
                    .transfer_ownership(ACTOR, ids.site, b, to, owner_role, admin_role, jiff::Timestamp::now())
                    .await
                    .is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
        assert_eq!(owners(store.memberships().of_site(ids.site).await.unwrap()).len(), 1);
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let inviter = account(&store, "owner@example.com").await;
        let expiry = far_future();
        let (invitation, issued) = store
            .memberships()
            .create_invitation(
                ACTOR,
                ids.site,
                " New@Example.com",
                RoleId(3),
                Some(ids.credential),
                Some(inviter),
                crate::t(expiry),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            (invitation.email.as_str(), invitation.credential),
            ("new@example.com", Some(ids.credential))
        );
        let now = expiry - HOUR;
        assert_eq!(
            store
                .memberships()
                .invitation_by_secret(&issued.secret, crate::t(now))
                .await
                .unwrap(),
            Some(invitation.clone())
        );
        assert_eq!(
            store
                .memberships()
                .invitation_by_secret(&issued.secret, crate::t(expiry))
                .await
                .unwrap(),
            None,
            "expired"
        );

        let refusals = [
            (
                kind(
                    store
                        .memberships()
                        .create_invitation(
                            ACTOR,
                            ids.site,
                            "not-an-email",
                            RoleId(3),
                            None,
                            None,
                            crate::t(expiry),
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .create_invitation(
                            ACTOR,
                            ids.site,
                            "x@example.com",
                            RoleId(3),
                            None,
                            None,
                            crate::t(1),
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .create_invitation(
                            ACTOR,
                            SiteId(999),
                            "x@example.com",
                            RoleId(3),
                            None,
                            None,
                            crate::t(expiry),
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .memberships()
                        .create_invitation(
                            ACTOR,
                            ids.site,
                            "x@example.com",
                            RoleId(3),
                            Some(CredentialId(999)),
                            None,
                            crate::t(expiry),
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(store.memberships().invitations(ids.site).await.unwrap().len(), 1);

        // A member already: refused, and the invitation stays usable.
        let e = store
            .memberships()
            .accept_invitation(&issued.secret, inviter, None, crate::t(now))
            .await;
        assert!(e.is_ok(), "{e:?}");
        let (second, second_secret) = store
            .memberships()
            .create_invitation(
                ACTOR,
                ids.site,
                "again@example.com",
                RoleId(2),
                None,
                None,
                crate::t(expiry),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            kind(
                store
                    .memberships()
                    .accept_invitation(&second_secret.secret, inviter, None, crate::t(now))
                    .await
            ),
            ErrorKind::Duplicate
        );
        assert!(
            store
                .memberships()
                .invitation_by_secret(&second_secret.secret, crate::t(now))
                .await
                .unwrap()
                .is_some()
        );

        // Single use under a race of eight accounts.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let id = account(&store, &format!("racer{i}@example.com")).await;
            let (store, secret) = (store.clone(), second_secret.secret.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .memberships()
                    .accept_invitation(&secret, id, None, crate::t(now))
                    .await
                    .is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
        assert_eq!(
            store
                .memberships()
                .invitation_by_secret(&second_secret.secret, crate::t(now))
                .await
                .unwrap(),
            None
        );
        let members = store.memberships().of_site(ids.site).await.unwrap();
        assert_eq!(members.iter().filter(|m| m.role == RoleId(2)).count(), 1);

        assert_eq!(
            kind(
                store
                    .memberships()
                    .accept_invitation("f".repeat(64).as_str(), inviter, None, crate::t(now))
                    .await
            ),
            ErrorKind::Invalid
        );
        store
            .memberships()
            .revoke_invitation(ACTOR, second.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            kind(
                store
                    .memberships()
                    .revoke_invitation(ACTOR, second.id, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            audit_actions(&store, &second.id.to_string()).await,
            ["create_invitation", "revoke_invitation"]
        );
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouchers() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let other = second_site(&store).await;
        let v = store
            .memberships()
            .create_voucher(
                ACTOR,
                " gold-100 ",
                100,
                10,
                Some(crate::t(NOW)),
                Some(crate::t(NOW + 365 * 24 * HOUR)),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert_eq!((v.code.as_str(), v.site), ("GOLD-100", None));
        let later = store
            .memberships()
            .create_voucher(
                ACTOR,
                "LATER",
                5,
                1,
                Some(crate::t(NOW + 10 * HOUR)),
                None,
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();

        let refusals = [
            (
                kind(
                    store
                        .memberships()
                        .create_voucher(ACTOR, "gold-100", 1, 1, None, None, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Duplicate,
            ),
            (
                kind(
                    store
                        .memberships()
                        .create_voucher(ACTOR, "", 1, 1, None, None, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .create_voucher(ACTOR, "bad code!", 1, 1, None, None, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .create_voucher(ACTOR, &"X".repeat(65), 1, 1, None, None, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .create_voucher(
                            ACTOR,
                            "WINDOW",
                            1,
                            1,
                            Some(crate::t(NOW)),
                            Some(crate::t(NOW)),
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .redeem_voucher(ACTOR, "NOPE", ids.site, crate::t(NOW))
                        .await,
                ),
                ErrorKind::NotFound,
            ),
            (
                kind(
                    store
                        .memberships()
                        .redeem_voucher(ACTOR, "LATER", ids.site, crate::t(NOW))
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .memberships()
                        .redeem_voucher(ACTOR, "GOLD-100", SiteId(999), crate::t(NOW))
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(
            store.memberships().site_voucher(ids.site, crate::t(NOW)).await.unwrap(),
            None
        );

        let redeemed = store
            .memberships()
            .redeem_voucher(ACTOR, "gold-100", ids.site, crate::t(NOW))
            .await
            .unwrap();
        assert_eq!(redeemed.site, Some(ids.site));
        assert_eq!(
            store
                .memberships()
                .redeem_voucher(ACTOR, "GOLD-100", ids.site, crate::t(NOW))
                .await
                .unwrap(),
            redeemed,
            "idempotent"
        );
        assert_eq!(
            kind(
                store
                    .memberships()
                    .redeem_voucher(ACTOR, "GOLD-100", other, crate::t(NOW))
                    .await
            ),
            ErrorKind::InUse
        );
        assert_eq!(
            store.memberships().site_voucher(ids.site, crate::t(NOW)).await.unwrap(),
            Some(redeemed.clone())
        );
        assert_eq!(
            store
                .memberships()
                .site_voucher(ids.site, crate::t(NOW + 366 * 24 * HOUR))
                .await
                .unwrap(),
            None,
            "lapsed"
        );
        assert_eq!(store.memberships().vouchers(None).await.unwrap().len(), 2);
        assert_eq!(
            store.memberships().voucher_by_code("later").await.unwrap(),
            Some(later.clone())
        );

        store
            .memberships()
            .delete_voucher(ACTOR, later.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            kind(
                store
                    .memberships()
                    .delete_voucher(ACTOR, later.id, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            audit_actions(&store, &v.id.to_string()).await,
            ["create_voucher", "redeem_voucher"]
        );
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iq_activations_and_firmware() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        for pin in ["", "123", "123456789", "12a4", " 1234", "١٢٣٤"] {
            assert_eq!(
                kind(
                    store
                        .devices()
                        .set_pin(ACTOR, ids.iq, ids.person, pin, jiff::Timestamp::now())
                        .await
                ),
                ErrorKind::Invalid,
                "{pin:?}"
            );
        }
        assert_eq!(
            kind(
                store
                    .devices()
                    .set_pin(ACTOR, ids.iq, PersonId(999), "1234", jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::ForeignKey
        );
        assert_eq!(
            kind(
                store
                    .devices()
                    .set_pin(ACTOR, IqId(999), ids.person, "1234", jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::ForeignKey
        );
        assert_eq!(
            store
                .devices()
                .check_pin(ids.iq, ids.person, "1234", crate::t(NOW))
                .await
                .unwrap(),
            PinCheck::NotSet
        );

        store
            .devices()
            .set_pin(ACTOR, ids.iq, ids.person, "4321", jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store
                .devices()
                .check_pin(ids.iq, ids.person, "4321", crate::t(NOW))
                .await
                .unwrap(),
            PinCheck::Accepted
        );
        assert_eq!(
            store
                .devices()
                .activation(ids.iq, ids.person)
                .await
                .unwrap()
                .unwrap()
                .activated_at,
            Some(crate::t(NOW))
        );
        // Wrong PINs count down, a right one resets the count, the fifth wrong in a row blocks.
        let steps = [
            ("0000", PinCheck::Wrong { remaining: 4 }),
            ("4321", PinCheck::Accepted),
            ("0000", PinCheck::Wrong { remaining: 4 }),
            ("0001", PinCheck::Wrong { remaining: 3 }),
            ("not a pin", PinCheck::Wrong { remaining: 2 }),
            ("0003", PinCheck::Wrong { remaining: 1 }),
            ("0004", PinCheck::Blocked),
            ("4321", PinCheck::Blocked),
        ];
        for (pin, want) in steps {
            assert_eq!(
                store
                    .devices()
                    .check_pin(ids.iq, ids.person, pin, crate::t(NOW))
                    .await
                    .unwrap(),
                want,
                "{pin}"
            );
        }
        assert!(
            store
                .devices()
                .activation(ids.iq, ids.person)
                .await
                .unwrap()
                .unwrap()
                .blocked
        );

        // An admin's reset: the person activates again.
        store
            .devices()
            .reset_pin(ACTOR, ids.iq, ids.person, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store
                .devices()
                .check_pin(ids.iq, ids.person, "4321", crate::t(NOW))
                .await
                .unwrap(),
            PinCheck::NotSet
        );
        assert_eq!(
            kind(
                store
                    .devices()
                    .reset_pin(ACTOR, ids.iq, ids.person, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        // The owner's reset of the IQ: everyone activates again.
        store
            .devices()
            .set_pin(ACTOR, ids.iq, ids.person, "5555", jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(store.devices().activations(ids.iq).await.unwrap().len(), 1);
        assert_eq!(
            store
                .devices()
                .reset(ACTOR, ids.iq, jiff::Timestamp::now())
                .await
                .unwrap(),
            1
        );
        assert!(store.devices().activations(ids.iq).await.unwrap().is_empty());
        assert_eq!(
            kind(store.devices().reset(ACTOR, IqId(999), jiff::Timestamp::now()).await),
            ErrorKind::NotFound
        );
        assert_eq!(
            audit_actions(&store, &format!("iq:{}", ids.iq.0))
                .await
                .last()
                .map(String::as_str),
            Some("reset_iq")
        );

        // Firmware.
        let fw = store
            .devices()
            .upload_firmware(ACTOR, "iq2", "2.4.1", b"abc", jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            fw.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fw.size, 3);
        assert_eq!(
            store.devices().firmware_content(fw.id).await.unwrap().as_deref(),
            Some(&b"abc"[..])
        );
        let oversized = vec![0u8; keyway_store::MAX_FIRMWARE_BYTES + 1];
        let refusals = [
            (
                kind(
                    store
                        .devices()
                        .upload_firmware(ACTOR, "iq2", "2.4.1", b"xyz", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Duplicate,
            ),
            (
                kind(
                    store
                        .devices()
                        .upload_firmware(ACTOR, "iq2", "2.4.2", b"", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .devices()
                        .upload_firmware(ACTOR, "iq2", "2.4.2", &oversized, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .devices()
                        .upload_firmware(ACTOR, "iq 2", "2.4.2", b"x", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .devices()
                        .upload_firmware(ACTOR, "iq2", "../../etc", b"x", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        store
            .devices()
            .upload_firmware(ACTOR, "iq3", "1.0", b"other", jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store.devices().firmware_files(Some("iq2")).await.unwrap(),
            std::slice::from_ref(&fw)
        );
        assert_eq!(store.devices().firmware_files(None).await.unwrap().len(), 2);
        store
            .devices()
            .delete_firmware(ACTOR, fw.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(store.devices().firmware(fw.id).await.unwrap(), None);
        assert_eq!(
            kind(
                store
                    .devices()
                    .delete_firmware(ACTOR, fw.id, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iq_details_and_firmware_assignment() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let other = IqId(
            store
                .model()
                .create(
                    ACTOR,
                    Record::Iq(IqRecord {
                        id: IqId(0),
                        site: ids.site,
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        );
        store
            .devices()
            .set_details(ACTOR, ids.iq, "IQ2", "SN-1", jiff::Timestamp::now())
            .await
            .unwrap();
        let refusals = [
            (
                kind(
                    store
                        .devices()
                        .set_details(ACTOR, other, "IQ2", "SN-1", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Duplicate,
            ),
            (
                kind(
                    store
                        .devices()
                        .set_details(ACTOR, other, "IQ 2", "SN-2", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .devices()
                        .set_details(ACTOR, other, "IQ2", "", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .devices()
                        .set_details(ACTOR, IqId(999), "IQ2", "SN-3", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::NotFound,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        let details = store.devices().iq(ids.iq).await.unwrap().unwrap();
        assert_eq!(
            (
                details.site,
                details.model.as_str(),
                details.serial.as_deref(),
                details.firmware
            ),
            (ids.site, "IQ2", Some("SN-1"), None)
        );
        assert_eq!(
            store.devices().iq_by_serial("SN-1").await.unwrap().map(|d| d.id),
            Some(ids.iq)
        );
        assert_eq!(store.devices().iq(other).await.unwrap().unwrap().serial, None);
        assert_eq!(store.devices().of_site(ids.site).await.unwrap().len(), 2);
        assert!(
            audit_actions(&store, &format!("iq:{}", ids.iq.0))
                .await
                .contains(&"set_iq_details".to_owned())
        );

        let right = store
            .devices()
            .upload_firmware(ACTOR, "IQ2", "3.0", b"image", jiff::Timestamp::now())
            .await
            .unwrap();
        let wrong = store
            .devices()
            .upload_firmware(ACTOR, "IQ1", "3.0", b"image", jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            kind(
                store
                    .devices()
                    .assign_firmware(ACTOR, ids.iq, Some(wrong.id), jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(
                store
                    .devices()
                    .assign_firmware(
                        ACTOR,
                        ids.iq,
                        Some(keyway_store::FirmwareId(4242)),
                        jiff::Timestamp::now()
                    )
                    .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(
                store
                    .devices()
                    .assign_firmware(ACTOR, IqId(999), None, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        store
            .devices()
            .assign_firmware(ACTOR, ids.iq, Some(right.id), jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store.devices().iq(ids.iq).await.unwrap().unwrap().firmware,
            Some(right.id)
        );
        // Download tokens: for the file assigned, until expiry, until another is assigned.
        let now = jiff::Timestamp::now().as_second();
        let issued = store
            .devices()
            .issue_firmware_download(ids.iq, crate::t(now + 3600), jiff::Timestamp::now())
            .await
            .unwrap();
        let expired = store
            .devices()
            .issue_firmware_download(ids.iq, crate::t(now - 1), jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            kind(
                store
                    .devices()
                    .issue_firmware_download(other, crate::t(now + 3600), jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound,
            "an IQ with nothing assigned gets no token"
        );
        let good_for = |secret: String| {
            let store = store.clone();
            async move {
                store
                    .devices()
                    .firmware_download(&secret, crate::t(now))
                    .await
                    .unwrap()
                    .map(|(iq, f)| (iq, f.id))
            }
        };
        assert_eq!(good_for(issued.secret.clone()).await, Some((ids.iq, right.id)));
        assert_eq!(good_for(expired.secret).await, None, "expired");
        assert_eq!(good_for("kwf_nothing".to_owned()).await, None, "unknown");
        let newer = store
            .devices()
            .upload_firmware(ACTOR, "IQ2", "3.1", b"image 2", jiff::Timestamp::now())
            .await
            .unwrap();
        store
            .devices()
            .assign_firmware(ACTOR, ids.iq, Some(newer.id), jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(good_for(issued.secret).await, None, "another file assigned since");
        let again = store
            .devices()
            .issue_firmware_download(ids.iq, crate::t(now + 3600), jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(good_for(again.secret.clone()).await, Some((ids.iq, newer.id)));
        // Assigning the same file again keeps its tokens.
        store
            .devices()
            .assign_firmware(ACTOR, ids.iq, Some(newer.id), jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(good_for(again.secret).await, Some((ids.iq, newer.id)));
        store
            .devices()
            .assign_firmware(ACTOR, ids.iq, Some(right.id), jiff::Timestamp::now())
            .await
            .unwrap();

        // Deleting the file unassigns it (the foreign key sets null).
        store
            .devices()
            .delete_firmware(ACTOR, right.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(store.devices().iq(ids.iq).await.unwrap().unwrap().firmware, None);
        store.close().await;
    });
}

fn standard_plugin(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../policies/default/{name}.wasm"));
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_bundles_rules_and_hours() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let wasm = standard_plugin("business-hours");
        let plugin = store
            .policy_records()
            .upload_plugin(ACTOR, "business-hours", "1.0.0", &wasm, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store.policy_records().plugin_wasm(plugin.id).await.unwrap(),
            Some(wasm.clone())
        );
        let roles = store
            .policy_records()
            .upload_plugin(
                ACTOR,
                "roles-standard",
                "1.0.0",
                &standard_plugin("roles-standard"),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        let too_big = vec![0u8; keyway_store::MAX_PLUGIN_BYTES + 1];
        let refusals = [
            (
                kind(
                    store
                        .policy_records()
                        .upload_plugin(ACTOR, "business-hours", "1.0.0", &wasm, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Duplicate,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .upload_plugin(ACTOR, "x", "1", b"", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .upload_plugin(ACTOR, "x", "1", b"\x7fELF\x02\x01", jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .upload_plugin(ACTOR, "x", "1", &too_big, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .upload_plugin(ACTOR, "bad name", "1", &wasm, jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .upload_bundle(
                            ACTOR,
                            None,
                            "std",
                            "1",
                            "not = [toml",
                            &[plugin.id],
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .upload_bundle(ACTOR, None, "std", "1", "", &[plugin.id], jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .upload_bundle(
                            ACTOR,
                            None,
                            "std",
                            "1",
                            "a = 1",
                            &[keyway_store::PluginId(9999)],
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .upload_bundle(
                            ACTOR,
                            Some(SiteId(999)),
                            "std",
                            "1",
                            "a = 1",
                            &[],
                            jiff::Timestamp::now(),
                        )
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(store.policy_records().plugins().await.unwrap().len(), 2);
        assert!(
            store.policy_records().bundles(None).await.unwrap().is_empty(),
            "a refused bundle leaves no rows"
        );

        let manifest = "[bundle]\nname = \"std\"\n";
        let global = store
            .policy_records()
            .upload_bundle(
                ACTOR,
                None,
                "std",
                "1",
                manifest,
                &[plugin.id, roles.id, plugin.id],
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert_eq!(global.plugins, [plugin.id, roles.id]);
        assert_eq!(
            kind(
                store
                    .policy_records()
                    .upload_bundle(ACTOR, None, "std", "1", manifest, &[], jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::Duplicate
        );
        let global2 = store
            .policy_records()
            .upload_bundle(ACTOR, None, "std", "2", manifest, &[roles.id], jiff::Timestamp::now())
            .await
            .unwrap();
        let own = store
            .policy_records()
            .upload_bundle(
                ACTOR,
                Some(ids.site),
                "std",
                "1",
                manifest,
                &[roles.id],
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.policy_records().active_bundle(Some(ids.site)).await.unwrap(),
            None
        );
        store.policy_records().activate_bundle(ACTOR, global.id).await.unwrap();
        assert_eq!(
            store
                .policy_records()
                .active_bundle(Some(ids.site))
                .await
                .unwrap()
                .map(|b| b.id),
            Some(global.id),
            "falls back to global"
        );
        store.policy_records().activate_bundle(ACTOR, global2.id).await.unwrap();
        store.policy_records().activate_bundle(ACTOR, own.id).await.unwrap();
        let active: Vec<keyway_store::BundleId> = store
            .policy_records()
            .bundles(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.active)
            .map(|b| b.id)
            .collect();
        assert_eq!(active, [global2.id], "one active global bundle");
        assert_eq!(
            store
                .policy_records()
                .active_bundle(Some(ids.site))
                .await
                .unwrap()
                .map(|b| b.id),
            Some(own.id)
        );
        assert_eq!(
            store.policy_records().active_bundle(None).await.unwrap().map(|b| b.id),
            Some(global2.id)
        );
        assert_eq!(
            kind(
                store
                    .policy_records()
                    .delete_bundle(ACTOR, own.id, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::InUse
        );
        assert_eq!(
            kind(
                store
                    .policy_records()
                    .delete_plugin(ACTOR, plugin.id, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::InUse
        );
        store
            .policy_records()
            .delete_bundle(ACTOR, global.id, jiff::Timestamp::now())
            .await
            .unwrap();
        store
            .policy_records()
            .delete_plugin(ACTOR, plugin.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            kind(
                store
                    .policy_records()
                    .delete_plugin(ACTOR, plugin.id, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(store.policy_records().activate_bundle(ACTOR, global.id).await),
            ErrorKind::NotFound
        );

        // Door rules.
        store
            .policy_records()
            .attach_door_rule(ACTOR, ids.door, "business-hours", false)
            .await
            .unwrap();
        store
            .policy_records()
            .attach_door_rule(ACTOR, ids.door, "anti-passback", true)
            .await
            .unwrap();
        let refusals = [
            (
                kind(
                    store
                        .policy_records()
                        .attach_door_rule(ACTOR, DoorId(999), "business-hours", false)
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .attach_door_rule(ACTOR, ids.door, "", false)
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .attach_door_rule(ACTOR, ids.door, &"r".repeat(65), false)
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(store.policy_records().detach_door_rule(ACTOR, DoorId(999)).await),
                ErrorKind::NotFound,
            ),
            (
                kind(store.policy_records().set_door_rules(ACTOR, ids.door, Vec::new()).await),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .set_door_rules(
                            ACTOR,
                            ids.door,
                            (0..9).map(|i| ChainedRule::new(format!("r{i}"), false)).collect(),
                        )
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .set_door_rules(
                            ACTOR,
                            ids.door,
                            vec![ChainedRule::new("a", false), ChainedRule::new("a", true)],
                        )
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .policy_records()
                        .set_door_rules(ACTOR, ids.door, vec![configured("a", json!({"x": "y".repeat(5000)}))])
                        .await,
                ),
                ErrorKind::Invalid,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        let rules = store.policy_records().door_rules().await.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].rules, [ChainedRule::new("anti-passback", true)]);

        // A chain keeps its order and each rule's own configuration, and replaces the
        // door's rules whole; the change log carries it.
        let chain = vec![
            configured("two-person", json!({"window_s": 10, "escort_groups": [9]})),
            ChainedRule::new("business-hours", true),
        ];
        let (_, revision) = store
            .policy_records()
            .set_door_rules(ACTOR, ids.door, chain.clone())
            .await
            .unwrap();
        assert_eq!(
            store
                .policy_records()
                .door_rule_chain(ids.door)
                .await
                .unwrap()
                .unwrap()
                .rules,
            chain
        );
        let rules = store.policy_records().door_rules().await.unwrap();
        assert_eq!((rules.len(), rules[0].door, &rules[0].rules), (1, ids.door, &chain));
        let logged = store
            .subscribe(Revision(revision.0 - 1))
            .await
            .unwrap()
            .next()
            .await
            .unwrap();
        assert_eq!(
            *logged.entry,
            Logged::Policy(PolicyChange::DoorRule {
                door: ids.door,
                rules: chain
            })
        );
        store.policy_records().detach_door_rule(ACTOR, ids.door).await.unwrap();
        assert!(store.policy_records().door_rules().await.unwrap().is_empty());
        assert_eq!(store.policy_records().door_rule_chain(ids.door).await.unwrap(), None);
        assert_eq!(
            audit_actions(&store, &format!("door_rule:{}", ids.door.0)).await,
            [
                "attach_door_rule",
                "attach_door_rule",
                "attach_door_rule",
                "detach_door_rule"
            ]
        );

        // Opening hours, night shift included.
        let hours = Schedule::new(
            vec![
                Period::hm(DaySet::WORKDAYS, (8, 0), (18, 0)),
                Period::hm(DaySet::weekday(jiff::civil::Weekday::Saturday), (22, 0), (2, 0)),
            ],
            None,
        )
        .unwrap();
        store
            .policy_records()
            .set_opening_hours(ACTOR, ids.site, Some(&hours))
            .await
            .unwrap();
        assert_eq!(
            store.policy_records().opening_hours(ids.site).await.unwrap(),
            Some(hours.clone())
        );
        assert_eq!(
            store.policy_records().all_opening_hours().await.unwrap(),
            [(ids.site, hours)]
        );
        assert_eq!(
            kind(
                store
                    .policy_records()
                    .set_opening_hours(ACTOR, SiteId(999), Some(&Schedule::always()))
                    .await
            ),
            ErrorKind::ForeignKey
        );
        store
            .policy_records()
            .set_opening_hours(ACTOR, ids.site, None)
            .await
            .unwrap();
        assert_eq!(store.policy_records().opening_hours(ids.site).await.unwrap(), None);
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_settings_and_outbox() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let owner = account(&store, "owner@example.com").await;
        let setting = NotificationSetting {
            id: keyway_store::SettingId(0),
            site: ids.site,
            account: Some(owner),
            event_kind: "entry.denied".into(),
            channel: "email".into(),
            target: "owner@example.com".into(),
            config: "{}".into(),
            enabled: true,
        };
        let saved = store
            .notifications()
            .put_setting(ACTOR, &setting, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_ne!(saved.id, keyway_store::SettingId(0));
        let updated = store
            .notifications()
            .put_setting(
                ACTOR,
                &NotificationSetting {
                    enabled: false,
                    ..saved.clone()
                },
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert!(!updated.enabled);

        let bad = |f: &dyn Fn(&mut NotificationSetting)| {
            let mut s = setting.clone();
            f(&mut s);
            s
        };
        let other = second_site(&store).await;
        let cases = [
            (bad(&|s| s.channel = "sms".into()), ErrorKind::Invalid),
            (bad(&|s| s.event_kind = "Entry Denied".into()), ErrorKind::Invalid),
            (bad(&|s| s.target = "not-an-email".into()), ErrorKind::Invalid),
            // Webhooks are endpoints of their own, with a secret; push has no gateway.
            (bad(&|s| s.channel = "webhook".into()), ErrorKind::Invalid),
            (bad(&|s| s.channel = "push".into()), ErrorKind::Invalid),
            (bad(&|s| s.config = "[1, 2]".into()), ErrorKind::Invalid),
            (bad(&|s| s.config = "{".into()), ErrorKind::Invalid),
            (bad(&|s| s.site = SiteId(999)), ErrorKind::ForeignKey),
            (bad(&|s| s.account = Some(AccountId(9999))), ErrorKind::ForeignKey),
            (bad(&|s| s.id = keyway_store::SettingId(9999)), ErrorKind::NotFound),
            (
                bad(&|s| {
                    s.id = saved.id;
                    s.site = other;
                }),
                ErrorKind::Invalid,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(
                kind(
                    store
                        .notifications()
                        .put_setting(ACTOR, &s, jiff::Timestamp::now())
                        .await
                ),
                want,
                "{s:?}"
            );
        }
        assert_eq!(
            store.notifications().settings(ids.site).await.unwrap(),
            std::slice::from_ref(&updated),
            "refusals changed nothing"
        );
        store
            .notifications()
            .delete_setting(ACTOR, saved.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            kind(
                store
                    .notifications()
                    .delete_setting(ACTOR, saved.id, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );

        // The outbox: claims lease rows, failures back off, delivery is recorded once.
        for (channel, target, payload) in [
            ("sms", "x", "{}"),
            ("email", "", "{}"),
            ("email", "a@b.c", "[]"),
            ("email", "a@b.c", "{"),
        ] {
            assert_eq!(
                kind(
                    store
                        .notifications()
                        .enqueue(ids.site, channel, target, payload, crate::t(NOW))
                        .await
                ),
                ErrorKind::Invalid
            );
        }
        let mut queued = Vec::new();
        for i in 0..3 {
            queued.push(
                store
                    .notifications()
                    .enqueue(
                        ids.site,
                        "email",
                        "owner@example.com",
                        &format!("{{\"n\":{i}}}"),
                        crate::t(NOW),
                    )
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            kind(store.notifications().claim(crate::t(NOW), crate::t(NOW), 10).await),
            ErrorKind::Invalid
        );
        let first = store
            .notifications()
            .claim(crate::t(NOW), crate::t(NOW + 60), 2)
            .await
            .unwrap();
        assert_eq!(first.iter().map(|i| i.id).collect::<Vec<_>>(), &queued[..2]);
        let second = store
            .notifications()
            .claim(crate::t(NOW), crate::t(NOW + 60), 10)
            .await
            .unwrap();
        assert_eq!(
            second.iter().map(|i| i.id).collect::<Vec<_>>(),
            &queued[2..],
            "leased rows are not handed out twice"
        );
        assert!(
            store
                .notifications()
                .claim(crate::t(NOW + 1), crate::t(NOW + 60), 10)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .notifications()
            .mark_delivered(queued[0], crate::t(NOW + 1))
            .await
            .unwrap();
        assert_eq!(
            kind(store.notifications().mark_delivered(queued[0], crate::t(NOW + 2)).await),
            ErrorKind::NotFound
        );
        store
            .notifications()
            .mark_failed(queued[1], "smtp: 451 try later", crate::t(NOW + 300))
            .await
            .unwrap();
        let failed = store.notifications().outbox_item(queued[1]).await.unwrap().unwrap();
        assert_eq!(
            (failed.attempts, failed.next_attempt_at, failed.last_error.as_deref()),
            (1, crate::t(NOW + 300), Some("smtp: 451 try later"))
        );
        // After the lease, the unsent row comes back; the failed one waits for its retry time.
        let expired = store
            .notifications()
            .claim(crate::t(NOW + 61), crate::t(NOW + 120), 10)
            .await
            .unwrap();
        assert_eq!(expired.iter().map(|i| i.id).collect::<Vec<_>>(), [queued[2]]);
        assert_eq!(
            store.notifications().purge_delivered(crate::t(NOW + 2)).await.unwrap(),
            1
        );
        assert_eq!(store.notifications().outbox_item(queued[0]).await.unwrap(), None);

        // Concurrent senders never share a row.
        let mut many = HashSet::new();
        for i in 0..40 {
            many.insert(
                store
                    .notifications()
                    .enqueue(
                        ids.site,
                        "email",
                        "many@example.com",
                        &format!("{{\"n\":{i}}}"),
                        crate::t(NOW),
                    )
                    .await
                    .unwrap(),
            );
        }
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .notifications()
                        .claim(crate::t(NOW + 500), crate::t(NOW + 600), 3)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|i| i.id));
                }
            }));
        }
        let mut claimed = Vec::new();
        for t in tasks {
            claimed.extend(t.await.unwrap());
        }
        let unique: HashSet<keyway_store::OutboxId> = claimed.iter().copied().collect();
        assert_eq!(unique.len(), claimed.len(), "a row went to two senders");
        assert!(many.is_subset(&unique));
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sessions_and_names() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let op = account(&store, "operator@example.com").await;
        let other = account(&store, "other@example.com").await;
        assert!(!store.accounts().is_operator(op).await.unwrap());
        store
            .accounts()
            .add_operator(ACTOR, op, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(store.accounts().is_operator(op).await.unwrap());
        assert!(!store.accounts().is_operator(other).await.unwrap());
        assert_eq!(
            kind(store.accounts().add_operator(ACTOR, op, jiff::Timestamp::now()).await),
            ErrorKind::Duplicate
        );
        assert_eq!(
            kind(
                store
                    .accounts()
                    .add_operator(ACTOR, AccountId(9999), jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::ForeignKey
        );
        assert_eq!(
            store.accounts().operators().await.unwrap(),
            [op],
            "refusals wrote nothing"
        );
        assert_eq!(
            kind(
                store
                    .accounts()
                    .remove_operator(ACTOR, other, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        store
            .accounts()
            .remove_operator(ACTOR, op, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(store.accounts().operators().await.unwrap().is_empty());
        assert_eq!(
            audit_actions(&store, &format!("operator:{}", op.get())).await,
            ["create_operator", "delete_operator"]
        );
        // Deleting the account removes its operator row.
        store
            .accounts()
            .add_operator(ACTOR, other, jiff::Timestamp::now())
            .await
            .unwrap();
        store
            .accounts()
            .delete(ACTOR, other, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(store.accounts().operators().await.unwrap().is_empty());

        // Log out everywhere ends every session of one account and no other.
        let third = account(&store, "third@example.com").await;
        let far = far_future();
        for hash in ["h1", "h2"] {
            store
                .accounts()
                .create_session(op, hash, jiff::Timestamp::now(), crate::t(far))
                .await
                .unwrap();
        }
        store
            .accounts()
            .create_session(third, "h3", jiff::Timestamp::now(), crate::t(far))
            .await
            .unwrap();
        assert_eq!(store.accounts().end_sessions(op).await.unwrap(), 2);
        let now = jiff::Timestamp::now().as_second();
        assert_eq!(
            store.accounts().session_account("h1", crate::t(now)).await.unwrap(),
            None
        );
        assert_eq!(
            store.accounts().session_account("h3", crate::t(now)).await.unwrap(),
            Some(third)
        );

        // Names of model entities.
        use keyway_store::Named;
        store
            .names()
            .set(ACTOR, Named::Site, ids.site.0, " Head office ", jiff::Timestamp::now())
            .await
            .unwrap();
        store
            .names()
            .set(ACTOR, Named::Door, ids.door.0, "Front 🚪", jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store.names().get(Named::Site, ids.site.0).await.unwrap().as_deref(),
            Some("Head office")
        );
        assert_eq!(
            store.names().list(Named::Door, Some(ids.site)).await.unwrap(),
            [(ids.door.0, "Front 🚪".to_owned())]
        );
        assert_eq!(store.names().get(Named::Door, 9999).await.unwrap(), None);
        assert_eq!(
            kind(
                store
                    .names()
                    .set(ACTOR, Named::Door, 9999, "x", jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::NotFound
        );
        let long = "n".repeat(keyway_store::MAX_NAME + 1);
        assert_eq!(
            kind(
                store
                    .names()
                    .set(ACTOR, Named::Door, ids.door.0, &long, jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(
                store
                    .names()
                    .set(ACTOR, Named::Door, ids.door.0, "a\nb", jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::Invalid
        );
        assert_eq!(
            store.names().get(Named::Door, ids.door.0).await.unwrap().as_deref(),
            Some("Front 🚪")
        );
        assert_eq!(
            audit_actions(&store, &format!("door:{}", ids.door.0))
                .await
                .last()
                .map(String::as_str),
            Some("set_name")
        );
        store.close().await;
    });
}
