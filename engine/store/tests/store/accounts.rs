//! Accounts and sessions on both backends: argon2id hashes, typed errors, audit.

use crate::support::*;
use keyway_store::ErrorKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_sessions() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let account = store
            .create_account(ACTOR, " Owner@Example.com ", "Correct-Horse-1", "Owner")
            .await
            .unwrap();
        assert_eq!(account.email, "owner@example.com");
        assert_eq!(store.account(account.id).await.unwrap(), Some(account.clone()));

        // The hash is argon2id, never the password.
        let audit = store.audit(Some(&format!("account:{}", account.id))).await.unwrap();
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
            let got = store.verify_password(email, password).await.unwrap();
            assert_eq!(got.is_some(), ok, "{email} / {password}");
        }

        // Typed errors.
        let dup = store
            .create_account(ACTOR, "owner@example.com", "Another-Pass-2", "")
            .await
            .unwrap_err();
        assert_eq!(dup.kind(), ErrorKind::Duplicate, "{dup}");
        let short = store
            .create_account(ACTOR, "x@example.com", "short", "")
            .await
            .unwrap_err();
        assert_eq!(short.kind(), ErrorKind::Invalid, "{short}");
        let bad = store
            .create_account(ACTOR, "no-at-sign", "Long-Enough-3", "")
            .await
            .unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::Invalid, "{bad}");
        let missing = store.set_password(ACTOR, 999, "Long-Enough-3").await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
        let orphan = store.create_session(999, "hash-x", i64::MAX).await.unwrap_err();
        assert_eq!(orphan.kind(), ErrorKind::ForeignKey, "{orphan}");

        // Password change.
        store.set_password(ACTOR, account.id, "New-Password-4").await.unwrap();
        assert!(
            store
                .verify_password("owner@example.com", "Correct-Horse-1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_password("owner@example.com", "New-Password-4")
                .await
                .unwrap()
                .is_some()
        );

        // Sessions: live, expired, disabled account, ended.
        store.create_session(account.id, "hash-1", 2_000).await.unwrap();
        assert_eq!(store.session_account("hash-1", 1_000).await.unwrap(), Some(account.id));
        assert_eq!(store.session_account("hash-1", 2_000).await.unwrap(), None);
        let again = store.create_session(account.id, "hash-1", 3_000).await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Duplicate, "{again}");
        store.set_account_disabled(ACTOR, account.id, true).await.unwrap();
        assert_eq!(store.session_account("hash-1", 1_000).await.unwrap(), None);
        assert!(
            store
                .verify_password("owner@example.com", "New-Password-4")
                .await
                .unwrap()
                .is_none()
        );
        store.set_account_disabled(ACTOR, account.id, false).await.unwrap();
        assert!(store.end_session("hash-1").await.unwrap());
        assert!(!store.end_session("hash-1").await.unwrap());

        // Delete: gone, audited with its last state.
        store.create_session(account.id, "hash-2", 2_000).await.unwrap();
        store.delete_account(ACTOR, account.id).await.unwrap();
        assert_eq!(store.account(account.id).await.unwrap(), None);
        assert_eq!(store.session_account("hash-2", 1_000).await.unwrap(), None);
        let audit = store.audit(Some(&format!("account:{}", account.id))).await.unwrap();
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
            .create_account(ACTOR, "refusals@example.com", "Correct-Horse-1", "")
            .await
            .unwrap();
        store.create_session(account.id, "same-hash", i64::MAX).await.unwrap();
        let duplicate = store
            .create_session(account.id, "same-hash", i64::MAX)
            .await
            .unwrap_err();
        let orphan = store
            .create_session(account.id + 1000, "other-hash", i64::MAX)
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
        assert_eq!(store.session_account("same-hash", 0).await.unwrap(), Some(account.id));
        store.close().await;
    });
}
