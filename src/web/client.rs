//! Who is on the other end of the connection, as far as the audit log and rate limits care.

use std::{convert::Infallible, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};

/// How many reverse proxies in front append to `X-Forwarded-For` (`LECTERN_TRUSTED_PROXIES`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustedProxies(pub usize);

/// The client address and user agent, for sign-in records and the audit log.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

impl ClientInfo {
    /// For work no request started (the command line).
    pub fn operator() -> Self {
        Self {
            ip: "command line".to_owned(),
            user_agent: String::new(),
        }
    }

    /// Whether this is an operator at the command line.
    pub fn is_operator(&self) -> bool {
        self.ip == "command line" && self.user_agent.is_empty()
    }

    /// For work the server does by itself (ending sign-ins whose browser was closed).
    pub fn system() -> Self {
        Self {
            ip: "server".to_owned(),
            user_agent: String::new(),
        }
    }
}

impl<S> FromRequestParts<S> for ClientInfo
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let TrustedProxies(trusted) = TrustedProxies::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical().to_string());
        let ip = forwarded_client(&parts.headers, trusted)
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
/// client can forge. With no trusted proxies the header is ignored. (No crate reads this rule.)
pub fn forwarded_client(headers: &HeaderMap, trusted: usize) -> Option<String> {
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
        .map(|ip| ip.to_canonical().to_string())
}

/// HTTP/2 carries the host as the request's authority, not as a `Host` header: this gives such a
/// request the header, so every check that compares an `Origin` with the host reads one place.
/// A plain function of the request, so the layer that applies it boxes nothing.
pub fn host_from_authority<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    if !request.headers().contains_key(header::HOST)
        && let Some(value) = request
            .uri()
            .authority()
            .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    request
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
}
