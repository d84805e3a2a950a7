//! Analyst and operator tools behind the CLI: send files over MLLP, drive a load test, print
//! a journaled message, and the synthetic ADT corpus used by the load tool and the benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::lookup_host;

use crate::hl7::{Message, Path};
use crate::mllp::client::{ClientSettings, MllpClient};
use crate::mllp::load::run_load_with;

async fn resolve(to: &str) -> Result<SocketAddr, String> {
    lookup_host(to)
        .await
        .map_err(|e| format!("cannot resolve `{to}`: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("`{to}` resolves to no address"))
}

fn read_messages(files: &[PathBuf], raw: bool) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut messages = Vec::new();
    for file in files {
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
        let batch =
            crate::hl7::batch::split(&bytes).map_err(|e| format!("`{}`: {e}", file.display()))?;
        for (i, message) in batch.messages().into_iter().enumerate() {
            let payload = if raw {
                message.to_vec()
            } else {
                normalize_segment_ends(message)
            };
            messages.push((format!("{}#{}", file.display(), i + 1), payload));
        }
    }
    Ok(messages)
}

/// Turns LF and CRLF segment ends into CR, the HL7 standard, and drops trailing blank lines.
pub fn normalize_segment_ends(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut bytes = message.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                if bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.push(b'\r');
            }
            b'\n' => out.push(b'\r'),
            other => out.push(other),
        }
    }
    while out.ends_with(b"\r\r") {
        out.pop();
    }
    if !out.ends_with(b"\r") {
        out.push(b'\r');
    }
    out
}

/// `ordobridge check`: the files of every TLS use of the configuration (listeners,
/// destinations, HTTP), checked: readable, key matching the certificate, not expired.
pub fn check_tls(config: &crate::config::Config) -> Vec<crate::tls::FileCheck> {
    use crate::config::{Destination, InboundKind};
    use crate::tls::{FileCheck, check_files};
    let now = crate::tls::files::now_unix();
    let server = |usage: String, tls: &crate::tls::ServerTlsSettings| FileCheck {
        usage,
        result: check_files(Some((&tls.cert, &tls.key)), tls.client_ca.as_deref(), now),
    };
    let mut checks = Vec::new();
    for (name, channel) in &config.inbound {
        if let InboundKind::Mllp(mllp) = &channel.kind
            && let Some(tls) = &mllp.tls
        {
            checks.push(server(format!("inbound/{name}"), tls));
        }
    }
    for (name, destination) in &config.outbound {
        if let Destination::Mllp(mllp) = destination
            && let Some(tls) = &mllp.tls
        {
            checks.push(FileCheck {
                usage: format!("outbound/{name}"),
                result: check_files(
                    tls.cert_and_key
                        .as_ref()
                        .map(|(c, k)| (c.as_path(), k.as_path())),
                    tls.ca.as_deref(),
                    now,
                ),
            });
        }
    }
    if let Some(tls) = config.http.as_ref().and_then(|h| h.tls.as_ref()) {
        checks.push(server("http".to_string(), tls));
    }
    checks
}

/// TLS options of `send` and `load` (`--tls`, `--tls-ca`, `--tls-cert`, `--tls-key`,
/// `--tls-server-name`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Speak TLS even without any other option (system roots, server name from `--to`).
    pub enabled: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// The client settings these options ask for; TLS when any option is given.
    pub fn client_settings(&self, to: &str) -> Result<ClientSettings, String> {
        let wanted = self.enabled
            || self.ca.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.server_name.is_some();
        if !wanted {
            return Ok(ClientSettings::default());
        }
        let cert_and_key = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => {
                return Err(
                    "--tls-cert and --tls-key go together: give both for a client certificate"
                        .to_string(),
                );
            }
        };
        let host = to.rsplit_once(':').map_or(to, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let settings = crate::tls::ClientTlsSettings {
            ca: self.ca.clone(),
            server_name: self.server_name.clone().unwrap_or_else(|| host.to_string()),
            cert_and_key,
        };
        crate::tls::install_crypto_provider();
        let tls = settings.client("send").map_err(|e| e.to_string())?;
        Ok(ClientSettings {
            tls: Some(tls),
            ..ClientSettings::default()
        })
    }
}

/// `ordobridge send`: sends each message of each file and prints one line per answer.
pub async fn send_files(
    to: &str,
    files: &[PathBuf],
    ack_timeout: Duration,
    raw: bool,
    tls: &TlsOptions,
) -> Result<ExitCode, String> {
    let addr = resolve(to).await?;
    let messages = read_messages(files, raw)?;
    let settings = tls.client_settings(to)?;
    let mut client = MllpClient::connect(addr, settings)
        .await
        .map_err(|e| crate::text::error_chain(&e))?;
    let mut failures = 0usize;
    let msa_1: Path = "MSA-1".parse().map_err(|e| format!("{e}"))?;
    let msa_3: Path = "MSA-3".parse().map_err(|e| format!("{e}"))?;
    let err_8: Path = "ERR-8".parse().map_err(|e| format!("{e}"))?;
    for (name, payload) in messages {
        let answer = client
            .send(&payload, ack_timeout)
            .await
            .map_err(|e| format!("{name}: {}", crate::text::error_chain(&e)))?;
        let (code, text) = match Message::parse(&answer) {
            Ok(ack) => {
                let code = ack.text(&msa_1).map(|c| c.into_owned()).unwrap_or_default();
                let text = ack
                    .text(&err_8)
                    .or_else(|| ack.text(&msa_3))
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                (code, text)
            }
            Err(e) => ("??".to_string(), format!("unreadable answer: {e}")),
        };
        if code != "AA" && code != "CA" {
            failures += 1;
        }
        crate::cli::println_out(&format!("{name}: {code} {text}"))?;
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// A message split around its MSH-10, so that each copy can get its own control id cheaply.
struct Template {
    before: Bytes,
    after: Bytes,
}

impl Template {
    fn new(message: &[u8]) -> Result<Template, String> {
        let parsed = Message::parse(message).map_err(|e| e.to_string())?;
        let path: Path = "MSH-10".parse().map_err(|e| format!("{e}"))?;
        let control_id = parsed
            .get(&path)
            .ok_or("the template has no MSH-10 field")?;
        let start = control_id.as_ptr() as usize - message.as_ptr() as usize;
        let end = start + control_id.len();
        Ok(Template {
            before: Bytes::copy_from_slice(message.get(..start).unwrap_or_default()),
            after: Bytes::copy_from_slice(message.get(end..).unwrap_or_default()),
        })
    }

    fn with_control_id(&self, control_id: &str) -> Bytes {
        let mut out = Vec::with_capacity(self.before.len() + control_id.len() + self.after.len());
        out.extend_from_slice(&self.before);
        out.extend_from_slice(control_id.as_bytes());
        out.extend_from_slice(&self.after);
        Bytes::from(out)
    }
}

/// `ordobridge load`: sends `messages` messages over `connections` connections, each waiting
/// for its ACK before the next, every message with a unique MSH-10, and prints the report.
pub async fn load(
    to: &str,
    files: &[PathBuf],
    connections: usize,
    messages: usize,
    ack_timeout: Duration,
    tls: &TlsOptions,
) -> Result<ExitCode, String> {
    let addr = resolve(to).await?;
    let settings = tls.client_settings(to)?;
    let corpus: Vec<Vec<u8>> = if files.is_empty() {
        synthetic_adt(64)
    } else {
        read_messages(files, false)?
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    };
    let templates = corpus
        .iter()
        .map(|m| Template::new(m))
        .collect::<Result<Vec<_>, _>>()?;
    if templates.is_empty() {
        return Err("the load corpus holds no message".to_string());
    }
    let templates = Arc::new(templates);
    let run = jiff::Timestamp::now().as_second();
    let make = move |n: usize| {
        let template = &templates[n % templates.len()];
        template.with_control_id(&format!("L{run}N{n}"))
    };
    let report = run_load_with(
        addr,
        settings,
        Arc::new(make),
        connections,
        messages,
        ack_timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    crate::cli::println_out(&format!("{report}"))?;
    Ok(if report.errors == 0 && report.acked_ok == report.sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `ordobridge transform`: reads a bundle, applies a mapping, and returns the message for a
/// terminal (segments on lines); `None` when the mapping's `[message] when` is false for this
/// bundle (no message would be sent). `census` is an optional JSON object standing for what
/// the census would know; `control_id` and `now` are fixed so the output is reproducible.
pub fn transform(
    mapping_file: &std::path::Path,
    bundle_file: &std::path::Path,
    census: Option<&std::path::Path>,
    control_id: &str,
    now: &str,
) -> Result<Option<Vec<u8>>, String> {
    let body = std::fs::read(bundle_file)
        .map_err(|e| format!("cannot read `{}`: {e}", bundle_file.display()))?;
    let census = match census {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| format!("`{}` is not JSON: {e}", path.display()))?,
            )
        }
        None => None,
    };
    transform_bytes(
        mapping_file,
        &body,
        &bundle_file.display().to_string(),
        census,
        control_id,
        now,
    )
}

/// [`transform`] on a bundle already in memory (`bundle_name` names it in errors): what
/// `ordobridge transform` and the console's mapping try-out both run. `census` stands for
/// the census (default: the patient as the bundle describes it).
pub fn transform_bytes(
    mapping_file: &std::path::Path,
    body: &[u8],
    bundle_name: &str,
    census: Option<serde_json::Value>,
    control_id: &str,
    now: &str,
) -> Result<Option<Vec<u8>>, String> {
    let mapping = crate::config::read_mapping(mapping_file).map_err(|e| e.to_string())?;
    if mapping.inputs() != crate::mapping::Inputs::Push {
        return Err(format!(
            "`{}` reads a {} (`[message] input = \"{}\"`), not a bundle: give `--launch FILE`, a JSON object with `user`, `patient` and `launch` (see samples/launch/)",
            mapping_file.display(),
            mapping.inputs().name(),
            mapping.inputs().name()
        ));
    }
    let prescription =
        crate::posos::bundle::read_bundle(body).map_err(|e| format!("`{bundle_name}`: {e}"))?;
    let census = census.unwrap_or_else(|| crate::mapping::census_from_bundle(&prescription));
    // Built as the push endpoint builds it.
    let mut context =
        crate::mapping::PushContext::new(&prescription, census, now).map_err(|e| e.to_string())?;
    let context = context.for_message(control_id);
    let failed = |e: crate::mapping::ApplyError| {
        format!("`{}` on `{bundle_name}`: {e}", mapping_file.display())
    };
    if !mapping.applies(context).map_err(failed)? {
        return Ok(None);
    }
    if mapping.format() == crate::mapping::OutputFormat::Json {
        let body = mapping.apply_json(context).map_err(failed)?;
        return Ok(Some(pretty_json(&body)));
    }
    mapping.apply(context).map(Some).map_err(failed)
}

/// `ordobridge transform --launch`: applies a launch mapping (the scan-token or guide
/// request) to a launch context read from `launch_file`, a JSON object with `user`,
/// `patient` and `launch` as [`crate::mapping::LaunchInput`] describes them; returns the JSON
/// body, indented.
pub fn transform_launch(
    mapping_file: &std::path::Path,
    launch_file: &std::path::Path,
) -> Result<Vec<u8>, String> {
    let mapping = crate::config::read_mapping(mapping_file).map_err(|e| e.to_string())?;
    if mapping.inputs() != crate::mapping::Inputs::Launch {
        return Err(format!(
            "`{}` reads a {} (`[message] input = \"{}\"`), not a launch: give `--bundle FILE`",
            mapping_file.display(),
            mapping.inputs().name(),
            mapping.inputs().name()
        ));
    }
    let text = std::fs::read_to_string(launch_file)
        .map_err(|e| format!("cannot read `{}`: {e}", launch_file.display()))?;
    let context: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("`{}` is not JSON: {e}", launch_file.display()))?;
    if !context.is_object() {
        return Err(format!(
            "`{}`: expected a JSON object with `user`, `patient` and `launch`",
            launch_file.display()
        ));
    }
    let failed = |e: crate::mapping::ApplyError| {
        format!(
            "`{}` on `{}`: {e}",
            mapping_file.display(),
            launch_file.display()
        )
    };
    if mapping.format() == crate::mapping::OutputFormat::Json {
        let body = mapping.apply_json(&context).map_err(failed)?;
        return Ok(pretty_json(&body));
    }
    mapping.apply(&context).map_err(failed)
}

/// A JSON body for a terminal, indented.
fn pretty_json(body: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(body).unwrap_or_else(|_| body.to_string().into_bytes())
}

/// A journaled message for a terminal: segments on their own lines, decoded in its charset.
pub fn printable_message(raw: &[u8]) -> String {
    let text = if let Ok(message) = Message::parse(raw) {
        message.decode(raw).into_owned()
    } else if let Ok(message) = crate::hprim::Message::parse(raw, None) {
        message.charset().decode(raw).into_owned()
    } else {
        String::from_utf8_lossy(raw).into_owned()
    };
    let mut out = text.replace("\r\n", "\n").replace('\r', "\n");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Held pushed bundles as a table, for `ordobridge queue`: journal id (for `ordobridge
/// journal --show`), held since, release at. The IPP is an identifier (PHI): shown only with
/// `show_phi`.
pub fn render_held(held: &[crate::store::HeldBundle], show_phi: bool) -> String {
    if held.is_empty() {
        return "no pushed bundle held\n".to_owned();
    }
    let mut header = vec!["JOURNAL ID", "HELD SINCE", "RELEASE AT"];
    if show_phi {
        header.push("IPP");
    }
    let rows: Vec<Vec<String>> = held
        .iter()
        .map(|hold| {
            let mut row = vec![
                hold.journal_id.to_string(),
                format!("{:.0}", hold.held_at),
                format!("{:.0}", hold.release_at),
            ];
            if show_phi {
                // Escaped like any untrusted text printed to a terminal.
                row.push(hold.partner_id.escape_debug().to_string());
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "{} pushed bundle(s) held until their patient is known\n",
        held.len()
    );
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Pushed bundles that never finished, for `ordobridge queue`; nothing when there are none.
pub fn render_unfinished(rows: &[crate::store::JournalSummary]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "{} pushed bundle(s) still `accepted` {} min after they arrived (not held, not \
         queued): see `ordobridge journal --show ID`, then ask Posos to push again\n\
         JOURNAL ID  RECEIVED\n",
        rows.len(),
        crate::cli::UNFINISHED_PUSH_AFTER.as_secs() / 60
    );
    for row in rows {
        out.push_str(&format!("{:<10}  {:.0}\n", row.id, row.received_at));
    }
    out
}

const FAMILY: [&str; 12] = [
    "MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU",
    "LAURENT", "SIMON", "MICHEL",
];
const GIVEN: [&str; 12] = [
    "JEANNE", "LUC", "CLAIRE", "PIERRE", "ANAIS", "HUGO", "LEA", "LOUIS", "CHLOE", "JULES", "EMMA",
    "NOAH",
];
const UNITS: [&str; 6] = ["CARDIO", "PNEUMO", "NEURO", "GERIA", "CHIR", "URG"];
const EVENTS: [(&str, &str); 6] = [
    ("A01", "ADT_A01"),
    ("A02", "ADT_A02"),
    ("A03", "ADT_A03"),
    ("A04", "ADT_A01"),
    ("A08", "ADT_A01"),
    ("A31", "ADT_A05"),
];

/// `count` synthetic PAM FR ADT messages (fictitious people, test INS OID), CR segment ends,
/// about 1 KB each, varied enough that no two are alike. Deterministic.
pub fn synthetic_adt(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let (event, structure) = EVENTS[i % EVENTS.len()];
            let family = FAMILY[i % FAMILY.len()];
            let given = GIVEN[(i / 3) % GIVEN.len()];
            let unit = UNITS[i % UNITS.len()];
            let ipp = 100_000 + i;
            let nda = 900_000 + i;
            let ins = 275_046_912_300_000u64 + i as u64;
            let day = 1 + i % 28;
            let sex = if i % 2 == 0 { "F" } else { "M" };
            let auth = "CH_EXEMPLE&1.2.250.1.999.1&ISO";
            let rpps = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS";
            format!(
                "MSH|^~\\&|DPI_SYNTH|CH_EXEMPLE|ORDOBRIDGE|POSOS|202611{day:02}101500||ADT^{event}^{structure}|SYN{i:08}|P|2.5|||||FRA|UNICODE UTF-8|||2.11^IHE_FR\r\
EVN||202611{day:02}101500||||202611{day:02}101500\r\
PID|1||{ipp}^^^{auth}^PI~{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||{family}^{given}^{given}^^^^L~{family}^{given}^^^^^D||19{:02}0{}1{}|{sex}|||{} RUE DES LILAS^^LYON^^69003^FRA^H||04720000{:02}|||||{nda}^^^{auth}^AN||||||||||||||VALI\r\
PV1|1|I|{unit}^1{:02}^1^CH_EXEMPLE||||100034567{:02}^LEBLANC^PIERRE^^^DR^^^{rpps}|||MED|||||||||{nda}^^^{auth}^VN|||||||||||||||||||||||||202611{day:02}101500|\r\
PV2|||^MOTIF D'HOSPITALISATION SYNTHETIQUE\r\
ZBE|MVT{i:08}^CH_EXEMPLE|202611{day:02}101500||INSERT|N||^^^^^^UF^^^40{:02}\r\
ROL|1|AD|ODRP^Prescripteur^IHE FR|100034567{:02}^LEBLANC^PIERRE^^^DR^^^{rpps}\r",
                40 + i % 50,
                1 + i % 9,
                i % 10,
                1 + i % 90,
                i % 100,
                i % 30,
                i % 100,
                i % 60,
                i % 100,
            )
            .into_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_corpus_parses_and_has_the_fields_the_benchmarks_read() {
        let pid_3_1: Path = "PID-3.1".parse().expect("path");
        let pv1_19: Path = "PV1-19.1".parse().expect("path");
        for (i, raw) in synthetic_adt(50).iter().enumerate() {
            let message = Message::parse(raw).expect("synthetic message parses");
            assert_eq!(
                message.text(&pid_3_1).as_deref(),
                Some(format!("{}", 100_000 + i).as_str())
            );
            assert_eq!(
                message.text(&pv1_19).as_deref(),
                Some(format!("{}", 900_000 + i).as_str())
            );
        }
    }

    #[test]
    fn template_replaces_only_the_control_id() {
        let corpus = synthetic_adt(1);
        let template = Template::new(&corpus[0]).expect("template");
        let copy = template.with_control_id("X42");
        let message = Message::parse(&copy).expect("parses");
        assert_eq!(message.header().control_id, "X42");
        assert_eq!(copy.len(), corpus[0].len() - "SYN00000000".len() + 3);
    }

    fn held() -> Vec<crate::store::HeldBundle> {
        let at = |s: &str| s.parse::<jiff::Timestamp>().expect("time");
        vec![crate::store::HeldBundle {
            journal_id: 7,
            partner_id: "IPP000042".to_owned(),
            held_at: at("2026-11-22T08:15:00Z"),
            release_at: at("2026-11-22T08:30:00Z"),
        }]
    }

    #[test]
    fn held_bundles_hide_the_ipp_unless_asked() {
        assert_eq!(
            render_held(&held(), false),
            "1 pushed bundle(s) held until their patient is known\n\
             JOURNAL ID  HELD SINCE            RELEASE AT\n\
             7           2026-11-22T08:15:00Z  2026-11-22T08:30:00Z\n"
        );
        assert_eq!(
            render_held(&held(), true),
            "1 pushed bundle(s) held until their patient is known\n\
             JOURNAL ID  HELD SINCE            RELEASE AT            IPP\n\
             7           2026-11-22T08:15:00Z  2026-11-22T08:30:00Z  IPP000042\n"
        );
        assert_eq!(render_held(&[], true), "no pushed bundle held\n");
    }

    #[test]
    fn segment_ends_are_normalized_to_cr() {
        assert_eq!(
            normalize_segment_ends(b"MSH|^~\\&|A\nPID|1\r\nPV1|1\n\n"),
            b"MSH|^~\\&|A\rPID|1\rPV1|1\r"
        );
    }
}
