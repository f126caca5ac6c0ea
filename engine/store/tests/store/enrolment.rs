//! IQ enrolment records on both backends: one-time codes (hashed, expiring, single use,
//! replaced by a newer one) and the certificate serial last issued to an IQ, revoked by
//! forgetting it. Each is checked for its refusals and its audit rows.

use crate::support::*;
use keyway_core::*;
use keyway_store::{ErrorKind, StoreError};

fn hash(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn kind<T: std::fmt::Debug>(r: Result<T, StoreError>) -> ErrorKind {
    r.unwrap_err().kind()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_codes_and_certificates() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let now = jiff::Timestamp::now().as_second();
        let later = now + 3600;

        // Refusals leave nothing behind.
        let refusals = [
            (
                kind(
                    store
                        .devices()
                        .issue_enrolment_code(ACTOR, ids.iq, "abc", crate::t(later), jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .devices()
                        .issue_enrolment_code(ACTOR, ids.iq, &hash('A'), crate::t(later), jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .devices()
                        .issue_enrolment_code(ACTOR, ids.iq, &hash('a'), crate::t(now - 1), jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::Invalid,
            ),
            (
                kind(
                    store
                        .devices()
                        .issue_enrolment_code(ACTOR, IqId(999), &hash('a'), crate::t(later), jiff::Timestamp::now())
                        .await,
                ),
                ErrorKind::NotFound,
            ),
        ];
        for (i, (got, want)) in refusals.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(
            store
                .devices()
                .redeem_enrolment_code(&hash('a'), crate::t(now))
                .await
                .unwrap(),
            None
        );

        // A code redeems once, for its site and IQ.
        store
            .devices()
            .issue_enrolment_code(ACTOR, ids.iq, &hash('a'), crate::t(later), jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store
                .devices()
                .redeem_enrolment_code("not a hash", crate::t(now))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .devices()
                .redeem_enrolment_code(&hash('a'), crate::t(now))
                .await
                .unwrap(),
            Some((ids.site, ids.iq))
        );
        assert_eq!(
            store
                .devices()
                .redeem_enrolment_code(&hash('a'), crate::t(now))
                .await
                .unwrap(),
            None
        );

        // An expired code does not redeem; a newer code replaces an unused one.
        store
            .devices()
            .issue_enrolment_code(ACTOR, ids.iq, &hash('b'), crate::t(later), jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store
                .devices()
                .redeem_enrolment_code(&hash('b'), crate::t(later))
                .await
                .unwrap(),
            None
        );
        store
            .devices()
            .issue_enrolment_code(ACTOR, ids.iq, &hash('c'), crate::t(later), jiff::Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            store
                .devices()
                .redeem_enrolment_code(&hash('b'), crate::t(now))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .devices()
                .redeem_enrolment_code(&hash('c'), crate::t(now))
                .await
                .unwrap(),
            Some((ids.site, ids.iq))
        );

        // The IQ's profile: its site and paired doors.
        let (site, doors) = store.devices().profile(ids.iq).await.unwrap().unwrap();
        assert_eq!(site, ids.site);
        assert!(doors.contains(&ids.door), "{doors:?}");
        assert_eq!(store.devices().profile(IqId(999)).await.unwrap(), None);

        // Certificates: the last serial recorded is the one in force.
        assert_eq!(store.devices().certificate(ids.iq).await.unwrap(), None);
        assert_eq!(
            kind(
                store
                    .devices()
                    .record_certificate(ACTOR, ids.iq, "", crate::t(later), jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(
                store
                    .devices()
                    .record_certificate(ACTOR, ids.iq, "0x1F", crate::t(later), jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(
                store
                    .devices()
                    .record_certificate(ACTOR, IqId(999), "01", crate::t(later), jiff::Timestamp::now())
                    .await
            ),
            ErrorKind::ForeignKey
        );
        store
            .devices()
            .record_certificate(ACTOR, ids.iq, "01ab", crate::t(later), jiff::Timestamp::now())
            .await
            .unwrap();
        store
            .devices()
            .record_certificate(ACTOR, ids.iq, "02cd", crate::t(later), jiff::Timestamp::now())
            .await
            .unwrap();
        let cert = store.devices().certificate(ids.iq).await.unwrap().unwrap();
        assert_eq!(
            (cert.iq, cert.serial.as_str(), cert.not_after),
            (ids.iq, "02cd", crate::t(later))
        );

        // Revoking forgets the serial and the unused codes.
        store
            .devices()
            .issue_enrolment_code(ACTOR, ids.iq, &hash('d'), crate::t(later), jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(
            store
                .devices()
                .revoke_certificate(ACTOR, ids.iq, jiff::Timestamp::now())
                .await
                .unwrap()
        );
        assert_eq!(store.devices().certificate(ids.iq).await.unwrap(), None);
        assert_eq!(
            store
                .devices()
                .redeem_enrolment_code(&hash('d'), crate::t(now))
                .await
                .unwrap(),
            None
        );
        assert!(
            !store
                .devices()
                .revoke_certificate(ACTOR, ids.iq, jiff::Timestamp::now())
                .await
                .unwrap()
        );

        // Audited, and no code or hash in the audit log.
        let audit = store.model().audit(Some(&format!("iq:{}", ids.iq.0))).await.unwrap();
        let actions: Vec<&str> = audit
            .iter()
            .map(|a| a.action.as_str())
            .filter(|a| a.contains("enrolment") || a.contains("certificate"))
            .collect();
        assert_eq!(
            actions,
            [
                "issue_enrolment_code",
                "redeem_enrolment_code",
                "issue_enrolment_code",
                "issue_enrolment_code",
                "redeem_enrolment_code",
                "issue_iq_certificate",
                "issue_iq_certificate",
                "issue_enrolment_code",
                "revoke_iq_certificate",
                "revoke_iq_certificate",
            ]
        );
        for row in &audit {
            let text = format!("{row:?}");
            for c in ['a', 'b', 'c', 'd'] {
                assert!(!text.contains(&hash(c)), "{text}");
            }
        }
        store.close().await;
    });
}
