//! Property tests over every parser that meets the outside world: the bearer header and the JWT,
//! the refresh cookie, the session cookie, the `next` path, form and JSON bodies, the sealed
//! sign-out retry note and `X-Forwarded-For`. The pure parsers are tried directly with many
//! cases; the rest through the whole app (in whichever shape the run uses), where every answer
//! must be a clear 4xx or a redirect, never a 5xx, and no altered credential is ever accepted.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use cookie::Cookie;
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};

use crate::helpers::*;
use lectern::{
    accounts::Email,
    auth::{AccessTokens, Keys, sign_out::Targets},
    web::{client::forwarded_client, forms::form_field, navigation::local_path},
};

/// A runner that keeps no failure files in the source tree (a failure prints its input).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// One app, in a runtime of the test's own, that every case of a property is sent to.
fn with_app(cases: u32, test: impl Fn(&tokio::runtime::Runtime, &mut TestRunner, &TestApp)) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app_with(|s| {
        // Hundreds of requests from one address: the limits are tested elsewhere.
        s.rate_limit = 0;
        s.trusted_proxies = 1;
    }));
    test(&runtime, &mut runner(cases), &app);
}

/// Strings that look like what a client would send, with the edge characters parsers trip on.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        r"[/\\\t\n%@.:a-z0-9\u{0}\u{202e}\u{ff0f}]{0,40}",
    ]
}

/// Values an HTTP header can carry (visible ASCII and obs-text, no line breaks).
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        "[ -~]{0,200}".prop_map(|s| HeaderValue::from_str(&s).unwrap()),
        prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..200)
            .prop_map(|b| HeaderValue::from_bytes(&b).unwrap()),
        "[ -~]{0,200}".prop_map(|s| HeaderValue::from_str(&format!("Bearer {s}")).unwrap()),
    ]
}

/// A credential with one character changed, inserted or removed (never the same string).
fn altered(original: &str) -> impl Strategy<Value = String> {
    let original = original.to_owned();
    let len = original.len();
    (0..len.max(1), any::<u8>(), 0..3u8).prop_map(move |(at, byte, how)| {
        let mut bytes = original.clone().into_bytes();
        let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/"
            [usize::from(byte) % 68];
        match how {
            0 if at < bytes.len() => bytes[at] = c,
            1 => bytes.insert(at.min(bytes.len()), c),
            _ if !bytes.is_empty() => {
                bytes.remove(at.min(bytes.len() - 1));
            }
            _ => bytes.push(c),
        }
        String::from_utf8(bytes).unwrap()
    })
}

fn check(condition: bool, what: impl Into<String>) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(what.into()))
    }
}

#[test]
fn a_next_path_that_is_accepted_never_leaves_the_site() {
    let base = url::Url::parse("https://lectern.example/login").unwrap();
    let paths = prop_oneof![
        nasty_text(),
        nasty_text().prop_map(|s| format!("/{s}")),
        nasty_text().prop_map(|s| format!("/\\{s}")),
        nasty_text().prop_map(|s| format!("//{s}")),
    ];
    runner(4096)
        .run(&paths, |next| {
            if let Some(path) = local_path(&next) {
                let target = base
                    .join(&path)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                check(
                    target.host_str() == Some("lectern.example") && target.scheme() == "https",
                    format!("{next:?} leads to {target}"),
                )?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_retry_note_opens_only_as_it_was_sealed() {
    let keys = Keys::derive(TEST_SECRET.as_bytes());
    let now = 1_900_000_000;
    runner(2048)
        .run(&nasty_text(), |junk| {
            check(Targets::open(&keys, &junk, now).is_none(), "junk opened")
        })
        .unwrap();
    let sid = "[A-Za-z0-9_-]{22}";
    let notes = (prop::collection::vec(sid, 0..5), 0..4096usize);
    runner(1024)
        .run(&notes, |(sids, at)| {
            let mut owed = Targets::default();
            sids.iter().for_each(|s| owed.add_sid(s));
            let sealed = owed.seal(&keys, now);
            check(
                Targets::open(&keys, &sealed, now).as_ref() == Some(&owed),
                "round trip",
            )?;
            check(
                Targets::open(&keys, &sealed, now + 3601).is_none(),
                "a stale note opened",
            )?;
            let mut bytes = sealed.clone().into_bytes();
            let at = at % bytes.len();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            if let Ok(tampered) = String::from_utf8(bytes)
                && tampered != sealed
            {
                check(
                    Targets::open(&keys, &tampered, now).is_none(),
                    "a tampered note opened",
                )?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn an_access_token_verifies_only_unaltered() {
    let tokens = AccessTokens::new(&[7; 32]);
    let now = 1_900_000_000;
    let (token, claims) = tokens.issue("user-1", "sid-1", now, 300, now).unwrap();
    runner(4096)
        .run(&nasty_text(), |junk| {
            check(tokens.verify(&junk, now).is_none(), "junk verified")
        })
        .unwrap();
    runner(4096)
        .run(&altered(&token), |changed| {
            if changed != token {
                check(
                    tokens.verify_ignoring_expiry(&changed).is_none(),
                    format!("{changed} verified"),
                )?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(tokens.verify(&token, now).unwrap().jti, claims.jti);
}

#[test]
fn forwarded_for_yields_one_of_its_addresses_or_nothing() {
    let hops = prop::collection::vec(
        prop_oneof![
            nasty_text(),
            any::<std::net::IpAddr>().prop_map(|ip| ip.to_string()),
        ],
        0..6,
    );
    runner(4096)
        .run(&(hops, 0..8usize), |(hops, trusted)| {
            let joined = hops.join(", ");
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&joined) {
                headers.insert("x-forwarded-for", value);
            }
            if let Some(ip) = forwarded_client(&headers, trusted) {
                check(trusted > 0, "believed with no trusted proxy")?;
                check(
                    ip.parse::<std::net::IpAddr>().is_ok(),
                    format!("{ip} is no address"),
                )?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn an_email_reads_the_same_once_normalized() {
    runner(8192)
        .run(&nasty_text(), |raw| {
            if let Ok(email) = Email::parse(&raw) {
                let again = Email::parse(email.as_str())
                    .map_err(|e| TestCaseError::fail(format!("{raw:?}: {e}")))?;
                check(
                    again.as_str() == email.as_str(),
                    format!("{raw:?} -> {} -> {}", email.as_str(), again.as_str()),
                )?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_form_field_reads_back_whatever_was_encoded() {
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    runner(4096)
        .run(
            &(nasty_text(), prop::collection::vec(any::<u8>(), 0..64)),
            |(value, junk)| {
                let mut body: Vec<u8> = junk.clone();
                body.extend_from_slice(b"&");
                body.extend(
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("csrf_token", &value)
                        .finish()
                        .into_bytes(),
                );
                let read = form_field(&headers, &body, "csrf_token");
                // The junk before may itself hold a csrf_token: then that one is read.
                let junk_has_it =
                    url::form_urlencoded::parse(&junk).any(|(k, _)| k == "csrf_token");
                if !junk_has_it {
                    check(read.as_deref() == Some(value.as_str()), "field lost")?;
                }
                Ok(())
            },
        )
        .unwrap();
}

/// The status is a clear answer: not a server error.
fn no_server_error(status: StatusCode, what: &str) -> Result<(), TestCaseError> {
    check(!status.is_server_error(), format!("{what}: {status}"))
}

#[test]
fn any_authorization_header_is_refused_with_json() {
    with_app(256, |rt, runner, app| {
        let (token, _) = rt.block_on(async {
            let email = app.signed_up().await;
            app.api_login(&email).await
        });
        let headers = prop_oneof![
            header_value(),
            altered(&token).prop_map(|t| HeaderValue::from_str(&format!("Bearer {t}")).unwrap()),
        ];
        runner
            .run(&headers, |value| {
                if value.to_str().ok() == Some(&format!("Bearer {token}")) {
                    return Ok(());
                }
                rt.block_on(async {
                    let r = app
                        .server
                        .get("/api/v1/me")
                        .clear_cookies()
                        .do_not_save_cookies()
                        .add_header("authorization", value.clone())
                        .expect_failure()
                        .await;
                    check(
                        r.status_code() == StatusCode::UNAUTHORIZED,
                        format!("{value:?}: {}", r.status_code()),
                    )?;
                    let body: serde_json::Value = serde_json::from_slice(r.as_bytes())
                        .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
                    check(body["error"] == "invalid_token", "error code")
                })
            })
            .unwrap();
        // The real one still works: the properties did not pass by refusing everything.
        assert_eq!(rt.block_on(app.me(&token)).status_code(), StatusCode::OK);
    });
}

/// Cookie values a browser could send.
fn cookie_value() -> impl Strategy<Value = String> {
    "[!#-+\\--:<-\\[\\]-~]{0,120}"
}

#[test]
fn any_refresh_cookie_but_the_real_one_is_refused() {
    with_app(192, |rt, runner, app| {
        let (_, real) = rt.block_on(async {
            let email = app.signed_up().await;
            app.api_login(&email).await
        });
        let values = prop_oneof![cookie_value(), altered(real.value())];
        runner
            .run(&values, |value| {
                if value == real.value() {
                    return Ok(());
                }
                rt.block_on(async {
                    let r = app
                        .refresh_with(&Cookie::new("lectern_refresh", value.clone()))
                        .await;
                    check(
                        r.status_code() == StatusCode::UNAUTHORIZED,
                        format!("{value:?}: {}", r.status_code()),
                    )
                })
            })
            .unwrap();
        assert_eq!(
            rt.block_on(app.refresh_with(&real)).status_code(),
            StatusCode::OK
        );
    });
}

#[test]
fn any_session_cookie_but_the_real_one_is_a_visitor() {
    with_app(192, |rt, runner, app| {
        let session = rt.block_on(async {
            let email = app.signed_up().await;
            app.sign_in(&email, PASSWORD, "")
                .await
                .cookie("lectern_session")
        });
        let values = prop_oneof![cookie_value(), altered(session.value())];
        runner
            .run(&values, |value| {
                if value == session.value() {
                    return Ok(());
                }
                rt.block_on(async {
                    let r = app
                        .get_with_session("/dashboard", &Cookie::new("lectern_session", value))
                        .await;
                    check(r.status_code() == StatusCode::SEE_OTHER, "status")?;
                    let to = r.header("location").to_str().unwrap_or("").to_owned();
                    check(to.starts_with("/login"), format!("sent to {to}"))
                })
            })
            .unwrap();
        let page = rt.block_on(app.get_with_session("/dashboard", &session));
        assert_eq!(page.status_code(), StatusCode::OK);
    });
}

#[test]
fn any_next_from_a_sign_in_lands_on_this_site() {
    with_app(96, |rt, runner, app| {
        let email = rt.block_on(app.signed_up());
        runner
            .run(&nasty_text(), |next| {
                rt.block_on(async {
                    let r = app.sign_in(&email, PASSWORD, &next).await;
                    check(r.status_code() == StatusCode::SEE_OTHER, "status")?;
                    let to = r.header("location").to_str().unwrap_or("").to_owned();
                    check(
                        to.starts_with('/') && !to.starts_with("//") && !to.contains('\\'),
                        format!("{next:?} sent to {to}"),
                    )
                })
            })
            .unwrap();
    });
}

#[test]
fn any_form_body_gets_a_clear_answer() {
    let fields = prop::collection::vec(
        (
            prop_oneof![
                Just("email".to_owned()),
                Just("password".to_owned()),
                Just("display_name".to_owned()),
                Just("next".to_owned()),
                Just("retry".to_owned()),
                Just("scope".to_owned()),
                nasty_text(),
            ],
            nasty_text(),
        ),
        0..6,
    );
    let bodies = (
        prop_oneof![
            Just("/login"),
            Just("/register"),
            Just("/logout"),
            Just("/account/password"),
        ],
        fields,
        prop::collection::vec(any::<u8>(), 0..64),
    );
    with_app(128, |rt, runner, app| {
        runner
            .run(&bodies, |(path, fields, junk)| {
                rt.block_on(async {
                    let token = app.csrf("/").await;
                    let mut body = url::form_urlencoded::Serializer::new(String::new());
                    body.append_pair("csrf_token", &token);
                    for (k, v) in &fields {
                        body.append_pair(k, v);
                    }
                    let mut bytes = body.finish().into_bytes();
                    bytes.push(b'&');
                    bytes.extend_from_slice(&junk);
                    let r = app
                        .server
                        .post(path)
                        .content_type("application/x-www-form-urlencoded")
                        .bytes(bytes.into())
                        .await;
                    no_server_error(r.status_code(), path)
                })
            })
            .unwrap();
    });
}

#[test]
fn any_json_body_gets_a_json_answer() {
    let json = prop_oneof![
        any::<Vec<u8>>(),
        nasty_text().prop_map(String::into_bytes),
        (nasty_text(), nasty_text(), any::<bool>()).prop_map(|(email, password, scope)| {
            let mut v = serde_json::json!({"email": email, "password": password});
            if scope {
                v["scope"] = serde_json::Value::String(password.clone());
            }
            v.to_string().into_bytes()
        }),
    ];
    let requests = (
        prop_oneof![
            Just("/api/v1/auth/login"),
            Just("/api/v1/auth/logout"),
            Just("/api/v1/auth/refresh")
        ],
        json,
    );
    with_app(192, |rt, runner, app| {
        runner
            .run(&requests, |(path, body)| {
                rt.block_on(async {
                    let r = app
                        .server
                        .post(path)
                        .clear_cookies()
                        .do_not_save_cookies()
                        .content_type("application/json")
                        .bytes(body.into())
                        .await;
                    no_server_error(r.status_code(), path)?;
                    if !r.status_code().is_success() {
                        serde_json::from_slice::<serde_json::Value>(r.as_bytes())
                            .map_err(|e| TestCaseError::fail(format!("{path}: not JSON: {e}")))?;
                    }
                    Ok(())
                })
            })
            .unwrap();
    });
}

#[test]
fn any_forwarded_for_is_harmless() {
    with_app(128, |rt, runner, app| {
        runner
            .run(&header_value(), |value| {
                rt.block_on(async {
                    let r = app
                        .server
                        .get("/login")
                        .add_header("x-forwarded-for", value)
                        .await;
                    check(r.status_code() == StatusCode::OK, "status")
                })
            })
            .unwrap();
    });
}
