//! Text that came from outside (Key Vault responses, parser messages quoting input) made safe to
//! put in an error message, a gRPC status or a log line.
//!
//! [`quote`] is the one function for a user-supplied value shown in an error or a log line:
//! every error `Display` and every log field built from such a value goes through it, so no
//! value, however long or hostile, makes a long or forged line.

/// Most characters of a user-supplied value repeated in an error message or a log line.
pub const MAX_QUOTED_CHARS: usize = 100;

/// A user-supplied value for an error message or a log line: escaped like Rust's
/// `escape_debug` (no raw newline, quote, backslash or terminal escape reaches a log line) and
/// cut to [`MAX_QUOTED_CHARS`] characters, followed by `…(N characters)` when cut, so a hostile
/// 1 MiB name cannot make a 1 MiB message. The caller puts the quotes around it.
pub fn quote(value: &str) -> String {
    let out: String = value
        .chars()
        .take(MAX_QUOTED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    let count = value.chars().count();
    if count > MAX_QUOTED_CHARS {
        format!("{out}…({count} characters)")
    } else {
        out
    }
}

/// `text` cut to `max_chars` characters, with every control character (newline, escape, NUL...)
/// written as a `\u{..}` escape: one printable line that cannot forge log lines or move a
/// terminal's cursor.
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for c in text.chars().take(max_chars) {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// An error and its causes on one printable line, each cause once (a cause that repeats its
/// wrapper's text is left out), cut to `max_chars` characters.
pub fn chain(err: &(dyn std::error::Error + 'static), max_chars: usize) -> String {
    let mut parts = vec![err.to_string()];
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    printable(&parts.join(": "), max_chars)
}

#[cfg(test)]
mod tests {
    use super::{MAX_QUOTED_CHARS, printable, quote};

    #[test]
    fn quote_escapes_and_cuts_with_the_length() {
        assert_eq!(quote("db-pass"), "db-pass");
        assert_eq!(quote("a\"b\n\u{1b}[31m"), "a\\\"b\\n\\u{1b}[31m");
        let long = "x".repeat(300_000);
        assert_eq!(
            quote(&long),
            format!("{}…(300000 characters)", "x".repeat(MAX_QUOTED_CHARS))
        );
    }

    #[test]
    fn escapes_control_characters_and_cuts() {
        assert_eq!(printable("RSA-HSM", 32), "RSA-HSM");
        assert_eq!(printable("EC\n\u{1b}[31m", 32), "EC\\u{a}\\u{1b}[31m");
        assert_eq!(printable("é\0x", 32), "é\\u{0}x");
        assert_eq!(printable("abcdef", 3), "abc");
        assert_eq!(printable("", 3), "");
    }
}
