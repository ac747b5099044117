//! Access tokens: short-lived JWTs, HS256 only (pinned: a token naming any other algorithm,
//! including `none`, is refused before its signature is looked at).
//!
//! jsonwebtoken checks signature, algorithm, issuer and audience; expiry is checked here against
//! the application's clock, so tests move time instead of waiting for it.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "lectern";
pub const AUDIENCE: &str = "lectern-api";
/// Clock skew tolerated on `exp` (and `iat`), in seconds.
pub const LEEWAY: i64 = 5;

/// The claims of a Lectern access token. `sid` names the sign-in, never the session cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub sid: String,
    /// When the learner last entered their password for this sign-in (RFC 9470).
    pub auth_time: i64,
}

impl Claims {
    /// The last moment a verifier accepts this token: its `exp` plus the leeway. Its revocation
    /// entry must live at least this long.
    pub fn accepted_until(&self) -> i64 {
        self.exp + LEEWAY
    }
}

/// Signing and verification keys plus the validation rules.
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl AccessTokens {
    pub fn new(key: &[u8; 32]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // Time is the application's clock's (see `verify`).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
        }
    }

    /// Signs a new token for `user_id` under sign-in `sid`, valid for `ttl_secs` from `now`, whose
    /// learner last entered the password at `auth_time`.
    pub fn issue(
        &self,
        user_id: &str,
        sid: &str,
        now: i64,
        ttl_secs: i64,
        auth_time: i64,
    ) -> anyhow::Result<(String, Claims)> {
        let claims = Claims {
            sub: user_id.to_owned(),
            jti: crate::crypto::random_token(16),
            iat: now,
            exp: now + ttl_secs,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sid: sid.to_owned(),
            auth_time,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Checks signature, algorithm, issuer, audience and, at `now`, expiry (with the leeway).
    /// Revocation is the caller's next step.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        self.verify_ignoring_expiry(token)
            .filter(|c| now <= c.accepted_until() && c.iat <= now + LEEWAY)
    }

    /// As `verify`, but an expired token still answers: a sign-out uses this to find the sign-in.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    fn keys(byte: u8) -> AccessTokens {
        AccessTokens::new(&[byte; 32])
    }

    const NOW: i64 = 1_900_000_000;

    #[test]
    fn an_issued_token_verifies_with_all_claims() {
        let k = keys(1);
        let (token, claims) = k.issue("u1", "s1", NOW, 300, NOW).unwrap();
        let verified = k.verify(&token, NOW).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(
            (verified.iss.as_str(), verified.aud.as_str()),
            (ISSUER, AUDIENCE)
        );
        assert_eq!(verified.exp - verified.iat, 300);
        assert_eq!(verified.jti.len(), 22);
    }

    #[test]
    fn a_token_is_accepted_until_exp_plus_leeway_and_no_longer() {
        let k = keys(1);
        let (token, claims) = k.issue("u1", "s1", NOW, 300, NOW).unwrap();
        assert!(k.verify(&token, NOW + 300 + LEEWAY).is_some());
        assert!(k.verify(&token, NOW + 300 + LEEWAY + 1).is_none());
        assert_eq!(claims.accepted_until(), NOW + 300 + LEEWAY);
        assert_eq!(
            k.verify_ignoring_expiry(&token).unwrap().sid,
            "s1",
            "an expired token still names its sign-in for a sign-out"
        );
        assert!(k.verify(&token, NOW - 60).is_none(), "issued in the future");
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let (token, _) = keys(2).issue("u1", "s1", NOW, 300, NOW).unwrap();
        assert!(keys(1).verify(&token, NOW).is_none());
        assert!(keys(1).verify_ignoring_expiry(&token).is_none());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let k = keys(1);
        let (token, claims) = k.issue("u1", "s1", NOW, 300, NOW).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims.clone();
        forged.sub = "someone-else".into();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert!(k.verify(&tampered, NOW).is_none());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let k = keys(1);
        let (token, claims) = k.issue("u1", "s1", NOW, 300, NOW).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        for alg in ["none", "HS512", "RS256", "ES256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            assert!(
                k.verify(&format!("{header}.{payload}."), NOW).is_none(),
                "{alg} with no signature"
            );
            let sig = token.split('.').nth(2).unwrap();
            assert!(
                k.verify(&format!("{header}.{payload}.{sig}"), NOW)
                    .is_none(),
                "{alg} relabelled"
            );
        }
        // HS512 signed with the same secret: right key, wrong algorithm.
        let other = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(&[1; 32]),
        )
        .unwrap();
        assert!(k.verify(&other, NOW).is_none());
    }

    #[test]
    fn wrong_issuer_or_audience_is_refused() {
        let k = keys(1);
        let (_, claims) = k.issue("u1", "s1", NOW, 300, NOW).unwrap();
        for (iss, aud) in [("someone", AUDIENCE), (ISSUER, "another-api")] {
            let c = Claims {
                iss: iss.into(),
                aud: aud.into(),
                ..claims.clone()
            };
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(&[1; 32]),
            )
            .unwrap();
            assert!(k.verify(&token, NOW).is_none(), "iss={iss} aud={aud}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        let k = keys(1);
        for bad in ["", "a.b.c", "not a token", &"x".repeat(20_000)] {
            assert!(k.verify(bad, NOW).is_none());
        }
    }
}
