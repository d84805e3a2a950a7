//! Sessions as signed cookies, and the CSRF tokens of their forms.
//!
//! A session cookie holds `id:user:role:expires` (unix seconds), base64url, then a dot and
//! the HMAC-SHA256 of that text under the daemon's session key. Nothing is stored server-side
//! but the ids of sessions logged out before they expired ([`Revoked`]). The key is random,
//! made at start and kept across configuration reloads: a restart logs everybody out.
//!
//! CSRF: every form carries a token that is the HMAC of the session id (and, on the login
//! form, of a random nonce kept in a short-lived cookie): a page from another site can neither
//! read nor compute it.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::settings::Role;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "ob_session";
/// The name of the login form's nonce cookie.
pub const LOGIN_COOKIE: &str = "ob_login";

/// The secret that signs cookies and CSRF tokens.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(***)")
    }
}

/// A random value of `N` bytes, base64url; `None` if the system's generator failed.
pub fn random_token<const N: usize>() -> Option<String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).ok()?;
    Some(B64.encode(bytes))
}

impl SessionKey {
    /// A fresh random key; `None` if the system's generator failed.
    pub fn generate() -> Option<SessionKey> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).ok()?;
        Some(SessionKey(key))
    }

    /// A fixed key, for tests.
    pub fn from_bytes(key: [u8; 32]) -> SessionKey {
        SessionKey(key)
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for part in parts {
            mac.update(part);
            mac.update(b"\0");
        }
        mac.finalize().into_bytes().into()
    }

    /// The cookie value of `session`.
    pub fn seal(&self, session: &Session) -> String {
        let payload = format!(
            "{}:{}:{}:{}",
            session.id,
            session.user,
            session.role.as_str(),
            session.expires
        );
        let encoded = B64.encode(payload.as_bytes());
        let signature = B64.encode(self.mac(&[b"session", encoded.as_bytes()]));
        format!("{encoded}.{signature}")
    }

    /// The session a cookie value holds, if its signature is ours and it has not expired at
    /// `now` (unix seconds).
    pub fn open(&self, cookie: &str, now: u64) -> Result<Session, SessionRefusal> {
        let (encoded, signature) = cookie.split_once('.').ok_or(SessionRefusal::Malformed)?;
        let signature = B64
            .decode(signature)
            .map_err(|_| SessionRefusal::Malformed)?;
        let expected = self.mac(&[b"session", encoded.as_bytes()]);
        if !bool::from(signature.as_slice().ct_eq(&expected)) {
            return Err(SessionRefusal::BadSignature);
        }
        let payload = B64.decode(encoded).map_err(|_| SessionRefusal::Malformed)?;
        let payload = String::from_utf8(payload).map_err(|_| SessionRefusal::Malformed)?;
        let mut parts = payload.splitn(4, ':');
        let (Some(id), Some(user), Some(role), Some(expires)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SessionRefusal::Malformed);
        };
        let role = Role::parse(role).ok_or(SessionRefusal::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| SessionRefusal::Malformed)?;
        if expires <= now {
            return Err(SessionRefusal::Expired);
        }
        Ok(Session {
            id: id.to_string(),
            user: user.to_string(),
            role,
            expires,
        })
    }

    /// The CSRF token of the forms of session `id`.
    pub fn csrf_token(&self, session_id: &str) -> String {
        B64.encode(self.mac(&[b"csrf", session_id.as_bytes()]))
    }

    /// The CSRF token of the login form whose nonce cookie is `nonce`.
    pub fn login_token(&self, nonce: &str) -> String {
        B64.encode(self.mac(&[b"login", nonce.as_bytes()]))
    }
}

/// Whether `presented` equals `expected`, in constant time.
pub fn same_token(presented: &str, expected: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// A logged-in user, as the cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random, names the session in the revocation list and the CSRF token.
    pub id: String,
    pub user: String,
    pub role: Role,
    /// Unix seconds after which the cookie is refused.
    pub expires: u64,
}

/// Why a session cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    Malformed,
    BadSignature,
    Expired,
}

/// Sessions logged out before they expired: refused until their expiry, then forgotten.
#[derive(Debug, Default)]
pub struct Revoked {
    /// Session id → expiry (unix seconds). Locked only to insert, look up or prune.
    ids: Mutex<HashMap<String, u64>>,
}

/// Logged-out sessions remembered at most; past it the oldest are dropped (they could be
/// used again until they expire: a bound on memory, far above real use).
const MAX_REVOKED: usize = 10_000;

impl Revoked {
    /// Remembers that `session` logged out.
    pub fn revoke(&self, session: &Session, now: u64) {
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ids.retain(|_, expires| *expires > now);
        if ids.len() >= MAX_REVOKED
            && let Some(oldest) = ids
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(id, _)| id.clone())
        {
            ids.remove(&oldest);
        }
        ids.insert(session.id.clone(), session.expires);
    }

    /// Whether session `id` logged out.
    pub fn contains(&self, id: &str) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(id)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn key() -> SessionKey {
        SessionKey::from_bytes([7; 32])
    }

    fn session() -> Session {
        Session {
            id: "s1".to_string(),
            user: "alice".to_string(),
            role: Role::Operator,
            expires: 2_000,
        }
    }

    #[test]
    fn ok_seal_then_open() {
        let cookie = key().seal(&session());
        assert_eq!(key().open(&cookie, 1_999), Ok(session()));
    }

    #[rstest]
    #[case::expired(1_000, 2_000, SessionRefusal::Expired)]
    #[case::other_key(1_000, 1_000, SessionRefusal::BadSignature)]
    fn err_open(#[case] now: u64, #[case] opened_at: u64, #[case] refusal: SessionRefusal) {
        let cookie = key().seal(&session());
        let opener = if now == opened_at {
            SessionKey::from_bytes([8; 32])
        } else {
            key()
        };
        assert_eq!(opener.open(&cookie, opened_at), Err(refusal));
    }

    #[test]
    fn err_tampered_payload() {
        let cookie = key().seal(&session());
        let (_, signature) = cookie.split_once('.').expect("dot");
        let forged = B64.encode(b"s1:alice:operator:9999999999");
        assert_eq!(
            key().open(&format!("{forged}.{signature}"), 1_000),
            Err(SessionRefusal::BadSignature)
        );
        assert_eq!(key().open("garbage", 1_000), Err(SessionRefusal::Malformed));
    }

    #[test]
    fn ok_csrf_tokens_differ_by_session_and_purpose() {
        let key = key();
        assert_eq!(key.csrf_token("s1"), key.csrf_token("s1"));
        assert_ne!(key.csrf_token("s1"), key.csrf_token("s2"));
        assert_ne!(key.csrf_token("n"), key.login_token("n"));
        assert!(same_token(&key.csrf_token("s1"), &key.csrf_token("s1")));
        assert!(!same_token("x", &key.csrf_token("s1")));
    }

    #[test]
    fn ok_revoked_until_expiry() {
        let revoked = Revoked::default();
        revoked.revoke(&session(), 1_000);
        assert!(revoked.contains("s1"));
        let later = Session {
            id: "s2".to_string(),
            ..session()
        };
        revoked.revoke(&later, 3_000);
        assert!(!revoked.contains("s1"), "forgotten once expired");
    }

    #[rstest]
    #[case::ok_found("a=1; ob_session=xyz; b=2", Some("xyz"))]
    #[case::err_missing("a=1", None)]
    #[case::err_prefix("xob_session=1", None)]
    fn cookies(#[case] header: &str, #[case] value: Option<&str>) {
        assert_eq!(cookie_value(header, SESSION_COOKIE), value);
    }
}
