//! Text from outside (Docker's names, IDs, labels) made safe to put in a log line.

/// `text` with every control character (newlines, escapes, NUL, ...) and every Unicode line
/// separator or bidirectional control written as a Rust escape (`\n`, `\u{1b}`, `\u{202e}`),
/// so that a name cannot forge or hide log lines. Other text is returned unchanged.
pub fn printable(text: &str) -> String {
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }
    if !text.chars().any(hidden) {
        return text.to_string();
    }
    text.chars()
        .map(|c| match hidden(c) {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_line_separators_are_escaped() {
        assert_eq!(printable("agents"), "agents");
        assert_eq!(printable("näme-ü"), "näme-ü");
        assert_eq!(
            printable("a\nINFO forged\r\u{1b}[2J\0"),
            "a\\nINFO forged\\r\\u{1b}[2J\\u{0}"
        );
        assert_eq!(printable("x\u{2028}y\u{202e}z"), "x\\u{2028}y\\u{202e}z");
    }
}
