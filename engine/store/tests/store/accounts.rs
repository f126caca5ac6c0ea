//! Accounts and sessions on both backends: argon2id hashes, typed errors, audit.

use crate::support::*;
use keyway_store::ErrorKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_sessions() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let account = store
            .accounts()
            .create(
                ACTOR,
                " Owner@Example.com ",
                "Correct-Horse-1",
                "Owner",
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        assert_eq!(account.email, "owner@example.com");
        assert_eq!(store.accounts().get(account.id).await.unwrap(), Some(account.clone()));

        // The hash is argon2id, never the password.
        let audit = store.model().audit(Some(&account.id.to_string())).await.unwrap();
        assert_eq!(audit.last().unwrap().action, "create_account");
        assert!(
            !audit
                .last()
                .unwrap()
                .after
                .as_deref()
                .unwrap()
                .contains("Correct-Horse-1")
        );

        // Sign in: right password, wrong password, unknown email, all by the same door.
        let cases = [
            ("owner@example.com", "Correct-Horse-1", true),
            ("OWNER@example.com", "Correct-Horse-1", true),
            ("owner@example.com", "wrong-password", false),
            ("nobody@example.com", "Correct-Horse-1", false),
            ("not an email", "Correct-Horse-1", false),
        ];
        for (email, password, ok) in cases {
            let got = store.accounts().verify_password(email, password).await.unwrap();
            assert_eq!(got.is_some(), ok, "{email} / {password}");
        }

        // Typed errors.
        let dup = store
            .accounts()
            .create(ACTOR, "owner@example.com", "Another-Pass-2", "", jiff::Timestamp::now())
            .await
            .unwrap_err();
        assert_eq!(dup.kind(), ErrorKind::Duplicate, "{dup}");
        let short = store
            .accounts()
            .create(ACTOR, "x@example.com", "short", "", jiff::Timestamp::now())
            .await
            .unwrap_err();
        assert_eq!(short.kind(), ErrorKind::Invalid, "{short}");
        let bad = store
            .accounts()
            .create(ACTOR, "no-at-sign", "Long-Enough-3", "", jiff::Timestamp::now())
            .await
            .unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::Invalid, "{bad}");
        let missing = store
            .accounts()
            .set_password(
                ACTOR,
                keyway_store::AccountId(999),
                "Long-Enough-3",
                jiff::Timestamp::now(),
            )
            .await
            .unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
        let orphan = store
            .accounts()
            .create_session(
                keyway_store::AccountId(999),
                "hash-x",
                jiff::Timestamp::now(),
                jiff::Timestamp::MAX,
            )
            .await
            .unwrap_err();
        assert_eq!(orphan.kind(), ErrorKind::ForeignKey, "{orphan}");

        // Password change.
        store
            .accounts()
            .set_password(ACTOR, account.id, "New-Password-4", jiff::Timestamp::now())
            .await
            .unwrap();
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
                .verify_password("owner@example.com", "New-Password-4")
                .await
                .unwrap()
                .is_some()
        );

        // Sessions: live, expired, disabled account, ended.
        store
            .accounts()
            .create_session(account.id, "hash-1", jiff::Timestamp::now(), crate::t(2_000))
            .await
            .unwrap();
        assert_eq!(
            store
                .accounts()
                .session_account("hash-1", crate::t(1_000))
                .await
                .unwrap(),
            Some(account.id)
        );
        assert_eq!(
            store
                .accounts()
                .session_account("hash-1", crate::t(2_000))
                .await
                .unwrap(),
            None
        );
        let again = store
            .accounts()
            .create_session(account.id, "hash-1", jiff::Timestamp::now(), crate::t(3_000))
            .await
            .unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Duplicate, "{again}");
        store
            .accounts()
            .set_disabled(ACTOR, account.id, true, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store
                .accounts()
                .session_account("hash-1", crate::t(1_000))
                .await
                .unwrap(),
            None
        );
        assert!(
            store
                .accounts()
                .verify_password("owner@example.com", "New-Password-4")
                .await
                .unwrap()
                .is_none()
        );
        store
            .accounts()
            .set_disabled(ACTOR, account.id, false, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(store.accounts().end_session("hash-1").await.unwrap());
        assert!(!store.accounts().end_session("hash-1").await.unwrap());

        // Delete: gone, audited with its last state.
        store
            .accounts()
            .create_session(account.id, "hash-2", jiff::Timestamp::now(), crate::t(2_000))
            .await
            .unwrap();
        store
            .accounts()
            .delete(ACTOR, account.id, jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(store.accounts().get(account.id).await.unwrap(), None);
        assert_eq!(
            store
                .accounts()
                .session_account("hash-2", crate::t(1_000))
                .await
                .unwrap(),
            None
        );
        let audit = store.model().audit(Some(&account.id.to_string())).await.unwrap();
        let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "create_account",
                "set_password",
                "set_account_disabled",
                "set_account_disabled",
                "delete_account"
            ]
        );
        store.close().await;
    });
}

/// A refusal the database itself raises is worded by Keyway: the text an API client reads
/// names no table, constraint or driver, and the database's own error is the `source()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_refusals_are_worded_by_keyway() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let account = store
            .accounts()
            .create(
                ACTOR,
                "refusals@example.com",
                "Correct-Horse-1",
                "",
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        store
            .accounts()
            .create_session(account.id, "same-hash", jiff::Timestamp::now(), jiff::Timestamp::MAX)
            .await
            .unwrap();
        let duplicate = store
            .accounts()
            .create_session(account.id, "same-hash", jiff::Timestamp::now(), jiff::Timestamp::MAX)
            .await
            .unwrap_err();
        let orphan = store
            .accounts()
            .create_session(
                keyway_store::AccountId(account.id.get() + 1000),
                "other-hash",
                jiff::Timestamp::now(),
                jiff::Timestamp::MAX,
            )
            .await
            .unwrap_err();
        let cases = [
            (
                duplicate,
                ErrorKind::Duplicate,
                "`record` is a duplicate: a stored record has the same unique value",
            ),
            (
                orphan,
                ErrorKind::ForeignKey,
                "`record` names unknown `referenced record`",
            ),
        ];
        for (error, kind, text) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.to_string(), text);
            let cause = std::error::Error::source(&error).expect("the database's error is kept");
            let driver_text = cause.to_string().to_lowercase();
            assert!(
                driver_text.contains("constraint") || driver_text.contains("duplicate key"),
                "{driver_text}"
            );
            for leak in ["constraint", "sessions", "sqlite", "duplicate key", "violates"] {
                assert!(
                    !error.to_string().to_lowercase().contains(leak),
                    "`{leak}` in `{error}`"
                );
            }
            assert!(error.with_causes().starts_with(text), "{}", error.with_causes());
            assert!(error.with_causes().len() > text.len());
        }
        // Nothing was lost: the first session still signs in.
        assert_eq!(
            store
                .accounts()
                .session_account("same-hash", crate::t(0))
                .await
                .unwrap(),
            Some(account.id)
        );
        store.close().await;
    });
}
