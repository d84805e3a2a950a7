//! The web console's pure parts: settings, passwords, sessions and CSRF tokens, the login
//! rate limit, the two languages, the HL7 views and the HTML pages. The routes and what they
//! read from the store live in `engine::console`.
//!
//! # Layout
//!
//! - [`settings`]: `[console]` (users, roles, session lifetime, login limits, language).
//! - [`password`]: Argon2id hashes (`ordobridge user add`, login).
//! - [`session`]: signed session cookies, logged-out sessions, CSRF tokens.
//! - [`limiter`]: failed logins counted per address and per user name.
//! - [`i18n`]: French and English.
//! - [`hl7view`]: the raw view with delimiters marked, the tree with segment and field names.
//! - [`pages`]: the HTML pages (maud), and the embedded script and style sheet.

pub mod hl7view;
pub mod i18n;
pub mod limiter;
pub mod pages;
pub mod password;
pub mod session;
pub mod settings;

pub use i18n::Lang;
pub use password::{check_hash, hash_password, verify_password};
pub use settings::{ConsoleSettings, Role, SsoSettings, User};
