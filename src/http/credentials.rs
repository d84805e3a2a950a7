//! Who may call an authenticated HTTP endpoint (the FHIR push, the `/fhir` search and document
//! routes): a bearer token and/or basic credentials; a request passes when it satisfies one
//! configured scheme. Comparisons are constant-time (`subtle`: the time depends on the lengths
//! only). Refusals name the accepted schemes, never a configuration key or a secret: the caller
//! may be anybody on the network.

use axum::http::{HeaderMap, header};
use base64::Engine as _;

/// The configured schemes of one endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// A bearer token.
    pub token: Option<String>,
    /// `user:password`, as a basic `Authorization` header carries it once decoded.
    pub basic: Option<String>,
    /// What the credentials are called in refusals: `push` gives "the push token".
    pub name: &'static str,
}

/// Never prints the secrets.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("basic", &self.basic.as_ref().map(|_| "***"))
            .field("name", &self.name)
            .finish()
    }
}

impl Credentials {
    /// Whether the request's `Authorization` header satisfies a configured scheme; with none
    /// configured (an operator's explicit `allow_unauthenticated`), every request does.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.token.is_none() && self.basic.is_none() {
            return true;
        }
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, credentials) = given.trim().split_once(' ').unwrap_or((given, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            self.token
                .as_deref()
                .is_some_and(|token| same(credentials.as_bytes(), token.as_bytes()))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let Some(expected) = self.basic.as_deref() else {
                return false;
            };
            base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .is_ok_and(|decoded| same(&decoded, expected.as_bytes()))
        } else {
            false
        }
    }

    /// One `WWW-Authenticate` challenge per configured scheme.
    pub fn challenges(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.token.is_some() {
            out.push("Bearer realm=\"ordobridge\"");
        }
        if self.basic.is_some() {
            out.push("Basic realm=\"ordobridge\", charset=\"UTF-8\"");
        }
        out
    }

    /// What to tell a caller that was refused: the accepted schemes, never a configuration key.
    pub fn diagnostics(&self) -> String {
        let name = self.name;
        let mut schemes = Vec::new();
        if self.token.is_some() {
            schemes.push(format!("`Authorization: Bearer` with the {name} token"));
        }
        if self.basic.is_some() {
            schemes.push(format!(
                "`Authorization: Basic` with the {name} user and password"
            ));
        }
        format!(
            "missing or wrong credentials: send {}",
            schemes.join(" or ")
        )
    }
}

/// Constant-time equality (`subtle`: the time depends on the lengths only).
pub fn same(given: &[u8], expected: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(given, expected))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use rstest::rstest;

    fn auth(token: Option<&str>, basic: Option<&str>) -> Credentials {
        Credentials {
            token: token.map(str::to_string),
            basic: basic.map(str::to_string),
            name: "push",
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if !value.is_empty() {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    /// `posos:pa:ss` and `posos:wrong`, base64.
    const GOOD_BASIC: &str = "Basic cG9zb3M6cGE6c3M=";
    const BAD_BASIC: &str = "Basic cG9zb3M6d3Jvbmc=";

    #[rstest]
    #[case::ok_open(None, None, "")]
    #[case::ok_bearer(Some("t"), None, "Bearer t")]
    #[case::ok_bearer_case_and_spaces(Some("t"), None, "  bearer   t ")]
    #[case::ok_basic(None, Some("posos:pa:ss"), GOOD_BASIC)]
    #[case::ok_basic_when_both(Some("t"), Some("posos:pa:ss"), GOOD_BASIC)]
    #[case::ok_bearer_when_both(Some("t"), Some("posos:pa:ss"), "Bearer t")]
    fn ok_allowed(#[case] token: Option<&str>, #[case] basic: Option<&str>, #[case] given: &str) {
        assert!(auth(token, basic).allows(&headers(given)));
    }

    #[rstest]
    #[case::err_missing(Some("t"), None, "")]
    #[case::err_wrong_token(Some("t"), None, "Bearer u")]
    #[case::err_token_prefix(Some("tt"), None, "Bearer t")]
    #[case::err_basic_not_configured(Some("t"), None, GOOD_BASIC)]
    #[case::err_bearer_not_configured(None, Some("posos:pa:ss"), "Bearer posos:pa:ss")]
    #[case::err_wrong_password(Some("t"), Some("posos:pa:ss"), BAD_BASIC)]
    #[case::err_not_base64(None, Some("posos:pa:ss"), "Basic ***")]
    #[case::err_no_scheme(Some("t"), None, "t")]
    #[case::err_other_scheme(Some("t"), None, "Digest t")]
    fn err_refused(#[case] token: Option<&str>, #[case] basic: Option<&str>, #[case] given: &str) {
        assert!(!auth(token, basic).allows(&headers(given)));
    }

    #[rstest]
    #[case::err_bearer_only(
        Some("t"),
        None,
        &["Bearer realm=\"ordobridge\""],
        "missing or wrong credentials: send `Authorization: Bearer` with the push token"
    )]
    #[case::err_basic_only(
        None,
        Some("u:p"),
        &["Basic realm=\"ordobridge\", charset=\"UTF-8\""],
        "missing or wrong credentials: send `Authorization: Basic` with the push user and password"
    )]
    fn err_challenges_name_the_configured_schemes(
        #[case] token: Option<&str>,
        #[case] basic: Option<&str>,
        #[case] challenges: &[&str],
        #[case] diagnostics: &str,
    ) {
        let auth = auth(token, basic);
        assert_eq!(auth.challenges(), challenges);
        assert_eq!(auth.diagnostics(), diagnostics);
    }

    #[test]
    fn ok_same_is_plain_equality() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(same(b"", b""));
    }
}
