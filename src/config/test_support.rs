//! What the configuration's tests share: loading text with given variables, the errors as
//! printed, a strong token, the minimal configuration, an MLLP channel's settings, a file with
//! given permissions.

use std::path::{Path, PathBuf};

use super::{Config, ConfigErrors, InboundKind, MllpListenerConfig};

pub(super) fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_str_with_env(text, Path::new("/etc/ordobridge/ob.toml"), &|name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

pub(super) fn errors(text: &str) -> Vec<String> {
    match load(text, &[]) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// A push token strong enough for `check`.
pub(super) const TOKEN: &str = "q0Zr7PpVh2m8yS5kT1wXc9LbN4dF6gJe";

pub(super) const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub(super) const MINIMAL: &str = r#"
[store]
path = "${DATA:-var}/ob.db"

[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:${PORT:-2575}"
"#;

/// The MLLP settings of the channel `name`; fails the test for a file channel.
pub(super) fn mllp_channel<'c>(config: &'c Config, name: &str) -> &'c MllpListenerConfig {
    let InboundKind::Mllp(mllp) = &config.inbound[name].kind else {
        panic!("expected an MLLP channel");
    };
    mllp
}

/// Writes `content` as `DIR/NAME` with the permission bits `mode` (`0o644`: readable by
/// others), and returns its path.
pub(super) fn file_with_mode(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}
