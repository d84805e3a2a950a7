//! `[launch]`: how EHR buttons open Posos sessions (the scan-token and guide mappings, who may
//! launch, signed links).

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw::RawLaunch;
use super::secrets::secret_problem;
use super::units::duration_value;
use super::{Report, read_mapping, resolve_path};

#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The launch settings, with the scan-token mapping already loaded and checked.
    pub settings: crate::http::LaunchSettings,
    /// The mapping file, for messages.
    pub mapping_file: PathBuf,
}

/// A launch mapping (`[launch] mapping`, `guide_mapping`): loaded, and checked fit for the
/// request it builds.
fn launch_mapping(
    file: &Path,
    value: &Spanned<String>,
    key: &str,
    request: &str,
    fields: &[&str],
    report: &mut Report<'_>,
) -> Option<crate::mapping::Mapping> {
    match read_mapping(file) {
        Ok(mapping) => {
            let problems = crate::http::launch_mapping_problems(&mapping, request, fields);
            for problem in &problems {
                report.push(
                    Some(value.span()),
                    key,
                    format!("{}: {problem}", file.display()),
                );
            }
            problems.is_empty().then_some(mapping)
        }
        Err(e) => {
            report.push(Some(value.span()), key, e.to_string());
            None
        }
    }
}

pub(super) fn validate_launch(
    raw: RawLaunch,
    base: &Path,
    report: &mut Report<'_>,
) -> Option<LaunchConfig> {
    let mapping_file = resolve_path(base, raw.mapping.get_ref());
    let mapping = launch_mapping(
        &mapping_file,
        &raw.mapping,
        "launch.mapping",
        "scan-token",
        &crate::http::SCAN_TOKEN_FIELDS,
        report,
    );
    let guide_mapping = match &raw.guide_mapping {
        Some(file) => launch_mapping(
            &resolve_path(base, file.get_ref()),
            file,
            "launch.guide_mapping",
            "guide",
            &crate::http::GUIDE_FIELDS,
            report,
        ),
        None => match crate::http::shipped_guide() {
            Ok(mapping) => Some(mapping),
            Err(e) => {
                report.push(None, "launch.guide_mapping", e.to_string());
                None
            }
        },
    };
    let allow_list = match &raw.allow {
        Some(allow) => match crate::http::AllowList::parse(allow.get_ref()) {
            Ok(list) => Some(list),
            Err(e) => {
                report.push(
                    Some(allow.span()),
                    "launch.allow",
                    format!(
                        "{e}: write networks such as `127.0.0.0/8`, `10.1.0.0/16` or `::1/128`"
                    ),
                );
                None
            }
        },
        None => Some(crate::http::AllowList::loopback()),
    };
    let signing_secret = raw.signing_secret.filter(|s| !s.get_ref().is_empty());
    if let Some(secret) = &signing_secret
        && let Err(problem) = secret_problem(secret.get_ref())
    {
        report.push(
            Some(secret.span()),
            "launch.signing_secret",
            format!("the signing secret {problem}"),
        );
    }
    let signing_secret =
        signing_secret.map(|s| crate::http::SigningSecret::new(s.into_inner().into_bytes()));
    if let Some(list) = &allow_list
        && !raw.require_signature
        && !raw.allow_unsigned_links
        && let Some(network) = list.networks().iter().find(|n| !n.is_loopback())
    {
        report.push(
            raw.allow.as_ref().map(Spanned::span),
            "launch.allow",
            format!(
                "`{network}` reaches beyond this machine while unsigned links are accepted: anybody there could open any patient's Posos session by typing an IPP. Set `require_signature = true` with a `signing_secret` (the EHR signs its links), or, for an EHR that cannot sign, `allow_unsigned_links = true`"
            ),
        );
    }
    let max_link_age = raw
        .max_link_age
        .and_then(|v| duration_value(v, "launch.max_link_age", report))
        .unwrap_or(crate::http::DEFAULT_MAX_LINK_AGE);
    if raw.require_signature && signing_secret.is_none() {
        report.push(
            None,
            "launch.require_signature",
            "signed links are required but `signing_secret` is empty: set `signing_secret = \"${ORDOBRIDGE_LAUNCH_SECRET}\"`".to_string(),
        );
    }
    let mut settings = crate::http::LaunchSettings::new(mapping?, guide_mapping?);
    if let Some(parameters) = raw.parameters {
        settings.parameters = parameters;
    }
    settings.allow_list = allow_list?;
    settings.signing_secret = signing_secret;
    settings.require_signature = raw.require_signature;
    settings.allow_unsigned_links = raw.allow_unsigned_links;
    settings.max_link_age = max_link_age;
    settings.unknown_patient = raw.unknown_patient.unwrap_or_default();
    settings.page.mode = raw.page_mode.unwrap_or_default();
    if let Some(origin) = &raw.posos_origin {
        match crate::http::launch_page::origin_of(origin.get_ref()) {
            Some(parsed) if parsed == origin.get_ref().trim().trim_end_matches('/') => {
                settings.page.posos_origin = Some(parsed);
            }
            _ => report.push(
                Some(origin.span()),
                "launch.posos_origin",
                "an origin is a scheme, a host and an optional port, nothing after: write `https://app.posos.co`".to_string(),
            ),
        }
    }
    Some(LaunchConfig {
        settings,
        mapping_file,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use rstest::rstest;

    /// `[http]` on `bind`, `[launch]` with `launch` lines, `[posos]` simulator.
    fn launch_text(bind: &str, launch: &str) -> String {
        format!(
            "[store]\npath = \"ob.db\"\n[http]\nbind = \"{bind}\"\n[launch]\nmapping = \"{ROOT}/mappings/scan-token.toml\"\n{launch}\n[posos]\nmode = \"simulator\"\n[posos.simulator]\nkey_file = \"{ROOT}/samples/simulator/service-account.json\"\npublic_key_file = \"{ROOT}/samples/simulator/public-key.pem\"\n"
        )
    }

    #[rstest]
    #[case::err_lan_unsigned(
        "127.0.0.1:8717",
        "allow = [\"127.0.0.0/8\", \"10.1.0.0/16\"]",
        "/etc/ordobridge/ob.toml:7:9: `launch.allow`: `10.1.0.0/16` reaches beyond this machine while unsigned links are accepted: anybody there could open any patient's Posos session by typing an IPP. Set `require_signature = true` with a `signing_secret` (the EHR signs its links), or, for an EHR that cannot sign, `allow_unsigned_links = true`"
    )]
    #[case::err_short_secret(
        "127.0.0.1:8717",
        "signing_secret = \"0123456789\"",
        "/etc/ordobridge/ob.toml:7:18: `launch.signing_secret`: the signing secret is too short (10 characters; at least 32): generate one with `openssl rand -base64 32`"
    )]
    #[case::err_simulator_beyond_loopback(
        "0.0.0.0:8717",
        "",
        "/etc/ordobridge/ob.toml:9:8: `posos.mode`: the built-in Posos simulator would be served on 0.0.0.0:8717, beyond this machine: it hands out tokens and accepts imports without real credentials. Bind `[http] bind` to `127.0.0.1`, or use `mode = \"remote\"` in production"
    )]
    #[case::err_posos_origin_with_path(
        "127.0.0.1:8717",
        "posos_origin = \"https://app.posos.co/scan\"",
        "/etc/ordobridge/ob.toml:7:16: `launch.posos_origin`: an origin is a scheme, a host and an optional port, nothing after: write `https://app.posos.co`"
    )]
    fn err_launch_fail_closed(#[case] bind: &str, #[case] launch: &str, #[case] expected: &str) {
        assert_eq!(errors(&launch_text(bind, launch)), vec![expected]);
    }

    #[rstest]
    #[case::ok_loopback_unsigned("")]
    #[case::ok_lan_signed(&format!("allow = [\"10.1.0.0/16\"]\nrequire_signature = true\nsigning_secret = \"{TOKEN}\""))]
    #[case::ok_lan_unsigned_by_choice("allow = [\"10.1.0.0/16\"]\nallow_unsigned_links = true")]
    fn ok_launch_access(#[case] launch: &str) {
        assert_eq!(
            errors(&launch_text("127.0.0.1:8717", launch)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn ok_launch_guide_mapping() {
        let launch = format!("guide_mapping = \"{ROOT}/mappings/guide.toml\"");
        let config = load(&launch_text("127.0.0.1:8717", &launch), &[]).expect("config");
        let settings = config.launch.expect("launch").settings;
        assert_eq!(settings.guide_mapping.message_type(), "guide");
        assert_eq!(settings.mapping.message_type(), "scan-token");
    }

    /// A launch mapping must build the request it is for: JSON, launch inputs, no `when`,
    /// every field Posos requires (checked at start, not at the first click).
    #[rstest]
    #[case::err_hl7_mapping_for_scan_token(
        "mappings/omp-o09.toml",
        "",
        &[
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/omp-o09.toml: the scan-token request is JSON: set `[message] format = \"json\"`",
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/omp-o09.toml: a launch gives `user`, `patient` and `launch`: set `[message] input = \"launch\"`",
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/omp-o09.toml: a launch always sends its scan-token request: remove `[message] when`",
        ]
    )]
    #[case::err_guide_mapping_for_scan_token(
        "mappings/guide.toml",
        "",
        &[
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/guide.toml: `facilitySlug` is never written, and the scan-token request needs it: add it to the fields of the body (`[[segment]]` with `id = \"/\"`)",
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/guide.toml: `patientId` is never written, and the scan-token request needs it: add it to the fields of the body (`[[segment]]` with `id = \"/\"`)",
        ]
    )]
    #[case::err_scan_token_mapping_for_guide(
        "mappings/scan-token.toml",
        "guide_mapping = \"ROOT/mappings/scan-token.toml\"",
        &[
            "/etc/ordobridge/ob.toml:7:17: `launch.guide_mapping`: ROOT/mappings/scan-token.toml: `guide` is never written, and the guide request needs it: add it to the fields of the body (`[[segment]]` with `id = \"/\"`)",
        ]
    )]
    fn err_launch_mapping_unfit(
        #[case] mapping: &str,
        #[case] launch: &str,
        #[case] expected: &[&str],
    ) {
        let text = launch_text("127.0.0.1:8717", &launch.replace("ROOT", ROOT))
            .replace("mappings/scan-token.toml\"\n", &format!("{mapping}\"\n"));
        let expected: Vec<String> = expected.iter().map(|e| e.replace("ROOT", ROOT)).collect();
        assert_eq!(errors(&text), expected);
    }
}
