//! Messages made from outside input (job results, settings, log lines): one line,
//! bounded, and the JSON type of a value that was not what was expected. Pure, and
//! imported by the modules that check input, which `wire` re-exports it for.

use serde_json::Value;

/// Longest message built from outside input (job results, log lines), in bytes.
pub const MESSAGE_BYTES_MAX: usize = 512;

/// `text` made fit for one line of a message: control characters escaped, cut at
/// about `MESSAGE_BYTES_MAX` bytes (on a character boundary) with an ellipsis.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MESSAGE_BYTES_MAX + 8));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MESSAGE_BYTES_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The JSON type of a value, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
