//! Reading cases from JSONL (and CSV): one bad line is reported with its number and reason and
//! never stops the rest.

use crate::text::{normalize, MAX_INPUT_CHARS};
use crate::Case;
use chrono::{NaiveDateTime, TimeZone};
use serde_json::{Map, Value};

/// A line that could not be turned into a case.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rejected {
    pub line: usize,
    pub reason: String,
}

const KNOWN: &[&str] = &[
    "id", "title", "text", "label", "unit", "district", "time", "reply",
];

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
    let text = string(&map, "text")?
        .map(|t| normalize(&t))
        .unwrap_or_default();
    if text.is_empty() && title.is_none() {
        return Err("empty \"text\" (and no \"title\")".into());
    }
    if text.chars().count() > MAX_INPUT_CHARS {
        return Err(format!(
            "\"text\" is longer than {MAX_INPUT_CHARS} characters"
        ));
    }
    let time = match string(&map, "time")? {
        None => None,
        Some(t) => Some(parse_time(&t).ok_or_else(|| format!("unreadable \"time\" {t:?}"))?),
    };
    let case = Case {
        id,
        // A title-only record (a call-taker's one-line summary) is classified on its title.
        text: if text.is_empty() {
            title.clone().unwrap_or_default()
        } else {
            text
        },
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
    for format in [
        "%Y/%m/%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y/%m/%d %H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return china
                .from_local_datetime(&t)
                .single()
                .map(|t| t.timestamp());
        }
    }
    for format in ["%Y/%m/%d", "%Y-%m-%d"] {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(text, format) {
            return china
                .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
                .single()
                .map(|t| t.timestamp());
        }
    }
    None
}

/// A CSV record: its line number and its fields by header name.
pub type CsvRow = (usize, Map<String, Value>);

/// Reads CSV with a header row into JSON-like maps (quoted fields, doubled quotes, embedded
/// newlines), so CSV exports go through the same checks as JSONL.
pub fn parse_csv(data: &str) -> Vec<Result<CsvRow, Rejected>> {
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
        assert!(parse_case_line("{not json")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse_case_line("[1]").unwrap_err().contains("JSON object"));
        assert!(parse_case_line(r#"{"text": "x"}"#)
            .unwrap_err()
            .contains("id"));
        assert!(parse_case_line(r#"{"id": "1", "text": "  "}"#)
            .unwrap_err()
            .contains("empty"));
        assert!(parse_case_line(r#"{"id": "1", "text": 5}"#)
            .unwrap_err()
            .contains("must be a string"));
        assert!(
            parse_case_line(r#"{"id": "1", "text": "a", "time": "yesterday"}"#)
                .unwrap_err()
                .contains("time")
        );
        let huge = format!(
            r#"{{"id": "1", "text": "{}"}}"#,
            "字".repeat(MAX_INPUT_CHARS + 1)
        );
        assert!(parse_case_line(&huge).unwrap_err().contains("longer than"));
    }

    #[test]
    fn title_only_records_use_the_title() {
        let c = parse_case_line(
            r#"{"id": "T1", "title": "G市医保报销问题", "label": "劳动和社会保障"}"#,
        )
        .unwrap();
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
        assert_eq!(
            (*line, second["text"].as_str().unwrap()),
            (3, "两行\n文本 \"引号\"")
        );
        assert_eq!(rows[2].as_ref().unwrap_err().line, 5);
    }
}

/// Counts of one import run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImportSummary {
    pub file: String,
    /// New cases.
    pub imported: usize,
    /// Cases whose id was already in the store (replaced).
    pub updated: usize,
    /// Lines skipped because an earlier, interrupted run had already stored them.
    pub resumed_from_line: usize,
    pub skipped: Vec<Rejected>,
}

/// Progress of an import, for a progress bar: bytes of the file read so far and in total.
#[derive(Debug, Clone, Copy)]
pub struct ImportProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub cases_done: usize,
}

/// Where an interrupted import of one file got to. Written after each acknowledged batch, so a
/// restart with the same file skips exactly the lines already stored.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    path: String,
    size: u64,
    modified: u64,
    line: usize,
    byte: u64,
    summary: ImportSummary,
}

/// Imports a file of cases through `Pipeline::import_cases` (embedded as passages in batches,
/// upserted by id, the unit named in a reply and the district named in the text filled in when
/// the record lacks them), with progress and a checkpoint after every batch.
pub struct Importer<'a> {
    pub pipeline: &'a crate::pipeline::Pipeline,
    /// Cases per embed + upsert round.
    pub batch_size: usize,
    /// Where checkpoints of interrupted imports are kept; `None` disables resuming.
    pub checkpoint_dir: Option<std::path::PathBuf>,
}

impl Importer<'_> {
    /// Imports one JSONL or CSV file (by extension).
    pub fn import_file(
        &self,
        path: &std::path::Path,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> crate::Result<ImportSummary> {
        use std::io::{BufRead, Seek};
        let io = |e| crate::Error::io(path, e);
        let meta = std::fs::metadata(path).map_err(io)?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let canonical = std::fs::canonicalize(path)
            .map_err(io)?
            .display()
            .to_string();
        let checkpoint_path = self
            .checkpoint_dir
            .as_ref()
            .map(|d| d.join(checkpoint_name(&canonical)));
        let mut checkpoint = checkpoint_path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok())
            .filter(|c| c.path == canonical && c.size == meta.len() && c.modified == modified)
            .unwrap_or(Checkpoint {
                path: canonical.clone(),
                size: meta.len(),
                modified,
                summary: ImportSummary {
                    file: path.display().to_string(),
                    ..Default::default()
                },
                ..Default::default()
            });
        checkpoint.summary.resumed_from_line = checkpoint.line;

        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let mut batch: Vec<(usize, Case)> = Vec::with_capacity(self.batch_size);
        let mut flush = |batch: &mut Vec<(usize, Case)>,
                         checkpoint: &mut Checkpoint,
                         line: usize,
                         byte: u64| {
            self.store_batch(batch, &mut checkpoint.summary)?;
            batch.clear();
            checkpoint.line = line;
            checkpoint.byte = byte;
            if let Some(p) = &checkpoint_path {
                let bytes = serde_json::to_vec(&checkpoint).expect("checkpoint serialises");
                crate::fsutil::write_atomic(p, &bytes)?;
            }
            progress(ImportProgress {
                bytes_done: byte,
                bytes_total: meta.len(),
                cases_done: checkpoint.summary.imported + checkpoint.summary.updated,
            });
            crate::Result::Ok(())
        };

        if is_csv {
            let raw = std::fs::read(path).map_err(io)?;
            let data = String::from_utf8(raw).map_err(|e| {
                crate::Error::InvalidInput(format!("{} is not UTF-8 ({e})", path.display()))
            })?;
            for row in parse_csv(&data) {
                match row.and_then(|(line, map)| {
                    case_from_map(map)
                        .map(|c| (line, c))
                        .map_err(|reason| Rejected { line, reason })
                }) {
                    Ok((line, case)) if line > checkpoint.line => batch.push((line, case)),
                    Ok(_) => {}
                    Err(rejected) if rejected.line > checkpoint.line => {
                        checkpoint.summary.skipped.push(rejected)
                    }
                    Err(_) => {}
                }
                if batch.len() >= self.batch_size {
                    let line = batch.last().map_or(0, |b| b.0);
                    flush(&mut batch, &mut checkpoint, line, 0)?;
                }
            }
            let line = batch.last().map_or(checkpoint.line, |b| b.0);
            flush(&mut batch, &mut checkpoint, line, meta.len())?;
        } else {
            let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
            reader
                .seek(std::io::SeekFrom::Start(checkpoint.byte))
                .map_err(io)?;
            let (mut line, mut byte) = (checkpoint.line, checkpoint.byte);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                line += 1;
                byte += n as u64;
                let parsed = std::str::from_utf8(&buf)
                    .map_err(|e| format!("not UTF-8 ({e})"))
                    .map(|s| s.trim().trim_start_matches('\u{feff}'));
                match parsed {
                    Ok("") => {}
                    Ok(text) => match parse_case_line(text) {
                        Ok(case) => batch.push((line, case)),
                        Err(reason) => checkpoint.summary.skipped.push(Rejected { line, reason }),
                    },
                    Err(reason) => checkpoint.summary.skipped.push(Rejected { line, reason }),
                }
                if batch.len() >= self.batch_size {
                    flush(&mut batch, &mut checkpoint, line, byte)?;
                }
            }
            flush(&mut batch, &mut checkpoint, line, byte)?;
        }
        if let Some(p) = &checkpoint_path {
            // Finished: the next import of this file starts afresh (and changes nothing).
            let _ = std::fs::remove_file(p);
        }
        Ok(checkpoint.summary)
    }

    fn store_batch(
        &self,
        batch: &[(usize, Case)],
        summary: &mut ImportSummary,
    ) -> crate::Result<()> {
        let stored = self
            .pipeline
            .import_cases(batch.iter().map(|(_, c)| c.clone()).collect())?;
        summary.imported += stored.new;
        summary.updated += stored.updated;
        Ok(())
    }
}

/// Fills in what a record lacks and the directory can tell: the unit its reply names as handling
/// it (the first handler `reply_units` finds; none when no reply names one with confidence) and
/// the district its text names.
pub fn enrich(
    case: &mut Case,
    units: &crate::units::UnitDirectory,
    aliases: &crate::reply_units::UnitAliases,
) {
    if case.unit.is_none() {
        if let Some(reply) = case.reply.as_deref() {
            let named = crate::reply_units::extract_units(reply, &case.full_text(), units, aliases);
            case.unit = crate::reply_units::handlers(&named)
                .next()
                .map(|u| u.id.clone());
        }
    }
    if case.district.is_none() {
        case.district = units
            .extract_district(&case.full_text())
            .map(|d| d.name.clone());
    }
}

fn checkpoint_name(canonical: &str) -> String {
    // A stable, file-system-safe name for the path.
    format!("import-{:016x}.json", crate::text::stable_hash(canonical))
}
