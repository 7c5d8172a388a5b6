//! Human-written durations (`"30s"`, `"1m30s"`, `"250ms"`) and sizes
//! (`"1MiB"`, `"512KiB"`, `"10MB"`, `"4096"`).

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts, units
/// `ms`, `s`, `m`, `h`, `d`. A bare `0` is allowed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("is empty".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| "has a number without a unit (use ms, s, m, h or d)".to_string())?;
        if digits == 0 {
            return Err("must start with a number".into());
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("has a bad number `{}`", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" | "sec" => number,
            "m" | "min" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86400.0,
            other => {
                return Err(format!(
                    "has an unknown unit `{other}` (use ms, s, m, h or d)"
                ))
            }
        };
        total += Duration::try_from_secs_f64(seconds).map_err(|_| "is out of range".to_string())?;
    }
    Ok(total)
}

/// Parses a byte size: a number with an optional unit `B`, `KB`, `MB`, `GB`
/// (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    if split == 0 {
        return Err("must start with a number".into());
    }
    let number: f64 = s[..split]
        .parse()
        .map_err(|_| format!("has a bad number `{}`", &s[..split]))?;
    let multiplier: f64 = match s[split..].trim() {
        "" | "B" | "b" => 1.0,
        "K" | "KB" | "kB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "has an unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let bytes = number * multiplier;
    if !(0.0..=(u64::MAX as f64)).contains(&bytes) {
        return Err("is out of range".into());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1XB").is_err());
    }
}
