//! Which way an HTTP request goes (docs/protocol.md section 1): directly, or through
//! the proxy of the environment. Pure: the environment is read once into a
//! [`ProxyEnv`], and [`ProxyEnv::route`] decides for one URL.
//!
//! - `http_proxy`/`HTTP_PROXY` serves `http://` URLs, `https_proxy`/`HTTPS_PROXY`
//!   serves `https://` URLs, `all_proxy`/`ALL_PROXY` serves both when the
//!   scheme's own is not set (the lowercase form first, as curl; an empty value is
//!   unset).
//! - `no_proxy`/`NO_PROXY`: comma-separated; `*` exempts every host, an entry exempts
//!   that host and every name under it (`example.com` and `.example.com` both exempt
//!   `a.example.com`); case-insensitive, an IPv6 address with or without brackets.
//!   Nothing else exempts a host: loopback is not bypassed implicitly (as curl).
//! - A plain `http://` URL through an `http://` proxy is [`Route::Forward`]: the request
//!   goes to the proxy in absolute form (`POST http://host:port/path HTTP/1.1`, RFC 9112
//!   section 3.2.2), with `Proxy-Authorization` when the proxy URL has a user. Every
//!   other proxied request is [`Route::Tunnel`] (ureq's `CONNECT`, or SOCKS).
//!
//! ureq 3 has no absolute form: it tunnels every request through an HTTP proxy, and
//! takes the first of `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY` for every scheme. The
//! HTTP edges (`http.rs`, `download/http.rs`) therefore give ureq no proxy from the
//! environment, only the one this module chose, and `forward.rs` sends the
//! absolute form.

use std::fmt;

const ENV_HTTP: [&str; 2] = ["http_proxy", "HTTP_PROXY"];
const ENV_HTTPS: [&str; 2] = ["https_proxy", "HTTPS_PROXY"];
const ENV_ALL: [&str; 2] = ["all_proxy", "ALL_PROXY"];
const ENV_NO_PROXY: [&str; 2] = ["no_proxy", "NO_PROXY"];
/// Port of an `http://` proxy URL without one (ureq's default too).
const HTTP_PROXY_PORT: u16 = 80;
/// Longest proxy variable taken; a longer one is ignored as garbage.
const VALUE_BYTES_MAX: usize = 4096;

/// The proxy variables, read once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    http: Option<String>,
    https: Option<String>,
    all: Option<String>,
    no_proxy: Vec<String>,
}

/// How one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Direct,
    /// Plain HTTP through an HTTP proxy, in absolute form.
    Forward(ForwardProxy),
    /// Through ureq's proxy support (`CONNECT` or SOCKS), with this proxy URL.
    Tunnel(String),
}

/// An HTTP proxy that takes absolute-form requests.
#[derive(Clone, PartialEq, Eq)]
pub struct ForwardProxy {
    /// `host:port` to connect to (an IPv6 host in brackets).
    pub authority: String,
    /// The value of `Proxy-Authorization`, when the proxy URL carries a user.
    pub authorization: Option<String>,
}

impl fmt::Debug for ForwardProxy {
    // The credentials are never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ForwardProxy({})", self.authority)
    }
}

impl ProxyEnv {
    /// Reads the variables of this process's environment.
    pub fn from_env() -> ProxyEnv {
        ProxyEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (for the tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: [&str; 2]| {
            names
                .iter()
                .filter_map(|name| lookup(name))
                .map(|value| value.trim().to_string())
                .find(|value| !value.is_empty() && value.len() <= VALUE_BYTES_MAX)
        };
        ProxyEnv {
            http: first(ENV_HTTP),
            https: first(ENV_HTTPS),
            all: first(ENV_ALL),
            no_proxy: first(ENV_NO_PROXY)
                .map(|list| {
                    list.split(',')
                        .map(|entry| entry.trim().trim_start_matches('.').to_ascii_lowercase())
                        .filter(|entry| !entry.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The proxy URLs that ureq may have to tunnel through (every one set).
    pub fn tunnel_urls(&self) -> Vec<String> {
        [&self.http, &self.https, &self.all]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The route of a request to `host` with `scheme` (`http` or `https`).
    pub fn route(&self, scheme: &str, host: &str) -> Route {
        let proxy = if scheme.eq_ignore_ascii_case("https") {
            self.https.as_ref().or(self.all.as_ref())
        } else {
            self.http.as_ref().or(self.all.as_ref())
        };
        let Some(proxy) = proxy else {
            return Route::Direct;
        };
        if self.exempts(host) {
            return Route::Direct;
        }
        if scheme.eq_ignore_ascii_case("http") {
            if let Some(forward) = forward_proxy(proxy) {
                return Route::Forward(forward);
            }
        }
        Route::Tunnel(proxy.clone())
    }

    /// Whether `NO_PROXY` exempts `host`.
    fn exempts(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.no_proxy.iter().any(|entry| {
            let entry = entry.trim_start_matches('[').trim_end_matches(']');
            entry == "*"
                || host == entry
                || host
                    .strip_suffix(entry)
                    .is_some_and(|head| head.ends_with('.'))
        })
    }
}

/// An `http://` proxy URL (or one without a scheme) as a forward proxy; `None` for
/// other schemes (`https://`, `socks5://`, …), which ureq tunnels through.
fn forward_proxy(url: &str) -> Option<ForwardProxy> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return None,
        None => url,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    if host_port.is_empty() {
        return None;
    }
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let has_port = match host_port.rfind(']') {
        Some(close) => host_port[close..].contains(':'),
        None => host_port.contains(':'),
    };
    let authority = if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:{HTTP_PROXY_PORT}")
    };
    let authorization = userinfo.map(|userinfo| {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        basic_authorization(user, password)
    });
    Some(ForwardProxy {
        authority,
        authorization,
    })
}

/// `Basic` credentials from a URL's user and password (percent-encoded).
pub fn basic_authorization(user: &str, password: &str) -> String {
    let pair = format!("{}:{}", percent_decode(user), percent_decode(password));
    format!("Basic {}", base64(pair.as_bytes()))
}

/// `%XX` decoded; anything malformed kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding (RFC 4648), for `Basic` credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let index = ((n >> shift) & 0x3f) as usize;
                out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn forward(authority: &str) -> Route {
        Route::Forward(ForwardProxy {
            authority: authority.to_string(),
            authorization: None,
        })
    }

    #[test]
    fn each_scheme_takes_its_own_variable_then_all_proxy() {
        let e = env(&[
            ("HTTP_PROXY", "http://p:3128"),
            ("HTTPS_PROXY", "http://s:3129"),
        ]);
        assert_eq!(e.route("http", "a.example"), forward("p:3128"));
        assert_eq!(
            e.route("https", "a.example"),
            Route::Tunnel("http://s:3129".into())
        );
        let e = env(&[("http_proxy", "p:8080")]);
        assert_eq!(e.route("http", "127.0.0.1"), forward("p:8080"));
        assert_eq!(e.route("https", "a.example"), Route::Direct);
        let e = env(&[("ALL_PROXY", "http://all")]);
        assert_eq!(e.route("http", "x"), forward("all:80"));
        assert_eq!(e.route("https", "x"), Route::Tunnel("http://all".into()));
        let e = env(&[("all_proxy", "socks5://s:1080")]);
        assert_eq!(
            e.route("http", "x"),
            Route::Tunnel("socks5://s:1080".into())
        );
        assert_eq!(env(&[]).route("http", "x"), Route::Direct);
        assert_eq!(
            env(&[("HTTP_PROXY", "  ")]).route("http", "x"),
            Route::Direct
        );
        // Lowercase first.
        let e = env(&[("http_proxy", "low:1"), ("HTTP_PROXY", "up:2")]);
        assert_eq!(e.route("http", "x"), forward("low:1"));
    }

    #[test]
    fn no_proxy_exempts_hosts_and_their_subdomains_and_nothing_else() {
        let e = env(&[
            ("HTTP_PROXY", "http://p:3128"),
            ("NO_PROXY", "example.com, .internal,10.0.0.1,[::1]"),
        ]);
        for host in [
            "example.com",
            "a.example.com",
            "b.internal",
            "10.0.0.1",
            "[::1]",
            "EXAMPLE.COM",
        ] {
            assert_eq!(e.route("http", host), Route::Direct, "{host}");
        }
        for host in ["badexample.com", "127.0.0.1", "localhost", "internal.net"] {
            assert_eq!(e.route("http", host), forward("p:3128"), "{host}");
        }
        let e = env(&[("HTTP_PROXY", "http://p:3128"), ("no_proxy", "*")]);
        assert_eq!(e.route("http", "anything"), Route::Direct);
    }

    #[test]
    fn credentials_become_a_basic_header_and_are_never_shown() {
        let e = env(&[("HTTP_PROXY", "http://us%40er:pa:ss@[::1]:3128/")]);
        let Route::Forward(proxy) = e.route("http", "x") else {
            panic!("not forwarded");
        };
        assert_eq!(proxy.authority, "[::1]:3128");
        assert_eq!(
            proxy.authorization.as_deref(),
            Some(format!("Basic {}", base64(b"us@er:pa:ss")).as_str())
        );
        assert!(!format!("{proxy:?}").contains("Basic"));
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }
}
