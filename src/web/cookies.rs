//! The auth cookies' names and attributes, and the one place their removals are built.

use axum_extra::extract::cookie::{Cookie, SameSite};

/// The browser session (tower-sessions): `HttpOnly; SameSite=Lax; Path=/`.
pub const SESSION_COOKIE: &str = "lectern_session";
/// The signed refresh token: `HttpOnly; SameSite=Strict; Path=/api/v1/auth`.
pub const REFRESH_COOKIE: &str = "lectern_refresh";
pub const REFRESH_PATH: &str = "/api/v1/auth";

/// Whether a cookie name is one of Lectern's auth cookies.
pub fn is_auth_cookie(name: &str) -> bool {
    name == SESSION_COOKIE || name == REFRESH_COOKIE || name == BOUND_COOKIE
}

/// A device-bound sign-in's short-lived cookie (see `auth::bound`): `HttpOnly; Secure;
/// SameSite=Lax; Path=/`.
pub const BOUND_COOKIE: &str = "lectern_bound";

/// A removal: the same name, path and attributes the cookie was set with, an empty value, and
/// `Max-Age=0`, so the browser drops exactly that cookie.
fn removal(
    name: &'static str,
    path: &'static str,
    same_site: SameSite,
    secure: bool,
) -> Cookie<'static> {
    Cookie::build((name, ""))
        .path(path)
        .http_only(true)
        .same_site(same_site)
        .secure(secure)
        .max_age(time::Duration::ZERO)
        .build()
}

/// The removals of both auth cookies, as every sign-out sends them.
pub fn auth_cookie_removals(secure: bool) -> [Cookie<'static>; 2] {
    [
        removal(SESSION_COOKIE, "/", SameSite::Lax, secure),
        removal(REFRESH_COOKIE, REFRESH_PATH, SameSite::Strict, secure),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_name_the_exact_path_and_expire_at_once() {
        let [session, refresh] = auth_cookie_removals(true);
        let session = session.to_string();
        let refresh = refresh.to_string();
        assert!(session.starts_with("lectern_session=;"), "{session}");
        assert!(
            session.contains("Path=/") && session.contains("Max-Age=0"),
            "{session}"
        );
        assert!(
            session.contains("HttpOnly") && session.contains("Secure"),
            "{session}"
        );
        assert!(refresh.starts_with("lectern_refresh=;"), "{refresh}");
        assert!(refresh.contains("Path=/api/v1/auth") && refresh.contains("Max-Age=0"));
    }
}
