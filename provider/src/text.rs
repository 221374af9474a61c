//! Text that came from outside (Key Vault responses, parser messages quoting input) made safe to
//! put in an error message, a gRPC status or a log line.

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

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_control_characters_and_cuts() {
        assert_eq!(printable("RSA-HSM", 32), "RSA-HSM");
        assert_eq!(printable("EC\n\u{1b}[31m", 32), "EC\\u{a}\\u{1b}[31m");
        assert_eq!(printable("é\0x", 32), "é\\u{0}x");
        assert_eq!(printable("abcdef", 3), "abc");
        assert_eq!(printable("", 3), "");
    }
}
