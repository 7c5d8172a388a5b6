//! Text from elsewhere (a remote server, a request header) made safe to
//! put into our own messages and logs.

/// Keeps text printable (control characters become spaces) and at most
/// `max` characters long (`…` marks a cut).
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn control_characters_and_length() {
        assert_eq!(sanitize("a\r\nb", 10), "a  b");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        assert_eq!(sanitize("abc", 3), "abc");
    }
}
