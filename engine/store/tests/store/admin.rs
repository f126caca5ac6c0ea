//! The admin API's records on both backends: reset and API tokens, memberships and
//! ownership, invitations, vouchers, IQ activations, firmware, plugins and bundles,
//! door-rule attachments and opening hours, notification settings and the outbox.
//! Each is checked for its happy path, its typed refusals (with state left intact) and
//! its audit rows.

use crate::support::*;
use keyway_core::*;
use keyway_store::{ChainedRule, ErrorKind, Logged, NotificationSetting, PinCheck, PolicyChange, Store, StoreError};
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

async fn account(store: &Store, email: &str) -> i64 {
    store
        .create_account(ACTOR, email, "Correct-Horse-1", "")
        .await
        .unwrap()
        .id
}

pub(crate) async fn second_site(store: &Store) -> SiteId {
    SiteId(
        store
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
        store.create_session(id, "session-1", i64::MAX).await.unwrap();

        // Unknown and disabled accounts get nothing to send, the same shape of answer.
        assert!(
            store
                .issue_password_reset("nobody@example.com", NOW + HOUR)
                .await
                .unwrap()
                .is_none()
        );
        let issued = store
            .issue_password_reset(" OWNER@example.com ", NOW + HOUR)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(issued.secret.len(), 64);
        assert!(
            !format!("{issued:?}").contains(&issued.secret),
            "debug output redacts the secret"
        );
        let other = store
            .issue_password_reset("owner@example.com", NOW + HOUR)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(issued.secret, other.secret);
        for row in store.audit(Some(&format!("account:{id}"))).await.unwrap() {
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
            let e = store.redeem_password_reset(secret, password, now).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        }
        let account = store
            .redeem_password_reset(&issued.secret, "New-Password-9", NOW)
            .await
            .unwrap();
        assert_eq!(account.id, id);
        assert!(
            store
                .verify_password("owner@example.com", "Correct-Horse-1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_password("owner@example.com", "New-Password-9")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store.session_account("session-1", NOW).await.unwrap(),
            None,
            "sessions end"
        );

        // Single use, and the account's other link died with it.
        for secret in [&issued.secret, &other.secret] {
            let e = store
                .redeem_password_reset(secret, "Third-Password-3", NOW)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
            assert_eq!(
                e.to_string(),
                "invalid input: the reset link is invalid, used or expired"
            );
        }
        assert!(
            audit_actions(&store, &format!("account:{id}"))
                .await
                .contains(&"reset_password".to_owned())
        );

        // A race for one token: exactly one redemption wins.
        let raced = store
            .issue_password_reset("owner@example.com", NOW + HOUR)
            .await
            .unwrap()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (store, secret) = (store.clone(), raced.secret.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .redeem_password_reset(&secret, &format!("Racer-Pass-{i}"), NOW)
                    .await
                    .is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);

        store.set_account_disabled(ACTOR, id, true).await.unwrap();
        assert!(
            store
                .issue_password_reset("owner@example.com", NOW + HOUR)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.purge_expired_secrets(NOW + 2 * HOUR).await.unwrap() >= 3);
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
            .create_api_token(ACTOR, owner, Some(ids.site), " export ", &scopes, Some(expiry))
            .await
            .unwrap();
        assert!(issued.secret.starts_with("kw_"));
        assert_eq!(
            (token.name.as_str(), token.site, token.scopes.clone()),
            ("export", Some(ids.site), scopes.clone())
        );
        let now = expiry - HOUR;
        let found = store.api_token_by_secret(&issued.secret, now).await.unwrap().unwrap();
        assert_eq!((found.id, found.last_used_at), (token.id, Some(now)));
        // Use is recorded at a resolution, not on every request.
        let soon = now + keyway_store::TOKEN_USE_RESOLUTION - 1;
        let later = now + keyway_store::TOKEN_USE_RESOLUTION;
        for (at, recorded) in [(soon, now), (later, later)] {
            store.api_token_by_secret(&issued.secret, at).await.unwrap().unwrap();
            assert_eq!(
                store.api_token(token.id).await.unwrap().unwrap().last_used_at,
                Some(recorded),
                "{at}"
            );
        }
        assert_eq!(store.api_token_by_secret("kw_wrong", now).await.unwrap(), None);
        assert_eq!(
            store.api_token_by_secret(&issued.secret, expiry).await.unwrap(),
            None,
            "expired"
        );

        let long = "n".repeat(101);
        let many: Vec<String> = (0..33).map(|i| format!("s{}", "x".repeat(i))).collect();
        type Case<'a> = (&'a str, i64, Vec<String>, Option<i64>, ErrorKind);
        let cases: [Case<'_>; 6] = [
            ("", owner, vec![], None, ErrorKind::Invalid),
            (&long, owner, vec![], None, ErrorKind::Invalid),
            ("t", owner, vec!["Entries.Read".into()], None, ErrorKind::Invalid),
            ("t", owner, many, None, ErrorKind::Invalid),
            ("t", owner, vec![], Some(1), ErrorKind::Invalid),
            ("t", 9999, vec![], None, ErrorKind::ForeignKey),
        ];
        for (name, account, scopes, expires, want) in cases {
            let got = kind(
                store
                    .create_api_token(ACTOR, account, None, name, &scopes, expires)
                    .await,
            );
            assert_eq!(got, want, "{name} {account} {scopes:?} {expires:?}");
        }
        assert_eq!(
            store.api_tokens(owner).await.unwrap().len(),
            1,
            "refusals wrote nothing"
        );

        // Disabling the account stops the token; enabling brings it back; revoking ends it.
        store.set_account_disabled(ACTOR, owner, true).await.unwrap();
        assert_eq!(store.api_token_by_secret(&issued.secret, now).await.unwrap(), None);
        store.set_account_disabled(ACTOR, owner, false).await.unwrap();
        assert!(store.api_token_by_secret(&issued.secret, now).await.unwrap().is_some());
        let revoked = store.revoke_api_token(ACTOR, token.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(store.api_token_by_secret(&issued.secret, now).await.unwrap(), None);
        assert_eq!(kind(store.revoke_api_token(ACTOR, 9999).await), ErrorKind::NotFound);
        assert_eq!(
            audit_actions(&store, &format!("api_token:{}", token.id)).await,
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

        let first = store.set_first_owner(ACTOR, ids.site, a, owner_role).await.unwrap();
        assert!(first.is_owner);
        assert_eq!(
            kind(store.set_first_owner(ACTOR, ids.site, b, owner_role).await),
            ErrorKind::Duplicate
        );
        store
            .put_membership(ACTOR, ids.site, b, admin_role, Some(ids.person))
            .await
            .unwrap();
        store
            .put_membership(ACTOR, ids.site, c, basic_role, None)
            .await
            .unwrap();
        // Changing the owner's role leaves it owner.
        let again = store
            .put_membership(ACTOR, ids.site, a, owner_role, None)
            .await
            .unwrap();
        assert!(again.is_owner);

        let refusals = [
            (
                kind(store.put_membership(ACTOR, ids.site, 9999, basic_role, None).await),
                ErrorKind::ForeignKey,
            ),
            (
                kind(store.put_membership(ACTOR, SiteId(999), c, basic_role, None).await),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .put_membership(ACTOR, ids.site, c, basic_role, Some(PersonId(999)))
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(store.remove_membership(ACTOR, ids.site, a).await),
                ErrorKind::InUse,
            ),
            (
                kind(store.remove_membership(ACTOR, ids.site, 9999).await),
                ErrorKind::NotFound,
            ),
            (
                kind(
                    store
                        .transfer_ownership(ACTOR, ids.site, b, c, owner_role, admin_role)
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .transfer_ownership(ACTOR, ids.site, a, a, owner_role, admin_role)
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .transfer_ownership(ACTOR, ids.site, a, 9999, owner_role, admin_role)
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
            owners(store.site_memberships(ids.site).await.unwrap()),
            [a],
            "refusals changed nothing"
        );

        let (old, new) = store
            .transfer_ownership(ACTOR, ids.site, a, b, owner_role, admin_role)
            .await
            .unwrap();
        assert_eq!(
            (old.is_owner, old.role, new.is_owner, new.role),
            (false, admin_role, true, owner_role)
        );
        assert_eq!(new.person, Some(ids.person), "the person link survives");
        assert_eq!(owners(store.site_memberships(ids.site).await.unwrap()), [b]);
        store.remove_membership(ACTOR, ids.site, a).await.unwrap();
        assert_eq!(store.membership(ids.site, a).await.unwrap(), None);
        assert_eq!(store.account_memberships(c).await.unwrap().len(), 1);
        assert_eq!(
            audit_actions(&store, &format!("membership:{}:{a}", ids.site.0)).await,
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
                    .put_membership(ACTOR, ids.site, a, admin_role, None)
                    .await
                    .unwrap();
            }
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .transfer_ownership(ACTOR, ids.site, b, to, owner_role, admin_role)
                    .await
                    .is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
        assert_eq!(owners(store.site_memberships(ids.site).await.unwrap()).len(), 1);
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
            .create_invitation(
                ACTOR,
                ids.site,
                " New@Example.com",
                RoleId(3),
                Some(ids.credential),
                Some(inviter),
                expiry,
            )
            .await
            .unwrap();
        assert_eq!(
            (invitation.email.as_str(), invitation.credential),
            ("new@example.com", Some(ids.credential))
        );
        let now = expiry - HOUR;
        assert_eq!(
            store.invitation_by_secret(&issued.secret, now).await.unwrap(),
            Some(invitation.clone())
        );
        assert_eq!(
            store.invitation_by_secret(&issued.secret, expiry).await.unwrap(),
            None,
            "expired"
        );

        let refusals = [
            (
                kind(
                    store
                        .create_invitation(ACTOR, ids.site, "not-an-email", RoleId(3), None, None, expiry)
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .create_invitation(ACTOR, ids.site, "x@example.com", RoleId(3), None, None, 1)
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .create_invitation(ACTOR, SiteId(999), "x@example.com", RoleId(3), None, None, expiry)
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .create_invitation(
                            ACTOR,
                            ids.site,
                            "x@example.com",
                            RoleId(3),
                            Some(CredentialId(999)),
                            None,
                            expiry,
                        )
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(store.site_invitations(ids.site).await.unwrap().len(), 1);

        // A member already: refused, and the invitation stays usable.
        let e = store.accept_invitation(&issued.secret, inviter, None, now).await;
        assert!(e.is_ok(), "{e:?}");
        let (second, second_secret) = store
            .create_invitation(ACTOR, ids.site, "again@example.com", RoleId(2), None, None, expiry)
            .await
            .unwrap();
        assert_eq!(
            kind(store.accept_invitation(&second_secret.secret, inviter, None, now).await),
            ErrorKind::Duplicate
        );
        assert!(
            store
                .invitation_by_secret(&second_secret.secret, now)
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
                store.accept_invitation(&secret, id, None, now).await.is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
        assert_eq!(
            store.invitation_by_secret(&second_secret.secret, now).await.unwrap(),
            None
        );
        let members = store.site_memberships(ids.site).await.unwrap();
        assert_eq!(members.iter().filter(|m| m.role == RoleId(2)).count(), 1);

        assert_eq!(
            kind(
                store
                    .accept_invitation("f".repeat(64).as_str(), inviter, None, now)
                    .await
            ),
            ErrorKind::Invalid
        );
        store.revoke_invitation(ACTOR, second.id).await.unwrap();
        assert_eq!(
            kind(store.revoke_invitation(ACTOR, second.id).await),
            ErrorKind::NotFound
        );
        assert_eq!(
            audit_actions(&store, &format!("invitation:{}", second.id)).await,
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
            .create_voucher(ACTOR, " gold-100 ", 100, 10, Some(NOW), Some(NOW + 365 * 24 * HOUR))
            .await
            .unwrap();
        assert_eq!((v.code.as_str(), v.site), ("GOLD-100", None));
        let later = store
            .create_voucher(ACTOR, "LATER", 5, 1, Some(NOW + 10 * HOUR), None)
            .await
            .unwrap();

        let refusals = [
            (
                kind(store.create_voucher(ACTOR, "gold-100", 1, 1, None, None).await),
                ErrorKind::Duplicate,
            ),
            (
                kind(store.create_voucher(ACTOR, "", 1, 1, None, None).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.create_voucher(ACTOR, "bad code!", 1, 1, None, None).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.create_voucher(ACTOR, &"X".repeat(65), 1, 1, None, None).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.create_voucher(ACTOR, "WINDOW", 1, 1, Some(NOW), Some(NOW)).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.redeem_voucher(ACTOR, "NOPE", ids.site, NOW).await),
                ErrorKind::NotFound,
            ),
            (
                kind(store.redeem_voucher(ACTOR, "LATER", ids.site, NOW).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.redeem_voucher(ACTOR, "GOLD-100", SiteId(999), NOW).await),
                ErrorKind::ForeignKey,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(store.site_voucher(ids.site, NOW).await.unwrap(), None);

        let redeemed = store.redeem_voucher(ACTOR, "gold-100", ids.site, NOW).await.unwrap();
        assert_eq!(redeemed.site, Some(ids.site));
        assert_eq!(
            store.redeem_voucher(ACTOR, "GOLD-100", ids.site, NOW).await.unwrap(),
            redeemed,
            "idempotent"
        );
        assert_eq!(
            kind(store.redeem_voucher(ACTOR, "GOLD-100", other, NOW).await),
            ErrorKind::InUse
        );
        assert_eq!(store.site_voucher(ids.site, NOW).await.unwrap(), Some(redeemed.clone()));
        assert_eq!(
            store.site_voucher(ids.site, NOW + 366 * 24 * HOUR).await.unwrap(),
            None,
            "lapsed"
        );
        assert_eq!(store.vouchers(None).await.unwrap().len(), 2);
        assert_eq!(store.voucher_by_code("later").await.unwrap(), Some(later.clone()));

        store.delete_voucher(ACTOR, later.id).await.unwrap();
        assert_eq!(kind(store.delete_voucher(ACTOR, later.id).await), ErrorKind::NotFound);
        assert_eq!(
            audit_actions(&store, &format!("voucher:{}", v.id)).await,
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
                kind(store.set_iq_pin(ACTOR, ids.iq, ids.person, pin).await),
                ErrorKind::Invalid,
                "{pin:?}"
            );
        }
        assert_eq!(
            kind(store.set_iq_pin(ACTOR, ids.iq, PersonId(999), "1234").await),
            ErrorKind::ForeignKey
        );
        assert_eq!(
            kind(store.set_iq_pin(ACTOR, IqId(999), ids.person, "1234").await),
            ErrorKind::ForeignKey
        );
        assert_eq!(
            store.check_iq_pin(ids.iq, ids.person, "1234", NOW).await.unwrap(),
            PinCheck::NotSet
        );

        store.set_iq_pin(ACTOR, ids.iq, ids.person, "4321").await.unwrap();
        assert_eq!(
            store.check_iq_pin(ids.iq, ids.person, "4321", NOW).await.unwrap(),
            PinCheck::Accepted
        );
        assert_eq!(
            store
                .iq_activation(ids.iq, ids.person)
                .await
                .unwrap()
                .unwrap()
                .activated_at,
            Some(NOW)
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
                store.check_iq_pin(ids.iq, ids.person, pin, NOW).await.unwrap(),
                want,
                "{pin}"
            );
        }
        assert!(store.iq_activation(ids.iq, ids.person).await.unwrap().unwrap().blocked);

        // An admin's reset: the person activates again.
        store.reset_iq_pin(ACTOR, ids.iq, ids.person).await.unwrap();
        assert_eq!(
            store.check_iq_pin(ids.iq, ids.person, "4321", NOW).await.unwrap(),
            PinCheck::NotSet
        );
        assert_eq!(
            kind(store.reset_iq_pin(ACTOR, ids.iq, ids.person).await),
            ErrorKind::NotFound
        );
        // The owner's reset of the IQ: everyone activates again.
        store.set_iq_pin(ACTOR, ids.iq, ids.person, "5555").await.unwrap();
        assert_eq!(store.iq_activations(ids.iq).await.unwrap().len(), 1);
        assert_eq!(store.reset_iq(ACTOR, ids.iq).await.unwrap(), 1);
        assert!(store.iq_activations(ids.iq).await.unwrap().is_empty());
        assert_eq!(kind(store.reset_iq(ACTOR, IqId(999)).await), ErrorKind::NotFound);
        assert_eq!(
            audit_actions(&store, &format!("iq:{}", ids.iq.0))
                .await
                .last()
                .map(String::as_str),
            Some("reset_iq")
        );

        // Firmware.
        let fw = store.upload_firmware(ACTOR, "iq2", "2.4.1", b"abc").await.unwrap();
        assert_eq!(
            fw.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fw.size, 3);
        assert_eq!(
            store.firmware_content(fw.id).await.unwrap().as_deref(),
            Some(&b"abc"[..])
        );
        let oversized = vec![0u8; keyway_store::MAX_FIRMWARE_BYTES + 1];
        let refusals = [
            (
                kind(store.upload_firmware(ACTOR, "iq2", "2.4.1", b"xyz").await),
                ErrorKind::Duplicate,
            ),
            (
                kind(store.upload_firmware(ACTOR, "iq2", "2.4.2", b"").await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.upload_firmware(ACTOR, "iq2", "2.4.2", &oversized).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.upload_firmware(ACTOR, "iq 2", "2.4.2", b"x").await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.upload_firmware(ACTOR, "iq2", "../../etc", b"x").await),
                ErrorKind::Invalid,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        store.upload_firmware(ACTOR, "iq3", "1.0", b"other").await.unwrap();
        assert_eq!(
            store.firmware_files(Some("iq2")).await.unwrap(),
            std::slice::from_ref(&fw)
        );
        assert_eq!(store.firmware_files(None).await.unwrap().len(), 2);
        store.delete_firmware(ACTOR, fw.id).await.unwrap();
        assert_eq!(store.firmware(fw.id).await.unwrap(), None);
        assert_eq!(kind(store.delete_firmware(ACTOR, fw.id).await), ErrorKind::NotFound);
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
        store.set_iq_details(ACTOR, ids.iq, "IQ2", "SN-1").await.unwrap();
        let refusals = [
            (
                kind(store.set_iq_details(ACTOR, other, "IQ2", "SN-1").await),
                ErrorKind::Duplicate,
            ),
            (
                kind(store.set_iq_details(ACTOR, other, "IQ 2", "SN-2").await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.set_iq_details(ACTOR, other, "IQ2", "").await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.set_iq_details(ACTOR, IqId(999), "IQ2", "SN-3").await),
                ErrorKind::NotFound,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        let details = store.iq_details(ids.iq).await.unwrap().unwrap();
        assert_eq!(
            (
                details.site,
                details.model.as_str(),
                details.serial.as_deref(),
                details.firmware
            ),
            (ids.site, "IQ2", Some("SN-1"), None)
        );
        assert_eq!(store.iq_by_serial("SN-1").await.unwrap().map(|d| d.id), Some(ids.iq));
        assert_eq!(store.iq_details(other).await.unwrap().unwrap().serial, None);
        assert_eq!(store.site_iqs(ids.site).await.unwrap().len(), 2);
        assert!(
            audit_actions(&store, &format!("iq:{}", ids.iq.0))
                .await
                .contains(&"set_iq_details".to_owned())
        );

        let right = store.upload_firmware(ACTOR, "IQ2", "3.0", b"image").await.unwrap();
        let wrong = store.upload_firmware(ACTOR, "IQ1", "3.0", b"image").await.unwrap();
        assert_eq!(
            kind(store.assign_firmware(ACTOR, ids.iq, Some(wrong.id)).await),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(store.assign_firmware(ACTOR, ids.iq, Some(4242)).await),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(store.assign_firmware(ACTOR, IqId(999), None).await),
            ErrorKind::NotFound
        );
        store.assign_firmware(ACTOR, ids.iq, Some(right.id)).await.unwrap();
        assert_eq!(
            store.iq_details(ids.iq).await.unwrap().unwrap().firmware,
            Some(right.id)
        );
        // Download tokens: for the file assigned, until expiry, until another is assigned.
        let now = jiff::Timestamp::now().as_second();
        let issued = store.issue_firmware_download(ids.iq, now + 3600).await.unwrap();
        let expired = store.issue_firmware_download(ids.iq, now - 1).await.unwrap();
        assert_eq!(
            kind(store.issue_firmware_download(other, now + 3600).await),
            ErrorKind::NotFound,
            "an IQ with nothing assigned gets no token"
        );
        let good_for = |secret: String| {
            let store = store.clone();
            async move {
                store
                    .firmware_download(&secret, now)
                    .await
                    .unwrap()
                    .map(|(iq, f)| (iq, f.id))
            }
        };
        assert_eq!(good_for(issued.secret.clone()).await, Some((ids.iq, right.id)));
        assert_eq!(good_for(expired.secret).await, None, "expired");
        assert_eq!(good_for("kwf_nothing".to_owned()).await, None, "unknown");
        let newer = store.upload_firmware(ACTOR, "IQ2", "3.1", b"image 2").await.unwrap();
        store.assign_firmware(ACTOR, ids.iq, Some(newer.id)).await.unwrap();
        assert_eq!(good_for(issued.secret).await, None, "another file assigned since");
        let again = store.issue_firmware_download(ids.iq, now + 3600).await.unwrap();
        assert_eq!(good_for(again.secret.clone()).await, Some((ids.iq, newer.id)));
        // Assigning the same file again keeps its tokens.
        store.assign_firmware(ACTOR, ids.iq, Some(newer.id)).await.unwrap();
        assert_eq!(good_for(again.secret).await, Some((ids.iq, newer.id)));
        store.assign_firmware(ACTOR, ids.iq, Some(right.id)).await.unwrap();

        // Deleting the file unassigns it (the foreign key sets null).
        store.delete_firmware(ACTOR, right.id).await.unwrap();
        assert_eq!(store.iq_details(ids.iq).await.unwrap().unwrap().firmware, None);
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
            .upload_plugin(ACTOR, "business-hours", "1.0.0", &wasm)
            .await
            .unwrap();
        assert_eq!(store.plugin_wasm(plugin.id).await.unwrap(), Some(wasm.clone()));
        let roles = store
            .upload_plugin(ACTOR, "roles-standard", "1.0.0", &standard_plugin("roles-standard"))
            .await
            .unwrap();
        let too_big = vec![0u8; keyway_store::MAX_PLUGIN_BYTES + 1];
        let refusals = [
            (
                kind(store.upload_plugin(ACTOR, "business-hours", "1.0.0", &wasm).await),
                ErrorKind::Duplicate,
            ),
            (
                kind(store.upload_plugin(ACTOR, "x", "1", b"").await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.upload_plugin(ACTOR, "x", "1", b"\x7fELF\x02\x01").await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.upload_plugin(ACTOR, "x", "1", &too_big).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.upload_plugin(ACTOR, "bad name", "1", &wasm).await),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .upload_bundle(ACTOR, None, "std", "1", "not = [toml", &[plugin.id])
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(store.upload_bundle(ACTOR, None, "std", "1", "", &[plugin.id]).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.upload_bundle(ACTOR, None, "std", "1", "a = 1", &[9999]).await),
                ErrorKind::ForeignKey,
            ),
            (
                kind(
                    store
                        .upload_bundle(ACTOR, Some(SiteId(999)), "std", "1", "a = 1", &[])
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(store.plugins().await.unwrap().len(), 2);
        assert!(
            store.bundles(None).await.unwrap().is_empty(),
            "a refused bundle leaves no rows"
        );

        let manifest = "[bundle]\nname = \"std\"\n";
        let global = store
            .upload_bundle(ACTOR, None, "std", "1", manifest, &[plugin.id, roles.id, plugin.id])
            .await
            .unwrap();
        assert_eq!(global.plugins, [plugin.id, roles.id]);
        assert_eq!(
            kind(store.upload_bundle(ACTOR, None, "std", "1", manifest, &[]).await),
            ErrorKind::Duplicate
        );
        let global2 = store
            .upload_bundle(ACTOR, None, "std", "2", manifest, &[roles.id])
            .await
            .unwrap();
        let own = store
            .upload_bundle(ACTOR, Some(ids.site), "std", "1", manifest, &[roles.id])
            .await
            .unwrap();
        assert_eq!(store.active_bundle(Some(ids.site)).await.unwrap(), None);
        store.activate_bundle(ACTOR, global.id).await.unwrap();
        assert_eq!(
            store.active_bundle(Some(ids.site)).await.unwrap().map(|b| b.id),
            Some(global.id),
            "falls back to global"
        );
        store.activate_bundle(ACTOR, global2.id).await.unwrap();
        store.activate_bundle(ACTOR, own.id).await.unwrap();
        let active: Vec<i64> = store
            .bundles(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.active)
            .map(|b| b.id)
            .collect();
        assert_eq!(active, [global2.id], "one active global bundle");
        assert_eq!(
            store.active_bundle(Some(ids.site)).await.unwrap().map(|b| b.id),
            Some(own.id)
        );
        assert_eq!(store.active_bundle(None).await.unwrap().map(|b| b.id), Some(global2.id));
        assert_eq!(kind(store.delete_bundle(ACTOR, own.id).await), ErrorKind::InUse);
        assert_eq!(kind(store.delete_plugin(ACTOR, plugin.id).await), ErrorKind::InUse);
        store.delete_bundle(ACTOR, global.id).await.unwrap();
        store.delete_plugin(ACTOR, plugin.id).await.unwrap();
        assert_eq!(kind(store.delete_plugin(ACTOR, plugin.id).await), ErrorKind::NotFound);
        assert_eq!(kind(store.activate_bundle(ACTOR, global.id).await), ErrorKind::NotFound);

        // Door rules.
        store
            .attach_door_rule(ACTOR, ids.door, "business-hours", false)
            .await
            .unwrap();
        store
            .attach_door_rule(ACTOR, ids.door, "anti-passback", true)
            .await
            .unwrap();
        let refusals = [
            (
                kind(
                    store
                        .attach_door_rule(ACTOR, DoorId(999), "business-hours", false)
                        .await,
                ),
                ErrorKind::ForeignKey,
            ),
            (
                kind(store.attach_door_rule(ACTOR, ids.door, "", false).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.attach_door_rule(ACTOR, ids.door, &"r".repeat(65), false).await),
                ErrorKind::Invalid,
            ),
            (
                kind(store.detach_door_rule(ACTOR, DoorId(999)).await),
                ErrorKind::NotFound,
            ),
            (
                kind(store.set_door_rules(ACTOR, ids.door, Vec::new()).await),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
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
                        .set_door_rules(ACTOR, ids.door, vec![configured("a", json!({"x": "y".repeat(5000)}))])
                        .await,
                ),
                ErrorKind::Invalid,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        let rules = store.door_rules().await.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].rules, [ChainedRule::new("anti-passback", true)]);

        // A chain keeps its order and each rule's own configuration, and replaces the
        // door's rules whole; the change log carries it.
        let chain = vec![
            configured("two-person", json!({"window_s": 10, "escort_groups": [9]})),
            ChainedRule::new("business-hours", true),
        ];
        let (_, revision) = store.set_door_rules(ACTOR, ids.door, chain.clone()).await.unwrap();
        assert_eq!(store.door_rule_chain(ids.door).await.unwrap().unwrap().rules, chain);
        let rules = store.door_rules().await.unwrap();
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
        store.detach_door_rule(ACTOR, ids.door).await.unwrap();
        assert!(store.door_rules().await.unwrap().is_empty());
        assert_eq!(store.door_rule_chain(ids.door).await.unwrap(), None);
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
        store.set_opening_hours(ACTOR, ids.site, Some(&hours)).await.unwrap();
        assert_eq!(store.opening_hours(ids.site).await.unwrap(), Some(hours.clone()));
        assert_eq!(store.all_opening_hours().await.unwrap(), [(ids.site, hours)]);
        assert_eq!(
            kind(
                store
                    .set_opening_hours(ACTOR, SiteId(999), Some(&Schedule::always()))
                    .await
            ),
            ErrorKind::ForeignKey
        );
        store.set_opening_hours(ACTOR, ids.site, None).await.unwrap();
        assert_eq!(store.opening_hours(ids.site).await.unwrap(), None);
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
            id: 0,
            site: ids.site,
            account: Some(owner),
            event_kind: "entry.denied".into(),
            channel: "email".into(),
            target: "owner@example.com".into(),
            config: "{}".into(),
            enabled: true,
        };
        let saved = store.put_notification_setting(ACTOR, &setting).await.unwrap();
        assert_ne!(saved.id, 0);
        let updated = store
            .put_notification_setting(
                ACTOR,
                &NotificationSetting {
                    enabled: false,
                    ..saved.clone()
                },
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
            (bad(&|s| s.account = Some(9999)), ErrorKind::ForeignKey),
            (bad(&|s| s.id = 9999), ErrorKind::NotFound),
            (
                bad(&|s| {
                    s.id = saved.id;
                    s.site = other;
                }),
                ErrorKind::Invalid,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(kind(store.put_notification_setting(ACTOR, &s).await), want, "{s:?}");
        }
        assert_eq!(
            store.notification_settings(ids.site).await.unwrap(),
            std::slice::from_ref(&updated),
            "refusals changed nothing"
        );
        store.delete_notification_setting(ACTOR, saved.id).await.unwrap();
        assert_eq!(
            kind(store.delete_notification_setting(ACTOR, saved.id).await),
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
                        .enqueue_notification(ids.site, channel, target, payload, NOW)
                        .await
                ),
                ErrorKind::Invalid
            );
        }
        let mut queued = Vec::new();
        for i in 0..3 {
            queued.push(
                store
                    .enqueue_notification(ids.site, "email", "owner@example.com", &format!("{{\"n\":{i}}}"), NOW)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(kind(store.claim_notifications(NOW, NOW, 10).await), ErrorKind::Invalid);
        let first = store.claim_notifications(NOW, NOW + 60, 2).await.unwrap();
        assert_eq!(first.iter().map(|i| i.id).collect::<Vec<_>>(), &queued[..2]);
        let second = store.claim_notifications(NOW, NOW + 60, 10).await.unwrap();
        assert_eq!(
            second.iter().map(|i| i.id).collect::<Vec<_>>(),
            &queued[2..],
            "leased rows are not handed out twice"
        );
        assert!(
            store
                .claim_notifications(NOW + 1, NOW + 60, 10)
                .await
                .unwrap()
                .is_empty()
        );
        store.mark_notification_delivered(queued[0], NOW + 1).await.unwrap();
        assert_eq!(
            kind(store.mark_notification_delivered(queued[0], NOW + 2).await),
            ErrorKind::NotFound
        );
        store
            .mark_notification_failed(queued[1], "smtp: 451 try later", NOW + 300)
            .await
            .unwrap();
        let failed = store.outbox_item(queued[1]).await.unwrap().unwrap();
        assert_eq!(
            (failed.attempts, failed.next_attempt_at, failed.last_error.as_deref()),
            (1, NOW + 300, Some("smtp: 451 try later"))
        );
        // After the lease, the unsent row comes back; the failed one waits for its retry time.
        let expired = store.claim_notifications(NOW + 61, NOW + 120, 10).await.unwrap();
        assert_eq!(expired.iter().map(|i| i.id).collect::<Vec<_>>(), [queued[2]]);
        assert_eq!(store.purge_delivered_notifications(NOW + 2).await.unwrap(), 1);
        assert_eq!(store.outbox_item(queued[0]).await.unwrap(), None);

        // Concurrent senders never share a row.
        let mut many = HashSet::new();
        for i in 0..40 {
            many.insert(
                store
                    .enqueue_notification(ids.site, "email", "many@example.com", &format!("{{\"n\":{i}}}"), NOW)
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
                    let got = store.claim_notifications(NOW + 500, NOW + 600, 3).await.unwrap();
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
        let unique: HashSet<i64> = claimed.iter().copied().collect();
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
        assert!(!store.is_operator(op).await.unwrap());
        store.add_operator(ACTOR, op).await.unwrap();
        assert!(store.is_operator(op).await.unwrap());
        assert!(!store.is_operator(other).await.unwrap());
        assert_eq!(kind(store.add_operator(ACTOR, op).await), ErrorKind::Duplicate);
        assert_eq!(kind(store.add_operator(ACTOR, 9999).await), ErrorKind::ForeignKey);
        assert_eq!(store.operators().await.unwrap(), [op], "refusals wrote nothing");
        assert_eq!(kind(store.remove_operator(ACTOR, other).await), ErrorKind::NotFound);
        store.remove_operator(ACTOR, op).await.unwrap();
        assert!(store.operators().await.unwrap().is_empty());
        assert_eq!(
            audit_actions(&store, &format!("operator:{op}")).await,
            ["create_operator", "delete_operator"]
        );
        // Deleting the account removes its operator row.
        store.add_operator(ACTOR, other).await.unwrap();
        store.delete_account(ACTOR, other).await.unwrap();
        assert!(store.operators().await.unwrap().is_empty());

        // Log out everywhere ends every session of one account and no other.
        let third = account(&store, "third@example.com").await;
        let far = far_future();
        for hash in ["h1", "h2"] {
            store.create_session(op, hash, far).await.unwrap();
        }
        store.create_session(third, "h3", far).await.unwrap();
        assert_eq!(store.end_account_sessions(op).await.unwrap(), 2);
        let now = jiff::Timestamp::now().as_second();
        assert_eq!(store.session_account("h1", now).await.unwrap(), None);
        assert_eq!(store.session_account("h3", now).await.unwrap(), Some(third));

        // Names of model entities.
        use keyway_store::Named;
        store
            .set_name(ACTOR, Named::Site, ids.site.0, " Head office ")
            .await
            .unwrap();
        store
            .set_name(ACTOR, Named::Door, ids.door.0, "Front 🚪")
            .await
            .unwrap();
        assert_eq!(
            store.name(Named::Site, ids.site.0).await.unwrap().as_deref(),
            Some("Head office")
        );
        assert_eq!(
            store.names(Named::Door, Some(ids.site)).await.unwrap(),
            [(ids.door.0, "Front 🚪".to_owned())]
        );
        assert_eq!(store.name(Named::Door, 9999).await.unwrap(), None);
        assert_eq!(
            kind(store.set_name(ACTOR, Named::Door, 9999, "x").await),
            ErrorKind::NotFound
        );
        let long = "n".repeat(keyway_store::MAX_NAME + 1);
        assert_eq!(
            kind(store.set_name(ACTOR, Named::Door, ids.door.0, &long).await),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(store.set_name(ACTOR, Named::Door, ids.door.0, "a\nb").await),
            ErrorKind::Invalid
        );
        assert_eq!(
            store.name(Named::Door, ids.door.0).await.unwrap().as_deref(),
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
