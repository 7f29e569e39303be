//! Time as the contract writes it: stored as milliseconds since the epoch
//! (portable across SQLite and PostgreSQL, cheap to compare), shown as
//! RFC 3339 UTC with milliseconds.

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_milliseconds_and_z() {
        assert_eq!(super::format_ms(1_736_937_000_000), "2025-01-15T10:30:00.000Z");
        assert_eq!(super::format_ms(1_736_937_000_042), "2025-01-15T10:30:00.042Z");
    }
}
