//! Reading cases from JSONL (and CSV): one bad line is reported with its number and reason and
//! never stops the rest.

use crate::text::{normalize, MAX_INPUT_CHARS};
use crate::Case;
use chrono::{NaiveDateTime, TimeZone};
use serde_json::{Map, Value};

/// A line that could not be turned into a case.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rejected {
    pub line: usize,
    pub reason: String,
}

const KNOWN: &[&str] = &["id", "title", "text", "label", "unit", "district", "time", "reply"];

/// Parses one JSONL line into a case with normalised text.
pub fn parse_case_line(line: &str) -> Result<Case, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object".into());
    };
    case_from_map(map)
}

pub fn case_from_map(mut map: Map<String, Value>) -> Result<Case, String> {
    let id = match map.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("missing \"id\" (a non-empty string)".into()),
    };
    let string = |map: &Map<String, Value>, key: &str| -> Result<Option<String>, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("\"{key}\" must be a string, got {other}")),
        }
    };
    let title = string(&map, "title")?.map(|t| normalize(&t));
    let text = string(&map, "text")?.map(|t| normalize(&t)).unwrap_or_default();
    if text.is_empty() && title.is_none() {
        return Err("empty \"text\" (and no \"title\")".into());
    }
    if text.chars().count() > MAX_INPUT_CHARS {
        return Err(format!("\"text\" is longer than {MAX_INPUT_CHARS} characters"));
    }
    let time = match string(&map, "time")? {
        None => None,
        Some(t) => Some(parse_time(&t).ok_or_else(|| format!("unreadable \"time\" {t:?}"))?),
    };
    let case = Case {
        id,
        // A title-only record (a call-taker's one-line summary) is classified on its title.
        text: if text.is_empty() { title.clone().unwrap_or_default() } else { text },
        title,
        label: string(&map, "label")?,
        unit: string(&map, "unit")?,
        district: string(&map, "district")?,
        time,
        reply: string(&map, "reply")?.map(|r| normalize(&r)),
        predicted: None,
        extra: Map::new(),
    };
    for key in KNOWN {
        map.remove(*key);
    }
    map.remove("predicted");
    Ok(Case { extra: map, ..case })
}

/// RFC 3339, or the `YYYY/M/D H:MM:SS` and `YYYY-MM-DD HH:MM:SS` forms of hotline exports
/// (taken as UTC+8, China Standard Time, when no offset is given), or a bare date.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp());
    }
    let china = chrono::FixedOffset::east_opt(8 * 3600)?;
    for format in ["%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return china.from_local_datetime(&t).single().map(|t| t.timestamp());
        }
    }
    for format in ["%Y/%m/%d", "%Y-%m-%d"] {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(text, format) {
            return china.from_local_datetime(&d.and_hms_opt(0, 0, 0)?).single().map(|t| t.timestamp());
        }
    }
    None
}

/// Reads CSV with a header row into JSON-like maps (quoted fields, doubled quotes, embedded
/// newlines), so CSV exports go through the same checks as JSONL.
pub fn parse_csv(data: &str) -> Vec<Result<(usize, Map<String, Value>), Rejected>> {
    let records = csv_records(data);
    let Some((_, header)) = records.first() else {
        return Vec::new();
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    records[1..]
        .iter()
        .map(|(line, fields)| {
            if fields.len() != header.len() {
                return Err(Rejected {
                    line: *line,
                    reason: format!("{} fields, header has {}", fields.len(), header.len()),
                });
            }
            let map = header
                .iter()
                .zip(fields)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            Ok((*line, map))
        })
        .collect()
}

fn csv_records(data: &str) -> Vec<(usize, Vec<String>)> {
    let mut records = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut line, mut start_line) = (false, 1usize, 1usize);
    let mut chars = data.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    records.push((start_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start_line = line;
            }
            (c, _) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
        }
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((start_line, fields));
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_line_and_keeps_unknown_fields() {
        let c = parse_case_line(
            r#"{"id": 7, "title": "路灯", "text": "Ａ２区　路灯坏了", "label": "城乡建设", "time": "2019/4/25 9:32:09", "likes": 3}"#,
        )
        .unwrap();
        assert_eq!(c.id, "7");
        assert_eq!(c.text, "A2区 路灯坏了");
        assert_eq!(c.time, Some(1556155929));
        assert_eq!(c.extra["likes"], 3);
    }

    #[test]
    fn reports_bad_lines() {
        assert!(parse_case_line("{not json").unwrap_err().contains("not valid JSON"));
        assert!(parse_case_line("[1]").unwrap_err().contains("JSON object"));
        assert!(parse_case_line(r#"{"text": "x"}"#).unwrap_err().contains("id"));
        assert!(parse_case_line(r#"{"id": "1", "text": "  "}"#).unwrap_err().contains("empty"));
        assert!(parse_case_line(r#"{"id": "1", "text": 5}"#).unwrap_err().contains("must be a string"));
        assert!(parse_case_line(r#"{"id": "1", "text": "a", "time": "yesterday"}"#).unwrap_err().contains("time"));
        let huge = format!(r#"{{"id": "1", "text": "{}"}}"#, "字".repeat(MAX_INPUT_CHARS + 1));
        assert!(parse_case_line(&huge).unwrap_err().contains("longer than"));
    }

    #[test]
    fn title_only_records_use_the_title() {
        let c = parse_case_line(r#"{"id": "T1", "title": "G市医保报销问题", "label": "劳动和社会保障"}"#).unwrap();
        assert_eq!(c.text, "G市医保报销问题");
        assert_eq!(c.full_text(), "G市医保报销问题");
    }

    #[test]
    fn parses_times() {
        assert_eq!(parse_time("2019-04-25T01:32:09Z"), Some(1556155929));
        assert_eq!(parse_time("2019-04-25 09:32:09"), Some(1556155929));
        assert!(parse_time("2019/4/25").is_some());
    }

    #[test]
    fn reads_csv_with_quotes_and_newlines() {
        let rows = parse_csv("id,text,label\n1,\"路灯,坏了\",城乡建设\n2,\"两行\n文本 \"\"引号\"\"\",教育文体\n3,bad\n");
        let (line, first) = rows[0].as_ref().unwrap();
        assert_eq!((*line, first["text"].as_str().unwrap()), (2, "路灯,坏了"));
        let (line, second) = rows[1].as_ref().unwrap();
        assert_eq!((*line, second["text"].as_str().unwrap()), (3, "两行\n文本 \"引号\""));
        assert_eq!(rows[2].as_ref().unwrap_err().line, 5);
    }
}
