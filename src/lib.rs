//! ordobridge: an HL7v2 / HPRIM Santé bridge between hospital EHRs and the Posos
//! prescription-scan service.
//!
//! # Layout
//!
//! - [`config`]: one TOML file, `${VAR}` / `${VAR:-default}` expansion, validated at start with
//!   errors that name the line and the key.
//! - [`hl7`]: pure HL7v2 core: zero-copy parse, escapes, charsets (MSH-18), path access,
//!   builder, batches, ACK builder. No I/O.
//! - [`mllp`]: MLLP framing (a tokio-util codec) and the listener that serves a frame handler.
//!   Knows nothing of HL7 semantics or storage.
//! - [`store`]: SQLite (WAL, `synchronous=FULL`): the journal of inbound messages, written by
//!   one writer thread with group commit.
//! - [`metrics`]: the latency histograms of `/metrics` (prometheus-client), observed where the
//!   time is spent.
//! - [`tls`]: certificates and keys (PEM), rustls server and client configurations for every
//!   listener and client, reloaded on SIGHUP; one crypto provider (aws-lc-rs).
//! - [`console`]: the web console's pure parts: users and roles, Argon2id passwords, signed
//!   session cookies and CSRF tokens, the login rate limit, French and English, the HL7 views,
//!   the HTML pages (maud) and their embedded script and style sheet.
//! - [`tools`]: the CLI tools: send files over MLLP, load test, synthetic corpus.
//! - [`engine`]: the wiring, read top to bottom: load config, open the store, bind, spawn,
//!   wait; and the inbound channel that commits a message before it answers its ACK.
//!
//! The invariants users trust us for are in `DESIGN.md` terms: commit before ACK, nothing lost,
//! a clear answer to bad input, bounded memory.

pub mod census;
pub mod cli;
pub mod config;
pub mod console;
pub mod delivery;
pub mod engine;
pub mod filedrop;
pub mod hl7;
pub mod hprim;
pub mod http;
pub mod mapping;
pub mod metrics;
pub mod mllp;
pub mod posos;
pub mod store;
pub mod tls;
pub mod tools;
