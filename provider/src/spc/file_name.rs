//! Rules for the file names objects are written to (`objectAlias`, else `objectName`).
//!
//! The driver writes our files below the pod's target folder with Kubernetes' atomic writer, which
//! reserves names starting with `..`. A name must be relative and clean; sub-folders are allowed.

/// Longest accepted file name (whole relative path), in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest accepted path element, in bytes (the Linux `NAME_MAX`).
pub const MAX_ELEMENT_BYTES: usize = 255;

/// Checks a relative file name; `Err` says what is wrong, in words for an error message.
pub fn check(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > MAX_PATH_BYTES {
        return Err("must be at most 1024 bytes long");
    }
    if name.starts_with('/') {
        return Err("must be a relative path (it starts with '/')");
    }
    if name.contains('\\') {
        return Err("must not contain a backslash (use '/' for sub-folders)");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters (NUL, newline, ...)");
    }
    if name.chars().any(|c| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')) {
        return Err("must not contain invisible or bidirectional-override characters");
    }
    for element in name.split('/') {
        match element {
            "" => return Err("must not contain empty path elements ('//' or a trailing '/')"),
            "." => return Err("must not contain '.' path elements"),
            ".." => return Err("must not contain '..' path elements"),
            e if e.starts_with("..") => {
                return Err(
                    "must not have path elements starting with '..' (reserved by the driver's atomic writer)",
                );
            }
            e if e.len() > MAX_ELEMENT_BYTES => {
                return Err("must not have path elements longer than 255 bytes");
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_plain_and_nested_names() {
        for ok in [
            "a",
            "db-password",
            "tls/tls.crt",
            "a.b",
            ".hidden",
            "x/y/z",
            "ünï",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_traversal_and_odd_forms() {
        let long = "a".repeat(256);
        let very_long = "a/".repeat(600);
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "..",
            ".",
            "a/./b",
            "a//b",
            "a/",
            "..data",
            "..2024_01_01",
            "a\\..\\b",
            "C:\\x",
            "a\u{0}b",
            "a\nb",
            "\u{202E}txt",
            long.as_str(),
            very_long.as_str(),
        ] {
            assert!(check(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
