//! Form and query extractors whose rejections are error pages, and the lenient body reading a
//! sign-out needs (it must work whatever the body holds).

use std::borrow::Cow;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// Form bodies larger than this are refused before parsing (and cut here where they must not be).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// `axum::Form` whose rejection (wrong content type, undecodable body) is an error page.
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PageForm<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|axum::Form(value)| Self(value))
            .map_err(|rejection| AppError::Validation {
                field: "form",
                message: rejection.body_text(),
            })
    }
}

/// A form body read into `T` when the request has one; a request without a form body (an htmx
/// button that sends only its CSRF header) reads as `T::default()`.
pub struct MaybeForm<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for MaybeForm<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if !is_form(req.headers()) {
            return Ok(Self(T::default()));
        }
        PageForm::<T>::from_request(req, state)
            .await
            .map(|PageForm(value)| Self(value))
    }
}

/// A page's query string read into `T`: a field given twice (`?next=/a&next=/b`, a link copied
/// twice) takes its first value, as browsers and most servers read it; anything else that does
/// not fit is an error page.
pub struct PageQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for PageQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        let firsts = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(name, _)| seen.insert(name.clone()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(firsts)
            .finish();
        serde_urlencoded::from_str(&query)
            .map(Self)
            .map_err(|err| AppError::Validation {
                field: "query",
                message: format!("The address has a query that cannot be read: {err}."),
            })
    }
}

/// One path segment as text; one that is not (undecodable UTF-8) names nothing here: the 404
/// page, not axum's plain-text 400.
pub struct PagePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PagePath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|_| AppError::NotFound)
    }
}

/// Whether a checkbox's value says yes (`on`, as browsers send it, or `1` or `true`).
pub fn checked(value: &str) -> bool {
    matches!(value.trim(), "on" | "1" | "true")
}

/// Reads at most `limit` bytes of a body and stops there: a larger or broken body yields what
/// arrived, never an error.
pub async fn read_prefix(body: Body, limit: usize) -> Bytes {
    let mut body = body;
    let mut buf = Vec::new();
    while buf.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = limit - buf.len();
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    Bytes::from(buf)
}

/// Whether the body is `application/x-www-form-urlencoded`.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

/// One field of a form body, read leniently (malformed escapes are decoded as far as they go);
/// other bodies have no fields.
pub fn form_field(headers: &HeaderMap, body: &[u8], name: &str) -> Option<String> {
    if !is_form(headers) {
        return None;
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// One field of an address's query, read as leniently as [`form_field`] reads a body.
pub fn query_field<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_field_is_read_leniently() {
        assert_eq!(
            query_field(Some("a=1&scope=global"), "scope").as_deref(),
            Some("global")
        );
        assert_eq!(
            query_field(Some("scope=%zz&scope=x"), "scope").as_deref(),
            Some("%zz")
        );
        assert_eq!(query_field(Some("v=1+2%21"), "v").as_deref(), Some("1 2!"));
        assert_eq!(query_field(Some("other=1"), "scope"), None);
        assert_eq!(query_field(None, "scope"), None);
    }

    #[tokio::test]
    async fn a_prefix_is_read_whatever_the_size() {
        let body = Body::from("a".repeat(100));
        assert_eq!(read_prefix(body, 10).await.len(), 10);
        let body = Body::from("short");
        assert_eq!(&read_prefix(body, 10).await[..], b"short");
    }

    #[test]
    fn form_fields_survive_malformed_neighbours() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let body = b"csrf_token=abc&junk=%%%ZZ&x";
        assert_eq!(form_field(&h, body, "csrf_token").as_deref(), Some("abc"));
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(form_field(&h, body, "csrf_token"), None);
    }
}
