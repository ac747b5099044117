//! The parsers one by one, each with the property it keeps: the first byte picks the parser,
//! the rest is its input.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use lectern::{
    accounts::{DisplayName, Email, Password},
    auth::{AccessTokens, Keys, sign_out::Owed},
    web::{client::forwarded_client, forms::form_field, navigation::local_path},
};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_900_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 6 {
        // `next`: what is accepted stays on the site.
        0 => {
            if let Some(path) = local_path(&text) {
                let base = url::Url::parse("https://lectern.example/login").unwrap();
                let target = base.join(&path).unwrap();
                assert_eq!(target.host_str(), Some("lectern.example"), "{text:?}");
            }
        }
        // The sealed retry note: nothing opens but what the server sealed.
        1 => {
            let keys = Keys::derive(b"fuzzing secret that is long enough to be one");
            assert!(Owed::open(&keys, &text, NOW).is_none());
        }
        // A JWT: nothing verifies that the server did not issue.
        2 => {
            let tokens = AccessTokens::new(&[7; 32]);
            assert!(tokens.verify_ignoring_expiry(&text).is_none());
        }
        // Emails, display names, passwords: never a panic; a normalized email reads the same.
        3 => {
            if let Ok(email) = Email::parse(&text) {
                let again = Email::parse(email.as_str()).expect("a normalized email parses");
                assert_eq!(again.as_str(), email.as_str());
            }
            let _ = DisplayName::parse(&text);
            let _ = Password::parse(text.clone().into_owned());
        }
        // A form body: any field reads without a panic.
        4 => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            for name in ["csrf_token", "email", "password", "next", "retry", "scope"] {
                let _ = form_field(&headers, rest, name);
            }
        }
        // X-Forwarded-For: an address from the header, or nothing.
        _ => {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(rest) {
                headers.insert("x-forwarded-for", value);
            }
            for trusted in 0..4 {
                if let Some(ip) = forwarded_client(&headers, trusted) {
                    assert!(trusted > 0);
                    assert!(ip.parse::<std::net::IpAddr>().is_ok());
                }
            }
        }
    }
});
