//! Value rules. Each mirrors a regular expression of nix/inventory.nix (a full match, byte by
//! byte); the expression is quoted above each.

use super::*;

/// `0|[1-9][0-9]*`
pub(super) fn is_decimal(text: &str) -> bool {
    match text.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// `[0-9a-f]{16}`, not all 0 and not all f: the high 64 bits of the lease's reserved ids.
pub(super) fn is_id_prefix(text: &str) -> bool {
    text.len() == 16
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && text != "0000000000000000"
        && text != "ffffffffffffffff"
}

/// Decimal, at most u128::MAX.
pub(super) fn is_u128(text: &str) -> bool {
    // `u128::from_str` alone would also take "+1" and "007".
    is_decimal(text) && text.parse::<u128>().is_ok()
}

/// `[1-9][0-9]{0,5}(KiB|MiB|GiB|TiB)`
pub(super) fn is_size(text: &str) -> bool {
    let Some(digits) = ["KiB", "MiB", "GiB", "TiB"]
        .iter()
        .find_map(|unit| text.strip_suffix(unit))
    else {
        return false;
    };
    (1..=6).contains(&digits.len()) && digits != "0" && is_decimal(digits)
}

/// `(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}`, each octet at most 255.
pub(super) fn ipv4_octets(text: &str) -> Option<[u8; 4]> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.len() > 3 || !is_decimal(part) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(octets)
}

/// A port: decimal, at most 5 digits, 1 to 65535.
pub(super) fn port_of(text: &str) -> Option<u16> {
    if text.len() > 5 || !is_decimal(text) {
        return None;
    }
    text.parse::<u16>().ok().filter(|port| *port >= 1)
}

pub(super) struct Socket<'a> {
    pub(super) ip: &'a str,
    pub(super) octets: [u8; 4],
    pub(super) port: u16,
}

/// `([0-9.]+):([0-9]+)`, then the IP and the port as above.
pub(super) fn parse_socket(text: &str) -> Option<Socket<'_>> {
    let (ip, port) = text.split_once(':')?;
    if ip.is_empty() || !ip.bytes().all(|b| b == b'.' || b.is_ascii_digit()) {
        return None;
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Socket {
        ip,
        octets: ipv4_octets(ip)?,
        port: port_of(port)?,
    })
}

/// `([0-9.]+)/(0|[1-9][0-9]?)`, the prefix at most 32, no address bit set after it.
pub(super) fn is_network(text: &str) -> bool {
    let Some((ip, prefix)) = text.split_once('/') else {
        return false;
    };
    if ip.is_empty() || !ip.bytes().all(|b| b == b'.' || b.is_ascii_digit()) {
        return false;
    }
    if prefix.len() > 2 || !is_decimal(prefix) {
        return false;
    }
    let Some(octets) = ipv4_octets(ip) else {
        return false;
    };
    let prefix: u32 = prefix.parse().expect("one or two digits");
    if prefix > 32 {
        return false;
    }
    let host_bits: u64 = (1u64 << (32 - prefix)) - 1;
    u64::from(u32::from_be_bytes(octets)) & host_bits == 0
}

pub(super) fn check_networks(value: &Value) -> Result<(), Failure> {
    let Some(networks) = value.as_array().filter(|list| list.len() <= NETWORKS_MAX) else {
        return Err(Failure::value(REASON_NETWORKS));
    };
    for (index, network) in networks.iter().enumerate() {
        if !network.as_str().is_some_and(is_network) {
            return Err(Failure {
                element: format!("[{index}]"),
                reason: Reason::Value(REASON_NETWORK),
            });
        }
    }
    Ok(())
}

/// `(/[A-Za-z0-9._+-]+)+`, at most 4096 bytes, no component `.` or `..`.
pub(super) fn is_path(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('/') else {
        return false;
    };
    text.len() <= PATH_LENGTH_MAX_BYTES
        && rest.split('/').all(|component| {
            !component.is_empty()
                && component != "."
                && component != ".."
                && component
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        })
}

pub(super) fn path_check(value: &Value) -> Result<(), Failure> {
    if value.as_str().is_some_and(is_path) {
        Ok(())
    } else {
        Err(Failure::value(REASON_PATH))
    }
}

/// Secrets are world-readable in the Nix store: only paths outside it may name them.
pub(super) fn secret_path_check(value: &Value) -> Result<(), Failure> {
    path_check(value)?;
    let path = value.as_str().expect("a path is a string");
    if path.starts_with("/nix/store/") {
        return Err(Failure::value(REASON_SECRET_IN_STORE));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UrlScheme {
    Http,
    Https,
}

impl UrlScheme {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        }
    }
}

pub(super) struct Url<'a> {
    pub(super) scheme: UrlScheme,
    pub(super) host: &'a str,
    pub(super) port: u16,
}

/// `(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+]):([0-9]+)/?`, the port as for a socket.
pub(super) fn parse_url(text: &str) -> Option<Url<'_>> {
    let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (UrlScheme::Http, rest)
    } else {
        (UrlScheme::Https, text.strip_prefix("https://")?)
    };
    let host_length = if rest.starts_with('[') {
        // The bracketed set has no `]`, so the first `]` closes the host.
        let close = rest.find(']')?;
        let inside = &rest[1..close];
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        close + 1
    } else {
        // The host's set has no `:`, so the first `:` ends the host.
        let colon = rest.find(':')?;
        let host = &rest[..colon];
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return None;
        }
        colon
    };
    let (host, after) = rest.split_at(host_length);
    let port = after.strip_prefix(':')?;
    let port = port.strip_suffix('/').unwrap_or(port);
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Url {
        scheme,
        host,
        port: port_of(port)?,
    })
}

pub(super) fn scope_of(value: &Value) -> Option<Scope> {
    match value.as_str()? {
        "read" => Some(Scope::Read),
        "control" => Some(Scope::Control),
        "backup" => Some(Scope::Backup),
        _ => None,
    }
}

pub(super) fn token_failure(index: usize, token: &Value) -> Option<Failure> {
    let failure = |element: &str, reason: Reason| {
        Some(Failure {
            element: format!("[{index}]{element}"),
            reason,
        })
    };
    let Some(token) = token.as_object() else {
        return failure("", Reason::Value(REASON_TOKEN_SHAPE));
    };
    if let Some(key) = sorted_keys(token)
        .into_iter()
        .find(|key| !["name", "scopes", "sha256"].contains(key))
    {
        return failure(&format!(".{key}"), Reason::UnknownTokenKey);
    }
    let name_valid = token
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|name| !name.is_empty() && name.len() <= TOKEN_NAME_LENGTH_MAX_BYTES);
    if !name_valid {
        return failure(".name", Reason::Value(REASON_TOKEN_NAME));
    }
    let scopes: Option<Vec<Scope>> = token
        .get("scopes")
        .and_then(Value::as_array)
        .filter(|scopes| !scopes.is_empty())
        .and_then(|scopes| scopes.iter().map(scope_of).collect());
    let scopes_valid = scopes.is_some_and(|scopes| {
        scopes
            .iter()
            .enumerate()
            .all(|(index, scope)| !scopes[..index].contains(scope))
    });
    if !scopes_valid {
        return failure(".scopes", Reason::Value(REASON_TOKEN_SCOPES));
    }
    let sha256_valid = token
        .get("sha256")
        .and_then(Value::as_str)
        .is_some_and(|hash| {
            hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
    if !sha256_valid {
        return failure(".sha256", Reason::Value(REASON_TOKEN_SHA256));
    }
    None
}

pub(super) fn check_tokens(value: &Value) -> Result<(), Failure> {
    let Some(tokens) = value.as_array().filter(|list| list.len() <= TOKENS_MAX) else {
        return Err(Failure::value(REASON_TOKENS));
    };
    for (index, token) in tokens.iter().enumerate() {
        if let Some(failure) = token_failure(index, token) {
            return Err(failure);
        }
    }
    let names: Vec<&str> = tokens
        .iter()
        .map(|token| token["name"].as_str().expect("validated"))
        .collect();
    for (index, name) in names.iter().enumerate() {
        if names[..index].contains(name) {
            return Err(Failure {
                element: format!("[{index}].name"),
                reason: Reason::TokenNameTwice {
                    name: name.to_string(),
                },
            });
        }
    }
    Ok(())
}

/// `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`
pub(super) fn is_host_name(name: &str) -> bool {
    match name.as_bytes() {
        [first, rest @ ..] => {
            first.is_ascii_alphanumeric()
                && name.len() <= HOST_NAME_LENGTH_MAX_BYTES
                && !name.bytes().all(|b| b.is_ascii_digit())
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        [] => false,
    }
}

/// Loopback, RFC 1918, shared address space (100.64.0.0/10) and link-local; all else is public.
pub(super) fn is_private_ipv4(octets: [u8; 4]) -> bool {
    let [a, second, _, _] = octets;
    a == 127
        || a == 10
        || (a == 172 && (16..=31).contains(&second))
        || (a == 192 && second == 168)
        || (a == 100 && (64..=127).contains(&second))
        || (a == 169 && second == 254)
}
