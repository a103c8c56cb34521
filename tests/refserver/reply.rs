//! Answers: the [`Reply`] a handler decides on, and writing it to the client (or not
//! writing it, for the stall and close faults).

use std::fs::File;
use std::io;
use std::time::Duration;

use serde_json::{json, Value};

use super::faults::HugeBody;
use super::state::Shared;

/// How a request is answered.
pub(super) enum Reply {
    /// JSON body with extra headers.
    Json(u16, Value, Vec<(String, String)>),
    /// Fixed text body with its content type.
    Text(u16, String, &'static str),
    /// A file, with `Content-Length`.
    File(File, usize),
    /// A generated JSON-looking body of this size, with `Content-Length` or chunked.
    Huge(usize, bool),
    /// Send nothing for that long, then close.
    Stall(Duration),
    /// Close without an answer.
    Close,
}

impl Reply {
    /// The HTTP status sent; 0 for none.
    pub(super) fn status(&self) -> u16 {
        match self {
            Reply::Json(code, ..) | Reply::Text(code, ..) => *code,
            Reply::File(..) | Reply::Huge(..) => 200,
            Reply::Stall(_) | Reply::Close => 0,
        }
    }
}

/// A JSON error answer: `{"status": 1, "error": msg}`.
pub(super) fn error(code: u16, msg: impl Into<String>) -> Reply {
    Reply::Json(code, json!({"status": 1, "error": msg.into()}), Vec::new())
}

pub(super) fn ok_json(value: Value) -> Reply {
    Reply::Json(200, value, Vec::new())
}

/// Writes the reply (or does not, for stalls and closes).
pub(super) fn send(shared: &Shared, rq: tiny_http::Request, reply: Reply) {
    use tiny_http::{Response, StatusCode};
    // Errors writing the answer mean the client went away: nothing to do.
    let _ = match reply {
        Reply::Json(code, value, extra) => {
            let body = serde_json::to_vec(&value).unwrap_or_default();
            let mut hdrs = vec![("Content-Type".to_string(), "application/json".to_string())];
            hdrs.extend(extra);
            let len = body.len();
            rq.respond(
                Response::new(
                    StatusCode(code),
                    headers(&hdrs),
                    io::Cursor::new(body),
                    Some(len),
                    None,
                )
                .with_chunked_threshold(usize::MAX),
            )
        }
        Reply::Text(code, text, content_type) => {
            let len = text.len();
            let hdrs = headers(&[("Content-Type".to_string(), content_type.to_string())]);
            rq.respond(
                Response::new(
                    StatusCode(code),
                    hdrs,
                    io::Cursor::new(text.into_bytes()),
                    Some(len),
                    None,
                )
                .with_chunked_threshold(usize::MAX),
            )
        }
        Reply::File(file, len) => {
            let hdrs = headers(&[(
                "Content-Type".to_string(),
                "application/octet-stream".to_string(),
            )]);
            rq.respond(
                Response::new(StatusCode(200), hdrs, file, Some(len), None)
                    .with_chunked_threshold(usize::MAX),
            )
        }
        Reply::Huge(n, chunked) => {
            let hdrs = headers(&[("Content-Type".to_string(), "application/json".to_string())]);
            let body = HugeBody::new(n);
            let response = if chunked {
                Response::new(StatusCode(200), hdrs, body, None, None).with_chunked_threshold(0)
            } else {
                Response::new(StatusCode(200), hdrs, body, Some(n), None)
                    .with_chunked_threshold(usize::MAX)
            };
            rq.respond(response)
        }
        Reply::Stall(d) => {
            shared.sleep(d);
            close_without_answer(rq);
            Ok(())
        }
        Reply::Close => {
            close_without_answer(rq);
            Ok(())
        }
    };
}

/// Drops the request without writing anything (tiny_http would otherwise answer 500).
///
/// The socket closes at once when the client asked for `Connection: close` (as
/// BootAgent does, docs/protocol.md §1) or spoke HTTP/1.0; on a keep-alive connection
/// tiny_http keeps it open for a next request, so the client just sees no answer.
fn close_without_answer(rq: tiny_http::Request) {
    drop(rq.into_writer());
}

/// tiny_http headers from name/value pairs (pairs that are not ASCII are skipped).
fn headers(pairs: &[(String, String)]) -> Vec<tiny_http::Header> {
    pairs
        .iter()
        .filter_map(|(k, v)| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok())
        .collect()
}
