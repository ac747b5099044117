//! Shared Signals: other applications hear when a sign-in ends (the transmitter), and an identity
//! provider Lectern trusts can end a learner's sign-ins (the receiver). The receivers and the
//! transmitter here are the tests' own, on loopback.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use rsa::{RsaPrivateKey, pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
use serde_json::{Value, json};

use crate::helpers::*;

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const ACCOUNT_PURGED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-purged";
const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
const STREAM_UPDATED: &str = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";

/// One SET a receiver was pushed.
#[derive(Clone)]
struct Got {
    token: String,
    authorization: Option<String>,
    content_type: Option<String>,
}

/// A push receiver on loopback: keeps every SET it is sent and answers 202, or 503 while down.
struct PushReceiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    up: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Inbox {
    got: Arc<Mutex<Vec<Got>>>,
    up: Arc<AtomicBool>,
}

async fn take(State(inbox): State<Inbox>, headers: HeaderMap, body: String) -> StatusCode {
    if !inbox.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    inbox.got.lock().unwrap().push(Got {
        token: body,
        authorization: header("authorization"),
        content_type: header("content-type"),
    });
    StatusCode::ACCEPTED
}

impl PushReceiver {
    async fn start() -> Self {
        let inbox = Inbox {
            got: Arc::new(Mutex::new(Vec::new())),
            up: Arc::new(AtomicBool::new(true)),
        };
        let router = Router::new()
            .route("/events", post(take))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}/events"),
            got: inbox.got,
            up: inbox.up,
        }
    }

    fn received(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
    }

    fn back(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// The claims of a SET, unverified (what the receiver would read before checking).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn event_type(claims: &Value) -> String {
    let events = claims["events"].as_object().unwrap();
    assert_eq!(events.len(), 1, "one event per SET: {claims}");
    events.keys().next().unwrap().clone()
}

/// A receiver registered by an operator: its client id, secret and audience.
struct Registered {
    id: String,
    secret: String,
    audience: String,
}

async fn registered(app: &TestApp) -> Registered {
    let (client, secret) = lectern::ssf::clients::create(
        &app.state.db,
        "test receiver",
        Some("https://receiver.example.test"),
        app.clock.now(),
    )
    .await
    .unwrap();
    Registered {
        id: client.id,
        secret,
        audience: client.audience,
    }
}

/// A bearer token for the receiver (client credentials in the form).
async fn bearer(app: &TestApp, receiver: &Registered) -> String {
    let response = app
        .server
        .post("/ssf/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", receiver.id.as_str()),
            ("client_secret", receiver.secret.as_str()),
        ])
        .await;
    assert_eq!(
        response.status_code(),
        StatusCode::OK,
        "{}",
        response.text()
    );
    response.json::<Value>()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn create_stream(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app
        .server
        .post("/ssf/streams")
        .authorization_bearer(token)
        .json(&body)
        .await;
    assert_eq!(
        response.status_code(),
        StatusCode::CREATED,
        "{}",
        response.text()
    );
    response.json()
}

async fn push_stream(app: &TestApp, token: &str, url: &str) -> Value {
    create_stream(
        app,
        token,
        json!({
            "delivery": {
                "method": "urn:ietf:rfc:8935",
                "endpoint_url": url,
                "authorization_header": "Bearer receiver-secret",
            },
            "description": "every way a sign-in ends",
        }),
    )
    .await
}

/// One pass of the outbox worker, as every instance runs it.
async fn deliver(app: &TestApp) {
    lectern::ssf::outbox::work_once(&app.state.ssf, "test")
        .await
        .unwrap();
}

/// Checks a SET as a careful receiver does (type, algorithm, signature against the published
/// keys, issuer, audience, no `sub` or `exp`) and returns its claims.
async fn verified(app: &TestApp, token: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    assert_eq!(header.alg, Algorithm::RS256);
    let keys: JwkSet = app.server.get("/ssf/jwks").await.json();
    let kid = header.kid.expect("a kid");
    let jwk = keys
        .keys
        .iter()
        .find(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
        .expect("the key is published");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[app.state.ssf.issuer.as_str()]);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .expect("a valid signature")
            .claims;
    assert!(
        claims.get("sub").is_none() && claims.get("exp").is_none(),
        "{claims}"
    );
    for claim in ["jti", "iat", "txn", "sub_id"] {
        assert!(claims.get(claim).is_some(), "{claim} in {claims}");
    }
    claims
}

async fn change_password(app: &TestApp, new: &str) -> axum_test::TestResponse {
    let token = app.csrf("/account").await;
    app.server
        .post("/account/password")
        .form(&[
            ("csrf_token", token.as_str()),
            ("current_password", PASSWORD),
            ("new_password", new),
        ])
        .await
}

async fn user_of(app: &TestApp, email: &str) -> lectern::accounts::User {
    let parsed = lectern::accounts::Email::parse(email).unwrap();
    lectern::accounts::find_by_email(&app.state.db, &parsed)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn the_transmitter_publishes_its_metadata_and_a_strong_key() {
    let app = spawn_app().await;
    let metadata: Value = app
        .server
        .get("/.well-known/ssf-configuration")
        .await
        .json();
    let issuer = app.state.ssf.issuer.clone();
    assert_eq!(metadata["spec_version"], "1_0");
    assert_eq!(metadata["issuer"], issuer.as_str());
    assert_eq!(
        metadata["delivery_methods_supported"],
        json!(["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"])
    );
    assert_eq!(
        metadata["authorization_schemes"],
        json!([{"spec_urn": "urn:ietf:rfc:6749"}])
    );
    assert_eq!(metadata["default_subjects"], "ALL");
    for endpoint in [
        "jwks_uri",
        "configuration_endpoint",
        "status_endpoint",
        "verification_endpoint",
        "token_endpoint",
    ] {
        let url = metadata[endpoint].as_str().unwrap();
        assert!(url.starts_with(&issuer), "{endpoint}: {url}");
    }
    let keys: Value = app.server.get("/ssf/jwks").await.json();
    let key = &keys["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    let modulus = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    assert!(modulus.len() * 8 >= 2048, "{} bits", modulus.len() * 8);
    // The same key from a second read, and from a second instance.
    let again: Value = app.server.get("/ssf/jwks").await.json();
    assert_eq!(keys, again);
    if real_services() {
        let peer = spawn_peer(&app).await;
        let theirs: Value = peer.server.get("/ssf/jwks").await.json();
        assert_eq!(keys, theirs);
    }
}

/// Every way a sign-in ends sends exactly one `session-revoked` per ended sign-in, signed and
/// shaped as SSF and CAEP say; a password change also sends `credential-change` with the same
/// `txn`; disabling and deleting an account send the RISC events.
#[tokio::test]
async fn every_way_a_sign_in_ends_tells_the_receiver_once_per_sign_in() {
    let app = spawn_app().await;
    let receiver = PushReceiver::start().await;
    let client = registered(&app).await;
    let token = bearer(&app, &client).await;
    push_stream(&app, &token, &receiver.url).await;
    let mut ended: Vec<(String, &str)> = Vec::new();

    // A browser signs out; an API client signs out.
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    ended.push((app.sid_of(&access), "signed_out"));
    assert_eq!(
        app.api_logout(Some(&access), Some(&refresh))
            .await
            .status_code(),
        StatusCode::NO_CONTENT
    );
    let browser = app
        .state
        .sign_ins
        .live(Some(&user_of(&app, &email).await.id))
        .await
        .unwrap();
    assert_eq!(browser.len(), 1);
    ended.push((browser[0].id.clone(), "signed_out"));
    assert_eq!(app.sign_out_htmx().await.status_code(), StatusCode::OK);

    // A password change ends the other sign-in and replaces this browser's.
    let email = app.signed_up().await;
    let learner = user_of(&app, &email).await;
    let (other, _) = app.api_login(&email).await;
    let own = app.state.sign_ins.live(Some(&learner.id)).await.unwrap();
    let own = own
        .iter()
        .find(|s| s.id != app.sid_of(&other))
        .unwrap()
        .id
        .clone();
    ended.push((app.sid_of(&other), "password_changed"));
    ended.push((own, "password_changed"));
    let changed = change_password(&app, "another long passphrase for this").await;
    assert_eq!(
        changed.status_code(),
        StatusCode::SEE_OTHER,
        "{}",
        changed.text()
    );
    // This browser's new sign-in ends when the next learner signs up in it.
    let renewed = app.state.sign_ins.live(Some(&learner.id)).await.unwrap();
    ended.push((renewed[0].id.clone(), "replaced"));

    // An operator ends one; an idle timeout ends one.
    let email = app.signed_up().await;
    let (revoked, _) = app.api_login(&email).await;
    ended.push((app.sid_of(&revoked), "revoked"));
    app.state
        .sign_out
        .operator(&app.sid_of(&revoked), &lectern::web::ClientInfo::operator())
        .await
        .unwrap();
    let idle = app
        .state
        .sign_ins
        .live(Some(&user_of(&app, &email).await.id))
        .await
        .unwrap();
    ended.push((idle[0].id.clone(), "idle"));
    app.advance(u64::try_from(app.state.lifetimes.idle).unwrap() + 1);
    let lapsed = app.server.get("/dashboard").await;
    assert!(
        lapsed
            .header("location")
            .to_str()
            .unwrap()
            .contains("reason=idle")
    );

    // An account disabled, an account deleted.
    let disabled = app.signed_up().await;
    let disabled = user_of(&app, &disabled).await;
    let sid = app.state.sign_ins.live(Some(&disabled.id)).await.unwrap()[0]
        .id
        .clone();
    ended.push((sid, "revoked"));
    let operator = lectern::web::ClientInfo::operator();
    app.state
        .leaving
        .disable(&disabled.id, &operator)
        .await
        .unwrap();
    let deleted = app.signed_up().await;
    let deleted = user_of(&app, &deleted).await;
    let sid = app.state.sign_ins.live(Some(&deleted.id)).await.unwrap()[0]
        .id
        .clone();
    ended.push((sid, "account_deleted"));
    app.state
        .leaving
        .delete(&deleted.id, &operator)
        .await
        .unwrap();

    deliver(&app).await;
    let got = receiver.received();
    let mut sets = Vec::new();
    for push in &got {
        assert_eq!(
            push.content_type.as_deref(),
            Some("application/secevent+jwt")
        );
        assert_eq!(
            push.authorization.as_deref(),
            Some("Bearer receiver-secret")
        );
        sets.push(verified(&app, &push.token, &client.audience).await);
    }
    let revoked: Vec<&Value> = sets
        .iter()
        .filter(|c| event_type(c) == SESSION_REVOKED)
        .collect();
    let mut sessions: Vec<String> = revoked
        .iter()
        .map(|c| c["sub_id"]["session"]["id"].as_str().unwrap().to_owned())
        .collect();
    sessions.sort();
    let mut expected: Vec<String> = ended.iter().map(|(sid, _)| sid.clone()).collect();
    expected.sort();
    assert_eq!(sessions, expected, "one session-revoked per ended sign-in");
    for claims in &revoked {
        let sid = claims["sub_id"]["session"]["id"].as_str().unwrap();
        assert_eq!(claims["sub_id"]["format"], "complex");
        assert_eq!(claims["sub_id"]["user"]["format"], "iss_sub");
        let event = &claims["events"][SESSION_REVOKED];
        assert!(event["event_timestamp"].is_i64());
        assert!(
            event["reason_admin"]["en"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
        );
        assert!(event["reason_user"]["en"].is_string());
        let initiator = event["initiating_entity"].as_str().unwrap();
        let reason = ended.iter().find(|(s, _)| s == sid).unwrap().1;
        let expected = match reason {
            "revoked" | "account_deleted" => "admin",
            "replaced" => "user",
            "idle" => "policy",
            _ => "user",
        };
        assert_eq!(initiator, expected, "{reason}: {claims}");
    }
    let of = |uri: &str| {
        sets.iter()
            .filter(|c| event_type(c) == uri)
            .collect::<Vec<_>>()
    };
    let change = of(CREDENTIAL_CHANGE);
    assert_eq!(change.len(), 1);
    assert_eq!(
        change[0]["events"][CREDENTIAL_CHANGE]["credential_type"],
        "password"
    );
    assert_eq!(
        change[0]["events"][CREDENTIAL_CHANGE]["change_type"],
        "update"
    );
    let by_password: Vec<&&Value> = revoked
        .iter()
        .filter(|c| {
            ended.iter().any(|(s, r)| {
                *r == "password_changed" && c["sub_id"]["session"]["id"] == s.as_str()
            })
        })
        .collect();
    assert_eq!(by_password.len(), 2);
    for claims in by_password {
        assert_eq!(
            claims["txn"], change[0]["txn"],
            "one txn for one password change"
        );
    }
    assert_eq!(of(ACCOUNT_DISABLED).len(), 1);
    assert_eq!(
        of(ACCOUNT_DISABLED)[0]["sub_id"]["sub"],
        disabled.id.as_str()
    );
    assert_eq!(of(ACCOUNT_PURGED).len(), 1);
    assert_eq!(of(ACCOUNT_PURGED)[0]["sub_id"]["sub"], deleted.id.as_str());
    // Delivered, so nothing is pending and nothing is sent again.
    deliver(&app).await;
    assert_eq!(receiver.received().len(), got.len());
    let jtis: std::collections::HashSet<&str> =
        sets.iter().map(|c| c["jti"].as_str().unwrap()).collect();
    assert_eq!(jtis.len(), sets.len(), "every jti is unique");
}

/// A receiver that is down gets every event once it is back, in the order they happened, after
/// the transmitter backed off.
#[tokio::test]
async fn a_receiver_that_was_down_gets_its_events_in_order_once_it_is_back() {
    let app = spawn_app().await;
    let receiver = PushReceiver::start().await;
    let client = registered(&app).await;
    let token = bearer(&app, &client).await;
    push_stream(&app, &token, &receiver.url).await;
    receiver.down();
    let email = app.signed_up().await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let (access, refresh) = app.api_login(&email).await;
        order.push(app.sid_of(&access));
        app.api_logout(Some(&access), Some(&refresh)).await;
    }
    deliver(&app).await;
    assert!(receiver.received().is_empty());
    // Backing off: a pass before the wait is over sends nothing, even with the receiver back.
    receiver.back();
    deliver(&app).await;
    assert!(
        receiver.received().is_empty(),
        "it waits before trying again"
    );
    app.advance(5);
    deliver(&app).await;
    let sessions: Vec<String> = receiver
        .received()
        .iter()
        .map(|g| {
            claims_of(&g.token)["sub_id"]["session"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(sessions, order);
}

/// Poll delivery (RFC 8936): the receiver gets pending SETs, acknowledges some and reports an
/// error for another; neither comes again, and what it did not acknowledge does.
#[tokio::test]
async fn a_poll_receiver_fetches_acknowledges_and_reports_errors() {
    let app = spawn_app().await;
    let client = registered(&app).await;
    let token = bearer(&app, &client).await;
    let stream = create_stream(
        &app,
        &token,
        json!({"delivery": {"method": "urn:ietf:rfc:8936"}}),
    )
    .await;
    let endpoint = stream["delivery"]["endpoint_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = endpoint
        .strip_prefix(&app.state.ssf.issuer)
        .unwrap()
        .to_owned();
    let email = app.signed_up().await;
    for _ in 0..3 {
        let (access, refresh) = app.api_login(&email).await;
        app.api_logout(Some(&access), Some(&refresh)).await;
    }
    let poll = |body: Value| {
        let (server, path, token) = (&app.server, path.clone(), token.clone());
        async move {
            let response = server
                .post(&path)
                .authorization_bearer(&token)
                .json(&body)
                .await;
            assert_eq!(
                response.status_code(),
                StatusCode::OK,
                "{}",
                response.text()
            );
            response.json::<Value>()
        }
    };
    let first = poll(json!({"returnImmediately": true, "maxEvents": 2})).await;
    let sets = first["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(first["moreAvailable"], true);
    for token in sets.values() {
        verified(&app, token.as_str().unwrap(), &client.audience).await;
    }
    let jtis: Vec<String> = sets.keys().cloned().collect();
    let next = poll(json!({
        "returnImmediately": true,
        "ack": [jtis[0]],
        "setErrs": { jtis[1].clone(): {"err": "invalid_request", "description": "test"} },
    }))
    .await;
    let rest = next["sets"].as_object().unwrap();
    assert_eq!(rest.len(), 1);
    assert!(!rest.contains_key(&jtis[0]) && !rest.contains_key(&jtis[1]));
    // Not acknowledged: sent again.
    let again = poll(json!({"returnImmediately": true})).await;
    assert_eq!(again["sets"], next["sets"]);
    // Acknowledged without asking for more.
    let last: Vec<&String> = rest.keys().collect();
    let ack_only = poll(json!({"maxEvents": 0, "ack": last})).await;
    assert_eq!(ack_only["sets"], json!({}));
    assert_eq!(
        poll(json!({"returnImmediately": true})).await["sets"],
        json!({})
    );
}

/// A paused stream holds its events and sends them, in order, when enabled again; a disabled
/// stream drops them. A change the transmitter makes is announced (`stream-updated`).
#[tokio::test]
async fn a_paused_stream_holds_events_and_a_disabled_one_drops_them() {
    let app = spawn_app().await;
    let receiver = PushReceiver::start().await;
    let client = registered(&app).await;
    let token = bearer(&app, &client).await;
    let stream = push_stream(&app, &token, &receiver.url).await;
    let stream_id = stream["stream_id"].as_str().unwrap().to_owned();
    let set_status = |status: &'static str| {
        let (server, token, id) = (&app.server, token.clone(), stream_id.clone());
        async move {
            let response = server
                .post("/ssf/status")
                .authorization_bearer(&token)
                .json(&json!({"stream_id": id, "status": status, "reason": "test"}))
                .await;
            assert_eq!(
                response.status_code(),
                StatusCode::OK,
                "{}",
                response.text()
            );
            assert_eq!(response.json::<Value>()["status"], status);
        }
    };
    let email = app.signed_up().await;
    let end_one = || async {
        let (access, refresh) = app.api_login(&email).await;
        app.api_logout(Some(&access), Some(&refresh)).await;
        app.sid_of(&access)
    };
    set_status("paused").await;
    let held = end_one().await;
    deliver(&app).await;
    assert!(receiver.received().is_empty(), "paused: nothing sent");
    set_status("enabled").await;
    deliver(&app).await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        claims_of(&got[0].token)["sub_id"]["session"]["id"],
        held.as_str()
    );
    set_status("disabled").await;
    end_one().await;
    set_status("enabled").await;
    deliver(&app).await;
    assert_eq!(receiver.received().len(), 1, "disabled: dropped");
    // The transmitter pauses it: the receiver is told, then hears nothing more.
    assert!(
        lectern::ssf::streams::change_status(
            &app.state.db,
            &stream_id,
            lectern::ssf::streams::Status::Paused,
            Some("maintenance"),
            Some(app.clock.now()),
        )
        .await
        .unwrap()
    );
    end_one().await;
    deliver(&app).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let updated = verified(&app, &got[1].token, &client.audience).await;
    assert_eq!(event_type(&updated), STREAM_UPDATED);
    assert_eq!(updated["events"][STREAM_UPDATED]["status"], "paused");
    assert_eq!(
        updated["sub_id"],
        json!({"format": "opaque", "id": stream_id})
    );
}

/// Verification: 204, then a SET that echoes `state` for the stream; asked again too soon, 429.
#[tokio::test]
async fn verification_echoes_its_state_and_is_not_asked_too_often() {
    let app = spawn_app().await;
    let receiver = PushReceiver::start().await;
    let client = registered(&app).await;
    let token = bearer(&app, &client).await;
    let stream = push_stream(&app, &token, &receiver.url).await;
    let id = stream["stream_id"].as_str().unwrap();
    let verify = || {
        app.server
            .post("/ssf/verify")
            .authorization_bearer(&token)
            .json(&json!({"stream_id": id, "state": "VGhpcyBpcyBhIHRlc3Q"}))
    };
    assert_eq!(verify().await.status_code(), StatusCode::NO_CONTENT);
    assert_eq!(verify().await.status_code(), StatusCode::TOO_MANY_REQUESTS);
    deliver(&app).await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let claims = verified(&app, &got[0].token, &client.audience).await;
    assert_eq!(
        claims["events"][VERIFICATION]["state"],
        "VGhpcyBpcyBhIHRlc3Q"
    );
    assert_eq!(claims["sub_id"], json!({"format": "opaque", "id": id}));
    app.advance(lectern::ssf::streams::MIN_VERIFICATION_INTERVAL as u64);
    assert_eq!(verify().await.status_code(), StatusCode::NO_CONTENT);
}

/// Stream management as SSF 1.0 says, and its refusals: no token or a bad one (401), a token in
/// the address (refused), a broken body (400), a stream of someone else's or none (404), a
/// transmitter-supplied property changed (400), the wrong scope (403).
#[tokio::test]
async fn streams_are_managed_as_ssf_says_and_bad_requests_are_refused() {
    let app = spawn_app().await;
    let client = registered(&app).await;
    let token = bearer(&app, &client).await;
    let created = create_stream(
        &app,
        &token,
        json!({
            "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "https://receiver.example.test/events"},
            "events_requested": [SESSION_REVOKED, "urn:example:unknown"],
            "description": "first",
        }),
    )
    .await;
    let id = created["stream_id"].as_str().unwrap().to_owned();
    assert_eq!(created["iss"], app.state.ssf.issuer.as_str());
    assert_eq!(created["aud"], client.audience.as_str());
    assert_eq!(created["events_delivered"], json!([SESSION_REVOKED]));
    let all: Value = app
        .server
        .get("/ssf/streams")
        .authorization_bearer(&token)
        .await
        .json();
    assert_eq!(all.as_array().unwrap().len(), 1);
    let one: Value = app
        .server
        .get(&format!("/ssf/streams?stream_id={id}"))
        .authorization_bearer(&token)
        .await
        .json();
    assert_eq!(one, created);
    // PATCH changes what it names; PUT replaces every receiver-supplied property.
    let patched = app
        .server
        .patch("/ssf/streams")
        .authorization_bearer(&token)
        .json(&json!({"stream_id": id, "description": "second"}))
        .await;
    assert_eq!(patched.status_code(), StatusCode::OK);
    let patched: Value = patched.json();
    assert_eq!(patched["description"], "second");
    assert_eq!(patched["events_delivered"], json!([SESSION_REVOKED]));
    let replaced = app
        .server
        .put("/ssf/streams")
        .authorization_bearer(&token)
        .json(&json!({"stream_id": id, "delivery": {"method": "urn:ietf:rfc:8936"}}))
        .await;
    assert_eq!(replaced.status_code(), StatusCode::OK);
    let replaced: Value = replaced.json();
    assert!(replaced.get("description").is_none());
    assert_eq!(replaced["delivery"]["method"], "urn:ietf:rfc:8936");
    assert_eq!(replaced["events_delivered"].as_array().unwrap().len(), 4);
    let status: Value = app
        .server
        .get(&format!("/ssf/status?stream_id={id}"))
        .authorization_bearer(&token)
        .await
        .json();
    assert_eq!(status, json!({"stream_id": id, "status": "enabled"}));

    // Refusals.
    let unauthorized = app.server.get("/ssf/streams").await;
    assert_eq!(unauthorized.status_code(), StatusCode::UNAUTHORIZED);
    assert!(
        unauthorized
            .header("www-authenticate")
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let forged = app
        .server
        .get("/ssf/streams")
        .authorization_bearer("not.a.token")
        .await;
    assert_eq!(forged.status_code(), StatusCode::UNAUTHORIZED);
    let in_query = app
        .server
        .get(&format!("/ssf/streams?access_token={token}"))
        .await;
    assert!(in_query.status_code().is_client_error());
    let with_both = app
        .server
        .get(&format!("/ssf/streams?access_token={token}"))
        .authorization_bearer(&token)
        .await;
    assert_eq!(
        with_both.status_code(),
        StatusCode::BAD_REQUEST,
        "a token in the address is refused"
    );
    for body in [
        json!("not an object"),
        json!({"delivery": {"method": "urn:example:carrier-pigeon"}}),
        json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://receiver.example.test/"}}),
        json!({"stream_id": "mine"}),
        json!({"events_requested": "all"}),
    ] {
        let refused = app
            .server
            .post("/ssf/streams")
            .authorization_bearer(&token)
            .json(&body)
            .await;
        assert_eq!(refused.status_code(), StatusCode::BAD_REQUEST, "{body}");
        assert!(refused.json::<Value>()["message"].is_string());
    }
    let broken = app
        .server
        .post("/ssf/streams")
        .authorization_bearer(&token)
        .text("{broken")
        .await;
    assert_eq!(broken.status_code(), StatusCode::BAD_REQUEST);
    let aud_changed = app
        .server
        .patch("/ssf/streams")
        .authorization_bearer(&token)
        .json(&json!({"stream_id": id, "aud": "someone else"}))
        .await;
    assert_eq!(aud_changed.status_code(), StatusCode::BAD_REQUEST);
    let other = registered(&app).await;
    let other_token = bearer(&app, &other).await;
    for (method, path) in [
        ("GET", format!("/ssf/streams?stream_id={id}")),
        ("DELETE", format!("/ssf/streams?stream_id={id}")),
        ("GET", format!("/ssf/status?stream_id={id}")),
        ("GET", "/ssf/streams?stream_id=nope".to_owned()),
    ] {
        let request = match method {
            "GET" => app.server.get(&path),
            _ => app.server.delete(&path),
        };
        let response = request.authorization_bearer(&other_token).await;
        assert_eq!(
            response.status_code(),
            StatusCode::NOT_FOUND,
            "{method} {path}"
        );
    }
    let unknown = app
        .server
        .patch("/ssf/streams")
        .authorization_bearer(&token)
        .json(&json!({"stream_id": "nope", "description": "x"}))
        .await;
    assert_eq!(unknown.status_code(), StatusCode::NOT_FOUND);
    // A read-only token reads, and may not change.
    let read_only = app
        .server
        .post("/ssf/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client.id.as_str()),
            ("client_secret", client.secret.as_str()),
            ("scope", "ssf.read"),
        ])
        .await
        .json::<Value>()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = app
        .server
        .get("/ssf/streams")
        .authorization_bearer(&read_only)
        .await;
    assert_eq!(read.status_code(), StatusCode::OK);
    let write = app
        .server
        .delete(&format!("/ssf/streams?stream_id={id}"))
        .authorization_bearer(&read_only)
        .await;
    assert_eq!(write.status_code(), StatusCode::FORBIDDEN);
    // Deleted: gone, and the client's tokens stop working when the client is removed.
    let deleted = app
        .server
        .delete(&format!("/ssf/streams?stream_id={id}"))
        .authorization_bearer(&token)
        .await;
    assert_eq!(deleted.status_code(), StatusCode::NO_CONTENT);
    let gone = app
        .server
        .get(&format!("/ssf/streams?stream_id={id}"))
        .authorization_bearer(&token)
        .await;
    assert_eq!(gone.status_code(), StatusCode::NOT_FOUND);
    assert!(
        lectern::ssf::clients::delete(&app.state.db, &client.id)
            .await
            .unwrap()
    );
    let after = app
        .server
        .get("/ssf/streams")
        .authorization_bearer(&token)
        .await;
    assert_eq!(after.status_code(), StatusCode::UNAUTHORIZED);
}

/// The token endpoint: HTTP Basic or form credentials; a wrong secret, an unknown grant or scope
/// is refused as OAuth says.
#[tokio::test]
async fn the_token_endpoint_takes_client_credentials_only() {
    let app = spawn_app().await;
    let client = registered(&app).await;
    let basic = URL_SAFE_NO_PAD.encode(format!("{}:{}", client.id, client.secret));
    let basic = basic.replace('-', "+").replace('_', "/");
    let padded = format!("{basic}{}", "=".repeat((4 - basic.len() % 4) % 4));
    let ok = app
        .server
        .post("/ssf/token")
        .add_header("authorization", format!("Basic {padded}"))
        .form(&[("grant_type", "client_credentials")])
        .await;
    assert_eq!(ok.status_code(), StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.json::<Value>()["token_type"], "Bearer");
    assert_eq!(ok.header("cache-control"), "no-store");
    for (form, status, error) in [
        (
            vec![("grant_type", "password")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", client.id.as_str()),
                ("client_secret", "wrong"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", client.id.as_str()),
                ("client_secret", client.secret.as_str()),
                ("scope", "admin"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
    ] {
        let refused = app.server.post("/ssf/token").form(&form).await;
        assert_eq!(refused.status_code(), status, "{form:?}");
        assert_eq!(refused.json::<Value>()["error"], error);
    }
}

/// Killed between the ending and the push (the receiver was down), the instance that comes back
/// delivers the event: it was written with the ending, not kept in memory.
#[tokio::test]
async fn a_crash_between_the_ending_and_the_push_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = PushReceiver::start().await;
    receiver.down();
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("lectern.db").display()
    );
    let env = [
        ("DATABASE_URL", database_url.clone()),
        (
            "LECTERN_SECRET",
            "a test secret that is long enough for lectern".to_owned(),
        ),
    ];
    let mut running = RunningBinary::start(dir.path(), &env).await;
    let db = lectern::db::connect(&database_url).await.unwrap();
    let (client, secret) = lectern::ssf::clients::create(&db, "crash test", None, 0)
        .await
        .unwrap();
    let token_body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={secret}",
        client.id
    );
    let token = http_request(
        "POST",
        &format!("{}/ssf/token", running.base),
        &[("content-type", "application/x-www-form-urlencoded")],
        token_body.clone().into_bytes(),
    )
    .await;
    let token = access_token_of(&token.2);
    let bearer = format!("Bearer {token}");
    let stream = json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": receiver.url}});
    let created = http_request(
        "POST",
        &format!("{}/ssf/streams", running.base),
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        stream.to_string().into_bytes(),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED);
    let email = unique_email();
    let password = lectern::accounts::Password::parse(PASSWORD.to_owned()).unwrap();
    let hash = lectern::auth::passwords::Passwords::new(1)
        .unwrap()
        .hash(password.secret())
        .await
        .unwrap();
    let user = lectern::accounts::create(
        &db,
        &lectern::accounts::Email::parse(&email).unwrap(),
        &lectern::accounts::DisplayName::parse("Crash Test").unwrap(),
        hash,
        0,
    )
    .await
    .unwrap();
    let login = http_request(
        "POST",
        &format!("{}/api/v1/auth/login", running.base),
        &[("content-type", "application/json")],
        json!({"email": email, "password": PASSWORD})
            .to_string()
            .into_bytes(),
    )
    .await;
    let access = access_token_of(&login.2);
    let logout = http_request(
        "POST",
        &format!("{}/api/v1/auth/logout", running.base),
        &[("authorization", &format!("Bearer {access}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(logout.0, StatusCode::NO_CONTENT);
    // The push failed (the receiver is down) and is owed: the process dies now.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (failures,): (i64,) = sqlx::query_as("select failures from ssf_streams")
            .fetch_one(&db)
            .await
            .unwrap();
        if failures > 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(running);
    receiver.back();
    running = RunningBinary::start(dir.path(), &env).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.received().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = receiver.received();
    assert_eq!(got.len(), 1, "the event arrives after the restart");
    let claims = claims_of(&got[0].token);
    assert_eq!(claims["sub_id"]["user"]["sub"], user.id.as_str());
    drop(running);
}

/// A transmitter of the tests' own, trusted by Lectern: its metadata and keys on loopback, and
/// SETs it signs.
struct Transmitter {
    issuer: String,
    key: EncodingKey,
    kid: String,
}

impl Transmitter {
    async fn start() -> Self {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let kid = "test-key-1".to_owned();
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = format!("http://127.0.0.1:{port}");
        let metadata = json!({
            "spec_version": "1_0",
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "delivery_methods_supported": ["urn:ietf:rfc:8935"],
        });
        let router = Router::new()
            .route(
                "/.well-known/ssf-configuration",
                get(move || async move { Json(metadata) }),
            )
            .route(
                "/jwks",
                get(move || async move { Json(json!({"keys": [jwk]})) }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let der = private.to_pkcs1_der().unwrap();
        Self {
            issuer,
            key: EncodingKey::from_rsa_der(der.as_bytes()),
            kid,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("secevent+jwt".to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    /// A `session-revoked` for `email`, addressed to `audience`.
    fn revoked(&self, email: &str, audience: &str, now: i64) -> Value {
        json!({
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": now,
            "aud": audience,
            "sub_id": {"format": "complex", "user": {"format": "email", "email": email}},
            "events": {SESSION_REVOKED: {"initiating_entity": "admin", "reason_admin": {"en": "test"}}},
        })
    }
}

async fn pushed(app: &TestApp, token: &str) -> axum_test::TestResponse {
    app.server
        .post("/ssf/receive")
        .bytes(token.as_bytes().to_vec().into())
        .content_type("application/secevent+jwt")
        .await
}

/// A SET from the trusted identity provider ends every sign-in of the learner it names, on every
/// instance, and their browser is told why; the same SET again, a forged one, one for another
/// audience or for none, one from another issuer, and one with `sub` or `exp`, end nothing (400).
#[tokio::test]
async fn a_trusted_providers_session_revoked_ends_the_learners_sign_ins_and_nothing_else_does() {
    let transmitter = Transmitter::start().await;
    let impostor = Transmitter::start().await;
    let trust = |s: &mut lectern::config::Settings| {
        s.ssf_trust = vec![transmitter.issuer.clone()];
        s.public_url = "https://learn.example.test".to_owned();
    };
    let app = spawn_app_with(trust).await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let now = app.clock.now();
    let audience = "https://learn.example.test";

    // Refused, and nothing ends.
    let good = transmitter.revoked(&email, audience, now);
    let mut wrong_audience = good.clone();
    wrong_audience["aud"] = json!("https://elsewhere.example.test");
    wrong_audience["jti"] = json!("wrong-audience");
    let mut no_audience = good.clone();
    no_audience.as_object_mut().unwrap().remove("aud");
    no_audience["jti"] = json!("no-audience");
    let mut with_sub = good.clone();
    with_sub["sub"] = json!("someone");
    with_sub["jti"] = json!("with-sub");
    let mut with_exp = good.clone();
    with_exp["exp"] = json!(now + 60);
    with_exp["jti"] = json!("with-exp");
    let mut forged_claims = good.clone();
    forged_claims["jti"] = json!("forged");
    let mut other_issuer = impostor.revoked(&email, audience, now);
    other_issuer["jti"] = json!("other-issuer");
    for (token, err) in [
        (transmitter.sign(&wrong_audience), "invalid_audience"),
        (transmitter.sign(&no_audience), "invalid_audience"),
        (transmitter.sign(&with_sub), "invalid_request"),
        (transmitter.sign(&with_exp), "invalid_request"),
        (impostor.sign(&forged_claims), "invalid_key"),
        (impostor.sign(&other_issuer), "invalid_issuer"),
        ("not a jwt".to_owned(), "invalid_request"),
    ] {
        let refused = pushed(&app, &token).await;
        assert_eq!(
            refused.status_code(),
            StatusCode::BAD_REQUEST,
            "{err}: {}",
            refused.text()
        );
        assert_eq!(refused.json::<Value>()["err"], err);
    }
    let untyped = app.server.post("/ssf/receive").json(&good).await;
    assert_eq!(untyped.status_code(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.me(&access).await.status_code(),
        StatusCode::OK,
        "nothing ended"
    );

    // Accepted: every sign-in of the learner ends, reason `provider`.
    let peer = if real_services() {
        Some(spawn_peer_with(&app, trust).await)
    } else {
        None
    };
    let signed = transmitter.sign(&good);
    let accepted = pushed(&app, &signed).await;
    assert_eq!(
        accepted.status_code(),
        StatusCode::ACCEPTED,
        "{}",
        accepted.text()
    );
    app.assert_api_credentials_refused(&access, &refresh).await;
    if let Some(peer) = &peer {
        peer.assert_api_credentials_refused(&access, &refresh).await;
    }
    let browser = app.server.get("/dashboard").await;
    assert!(
        browser
            .header("location")
            .to_str()
            .unwrap()
            .contains("reason=provider")
    );
    let login = app.server.get("/login?reason=provider").await.text();
    assert!(login.contains("organisation"), "the login page says why");

    // The same SET again ends nothing more: the learner's new sign-in stays.
    let (fresh, _) = app.api_login(&email).await;
    let replayed = pushed(&app, &signed).await;
    assert_eq!(replayed.status_code(), StatusCode::BAD_REQUEST);
    assert_eq!(app.me(&fresh).await.status_code(), StatusCode::OK);

    // An unknown subject is accepted and changes nothing; a linked `iss_sub` reaches its learner.
    let unknown = transmitter.revoked("nobody@example.test", audience, now);
    assert_eq!(
        pushed(&app, &transmitter.sign(&unknown))
            .await
            .status_code(),
        StatusCode::ACCEPTED
    );
    assert_eq!(app.me(&fresh).await.status_code(), StatusCode::OK);
    let user = user_of(&app, &email).await;
    sqlx::query("insert into ssf_links (iss, sub, user_id) values ($1, $2, $3)")
        .bind(&transmitter.issuer)
        .bind("idp-user-42")
        .bind(&user.id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let mut linked = transmitter.revoked(&email, audience, now);
    linked["sub_id"] =
        json!({"format": "iss_sub", "iss": transmitter.issuer, "sub": "idp-user-42"});
    linked["events"] =
        json!({CREDENTIAL_CHANGE: {"credential_type": "password", "change_type": "update"}});
    assert_eq!(
        pushed(&app, &transmitter.sign(&linked)).await.status_code(),
        StatusCode::ACCEPTED
    );
    assert_eq!(app.me(&fresh).await.status_code(), StatusCode::UNAUTHORIZED);
}

/// A burst of sign-outs at once (on PostgreSQL, written several to a statement) puts one event
/// per ended sign-in in the outbox, and a poll receiver gets each once.
#[tokio::test]
async fn a_burst_of_sign_outs_writes_one_event_per_sign_in() {
    let app = spawn_app_with(|s| s.rate_limit = 0).await;
    let client = registered(&app).await;
    let token = bearer(&app, &client).await;
    let stream = create_stream(&app, &token, json!({})).await;
    let path = stream["delivery"]["endpoint_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&app.state.ssf.issuer)
        .unwrap()
        .to_owned();
    let email = app.signed_up().await;
    let mut signed_in = Vec::new();
    for _ in 0..40 {
        signed_in.push(app.api_login(&email).await);
    }
    let outs = signed_in
        .iter()
        .map(|(access, refresh)| app.api_logout(Some(access), Some(refresh)));
    for response in futures::future::join_all(outs).await {
        assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    }
    let mut sessions = std::collections::HashSet::new();
    loop {
        let polled: Value = app
            .server
            .post(&path)
            .authorization_bearer(&token)
            .json(&json!({"returnImmediately": true, "maxEvents": 15}))
            .await
            .json();
        let sets = polled["sets"].as_object().unwrap();
        if sets.is_empty() {
            break;
        }
        for set in sets.values() {
            let claims = claims_of(set.as_str().unwrap());
            assert!(
                sessions.insert(
                    claims["sub_id"]["session"]["id"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                )
            );
        }
        let ack: Vec<&String> = sets.keys().collect();
        app.server
            .post(&path)
            .authorization_bearer(&token)
            .json(&json!({"maxEvents": 0, "ack": ack}))
            .await;
    }
    let expected: std::collections::HashSet<String> = signed_in
        .iter()
        .map(|(access, _)| app.sid_of(access))
        .collect();
    assert_eq!(sessions, expected);
}

/// A sign-in that runs out while nobody presents it (an API client that stopped calling, a
/// browser that never came back) is settled by the server, once, and the receiver is told why.
#[tokio::test]
async fn a_sign_in_that_runs_out_unseen_still_tells_the_receiver() {
    let app = spawn_app().await;
    let receiver = PushReceiver::start().await;
    let client = registered(&app).await;
    let token = bearer(&app, &client).await;
    push_stream(&app, &token, &receiver.url).await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let browser = app
        .state
        .sign_ins
        .live(Some(&user_of(&app, &email).await.id))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .find(|id| *id != app.sid_of(&access))
        .unwrap();
    // Nothing has run out yet: nothing ends.
    assert_eq!(app.state.sign_out.settle_lapsed(256).await.unwrap(), 0);
    app.advance(u64::try_from(app.state.lifetimes.absolute).unwrap() + 1);
    assert_eq!(app.state.sign_out.settle_lapsed(256).await.unwrap(), 2);
    assert_eq!(
        app.state.sign_out.settle_lapsed(256).await.unwrap(),
        0,
        "once"
    );
    deliver(&app).await;
    let mut told: Vec<(String, String)> = receiver
        .received()
        .iter()
        .map(|g| {
            let claims = claims_of(&g.token);
            let event = &claims["events"][SESSION_REVOKED];
            (
                claims["sub_id"]["session"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                event["initiating_entity"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    told.sort();
    let mut expected = vec![
        (app.sid_of(&access), "policy".to_owned()),
        (browser, "policy".to_owned()),
    ];
    expected.sort();
    assert_eq!(told, expected);
    app.assert_api_credentials_refused(&access, &refresh).await;
    // The browser that comes back is told why.
    let back = app.server.get("/dashboard").await;
    let location = back.header("location").to_str().unwrap().to_owned();
    assert!(
        location.contains("reason=idle") || location.contains("reason=expired"),
        "{location}"
    );
}
