//! Posos: everything ordobridge says to the Posos prescription-scan service, and a simulator
//! of it.
//!
//! # Layout
//!
//! - [`auth`]: service-account key → RS256 assertion → identity token, cached and shared.
//! - [`client`]: the partner-connect calls (`scan-token`, `proxy/prepare`) with timeouts,
//!   retries, one token refresh on 401/403, and errors that say what to do.
//! - [`simulator`]: an axum router that plays Posos (token endpoint, context calls, a Scan & Go
//!   page that pushes a FHIR Bundle back), for demos and tests.
//!
//! The engine maps each configured environment (preprod, production) onto a
//! [`PososSettings`] and builds one [`PososClient`] from it.

pub mod auth;
pub mod bundle;
pub mod client;
pub mod simulator;
mod wire;

pub use auth::{AuthError, IdentityTokens, ServiceAccountKey};
pub use client::{
    GuideRequest, LaunchUrl, PososClient, PososError, PososSettings, ScanTokenRequest,
};
pub use simulator::{SimulatorError, SimulatorSettings, SimulatorState, router};
