//! Where a response sends the browser: htmx-aware redirects, the login page with `next`, and the
//! rule that `next` is a path on this site.

use axum::{
    extract::FromRequestParts,
    http::{Method, StatusCode, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use axum_htmx::{HxCurrentUrl, HxRedirect, HxRequest};

/// Where the learner lands after signing out; the query shows the notice (a flash cookie would be
/// wiped by `Clear-Site-Data: "cookies"` in the same response).
pub const SIGNED_OUT_HOME: &str = "/?signed_out=1";

/// A redirect that htmx follows with a full navigation (200 + `HX-Redirect`) and a plain browser
/// follows as a 303.
pub fn redirect(htmx: bool, to: &str) -> Response {
    if htmx {
        (StatusCode::OK, HxRedirect(to.to_owned()), ()).into_response()
    } else {
        Redirect::to(to).into_response()
    }
}

/// Accepts `next` only as a path on this site: no scheme, no `//host`, no backslashes or control
/// characters (browsers turn `/\evil` and `/\t/evil` into `//evil`). Characters beyond ASCII come
/// back percent-encoded, so the path always fits in a `Location` header.
pub fn local_path(next: &str) -> Option<String> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 512
        && !next
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace());
    ok.then(|| percent_encoding::utf8_percent_encode(next, percent_encoding::CONTROLS).to_string())
}

/// Percent-encodes a value for a query string.
pub fn query_escape(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The answer to a page that needs a sign-in: 303 to the login page (with why, when the system
/// ended the sign-in), or for htmx 401 with `HX-Redirect`, so htmx navigates instead of swapping a
/// login form into a fragment.
pub async fn login_required(parts: &mut Parts, reason: Option<&str>) -> Response {
    let next = return_path(parts).await;
    let mut to = format!("/login?next={}", query_escape(&next));
    if let Some(reason) = reason {
        to.push_str("&reason=");
        to.push_str(&query_escape(reason));
    }
    let Ok(HxRequest(htmx)) = HxRequest::from_request_parts(parts, &()).await;
    if htmx {
        (StatusCode::UNAUTHORIZED, HxRedirect(to), ()).into_response()
    } else {
        Redirect::to(&to).into_response()
    }
}

/// Where to come back to after signing in: the page itself for a GET; for anything else (an htmx
/// enrol, a form post) the page it was sent from, since the action itself cannot be revisited.
async fn return_path(parts: &mut Parts) -> String {
    if parts.method == Method::GET {
        return parts
            .uri
            .path_and_query()
            .map_or("/dashboard", |pq| pq.as_str())
            .to_owned();
    }
    let Ok(HxCurrentUrl(current)) = HxCurrentUrl::from_request_parts(parts, &()).await;
    let referer = parts
        .headers
        .get(axum::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<axum::http::Uri>().ok());
    current
        .into_iter()
        .chain(referer)
        .filter_map(|uri| uri.path_and_query().map(|pq| pq.as_str().to_owned()))
        .find(|path| local_path(path).is_some())
        .unwrap_or_else(|| "/dashboard".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_accepted() {
        for ok in ["/dashboard", "/account?tab=1", "/courses/rust-101"] {
            assert_eq!(local_path(ok).as_deref(), Some(ok));
        }
        assert_eq!(
            local_path("/courses/café").as_deref(),
            Some("/courses/caf%C3%A9")
        );
    }

    #[test]
    fn anything_that_could_leave_the_site_is_refused() {
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "javascript:alert(1)",
            "dashboard",
            "",
            "/ /evil",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?} must be refused");
        }
    }

    #[tokio::test]
    async fn an_action_returns_to_the_page_it_was_sent_from() {
        let (mut parts, ()) = axum::http::Request::post("/courses/x/enrol")
            .header("hx-request", "true")
            .header("hx-current-url", "http://localhost/dashboard?tab=2")
            .body(())
            .unwrap()
            .into_parts();
        let response = login_required(&mut parts, Some("idle")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["hx-redirect"],
            "/login?next=%2Fdashboard%3Ftab%3D2&reason=idle"
        );
    }
}
