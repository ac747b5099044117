//! Access tokens: short-lived JWTs, HS256 only (pinned: a token naming any other algorithm,
//! including `none`, is refused before its signature is looked at).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "lectern";
pub const AUDIENCE: &str = "lectern-api";
/// Clock skew tolerated on `exp`, in seconds.
pub const LEEWAY: u64 = 5;

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
}

/// Signing and verification keys plus the two validation rules.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    strict: Validation,
    /// For logout only: a token that has expired still names the sign-in to end.
    ignoring_expiry: Validation,
}

impl JwtKeys {
    pub fn new(key: &[u8; 32]) -> Self {
        let mut strict = Validation::new(Algorithm::HS256);
        strict.set_issuer(&[ISSUER]);
        strict.set_audience(&[AUDIENCE]);
        strict.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        strict.leeway = LEEWAY;
        let mut ignoring_expiry = strict.clone();
        ignoring_expiry.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            strict,
            ignoring_expiry,
        }
    }

    /// Signs a new token for `user_id` under sign-in `sid`, valid for `ttl_secs`.
    pub fn issue(
        &self,
        user_id: &str,
        sid: &str,
        now: i64,
        ttl_secs: i64,
    ) -> anyhow::Result<(String, Claims)> {
        let claims = Claims {
            sub: user_id.to_owned(),
            jti: super::random_token(16),
            iat: now,
            exp: now + ttl_secs,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sid: sid.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Checks signature, algorithm, issuer, audience and expiry. Revocation is the caller's next step.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.strict)
            .ok()
            .map(|data| data.claims)
    }

    /// As `verify`, but an expired token still answers (logout uses this to find the sign-in).
    pub fn verify_ignoring_expiry(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.ignoring_expiry)
            .ok()
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    fn keys(byte: u8) -> JwtKeys {
        JwtKeys::new(&[byte; 32])
    }

    fn now() -> i64 {
        crate::web::now()
    }

    #[test]
    fn an_issued_token_verifies_with_all_claims() {
        let k = keys(1);
        let (token, claims) = k.issue("u1", "s1", now(), 300).unwrap();
        let verified = k.verify(&token).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(
            (verified.iss.as_str(), verified.aud.as_str()),
            (ISSUER, AUDIENCE)
        );
        assert_eq!(verified.exp - verified.iat, 300);
        assert_eq!(verified.jti.len(), 22);
    }

    #[test]
    fn an_expired_token_is_refused_but_still_names_its_sign_in_for_logout() {
        let k = keys(1);
        let (token, _) = k.issue("u1", "s1", now() - 600, 300).unwrap();
        assert!(k.verify(&token).is_none());
        assert_eq!(k.verify_ignoring_expiry(&token).unwrap().sid, "s1");
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let (token, _) = keys(2).issue("u1", "s1", now(), 300).unwrap();
        assert!(keys(1).verify(&token).is_none());
        assert!(keys(1).verify_ignoring_expiry(&token).is_none());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let k = keys(1);
        let (token, claims) = k.issue("u1", "s1", now(), 300).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims.clone();
        forged.sub = "someone-else".into();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert!(k.verify(&tampered).is_none());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let k = keys(1);
        let (token, claims) = k.issue("u1", "s1", now(), 300).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        for alg in ["none", "HS512", "RS256", "ES256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            assert!(
                k.verify(&format!("{header}.{payload}.")).is_none(),
                "{alg} with no signature"
            );
            let sig = token.split('.').nth(2).unwrap();
            assert!(
                k.verify(&format!("{header}.{payload}.{sig}")).is_none(),
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
        assert!(k.verify(&other).is_none());
    }

    #[test]
    fn wrong_issuer_or_audience_is_refused() {
        let k = keys(1);
        let (_, claims) = k.issue("u1", "s1", now(), 300).unwrap();
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
            assert!(k.verify(&token).is_none(), "iss={iss} aud={aud}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        let k = keys(1);
        for bad in ["", "a.b.c", "not a token", &"x".repeat(20_000)] {
            assert!(k.verify(bad).is_none());
        }
    }
}
