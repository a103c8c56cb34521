//! `http://` and `https://` downloads through ureq: redirects, a bounded answer head,
//! connect and per-read timeouts, and every ureq error made one line that names the
//! URL or the server. The proxy of the environment is chosen per hop by
//! `crate::http::Routes` (plain `http://` through an HTTP proxy in absolute form), so
//! redirects are followed here, each one routed again.

use super::shared::{io_problem, Ctx, DownloadError, Source};
use super::url::{host_port, split_url};
use crate::http::Routes;
use crate::proxy::ProxyEnv;
use std::io::{self, Read};

/// HTTP redirects followed (package URLs often redirect to a mirror).
const REDIRECTS_MAX: u32 = 5;
/// Largest HTTP answer head; ureq refuses a longer one.
const HTTP_HEAD_BYTES_MAX: usize = 64 * 1024;
const HTTP_PORT: u16 = 80;
const HTTPS_PORT: u16 = 443;
/// How std's resolver failures begin (their kind is not public).
const LOOKUP_FAILED: &str = "failed to lookup address information";

pub(super) struct HttpSource {
    reader: ureq::BodyReader<'static>,
    size: Option<u64>,
    got: u64,
}

pub(super) fn open_http(url: &str, ctx: &Ctx<'_>) -> Result<HttpSource, DownloadError> {
    let routes = Routes::new(ProxyEnv::from_env(), || {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(ctx.connect_timeout()))
            .timeout_per_read(Some(ctx.stall()))
            .timeout_per_write(Some(ctx.stall()))
            .max_redirects(0)
            .max_response_header_size(HTTP_HEAD_BYTES_MAX)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(format!("bootagent/{}", env!("BOOT_VERSION")));
        #[cfg(feature = "tls")]
        let config = config.tls_config(crate::tls::ureq_config(&ctx.limits.tls));
        config
    });
    let mut current = url.to_string();
    let mut redirects = 0;
    let response = loop {
        let target = routes.target(&current).map_err(|why| {
            if why == crate::http::INVALID_URL {
                ctx.invalid("invalid HTTP URL")
            } else {
                DownloadError::Network(format!("{why}, downloading {}", ctx.shown))
            }
        })?;
        let mut request = target.agent.get(&current).header("Connection", "close");
        for (name, value) in &target.headers {
            request = request.header(*name, value);
        }
        let response = request
            .call()
            .map_err(|err| http_error(err, &current, ctx))?;
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok());
        match location {
            Some(location) if response.status().is_redirection() => {
                redirects += 1;
                if redirects > REDIRECTS_MAX {
                    return Err(DownloadError::Network(format!(
                        "more than {REDIRECTS_MAX} redirects from {}",
                        ctx.shown
                    )));
                }
                current = join_location(&current, location).ok_or_else(|| {
                    DownloadError::Network(format!("bad redirect from {}", ctx.shown))
                })?;
            }
            _ => break response,
        }
    };
    let code = response.status().as_u16();
    if !response.status().is_success() {
        return Err(DownloadError::Status {
            url: ctx.shown.clone(),
            code,
        });
    }
    let size = response.body().content_length();
    Ok(HttpSource {
        reader: response.into_body().into_reader(),
        size,
        got: 0,
    })
}

/// A redirect's `Location` resolved against the URL it came from (RFC 3986 section
/// 5.2, the common forms): absolute, scheme-relative, absolute path, relative path.
/// Only `http://` and `https://` results are followed.
fn join_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let (scheme, rest) = base.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", rest.get(..authority_end)?);
    let joined = if location.contains("://") {
        location.to_string()
    } else if let Some(tail) = location.strip_prefix("//") {
        format!("{scheme}://{tail}")
    } else if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let path = rest.get(authority_end..).unwrap_or_default();
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let dir = path
            .rfind('/')
            .map_or("/", |slash| path.get(..=slash).unwrap_or("/"));
        format!("{origin}{dir}{location}")
    };
    let lower = joined.to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then_some(joined)
}

impl Source for HttpSource {
    fn size(&self) -> Option<u64> {
        self.size
    }

    fn read(&mut self, buf: &mut [u8], ctx: &Ctx<'_>) -> Result<usize, DownloadError> {
        loop {
            match self.reader.read(buf) {
                Ok(n) => {
                    self.got += n as u64;
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.body_error(ureq::Error::from(err), ctx)),
            }
        }
    }
}

impl HttpSource {
    fn body_error(&self, err: ureq::Error, ctx: &Ctx<'_>) -> DownloadError {
        if ctx.is_cancelled() {
            return ctx.cancelled();
        }
        let url = &ctx.shown;
        match err {
            ureq::Error::Timeout(_) => ctx.stalled(),
            ureq::Error::Io(io) => match io.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ctx.stalled(),
                io::ErrorKind::UnexpectedEof => match self.size {
                    Some(expected) => DownloadError::LengthMismatch {
                        url: url.clone(),
                        got: self.got,
                        expected,
                    },
                    None => DownloadError::Network(format!(
                        "connection closed early after {} bytes from {url}",
                        self.got
                    )),
                },
                _ => DownloadError::Network(format!("{} downloading {url}", io_problem(&io))),
            },
            ureq::Error::Protocol(proto) => {
                DownloadError::Network(format!("bad HTTP body from {url}: {proto}"))
            }
            other => DownloadError::Network(format!("{other} downloading {url}")),
        }
    }
}

fn http_error(err: ureq::Error, url: &str, ctx: &Ctx<'_>) -> DownloadError {
    let shown = &ctx.shown;
    let target = || {
        split_url(url)
            .map(|parts| {
                let default = if parts.scheme.eq_ignore_ascii_case("https") {
                    HTTPS_PORT
                } else {
                    HTTP_PORT
                };
                host_port(parts.host, parts.port.unwrap_or(default))
            })
            .unwrap_or_else(|| shown.clone())
    };
    let network = DownloadError::Network;
    match err {
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            network(format!("timed out connecting to {}", target()))
        }
        ureq::Error::Timeout(_) => ctx.stalled(),
        ureq::Error::HostNotFound => network(format!("host not found: {}", target())),
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => {
                network(format!("connection refused to {}", target()))
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ctx.stalled(),
            io::ErrorKind::UnexpectedEof => network(format!(
                "connection closed without an answer by {}",
                target()
            )),
            // rustls reports a bad handshake as invalid data.
            io::ErrorKind::InvalidData => {
                network(format!("TLS failed with {}: {}", target(), io_problem(&io)))
            }
            _ if io.to_string().starts_with(LOOKUP_FAILED) => {
                network(format!("host not found: {}", target()))
            }
            _ => network(format!("{} with {}", io_problem(&io), target())),
        },
        // ureq's own text may quote the URL with its password: not shown.
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => ctx.invalid("invalid HTTP URL"),
        ureq::Error::TooManyRedirects => {
            network(format!("more than {REDIRECTS_MAX} redirects from {shown}"))
        }
        ureq::Error::RedirectFailed => network(format!("bad redirect from {shown}")),
        ureq::Error::LargeResponseHeader(_, _) => network(format!(
            "answer head over {HTTP_HEAD_BYTES_MAX} bytes from {shown}"
        )),
        ureq::Error::Protocol(proto) => network(format!("bad HTTP answer from {shown}: {proto}")),
        other => network(format!("{other} with {}", target())),
    }
}

#[cfg(test)]
mod tests {
    use super::join_location;

    #[test]
    fn redirects_resolve_against_the_url_they_came_from() {
        let base = "http://h:8080/dir/pkg.tgz?x=1";
        let check = |location: &str, expected: Option<&str>| {
            assert_eq!(
                join_location(base, location).as_deref(),
                expected,
                "{location}"
            );
        };
        check("https://m.example/p.tgz", Some("https://m.example/p.tgz"));
        check("//m.example/p.tgz", Some("http://m.example/p.tgz"));
        check("/other/p.tgz", Some("http://h:8080/other/p.tgz"));
        check("p2.tgz", Some("http://h:8080/dir/p2.tgz"));
        check("ftp://elsewhere/p.tgz", None);
        check("file:///etc/shadow", None);
        assert_eq!(
            join_location("http://h", "p.tgz").as_deref(),
            Some("http://h/p.tgz")
        );
    }
}
