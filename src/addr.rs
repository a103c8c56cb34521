//! Server addresses (docs/protocol.md section 1): `host:port`, `host` (port 80),
//! `http://host:port` or `https://host:port`, comma-separated.
//!
//! This file uses `std` only, because `build.rs` includes it to validate the
//! compiled-in list (`BOOT_SERVER_ADDR`) at build time with the very same rules.

use std::fmt;

/// Longest accepted address list, in bytes, from any source.
pub const LIST_BYTES_MAX: usize = 4096;
/// Most entries in one address list.
pub const LIST_ENTRIES_MAX: usize = 32;
/// Most characters of a bad entry quoted in an error.
const ENTRY_SHOWN_CHARS_MAX: usize = 64;
/// Longest host name (RFC 1035 limit on a full domain name).
pub const HOST_BYTES_MAX: usize = 253;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// One control server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub scheme: Scheme,
    /// A host name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    /// The URL of `path` (which starts with `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Why an address list was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrError {
    TooLong { bytes: usize },
    TooManyEntries { entries: usize },
    Entry { entry: String, reason: &'static str },
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::TooLong { bytes } => write!(
                f,
                "server list is {bytes} bytes long, more than {LIST_BYTES_MAX}"
            ),
            AddrError::TooManyEntries { entries } => write!(
                f,
                "server list has {entries} entries, more than {LIST_ENTRIES_MAX}"
            ),
            AddrError::Entry { entry, reason } => {
                // At most 64 characters of the entry, escaped by `{:?}`.
                let shown: String = entry.chars().take(ENTRY_SHOWN_CHARS_MAX).collect();
                let more = if entry.chars().count() > ENTRY_SHOWN_CHARS_MAX {
                    "…"
                } else {
                    ""
                };
                write!(f, "bad server address {shown:?}{more}: {reason}")
            }
        }
    }
}

impl std::error::Error for AddrError {}

/// Parses a comma-separated list. Empty entries (`a,,b`, a trailing comma) and
/// whitespace around entries are ignored; an empty list is valid and empty.
pub fn parse_list(list: &str) -> Result<Vec<ServerAddr>, AddrError> {
    if list.len() > LIST_BYTES_MAX {
        return Err(AddrError::TooLong { bytes: list.len() });
    }
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() > LIST_ENTRIES_MAX {
        return Err(AddrError::TooManyEntries {
            entries: entries.len(),
        });
    }
    entries.into_iter().map(parse_one).collect()
}

/// Parses one entry of a list.
pub fn parse_one(entry: &str) -> Result<ServerAddr, AddrError> {
    let bad = |reason| AddrError::Entry {
        entry: entry.to_string(),
        reason,
    };
    let (scheme, rest) = if let Some(rest) = entry.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = entry.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if entry.contains("://") {
        return Err(bad("only http:// and https:// are supported"));
    } else {
        (Scheme::Http, entry)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(bad("an address has no path"));
    }
    if rest.contains('@') {
        return Err(bad("an address has no user name"));
    }
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("missing ']' after IPv6 address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address inside [ ]"));
        }
        match after {
            "" => (host, default_port),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, parse_port(port).ok_or_else(|| bad("bad port"))?),
                None => return Err(bad("unexpected text after ']'")),
            },
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(bad("an IPv6 address must be written in [ ]"))
            }
            Some((host, port)) => (host, parse_port(port).ok_or_else(|| bad("bad port"))?),
            None => (rest, default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.len() > HOST_BYTES_MAX {
        return Err(bad("host name too long"));
    }
    if !host.contains(':') && !host.bytes().all(is_host_byte) {
        return Err(bad("host may hold only letters, digits, '-', '_' and '.'"));
    }
    Ok(ServerAddr {
        scheme,
        host: host.to_string(),
        port,
    })
}

/// Formats a list back into the comma-separated form that `parse_list` reads.
pub fn format_list(list: &[ServerAddr]) -> String {
    let entries: Vec<String> = list.iter().map(ToString::to_string).collect();
    entries.join(",")
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = parse_list(input)
            .map(|list| format_list(&list))
            .map_err(|e| e.to_string());
        match expected {
            Ok(list) => assert_eq!(got, Ok(list.to_string()), "input {input:?}"),
            Err(part) => {
                let err = got.expect_err(input);
                assert!(err.contains(part), "input {input:?}: {err} lacks {part:?}");
            }
        }
    }

    #[test]
    fn accepts_the_protocol_forms() {
        check("booter.cargo.com:8080", Ok("http://booter.cargo.com:8080"));
        check("booter", Ok("http://booter:80"));
        check("http://10.0.0.1:9090", Ok("http://10.0.0.1:9090"));
        check("https://h", Ok("https://h:443"));
        check("https://h:8443/", Ok("https://h:8443"));
        check("[::1]:8080", Ok("http://[::1]:8080"));
        check(" a:1 , b:2,,c ", Ok("http://a:1,http://b:2,http://c:80"));
        check("", Ok(""));
        check(" , ", Ok(""));
    }

    #[test]
    fn refuses_bad_entries_naming_them() {
        check("a:1,b:99999", Err("\"b:99999\": bad port"));
        check("a:", Err("bad port"));
        check("a:0", Err("bad port"));
        check("ftp://a", Err("only http:// and https://"));
        check("http://a/x", Err("no path"));
        check("http://u@a", Err("no user name"));
        check("::1", Err("[ ]"));
        check("[::1", Err("missing ']'"));
        check("[zz]:1", Err("not an IPv6"));
        check(":80", Err("empty host"));
        check("a b:1", Err("host may hold"));
        check(&"a,".repeat(40), Err("more than 32"));
        check(&"a".repeat(5000), Err("more than 4096"));
    }
}
