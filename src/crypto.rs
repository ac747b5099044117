//! Small cryptographic building blocks shared by every layer: random tokens, hashes and the
//! derivation of one key per purpose from `LECTERN_SECRET`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// `bytes` random bytes from the thread's CSPRNG, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of `value`, lowercase hex.
pub fn sha256_hex(value: &[u8]) -> String {
    hex::encode(Sha256::digest(value))
}

/// A 22-character id (base64url of 16 bytes) derived from `value` under `purpose`: the same value
/// always gives the same id, and the id does not reveal the value.
pub fn derived_id(purpose: &str, value: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(purpose.as_bytes());
    hash.update(b":");
    hash.update(value.as_bytes());
    URL_SAFE_NO_PAD.encode(&hash.finalize()[..16])
}

/// HMAC-SHA256(secret, label): a 32-byte key for one purpose, so no two uses share a key.
pub fn derive_key(secret: &[u8], label: &str) -> [u8; 32] {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = random_token(16);
        assert_eq!(a.len(), 22);
        assert_ne!(a, random_token(16));
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_secret() {
        let a = derive_key(b"secret", "one");
        assert_eq!(a, derive_key(b"secret", "one"));
        assert_ne!(a, derive_key(b"secret", "two"));
        assert_ne!(a, derive_key(b"other", "one"));
    }

    #[test]
    fn derived_ids_are_stable_per_purpose() {
        let a = derived_id("one", "value");
        assert_eq!(a.len(), 22);
        assert_eq!(a, derived_id("one", "value"));
        assert_ne!(a, derived_id("two", "value"));
        assert_ne!(a, derived_id("one", "other"));
    }

    #[test]
    fn sha256_is_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
