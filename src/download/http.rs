//! `http://` and `https://` downloads through ureq: redirects, a bounded answer head,
//! connect and per-read timeouts, and every ureq error made one line that names the
//! URL or the server.

use super::url::{host_port, split_url};
use super::{io_problem, Ctx, DownloadError, Source};
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
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(ctx.connect_timeout()))
        .timeout_per_read(Some(ctx.stall()))
        .timeout_per_write(Some(ctx.stall()))
        .max_redirects(REDIRECTS_MAX)
        .max_response_header_size(HTTP_HEAD_BYTES_MAX)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .user_agent(format!("bootagent/{}", env!("BOOT_VERSION")));
    #[cfg(feature = "tls")]
    let config = config.tls_config(crate::tls::ureq_config(&ctx.limits.tls));
    let config = config.build();
    let agent = ureq::Agent::new_with_config(config);
    let response = agent
        .get(url)
        .header("Connection", "close")
        .call()
        .map_err(|err| http_error(err, url, ctx))?;
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
