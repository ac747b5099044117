//! Device-bound sign-ins (DBSC): registration at sign-in, refresh with a proof of the same key,
//! a copied session cookie refused, and every way a sign-in ends ending its binding. The
//! browser's side (its key, its proofs) is played here; `browser.rs` has Chromium do it.

use axum::http::StatusCode;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use cookie::Cookie;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use p256::{SecretKey, pkcs8::EncodePrivateKey};
use serde_json::{Value, json};

use crate::helpers::*;

/// A browser's device key.
struct DeviceKey {
    encoding: EncodingKey,
    jwk: Jwk,
}

impl DeviceKey {
    fn new() -> Self {
        let secret = SecretKey::random(&mut rsa::rand_core::OsRng);
        let point = secret.public_key().to_sec1_bytes();
        // Uncompressed: 0x04, then x and y (32 bytes each).
        let (x, y) = point[1..].split_at(32);
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }))
        .unwrap();
        let der = secret.to_pkcs8_der().unwrap();
        Self {
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk,
        }
    }

    /// A proof: for a registration with the public key in its header, for a refresh without.
    fn proof(&self, challenge: &str, authorization: Option<&str>, with_key: bool) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dbsc+jwt".to_owned());
        if with_key {
            header.jwk = Some(self.jwk.clone());
        }
        let mut claims = json!({ "jti": challenge });
        if let Some(authorization) = authorization {
            claims["authorization"] = json!(authorization);
        }
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// A structured-field string parameter of a header value: `name="value"`.
fn param(header: &str, name: &str) -> String {
    let start = header
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("{name} in {header}"))
        + name.len()
        + 2;
    let end = header[start..].find('"').unwrap() + start;
    header[start..end].to_owned()
}

async fn spawn() -> TestApp {
    spawn_app_with(|s| s.dbsc = true).await
}

/// Signs up in the test client, and returns the registration header and the session cookie.
async fn signed_up_with_offer(app: &TestApp) -> (String, Cookie<'static>) {
    let email = unique_email();
    let response = app.sign_up(&email, PASSWORD).await;
    assert_eq!(response.status_code(), StatusCode::SEE_OTHER);
    let offer = response
        .maybe_header("secure-session-registration")
        .expect("binding is offered at sign-in")
        .to_str()
        .unwrap()
        .to_owned();
    (offer, response.cookie("lectern_session"))
}

/// Registers `key` for the sign-in `session` holds: the answer.
async fn register(
    app: &TestApp,
    session: &Cookie<'static>,
    proof: &str,
) -> axum_test::TestResponse {
    app.server
        .post("/dbsc/register")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(session.clone())
        .add_header("secure-session-response", proof.to_owned())
        .await
}

/// A refresh as the browser holding `session` sends it.
async fn refresh(
    app: &TestApp,
    session: &Cookie<'static>,
    proof: Option<&str>,
) -> axum_test::TestResponse {
    let sid = sid_of_session(session);
    let mut request = app
        .server
        .post("/dbsc/refresh")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(session.clone())
        .add_header("sec-secure-session-id", sid);
    if let Some(proof) = proof {
        request = request.add_header("secure-session-response", proof.to_owned());
    }
    request.await
}

async fn page(
    app: &TestApp,
    session: &Cookie<'static>,
    bound: Option<&Cookie<'static>>,
) -> axum_test::TestResponse {
    page_at(app, "/dashboard", session, bound).await
}

/// `path` asked for with the session cookie, and the bound cookie when given.
async fn page_at(
    app: &TestApp,
    path: &str,
    session: &Cookie<'static>,
    bound: Option<&Cookie<'static>>,
) -> axum_test::TestResponse {
    let mut request = app
        .server
        .get(path)
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(session.clone());
    if let Some(bound) = bound {
        request = request.add_cookie(bound.clone());
    }
    request.await
}

fn sid_of_session(session: &Cookie<'static>) -> String {
    lectern::auth::sign_ins::browser_sign_in_id(session.value())
}

/// A bound sign-in: its session cookie, its bound cookie and its device key.
async fn bound(app: &TestApp) -> (Cookie<'static>, Cookie<'static>, DeviceKey) {
    let (offer, session) = signed_up_with_offer(app).await;
    let key = DeviceKey::new();
    let proof = key.proof(
        &param(&offer, "challenge"),
        Some(&param(&offer, "authorization")),
        true,
    );
    let registered = register(app, &session, &proof).await;
    assert_eq!(
        registered.status_code(),
        StatusCode::OK,
        "{}",
        registered.text()
    );
    (session, registered.cookie("lectern_bound"), key)
}

#[tokio::test]
async fn a_sign_in_is_bound_at_registration_and_its_session_cookie_alone_is_then_refused() {
    let app = spawn().await;
    let (offer, session) = signed_up_with_offer(&app).await;
    assert!(offer.starts_with("(ES256 RS256);"), "{offer}");
    assert_eq!(param(&offer, "path"), "/dbsc/register");
    // Unbound, the session cookie works alone (browsers without DBSC).
    assert_eq!(
        page(&app, &session, None).await.status_code(),
        StatusCode::OK
    );
    let key = DeviceKey::new();
    let proof = key.proof(
        &param(&offer, "challenge"),
        Some(&param(&offer, "authorization")),
        true,
    );
    let registered = register(&app, &session, &proof).await;
    assert_eq!(
        registered.status_code(),
        StatusCode::OK,
        "{}",
        registered.text()
    );
    let config: Value = registered.json();
    let sid = sid_of_session(&session);
    assert_eq!(config["session_identifier"], sid.as_str());
    assert_eq!(config["refresh_url"], "/dbsc/refresh");
    assert_eq!(config["scope"]["include_site"], false);
    assert_eq!(
        config["credentials"],
        json!([{"type": "cookie", "name": "lectern_bound", "attributes": "Path=/; Secure; HttpOnly; SameSite=Lax"}])
    );
    let set = registered.header("set-cookie").to_str().unwrap().to_owned();
    for attribute in [
        "lectern_bound=",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    let bound_cookie = registered.cookie("lectern_bound");
    assert_eq!(
        page(&app, &session, Some(&bound_cookie))
            .await
            .status_code(),
        StatusCode::OK
    );
    // The session cookie alone (copied to another machine) is a signed-out request.
    let copied = page(&app, &session, None).await;
    assert_eq!(copied.status_code(), StatusCode::SEE_OTHER);
    assert!(
        copied
            .header("location")
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    let htmx = app
        .server
        .get("/dashboard")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(session.clone())
        .add_header("HX-Request", "true")
        .await;
    assert_eq!(htmx.status_code(), StatusCode::UNAUTHORIZED);
    // A forged or another sign-in's bound cookie does no better.
    let forged = Cookie::new("lectern_bound", format!("{}.forged", app.clock.now() + 60));
    assert_eq!(
        page(&app, &session, Some(&forged)).await.status_code(),
        StatusCode::SEE_OTHER
    );
    // The owner is still signed in, and the account page says the sign-in is bound.
    let account = app
        .server
        .get("/account")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(session.clone())
        .add_cookie(bound_cookie.clone())
        .await;
    assert_eq!(account.status_code(), StatusCode::OK);
    assert!(account.text().contains("Bound to this device"));
    // The refusals are in the audit log.
    let (refused,): (i64,) = sqlx::query_as(
        "select count(*) from audit_events where event = 'bound_refused' and sign_in_id = $1",
    )
    .bind(&sid)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    // Once a minute at most: a replayed copy cannot flood the learner's recent activity.
    assert_eq!(refused, 1);
    // After the bound cookie's lifetime it is refused too, until the browser proves its key.
    app.advance(601);
    assert_eq!(
        page(&app, &session, Some(&bound_cookie))
            .await
            .status_code(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_registration_must_answer_its_challenge_with_its_own_key_and_authorization() {
    let app = spawn().await;
    let (offer, session) = signed_up_with_offer(&app).await;
    let (challenge, authorization) = (param(&offer, "challenge"), param(&offer, "authorization"));
    let key = DeviceKey::new();
    for (proof, why) in [
        (
            key.proof("not the challenge", Some(&authorization), true),
            "wrong challenge",
        ),
        (
            key.proof(&challenge, Some("not ours"), true),
            "wrong authorization",
        ),
        (
            key.proof(&challenge, Some(&authorization), false),
            "no key in the header",
        ),
        ("not.a.jwt".to_owned(), "not a JWT"),
    ] {
        let refused = register(&app, &session, &proof).await;
        assert_eq!(refused.status_code(), StatusCode::BAD_REQUEST, "{why}");
    }
    // The first attempt used the challenge up: even a good proof for it is now refused.
    let late = register(
        &app,
        &session,
        &key.proof(&challenge, Some(&authorization), true),
    )
    .await;
    assert_eq!(late.status_code(), StatusCode::BAD_REQUEST);
    // Unbound after all that: the session works as before.
    assert_eq!(
        page(&app, &session, None).await.status_code(),
        StatusCode::OK
    );
    // No sign-in, no binding.
    let anonymous = app.server.post("/dbsc/register").clear_cookies().await;
    assert_eq!(anonymous.status_code(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_refresh_renews_the_cookie_only_for_a_fresh_proof_of_the_same_key() {
    let app = spawn().await;
    let (session, _, key) = bound(&app).await;
    let sid = sid_of_session(&session);
    // No proof: 403 and a challenge for this sign-in.
    let asked = refresh(&app, &session, None).await;
    assert_eq!(asked.status_code(), StatusCode::FORBIDDEN);
    let header = asked
        .header("secure-session-challenge")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(param(&header, "id"), sid);
    let challenge = header.split('"').nth(1).unwrap().to_owned();
    // Another key's proof: refused, with a new challenge.
    let thief = DeviceKey::new();
    let stolen = refresh(&app, &session, Some(&thief.proof(&challenge, None, false))).await;
    assert_eq!(stolen.status_code(), StatusCode::FORBIDDEN);
    assert!(stolen.maybe_header("set-cookie").is_none());
    // The challenge it tried is spent: replaying a proof for it is refused.
    let next = stolen
        .header("secure-session-challenge")
        .to_str()
        .unwrap()
        .to_owned();
    let challenge = next.split('"').nth(1).unwrap().to_owned();
    let proof = key.proof(&challenge, None, false);
    let renewed = refresh(&app, &session, Some(&proof)).await;
    assert_eq!(renewed.status_code(), StatusCode::OK, "{}", renewed.text());
    let cookie = renewed.cookie("lectern_bound");
    assert_eq!(
        page(&app, &session, Some(&cookie)).await.status_code(),
        StatusCode::OK
    );
    let replayed = refresh(&app, &session, Some(&proof)).await;
    assert_eq!(
        replayed.status_code(),
        StatusCode::FORBIDDEN,
        "a proof works once"
    );
    // A challenge that waited too long has expired.
    let asked = refresh(&app, &session, None).await;
    let header = asked
        .header("secure-session-challenge")
        .to_str()
        .unwrap()
        .to_owned();
    let challenge = header.split('"').nth(1).unwrap().to_owned();
    app.advance(61);
    let late = refresh(&app, &session, Some(&key.proof(&challenge, None, false))).await;
    assert_eq!(late.status_code(), StatusCode::FORBIDDEN);
}

/// Every way a sign-in ends ends its binding: after a sign-out a refresh answers
/// `continue: false` and removes the cookies, on every instance, and nothing renews.
#[tokio::test]
async fn ending_a_sign_in_ends_its_binding_everywhere() {
    let app = spawn().await;
    let (session, bound_cookie, key) = bound(&app).await;
    let sid = sid_of_session(&session);
    let token = {
        let page = app
            .server
            .get("/dashboard")
            .clear_cookies()
            .do_not_save_cookies()
            .add_cookie(session.clone())
            .add_cookie(bound_cookie.clone())
            .await
            .text();
        csrf_from(&page)
    };
    let out = app
        .server
        .post("/logout")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(session.clone())
        .add_cookie(bound_cookie.clone())
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", token)
        .await;
    assert_eq!(out.status_code(), StatusCode::OK);
    let removed: Vec<String> = out
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        removed
            .iter()
            .any(|c| c.starts_with("lectern_bound=;") && c.contains("Max-Age=0")),
        "{removed:?}"
    );
    let peer = if real_services() {
        Some(spawn_peer_with(&app, |s| s.dbsc = true).await)
    } else {
        None
    };
    for instance in std::iter::once(&app).chain(peer.as_ref()) {
        let ended = refresh(
            instance,
            &session,
            Some(&key.proof("anything", None, false)),
        )
        .await;
        assert_eq!(ended.status_code(), StatusCode::OK);
        assert_eq!(
            ended.json::<Value>(),
            json!({"session_identifier": sid, "continue": false})
        );
        let removals: Vec<String> = ended
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for name in ["lectern_session=;", "lectern_bound=;"] {
            assert!(
                removals.iter().any(|c| c.starts_with(name)),
                "{name}: {removals:?}"
            );
        }
    }
    assert_eq!(
        page(&app, &session, Some(&bound_cookie))
            .await
            .status_code(),
        StatusCode::SEE_OTHER
    );
}

/// A browser sends its next request while the registration's answer is still on its way, so the
/// request has no bound cookie. It is refused like any other. The login page it is sent to then
/// reloads itself in a moment (when the browser has the cookie), but only for a binding seconds
/// old: later, and for anyone without a session, the page stays put.
#[tokio::test]
async fn a_page_refused_just_after_binding_looks_again_and_only_then() {
    let app = spawn().await;
    let (session, bound_cookie, _key) = bound(&app).await;
    let reload = "<meta http-equiv=\"refresh\" content=\"1\">";
    let login = |bound| page_at(&app, "/login?next=%2Fdashboard", &session, bound);
    let refused = page(&app, &session, None).await;
    assert_eq!(refused.status_code(), StatusCode::SEE_OTHER);
    let early = login(None).await;
    assert_eq!(early.status_code(), StatusCode::OK);
    assert!(early.text().contains(reload), "{}", early.text());
    // With the cookie, the same page sends the learner on.
    let with_cookie = login(Some(&bound_cookie)).await;
    assert_eq!(with_cookie.status_code(), StatusCode::SEE_OTHER);
    assert_eq!(with_cookie.header("location"), "/dashboard");
    let visitor = app.server.get("/login").clear_cookies().await;
    assert!(!visitor.text().contains(reload));
    app.advance(lectern::auth::bound::BINDING_SETTLES.unsigned_abs());
    assert_eq!(
        page(&app, &session, None).await.status_code(),
        StatusCode::SEE_OTHER
    );
    let late = login(None).await;
    assert_eq!(late.status_code(), StatusCode::OK);
    assert!(!late.text().contains(reload), "{}", late.text());
    // A binding its row does not record (a registration that could not write it) counts from
    // the sign-in, long past too: no page reloads for ever.
    sqlx::query("update sign_ins set bound_at = null where id = $1")
        .bind(sid_of_session(&session))
        .execute(&app.state.db)
        .await
        .unwrap();
    assert_eq!(
        page(&app, &session, None).await.status_code(),
        StatusCode::SEE_OTHER
    );
    assert!(!login(None).await.text().contains(reload));
}

/// A bound browser sign-in's refresh cookie works only beside its bound cookie, like its session
/// cookie; refused alone, it consumes nothing.
#[tokio::test]
async fn a_bound_sign_ins_refresh_cookie_alone_is_refused_too() {
    let app = spawn().await;
    let response = app.sign_up(&unique_email(), PASSWORD).await;
    let offer = response
        .header("secure-session-registration")
        .to_str()
        .unwrap()
        .to_owned();
    let (session, refresh_cookie) = (
        response.cookie("lectern_session"),
        response.cookie("lectern_refresh"),
    );
    let key = DeviceKey::new();
    let proof = key.proof(
        &param(&offer, "challenge"),
        Some(&param(&offer, "authorization")),
        true,
    );
    let registered = register(&app, &session, &proof).await;
    assert_eq!(registered.status_code(), StatusCode::OK);
    let bound_cookie = registered.cookie("lectern_bound");
    let alone = app.refresh_with(&refresh_cookie).await;
    assert_eq!(alone.status_code(), StatusCode::UNAUTHORIZED);
    let beside = app
        .server
        .post("/api/v1/auth/refresh")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(refresh_cookie.clone())
        .add_cookie(bound_cookie)
        .await;
    assert_eq!(beside.status_code(), StatusCode::OK, "{}", beside.text());
}

/// A key, once bound, is never replaced: a registration for a bound sign-in is refused, even
/// with a fresh challenge from its refresh (which is not a registration's); and a refresh asked
/// for by anyone but the browser holding the sign-in changes nothing and touches no cookie.
#[tokio::test]
async fn a_bound_sign_in_cannot_be_rebound_or_refreshed_by_another() {
    let app = spawn().await;
    let (offer, session) = signed_up_with_offer(&app).await;
    let key = DeviceKey::new();
    let authorization = param(&offer, "authorization");
    let proof = key.proof(&param(&offer, "challenge"), Some(&authorization), true);
    let registered = register(&app, &session, &proof).await;
    assert_eq!(registered.status_code(), StatusCode::OK);
    let bound_cookie = registered.cookie("lectern_bound");
    // The thief has the session cookie (and the old offer): it asks for a refresh challenge and
    // tries to register its own key with it.
    let asked = refresh(&app, &session, None).await;
    let header = asked
        .header("secure-session-challenge")
        .to_str()
        .unwrap()
        .to_owned();
    let challenge = header.split('"').nth(1).unwrap().to_owned();
    let thief = DeviceKey::new();
    let rebind = app
        .server
        .post("/dbsc/register")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(session.clone())
        .add_cookie(bound_cookie)
        .add_header(
            "secure-session-response",
            thief.proof(&challenge, Some(&authorization), true),
        )
        .await;
    assert_eq!(rebind.status_code(), StatusCode::BAD_REQUEST);
    // A refresh that does not bring this sign-in's session cookie: told it is over, nothing set
    // or removed, and the sign-in still bound and renewable by its browser.
    let sid = sid_of_session(&session);
    let stranger = app
        .server
        .post("/dbsc/refresh")
        .clear_cookies()
        .do_not_save_cookies()
        .add_header("sec-secure-session-id", sid.clone())
        .await;
    assert_eq!(stranger.status_code(), StatusCode::OK);
    assert_eq!(stranger.json::<Value>()["continue"], false);
    assert!(stranger.maybe_header("set-cookie").is_none());
    let asked = refresh(&app, &session, None).await;
    let header = asked
        .header("secure-session-challenge")
        .to_str()
        .unwrap()
        .to_owned();
    let challenge = header.split('"').nth(1).unwrap().to_owned();
    let renewed = refresh(&app, &session, Some(&key.proof(&challenge, None, false))).await;
    assert_eq!(renewed.status_code(), StatusCode::OK);
}
