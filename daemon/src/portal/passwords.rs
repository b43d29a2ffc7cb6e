//! Passwords: the rules a new one must pass, and argon2id hashing and
//! verification with OWASP's parameters (m = 19456 KiB, t = 2, p = 1) on a
//! bounded blocking pool, so the async runtime never stalls and a login
//! flood queues instead of starting hundreds of 19 MiB hashes at once.
//!
//! Unknown users cost the same as known ones: [`Passwords::verify`] checks
//! against a dummy hash made at start-up when there is no stored hash.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// The shortest password accepted.
pub const MIN_LEN: usize = 12;
/// The longest (hashing is bounded work; megabytes of password are not).
pub const MAX_LEN: usize = 1024;

/// Shipped with the project; see the file's header.
const COMMON: &str = include_str!("common-passwords.txt");

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash the password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the password hashing pool is closed")]
    Closed,
    #[error("a password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why a new password is refused (the sentence is shown to the user).
pub fn check_rules(user: &str, password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        return Err(format!(
            "The password must be at least {MIN_LEN} characters long (yours has {chars})."
        ));
    }
    if password.len() > MAX_LEN {
        return Err(format!(
            "The password must be at most {MAX_LEN} bytes long."
        ));
    }
    let lower = password.to_lowercase();
    if !user.is_empty() && lower.contains(&user.to_lowercase()) {
        return Err("The password must not contain your user name.".into());
    }
    if is_common(&lower) {
        return Err(
            "This password is on the list of the most common passwords; choose another.".into(),
        );
    }
    Ok(())
}

fn is_common(lower: &str) -> bool {
    COMMON
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|l| l == lower)
}

/// The hashing pool. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Semaphore,
    dummy: String,
}

impl Passwords {
    /// A pool running at most `threads` hashes at once. Makes the dummy hash
    /// (blocking: call it off the runtime or at start-up).
    pub fn new(threads: usize) -> Result<Self, PasswordError> {
        let dummy = hash_blocking("not a real password: timing equaliser")?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool: Semaphore::new(threads.max(1)),
                dummy,
            }),
        })
    }

    /// Hashes a new password (argon2id PHC string, random salt).
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.off_runtime(move || hash_blocking(&password)).await?
    }

    /// True when `password` matches `stored`. With no stored hash it does
    /// the same work against the dummy hash and answers false.
    pub async fn verify(&self, stored: Option<String>, password: String) -> bool {
        let real = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.inner.dummy.clone());
        let matched = self
            .off_runtime(move || verify_blocking(&hash, &password))
            .await
            .unwrap_or(false);
        real && matched
    }

    async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|_closed| PasswordError::Closed)?;
        Ok(tokio::task::spawn_blocking(work).await?)
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP password storage cheat sheet: argon2id, 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

fn verify_blocking(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        // The parameters come from the stored PHC string.
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(err) => {
            tracing::warn!(error = %err, "a stored password hash cannot be parsed");
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(check_rules("alice", "short").unwrap_err().contains("12"));
        assert!(
            check_rules("alice", "xx-Alice-1234567")
                .unwrap_err()
                .contains("user name")
        );
        assert!(
            check_rules("alice", "Password1234")
                .unwrap_err()
                .contains("common")
        );
        assert!(check_rules("alice", "correct horse battery").is_ok());
        // Length counts characters, not bytes.
        assert!(check_rules("alice", "ééééééééééé").is_err());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let pw = Passwords::new(2).unwrap();
        let hash = pw.hash("a fine long passphrase".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            pw.verify(Some(hash.clone()), "a fine long passphrase".into())
                .await
        );
        assert!(!pw.verify(Some(hash), "a wrong passphrase".into()).await);
        assert!(
            !pw.verify(None, "not a real password: timing equaliser".into())
                .await
        );
    }
}
