//! Argon2id password hashes: made by `ordobridge user add`, checked at load (a hash that does
//! not parse is a configuration error) and at login.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Why a password could not be hashed or a hash is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is too short ({0} characters; at least 12)")]
    TooShort(usize),
    #[error("the system's random generator failed: {0}")]
    Random(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error(
        "`{0}` is not an Argon2id hash (expected `$argon2id$v=19$m=…`): make one with `ordobridge user add NAME --role viewer`"
    )]
    NotArgon2id(String),
}

/// Shortest password `user add` accepts.
const MIN_LENGTH: usize = 12;

/// The Argon2id parameters of new hashes: OWASP's first recommended set (19 MiB, 2 passes).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A new Argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let length = password.chars().count();
    if length == 0 {
        return Err(PasswordError::Empty);
    }
    if length < MIN_LENGTH {
        return Err(PasswordError::TooShort(length));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Checks that `hash` is an Argon2id PHC string (at load). The error quotes only its start.
pub fn check_hash(hash: &str) -> Result<(), PasswordError> {
    let shown: String = hash.chars().take(12).collect();
    match PasswordHash::new(hash) {
        Ok(parsed) if parsed.algorithm.as_str() == "argon2id" && parsed.hash.is_some() => Ok(()),
        _ => Err(PasswordError::NotArgon2id(shown)),
    }
}

/// Whether `password` matches `hash` (constant time inside argon2). A hash that does not parse
/// never matches. Slow on purpose (tens of milliseconds): call it off the async workers.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash that matches nothing, verified when the user name is unknown so that a login for
/// an unknown name takes as long as one with a wrong password.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3Jkb2JyaWRnZWR1bW15$4OBqFImIT+b1+Q4lAy1kNd6kFChP2lMQhZpXbAxdJ8k";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_hash_then_verify() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_eq!(check_hash(&hash), Ok(()));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterY", &hash));
    }

    #[test]
    fn err_short_and_empty_passwords() {
        assert_eq!(hash_password(""), Err(PasswordError::Empty));
        assert_eq!(
            hash_password("short").map_err(|e| e.to_string()),
            Err("the password is too short (5 characters; at least 12)".to_string())
        );
    }

    #[test]
    fn err_not_argon2id() {
        assert_eq!(
            check_hash("$2b$12$abcdefghijklmnop").map_err(|e| e.to_string()),
            Err("`$2b$12$abcde` is not an Argon2id hash (expected `$argon2id$v=19$m=…`): make one with `ordobridge user add NAME --role viewer`".to_string())
        );
        assert!(check_hash("plain text").is_err());
        assert!(!verify_password("x", "plain text"));
        assert_eq!(check_hash(DUMMY_HASH), Ok(()));
        assert!(!verify_password("", DUMMY_HASH));
    }
}
