//! Pieces every page handler shares: the layout, rendering, redirects, client facts and the `next` rule.

use std::{convert::Infallible, net::SocketAddr};

use askama::Template;
use axum::{
    extract::{ConnectInfo, FromRequest, FromRequestParts},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
};

use serde::de::DeserializeOwned;

use crate::error::{AppError, Result};

/// What `templates/base.html` needs on every page.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub csrf_token: String,
    /// The signed-in learner's display name; `None` for visitors.
    pub user_name: Option<String>,
    pub notice: Option<Notice>,
    /// The homepage right after a logout: the script clears client state and tells other tabs.
    pub signed_out: bool,
}

impl Layout {
    /// The layout for a request: the signed-in learner's name and CSRF token, or a visitor's
    /// stateless token (so showing a page to a visitor never creates a session).
    pub fn new(state: &crate::AppState, user: Option<&crate::auth::CurrentUser>) -> Self {
        match user {
            Some(current) => Self {
                csrf_token: current.csrf.clone(),
                user_name: Some(current.user.display_name.clone()),
                ..Self::default()
            },
            None => Self {
                csrf_token: crate::auth::csrf::anonymous_token(&state.keys, now()),
                ..Self::default()
            },
        }
    }

    /// A layout for pages rendered without a request context (error pages).
    pub fn bare() -> Self {
        Self::default()
    }

    pub fn authenticated(&self) -> bool {
        self.user_name.is_some()
    }
}

/// A one-line message in the page's `aria-live` region.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `success`, `info` or `error`: the CSS modifier.
    pub kind: &'static str,
    pub text: String,
}

impl Notice {
    pub fn info(text: impl Into<String>) -> Self {
        Self {
            kind: "info",
            text: text.into(),
        }
    }

    pub fn success(text: impl Into<String>) -> Self {
        Self {
            kind: "success",
            text: text.into(),
        }
    }
}

/// Renders a template, turning a render failure into an `AppError`.
pub fn render(template: &impl Template) -> Result<Html<String>> {
    template.render().map(Html).map_err(|err| {
        AppError::Unexpected(anyhow::Error::new(err).context("rendering a template"))
    })
}

/// Renders a template with a status other than 200.
pub fn render_with(status: StatusCode, template: &impl Template) -> Result<Response> {
    Ok((status, render(template)?).into_response())
}

/// `Cache-Control: no-store`, for authenticated pages and any response touching auth cookies.
pub fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether htmx sent the request.
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers
        .get("hx-request")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// A redirect that htmx follows with a full navigation and a plain browser follows as a 303.
pub fn redirect(headers: &HeaderMap, to: &str) -> Response {
    if is_htmx(headers) {
        let mut response = StatusCode::OK.into_response();
        if let Ok(value) = HeaderValue::from_str(to) {
            response.headers_mut().insert("hx-redirect", value);
        }
        response
    } else {
        Redirect::to(to).into_response()
    }
}

/// Accepts `next` only as a path on this site: no scheme, no `//host`, no backslashes or control
/// characters (browsers turn `/\evil` and `/\t/evil` into `//evil`).
pub fn local_path(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 512
        && !next
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace());
    ok.then_some(next)
}

/// The value of the request's cookie of this name (the last one, as the session layer reads it).
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .rfind(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether the request sent a cookie of this name.
pub fn sent_cookie(headers: &HeaderMap, name: &str) -> bool {
    cookie_value(headers, name).is_some()
}

/// One field of an `application/x-www-form-urlencoded` body (other bodies have none).
pub fn form_field(headers: &HeaderMap, body: &[u8], name: &str) -> Option<String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Percent-encodes a value for a query string.
pub fn query_escape(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `axum::Form` whose rejection (wrong content type, undecodable body) is an error page.
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PageForm<T> {
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|axum::Form(value)| Self(value))
            .map_err(|rejection| AppError::Validation {
                field: "form",
                message: rejection.body_text(),
            })
    }
}

/// `axum::extract::Query` whose rejection is an error page.
pub struct PageQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for PageQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| AppError::Validation {
                field: "query",
                message: rejection.body_text(),
            })
    }
}

/// The peer address and user agent, for sign-in records and the audit log.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

impl FromRequestParts<crate::AppState> for ClientInfo {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let ip = forwarded_client(&parts.headers, state.settings.trusted_proxies)
            .or(peer)
            .unwrap_or_else(|| "unknown".to_owned());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect())
            .unwrap_or_default();
        Ok(Self { ip, user_agent })
    }
}

/// The client address as the outermost of `trusted` proxies saw it: each proxy appends the peer
/// it saw to `X-Forwarded-For`, so the entry `trusted` places from the right is the first one no
/// client can forge. With no trusted proxies the header is ignored.
fn forwarded_client(headers: &HeaderMap, trusted: usize) -> Option<String> {
    if trusted == 0 {
        return None;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let hop = hops.get(hops.len().checked_sub(trusted)?)?;
    hop.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A timestamp for people: `2026-11-23 21:40 UTC`.
pub fn format_time(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hops_of_trusted_proxies_are_believed() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 1.2.3.4".parse().unwrap());
        assert_eq!(forwarded_client(&h, 0), None);
        assert_eq!(forwarded_client(&h, 1).as_deref(), Some("1.2.3.4"));
        assert_eq!(forwarded_client(&h, 2).as_deref(), Some("6.6.6.6"));
        assert_eq!(forwarded_client(&h, 3), None);
        h.insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(forwarded_client(&h, 1), None);
    }

    #[test]
    fn local_paths_are_accepted() {
        for ok in ["/dashboard", "/account?tab=1", "/courses/rust-101"] {
            assert_eq!(local_path(ok), Some(ok));
        }
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
}
