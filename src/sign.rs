//! Request signing (docs/protocol.md section 4): when the agent holds `key` and
//! `secret`, every request carries `X-Boot-Key`, `X-Boot-Timestamp` and
//! `X-Boot-Signature`, the lowercase hex of
//! HMAC-SHA256(secret, timestamp + "\n" + path + "\n" + body) over the exact
//! bytes sent. Pure; the secret never leaves this computation and is never logged.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const KEY_HEADER: &str = "X-Boot-Key";
pub const TIMESTAMP_HEADER: &str = "X-Boot-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Boot-Signature";

/// The signature of one request.
pub fn signature(secret: &[u8], timestamp: i64, path: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    crate::job_fields::hex(&mac.finalize().into_bytes())
}

/// The three headers of a signed request.
pub fn headers(
    key: &str,
    secret: &str,
    timestamp: i64,
    path: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        (KEY_HEADER, key.to_string()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (
            SIGNATURE_HEADER,
            signature(secret.as_bytes(), timestamp, path, body),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_known_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("any key length");
        mac.update(b"what do ya want for nothing?");
        let hex = crate::job_fields::hex(&mac.finalize().into_bytes());
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Ours signs timestamp, path and body joined by newlines.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("any key length");
        mac.update(b"1763700000\n/agent/status\n{\"a\":1}");
        let expected = crate::job_fields::hex(&mac.finalize().into_bytes());
        assert_eq!(
            signature(b"s3cret", 1_763_700_000, "/agent/status", b"{\"a\":1}"),
            expected
        );
    }

    #[test]
    fn any_change_changes_the_signature() {
        let base = signature(b"k", 1, "/agent/status", b"{}");
        assert_eq!(base.len(), 64);
        assert_ne!(base, signature(b"k", 2, "/agent/status", b"{}"));
        assert_ne!(base, signature(b"k", 1, "/agent/register", b"{}"));
        assert_ne!(base, signature(b"k", 1, "/agent/status", b"{ }"));
        assert_ne!(base, signature(b"K", 1, "/agent/status", b"{}"));
    }
}
