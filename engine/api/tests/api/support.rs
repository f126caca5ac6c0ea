//! Test support: a real node over a temporary SQLite database with the repository's
//! default bundle, the app driven with `oneshot`, and a small world of callers.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use keyway_api::{ApiConfig, AppState, RateLimit, app};
use keyway_core::*;
use keyway_node::{Node, NodeConfig};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tempfile::TempDir;
use tower::ServiceExt;

pub const PASSWORD: &str = "Correct-Horse-1";

pub struct H {
    pub app: Router,
    pub state: AppState,
    pub node: Node,
    pub mail: PathBuf,
    _dir: TempDir,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique suffix.
pub fn unique() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub fn bundle_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/default")
}

pub fn config(dir: &TempDir) -> ApiConfig {
    ApiConfig {
        mail_file: dir.path().join("mail.log"),
        login_limit: RateLimit {
            burst: 100_000,
            per: Duration::from_millis(1),
        },
        reset_limit: RateLimit {
            burst: 100_000,
            per: Duration::from_millis(1),
        },
        max_body_bytes: 64 * 1024,
        ..ApiConfig::default()
    }
}

impl H {
    pub async fn new() -> H {
        Self::with(|c| c).await
    }

    pub async fn with(tweak: impl FnOnce(ApiConfig) -> ApiConfig) -> H {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keyway.db").display());
        let mut nc = NodeConfig::new(url);
        nc.bundle_dir = Some(bundle_dir());
        let node = Node::open(nc).await.unwrap();
        let config = tweak(config(&dir));
        let mail = config.mail_file.clone();
        let state = AppState::new(node.clone(), config).unwrap();
        H {
            app: app(state.clone()),
            state,
            node,
            mail,
            _dir: dir,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        if !status.is_success() {
            // Every error answer is a problem document.
            assert_eq!(
                headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                Some("application/problem+json"),
                "{status} {value}"
            );
            assert_eq!(value["status"], status.as_u16(), "{value}");
            assert!(value["code"].is_string() && value["message"].is_string(), "{value}");
            assert_eq!(value.get("request_id").is_some(), status.is_server_error(), "{value}");
        }
        (status, headers, value)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let (s, _, v) = self.send(request).await;
        (s, v)
    }

    /// Sign up and sign in; the session's bearer token.
    pub async fn account(&self, email: &str) -> (i64, String) {
        let (s, v) = self
            .call(
                "POST",
                "/v1/accounts",
                None,
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["id"].as_i64().unwrap();
        (id, self.login(email, PASSWORD).await)
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/v1/sessions",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// The mails sent so far.
    pub fn mails(&self) -> String {
        std::fs::read_to_string(&self.mail).unwrap_or_default()
    }

    /// The last `token=` link sent to `email`.
    pub async fn link_token(&self, email: &str) -> String {
        for _ in 0..200 {
            let mails = self.mails();
            let found = mails
                .split("\n.\n")
                .filter(|m| m.contains(&format!("To: {email}\n")))
                .filter_map(|m| m.split("token=").nth(1))
                .map(|t| t.split_whitespace().next().unwrap().to_owned())
                .last();
            if let Some(t) = found {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no mail with a link to {email}:\n{}", self.mails());
    }

    /// A site made directly in the store (no owner).
    pub async fn bare_site(&self) -> SiteId {
        SiteId(
            self.node
                .store()
                .model()
                .create(
                    "test",
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

    pub async fn door(&self, site: SiteId) -> DoorId {
        DoorId(
            self.node
                .store()
                .model()
                .create(
                    "test",
                    Record::Door(DoorRecord {
                        id: DoorId(0),
                        site,
                        iq: None,
                        mode: DoorMode::Normal,
                        lockdown: false,
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        )
    }

    pub async fn person(&self, site: SiteId) -> PersonId {
        PersonId(
            self.node
                .store()
                .model()
                .create(
                    "test",
                    Record::Person(PersonRecord {
                        id: PersonId(0),
                        site,
                        role: RoleId(3),
                        blocked: false,
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        )
    }

    pub async fn credential(&self, site: SiteId, secret: Vec<u8>, owner: Option<PersonId>) -> CredentialId {
        CredentialId(
            self.node
                .store()
                .model()
                .create(
                    "test",
                    Record::Credential(CredentialRecord {
                        id: CredentialId(0),
                        site,
                        kind: CredentialKind::Tag,
                        secret,
                        owner,
                        valid_from: None,
                        valid_until: None,
                        offline_access: false,
                        revoked: false,
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        )
    }

    pub async fn schedule(&self, site: SiteId) -> ScheduleId {
        ScheduleId(
            self.node
                .store()
                .model()
                .create(
                    "test",
                    Record::Schedule(ScheduleRecord {
                        id: ScheduleId(0),
                        site,
                        schedule: Schedule::always(),
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        )
    }

    pub async fn group(&self, site: SiteId) -> GroupId {
        GroupId(
            self.node
                .store()
                .model()
                .create(
                    "test",
                    Record::Group(GroupRecord {
                        id: GroupId(0),
                        site,
                        doors: vec![],
                        schedule: None,
                        members: vec![],
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        )
    }

    /// A fingerprint of the stored data: the revision and the audit rows.
    pub async fn fingerprint(&self) -> (Revision, usize) {
        let store = self.node.store();
        (store.status().applied, store.model().audit(None).await.unwrap().len())
    }
}

/// The caller kinds of the authorisation matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Anonymous,
    Basic,
    Super,
    Admin,
    Owner,
    Other,
    Operator,
    TokenRead,
    TokenDecide,
    TokenAdmin,
}

pub const EVERYONE: [Who; 10] = [
    Who::Anonymous,
    Who::Basic,
    Who::Super,
    Who::Admin,
    Who::Owner,
    Who::Other,
    Who::Operator,
    Who::TokenRead,
    Who::TokenDecide,
    Who::TokenAdmin,
];

/// The world of the matrix: one site with a member of each role, another site, an
/// operator, and the owner's API tokens.
pub struct World {
    pub h: H,
    pub site: SiteId,
    pub other_site: SiteId,
    pub door: DoorId,
    pub accounts: Vec<(Who, i64)>,
    pub tokens: Vec<(Who, String)>,
}

impl World {
    pub async fn new() -> World {
        Self::with(|c| c).await
    }

    /// The world on an API configured by `tweak`.
    pub async fn with(tweak: impl FnOnce(ApiConfig) -> ApiConfig) -> World {
        let h = H::with(tweak).await;
        let (owner, owner_t) = h.account("owner@example.com").await;
        let (s, v) = h
            .call(
                "POST",
                "/v1/sites",
                Some(&owner_t),
                Some(json!({"name": "HQ", "time_zone": "Europe/Madrid"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let site = SiteId(v["site"]["id"].as_u64().unwrap() as u32);
        let store = h.node.store();
        let mut accounts = vec![(Who::Owner, owner)];
        for (who, email, role) in [
            (Who::Basic, "basic@example.com", 3),
            (Who::Super, "super@example.com", 2),
            (Who::Admin, "admin@example.com", 1),
        ] {
            let (id, _) = h.account(email).await;
            store
                .memberships()
                .put(
                    "test",
                    site,
                    keyway_store::AccountId(id),
                    RoleId(role),
                    None,
                    jiff::Timestamp::now(),
                )
                .await
                .unwrap();
            accounts.push((who, id));
        }
        let (other, other_t) = h.account("other@example.com").await;
        let (s, v) = h
            .call(
                "POST",
                "/v1/sites",
                Some(&other_t),
                Some(json!({"name": "Elsewhere", "time_zone": "UTC"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let other_site = SiteId(v["site"]["id"].as_u64().unwrap() as u32);
        accounts.push((Who::Other, other));
        let op = keyway_api::create_operator(&h.node, "operator@example.com", PASSWORD)
            .await
            .unwrap();
        accounts.push((Who::Operator, op.id.get()));
        store
            .memberships()
            .create_voucher("test", "BIG-1", 100_000, 100_000, None, None, jiff::Timestamp::now())
            .await
            .unwrap();
        store
            .memberships()
            .redeem_voucher("test", "BIG-1", site, crate::t(0))
            .await
            .unwrap();
        let door = h.door(site).await;
        let mut tokens = Vec::new();
        for (who, scopes) in [
            (Who::TokenRead, vec!["read"]),
            (Who::TokenDecide, vec!["decide"]),
            (Who::TokenAdmin, vec!["admin"]),
        ] {
            let scopes: Vec<String> = scopes.into_iter().map(String::from).collect();
            let (_, issued) = store
                .accounts()
                .create_token(
                    "test",
                    keyway_store::AccountId(owner),
                    Some(site),
                    "t",
                    &scopes,
                    None,
                    jiff::Timestamp::now(),
                )
                .await
                .unwrap();
            tokens.push((who, issued.secret));
        }
        World {
            h,
            site,
            other_site,
            door,
            accounts,
            tokens,
        }
    }

    pub fn account(&self, who: Who) -> i64 {
        let who = match who {
            Who::Anonymous | Who::TokenRead | Who::TokenDecide | Who::TokenAdmin => Who::Owner,
            w => w,
        };
        self.accounts.iter().find(|(w, _)| *w == who).unwrap().1
    }

    /// A bearer for `who`: a fresh session for people (so signing out in one call does
    /// not end the next), the token for tokens.
    pub async fn bearer(&self, who: Who) -> Option<String> {
        match who {
            Who::Anonymous => None,
            Who::TokenRead | Who::TokenDecide | Who::TokenAdmin => {
                Some(self.tokens.iter().find(|(w, _)| *w == who).unwrap().1.clone())
            }
            _ => {
                let secret = format!("ks_test{}", unique());
                let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()));
                self.h
                    .node
                    .store()
                    .accounts()
                    .create_session(
                        keyway_store::AccountId(self.account(who)),
                        &hash,
                        jiff::Timestamp::now(),
                        crate::t(jiff::Timestamp::now().as_second() + 3600),
                    )
                    .await
                    .unwrap();
                Some(secret)
            }
        }
    }
}
