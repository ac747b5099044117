//! Learners' accounts: the parsing types for what they type, and the `users` table.

use std::{fmt, sync::Arc};

use secrecy::SecretString;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::{
    audit::Txn,
    db::Pool,
    error::Result,
    signals::{self, Kind},
};

/// An email address as a person reads it: Unicode-normalised (NFKC), trimmed and lowercased, so
/// two spellings of one address are one account. Control and invisible format characters
/// (zero-width spaces and joiners, direction marks, soft hyphens) are refused, not stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

fn invisible(c: char) -> bool {
    c.is_control() || c.general_category() == GeneralCategory::Format
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.chars().any(invisible) {
            return Err(
                "Your email address contains an invisible or control character. Type it again without it."
                    .into(),
            );
        }
        let folded: String = raw.nfkc().collect::<String>().to_lowercase();
        let email: String = folded.nfkc().collect();
        if email.is_empty() {
            return Err("Enter your email address.".into());
        }
        if email.len() > 254 {
            return Err("That email address is too long.".into());
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("Enter an email address like name@example.com.".into());
        };
        let valid = !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !email.chars().any(|c| c.is_whitespace() || invisible(c));
        if !valid {
            return Err("Enter an email address like name@example.com.".into());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a learner is shown to others: 1 to 50 characters, NFC, no control or format characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name: String = raw.trim().nfc().collect();
        if name.is_empty() {
            return Err("Enter the name other learners will see.".into());
        }
        if name.chars().count() > 50 {
            return Err("Keep your display name to 50 characters or fewer.".into());
        }
        if name.chars().any(invisible) {
            return Err("Your display name cannot contain control or invisible characters.".into());
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 12 to 1024 characters; no composition rules (NIST 800-63B).
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.chars().count() < 12 {
            return Err("Use at least 12 characters for your password.".into());
        }
        if raw.chars().count() > 1024 {
            return Err("Use at most 1024 characters for your password.".into());
        }
        Ok(Self(SecretString::from(raw)))
    }

    /// The password, still secret, for hashing.
    pub fn secret(&self) -> SecretString {
        self.0.clone()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// What a registration form carries, each field parsed.
#[derive(Debug)]
pub struct Registration {
    pub email: Email,
    pub display_name: DisplayName,
    pub password: Password,
}

/// What was wrong with a registration, beside each field.
#[derive(Debug, Default)]
pub struct RegistrationErrors {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub password: Option<String>,
}

impl RegistrationErrors {
    /// The email belongs to an account already.
    pub fn email_taken() -> Self {
        Self {
            email: Some(CreateError::EmailTaken.to_string()),
            ..Self::default()
        }
    }
}

impl Registration {
    /// Every field parsed, or every field's error at once.
    pub fn parse(
        email: &str,
        display_name: &str,
        password: &SecretString,
    ) -> Result<Self, RegistrationErrors> {
        use secrecy::ExposeSecret;
        let email = Email::parse(email);
        let display_name = DisplayName::parse(display_name);
        let password = Password::parse(password.expose_secret().to_owned());
        match (email, display_name, password) {
            (Ok(email), Ok(display_name), Ok(password)) => Ok(Self {
                email,
                display_name,
                password,
            }),
            (email, display_name, password) => Err(RegistrationErrors {
                email: email.err(),
                display_name: display_name.err(),
                password: password.err(),
            }),
        }
    }
}

/// A learner as the rest of the app sees them.
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    /// The argon2 PHC string.
    pub password_hash: String,
    pub created_at: i64,
    /// When an operator disabled the account, if it is disabled.
    pub disabled_at: Option<i64>,
}

impl User {
    /// A short digest of the password hash (whose salt is new at every change of password):
    /// changes with the password, reveals nothing of it. Sessions name their learner as
    /// `<id>.<credentials>`, so a session signed in under another password finds no learner
    /// ([`Users::signed_in`]), and the cache below answers without reading the database.
    pub fn credentials(&self) -> String {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.password_hash.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest[..8])
    }

    pub fn member_since(&self) -> crate::clock::Moment {
        crate::clock::Moment(self.created_at)
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"[redacted]")
            .finish()
    }
}

pub async fn find_by_email(pool: &Pool, email: &Email) -> Result<Option<User>> {
    Ok(sqlx::query_as(
        "select id, email, display_name, password_hash, created_at, disabled_at from users where email = $1",
    )
    .bind(email.as_str())
    .fetch_optional(pool)
    .await?)
}

pub async fn find_by_id(pool: &Pool, id: &str) -> Result<Option<User>> {
    Ok(sqlx::query_as(
        "select id, email, display_name, password_hash, created_at, disabled_at from users where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Learners kept in process, so a page or API call reads none from the database. Safe without
/// talking to other instances: a learner's id, email and creation time never change, and a
/// session asks for its learner with the credentials it was signed in under
/// ([`Users::signed_in`]), which a cached learner answers only while its password is that one.
/// An entry lives five minutes, so a new display name shows on other instances within that; the
/// sign-ins a password change ends are refused by the sign-in store on every instance at once,
/// whatever this cache holds.
#[derive(Clone)]
pub struct Users(Arc<UsersParts>);

/// What [`Users`] shares.
pub struct UsersParts {
    pool: Pool,
    cache: moka::sync::Cache<String, Cached>,
}

impl std::ops::Deref for Users {
    type Target = UsersParts;

    fn deref(&self) -> &UsersParts {
        &self.0
    }
}

#[derive(Clone)]
struct Cached {
    user: User,
    credentials: String,
}

impl Users {
    pub fn new(pool: Pool) -> Self {
        Self(Arc::new(UsersParts {
            pool,
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(300))
                .build(),
        }))
    }

    async fn load(&self, id: &str) -> Result<Option<Cached>> {
        let Some(user) = find_by_id(&self.pool, id).await? else {
            return Ok(None);
        };
        let cached = Cached {
            credentials: user.credentials(),
            user,
        };
        self.cache.insert(id.to_owned(), cached.clone());
        Ok(Some(cached))
    }

    /// A learner's profile (id, email, name, creation time), from the cache when it has it.
    pub async fn profile(&self, id: &str) -> Result<Option<User>> {
        if let Some(hit) = self.cache.get(id) {
            return Ok(Some(hit.user));
        }
        Ok(self.load(id).await?.map(|c| c.user))
    }

    /// The learner a session names (`<id>.<credentials>`, see [`User::credentials`]), while
    /// their password is still the one the session was signed in under and the account is not
    /// disabled. From the cache when the cached learner has those credentials; otherwise from
    /// the database (a cached learner with other credentials may be out of date).
    pub async fn signed_in(&self, session_user: &str) -> Result<Option<User>> {
        let (id, credentials) = session_user.split_once('.').unwrap_or((session_user, ""));
        let cached = match self.cache.get(id) {
            Some(hit) if hit.credentials == credentials => Some(hit),
            _ => self.load(id).await?,
        };
        Ok(cached
            .filter(|c| c.credentials == credentials && c.user.disabled_at.is_none())
            .map(|c| c.user))
    }

    /// Drops a learner from this instance's cache (their password changed here).
    pub fn forget(&self, id: &str) {
        self.cache.invalidate(id);
    }
}

/// Replaces a learner's password hash (and so its credentials: every browser session made under
/// the old one then finds no learner).
pub async fn set_password_hash(
    pool: &Pool,
    user_id: &str,
    hash: &str,
    txn: &Txn,
    at: i64,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("update users set password_hash = $1 where id = $2")
        .bind(hash)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let event = signals::Event {
        kind: Kind::CredentialChange,
        user_id: Some(user_id),
        sign_in_id: None,
        reason: None,
        initiator: Some("user"),
        detail: None,
        txn,
        at,
    };
    signals::enqueue(&mut *tx, &event).await?;
    tx.commit().await?;
    Ok(())
}

/// Renames a learner.
pub async fn set_display_name(pool: &Pool, user_id: &str, name: &DisplayName) -> Result<()> {
    sqlx::query("update users set display_name = $1 where id = $2")
        .bind(name.as_str())
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Closes an account that is being deleted to new sign-ins (`Some(at)`), unless it was disabled
/// already, or opens it again after a deletion that failed (`None`). Other applications are not
/// told: the deletion tells them. Whether this call changed it.
pub async fn close_for_deletion(pool: &Pool, user_id: &str, at: Option<i64>) -> Result<bool> {
    let sql = match at {
        Some(_) => "update users set disabled_at = $1 where id = $2 and disabled_at is null",
        None => "update users set disabled_at = $1 where id = $2",
    };
    let changed = sqlx::query(sql)
        .bind(at)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(changed.rows_affected() == 1)
}

/// Disables an account (`Some(at)`, which tells other applications) or enables it again
/// (`None`). Whether the account exists.
pub async fn set_disabled(pool: &Pool, user_id: &str, at: Option<i64>, txn: &Txn) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query("update users set disabled_at = $1 where id = $2")
        .bind(at)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if let (Some(at), 1) = (at, changed.rows_affected()) {
        let event = signals::Event {
            kind: Kind::AccountDisabled,
            user_id: Some(user_id),
            sign_in_id: None,
            reason: None,
            initiator: Some("admin"),
            detail: None,
            txn,
            at,
        };
        signals::enqueue(&mut *tx, &event).await?;
    }
    tx.commit().await?;
    Ok(changed.rows_affected() == 1)
}

/// Deletes a learner and everything of theirs, in one transaction: their enrolments, their
/// sign-ins and refresh tokens; their audit rows stay, without anything that names them (no
/// learner, sign-in, address or user agent); the endings of their sign-ins still within their
/// lifetime stay too, without the learner, so every instance keeps refusing them. Whether the
/// account existed.
pub async fn delete(pool: &Pool, user_id: &str, now: i64, txn: &Txn) -> Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into forgotten_endings (sign_in_id, revoked_at, expires_at)
         select id, revoked_at, expires_at from sign_ins
         where user_id = $1 and revoked_at is not null and expires_at > $2",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update audit_events set user_id = null, sign_in_id = null, ip = '', user_agent = ''
         where user_id = $1",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    for sql in [
        "delete from enrolments where user_id = $1",
        "delete from refresh_tokens where sign_in_id in (select id from sign_ins where user_id = $1)",
        "delete from sign_ins where user_id = $1",
        "delete from ssf_links where user_id = $1",
    ] {
        sqlx::query(sql).bind(user_id).execute(&mut *tx).await?;
    }
    let deleted = sqlx::query("delete from users where id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 1 {
        // Other applications hear of it: by the learner's id, which names no one once the
        // account is gone.
        let event = signals::Event {
            kind: Kind::AccountPurged,
            user_id: Some(user_id),
            sign_in_id: None,
            reason: None,
            initiator: None,
            detail: None,
            txn,
            at: now,
        };
        signals::enqueue(&mut *tx, &event).await?;
    }
    tx.commit().await?;
    Ok(deleted == 1)
}

pub async fn list(pool: &Pool) -> Result<Vec<User>> {
    Ok(sqlx::query_as(
        "select id, email, display_name, password_hash, created_at, disabled_at from users order by created_at, email",
    )
    .fetch_all(pool)
    .await?)
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("An account with this email already exists. Sign in instead?")]
    EmailTaken,
    #[error(transparent)]
    Other(#[from] crate::error::AppError),
}

/// Inserts a learner whose password is already hashed.
pub async fn create(
    pool: &Pool,
    email: &Email,
    display_name: &DisplayName,
    password_hash: String,
    now: i64,
) -> Result<User, CreateError> {
    let user = User {
        id: crate::crypto::random_token(16),
        email: email.as_str().to_owned(),
        display_name: display_name.as_str().to_owned(),
        password_hash,
        created_at: now,
        disabled_at: None,
    };
    let inserted = sqlx::query(
        "insert into users (id, email, display_name, password_hash, created_at)
         values ($1, $2, $3, $4, $5) on conflict (email) do nothing",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.display_name)
    .bind(&user.password_hash)
    .bind(user.created_at)
    .execute(pool)
    .await
    .map_err(crate::error::AppError::from)?;
    if inserted.rows_affected() == 0 {
        return Err(CreateError::EmailTaken);
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn two_spellings_of_one_address_are_one_email() {
        let nfc = Email::parse("jos\u{e9}@example.com").unwrap();
        let nfd = Email::parse("jose\u{301}@example.com").unwrap();
        assert_eq!(nfc, nfd);
        let fullwidth = Email::parse("\u{ff21}da@example.com").unwrap();
        assert_eq!(fullwidth.as_str(), "ada@example.com");
    }

    #[test]
    fn invisible_characters_are_refused_with_a_reason() {
        for bad in [
            "ada\u{200b}@example.com",
            "ada\u{200d}@example.com",
            "\u{feff}ada@example.com",
            "ada\u{ad}@example.com",
            "ada\u{202e}@example.com",
            "ada\u{7}@example.com",
        ] {
            let err = Email::parse(bad).unwrap_err();
            assert!(err.contains("invisible"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"x".repeat(51)).is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(DisplayName::parse("a\u{200b}b").is_err());
    }

    #[test]
    fn passwords_need_twelve_to_1024_characters() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("twelve chars".into()).is_ok());
        assert!(Password::parse("é".repeat(12)).is_ok());
        assert!(Password::parse("x".repeat(1025)).is_err());
        assert!(Password::parse("x".repeat(1024)).is_ok());
        assert!(Password::parse("é".repeat(1024)).is_ok());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let p = Password::parse("correct horse battery".into()).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
