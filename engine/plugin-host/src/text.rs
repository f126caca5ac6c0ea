//! Text a plugin controls (import names, error messages, deny reasons, its log), made safe
//! to print and to store: capped in length, with control and invisible characters
//! escaped, so a name or a reason reads on a terminal, in a log line or in a CSV export
//! exactly as its bytes say.

/// `text` with every control, format (zero-width, bidirectional) or non-space whitespace
/// character written as `\u{..}`, cut at a character boundary to at most `max` bytes of
/// the original, with ` [... N bytes cut]` when it was cut.
#[must_use]
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut used = 0;
    for c in text.chars() {
        if used + c.len_utf8() > max {
            let cut = text.len() - used;
            out.push_str(&format!(" [... {cut} bytes cut]"));
            return out;
        }
        used += c.len_utf8();
        if is_invisible(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `text` needs no escaping and fits in `max` bytes (the usual case, checked
/// without allocating).
#[must_use]
pub(crate) fn is_printable(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(is_invisible)
}

/// Control characters, whitespace other than the space, and the format characters that
/// change how text around them reads (zero-width, bidirectional overrides, tags).
fn is_invisible(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(u32::from(c),
            0x00ad | 0x034f | 0x061c | 0x115f | 0x1160 | 0x17b4 | 0x17b5 | 0x180b..=0x180f
            | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f | 0x3164 | 0xfe00..=0xfe0f
            | 0xfeff | 0xffa0 | 0xfff0..=0xfffb | 0x1d173..=0x1d17a | 0xe0000..=0xe0fff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_cuts() {
        // (input, max, expected)
        let cases = [
            ("plain", 64, "plain"),
            ("a\nb\tc", 64, "a\\u{a}b\\u{9}c"),
            ("log\u{202e}gol", 64, "log\\u{202e}gol"),
            ("zero\u{200b}width", 64, "zero\\u{200b}width"),
            ("\u{1b}[31mred", 64, "\\u{1b}[31mred"),
            ("abcdef", 3, "abc [... 3 bytes cut]"),
            ("ééé", 3, "é [... 4 bytes cut]"),
            ("", 0, ""),
        ];
        for (input, max, expected) in cases {
            assert_eq!(printable(input, max), expected, "{input:?}");
            assert_eq!(is_printable(input, max), input == expected, "{input:?}");
        }
    }
}
