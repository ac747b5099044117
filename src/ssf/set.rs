//! Security Event Tokens (RFC 8417, as SSF 1.0 profiles them): made from an outbox row when it is
//! sent, signed RS256 with the current key. One event each; `iss`, `jti`, `iat`, `aud`, `txn`,
//! `sub_id` and `events`; never `sub` or `exp`. The same row always gives the same claims, so a
//! SET sent again is the same SET.

use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use super::keys::Signer;
use crate::{
    auth::records::EndReason,
    error::{AppError, Result},
    signals::Kind,
};

/// Why a sign-in ended, for an administrator and for the learner.
fn reasons(reason: Option<EndReason>) -> (&'static str, &'static str) {
    match reason {
        Some(EndReason::SignedOut) => ("The learner signed out.", "You signed out."),
        Some(EndReason::Replaced) => (
            "The same browser signed in again.",
            "You signed in again in this browser.",
        ),
        Some(EndReason::Revoked) => (
            "The sign-in was ended from another device or by an administrator.",
            "You were signed out from another device or by an administrator.",
        ),
        Some(EndReason::RefreshReuse) => (
            "A refresh token was used twice: possible theft.",
            "You were signed out to protect your account.",
        ),
        Some(EndReason::Idle) => (
            "No activity for the idle timeout.",
            "You were signed out after a while without activity.",
        ),
        Some(EndReason::Expired) => (
            "The sign-in reached its longest lifetime.",
            "Your sign-in reached its time limit.",
        ),
        Some(EndReason::PasswordChanged) => (
            "The learner changed their password.",
            "Your password was changed.",
        ),
        Some(EndReason::Closed) => (
            "The browser of a sign-in on a shared computer was closed.",
            "The browser you used on a shared computer was closed.",
        ),
        Some(EndReason::Provider) => (
            "The identity provider signed the learner out.",
            "Your organisation's sign-in service signed you out.",
        ),
        Some(EndReason::AccountDeleted) => {
            ("The account was deleted.", "Your account was deleted.")
        }
        None => ("The sign-in ended.", "You were signed out."),
    }
}

/// One outbox row, as the SET needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub jti: String,
    pub stream_id: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub sign_in_id: Option<String>,
    pub reason: Option<String>,
    pub initiator: Option<String>,
    pub detail: Option<String>,
    pub txn: String,
    pub at: i64,
}

/// The claims of the SET `row` makes for a stream whose events carry `aud`.
pub fn claims(row: &Row, issuer: &str, aud: &str) -> Option<Value> {
    let kind = Kind::from_stored(&row.kind)?;
    let user = |id: &str| json!({ "format": "iss_sub", "iss": issuer, "sub": id });
    let stream = json!({ "format": "opaque", "id": row.stream_id });
    let (sub_id, event) = match kind {
        Kind::SessionRevoked => {
            let reason = row.reason.as_deref().and_then(EndReason::from_stored);
            let (admin, learner) = reasons(reason);
            (
                json!({
                    "format": "complex",
                    "user": user(row.user_id.as_deref()?),
                    "session": { "format": "opaque", "id": row.sign_in_id.as_deref()? },
                }),
                json!({
                    "event_timestamp": row.at,
                    "initiating_entity": row.initiator.as_deref().unwrap_or("system"),
                    "reason_admin": { "en": admin },
                    "reason_user": { "en": learner },
                }),
            )
        }
        Kind::CredentialChange => (
            user(row.user_id.as_deref()?),
            json!({
                "credential_type": "password",
                "change_type": "update",
                "event_timestamp": row.at,
                "initiating_entity": row.initiator.as_deref().unwrap_or("user"),
                "reason_admin": { "en": "The learner changed their password." },
                "reason_user": { "en": "Your password was changed." },
            }),
        ),
        Kind::AccountPurged => (user(row.user_id.as_deref()?), json!({})),
        Kind::AccountDisabled => (user(row.user_id.as_deref()?), json!({})),
        Kind::Verification => match &row.detail {
            Some(state) => (stream, json!({ "state": state })),
            None => (stream, json!({})),
        },
        Kind::StreamUpdated => {
            let mut event = json!({ "status": row.reason.as_deref().unwrap_or("enabled") });
            if let Some(why) = &row.detail {
                event["reason"] = json!(why);
            }
            (stream, event)
        }
    };
    Some(json!({
        "iss": issuer,
        "jti": row.jti,
        "iat": row.at,
        "aud": aud,
        "txn": row.txn,
        "sub_id": sub_id,
        "events": { kind.uri(): event },
    }))
}

/// The signed SET.
pub fn sign(claims: &Value, signer: &Signer) -> Result<String> {
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("secevent+jwt".to_owned());
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &signer.key)
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("signing a SET: {e}")))
}
