//! Request signatures (docs/protocol.md section 4): checking a protocol request's
//! `X-Boot-*` headers against the credentials handed out, and computing a signature.

use std::time::{SystemTime, UNIX_EPOCH};

use super::state::Shared;

/// How far a request's `X-Boot-Timestamp` may be from the server's clock.
pub const SIGNATURE_SKEW_S_MAX: i64 = 300;

/// Checks the signature of a protocol request (docs/protocol.md section 4) when the
/// server hands out credentials: a report must be signed with the current key; a
/// registration signed with the current key must verify (one signed with another
/// key, or not at all, is a re-enrolment and passes). `Some(reason)` rejects.
pub(super) fn check_signature(
    shared: &Shared,
    path: &str,
    (key, timestamp, signature): &(Option<String>, Option<String>, Option<String>),
    body: &[u8],
) -> Option<String> {
    let (current_key, secret) = shared.state().credentials.clone()?;
    let is_register = path == "/agent/register";
    match key {
        None if is_register => return None,
        None => return Some("unsigned request: X-Boot-Key missing".to_string()),
        Some(key) if *key != current_key && is_register => return None,
        Some(key) if *key != current_key => return Some(format!("unknown key {key}")),
        Some(_) => {}
    }
    let Some(ts) = timestamp.as_deref().and_then(|t| t.parse::<i64>().ok()) else {
        return Some("X-Boot-Timestamp missing or not a number".to_string());
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now - ts).abs() > SIGNATURE_SKEW_S_MAX {
        return Some(format!("stale timestamp {ts} (server time {now})"));
    }
    let expected = sign(secret.as_bytes(), ts, path, body);
    match signature {
        Some(got) if got.eq_ignore_ascii_case(&expected) => None,
        Some(_) => Some("bad signature".to_string()),
        None => Some("X-Boot-Signature missing".to_string()),
    }
}

/// Lowercase hex of HMAC-SHA256(secret, timestamp "\n" path "\n" body).
pub fn sign(secret: &[u8], timestamp: i64, path: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return String::new(); // HMAC takes keys of any length
    };
    mac.update(format!("{timestamp}\n{path}\n").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
