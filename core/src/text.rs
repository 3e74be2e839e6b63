//! Text normalisation applied to every complaint before it is embedded, classified or stored.

/// Longest text (in characters) the pipeline accepts from one request; longer input is an error,
/// not a silent cut, so a caller learns about it.
pub const MAX_INPUT_CHARS: usize = 20_000;

/// Folds full-width letters and digits (Ａ１) and the ideographic space to their half-width forms,
/// collapses runs of whitespace to one space (keeping single newlines as paragraph marks) and trims.
/// Full-width punctuation such as `，。！` is kept: it is how Chinese is written.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let mut pending_newline = false;
    for ch in text.chars() {
        let ch = fold_width(ch);
        if ch.is_whitespace() || ch.is_control() {
            if ch == '\n' {
                pending_newline = true;
            } else {
                pending_space = true;
            }
            continue;
        }
        if !out.is_empty() {
            if pending_newline {
                out.push('\n');
            } else if pending_space {
                out.push(' ');
            }
        }
        pending_space = false;
        pending_newline = false;
        out.push(ch);
    }
    out
}

fn fold_width(ch: char) -> char {
    match ch {
        '\u{3000}' => ' ',
        '０'..='９' | 'Ａ'..='Ｚ' | 'ａ'..='ｚ' => {
            char::from_u32(ch as u32 - 0xFEE0).unwrap_or(ch)
        }
        _ => ch,
    }
}

/// `text` for comparison: full-width letters and digits folded, whitespace dropped. Each kept
/// character maps to one character, so "２０１９年" and "2019 年" compare equal.
pub fn fold(text: &str) -> String {
    text.chars()
        .map(fold_width)
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// The first `max_chars` characters of `text` (on a character boundary).
pub fn truncate_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// `text` inside a Markdown table cell: a `|` would end the cell and a line break the row, so
/// the one is escaped and the other written as `<br>`. Every report's tables go through here.
pub fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace(['\n', '\r'], "<br>")
}

/// The word segmenter with its bundled dictionary, loaded once per process (~0.2 s) and shared
/// by the lexical classifier and the place extractor.
pub fn jieba() -> &'static jieba_rs::Jieba {
    static JIEBA: std::sync::OnceLock<jieba_rs::Jieba> = std::sync::OnceLock::new();
    JIEBA.get_or_init(jieba_rs::Jieba::new)
}

/// FNV-1a of a string: the same number on every machine, run and Rust version (std's hasher is
/// randomly seeded), for shard assignment and file names.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A random 128-bit id in hex, for cases and requests that arrive without one.
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_full_width_and_whitespace() {
        assert_eq!(
            normalize("  Ａ市１２３　路 \t 灯\r\n\n坏了！ "),
            "A市123 路 灯\n坏了！"
        );
    }

    #[test]
    fn a_markdown_cell_keeps_its_row_whole() {
        assert_eq!(markdown_cell("A|B\r\nC\nD"), "A\\|B<br>C<br>D");
    }

    #[test]
    fn keeps_cjk_punctuation() {
        assert_eq!(normalize("你好，世界。"), "你好，世界。");
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate_chars("路灯坏了", 2), "路灯");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }
}
