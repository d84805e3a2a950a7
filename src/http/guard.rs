//! Hardening every HTTP route shares: which `Host` names are served (DNS rebinding), who may
//! read the admin routes (`/status`, `/metrics`), how long a request may take, and the security
//! headers of every answer.
//!
//! Each check is a pure function over the request's parts ([`host_allowed`], [`admin_access`],
//! [`content_security_policy`]) wrapped by a small axum middleware, so the decisions are tested
//! without a socket.
//!
//! - **Host**: a browser tricked by DNS rebinding sends the attacker's name in `Host`. An IP
//!   literal, `localhost` and the names of `[http] hosts` are served; any other name is answered
//!   421 with what to configure. `/health` is exempt (load balancers probe it by any name).
//! - **Admin routes**: from an `[http] admin_allow` network (default: loopback), or with
//!   `Authorization: Bearer <[http] admin_token>` (compared in constant time).
//! - **Headers**: `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` on every
//!   answer (launch URLs carry identifiers in their query: no page may leak them as a referrer);
//!   HTML answers get a `Content-Security-Policy` that forbids scripts and sets
//!   `frame-ancestors` (`[http] frame_ancestors`, default `'none'`: an EHR that embeds the launch
//!   page lists its origin there). A handler that sets its own policy keeps it, with the
//!   configured `frame-ancestors` added when it names none (the launch page frames Scan & Go
//!   from the Posos origin only, and is embedded only by `[http] frame_ancestors`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::access::AllowList;

/// The default of `[http] request_timeout`: a launch waits for Posos (its own timeouts and
/// retries stay under it) and a push may carry a 32 MiB body.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The hardening settings of the HTTP server (`[http]`).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpGuardSettings {
    /// Networks that may read `/status` and `/metrics` without a token.
    pub admin_allow: AllowList,
    /// A bearer token that opens the admin routes from anywhere.
    pub admin_token: Option<String>,
    /// Host names served besides IP literals and `localhost` (lowercase, without port).
    pub hosts: Vec<String>,
    /// Longest time a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// Origins allowed to embed HTML pages (`frame-ancestors`); empty means none.
    pub frame_ancestors: Vec<String>,
}

impl Default for HttpGuardSettings {
    fn default() -> Self {
        HttpGuardSettings {
            admin_allow: AllowList::loopback(),
            admin_token: None,
            hosts: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            frame_ancestors: Vec::new(),
        }
    }
}

/// Never prints the admin token.
impl std::fmt::Debug for HttpGuardSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGuardSettings")
            .field("admin_allow", &self.admin_allow)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("hosts", &self.hosts)
            .field("request_timeout", &self.request_timeout)
            .field("frame_ancestors", &self.frame_ancestors)
            .finish()
    }
}

/// Whether a request whose `Host` header is `host` may be served: an IP literal (with or
/// without port, `[::1]:8717` included), `localhost`, or one of `names`. A missing header is
/// refused (HTTP/1.1 requires it; HTTP/2 requests carry the authority instead, which hyper puts
/// back in `Host`).
pub fn host_allowed(host: Option<&str>, names: &[String]) -> bool {
    let Some(host) = host else {
        return false;
    };
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        match rest.split_once(']') {
            Some((inside, _)) => return inside.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || names.contains(&name)
}

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// Neither an allowed network nor a valid token.
    NotAllowed,
    /// A bearer token was sent and it is wrong.
    BadToken,
}

/// The decision for an admin route: a valid bearer token passes from anywhere; without a
/// token, the peer must be in `allow`. A wrong token is refused even from an allowed network,
/// so a misconfigured script is noticed.
pub fn admin_access(
    allow: &AllowList,
    token: Option<&str>,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<(), AdminRefusal> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match (presented, token) {
        (Some(presented), Some(expected)) => {
            if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
                Ok(())
            } else {
                Err(AdminRefusal::BadToken)
            }
        }
        _ if peer.is_some_and(|ip| allow.allows(ip)) => Ok(()),
        (Some(_), None) => Err(AdminRefusal::BadToken),
        (None, _) => Err(AdminRefusal::NotAllowed),
    }
}

/// The policy of HTML answers: nothing loads but inline styles, no script runs, forms post
/// nowhere, and only `frame_ancestors` may embed the page.
pub fn content_security_policy(frame_ancestors: &[String]) -> String {
    let ancestors = if frame_ancestors.is_empty() {
        "'none'".to_string()
    } else {
        frame_ancestors.join(" ")
    };
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    )
}

/// A handler's own policy with the configured `frame-ancestors` added when it sets none
/// (the launch page: its frames and scripts are its own business, who may embed it is the
/// operator's); `None` when it sets one (kept as is).
pub fn with_frame_ancestors(own: &str, frame_ancestors: &[String]) -> Option<String> {
    if own
        .split(';')
        .any(|d| d.trim().starts_with("frame-ancestors"))
    {
        return None;
    }
    let ancestors = if frame_ancestors.is_empty() {
        "'none'".to_string()
    } else {
        frame_ancestors.join(" ")
    };
    Some(format!(
        "{}; frame-ancestors {ancestors}",
        own.trim().trim_end_matches(';')
    ))
}

/// Middleware: refuses a request whose `Host` is not served (421), except `/health`.
pub async fn check_host(
    State(settings): State<std::sync::Arc<HttpGuardSettings>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() != "/health" {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        if !host_allowed(host, &settings.hosts) {
            tracing::warn!(
                host = host.unwrap_or("(none)"),
                path = request.uri().path(),
                "HTTP request refused: its Host name is not served"
            );
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this server does not answer for this host name: add it to `hosts` in the `[http]` section of the ordobridge configuration\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Middleware for `/status` and `/metrics`: [`admin_access`], 403 otherwise (no hint of what
/// the routes hold).
pub async fn check_admin(
    State(settings): State<std::sync::Arc<HttpGuardSettings>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match admin_access(
        &settings.admin_allow,
        settings.admin_token.as_deref(),
        peer,
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(
                peer = ?peer,
                path = request.uri().path(),
                ?refusal,
                "admin route refused"
            );
            let text = match refusal {
                AdminRefusal::BadToken => "wrong admin token\n",
                AdminRefusal::NotAllowed => {
                    "this address may not read the admin routes: connect from an allowed network or send the admin bearer token\n"
                }
            };
            (StatusCode::FORBIDDEN, text).into_response()
        }
    }
}

/// Middleware: the security headers of every answer (see the module docs).
pub async fn security_headers(
    State(settings): State<std::sync::Arc<HttpGuardSettings>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        let own = headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok());
        let policy = match own {
            None => Some(content_security_policy(&settings.frame_ancestors)),
            Some(own) => with_frame_ancestors(own, &settings.frame_ancestors),
        };
        if let Some(value) = policy.and_then(|p| HeaderValue::from_str(&p).ok()) {
            headers.insert(header::CONTENT_SECURITY_POLICY, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ipv4("127.0.0.1:8717")]
    #[case::ipv4_no_port("10.1.2.3")]
    #[case::ipv6("[::1]:8717")]
    #[case::ipv6_no_port("[::1]")]
    #[case::localhost("localhost:8717")]
    #[case::localhost_upper("LOCALHOST")]
    #[case::configured("ordobridge.chu.local:443")]
    #[case::configured_trailing_dot("ordobridge.chu.local.")]
    fn ok_host(#[case] host: &str) {
        assert!(host_allowed(
            Some(host),
            &["ordobridge.chu.local".to_string()]
        ));
    }

    #[rstest]
    #[case::missing(None)]
    #[case::rebinding(Some("attacker.example:8717"))]
    #[case::suffix(Some("ordobridge.chu.local.attacker.example"))]
    #[case::bad_v6(Some("[::1"))]
    #[case::empty(Some(""))]
    fn err_host(#[case] host: Option<&str>) {
        assert!(!host_allowed(host, &["ordobridge.chu.local".to_string()]));
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        headers
    }

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)));

    #[test]
    fn ok_admin_from_loopback_or_with_token() {
        let allow = AllowList::loopback();
        assert_eq!(
            admin_access(&allow, None, LOOPBACK, &HeaderMap::new()),
            Ok(())
        );
        assert_eq!(
            admin_access(&allow, Some("t0ken"), REMOTE, &bearer("t0ken")),
            Ok(())
        );
    }

    #[test]
    fn err_admin_refusals() {
        let allow = AllowList::loopback();
        assert_eq!(
            admin_access(&allow, None, REMOTE, &HeaderMap::new()),
            Err(AdminRefusal::NotAllowed)
        );
        assert_eq!(
            admin_access(&allow, Some("t0ken"), REMOTE, &bearer("wrong")),
            Err(AdminRefusal::BadToken)
        );
        assert_eq!(
            admin_access(&allow, Some("t0ken"), LOOPBACK, &bearer("wrong")),
            Err(AdminRefusal::BadToken),
            "a wrong token is refused even from an allowed network"
        );
        assert_eq!(
            admin_access(&allow, None, REMOTE, &bearer("anything")),
            Err(AdminRefusal::BadToken)
        );
        assert_eq!(
            admin_access(&allow, None, None, &HeaderMap::new()),
            Err(AdminRefusal::NotAllowed)
        );
    }

    #[rstest]
    #[case::ok_added(
        "default-src 'none'; frame-src https://app.posos.co",
        Some(
            "default-src 'none'; frame-src https://app.posos.co; frame-ancestors https://dpi.chu.local"
        )
    )]
    #[case::ok_kept("default-src 'none'; frame-ancestors 'none'", None)]
    fn ok_with_frame_ancestors(#[case] own: &str, #[case] expected: Option<&str>) {
        assert_eq!(
            with_frame_ancestors(own, &["https://dpi.chu.local".to_string()]).as_deref(),
            expected
        );
    }

    #[test]
    fn ok_policy_frame_ancestors() {
        assert_eq!(
            content_security_policy(&[]),
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        assert!(
            content_security_policy(&["https://dpi.chu.local".to_string()])
                .ends_with("frame-ancestors https://dpi.chu.local")
        );
    }
}
