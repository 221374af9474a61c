//! Go-compatible parsing of the values the Go provider reads with Go's standard library:
//! booleans as `strconv.ParseBool` and durations as `time.ParseDuration`. SecretProviderClass
//! parameters, object fields and flags all use them, so they sit below every other module.

use std::time::Duration;

/// Parses a boolean the way Go's `strconv.ParseBool` does.
pub fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!(
            "\"{other}\" is not a boolean (use true/false, 1/0, t/f)"
        )),
    }
}

/// Parses a Go duration such as `5s`, `500ms`, `1m30s` or `2h`.
pub fn parse_go_duration(value: &str) -> Result<Duration, String> {
    let invalid = || format!("\"{value}\" is not a duration (examples: 5s, 500ms, 1m30s)");
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * scale).map_err(|_| invalid())?;
    }
    Ok(total)
}
