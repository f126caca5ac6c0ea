//! The site-operator FAQ's stories at the API level: a weak then a strong password, a
//! reset through the mail file, a site, a voucher, invitations of a site admin and a
//! super user, the user cap, ownership transfer; plus rate limits, sign-out, tokens,
//! decisions and metrics.

use crate::support::*;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faq_stories() {
    let h = H::new().await;

    // Sign up with a weak password: every broken rule is named.
    let (s, v) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"email": "ana@example.com", "password": "abc"})),
        )
        .await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (422, Some("weak_password")), "{v}");
    let details: Vec<&str> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "a password needs at least 8 characters",
            "a password needs an uppercase letter (A-Z)",
            "a password needs a character that is not a letter or a digit"
        ]
    );
    let (ana, ana_t) = h.account("ana@example.com").await;
    let (s, _) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"email": "ANA@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, 409, "the e-mail is taken, whatever its case");

    // Forgotten password: the same answer for a known and an unknown e-mail; the link
    // comes through the mail file, works once, and ends the old sessions.
    for email in ["ana@example.com", "nobody@example.com"] {
        let (s, v) = h
            .call("POST", "/v1/password-resets", None, Some(json!({"email": email})))
            .await;
        assert_eq!(s, 202);
        assert_eq!(
            v["message"],
            "if an account has this e-mail, a reset link is on its way"
        );
    }
    let token = h.link_token("ana@example.com").await;
    assert!(!h.mails().contains("nobody@example.com"));
    let (s, v) = h
        .call(
            "POST",
            "/v1/password-resets/confirm",
            None,
            Some(json!({"token": token, "password": "weak"})),
        )
        .await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (422, Some("weak_password")));
    let (s, _) = h
        .call(
            "POST",
            "/v1/password-resets/confirm",
            None,
            Some(json!({"token": token, "password": "New-Secret-2"})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = h
        .call(
            "POST",
            "/v1/password-resets/confirm",
            None,
            Some(json!({"token": token, "password": "Other-Secret-3"})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (422, Some("invalid_reset_token")),
        "single use"
    );
    assert_eq!(
        h.call("GET", "/v1/me", Some(&ana_t), None).await.0,
        401,
        "old sessions ended"
    );
    let (s, v) = h
        .call(
            "POST",
            "/v1/sessions",
            None,
            Some(json!({"email": "ana@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (401, Some("bad_credentials")));
    let ana_t = h.login("ana@example.com", "New-Secret-2").await;

    // Create a site: its creator owns it.
    let (s, v) = h
        .call(
            "POST",
            "/v1/sites",
            Some(&ana_t),
            Some(json!({"name": "Bakery", "time_zone": "Europe/Madrid", "holidays": ["2026-12-25"]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["revision"].as_u64().unwrap() > 0);
    assert_eq!(
        (v["site"]["role_name"].as_str(), v["site"]["owner"].as_bool()),
        (Some("owner"), Some(true))
    );
    let site = v["site"]["id"].as_u64().unwrap();

    // Without a voucher, no users.
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/sites/{site}/people"),
            Some(&ana_t),
            Some(json!({"name": "Bob"})),
        )
        .await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (422, Some("voucher_required")), "{v}");

    // The operator issues a voucher; only the operator can.
    keyway_api::create_operator(&h.node, "op@example.com", PASSWORD)
        .await
        .unwrap();
    let op_t = h.login("op@example.com", PASSWORD).await;
    let voucher = json!({"code": "bakery-2", "max_users": 2, "max_app_users": 1});
    assert_eq!(
        h.call("POST", "/v1/vouchers", Some(&ana_t), Some(voucher.clone()))
            .await
            .0,
        403
    );
    let (s, v) = h.call("POST", "/v1/vouchers", Some(&op_t), Some(voucher)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["code"], "BAKERY-2");

    // The owner redeems it; the site shows caps and counts.
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/sites/{site}/voucher"),
            Some(&ana_t),
            Some(json!({"code": "bakery-2"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = h
        .call("GET", &format!("/v1/sites/{site}/voucher"), Some(&ana_t), None)
        .await;
    assert_eq!(v["voucher"]["max_users"], 2);
    assert_eq!(v["counts"]["users"], 0);

    // Invite a site admin and a super user; they accept through the mailed links.
    let mut members = Vec::new();
    for (email, role) in [("sam@example.com", "site_admin"), ("sue@example.com", "super_user")] {
        let (s, v) = h
            .call(
                "POST",
                &format!("/v1/sites/{site}/invitations"),
                Some(&ana_t),
                Some(json!({"email": email, "role": role})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let secret = h.link_token(email).await;
        let (id, t) = h.account(email).await;
        let (s, v) = h
            .call(
                "POST",
                "/v1/invitations/accept",
                Some(&t),
                Some(json!({"token": secret})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["role_name"], role);
        let (s, v) = h
            .call(
                "POST",
                "/v1/invitations/accept",
                Some(&t),
                Some(json!({"token": secret})),
            )
            .await;
        assert_eq!(
            (s.as_u16(), v["code"].as_str()),
            (422, Some("invalid_invitation")),
            "single use"
        );
        members.push((id, t));
    }
    let (sam, sam_t) = members[0].clone();
    let (sue, sue_t) = members[1].clone();
    // A super user grants super user and basic user only.
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/sites/{site}/invitations"),
            Some(&sue_t),
            Some(json!({"email": "x@example.com", "role": "basic_user"})),
        )
        .await;
    assert_eq!(s, 403, "a super user does not invite");
    let (s, v) = h
        .call(
            "PUT",
            &format!("/v1/sites/{site}/members/{sam}/role"),
            Some(&sue_t),
            Some(json!({"role": "basic_user"})),
        )
        .await;
    assert_eq!(s, 403, "a super user does not touch a site admin: {v}");
    let (_, v) = h
        .call("GET", &format!("/v1/sites/{site}/members"), Some(&sam_t), None)
        .await;
    let roles: Vec<(i64, &str)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["account"].as_i64().unwrap(), m["role_name"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [(ana, "owner"), (sam, "site_admin"), (sue, "super_user")]);

    // Hit the user cap: the third user is refused, naming the cap and the count.
    for name in ["Bob", "Carla"] {
        let (s, v) = h
            .call(
                "POST",
                &format!("/v1/sites/{site}/people"),
                Some(&sam_t),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/sites/{site}/people"),
            Some(&sam_t),
            Some(json!({"name": "Dani"})),
        )
        .await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (422, Some("voucher_cap")), "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("allows 2 users (`max_users`) and the site has 2"),
        "{message}"
    );
    let (_, v) = h
        .call("GET", &format!("/v1/sites/{site}/voucher"), Some(&ana_t), None)
        .await;
    assert_eq!(v["counts"]["users"], 2);

    // Transfer ownership: only to a site admin, only by the owner.
    let path = format!("/v1/sites/{site}/transfer");
    let (s, v) = h.call("POST", &path, Some(&ana_t), Some(json!({"account": sue}))).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (422, Some("transfer_refused")), "{v}");
    assert_eq!(
        h.call("POST", &path, Some(&sam_t), Some(json!({"account": sam})))
            .await
            .0,
        403
    );
    let (s, v) = h.call("POST", &path, Some(&ana_t), Some(json!({"account": sam}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["owner"]["account"], sam);
    assert_eq!(v["former_owner"]["role_name"], "site_admin");
    let (_, v) = h.call("GET", "/v1/sites", Some(&ana_t), None).await;
    assert_eq!(
        (v["items"][0]["role_name"].as_str(), v["items"][0]["owner"].as_bool()),
        (Some("site_admin"), Some(false))
    );
    assert_eq!(
        h.call("POST", &path, Some(&ana_t), Some(json!({"account": sam})))
            .await
            .0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cookies_tokens_and_sign_out() {
    let h = H::new().await;
    let (_, t1) = h.account("ana@example.com").await;
    // The browser's cookie: Secure, HttpOnly, SameSite.
    let request = Request::builder()
        .method("POST")
        .uri("/v1/sessions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"email": "ana@example.com", "password": PASSWORD}).to_string(),
        ))
        .unwrap();
    let (s, headers, v) = h.send(request).await;
    assert_eq!(s, 201);
    let cookie = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(pair, format!("keyway_session={}", v["token"].as_str().unwrap()));
    let me = |c: String| {
        Request::builder()
            .uri("/v1/me")
            .header(header::COOKIE, c)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(h.send(me(pair.clone())).await.0, 200);

    // An API token: shown once, scoped, revocable; it cannot manage tokens.
    let (s, v) = h
        .call(
            "POST",
            "/v1/tokens",
            Some(&t1),
            Some(json!({"name": "ci", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    let id = v["token"]["id"].as_i64().unwrap();
    assert!(secret.starts_with("kw_"));
    let (_, v) = h.call("GET", "/v1/tokens", Some(&t1), None).await;
    assert!(v.to_string().find(&secret).is_none(), "never shown again");
    assert_eq!(h.call("GET", "/v1/me", Some(&secret), None).await.0, 200);
    assert_eq!(
        h.call(
            "POST",
            "/v1/sites",
            Some(&secret),
            Some(json!({"name": "x", "time_zone": "UTC"}))
        )
        .await
        .0,
        403
    );
    let (s, v) = h
        .call(
            "POST",
            "/v1/tokens",
            Some(&t1),
            Some(json!({"name": "x", "scopes": ["everything"]})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        h.call("DELETE", &format!("/v1/tokens/{id}"), Some(&t1), None).await.0,
        200
    );
    assert_eq!(h.call("GET", "/v1/me", Some(&secret), None).await.0, 401);

    // Sign out ends one session; sign out everywhere ends them all.
    let t2 = h.login("ana@example.com", PASSWORD).await;
    assert_eq!(h.call("DELETE", "/v1/sessions/current", Some(&t1), None).await.0, 204);
    assert_eq!(h.call("GET", "/v1/me", Some(&t1), None).await.0, 401);
    assert_eq!(h.call("GET", "/v1/me", Some(&t2), None).await.0, 200);
    assert_eq!(h.call("DELETE", "/v1/sessions", Some(&t2), None).await.0, 204);
    assert_eq!(h.call("GET", "/v1/me", Some(&t2), None).await.0, 401);
    assert_eq!(h.send(me(pair)).await.0, 401, "the cookie's session ended too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry() {
    let h = H::with(|c| keyway_api::ApiConfig {
        session_lifetime: Duration::from_secs(1),
        ..c
    })
    .await;
    let (_, t) = h.account("ana@example.com").await;
    assert_eq!(h.call("GET", "/v1/me", Some(&t), None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(h.call("GET", "/v1/me", Some(&t), None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_reset_are_rate_limited() {
    let h = H::with(|c| keyway_api::ApiConfig {
        login_limit: keyway_api::RateLimit {
            burst: 3,
            per: Duration::from_secs(60),
        },
        reset_limit: keyway_api::RateLimit {
            burst: 2,
            per: Duration::from_secs(600),
        },
        ..c
    })
    .await;
    h.account("ana@example.com").await; // one sign-in used
    let wrong = json!({"email": "ana@example.com", "password": "Wrong-Pass-1"});
    for _ in 0..2 {
        assert_eq!(h.call("POST", "/v1/sessions", None, Some(wrong.clone())).await.0, 401);
    }
    let request = || {
        Request::builder()
            .method("POST")
            .uri("/v1/sessions")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"email": "ANA@example.com", "password": PASSWORD}).to_string(),
            ))
            .unwrap()
    };
    let (s, headers, v) = h.send(request()).await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (429, Some("rate_limited")),
        "even the right password"
    );
    let retry: u64 = headers
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let reset = json!({"email": "someone@example.com"});
    for want in [202, 202, 429] {
        assert_eq!(
            h.call("POST", "/v1/password-resets", None, Some(reset.clone())).await.0,
            want
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doors_people_credentials_and_decisions() {
    let w = World::new().await;
    let t = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let (status, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/doors"),
            Some(&t),
            Some(json!({"name": "Front"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let door = v["door"]["id"].as_u64().unwrap();
    let (_, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/people"),
            Some(&t),
            Some(json!({"name": "Bob"})),
        )
        .await;
    let person = v["person"]["id"].as_u64().unwrap();
    let (status, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/credentials"),
            Some(&t),
            Some(json!({"kind": "tag", "value": "04A2197C", "person": person})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["credential"]["hint"], "…197c", "never the full UID");
    let same = json!({"kind": "tag", "value": "04a2197c"});
    let (status, v) =
        w.h.call("POST", &format!("/v1/sites/{s}/credentials"), Some(&t), Some(same))
            .await;
    assert_eq!((status.as_u16(), v["code"].as_str()), (409, Some("duplicate")), "{v}");

    let decide = |rev: Option<u64>| {
        json!({"site": s, "door": door, "credential": {"kind": "tag", "value": "04a2197c"},
               "at": "2026-11-23T09:00:00+01:00", "at_least_revision": rev})
    };
    let (status, v) = w.h.call("POST", "/v1/decide", Some(&t), Some(decide(None))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["effect"].as_str(), v["reason"].as_str()),
        (Some("deny"), Some("no_right")),
        "{v}"
    );
    let (_, v) =
        w.h.call("POST", &format!("/v1/sites/{s}/people/{person}/block"), Some(&t), None)
            .await;
    let revision = v["revision"].as_u64().unwrap();
    let (_, v) =
        w.h.call("POST", "/v1/decide", Some(&t), Some(decide(Some(revision))))
            .await;
    assert_eq!(v["reason"], "person_blocked", "{v}");
    assert!(v["revision"].as_u64().unwrap() >= revision);
    let (_, v) =
        w.h.call(
            "POST",
            "/v1/decide/batch",
            Some(&t),
            Some(json!({"requests": [decide(None), decide(None)]})),
        )
        .await;
    let decisions = v["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2);
    assert_eq!(
        decisions[0]["revision"], decisions[1]["revision"],
        "one revision per batch"
    );

    // Lists are paginated with a cursor.
    for i in 0..3 {
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/doors"),
            Some(&t),
            Some(json!({"name": format!("D{i}")})),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let (_, v) =
            w.h.call("GET", &format!("/v1/sites/{s}/doors?limit=2{q}"), Some(&t), None)
                .await;
        seen.extend(v["items"].as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.windows(2).all(|p| p[0] < p[1]));

    // The HTTP metrics name the matched route.
    let mut out = String::new();
    w.h.state.render_metrics(&mut out);
    assert!(
        out.contains("keyway_http_requests_total{route=\"/v1/decide\",method=\"POST\",status=\"200\"}"),
        "{out}"
    );
    assert!(out.contains("keyway_http_request_duration_seconds_bucket{route=\"/v1/sites/{site}/doors\",le=\"+Inf\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_docs_are_served() {
    let h = H::new().await;
    let (s, v) = h.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(v["paths"]["/v1/decide"]["post"].is_object());
    // Every error answer is documented as what the server sends: problem details under
    // `application/problem+json`, never `application/json`.
    let mut problems = 0;
    for item in v["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let content = &response["content"];
                let problem = &content["application/problem+json"]["schema"]["$ref"];
                if problem == "#/components/schemas/Problem" {
                    problems += 1;
                }
                assert_ne!(
                    content["application/json"]["schema"]["$ref"], "#/components/schemas/Problem",
                    "{status} documented as application/json"
                );
            }
        }
    }
    assert!(problems > 300, "only {problems} problem answers documented");
    let request = Request::builder().uri("/v1/docs").body(Body::empty()).unwrap();
    let (s, _, v) = h.send(request).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_str().unwrap().contains("<html"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_schedules_groups_decisions_and_entries() {
    let w = World::new().await;
    let t = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let post = |path: String, body: serde_json::Value| {
        let t = t.clone();
        let h = &w.h;
        async move { h.call("POST", &path, Some(&t), Some(body)).await }
    };
    let (_, v) = post(format!("/v1/sites/{s}/doors"), json!({"name": "Front"})).await;
    let door = v["door"]["id"].as_u64().unwrap();
    let (_, v) = post(format!("/v1/sites/{s}/people"), json!({"name": "Bob"})).await;
    let bob = v["person"]["id"].as_u64().unwrap();
    let (st, v) = post(
        format!("/v1/sites/{s}/credentials"),
        json!({"kind": "tag", "value": "04a2197c", "person": bob}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    // Nine periods are refused; a schedule needs 1 to 8.
    let nine: Vec<_> = (0..9)
        .map(|_| json!({"days": ["mon"], "start": "08:00", "end": "09:00"}))
        .collect();
    let (st, v) = post(format!("/v1/sites/{s}/schedules"), json!({"periods": nine})).await;
    assert_eq!(st, 422, "{v}");
    let (st, v) = post(
        format!("/v1/sites/{s}/schedules"),
        json!({"periods": [{"days": ["workdays"], "start": "08:00", "end": "18:00"}],
               "first_date": "2026-01-01", "last_date": "2026-12-31"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let schedule = v["id"].as_u64().unwrap();
    let (st, v) = post(
        format!("/v1/sites/{s}/groups"),
        json!({"name": "Staff", "doors": [door], "schedule": schedule, "members": [bob]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let group = v["group"]["id"].as_u64().unwrap();
    let (st, v) = post(
        format!("/v1/sites/{s}/groups"),
        json!({"name": "Bad", "doors": [w.h.door(w.other_site).await.0]}),
    )
    .await;
    assert_eq!(st, 422, "a door of another site: {v}");

    let decide =
        |at: &str| json!({"site": s, "door": door, "credential": {"kind": "tag", "value": "04a2197c"}, "at": at});
    let (_, v) = post("/v1/decide".into(), decide("2026-11-23T09:00:00+01:00")).await;
    assert_eq!(
        (v["effect"].as_str(), v["reason"].as_str()),
        (Some("allow"), Some("granted")),
        "{v}"
    );
    assert_eq!(
        (v["group"].as_u64(), v["schedule"].as_u64()),
        (Some(group), Some(schedule))
    );
    let (_, v) = post("/v1/decide".into(), decide("2026-11-22T09:00:00+01:00")).await;
    assert_eq!(v["reason"], "outside_schedule", "a Sunday: {v}");
    post(format!("/v1/sites/{s}/people/{bob}/block"), json!(null)).await;
    let (_, v) = post("/v1/decide".into(), decide("2026-11-23T09:00:00+01:00")).await;
    assert_eq!(v["reason"], "person_blocked", "{v}");

    // The entries log: the owner sees all; a basic user linked to Bob sees Bob's; one
    // linked to nobody sees nothing.
    w.h.node.store().entries().flush().await.unwrap();
    let (st, v) =
        w.h.call("GET", &format!("/v1/sites/{s}/entries?door={door}"), Some(&t), None)
            .await;
    assert_eq!(st, 200, "{v}");
    let reasons: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["person_blocked", "granted", "outside_schedule"],
        "newest first"
    );
    let (_, v) =
        w.h.call(
            "GET",
            &format!("/v1/sites/{s}/entries?door={door}&limit=2"),
            Some(&t),
            None,
        )
        .await;
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    let (_, v) =
        w.h.call(
            "GET",
            &format!("/v1/sites/{s}/entries?door={door}&limit=2&cursor={cursor}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(v["items"][0]["reason"], "outside_schedule");
    let basic = w.bearer(Who::Basic).await.unwrap();
    let (_, v) =
        w.h.call("GET", &format!("/v1/sites/{s}/entries"), Some(&basic), None)
            .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "linked to nobody");
    w.h.node
        .store()
        .memberships()
        .put(
            "test",
            w.site,
            keyway_store::AccountId(w.account(Who::Basic)),
            keyway_core::RoleId(3),
            Some(keyway_core::PersonId(bob as u32)),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let (_, v) =
        w.h.call("GET", &format!("/v1/sites/{s}/entries"), Some(&basic), None)
            .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 3, "{v}");
    let (_, v) =
        w.h.call("GET", &format!("/v1/sites/{s}/entries?person=999"), Some(&basic), None)
            .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "never someone else's");

    // Removing the schedule while a group uses it is refused; the group goes first.
    let (st, v) =
        w.h.call("DELETE", &format!("/v1/sites/{s}/schedules/{schedule}"), Some(&t), None)
            .await;
    assert_eq!((st.as_u16(), v["code"].as_str()), (409, Some("in_use")), "{v}");
    assert_eq!(
        w.h.call("DELETE", &format!("/v1/sites/{s}/groups/{group}"), Some(&t), None)
            .await
            .0,
        200
    );
    assert_eq!(
        w.h.call("DELETE", &format!("/v1/sites/{s}/schedules/{schedule}"), Some(&t), None)
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_when_configured_and_request_ids() {
    let preflight = || {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/sites")
            .header(header::ORIGIN, "https://admin.example.com")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap()
    };
    let plain = H::new().await;
    let response = tower::ServiceExt::oneshot(plain.app.clone(), preflight())
        .await
        .unwrap();
    assert!(
        response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "no CORS by default"
    );
    let (_, headers, _) = plain
        .send(Request::builder().uri("/v1/me").body(Body::empty()).unwrap())
        .await;
    assert_eq!(headers.get("x-request-id").unwrap().len(), 16);

    let cors = H::with(|c| keyway_api::ApiConfig {
        cors_origins: vec!["https://admin.example.com".into()],
        ..c
    })
    .await;
    let response = tower::ServiceExt::oneshot(cors.app.clone(), preflight()).await.unwrap();
    assert_eq!(
        response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
        "https://admin.example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_of_a_site() {
    let w = World::new().await;
    let t = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let (_, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/credentials"),
            Some(&t),
            Some(json!({"kind": "pin", "value": "4321"})),
        )
        .await;
    let credential = v["credential"]["id"].as_u64().unwrap();
    w.h.call(
        "DELETE",
        &format!("/v1/sites/{s}/credentials/{credential}"),
        Some(&t),
        None,
    )
    .await;
    let entity = format!("credential:{credential}");
    let (st, v) =
        w.h.call("GET", &format!("/v1/sites/{s}/audit?entity={entity}"), Some(&t), None)
            .await;
    assert_eq!(st, 200, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    assert!(items[0]["id"].as_i64() > items[1]["id"].as_i64(), "newest first");
    assert!(!v.to_string().contains("4321"), "the PIN is redacted: {v}");
    assert!(v.to_string().contains("<redacted>"), "{v}");
    // Another site's changes are not shown.
    let (_, v) =
        w.h.call("GET", &format!("/v1/sites/{s}/audit?limit=500"), Some(&t), None)
            .await;
    let other = format!("\"site\":{}", w.other_site.0);
    assert!(!v.to_string().contains(&other), "{v}");
    let (_, v) =
        w.h.call("GET", &format!("/v1/sites/{s}/audit?limit=1"), Some(&t), None)
            .await;
    assert!(v["next_cursor"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn door_rules_and_opening_hours() {
    let w = World::new().await;
    let t = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let door = w.door.0;
    let rule = format!("/v1/sites/{s}/doors/{door}/rule");
    let (st, v) =
        w.h.call("PUT", &rule, Some(&t), Some(json!({"rule": "no-such-rule"})))
            .await;
    assert_eq!((st.as_u16(), v["code"].as_str()), (422, Some("invalid_policy")), "{v}");
    let (st, v) =
        w.h.call("PUT", &rule, Some(&t), Some(json!({"rule": "business-hours"})))
            .await;
    assert_eq!(st, 200, "{v}");
    assert!(w.h.node.policy().door_rules().attachment(w.door).is_some());
    let hours = json!({"periods": [{"days": ["workdays"], "start": "08:00", "end": "18:00"}]});
    let (st, v) =
        w.h.call("PUT", &format!("/v1/sites/{s}/opening-hours"), Some(&t), Some(hours))
            .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = w.h.call("DELETE", &rule, Some(&t), None).await;
    assert_eq!(st, 200);
    let (st, v) = w.h.call("DELETE", &rule, Some(&t), None).await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (404, Some("not_found")),
        "no rule left: {v}"
    );
}

/// A site changes its name, time zone and holiday calendar after it was made; a bad
/// change is refused whole and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_renamed_moved_to_another_zone_and_given_holidays() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let path = format!("/v1/sites/{}", w.site.0);
    let calendar = |w: &World| {
        let store = w.h.node.store().clone();
        let site = w.site;
        async move {
            let Some(keyway_core::Record::Site(record)) =
                store.model().record(keyway_store::Target::Site(site)).await.unwrap()
            else {
                panic!("no site");
            };
            match record.holiday_calendar {
                None => None,
                Some(id) => match store.model().record(keyway_store::Target::Calendar(id)).await.unwrap() {
                    Some(keyway_core::Record::Calendar(c)) => Some(c.calendar),
                    other => panic!("{other:?}"),
                },
            }
        }
    };
    let before = w.h.fingerprint().await;
    for (body, code) in [
        (json!({}), "invalid"),
        (json!({"name": "  "}), "invalid"),
        (json!({"name": "New", "time_zone": "Mars/Olympus"}), "invalid"),
        (json!({"name": "New", "holidays": ["2026-02-30"]}), "invalid"),
        (json!({"holidays": vec!["2026-12-25"; 1001]}), "invalid"),
        (json!({"name": "New", "lockdown": true}), "invalid_body"),
    ] {
        let (status, v) = w.h.call("PATCH", &path, Some(&owner), Some(body.clone())).await;
        assert_eq!((status.as_u16(), v["code"].as_str()), (422, Some(code)), "{body}: {v}");
    }
    assert_eq!(w.h.fingerprint().await, before, "refusals store nothing");

    let (status, v) = w
        .h
        .call(
            "PATCH",
            &path,
            Some(&owner),
            Some(json!({"name": "Head office", "time_zone": "America/New_York", "holidays": ["2026-12-25", "2027-01-01"]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["site"]["name"].as_str(), v["site"]["time_zone"].as_str()),
        (Some("Head office"), Some("America/New_York"))
    );
    let revision = v["revision"].as_u64().unwrap();
    assert_eq!(
        w.h.node.store().status().applied.0,
        revision,
        "the answer carries the change's revision"
    );
    let dates = calendar(&w).await.unwrap();
    assert_eq!(dates.dates().len(), 2);
    assert!(dates.contains("2027-01-01".parse().unwrap()) && !dates.contains("2026-12-24".parse().unwrap()));
    let (status, v) =
        w.h.call("PATCH", &path, Some(&owner), Some(json!({"holidays": []})))
            .await;
    assert_eq!(status, 200, "{v}");
    assert!(calendar(&w).await.is_none(), "an empty list removes the calendar");
    let (_, v) = w.h.call("GET", &path, Some(&owner), None).await;
    assert_eq!(v["name"], "Head office");
}

/// Leaving: a member deletes their own account with its password; an owner must hand
/// the site over first. The operator disables an account (its sessions end, it cannot
/// sign in) and enables it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_deleted_by_their_holder_and_disabled_by_the_operator() {
    let w = World::new().await;
    let op = w.bearer(Who::Operator).await.unwrap();
    let owner = w.bearer(Who::Owner).await.unwrap();
    let basic = w.h.login("basic@example.com", PASSWORD).await;
    for (bearer, body, want, code) in [
        (&basic, json!({"password": "Wrong-Pass-1"}), 401, "bad_credentials"),
        (&basic, json!({}), 422, "invalid_body"),
        (&owner, json!({"password": PASSWORD}), 409, "owner"),
        (&op, json!({"password": PASSWORD}), 409, "operator_account"),
    ] {
        let (status, v) = w.h.call("DELETE", "/v1/me", Some(bearer), Some(body)).await;
        assert_eq!((status.as_u16(), v["code"].as_str()), (want, Some(code)), "{v}");
    }

    // The operator disables the basic user: the session ends, signing in is refused.
    let basic_id = w.account(Who::Basic);
    let (status, v) =
        w.h.call("POST", &format!("/v1/accounts/{basic_id}/disable"), Some(&op), None)
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(w.h.call("GET", "/v1/me", Some(&basic), None).await.0, 401);
    let (status, _) =
        w.h.call(
            "POST",
            "/v1/sessions",
            None,
            Some(json!({"email": "basic@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 401, "a disabled account cannot sign in");
    let (status, v) =
        w.h.call(
            "POST",
            &format!("/v1/accounts/{}/disable", w.account(Who::Operator)),
            Some(&op),
            None,
        )
        .await;
    assert_eq!((status.as_u16(), v["code"].as_str()), (409, Some("own_account")), "{v}");
    let (status, v) = w.h.call("POST", "/v1/accounts/999999/disable", Some(&op), None).await;
    assert_eq!((status.as_u16(), v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (status, _) =
        w.h.call("POST", &format!("/v1/accounts/{basic_id}/enable"), Some(&op), None)
            .await;
    assert_eq!(status, 200);

    // Enabled again, the basic user leaves for good; the site's members no longer list them.
    let basic = w.h.login("basic@example.com", PASSWORD).await;
    let (status, _) =
        w.h.call("DELETE", "/v1/me", Some(&basic), Some(json!({"password": PASSWORD})))
            .await;
    assert_eq!(status, 204);
    assert_eq!(w.h.call("GET", "/v1/me", Some(&basic), None).await.0, 401);
    let (_, members) =
        w.h.call("GET", &format!("/v1/sites/{}/members", w.site.0), Some(&owner), None)
            .await;
    assert!(
        members["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["account"] != basic_id),
        "{members}"
    );
}
