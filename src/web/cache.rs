//! What browsers and proxies may keep. Nothing rendered for a signed-in learner, and nothing
//! that sets or clears an auth cookie, is ever stored (`Cache-Control: no-store`).

use axum::{
    extract::Request,
    http::{HeaderValue, header},
    middleware::Next,
    response::Response,
};
use axum_extra::extract::cookie::{Cookie, CookieJar};

use super::cookies::{SESSION_COOKIE, is_auth_cookie};

/// Marks a response `no-store`.
pub fn set_no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Whether a response sets or clears one of the auth cookies.
pub fn touches_auth_cookie(response: &Response) -> bool {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| Cookie::parse(v).ok())
        .any(|c| is_auth_cookie(c.name()))
}

/// For pages: a request that carries a session cookie may be answered for a learner (their name,
/// their CSRF token, their courses, an error page with their header), so its response is
/// `no-store`, as is any response that sets or clears an auth cookie.
pub async fn no_store_for_learners(request: Request, next: Next) -> Response {
    let learner = CookieJar::from_headers(request.headers())
        .get(SESSION_COOKIE)
        .is_some();
    let mut response = next.run(request).await;
    if learner || touches_auth_cookie(&response) {
        set_no_store(&mut response);
    }
    response
}

/// For the API: every answer is about one caller, so none is stored.
pub async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    set_no_store(&mut response);
    response
}
