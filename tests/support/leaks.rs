//! The log-leak scanner run over the output of every provider an integration test starts.
//!
//! Two kinds of findings: a value registered as sensitive appears (the fake Azure registers every
//! secret value, client secret, federated assertion and access token it knows), or a line has the
//! shape of a credential (`tests/leak-patterns.txt`, shared with `scripts/leak-scan.sh`).

use regex::Regex;
use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Shorter registered values are not scanned for (they occur in ordinary text).
pub const MIN_SCANNED_LEN: usize = 8;

static REGISTERED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Longer registered values are scanned for by their first bytes (a leak contains them too).
pub const MAX_SCANNED_LEN: usize = 256;

/// Marks `value` as something that must never appear in provider output.
pub fn register(value: &str) {
    if value.len() >= MIN_SCANNED_LEN {
        let mut end = value.len().min(MAX_SCANNED_LEN);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        REGISTERED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(value[..end].to_owned());
    }
}

fn patterns() -> &'static [(String, Regex)] {
    static PATTERNS: OnceLock<Vec<(String, Regex)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        include_str!("../leak-patterns.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| (l.to_owned(), Regex::new(l).expect("leak pattern compiles")))
            .collect()
    })
}

/// Every leak in `text`, described without repeating the leaked value.
pub fn scan(text: &str) -> Vec<String> {
    let registered: Vec<String> = REGISTERED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|v| regex::escape(v))
        .collect();
    // One automaton for all registered values: a soak test registers thousands of tokens.
    let values = (!registered.is_empty()).then(|| {
        regex::RegexBuilder::new(&registered.join("|"))
            .size_limit(1 << 30)
            .build()
            .expect("registered values compile")
    });
    let mut findings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if let Some(found) = values.as_ref().and_then(|v| v.find(line)) {
            findings.push(format!(
                "line {}: a registered secret ({} bytes, starts {:?})",
                number + 1,
                found.len(),
                found.as_str().chars().take(3).collect::<String>()
            ));
        }
        for (source, pattern) in patterns() {
            if pattern.is_match(line) {
                findings.push(format!("line {}: matches {source}", number + 1));
            }
        }
    }
    findings
}

/// Panics if `text` (the output of `what`) leaks anything.
pub fn assert_clean(what: &str, text: &str) {
    let findings = scan(text);
    assert!(
        findings.is_empty(),
        "secrets leaked into {what}:\n{}",
        findings.join("\n")
    );
}
