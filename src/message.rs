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

/// At most `chars_max` characters of `text`, control characters as `?`, and an
/// ellipsis when it was cut: a short quote of outside input inside a message.
pub fn clip(text: &str, chars_max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(chars_max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(chars_max).is_some() {
        out.push('…');
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_a_short_text_and_cuts_a_long_one_on_a_character() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("a\nb\u{1b}", 5), "a?b?");
        assert_eq!(clip("ééé", 2), "éé…");
    }
}
