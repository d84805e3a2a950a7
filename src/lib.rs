//! ordobridge: an HL7v2 / HPRIM Santé bridge between hospital EHRs and the Posos
//! prescription-scan service.
//!
//! # Layout
//!
//! Pure modules (no I/O, no tokio, no logging; `tests/architecture.rs` keeps them so):
//!
//! - [`hl7`]: HL7v2 core: zero-copy parse, delimiters, escapes, charsets (MSH-18), paths,
//!   builder, batches, ACK builder.
//! - [`hprim`]: HPRIM Santé: parse (`A` continuations), paths, patients, builder.
//! - [`census`]: what an ADT or an HPRIM `P` record says about a patient and an encounter.
//! - [`mapping`]: mapping files compiled into a [`mapping::Mapping`]; expressions, functions,
//!   the HL7 and HPRIM writers.
//! - [`posos::bundle`]: the tolerant reader of Posos FHIR bundles.
//! - [`diagnostics`]: problems in a file an analyst wrote, by file, line, column and key; one
//!   report for the configuration and the mappings.
//! - [`text`]: untrusted bytes made readable in messages, HTML escaping, error chains.
//!
//! Modules that do I/O; they may use the pure ones, and only [`http`] knows mappings (see
//! the rules below):
//!
//! - [`mllp`]: MLLP framing (a tokio-util codec), the listener that serves a frame handler, the
//!   client, the load tool. Knows nothing of HL7 semantics or storage.
//! - [`filedrop`]: shared folders: the inbox (poll, readiness, archive or `error/`), the outbox
//!   (`.tmp` → fsync → rename → witness). Never follows a symlink.
//! - [`store`]: SQLite (WAL, `synchronous=FULL`), one writer thread with group commit: the
//!   journal, the census, the outbound queues, the holds; retention, backup. One facade,
//!   two backends: `store::postgres` runs what is ported of it on PostgreSQL (several
//!   nodes, issue 14), `store::settings` reads `[store] backend` and `[cluster]`,
//!   `store::ownership` leases each destination to one node.
//! - [`delivery`]: one worker per destination over two transports, MLLP and drop folder
//!   (order, retry with backoff, dead letters); [`retry`]: the backoff with jitter it shares
//!   with the Posos client.
//! - [`http`]: the launch endpoints, access rules (networks, signed links), the HTTP
//!   hardening and the accept loop.
//! - [`posos`]: the service-account authentication, the client, the built-in simulator.
//! - [`tls`]: certificates and keys, rustls configurations for every listener and client,
//!   reloadable; one crypto provider (aws-lc-rs).
//! - [`metrics`]: the latency histograms of `/metrics`, observed where the time is spent.
//! - [`console`]: the web console's parts that need no engine: users and roles, Argon2id
//!   passwords, signed session cookies and CSRF tokens, the login rate limit, French and
//!   English, the HL7 views, the HTML pages (maud) with their embedded script and style sheet.
//!
//! On top:
//!
//! - [`config`]: one TOML file, `${VAR}` expansion, validated with errors that name the file,
//!   line, column and key; the fail-closed security rules. One file per section (its
//!   validation and tests), assembled in `config/mod.rs`.
//! - [`engine`]: the wiring, read top to bottom: open the store, bind, spawn what the
//!   configuration decides (`engine::running`), apply reloads, drain at shutdown; the intake
//!   that commits a message before it answers.
//! - [`cli`] and [`tools`]: the operator commands and the CLI tools (send, load, corpus).
//!
//! Dependencies point down, and `tests/architecture.rs` checks the first three rules:
//!
//! - the pure modules use no tokio, no `std::fs`, no tracing and no [`config`];
//! - no subsystem imports [`config`]: each owns its settings type (as
//!   [`filedrop::InboxSettings`], [`http::LaunchSettings`]) and `config` builds them; the
//!   settings no subsystem owns (`[push]`, `[fhir]`, `[documents]`, retention) are `config`'s
//!   and read by `engine`;
//! - nothing below the top ([`engine`], [`cli`], [`tools`]) imports [`engine`];
//! - an I/O module may use a pure one: `http::launch` applies a [`mapping::Mapping`] (the
//!   scan-token and guide mappings, held in [`http::LaunchSettings`]) to build its Posos
//!   requests. That is a downward edge, to code with no I/O; building the requests in
//!   `engine` instead would need `http` to call back up into it.
//!
//! # Data flow
//!
//! ```text
//!  EHR ──MLLP/TLS──▶ mllp::server ─┐                              ┌─▶ delivery (MLLP) ──▶ EHR
//!  share ─files───▶ filedrop::inbox ┼─▶ store: journal (commit) ─▶ ACK / move
//!                                   │        │                    ├─▶ filedrop::outbox ─▶ share
//!                                   │        ▼                    │
//!                                   │   census (engine::processor)│
//!  browser ─GET /launch/…─▶ http ───┴─▶ posos::client ─▶ Posos    │
//!  Posos ──POST bundle──▶ engine::push ─▶ journal ─▶ mapping ─▶ outbound queue (per destination)
//! ```
//!
//! Every arrow that crosses a process boundary goes through the store first.
//!
//! # Invariants, and where each is kept
//!
//! - **Commit before ACK**: `engine::intake` journals, the store's writer commits (fsync),
//!   and only then does `engine::mllp_in` build the ACK, `engine::file_in` move the file, or
//!   `engine::push` answer 2xx. `tests/crash.rs` and `tests/crash_files.rs` kill the process
//!   under load and count.
//! - **Per-destination order**: one worker per destination (`delivery::mllp`, `delivery::file`)
//!   takes the head of its queue; a reload stops the old worker before the new one starts.
//! - **Bad input gets a precise answer**: the parsers return errors that name the segment and
//!   field; the handlers turn them into AE/AR with ERR, an `error/` file with a `.reason`, or
//!   an OperationOutcome.
//! - **Bounded memory**: the store's queue (`queue_capacity`), frame and body limits, the
//!   connection limits; a slow EHR slows the intake.
//! - **No PHI at info**: log lines name journal ids, channels and destinations;
//!   `tests/no_phi_in_logs.rs` checks.
//!
//! # How to add…
//!
//! - **A channel kind**: its settings type beside its subsystem (as
//!   [`filedrop::InboxSettings`]), parsed in [`config`]; a handler in `engine` that builds
//!   journal records through `engine::intake` (so commit-before-answer holds); started and
//!   stopped in `engine::running` (`start_inbound`), which also decides what a reload does to
//!   it.
//! - **A mapping function**: its name and arity in `mapping::expr` (`Func` and the parser's
//!   `call`), its evaluation in `mapping::eval`, an `ok_*`/`err_*` rstest pair beside each,
//!   and a line in the README's mapping reference.
//! - **A metric**: a counter the subsystem already keeps (an atomic in its stats), read at
//!   scrape time by `engine::status`; a latency histogram in [`metrics`].

pub mod census;
pub mod cli;
pub mod config;
pub mod console;
pub mod delivery;
pub mod diagnostics;
pub mod engine;
pub mod filedrop;
pub mod hl7;
pub mod hprim;
pub mod http;
pub mod mapping;
pub mod metrics;
pub mod mllp;
pub mod posos;
pub mod retry;
pub mod store;
pub mod text;
pub mod tls;
pub mod tools;
