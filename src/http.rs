//! The HTTP thread: carries out one blocking exchange at a time, so that a slow
//! server never stalls the event loop. Requests arrive over a bounded channel;
//! each outcome goes back to the loop as an `Event`.
//!
//! Every exchange is a short connection (`Connection: close`, no pooling) with a
//! connect timeout and a whole-exchange timeout, and an answer body over
//! `response_body_bytes_max` is an error, never read into memory whole.
//!
//! Proxies: [`Routes`] holds one ureq agent per way a request can go (`proxy.rs`
//! decides which): direct, and one per tunnelling proxy. A plain `http://` request
//! through an HTTP proxy goes through the direct agent to the proxy, its request
//! target in absolute form; package downloads use the same [`Routes`].

use crate::agent::Outcome;
use crate::events::Event;
use crate::forward::ForwardConnector;
use crate::limits::Limits;
use crate::proxy::{ProxyEnv, Route};
use std::io;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread;
use std::time::Duration;

/// One exchange for the HTTP thread.
pub struct Exchange {
    pub url: String,
    pub body: Vec<u8>,
    /// Extra request headers (signing), as name and value.
    pub headers: Vec<(&'static str, String)>,
}

/// Starts the HTTP thread. It ends when the request channel closes.
pub fn spawn(
    limits: &Limits,
    tls: &crate::tls::Loaded,
    requests: Receiver<Exchange>,
    events: SyncSender<Event>,
) -> io::Result<thread::JoinHandle<()>> {
    let connect_timeout_ms = limits.connect_timeout_ms;
    let exchange_timeout_ms = limits.exchange_timeout_ms;
    let tls = tls.clone();
    let routes = Routes::new(ProxyEnv::from_env(), || {
        agent_config(connect_timeout_ms, exchange_timeout_ms, &tls)
    });
    let body_max = limits.response_body_bytes_max;
    thread::Builder::new()
        .name("http".to_string())
        .spawn(move || {
            for exchange in requests {
                let outcome = post(&routes, &exchange, body_max);
                if events.send(Event::Exchanged(outcome)).is_err() {
                    return; // the loop is gone: shutting down
                }
            }
        })
}

/// What `Routes::new` cannot tell apart from another failure: the URL itself.
pub const INVALID_URL: &str = "invalid URL";

fn agent_config(
    connect_timeout_ms: u64,
    exchange_timeout_ms: u64,
    tls: &crate::tls::Loaded,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_millis(connect_timeout_ms)))
        .timeout_global(Some(Duration::from_millis(exchange_timeout_ms)))
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .max_redirects(0)
        .user_agent(format!("bootagent/{}", env!("BOOT_VERSION")));
    #[cfg(feature = "tls")]
    let config = config.tls_config(crate::tls::ureq_config(tls));
    config
}

/// The ureq agents of one kind of request, one per route (see the module doc).
pub struct Routes {
    env: ProxyEnv,
    /// Direct requests and absolute-form ones (through `forward.rs`).
    direct: ureq::Agent,
    /// The agent of each tunnelling proxy URL of the environment, or why that URL
    /// cannot be used.
    tunnels: Vec<(String, Result<ureq::Agent, String>)>,
}

/// Where one request goes: the agent, and headers to add.
pub struct Target {
    pub agent: ureq::Agent,
    pub headers: Vec<(&'static str, String)>,
}

impl Routes {
    /// `config` gives the settings of every agent, with the proxy set to `None`.
    pub fn new(
        env: ProxyEnv,
        config: impl Fn() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> Routes {
        let mut tunnels: Vec<(String, Result<ureq::Agent, String>)> = Vec::new();
        for url in env.tunnel_urls() {
            if tunnels.iter().any(|(known, _)| *known == url) {
                continue;
            }
            let agent = ureq::Proxy::new(&url)
                .map(|proxy| ureq::Agent::new_with_config(config().proxy(Some(proxy)).build()))
                .map_err(|err| format!("bad proxy URL in the environment: {err}"));
            tunnels.push((url, agent));
        }
        let direct = ureq::Agent::with_parts(
            config().proxy(None).build(),
            ForwardConnector::new(env.clone()),
            ureq::unversioned::resolver::DefaultResolver::default(),
        );
        Routes {
            env,
            direct,
            tunnels,
        }
    }

    /// The agent and extra headers of a request to `url`.
    pub fn target(&self, url: &str) -> Result<Target, String> {
        let uri: ureq::http::Uri = url.parse().map_err(|_| INVALID_URL.to_string())?;
        let scheme = uri.scheme_str().unwrap_or_default();
        let host = uri.host().unwrap_or_default();
        match self.env.route(scheme, host) {
            Route::Direct => Ok(Target {
                agent: self.direct.clone(),
                headers: Vec::new(),
            }),
            Route::Tunnel(proxy) => {
                let agent = self
                    .tunnels
                    .iter()
                    .find(|(known, _)| *known == proxy)
                    .map(|(_, agent)| agent.clone())
                    .unwrap_or_else(|| Err("no agent for the proxy".to_string()))?;
                Ok(Target {
                    agent,
                    headers: Vec::new(),
                })
            }
            Route::Forward(proxy) => Ok(Target {
                agent: self.direct.clone(),
                headers: proxy
                    .authorization
                    .map(|value| vec![("Proxy-Authorization", value)])
                    .unwrap_or_default(),
            }),
        }
    }
}

/// POSTs one JSON body and reads the answer, bounded.
pub fn post(routes: &Routes, exchange: &Exchange, body_max: u64) -> Outcome {
    if exchange.url.starts_with("https://") {
        if !cfg!(feature = "tls") {
            return Outcome::Failed("https:// needs a bootagent built with the tls feature".into());
        }
        // Certificates cannot be checked against a clock before 1970 (and rustls
        // would not survive it): fail this try, the backoff tries again.
        if std::time::SystemTime::now() < std::time::UNIX_EPOCH {
            return Outcome::Failed(
                "the clock is before 1970: certificates cannot be checked".into(),
            );
        }
    }
    let target = match routes.target(&exchange.url) {
        Ok(target) => target,
        Err(why) => return Outcome::Failed(why),
    };
    let mut request = target
        .agent
        .post(&exchange.url)
        .header("Content-Type", "application/json")
        .header("Connection", "close");
    for (name, value) in target.headers.iter().chain(&exchange.headers) {
        request = request.header(*name, value);
    }
    let mut response = match request.send(&exchange.body[..]) {
        Ok(response) => response,
        Err(err) => return Outcome::Failed(describe(&err)),
    };
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // An HTTP date is taken relative to the answer's own `Date`, else to our clock.
    let now_wall_s = header("date")
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or_else(std::time::SystemTime::now)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let retry_after_s =
        header("retry-after").and_then(|v| crate::agent::pacing::parse_retry_after(&v, now_wall_s));
    match response
        .body_mut()
        .with_config()
        .limit(body_max)
        .read_to_vec()
    {
        Ok(body) => {
            // The URL and the answer's size only: never the headers, which carry
            // the signature of a signed request.
            log::debug!("POST {}: HTTP {status}, {} bytes", exchange.url, body.len());
            Outcome::Answer {
                status,
                body,
                retry_after_s,
            }
        }
        Err(ureq::Error::BodyExceedsLimit(_)) => {
            Outcome::Failed(format!("answer body over {body_max} bytes"))
        }
        Err(err) => Outcome::Failed(format!("reading the answer: {}", describe(&err))),
    }
}

/// One line that names what went wrong.
fn describe(err: &ureq::Error) -> String {
    if let Some(problem) = crate::tls::certificate_problem(err) {
        return format!("TLS certificate: {problem}");
    }
    match err {
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            io::ErrorKind::TimedOut => "timed out".to_string(),
            io::ErrorKind::UnexpectedEof => "connection closed without an answer".to_string(),
            io::ErrorKind::ConnectionReset => "connection reset".to_string(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(which) => format!("timed out ({which:?})"),
        ureq::Error::HostNotFound => "host not found".to_string(),
        other => other.to_string(),
    }
}
