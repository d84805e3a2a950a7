//! The HTTP side of ordobridge (axum): the launch endpoints an EHR button opens, and health.
//!
//! # Layout
//!
//! - [`launch`]: `GET /launch/scan` and `GET /launch/guide/{guide}`, the [`LaunchContext`] and
//!   [`PososApi`] traits they depend on, and their settings.
//! - [`launch_page`]: the launch page (`mode=page`): Scan & Go framed, and the status of the
//!   imported prescription (`/launch/status/{token}`) through the [`ImportTracker`] trait.
//! - [`access`]: who may launch: the source-network allow-list and HMAC-signed links
//!   ([`sign_launch_url`] builds them for EHR integrators).
//! - The scan-token and guide requests are built by mappings of the one mapping language
//!   ([`crate::mapping`], `format = "json"`, `input = "launch"`), held in [`LaunchSettings`].
//! - [`credentials`]: bearer and basic credentials of an authenticated endpoint (the push,
//!   the `/fhir` routes), compared in constant time.
//! - [`fhir`]: the pure side of the document routes: `$send-to-ehr` parameters read and
//!   checked, search tokens, OperationOutcome.
//! - [`guard`]: what every route shares: served `Host` names, the admin routes' access,
//!   the request timeout and the security headers.
//! - [`error`]: the one API error type, [`LaunchError`], rendered as an HTML page a clinician
//!   understands (French, then English) with a correlation id that the logs carry too.
//!
//! - [`serve`]: the accept loop (TLS, header read timeout, connection limit, graceful
//!   shutdown) that hands each request its peer address and verified client certificate.
//!
//! Serve the router with [`serve::serve`] (or `into_make_service_with_connect_info::<SocketAddr>()`):
//! the allow-list needs the peer address, and a request without one is refused.

pub mod access;
pub mod credentials;
pub mod error;
pub mod fhir;
pub mod guard;
pub mod launch;
pub mod launch_page;
mod query;
pub mod serve;

use axum::Json;
use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use serde_json::{Value, json};

pub use access::{
    AccessError, AllowList, Cidr, SigningSecret, UsedLinks, sign_launch_url,
    verify_launch_signature,
};
pub use error::{CORRELATION_HEADER, ErrorPage, LaunchError};
pub use guard::HttpGuardSettings;
pub use launch::{
    CorrelationId, DEFAULT_MAX_LINK_AGE, GUIDE_FIELDS, LaunchContext, LaunchFailure,
    LaunchSettings, LaunchState, ParameterNames, PatientContext, PatientKey, PososApi,
    PractitionerContext, SCAN_TOKEN_FIELDS, UnknownPatient, launch_mapping_problems, shipped_guide,
    shipped_scan_token,
};
pub use launch_page::{ImportTracker, OpenLaunches, PageMode, PageSettings};
pub use serve::ServeSettings;

/// The HTTP routes: `/launch/scan` and `/launch/guide/{guide}` behind the access guard; the
/// launch page's status (`/launch/status/{token}`: the allow-list and its unguessable token)
/// and assets; `/health` open to all (it says nothing about patients).
pub fn router<C: LaunchContext, P: PososApi>(state: LaunchState<C, P>) -> Router {
    let page = Router::new()
        .route("/launch/status/{token}", get(launch_page::status))
        .route(launch_page::SCRIPT_PATH, get(launch_page::script))
        .route(launch_page::STYLE_PATH, get(launch_page::style))
        .with_state(state.status_state());
    Router::new()
        .route("/launch/scan", get(launch::scan::<C, P>))
        .route("/launch/guide/{guide}", get(launch::guide::<C, P>))
        .route_layer(from_fn_with_state(state.clone(), launch::guard::<C, P>))
        .route("/health", get(health))
        .with_state(state)
        .merge(page)
}

/// `GET /health`: `200 {"status":"ok"}` while the process serves HTTP.
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
