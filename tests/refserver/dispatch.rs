//! Request handling: the dispatcher hands each request to a handler thread of its
//! own, within a bounded number of slots; a handler reads the request, logs it, applies
//! a fault or checks the signature, and routes it to its endpoint.

use std::io::{self, Read};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::admin::{
    admin_agents, admin_conflict, admin_fault, admin_fault_state, admin_help, admin_jobs,
    admin_report, admin_requests, admin_step,
};
use super::faults::fault_reply;
use super::files::serve_file;
use super::protocol::{register, status};
use super::reply::{error, send, Reply};
use super::request_log::{Kind, Request};
use super::signature::check_signature;
use super::state::{lock, Shared};
use super::{LOG_BODY_CAP, MAX_BODY, MAX_HANDLERS};

impl Shared {
    /// Waits for a free handler slot; false if the server is stopping.
    fn acquire_slot(&self) -> bool {
        let mut active = lock(&self.active);
        while *active >= MAX_HANDLERS {
            if self.stopping() {
                return false;
            }
            active = match self
                .active_cv
                .wait_timeout(active, Duration::from_millis(50))
            {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
        *active += 1;
        true
    }

    fn release_slot(&self) {
        let mut active = lock(&self.active);
        *active = active.saturating_sub(1);
        self.active_cv.notify_all();
    }

    /// Waits until no handler runs, at most `limit`.
    pub(super) fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut active = lock(&self.active);
        while *active > 0 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            active = match self.active_cv.wait_timeout(active, deadline - now) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Releases a handler slot when a handler thread ends, even by a panic.
struct SlotGuard(Arc<Shared>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.release_slot();
    }
}

/// Takes requests from tiny_http and hands each to its own thread (at most
/// [`MAX_HANDLERS`] at once), until the server stops.
pub(super) fn dispatch(shared: &Arc<Shared>, http: &tiny_http::Server) {
    while !shared.stopping() {
        let rq = match http.recv() {
            Ok(rq) => rq,
            Err(_) => {
                // Unblocked by `Drop`, or an accept error: avoid spinning.
                if !shared.stopping() {
                    thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        let received = (Instant::now(), SystemTime::now());
        if !shared.acquire_slot() {
            break; // stopping; dropping `rq` answers 500
        }
        let worker_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("refserver-handler".to_string())
            .spawn(move || {
                let _slot = SlotGuard(Arc::clone(&worker_shared));
                handle(&worker_shared, rq, received);
            });
        if spawned.is_err() {
            // The closure (and the request, answered 500 when dropped) is gone.
            shared.release_slot();
        }
    }
}

/// Why a request body could not be used.
enum BodyError {
    TooLarge,
    Io(io::Error),
}

/// Reads a request body, at most `MAX_BODY + 1` bytes.
fn read_body(rq: &mut tiny_http::Request) -> Result<Vec<u8>, (Vec<u8>, BodyError)> {
    let mut body = Vec::new();
    match rq
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
    {
        Ok(_) if body.len() > MAX_BODY => Err((body, BodyError::TooLarge)),
        Ok(_) => Ok(body),
        Err(e) => Err((body, BodyError::Io(e))),
    }
}

/// Handles one request from start to end, on its own thread.
fn handle(shared: &Shared, mut rq: tiny_http::Request, received: (Instant, SystemTime)) {
    let method = rq.method().as_str().to_string();
    let (path, query) = match rq.url().split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (rq.url().to_string(), None),
    };
    let kind = if path.starts_with("/agent/") {
        Kind::Protocol
    } else if path == "/admin" || path.starts_with("/admin/") {
        Kind::Admin
    } else if path.starts_with("/files/") {
        Kind::File
    } else {
        Kind::Other
    };
    let headers: Vec<(String, String)> = rq
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_string(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };

    let body = read_body(&mut rq);
    let raw: &[u8] = match &body {
        Ok(b) => b,
        Err((b, _)) => b,
    };
    let json: Option<Value> = match &body {
        Ok(b) if !b.is_empty() => serde_json::from_slice(b).ok(),
        _ => None,
    };
    let fault = if kind == Kind::Protocol {
        shared.next_fault()
    } else {
        None
    };

    let seq = shared.log_request(Request {
        seq: 0,
        kind,
        received: received.0,
        wall: received.1,
        remote: rq.remote_addr().copied(),
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        boot_key: header("X-Boot-Key"),
        boot_timestamp: header("X-Boot-Timestamp"),
        boot_signature: header("X-Boot-Signature"),
        headers: headers.clone(),
        body: raw[..raw.len().min(LOG_BODY_CAP)].to_vec(),
        body_len: raw.len(),
        json: json.clone(),
        fault: fault.clone(),
        status: 0,
        response: None,
    });

    let signed = (
        header("X-Boot-Key"),
        header("X-Boot-Timestamp"),
        header("X-Boot-Signature"),
    );
    let reply = if let Some(fault) = fault {
        fault_reply(&fault)
    } else if let Some(why) = (kind == Kind::Protocol)
        .then(|| check_signature(shared, &path, &signed, raw))
        .flatten()
    {
        error(401, why)
    } else if let Err((_, why)) = &body {
        match why {
            BodyError::TooLarge => error(400, format!("request body over {MAX_BODY} bytes")),
            BodyError::Io(e) => error(400, format!("could not read the request body: {e}")),
        }
    } else {
        route(
            shared,
            kind,
            &method,
            &path,
            query.as_deref(),
            raw,
            json.as_ref(),
        )
    };

    let response_json = match (&reply, kind) {
        (Reply::Json(_, v, _), Kind::Protocol) => Some(v.clone()),
        _ => None,
    };
    shared.log_answer(seq, reply.status(), response_json);
    send(shared, rq, reply);
}

/// Answers a request that carries no fault.
fn route(
    shared: &Shared,
    kind: Kind,
    method: &str,
    path: &str,
    query: Option<&str>,
    raw: &[u8],
    json: Option<&Value>,
) -> Reply {
    let is_get = method == "GET" || method == "HEAD";
    let is_post = method == "POST";
    // A POST body must be JSON; GET bodies are ignored.
    let body = || -> Result<&Value, Reply> {
        match json {
            Some(v) => Ok(v),
            None if raw.is_empty() => Err(error(400, "empty body; expected JSON")),
            None => Err(error(400, "body is not JSON")),
        }
    };
    let post = |f: &dyn Fn(&Value) -> Reply| -> Reply {
        if !is_post {
            return error(405, format!("{method} not allowed on {path}; use POST"));
        }
        match body() {
            Ok(v) => f(v),
            Err(reply) => reply,
        }
    };
    let get = |f: &dyn Fn() -> Reply| -> Reply {
        if !is_get {
            return error(405, format!("{method} not allowed on {path}; use GET"));
        }
        f()
    };
    match (kind, path) {
        (Kind::Protocol, "/agent/register") => post(&|v| register(shared, v)),
        (Kind::Protocol, "/agent/status") => post(&|v| status(shared, v)),
        (Kind::Admin, "/admin") | (Kind::Admin, "/admin/") => get(&admin_help),
        (Kind::Admin, "/admin/agents") => get(&|| admin_agents(shared)),
        (Kind::Admin, "/admin/jobs") => post(&|v| admin_jobs(shared, v)),
        (Kind::Admin, "/admin/requests") => get(&|| admin_requests(shared, query)),
        (Kind::Admin, "/admin/fault") if is_get => admin_fault_state(shared),
        (Kind::Admin, "/admin/fault") => post(&|v| admin_fault(shared, v)),
        (Kind::Admin, "/admin/step") => post(&|v| admin_step(shared, v)),
        (Kind::Admin, "/admin/report") => post(&|v| admin_report(shared, v)),
        (Kind::Admin, "/admin/conflict") => post(&|v| admin_conflict(shared, v)),
        (Kind::File, _) => get(&|| serve_file(shared, path)),
        _ => error(404, format!("no such endpoint: {method} {path}")),
    }
}
