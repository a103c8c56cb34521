//! URLs: the parts of one that the sources use, percent-decoding, and the URL as it
//! may be shown in a message (password masked).

use super::shared::clip;
use crate::job_fields::hex_value;

/// The parts of `scheme://[userinfo@]host[:port][/path][#fragment]` used here.
pub(super) struct UrlParts<'a> {
    pub(super) scheme: &'a str,
    pub(super) userinfo: Option<&'a str>,
    /// Without the brackets of an IPv6 literal.
    pub(super) host: &'a str,
    pub(super) port: Option<u16>,
    /// From the first `/` on (empty when none), without a fragment.
    pub(super) path: &'a str,
}

pub(super) fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let path = path.split('#').next().unwrap_or_default();
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((info, host_port)) => (Some(info), host_port),
        None => (None, authority),
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(text) => Some(text.parse::<u16>().ok().filter(|&port| port != 0)?),
    };
    Some(UrlParts {
        scheme,
        userinfo,
        host,
        port,
        path,
    })
}

pub(super) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        clip(&format!("[{host}]:{port}"))
    } else {
        clip(&format!("{host}:{port}"))
    }
}

pub(super) fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex_value);
            let low = bytes.get(i + 2).copied().and_then(hex_value);
            match (high, low) {
                (Some(high), Some(low)) => out.push(high << 4 | low),
                _ => return Err("bad percent-encoding".to_string()),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The URL as it may be shown: password masked, one line, bounded.
pub(super) fn shown_url(url: &str) -> String {
    let masked = (|| {
        let scheme_end = url.find("://")? + 3;
        let rest = &url[scheme_end..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let at = authority.rfind('@')?;
        let user_end = authority[..at].find(':')?;
        Some(format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..user_end],
            &rest[at..]
        ))
    })();
    clip(masked.as_deref().unwrap_or(url))
}
