//! `[console]` as the console uses it: who may log in with which role, how long a session
//! lives, how many failed logins are tolerated, which language pages start in.

use std::collections::BTreeMap;
use std::time::Duration;

use super::i18n::Lang;

/// What a user may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Dashboard and message list (metadata only): no patient data, no action.
    Viewer,
    /// Everything a viewer does, plus raw messages, IPP/NDA search and the actions
    /// (resend, replay, pause, release).
    Operator,
}

impl Role {
    /// The name used in the configuration and in the audit table.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    /// Reads a role name of the configuration.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    /// Whether this role may see patient data and act.
    pub fn is_operator(self) -> bool {
        self == Role::Operator
    }
}

/// One local user (`[console.users] NAME = { role, password_hash }`).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub role: Role,
    /// An Argon2id PHC string (`$argon2id$v=19$…`), checked at load.
    pub password_hash: String,
}

/// Never prints the hash.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("role", &self.role)
            .field("password_hash", &"***")
            .finish()
    }
}

/// The default of `[console] session_ttl`: a working day.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The default of `[console] login_attempts`: failures per client address (and per user name)
/// within [`DEFAULT_LOGIN_WINDOW`].
pub const DEFAULT_LOGIN_ATTEMPTS: u32 = 5;
/// The default of `[console] login_window`.
pub const DEFAULT_LOGIN_WINDOW: Duration = Duration::from_secs(300);

/// The console's settings (`[console]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Local users by name.
    pub users: BTreeMap<String, User>,
    /// A session cookie expires this long after the login.
    pub session_ttl: Duration,
    /// Failed logins tolerated per client address and per user name within `login_window`;
    /// more are answered 429 until the window has passed.
    pub login_attempts: u32,
    pub login_window: Duration,
    /// The language of a browser that says nothing (`Accept-Language`) and chose none.
    pub language: Lang,
    /// Cookies get `Secure` (the listener serves TLS).
    pub secure_cookies: bool,
    /// Single sign-on by a trusted reverse proxy's header; `None`: local logins only.
    pub sso: Option<SsoSettings>,
}

/// Single sign-on by a reverse proxy (`[console] sso_header`, `trusted_proxies`,
/// `sso_users`): the proxy authenticates the user and names them in a header; the console
/// believes the header only from a peer address in `trusted_proxies`, and gives the user the
/// role `sso_users` (else `users`) gives that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoSettings {
    /// The header naming the user (lowercase, e.g. `x-remote-user`).
    pub header: String,
    /// The proxies' addresses: the header from anywhere else is removed and logged.
    pub trusted_proxies: crate::http::AllowList,
    /// Roles of the names the proxy may send, besides the local users.
    pub users: BTreeMap<String, Role>,
}

impl ConsoleSettings {
    /// The role of a user the proxy names: `sso_users` first, then the local users.
    pub fn sso_role(&self, name: &str) -> Option<Role> {
        let sso = self.sso.as_ref()?;
        sso.users
            .get(name)
            .copied()
            .or_else(|| self.users.get(name).map(|u| u.role))
    }
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            users: BTreeMap::new(),
            session_ttl: DEFAULT_SESSION_TTL,
            login_attempts: DEFAULT_LOGIN_ATTEMPTS,
            login_window: DEFAULT_LOGIN_WINDOW,
            language: Lang::Fr,
            secure_cookies: false,
            sso: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_viewer("viewer", Some(Role::Viewer))]
    #[case::ok_operator("operator", Some(Role::Operator))]
    #[case::err_admin("admin", None)]
    #[case::err_case("Operator", None)]
    fn role_names(#[case] text: &str, #[case] role: Option<Role>) {
        assert_eq!(Role::parse(text), role);
        if let Some(role) = role {
            assert_eq!(role.as_str(), text);
        }
    }

    #[test]
    fn ok_sso_role_from_sso_users_then_users() {
        let mut settings = ConsoleSettings::default();
        settings.users.insert(
            "olga".into(),
            User {
                role: Role::Operator,
                password_hash: String::new(),
            },
        );
        assert_eq!(settings.sso_role("olga"), None, "no SSO configured");
        settings.sso = Some(SsoSettings {
            header: "x-remote-user".into(),
            trusted_proxies: crate::http::AllowList::loopback(),
            users: BTreeMap::from([("vera".to_string(), Role::Viewer)]),
        });
        assert_eq!(settings.sso_role("vera"), Some(Role::Viewer));
        assert_eq!(settings.sso_role("olga"), Some(Role::Operator));
        assert_eq!(settings.sso_role("mallory"), None);
    }

    #[test]
    fn ok_debug_hides_the_hash() {
        let user = User {
            role: Role::Viewer,
            password_hash: "$argon2id$secret".to_string(),
        };
        assert!(!format!("{user:?}").contains("secret"));
    }
}
