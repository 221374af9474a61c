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
    if name.chars().any(is_invisible) {
        return Err(
            "must not contain invisible, line-separator or bidirectional-override characters",
        );
    }
    if name.chars().any(is_confusable_separator) {
        return Err(
            "must not contain look-alikes of '.', '/' or '\\' (fullwidth, leader dots, division or fraction slashes)",
        );
    }
    if has_encoded_separator(name) {
        return Err(
            "must not contain percent-encoded '.', '/', '\\' or NUL (%2e, %2f, %5c, %00): names are used literally",
        );
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

/// Unicode format characters (general category Cf), line and paragraph separators: they make a
/// name look different from what it is.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{070F}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// Characters that Unicode compatibility normalisation (NFKC) or a careless reader turns into
/// `.`, `/` or `\`: a tool that normalises names would see a traversal.
fn is_confusable_separator(c: char) -> bool {
    matches!(
        c,
        '\u{2024}' // one dot leader
            | '\u{2025}' // two dot leader
            | '\u{2026}' // horizontal ellipsis
            | '\u{FE52}' // small full stop
            | '\u{FF0E}' // fullwidth full stop
            | '\u{2044}' // fraction slash
            | '\u{2215}' // division slash
            | '\u{29F8}' // big solidus
            | '\u{FF0F}' // fullwidth solidus
            | '\u{2216}' // set minus
            | '\u{29F5}' // reverse solidus operator
            | '\u{29F9}' // big reverse solidus
            | '\u{FE68}' // small reverse solidus
            | '\u{FF3C}' // fullwidth reverse solidus
    )
}

fn has_encoded_separator(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["%2e", "%2f", "%5c", "%00", "%c0%ae", "%c0%af", "%c1%9c"]
        .iter()
        .any(|e| lower.contains(e))
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
            "100%",
            "a%20b",
            "a..b",
            "日本語/ファイル",
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
            "a\u{2028}b",
            "a\u{00AD}b",
            "\u{FF0E}\u{FF0E}/x",
            "\u{2025}/x",
            "a\u{2215}b",
            "a\u{FF3C}b",
            "%2e%2e/x",
            "a%2Fb",
            "a%5cb",
            "a%00",
            long.as_str(),
            very_long.as_str(),
        ] {
            assert!(check(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
