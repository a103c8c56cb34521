//! Plain HTTP through an HTTP proxy in absolute form (RFC 9112 section 3.2.2), as a
//! ureq connector: ureq 3 tunnels every proxied request with `CONNECT`, which many
//! proxies refuse for anything but port 443 (Squid's default).
//!
//! [`ForwardConnector`] sits in front of ureq's default connector. For a request
//! that `proxy.rs` routes [`Route::Forward`], it connects to the proxy instead of
//! the target, and wraps the connection in [`AbsoluteForm`], which rewrites the
//! request line ureq writes, `GET /path HTTP/1.1`, into
//! `GET http://host:port/path HTTP/1.1`. The `Host` header is the target's already;
//! `Proxy-Authorization` is added by the caller (`http.rs`). Every other request goes
//! to the default connector unchanged.

use crate::proxy::{ProxyEnv, Route};
use ureq::http::Uri;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, Transport,
};
use ureq::Error;

/// Longest request line looked at for the rewrite; ureq's output buffer holds at
/// least this much, and a longer line is passed on unchanged.
const REQUEST_LINE_BYTES_MAX: usize = 8 * 1024;

/// The connector of the agent that makes direct and absolute-form requests.
#[derive(Debug)]
pub struct ForwardConnector {
    env: ProxyEnv,
    inner: DefaultConnector,
}

impl ForwardConnector {
    pub fn new(env: ProxyEnv) -> ForwardConnector {
        ForwardConnector {
            env,
            inner: DefaultConnector::default(),
        }
    }
}

impl Connector<()> for ForwardConnector {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, Error> {
        let uri = details.uri;
        let route = match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => self.env.route(scheme, host),
            _ => Route::Direct,
        };
        let Route::Forward(proxy) = route else {
            return self.inner.connect(details, chained);
        };
        let proxy_uri: Uri = format!("http://{}/", proxy.authority)
            .parse()
            .map_err(|_| Error::BadUri("bad proxy address in the environment".to_string()))?;
        let addrs = details
            .resolver
            .resolve(&proxy_uri, details.config, details.timeout)?;
        let via = ConnectionDetails {
            uri: details.uri,
            addrs,
            config: details.config,
            request_level: details.request_level,
            resolver: details.resolver,
            now: details.now,
            timeout: details.timeout,
            current_time: details.current_time.clone(),
            run_connector: details.run_connector.clone(),
            register_shutdown: details.register_shutdown.clone(),
        };
        let Some(inner) = self.inner.connect(&via, chained)? else {
            return Ok(None);
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host_port)| host_port);
        Ok(Some(Box::new(AbsoluteForm {
            inner,
            prefix: format!("http://{host_port}").into_bytes(),
            rewritten: false,
        })))
    }
}

/// A connection to a forward proxy: the first request line gets the target's
/// scheme and authority in front of its path.
#[derive(Debug)]
pub struct AbsoluteForm {
    inner: Box<dyn Transport>,
    prefix: Vec<u8>,
    rewritten: bool,
}

impl Transport for AbsoluteForm {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        if self.rewritten {
            return self.inner.transmit_output(amount, timeout);
        }
        self.rewritten = true;
        let written = self
            .inner
            .buffers()
            .output()
            .get(..amount)
            .unwrap_or_default()
            .to_vec();
        let data = absolute_form(&written, &self.prefix);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let out = self.inner.buffers().output();
            let n = out.len().min(rest.len());
            if n == 0 {
                return Err(Error::Io(std::io::Error::other("no output buffer")));
            }
            let (now, later) = rest.split_at(n);
            out.get_mut(..n).unwrap_or_default().copy_from_slice(now);
            self.inner.transmit_output(n, timeout)?;
            rest = later;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }
}

/// `METHOD /path …` with `prefix` put before the path; anything else unchanged.
fn absolute_form(request: &[u8], prefix: &[u8]) -> Vec<u8> {
    let head = &request[..request.len().min(REQUEST_LINE_BYTES_MAX)];
    let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
    let target_at = head
        .get(..line_end)
        .and_then(|line| line.iter().position(|&b| b == b' '))
        .map(|space| space + 1)
        .filter(|&at| request.get(at) == Some(&b'/'));
    match target_at {
        Some(at) => {
            let mut out = Vec::with_capacity(request.len() + prefix.len());
            out.extend_from_slice(&request[..at]);
            out.extend_from_slice(prefix);
            out.extend_from_slice(&request[at..]);
            out
        }
        None => request.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::absolute_form;

    #[test]
    fn the_request_line_gets_the_target_in_front_of_its_path() {
        let check = |request: &str, expected: &str| {
            let out = absolute_form(request.as_bytes(), b"http://h:8080");
            assert_eq!(String::from_utf8_lossy(&out), expected);
        };
        check(
            "POST /agent/status HTTP/1.1\r\nHost: h:8080\r\n\r\n{}",
            "POST http://h:8080/agent/status HTTP/1.1\r\nHost: h:8080\r\n\r\n{}",
        );
        check(
            "GET /a?b=/c HTTP/1.1\r\n",
            "GET http://h:8080/a?b=/c HTTP/1.1\r\n",
        );
        check("GET http://x/ HTTP/1.1\r\n", "GET http://x/ HTTP/1.1\r\n");
        check("garbage", "garbage");
        check("", "");
    }
}
