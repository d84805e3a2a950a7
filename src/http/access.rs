//! Who may launch: the source-network allow-list and signed launch links.
//!
//! Both checks apply together: the peer address must be in the allow-list (default: loopback
//! only), and when a link carries a `sig`, or when signatures are required, the signature must
//! be good and its `exp` not past. A signature never widens the allow-list.
//!
//! A signature is HMAC-SHA256, keyed with the shared secret, over `PATH?CANONICAL` where
//! `CANONICAL` is every query parameter except `sig` (so `exp` is covered), sorted by name then
//! value and percent-encoded (RFC 3986 unreserved characters kept, upper-case hex). It travels
//! as `sig`, in URL-safe Base64 without padding. Integrators build links with
//! [`sign_launch_url`]; the comparison is constant-time.
//!
//! The peer address is the TCP peer: behind a reverse proxy, allow the proxy's address.
//! `X-Forwarded-For` is deliberately not trusted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::query::{canonical_query, encode_component, escape_text};

type HmacSha256 = Hmac<Sha256>;

/// Why a launch was refused, or why an allow-list entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The TCP peer is outside every allowed network.
    #[error("address {peer} is not in the launch allow-list")]
    NetworkNotAllowed { peer: IpAddr },
    /// The router was served without `into_make_service_with_connect_info`.
    #[error("the peer address is unknown (serve the router with connect info)")]
    NoPeerAddress,
    /// The link has no `sig` and `require_signature` is on.
    #[error("the link is not signed and signatures are required")]
    SignatureRequired,
    /// A signature is present or required but no secret is configured (fails closed).
    #[error("the link cannot be checked: no signing secret is configured")]
    NoSecret,
    /// A signed link without an `exp` parameter.
    #[error("the signed link has no `exp` parameter")]
    MissingExpiry,
    /// `exp` is not a whole number of seconds since 1970.
    #[error("`exp` is not a unix time: `{value}`")]
    BadExpiry { value: String },
    /// `exp` is in the past.
    #[error("the link expired at unix time {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    /// `exp` is further in the future than `[launch] max_link_age` allows: a link meant to
    /// live for days is a standing key to the patient's session.
    #[error(
        "the link's expiry {exp} is {ahead} s ahead, more than the {max} s allowed (`max_link_age`)"
    )]
    ExpiryTooFar { exp: i64, ahead: i64, max: i64 },
    /// The signed link was already opened once.
    #[error("the link was already used: signed links open one launch; ask the EHR for a new one")]
    AlreadyUsed,
    /// `sig` does not decode, appears twice, or does not match the link.
    #[error("the signature does not match the link")]
    BadSignature,
    /// An allow-list entry that is not `ADDRESS` or `ADDRESS/PREFIX`.
    #[error("invalid network `{input}`: {reason}")]
    BadNetwork { input: String, reason: String },
}

/// One network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is a `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network `network/prefix`; refuses a prefix too long or host bits set.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Cidr, AccessError> {
        let max = if network.is_ipv4() { 32 } else { 128 };
        let input = format!("{network}/{prefix}");
        if prefix > max {
            return Err(AccessError::BadNetwork {
                input,
                reason: format!("the prefix length must be at most {max}"),
            });
        }
        let masked = mask(network, prefix);
        if masked != network {
            return Err(AccessError::BadNetwork {
                input,
                reason: format!("host bits are set: did you mean `{masked}/{prefix}`?"),
            });
        }
        Ok(Cidr { network, prefix })
    }

    /// Whether every address of this network is a loopback address (`127.0.0.0/8` or
    /// narrower, `::1/128`): such a network reaches only this machine.
    pub fn is_loopback(&self) -> bool {
        match self.network {
            IpAddr::V4(v4) => v4.is_loopback() && self.prefix >= 8,
            IpAddr::V6(v6) => v6.is_loopback() && self.prefix == 128,
        }
    }

    /// Whether `addr` is in this network; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }
}

/// `addr` with every bit past `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & kept))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & kept))
        }
    }
}

impl FromStr for Cidr {
    type Err = AccessError;

    fn from_str(input: &str) -> Result<Cidr, AccessError> {
        let bad = |reason: &str| AccessError::BadNetwork {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        let (address, prefix) = match trimmed.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (trimmed, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| bad("expected an IPv4 or IPv6 address before `/`"))?;
        let prefix = match prefix {
            None => {
                if network.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| bad("expected a prefix length (a number) after `/`"))?,
        };
        Cidr::new(network, prefix).map_err(|e| match e {
            AccessError::BadNetwork { reason, .. } => bad(&reason),
            other => other,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The networks whose browsers may open launch links; the default is loopback only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Vec<Cidr>);

impl AllowList {
    /// An allow-list of exactly these networks (empty: nobody may launch).
    pub fn new(networks: Vec<Cidr>) -> AllowList {
        AllowList(networks)
    }

    /// `127.0.0.0/8` and `::1`: only a browser on the ordobridge host itself.
    pub fn loopback() -> AllowList {
        AllowList(vec![
            Cidr {
                network: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
            },
            Cidr {
                network: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ])
    }

    /// Parses entries such as `["10.20.0.0/16", "::1"]`, naming the first bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, AccessError> {
        entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    /// Whether `addr` is in one of the networks.
    pub fn allows(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(addr))
    }

    /// The networks, for logs and diagnostics.
    pub fn networks(&self) -> &[Cidr] {
        &self.0
    }
}

impl Default for AllowList {
    fn default() -> AllowList {
        AllowList::loopback()
    }
}

/// The shared HMAC secret for launch links; its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// Wraps the secret bytes (at least 32 random bytes are advisable).
    pub fn new(secret: impl Into<Vec<u8>>) -> SigningSecret {
        SigningSecret(secret.into())
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

fn mac_over(secret: &[u8], path: &str, canonical: &str) -> HmacSha256 {
    // The HMAC key block, prepared as RFC 2104 says (a key longer than the block is hashed
    // first, then zero-padded), so that building the MAC is infallible.
    let mut block = [0u8; 64];
    if secret.len() > block.len() {
        let digest = Sha256::digest(secret);
        for (slot, byte) in block.iter_mut().zip(digest.iter()) {
            *slot = *byte;
        }
    } else {
        for (slot, byte) in block.iter_mut().zip(secret) {
            *slot = *byte;
        }
    }
    let mut mac = <HmacSha256 as KeyInit>::new(&block.into());
    mac.update(path.as_bytes());
    mac.update(b"?");
    mac.update(canonical.as_bytes());
    mac
}

/// Builds a signed launch link `PATH?CANONICAL&sig=…` valid until unix time `exp`, so EHR
/// integrators (and tests) can produce links this daemon accepts. `path` is signed as it appears
/// in the URL (percent-encoded, e.g. `/launch/guide/anti%20coag`); `params` are raw values (this
/// function encodes them); `sig` and `exp` in `params` are ignored. The daemon opens a link once
/// and refuses an `exp` further ahead than `[launch] max_link_age` (default 5 minutes).
pub fn sign_launch_url(secret: &[u8], path: &str, params: &[(&str, &str)], exp: i64) -> String {
    let exp = exp.to_string();
    let pairs = params
        .iter()
        .copied()
        .filter(|(name, _)| *name != "exp" && *name != "sig")
        .chain(std::iter::once(("exp", exp.as_str())));
    let canonical = canonical_query(pairs);
    let sig = URL_SAFE_NO_PAD.encode(mac_over(secret, path, &canonical).finalize().into_bytes());
    format!("{path}?{canonical}&sig={}", encode_component(&sig))
}

/// Checks the signature and expiry of a launch link against `now` (unix seconds).
pub fn verify_launch_signature(
    secret: &[u8],
    path: &str,
    pairs: &[(String, String)],
    now: i64,
) -> Result<(), AccessError> {
    let mut sigs = pairs.iter().filter(|(n, _)| n == "sig").map(|(_, v)| v);
    let sig = match (sigs.next(), sigs.next()) {
        (Some(sig), None) => sig,
        (None, _) => return Err(AccessError::SignatureRequired),
        (Some(_), Some(_)) => return Err(AccessError::BadSignature),
    };
    let mut exps = pairs.iter().filter(|(n, _)| n == "exp").map(|(_, v)| v);
    let exp = match (exps.next(), exps.next()) {
        (Some(exp), None) => exp,
        (None, _) => return Err(AccessError::MissingExpiry),
        (Some(_), Some(_)) => {
            return Err(AccessError::BadExpiry {
                value: "given twice".to_string(),
            });
        }
    };
    let exp_value: i64 = exp.parse().map_err(|_| AccessError::BadExpiry {
        value: escape_text(exp),
    })?;
    let expected = URL_SAFE_NO_PAD
        .decode(sig.trim().trim_end_matches('='))
        .map_err(|_| AccessError::BadSignature)?;
    let canonical = canonical_query(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    // Constant-time comparison (`verify_slice` uses `subtle`), checked before expiry so that
    // an attacker learns nothing about a forged link from the answer.
    mac_over(secret, path, &canonical)
        .verify_slice(&expected)
        .map_err(|_| AccessError::BadSignature)?;
    if exp_value < now {
        return Err(AccessError::Expired {
            exp: exp_value,
            now,
        });
    }
    Ok(())
}

/// The signatures of the signed links already opened, each kept until its `exp`: a link opens
/// one launch. Memory is bounded: every entry expires within `max_link_age`, expired entries
/// are dropped as new ones come, and past [`UsedLinks::CAPACITY`] live entries new links are
/// refused rather than remembered (an EHR opening more than that in five minutes is an attack).
#[derive(Debug, Default)]
pub struct UsedLinks {
    /// SHA-256 of the `sig` value → the link's `exp`.
    seen: std::sync::Mutex<std::collections::HashMap<[u8; 32], i64>>,
}

impl UsedLinks {
    /// The most links remembered at once.
    pub const CAPACITY: usize = 100_000;

    /// Records `sig` as used until `exp`; `false` if it was already used (or memory is full).
    pub fn first_use(&self, sig: &str, exp: i64, now: i64) -> bool {
        let key: [u8; 32] = Sha256::digest(sig.as_bytes()).into();
        // The lock is held for a hash lookup and, now and then, a sweep of expired entries;
        // launches are human clicks, so contention is negligible.
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.len() >= Self::CAPACITY / 2 {
            seen.retain(|_, until| *until >= now);
        }
        if seen.len() >= Self::CAPACITY || seen.contains_key(&key) {
            return false;
        }
        seen.insert(key, exp);
        true
    }
}

/// What decides whether a launch request is admitted, besides the request itself.
pub(crate) struct AccessPolicy<'a> {
    pub allow_list: &'a AllowList,
    pub secret: Option<&'a SigningSecret>,
    pub require_signature: bool,
    /// The furthest `exp` of a signed link may be in the future, in seconds.
    pub max_link_age: i64,
    /// Signed links already opened; `None` lets a link be opened until it expires.
    pub used: Option<&'a UsedLinks>,
}

/// The whole access decision for one launch request, as a function of its inputs (and of the
/// links already used).
pub(crate) fn check_access(
    policy: &AccessPolicy<'_>,
    peer: Option<SocketAddr>,
    path: &str,
    pairs: &[(String, String)],
    now: i64,
) -> Result<(), AccessError> {
    let AccessPolicy {
        allow_list,
        secret,
        require_signature,
        max_link_age,
        used,
    } = *policy;
    let peer = peer.ok_or(AccessError::NoPeerAddress)?;
    if !allow_list.allows(peer.ip()) {
        return Err(AccessError::NetworkNotAllowed {
            peer: peer.ip().to_canonical(),
        });
    }
    let signed = pairs.iter().any(|(n, _)| n == "sig");
    if !signed && !require_signature {
        return Ok(());
    }
    if !signed {
        return Err(AccessError::SignatureRequired);
    }
    let secret = secret.ok_or(AccessError::NoSecret)?;
    verify_launch_signature(secret.bytes(), path, pairs, now)?;
    // Both are present and single: the signature check above made sure.
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let exp: i64 = value("exp").and_then(|e| e.parse().ok()).unwrap_or(0);
    if exp - now > max_link_age {
        return Err(AccessError::ExpiryTooFar {
            exp,
            ahead: exp - now,
            max: max_link_age,
        });
    }
    if let Some(used) = used
        && !used.first_use(value("sig").unwrap_or(""), exp, now)
    {
        return Err(AccessError::AlreadyUsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::query::parse_query;
    use rstest::rstest;

    #[rstest]
    #[case::ok_v4("10.0.0.0/8", "10.0.0.0/8")]
    #[case::ok_bare_v4("192.168.1.7", "192.168.1.7/32")]
    #[case::ok_v6("fd00::/8", "fd00::/8")]
    #[case::ok_bare_v6("::1", "::1/128")]
    #[case::ok_zero("0.0.0.0/0", "0.0.0.0/0")]
    #[case::ok_spaces(" 10.1.0.0/16 ", "10.1.0.0/16")]
    fn ok_cidr_parse(#[case] input: &str, #[case] shown: &str) {
        let cidr: Cidr = input.parse().unwrap();
        assert_eq!(cidr.to_string(), shown);
    }

    #[rstest]
    #[case::err_host_bits(
        "10.1.2.3/8",
        "invalid network `10.1.2.3/8`: host bits are set: did you mean `10.0.0.0/8`?"
    )]
    #[case::err_prefix_too_long(
        "10.0.0.0/33",
        "invalid network `10.0.0.0/33`: the prefix length must be at most 32"
    )]
    #[case::err_v6_prefix(
        "::/129",
        "invalid network `::/129`: the prefix length must be at most 128"
    )]
    #[case::err_not_an_address(
        "intranet/8",
        "invalid network `intranet/8`: expected an IPv4 or IPv6 address before `/`"
    )]
    #[case::err_prefix_not_number(
        "10.0.0.0/x",
        "invalid network `10.0.0.0/x`: expected a prefix length (a number) after `/`"
    )]
    #[case::err_empty("", "invalid network ``: expected an IPv4 or IPv6 address before `/`")]
    fn err_cidr_parse(#[case] input: &str, #[case] message: &str) {
        let err = input.parse::<Cidr>().unwrap_err();
        assert_eq!(err.to_string(), message);
    }

    #[rstest]
    #[case::ok_loopback_v4("127.0.0.1", true)]
    #[case::ok_loopback_v4_other("127.42.0.9", true)]
    #[case::ok_loopback_v6("::1", true)]
    #[case::ok_mapped_v4("::ffff:127.0.0.1", true)]
    #[case::err_lan("10.0.0.5", false)]
    #[case::err_public("203.0.113.9", false)]
    #[case::err_v6_other("::2", false)]
    #[case::err_mapped_lan("::ffff:10.0.0.5", false)]
    fn default_allow_list(#[case] addr: &str, #[case] allowed: bool) {
        let addr: IpAddr = addr.parse().unwrap();
        assert_eq!(AllowList::default().allows(addr), allowed);
    }

    #[rstest]
    #[case::ok_inside("10.20.0.0/16", "10.20.255.1", true)]
    #[case::ok_edge_low("10.20.0.0/16", "10.20.0.0", true)]
    #[case::err_outside("10.20.0.0/16", "10.21.0.1", false)]
    #[case::ok_slash_zero("0.0.0.0/0", "198.51.100.1", true)]
    #[case::err_family("0.0.0.0/0", "fe80::1", false)]
    #[case::ok_v6_net("fd00:1234::/32", "fd00:1234:5::1", true)]
    #[case::err_v6_net("fd00:1234::/32", "fd00:1235::1", false)]
    #[case::ok_host("192.0.2.10", "192.0.2.10", true)]
    #[case::err_host("192.0.2.10", "192.0.2.11", false)]
    fn cidr_contains(#[case] network: &str, #[case] addr: &str, #[case] inside: bool) {
        let cidr: Cidr = network.parse().unwrap();
        assert_eq!(cidr.contains(addr.parse().unwrap()), inside);
    }

    #[test]
    fn err_allow_list_names_the_bad_entry() {
        let err = AllowList::parse(&["10.0.0.0/8", "10.0.0.0/80"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid network `10.0.0.0/80`: the prefix length must be at most 32"
        );
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_700_000_000;

    fn signed_pairs(path: &str, params: &[(&str, &str)], exp: i64) -> Vec<(String, String)> {
        let url = sign_launch_url(SECRET, path, params, exp);
        let (_, query) = url.split_once('?').unwrap();
        parse_query(query)
    }

    #[test]
    fn ok_signed_url_shape() {
        let url = sign_launch_url(
            SECRET,
            "/launch/scan",
            &[("rpps", "10000000001"), ("ipp", "a b")],
            NOW,
        );
        assert!(
            url.starts_with("/launch/scan?exp=1700000000&ipp=a%20b&rpps=10000000001&sig="),
            "{url}"
        );
    }

    #[rstest]
    #[case::ok_valid(&[("ipp", "1"), ("rpps", "2")], None, Ok(()))]
    #[case::ok_param_order_irrelevant(&[("rpps", "2"), ("ipp", "1")], None, Ok(()))]
    #[case::err_tampered(&[("ipp", "1"), ("rpps", "2")], Some(("ipp", "666")), Err(AccessError::BadSignature))]
    #[case::err_added_param(&[("ipp", "1")], Some(("nda", "9")), Err(AccessError::BadSignature))]
    fn signature_tampering(
        #[case] params: &[(&str, &str)],
        #[case] change: Option<(&str, &str)>,
        #[case] expected: Result<(), AccessError>,
    ) {
        let mut pairs = signed_pairs("/launch/scan", params, NOW + 60);
        if let Some((name, value)) = change {
            match pairs.iter_mut().find(|(n, _)| n == name) {
                Some(pair) => pair.1 = value.to_string(),
                None => pairs.push((name.to_string(), value.to_string())),
            }
        }
        assert_eq!(
            verify_launch_signature(SECRET, "/launch/scan", &pairs, NOW),
            expected
        );
    }

    #[test]
    fn err_signature_bound_to_path() {
        let pairs = signed_pairs("/launch/scan", &[("rpps", "2")], NOW + 60);
        assert_eq!(
            verify_launch_signature(SECRET, "/launch/guide/x", &pairs, NOW),
            Err(AccessError::BadSignature)
        );
    }

    #[test]
    fn err_wrong_secret() {
        let pairs = signed_pairs("/launch/scan", &[("rpps", "2")], NOW + 60);
        assert_eq!(
            verify_launch_signature(b"other", "/launch/scan", &pairs, NOW),
            Err(AccessError::BadSignature)
        );
    }

    #[test]
    fn err_expired_pinned() {
        let pairs = signed_pairs("/launch/scan", &[("rpps", "2")], NOW - 1);
        let err = verify_launch_signature(SECRET, "/launch/scan", &pairs, NOW).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the link expired at unix time 1699999999 (now 1700000000)"
        );
    }

    #[test]
    fn ok_expiry_is_inclusive() {
        let pairs = signed_pairs("/launch/scan", &[("rpps", "2")], NOW);
        assert_eq!(
            verify_launch_signature(SECRET, "/launch/scan", &pairs, NOW),
            Ok(())
        );
    }

    #[rstest]
    #[case::err_no_exp("rpps=2&sig=abc", "the signed link has no `exp` parameter")]
    #[case::err_exp_text("rpps=2&exp=tomorrow&sig=abc", "`exp` is not a unix time: `tomorrow`")]
    #[case::err_exp_control("exp=1%0B&sig=abc", "`exp` is not a unix time: `1\\x0B`")]
    #[case::err_sig_not_base64("exp=1&sig=%%%", "the signature does not match the link")]
    #[case::err_two_sigs("exp=1&sig=a&sig=b", "the signature does not match the link")]
    #[case::err_no_sig("exp=1", "the link is not signed and signatures are required")]
    fn err_malformed_signature(#[case] query: &str, #[case] message: &str) {
        let err =
            verify_launch_signature(SECRET, "/launch/scan", &parse_query(query), NOW).unwrap_err();
        assert_eq!(err.to_string(), message);
    }

    fn peer(addr: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(addr.parse().unwrap(), 50000))
    }

    #[rstest]
    #[case::ok_loopback_unsigned(peer("127.0.0.1"), false, false, Ok(()))]
    #[case::err_lan(peer("10.0.0.5"), false, false, Err(AccessError::NetworkNotAllowed { peer: "10.0.0.5".parse().unwrap() }))]
    #[case::err_no_peer(None, false, false, Err(AccessError::NoPeerAddress))]
    #[case::err_required(peer("127.0.0.1"), true, false, Err(AccessError::SignatureRequired))]
    #[case::ok_required_and_signed(peer("127.0.0.1"), true, true, Ok(()))]
    #[case::ok_signed_optional(peer("127.0.0.1"), false, true, Ok(()))]
    #[case::err_signed_lan(peer("10.0.0.5"), true, true, Err(AccessError::NetworkNotAllowed { peer: "10.0.0.5".parse().unwrap() }))]
    fn access_decision(
        #[case] peer: Option<SocketAddr>,
        #[case] require: bool,
        #[case] signed: bool,
        #[case] expected: Result<(), AccessError>,
    ) {
        let secret = SigningSecret::new(SECRET);
        let pairs = if signed {
            signed_pairs("/launch/scan", &[("rpps", "2")], NOW + 60)
        } else {
            parse_query("rpps=2")
        };
        let got = check_access(
            &AccessPolicy {
                allow_list: &AllowList::default(),
                secret: Some(&secret),
                require_signature: require,
                max_link_age: 300,
                used: None,
            },
            peer,
            "/launch/scan",
            &pairs,
            NOW,
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn err_signed_link_opens_once() {
        let secret = SigningSecret::new(SECRET);
        let used = UsedLinks::default();
        let policy = AccessPolicy {
            allow_list: &AllowList::default(),
            secret: Some(&secret),
            require_signature: true,
            max_link_age: 300,
            used: Some(&used),
        };
        let pairs = signed_pairs("/launch/scan", &[("rpps", "2")], NOW + 60);
        let check = || check_access(&policy, peer("127.0.0.1"), "/launch/scan", &pairs, NOW);
        assert_eq!(check(), Ok(()));
        let again = check().unwrap_err();
        assert_eq!(again, AccessError::AlreadyUsed);
        assert_eq!(
            again.to_string(),
            "the link was already used: signed links open one launch; ask the EHR for a new one"
        );
        let other = signed_pairs("/launch/scan", &[("rpps", "3")], NOW + 60);
        assert_eq!(
            check_access(&policy, peer("127.0.0.1"), "/launch/scan", &other, NOW),
            Ok(()),
            "another link is not affected"
        );
    }

    #[rstest]
    #[case::ok_at_the_limit(300, Ok(()))]
    #[case::err_beyond(301, Err(AccessError::ExpiryTooFar { exp: NOW + 301, ahead: 301, max: 300 }))]
    fn link_age(#[case] ahead: i64, #[case] expected: Result<(), AccessError>) {
        let secret = SigningSecret::new(SECRET);
        let pairs = signed_pairs("/launch/scan", &[("rpps", "2")], NOW + ahead);
        let policy = AccessPolicy {
            allow_list: &AllowList::default(),
            secret: Some(&secret),
            require_signature: true,
            max_link_age: 300,
            used: None,
        };
        let got = check_access(&policy, peer("127.0.0.1"), "/launch/scan", &pairs, NOW);
        assert_eq!(got, expected);
    }

    #[test]
    fn err_expiry_too_far_text() {
        let err = AccessError::ExpiryTooFar {
            exp: NOW + 86_400,
            ahead: 86_400,
            max: 300,
        };
        assert_eq!(
            err.to_string(),
            format!(
                "the link's expiry {} is 86400 s ahead, more than the 300 s allowed (`max_link_age`)",
                NOW + 86_400
            )
        );
    }

    #[test]
    fn ok_used_links_forget_expired_entries() {
        let used = UsedLinks::default();
        for i in 0..(UsedLinks::CAPACITY / 2) {
            assert!(used.first_use(&format!("sig{i}"), NOW - 1, NOW - 2));
        }
        // Past half the capacity, expired entries are swept before a new one is kept.
        assert!(used.first_use("fresh", NOW + 60, NOW));
        assert_eq!(used.seen.lock().expect("lock").len(), 1);
    }

    #[rstest]
    #[case::loopback_v4("127.0.0.0/8", true)]
    #[case::loopback_host("127.0.0.1", true)]
    #[case::loopback_v6("::1/128", true)]
    #[case::wider_than_loopback("0.0.0.0/0", false)]
    #[case::lan("10.0.0.0/8", false)]
    #[case::v6_any("::/0", false)]
    fn cidr_is_loopback(#[case] network: &str, #[case] expected: bool) {
        let cidr: Cidr = network.parse().unwrap();
        assert_eq!(cidr.is_loopback(), expected);
    }

    #[test]
    fn err_signed_without_secret_fails_closed() {
        let pairs = signed_pairs("/launch/scan", &[("rpps", "2")], NOW + 60);
        let got = check_access(
            &AccessPolicy {
                allow_list: &AllowList::default(),
                secret: None,
                require_signature: false,
                max_link_age: 300,
                used: None,
            },
            peer("127.0.0.1"),
            "/launch/scan",
            &pairs,
            NOW,
        );
        assert_eq!(got, Err(AccessError::NoSecret));
    }

    #[test]
    fn ok_secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", SigningSecret::new("hunter2")),
            "SigningSecret(..)"
        );
    }
}
