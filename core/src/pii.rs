//! Masking of personal data before text is logged or shown as another case's evidence.

use regex::Regex;
use std::sync::LazyLock;

// Order matters: ID numbers (18 chars) before mobiles (11 digits) before landlines, so a longer
// match is not half-masked by a shorter pattern. Digit-boundary lookarounds are not in `regex`,
// so each pattern carries its own non-digit guards as groups.
static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    vec![
        // Mainland resident ID: 6-digit area, birth date 18xx–20xx, 3-digit sequence, checksum digit or X.
        (
            Regex::new(r"(^|[^0-9])([1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx])($|[^0-9])")
                .unwrap(),
            "[身份证号]",
        ),
        // E-mail addresses.
        (
            Regex::new(r"(^|[^A-Za-z0-9._%+-])([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})()").unwrap(),
            "[邮箱]",
        ),
        // Mobile numbers, optionally with +86 / 86 and separators: 138 1234 5678, 138-1234-5678.
        (
            Regex::new(r"(^|[^0-9])((?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4})($|[^0-9])").unwrap(),
            "[手机号]",
        ),
        // Landlines: area code 0xx/0xxx with a separator or parentheses, then 7–8 digits (extension optional).
        (
            Regex::new(r"(^|[^0-9])((?:\(0\d{2,3}\)|（0\d{2,3}）|0\d{2,3}[- ])\d{7,8}(?:-\d{1,4})?)($|[^0-9])")
                .unwrap(),
            "[电话]",
        ),
        // Bare 7–8 digit local numbers after a phone keyword (电话/热线/tel).
        (
            Regex::new(r"((?:电话|热线|联系方式|手机|Tel|tel|TEL)[:：]?\s*)(\d{7,8})($|[^0-9])").unwrap(),
            "[电话]",
        ),
    ]
});

/// Replaces phone numbers, ID numbers and e-mail addresses with placeholders.
pub fn mask(text: &str) -> String {
    let mut out = text.to_string();
    for (pattern, placeholder) in PATTERNS.iter() {
        // Loop because the guard characters are consumed: "138…,139…" needs a second pass.
        loop {
            let next = pattern.replace_all(&out, |c: &regex::Captures| {
                format!("{}{}{}", &c[1], placeholder, &c[3])
            });
            if next == out {
                break;
            }
            out = next.into_owned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_mobiles() {
        assert_eq!(mask("电话13812345678，谢谢"), "电话[手机号]，谢谢");
        assert_eq!(mask("call +86 138-1234-5678 now"), "call [手机号] now");
        assert_eq!(mask("13812345678,13912345678"), "[手机号],[手机号]");
    }

    #[test]
    fn masks_id_numbers() {
        assert_eq!(mask("身份证430102199003071234号"), "身份证[身份证号]号");
        assert_eq!(mask("ID 43010219900307123X."), "ID [身份证号].");
    }

    #[test]
    fn masks_landlines_and_email() {
        assert_eq!(mask("请拨0731-88889999转"), "请拨[电话]转");
        assert_eq!(mask("（0731）88889999"), "[电话]");
        assert_eq!(mask("热线：12345678。"), "热线：[电话]。");
        assert_eq!(mask("写信到 a.b@example.com 吧"), "写信到 [邮箱] 吧");
    }

    #[test]
    fn leaves_ordinary_numbers() {
        let text = "2019年4月25日，3800元，房号1203，投诉编号 20190425";
        assert_eq!(mask(text), text);
    }
}
