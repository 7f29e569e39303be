//! What clients send, read as the Node peer reads it.

use serde_json::Value;

/// Longest message, in UTF-16 code units (JavaScript's `length`).
const MAX_CONTENT: usize = 2000;

/// A message's content: a string, trimmed, not empty, at most 2000 units.
pub fn message_content(content: Option<&Value>) -> Option<&str> {
    let content = content?.as_str()?.trim();
    (!content.is_empty() && content.encode_utf16().count() <= MAX_CONTENT).then_some(content)
}

/// JavaScript's `!!value`.
pub fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// `?limit=`: a leading integer as `parseInt` reads it, 20 when there is
/// none (or it is 0), then clamped to 1…100.
pub fn page_limit(limit: Option<&str>) -> u32 {
    let text = limit.unwrap_or("").trim_start();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let digits: String = digits.chars().take_while(char::is_ascii_digit).collect();
    match digits.parse::<u64>() {
        Ok(0) | Err(_) if digits.chars().all(|c| c == '0') => 20,
        Ok(_) if negative => 1,
        Ok(n) => n.clamp(1, 100) as u32,
        // More digits than a u64 holds.
        Err(_) => {
            if negative {
                1
            } else {
                100
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_is_trimmed_and_bounded() {
        assert_eq!(message_content(Some(&json!("  hi  "))), Some("hi"));
        assert_eq!(message_content(Some(&json!("   "))), None);
        assert_eq!(message_content(Some(&json!(7))), None);
        assert_eq!(message_content(None), None);
        assert!(message_content(Some(&json!("a".repeat(2000)))).is_some());
        assert_eq!(message_content(Some(&json!("a".repeat(2001)))), None);
        // 1000 characters outside the BMP are 2000 UTF-16 units.
        assert!(message_content(Some(&json!("😀".repeat(1000)))).is_some());
        assert_eq!(message_content(Some(&json!("😀".repeat(1001)))), None);
    }

    #[test]
    fn truthiness_is_javascripts() {
        for v in [json!(true), json!(1), json!("x"), json!([]), json!({})] {
            assert!(truthy(Some(&v)), "{v}");
        }
        for v in [json!(false), json!(0), json!(""), json!(null)] {
            assert!(!truthy(Some(&v)), "{v}");
        }
        assert!(!truthy(None));
    }

    #[test]
    fn page_limits_read_like_parse_int_and_are_clamped() {
        assert_eq!(page_limit(None), 20);
        assert_eq!(page_limit(Some("abc")), 20);
        assert_eq!(page_limit(Some("0")), 20);
        assert_eq!(page_limit(Some("5")), 5);
        assert_eq!(page_limit(Some("5x")), 5);
        assert_eq!(page_limit(Some("500")), 100);
        assert_eq!(page_limit(Some("-3")), 1);
        assert_eq!(page_limit(Some("99999999999999999999999")), 100);
    }
}
