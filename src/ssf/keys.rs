//! The keys Security Event Tokens are signed with: RS256, 2048 bits, shared by every instance
//! through the database (the private key sealed under a key derived from `LECTERN_SECRET`).
//!
//! The newest key signs. One is made the first time a SET is signed or the key set is asked for,
//! and a new one after [`ROTATE_AFTER`]; the key it replaces stays published for the outbox's
//! give-up age, the longest any SET signed with it can still be pending or in flight. Two
//! instances that make a key at once both keep the newer one (the older is retired at once).
//! A key that does not unseal (the secret changed) is replaced the same way.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng as AeadRng},
};
use axum::{Json, extract::State, response::IntoResponse};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::EncodingKey;
use rsa::{
    RsaPrivateKey,
    pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey},
    traits::PublicKeyParts,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{Ssf, SsfResult};
use crate::{clock::Clock, crypto, db::Pool, error::Result};

/// How long a key signs before a new one takes over.
pub const ROTATE_AFTER: i64 = 90 * 24 * 3600;
/// How long this instance trusts what it read of the keys before reading them again (another
/// instance may have rotated).
const REREAD_AFTER: i64 = 300;
const BITS: usize = 2048;

/// The key that signs, as this instance last read it.
#[derive(Clone)]
pub struct Signer {
    pub kid: String,
    pub key: EncodingKey,
    created_at: i64,
    read_at: i64,
}

pub struct SigningKeys {
    db: Pool,
    clock: Clock,
    seal: [u8; 32],
    /// The outbox's give-up age: how long a replaced key stays published.
    keep: i64,
    current: Mutex<Option<Signer>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    kid: String,
    private_sealed: String,
    created_at: i64,
}

impl SigningKeys {
    pub fn new(db: Pool, clock: Clock, secret: &[u8], keep: i64) -> Self {
        Self {
            db,
            clock,
            seal: crypto::derive_key(secret, "lectern ssf signing keys v1"),
            keep,
            current: Mutex::new(None),
        }
    }

    /// The key to sign with now: read (or made) once, read again now and then.
    pub async fn signer(&self) -> Result<Signer> {
        let now = self.clock.now();
        let mut current = self.current.lock().await;
        if let Some(signer) = current.as_ref()
            && now - signer.read_at < REREAD_AFTER
            && now - signer.created_at < ROTATE_AFTER
        {
            return Ok(signer.clone());
        }
        let signer = match self.newest(now).await? {
            Some(signer) if now - signer.created_at < ROTATE_AFTER => signer,
            _ => {
                self.make(now).await?;
                self.newest(now)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the new signing key cannot be read back"))?
            }
        };
        *current = Some(signer.clone());
        Ok(signer)
    }

    /// The newest key that is not retired, if it unseals; older ones are retired.
    async fn newest(&self, now: i64) -> Result<Option<Signer>> {
        let row: Option<Row> = sqlx::query_as(
            "select kid, private_sealed, created_at from ssf_keys
             where retired_at is null order by created_at desc, kid desc limit 1",
        )
        .fetch_optional(&self.db)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        sqlx::query(
            "update ssf_keys set retired_at = $1 where retired_at is null
             and (created_at < $2 or (created_at = $2 and kid < $3))",
        )
        .bind(now)
        .bind(row.created_at)
        .bind(&row.kid)
        .execute(&self.db)
        .await?;
        let Some(der) = self.unseal(&row.private_sealed) else {
            tracing::warn!(kid = %row.kid, "the signing key does not unseal (LECTERN_SECRET changed?); making a new one");
            return Ok(None);
        };
        let key = EncodingKey::from_rsa_der(&der);
        Ok(Some(Signer {
            kid: row.kid,
            key,
            created_at: row.created_at,
            read_at: now,
        }))
    }

    /// Makes a key and stores it (it becomes the newest).
    async fn make(&self, now: i64) -> Result<()> {
        let private =
            tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, BITS))
                .await
                .map_err(|e| anyhow::anyhow!("key generation stopped: {e}"))?
                .map_err(|e| anyhow::anyhow!("key generation failed: {e}"))?;
        let kid = crypto::random_token(12);
        let public = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        });
        let der = private
            .to_pkcs1_der()
            .map_err(|e| anyhow::anyhow!("key encoding failed: {e}"))?;
        let sealed = self.sealed(der.as_bytes())?;
        sqlx::query(
            "insert into ssf_keys (kid, public_jwk, private_sealed, created_at) values ($1, $2, $3, $4)",
        )
        .bind(&kid)
        .bind(public.to_string())
        .bind(sealed)
        .bind(now)
        .execute(&self.db)
        .await?;
        tracing::info!(%kid, "made a new signing key for Security Event Tokens");
        Ok(())
    }

    /// The published key set: the signing key and the replaced ones still kept.
    pub async fn published(&self) -> Result<Value> {
        self.signer().await?;
        let now = self.clock.now();
        let rows: Vec<(String,)> = sqlx::query_as(
            "select public_jwk from ssf_keys where retired_at is null or retired_at > $1
             order by created_at desc, kid desc",
        )
        .bind(now - self.keep)
        .fetch_all(&self.db)
        .await?;
        let keys: Vec<Value> = rows
            .iter()
            .filter_map(|(jwk,)| serde_json::from_str(jwk).ok())
            .collect();
        Ok(json!({ "keys": keys }))
    }

    fn sealed(&self, plain: &[u8]) -> Result<String> {
        let cipher = Aes256Gcm::new(&self.seal.into());
        let nonce = Aes256Gcm::generate_nonce(&mut AeadRng);
        let mut sealed = nonce.to_vec();
        sealed.extend(
            cipher
                .encrypt(&nonce, plain)
                .map_err(|_| anyhow::anyhow!("sealing the signing key failed"))?,
        );
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    fn unseal(&self, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let cipher = Aes256Gcm::new(&self.seal.into());
        let der = cipher.decrypt(&Nonce::from(nonce), ciphertext).ok()?;
        // Only a key that parses is handed to the signer.
        RsaPrivateKey::from_pkcs1_der(&der).ok()?;
        Some(der)
    }
}

/// `GET /ssf/jwks`.
pub async fn jwks(State(ssf): State<Ssf>) -> SsfResult<impl IntoResponse> {
    let ssf = &ssf;
    Ok(Json(ssf.keys.published().await?))
}
