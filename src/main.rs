//! The `ordobridge` command: run the daemon, check a configuration, read the journal, send
//! files over MLLP, and drive a load test.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use ordobridge::cli::{escape_controls, json as cli_json, print_out, println_out};
use ordobridge::config::{Config, LogFormat};
use ordobridge::store::{EntryStatus, JournalFilter, JournalSearch, Store, StoreOptions};
use ordobridge::{engine, tools};

#[derive(Parser)]
#[command(
    name = "ordobridge",
    version,
    about = "HL7v2 / HPRIM bridge between EHRs and Posos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum MappingAction {
    /// Print FILE, a scan-token mapping in the old `[fields]` format (`from`, `value`,
    /// `default`), rewritten in the mapping language; replace the file with the output.
    Upgrade { file: PathBuf },
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem with its line and key.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List journaled inbound messages, newest first, or print one raw.
    Journal {
        #[arg(long, short)]
        config: PathBuf,
        /// Only messages with this MSH-10.
        #[arg(long)]
        control_id: Option<String>,
        /// Only messages of this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only messages received at or after: RFC 3339 (`2026-11-22T08:15:00+01:00`), a
        /// date (`2026-11-22`, local midnight) or an age (`30m`, `2h`, `3d`, `1w`).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only messages received before (same forms as --since).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only messages whose MSH-9 is this or starts with it and `^` (`ADT`, `ADT^A01`).
        #[arg(long = "type", value_name = "MSH-9")]
        message_type: Option<String>,
        /// Only messages with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only HL7 messages whose PID-3 holds this IPP (patient data: needs --show-phi).
        #[arg(long, requires = "show_phi")]
        ipp: Option<String>,
        /// Allow patient identifiers in the arguments and output (--ipp).
        #[arg(long)]
        show_phi: bool,
        /// Most messages listed (0: no limit).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the raw bytes of the message with this journal id (segments on lines).
        #[arg(long)]
        show: Option<i64>,
        /// One JSON document on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print what the census knows of a patient (identity, INS, encounters, movements).
    Census {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, group = "key")]
        ipp: Option<String>,
        #[arg(long, group = "key")]
        nda: Option<String>,
        #[arg(long, group = "key")]
        ins: Option<String>,
        /// One JSON document on stdout instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// Read a running daemon's `/status` and summarize it; exit 0 when `ok`, 1 when
    /// `attention`, 2 when it cannot be read.
    Status {
        /// The daemon's HTTP address (`[http] bind`).
        #[arg(long, default_value = "http://127.0.0.1:8717")]
        url: String,
        /// `[http] admin_token`, needed unless this machine is in `[http] admin_allow`.
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding `[http] admin_token` (keeps it out of the process list).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the daemon's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// Outbound queues: depth per destination, the dead letters, then the pushed bundles held
    /// until their patient is known.
    Queue {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this destination's dead letters.
        #[arg(long)]
        destination: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Also print the IPP of each held bundle (an identifier: patient data).
        #[arg(long)]
        show_phi: bool,
        /// One JSON document on stdout instead of the tables.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in their queue (same MSH-10, attempts reset); the running daemon
    /// picks them up at its next poll.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// Outbound ids, as `ordobridge queue` lists them.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Delete what the retention settings let go now (the daemon also does it every
    /// `[store] prune_interval`); `--dry-run` only counts.
    Prune {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dry_run: bool,
    },
    /// A consistent copy of the store while the daemon runs (SQLite online backup), checked
    /// with `PRAGMA integrity_check`; DEST must not exist.
    Backup {
        #[arg(long, short)]
        config: PathBuf,
        dest: PathBuf,
    },
    /// Copy a site's store from its SQLite file into PostgreSQL, to run several nodes:
    /// journal, census, queues, holds, documents, audit. Stop the daemon first. Idempotent
    /// and resumable (run it again to finish); the row counts are verified at the end.
    Migrate {
        /// `sqlite:PATH`, the store file (`[store] path`).
        #[arg(long)]
        from: String,
        /// `postgres:URL` (`postgres://user@host:port/db`, no password in it).
        #[arg(long)]
        to: String,
        /// A file holding the PostgreSQL password (its first line).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// CA certificates (PEM) for the server's certificate; TLS is required unless the
        /// server is on this machine.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Console users.
    #[command(subcommand)]
    User(UserCommand),
    /// Try a mapping: read a Posos bundle (or, for a launch mapping, a launch context), apply
    /// the mapping, print the message (or the request body).
    Transform {
        #[arg(long)]
        mapping: PathBuf,
        #[arg(long, required_unless_present = "launch", conflicts_with = "launch")]
        bundle: Option<PathBuf>,
        /// For a launch mapping (scan-token, guide): a JSON object with `user`, `patient` and
        /// `launch`, as in samples/launch/.
        #[arg(long)]
        launch: Option<PathBuf>,
        /// A JSON object standing for the census (`{"ipp": …, "family": …, "nda": …}`);
        /// default: the patient as the bundle describes it.
        #[arg(long)]
        census: Option<PathBuf>,
        #[arg(long, default_value = "TRANSFORM-1")]
        control_id: String,
        /// The time written as "now" (RFC 3339); default: now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Mapping files: `ordobridge mapping upgrade FILE` prints an old-format scan-token
    /// mapping rewritten in the mapping language.
    Mapping {
        #[command(subcommand)]
        action: MappingAction,
    },
    /// Send HL7 files over MLLP, one message after the other, and print each answer.
    Send {
        /// HOST:PORT of the MLLP listener.
        #[arg(long)]
        to: String,
        /// Seconds to wait for each acknowledgment.
        #[arg(long, default_value_t = 30)]
        ack_timeout: u64,
        /// Send the bytes as they are in the files (default: segment ends become CR).
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        tls: TlsArgs,
        /// Files holding one or several messages (LF, CRLF or CR segment ends).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Load test: send messages over N connections, each waiting for its ACK before the next.
    Load {
        /// HOST:PORT of the MLLP listener.
        #[arg(long)]
        to: String,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Seconds to wait for each acknowledgment.
        #[arg(long, default_value_t = 30)]
        ack_timeout: u64,
        #[command(flatten)]
        tls: TlsArgs,
        /// Template messages (files); default: a generated synthetic ADT corpus. Each sent
        /// message gets a unique MSH-10.
        files: Vec<PathBuf>,
    },
}

/// TLS towards the listener; any of these options turns TLS on.
#[derive(clap::Args)]
struct TlsArgs {
    /// Speak TLS, trusting the system roots (unless `--tls-ca`).
    #[arg(long)]
    tls: bool,
    /// PEM bundle of the CA that signed the listener's certificate.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM chain) for mutual TLS; needs `--tls-key`.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The name the listener's certificate must carry (default: the host of `--to`).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl From<TlsArgs> for tools::TlsOptions {
    fn from(args: TlsArgs) -> Self {
        tools::TlsOptions {
            enabled: args.tls,
            ca: args.tls_ca,
            cert: args.tls_cert,
            key: args.tls_key,
            server_name: args.tls_server_name,
        }
    }
}

/// `journal --status`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusArg {
    Accepted,
    Processed,
    Rejected,
}

impl From<StatusArg> for EntryStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::Accepted => EntryStatus::Accepted,
            StatusArg::Processed => EntryStatus::Processed,
            StatusArg::Rejected => EntryStatus::Rejected,
        }
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Hash a password read from standard input (one line) with Argon2id and print the TOML
    /// line to paste under `[console.users]`.
    Add {
        /// The user name (letters, digits, `.`, `_`, `-`, `@`).
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    /// Dashboard and message list, no patient data.
    Viewer,
    /// Patient data, raw messages and actions.
    Operator,
}

/// `ordobridge user add`: reads the password from standard input (a terminal shows it: pipe
/// it, e.g. from a password manager), prints the TOML line on standard output.
fn user_add(name: &str, role: RoleArg) -> Result<ExitCode, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(format!(
            "`{name}` is not a user name: use letters, digits, `.`, `_`, `-` or `@`"
        ));
    }
    let role = match role {
        RoleArg::Viewer => "viewer",
        RoleArg::Operator => "operator",
    };
    eprintln!("password for `{name}` (one line on standard input, at least 12 characters):");
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = password.trim_end_matches(['\r', '\n']);
    let hash = ordobridge::console::hash_password(password)
        .map_err(|e| format!("{e}: choose a longer password"))?;
    eprintln!("paste this line under `[console.users]` in the configuration, then reload:");
    println_out(&format!(
        "{name} = {{ role = \"{role}\", password_hash = \"{hash}\" }}"
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// What `ordobridge journal` was asked.
struct JournalArgs {
    control_id: Option<String>,
    channel: Option<String>,
    since: Option<String>,
    until: Option<String>,
    message_type: Option<String>,
    status: Option<StatusArg>,
    ipp: Option<String>,
    limit: usize,
    show: Option<i64>,
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config } => check(&config),
        Command::Journal {
            config,
            control_id,
            channel,
            since,
            until,
            message_type,
            status,
            ipp,
            show_phi: _,
            limit,
            show,
            json,
        } => journal(
            &config,
            JournalArgs {
                control_id,
                channel,
                since,
                until,
                message_type,
                status,
                ipp,
                limit,
                show,
                json,
            },
        ),
        Command::Census {
            config,
            ipp,
            nda,
            ins,
            json,
        } => census(&config, ipp, nda, ins, json),
        Command::Status {
            url,
            token,
            token_file,
            json,
        } => return status(&url, token, token_file.as_deref(), json),
        Command::Queue {
            config,
            destination,
            limit,
            show_phi,
            json,
        } => queue(&config, destination, limit, show_phi, json),
        Command::Replay { config, ids } => replay(&config, ids),
        Command::User(UserCommand::Add { name, role }) => user_add(&name, role),
        Command::Prune { config, dry_run } => prune(&config, dry_run),
        Command::Backup { config, dest } => backup(&config, &dest),
        Command::Migrate {
            from,
            to,
            password_file,
            ca_file,
        } => migrate(&from, &to, password_file.as_deref(), ca_file.as_deref()),
        Command::Transform {
            mapping,
            bundle: None,
            launch: Some(launch),
            ..
        } => tools::transform_launch(&mapping, &launch).and_then(|out| {
            print_out(&tools::printable_message(&out))?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Transform {
            mapping,
            bundle,
            census,
            control_id,
            now,
            launch: _,
        } => {
            let now = now.unwrap_or_else(|| jiff::Timestamp::now().to_string());
            bundle
                .ok_or_else(|| "give `--bundle FILE` or `--launch FILE`".to_string())
                .and_then(|bundle| {
                    tools::transform(&mapping, &bundle, census.as_deref(), &control_id, &now)
                })
                .and_then(|out| {
                    match out {
                        Some(out) => print_out(&tools::printable_message(&out))?,
                        None => eprintln!(
                            "no message: the mapping's `[message] when` is false for this bundle \
                             (the daemon sends nothing on this route for it)"
                        ),
                    }
                    Ok(ExitCode::SUCCESS)
                })
        }
        Command::Mapping {
            action: MappingAction::Upgrade { file },
        } => std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read `{}`: {e}", file.display()))
            .and_then(|text| {
                ordobridge::mapping::upgrade_scan_token(&text, &file).map_err(|e| e.to_string())
            })
            .and_then(|upgraded| {
                print_out(&upgraded)?;
                Ok(ExitCode::SUCCESS)
            }),
        Command::Send {
            to,
            ack_timeout,
            raw,
            tls,
            files,
        } => runtime().and_then(|rt| {
            rt.block_on(tools::send_files(
                &to,
                &files,
                Duration::from_secs(ack_timeout),
                raw,
                &tls.into(),
            ))
        }),
        Command::Load {
            to,
            connections,
            messages,
            ack_timeout,
            tls,
            files,
        } => runtime().and_then(|rt| {
            rt.block_on(tools::load(
                &to,
                &files,
                connections,
                messages,
                Duration::from_secs(ack_timeout),
                &tls.into(),
            ))
        }),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("ordobridge: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn load_config(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|errors| {
        format!(
            "{} problem(s) in the configuration:\n{errors}",
            errors.0.len()
        )
    })
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(config_path: &Path) -> Result<ExitCode, String> {
    let mut config = load_config(config_path)?;
    init_logging(&config);
    // Printed once, here, never logged: the start that generates the push token shows it.
    if let Some(generated) = engine::resolve_push_token(&mut config)? {
        println!(
            "ordobridge: generated the push endpoint's token in {} (mode 0600).\n\
             Posos must send `Authorization: Bearer {}` to POST /fhir. It is printed only this once;\n\
             read the file again when you need it.",
            generated.path.display(),
            generated.token
        );
    }
    if let Some(generated) = engine::resolve_fhir_token(&mut config)? {
        println!(
            "ordobridge: generated the FHIR routes' token in {} (mode 0600).\n\
             Applications send `Authorization: Bearer {}` to /fhir/Patient, /fhir/Encounter and\n\
             /fhir/CommunicationRequest/$send-to-ehr. It is printed only this once; read the file again when you need it.",
            generated.path.display(),
            generated.token
        );
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let (reload, requests) = engine::reload_channel(ordobridge::tls::Reloader::default());
        tokio::spawn(reload_on_sighup(reload, config_path.to_path_buf()));
        let result = engine::run_reloadable(config, Default::default(), shutdown, requests, |channels| {
            for channel in channels {
                match channel.local_addr {
                    Some(addr) => info!(channel = %channel.name, kind = channel.kind, addr = %addr, "listening"),
                    None => info!(channel = %channel.name, kind = channel.kind, "watching"),
                }
            }
            info!(channels = channels.len(), "all listeners ready");
            // Tell systemd (Type=notify) that we are ready; a no-op outside systemd.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        })
        .await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                error!(error = %e, "ordobridge stopped on an error");
                Err(e.to_string())
            }
        }
    })
}

/// Cancels `shutdown` on SIGTERM (systemd stop) or Ctrl-C.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    info!("stop requested");
    shutdown.cancel();
}

/// On SIGHUP (`systemctl reload`): re-reads the configuration file and every mapping, applies
/// them if all are valid (otherwise the previous configuration stays, and the log says why),
/// then re-reads every TLS certificate and key (established connections keep theirs).
async fn reload_on_sighup(reload: engine::ReloadHandle, config_path: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(e) => {
                error!(error = %e, "cannot listen for SIGHUP: the configuration will not be reloaded");
                return;
            }
        };
        while hup.recv().await.is_some() {
            info!(file = %config_path.display(), "SIGHUP: reloading the configuration, the mappings and the TLS certificates");
            // The outcome is logged (and counted) by the handle.
            let _ = reload.reload_all(&config_path).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reload, config_path);
    }
}

fn check(config_path: &Path) -> Result<ExitCode, String> {
    let config = load_config(config_path)?;
    println_out(&format!(
        "{}: ok ({} inbound channel(s), store {})",
        config_path.display(),
        config.inbound.len(),
        match &config.store.backend {
            ordobridge::store::settings::Backend::Postgres(settings) => settings.target.clone(),
            ordobridge::store::settings::Backend::Sqlite => config.store.path.display().to_string(),
        }
    ))?;
    let checks = tools::check_tls(&config);
    let mut failed = 0;
    for check in &checks {
        println_out(&check.to_string())?;
        failed += usize::from(check.result.is_err());
    }
    if failed > 0 {
        eprintln!("ordobridge: {failed} TLS problem(s): fix the files above, then check again");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn open_store(config: &Config) -> Result<Store, String> {
    Store::open_backend(
        &config.store.backend,
        &config.store.path,
        StoreOptions::default(),
    )
    .map_err(|e| {
        format!(
            "cannot open the store `{}`: {}",
            config.store.path.display(),
            ordobridge::text::error_chain(&e)
        )
    })
}

/// The store for a listing (`journal`, `census`, `queue`): read-only, never migrated or
/// created, usable beside the running daemon.
fn open_store_read_only(config: &Config) -> Result<Store, String> {
    Store::open_backend_read_only(&config.store.backend, &config.store.path).map_err(|e| {
        format!(
            "cannot read the store: {}",
            ordobridge::text::error_chain(&e)
        )
    })
}

fn queue(
    config_path: &Path,
    destination: Option<String>,
    limit: usize,
    show_phi: bool,
    json: bool,
) -> Result<ExitCode, String> {
    let config = load_config(config_path)?;
    let store = open_store_read_only(&config)?;
    let depths = store
        .queue_overview()
        .map_err(|e| format!("cannot read the queues: {e}"))?;
    let dead = store
        .dead_letters(destination.as_deref(), limit)
        .map_err(|e| format!("cannot read the dead letters: {e}"))?;
    let held = store
        .held_bundles(limit)
        .map_err(|e| format!("cannot read the held bundles: {e}"))?;
    let before = jiff::Timestamp::now()
        .checked_sub(ordobridge::cli::UNFINISHED_PUSH_AFTER)
        .unwrap_or(jiff::Timestamp::MIN);
    let unfinished = store
        .unfinished_pushes(ordobridge::cli::PUSH_CHANNEL, before, limit)
        .map_err(|e| format!("cannot read the unfinished pushes: {e}"))?;
    if json {
        let view = cli_json::QueueView {
            depths: &depths,
            dead: &dead,
            held: &held,
            unfinished: &unfinished,
        };
        print_out(&cli_json::to_text(&cli_json::queue(view, show_phi)))?;
    } else {
        print_out(&ordobridge::delivery::render_overview(&depths))?;
        print_out(&ordobridge::delivery::render_dead_letters(&dead))?;
        print_out(&tools::render_held(&held, show_phi))?;
        print_out(&tools::render_unfinished(&unfinished))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(config_path: &Path, ids: Vec<i64>) -> Result<ExitCode, String> {
    let config = load_config(config_path)?;
    let store = open_store(&config)?;
    let wanted = ids.len();
    let replayed = runtime()?
        .block_on(store.replay(ids))
        .map_err(|e| format!("cannot replay: {e}"))?;
    println_out(&format!(
        "{replayed} of {wanted} dead letter(s) back in their queue"
    ))?;
    Ok(if replayed == wanted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn prune(config_path: &Path, dry_run: bool) -> Result<ExitCode, String> {
    let config = load_config(config_path)?;
    let retention = &config.store.retention;
    let Some(plan) = retention.plan(jiff::Timestamp::now()) else {
        println_out(
            "nothing to prune: every retention (`[store] retention` and `rejected_retention`, the channels', `[census] retention`) is `forever`",
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    let store = open_store(&config)?;
    let shown = |d: Option<Duration>| {
        d.map_or("forever".to_string(), |d| {
            format!("{}d", d.as_secs() / 86_400)
        })
    };
    let mut settings = format!(
        "retention: journal {}, rejected {}, census {}",
        shown(retention.retention),
        shown(retention.rejected_retention),
        shown(retention.census)
    );
    for (channel, age) in &retention.channels {
        settings.push_str(&format!("; channel {channel} {}", shown(*age)));
    }
    println_out(&settings)?;
    let census = |pruned: &ordobridge::store::Pruned| {
        format!(
            "{} census encounter(s), {} census patient(s)",
            pruned.census_encounters, pruned.census_patients
        )
    };
    if dry_run {
        let (would, by_channel) = store.prunable_by_channel(&plan).map_err(|e| {
            format!(
                "cannot count what would be pruned: {}",
                ordobridge::text::error_chain(&e)
            )
        })?;
        println_out(&format!(
            "would delete: {} journal row(s), {} outbound message(s), {} released hold(s), {}{}",
            would.journal,
            would.outbound,
            would.holds,
            census(&would),
            documents_pruned(would.documents)
        ))?;
        for (channel, rows) in by_channel {
            println_out(&format!("  channel {channel}: {rows} journal row(s)"))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (pruned, freed) = runtime()?
        .block_on(store.prune(plan, retention.batch))
        .map_err(|e| format!("cannot prune: {}", ordobridge::text::error_chain(&e)))?;
    println_out(&format!(
        "deleted: {} journal row(s), {} outbound message(s), {} released hold(s), {}{}; {freed} page(s) given back to the file system",
        pruned.journal,
        pruned.outbound,
        pruned.holds,
        census(&pruned),
        documents_pruned(pruned.documents)
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `, N document tracking(s)` when documents' tracking is pruned too (`[documents]`).
fn documents_pruned(count: usize) -> String {
    if count == 0 {
        String::new()
    } else {
        format!(", {count} document tracking(s)")
    }
}

fn backup(config_path: &Path, dest: &Path) -> Result<ExitCode, String> {
    let config = load_config(config_path)?;
    let report =
        ordobridge::store::backup::backup(&config.store.path, dest).map_err(|e| e.to_string())?;
    let intake = match report.intake_segments {
        0 => String::new(),
        n => format!(
            ", {n} intake log segment(s) in `{}` (restore it beside the file)",
            ordobridge::store::intake_log_folder(dest).display()
        ),
    };
    println_out(&format!(
        "{}: {} pages, {} journal row(s){intake}, integrity check ok",
        dest.display(),
        report.pages,
        report.journal_rows
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn migrate(
    from: &str,
    to: &str,
    password_file: Option<&Path>,
    ca_file: Option<&Path>,
) -> Result<ExitCode, String> {
    use ordobridge::store::settings::{Password, PostgresSettings, PostgresTls};
    let Some(sqlite) = from.strip_prefix("sqlite:") else {
        return Err(format!(
            "`--from {from}`: expected `sqlite:PATH`, the store file of the site (`[store] path`)"
        ));
    };
    let Some(url) = to.strip_prefix("postgres:") else {
        return Err(
            "`--to`: expected `postgres:URL`, such as `postgres:postgres://ordobridge@db.example:5432/ordobridge`"
                .to_string(),
        );
    };
    let mut target = PostgresSettings::from_url(url).map_err(|e| format!("`--to`: {e}"))?;
    if let Some(file) = password_file {
        target.password =
            Some(Password::from_file(file).map_err(|e| format!("`--password-file`: {e}"))?);
    }
    if let Some(ca) = ca_file {
        target.tls = PostgresTls::VerifyFull {
            ca_file: Some(ca.to_path_buf()),
        };
    }
    let sqlite = Path::new(sqlite);
    if !sqlite.is_file() {
        return Err(format!(
            "`--from`: `{}` is not a file: give the store file of the site (`[store] path`)",
            sqlite.display()
        ));
    }
    let report = ordobridge::store::migrate::copy_sqlite_to_postgres(sqlite, &target, |copy| {
        let _ = println_out(&format!(
            "{}: {} row(s), {} copied now",
            copy.table, copy.rows, copy.copied
        ));
    })
    .map_err(|e| {
        format!(
            "migrate: {}; once fixed, run the command again: it resumes where it stopped",
            ordobridge::text::error_chain(&e)
        )
    })?;
    let rows: i64 = report.iter().map(|t| t.rows).sum();
    println_out(&format!(
        "{}: {} table(s), {rows} row(s), counts verified equal to `{}`",
        target.target,
        report.len(),
        sqlite.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn census(
    config_path: &Path,
    ipp: Option<String>,
    nda: Option<String>,
    ins: Option<String>,
    json: bool,
) -> Result<ExitCode, String> {
    use ordobridge::store::PatientKey;
    let key = match (ipp, nda, ins) {
        (Some(ipp), _, _) => PatientKey::Ipp(ipp),
        (_, Some(nda), _) => PatientKey::Nda(nda),
        (_, _, Some(ins)) => PatientKey::Ins(ins),
        _ => return Err("say which patient: --ipp X, --nda Y or --ins Z".to_string()),
    };
    let store = open_store_read_only(&load_config(config_path)?)?;
    match store
        .census_patient(&key)
        .map_err(|e| format!("cannot read the census: {e}"))?
    {
        Some(view) if json => {
            print_out(&cli_json::to_text(&cli_json::census(&view)))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(view) => {
            print_out(&ordobridge::store::render(&view))?;
            Ok(ExitCode::SUCCESS)
        }
        None => Err(format!(
            "the census knows no patient with {key:?}; check the identifier, or \
             `ordobridge journal` for the messages about it"
        )),
    }
}

/// `ordobridge status`: its own exit codes (0 ok, 1 attention, 2 not readable).
fn status(url: &str, token: Option<String>, token_file: Option<&Path>, json: bool) -> ExitCode {
    use ordobridge::cli::status as daemon;
    let read = || -> Result<(reqwest::Url, serde_json::Value), String> {
        let url = daemon::status_url(url).map_err(|e| e.to_string())?;
        let token = daemon::read_token(token, token_file).map_err(|e| e.to_string())?;
        let value = runtime()?
            .block_on(daemon::fetch(&url, token.as_deref()))
            .map_err(|e| e.to_string())?;
        Ok((url, value))
    };
    let (url, value) = match read() {
        Ok(read) => read,
        Err(message) => {
            eprintln!("ordobridge: {message}");
            return ExitCode::from(2);
        }
    };
    let text = if json {
        cli_json::to_text(&value)
    } else {
        daemon::summary(url.as_str(), &value)
    };
    if let Err(message) = print_out(&text) {
        eprintln!("ordobridge: {message}");
        return ExitCode::from(2);
    }
    daemon::exit_code(&value)
}

fn journal(config_path: &Path, args: JournalArgs) -> Result<ExitCode, String> {
    let search = journal_search(&args)?;
    let store = open_store_read_only(&load_config(config_path)?)?;
    if let Some(id) = args.show {
        let entry = store
            .journal_entry(id)
            .map_err(|e| format!("cannot read the journal: {e}"))?
            .ok_or_else(|| {
                format!("no journal entry with id {id}; `ordobridge journal` lists the ids")
            })?;
        if args.json {
            print_out(&cli_json::to_text(&cli_json::journal_entry(&entry)))?;
        } else {
            // The message alone on stdout (it can be piped to `ordobridge send`); what
            // became of it on stderr.
            let row = &entry.summary;
            eprintln!(
                "journal #{} {} {} {}: {}",
                row.id,
                escape_controls(&row.channel),
                escape_controls(&row.message_type),
                escape_controls(&row.control_id),
                status_text(row)
            );
            print_out(&tools::printable_message(&entry.raw))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Counted before the listing: a copy in between then makes the note count too many,
    // never too few.
    let lag = intake_lag_note(&store);
    let rows = store
        .search_journal(&search)
        .map_err(|e| format!("cannot read the journal: {e}"))?;
    if let Some(note) = lag {
        eprintln!("{note}");
    }
    if args.json {
        print_out(&cli_json::to_text(&cli_json::journal_list(&rows)))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{:>8}  {:<25}  {:<12}  {:<18}  {:<22}  STATUS\n",
        "ID", "RECEIVED", "CHANNEL", "MSH-9", "MSH-10"
    );
    for row in rows {
        let received = row
            .received_at
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S%.3f");
        out.push_str(&format!(
            "{:>8}  {:<25}  {:<12}  {:<18}  {:<22}  {}\n",
            row.id,
            received,
            escape_controls(&row.channel),
            escape_controls(&row.message_type),
            escape_controls(&row.control_id),
            status_text(&row)
        ));
    }
    print_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// What to say on stderr when the daemon acknowledged messages that its intake log has not
/// copied into the journal yet, so that a listing missing them is not taken for a loss.
fn intake_lag_note(store: &Store) -> Option<String> {
    match store.intake_unapplied() {
        Ok(0) => None,
        Ok(waiting) => Some(format!(
            "note: {waiting} acknowledged message(s) are in the intake log, not in the journal yet, so not listed: the running daemon copies them within a second (during a flood, within seconds; a stopped one at its next start); list again to see them"
        )),
        Err(e) => Some(format!(
            "note: cannot tell whether the intake log holds messages not listed yet: {}",
            ordobridge::text::error_chain(&e)
        )),
    }
}

/// `processed`, `rejected (why)`, `processed (not used by the census: why)`.
fn status_text(row: &ordobridge::store::JournalSummary) -> String {
    match row.reason.as_ref().or(row.note.as_ref()) {
        Some(why) => format!("{} ({})", row.status, escape_controls(why)),
        None => row.status.clone(),
    }
}

/// The store query for `journal`'s filters; the times are read against now and the system
/// time zone.
fn journal_search(args: &JournalArgs) -> Result<JournalSearch, String> {
    let now = jiff::Timestamp::now();
    let tz = jiff::tz::TimeZone::system();
    let when = |flag: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| ordobridge::cli::parse_when(t, now, &tz))
            .transpose()
            .map_err(|e| format!("--{flag}: {e}"))
    };
    let since = when("since", &args.since)?;
    let until = when("until", &args.until)?;
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(format!(
            "--since ({since:.0}) is not before --until ({until:.0}): nothing can match; swap them?"
        ));
    }
    let message_type = match args.message_type.as_deref().map(str::trim) {
        Some("") => {
            return Err("--type: empty: expected an MSH-9 such as `ADT` or `ADT^A01`".to_owned());
        }
        other => other.map(str::to_owned),
    };
    let ipp = match args.ipp.as_deref().map(str::trim) {
        Some("") => return Err("--ipp: empty: expected the patient's IPP (PID-3.1)".to_owned()),
        other => other.map(str::to_owned),
    };
    Ok(JournalSearch {
        filter: JournalFilter {
            control_id: args.control_id.clone(),
            channel: args.channel.clone(),
            limit: args.limit,
        },
        since,
        until,
        message_type,
        status: args.status.map(EntryStatus::from),
        ipp,
        ..JournalSearch::default()
    })
}
