//! `[http]`: the listener, its hardening and its TLS.

use std::net::SocketAddr;
use std::path::Path;

use super::Report;
use super::raw::RawHttp;
use super::secrets::secret_problem;
use super::tls::server_tls;
use super::units::{duration_value, positive};

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    /// TLS on the HTTP listener (`[http.tls]`); the client certificate is optional there.
    pub tls: Option<crate::tls::ServerTlsSettings>,
    /// Header read timeout and connection limit of the accept loop.
    pub serve: crate::http::ServeSettings,
    /// Hardening of every route: who reaches the admin routes, which Host names are served,
    /// timeouts and security headers.
    pub guard: crate::http::HttpGuardSettings,
}

pub(super) fn validate_http(
    raw: RawHttp,
    base: &Path,
    report: &mut Report<'_>,
) -> Option<HttpConfig> {
    let mut guard = crate::http::HttpGuardSettings::default();
    if let Some(allow) = &raw.admin_allow {
        match crate::http::AllowList::parse(allow.get_ref()) {
            Ok(list) => guard.admin_allow = list,
            Err(e) => report.push(
                Some(allow.span()),
                "http.admin_allow",
                format!("{e}: write networks such as `127.0.0.0/8` or `10.1.0.0/16`"),
            ),
        }
    }
    if let Some(token) = raw.admin_token.filter(|t| !t.get_ref().is_empty()) {
        if let Err(problem) = secret_problem(token.get_ref()) {
            report.push(
                Some(token.span()),
                "http.admin_token",
                format!("the admin token {problem}"),
            );
        }
        guard.admin_token = Some(token.into_inner());
    }
    for host in raw.hosts.unwrap_or_default() {
        let name = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.contains([':', '/', ' ']) {
            report.push(
                None,
                "http.hosts",
                format!("`{host}` is not a host name: write names such as `ordobridge.chu.local`, without scheme or port"),
            );
        } else {
            guard.hosts.push(name);
        }
    }
    if let Some(timeout) = raw
        .request_timeout
        .and_then(|v| duration_value(v, "http.request_timeout", report))
    {
        guard.request_timeout = timeout;
    }
    guard.frame_ancestors = raw.frame_ancestors.unwrap_or_default();
    for origin in &guard.frame_ancestors {
        if origin.is_empty() || origin.contains([';', ',', ' ', '\'', '"']) {
            report.push(
                None,
                "http.frame_ancestors",
                format!(
                    "`{origin}` is not an origin: write origins such as `https://dpi.chu.local`"
                ),
            );
        }
    }
    let mut serve = crate::http::ServeSettings::default();
    if let Some(timeout) = raw
        .header_read_timeout
        .and_then(|t| duration_value(t, "http.header_read_timeout", report))
    {
        serve.header_read_timeout = timeout;
    }
    if let Some(max) = positive(raw.max_connections, "http.max_connections", report) {
        serve.max_connections = max;
    }
    let tls = raw
        .tls
        .and_then(|tls| server_tls(tls, "http.tls", false, base, report));
    match raw.bind.get_ref().parse::<SocketAddr>() {
        Ok(bind) => Some(HttpConfig {
            bind,
            guard,
            tls,
            serve,
        }),
        Err(_) => {
            report.push(
                Some(raw.bind.span()),
                "http.bind",
                format!(
                    "invalid listen address `{}`: expected IP:PORT such as `127.0.0.1:8717`",
                    raw.bind.get_ref()
                ),
            );
            None
        }
    }
}
