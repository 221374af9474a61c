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

/// Marks `value` as something that must never appear in provider output.
pub fn register(value: &str) {
    if value.len() >= MIN_SCANNED_LEN {
        REGISTERED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(value.to_owned());
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
        .cloned()
        .collect();
    let mut findings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for value in &registered {
            if line.contains(value.as_str()) {
                findings.push(format!(
                    "line {}: a registered secret ({} bytes, starts {:?})",
                    number + 1,
                    value.len(),
                    value.chars().take(3).collect::<String>()
                ));
            }
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
