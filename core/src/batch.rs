//! Batch reclassification: many complaints through the pipeline, streamed in and written out in
//! input order, one output line per input line.
//!
//! Resumable: after every chunk the output and the errors file are synced and then a checkpoint
//! (`OUT.checkpoint`) records how much input was consumed and how long both files were. A restarted
//! job truncates them to those lengths and goes on, so a crash at any point neither duplicates nor
//! drops a line. Bad input lines get an `{"line", "error"}` record in the output and in
//! `OUT.errors.jsonl`, and the job goes on.

use crate::pipeline::{Analysis, Complaint, Pipeline, Suggestion};
use crate::reply::Draft;
use crate::{fsutil, ingest, pii, text, Case, CaseFilter, Error, Pages, Prediction, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the complaints come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A JSONL file of cases (DESIGN.md's format; `id` and `text` required).
    File(PathBuf),
    /// The stored cases matching a filter.
    Store(CaseFilter),
}

/// What happens to the stored cases' `predicted` field (never to their human `label`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteBack {
    #[default]
    Off,
    /// Count what would change (the change matrix) without writing.
    DryRun,
    Apply,
}

/// This process's part of a job split over several: items `i` with `i % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl WriteBack {
    /// From the two switches of the CLI and the API (`dry_run` alone means nothing).
    pub fn from_flags(write_back: bool, dry_run: bool) -> Self {
        match (write_back, dry_run) {
            (false, _) => Self::Off,
            (true, true) => Self::DryRun,
            (true, false) => Self::Apply,
        }
    }
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `i/n`, 0-based: `0/2` and `1/2` split a job in two.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or("a shard is written i/n, e.g. 0/2")?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("bad shard index {i:?}"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("bad shard count {n:?}"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= i < n"));
        }
        Ok(Self { index, count })
    }
}

/// A batch job. The same spec resumes the same job; a different one is refused on its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSpec {
    pub source: Source,
    pub output: PathBuf,
    /// Lexical classifier only: no embedding, no similar cases, no duplicate flag.
    pub fast: bool,
    /// Reply drafts (slow: the LLM writes one per complaint).
    pub draft: bool,
    pub write_back: WriteBack,
    pub shard: Shard,
    /// Complaints per chunk: embedded together, then checkpointed.
    pub chunk: usize,
}

/// Running totals, kept in the checkpoint so a resumed job reports the whole job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Input lines (or stored cases) read, this shard's and others'.
    pub consumed: u64,
    pub classified: u64,
    pub errors: u64,
    pub abstained: u64,
    pub duplicates: u64,
    /// Stored cases whose prediction was (or, in a dry run, would be) written.
    pub written_back: u64,
    /// Old predicted category (`-` for none) → new → how many.
    pub changes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Wall seconds per stage: read, embed, analyze (search + classify + units), draft, write.
    pub stage_seconds: BTreeMap<String, f64>,
    /// CPU seconds per step of the analyze stage (search, classify, units, work_order): each
    /// suggestion's `timings_ms`, summed. Items are analysed in parallel, so these add up to
    /// about the threads times the stage's wall seconds.
    #[serde(default)]
    pub analysis_cpu_seconds: BTreeMap<String, f64>,
}

impl Counts {
    /// How many stored cases would get (or got) a different predicted category.
    pub fn changed(&self) -> u64 {
        self.changes
            .iter()
            .flat_map(|(old, row)| row.iter().filter(move |(new, _)| *new != old))
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    spec: BatchSpec,
    classifier_version: String,
    /// The store's scroll cursor after the last chunk (store source).
    cursor: Option<String>,
    output_bytes: u64,
    errors_bytes: u64,
    counts: Counts,
    /// Seconds spent in earlier runs of this job.
    seconds: f64,
    done: bool,
}

/// What a job did, for the summary line and `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub counts: Counts,
    /// Input items in total when known (lines of the file, stored cases matching the filter).
    pub total: Option<u64>,
    /// Where this run started (0 unless resumed).
    pub resumed_at: u64,
    pub seconds: f64,
    /// Classified per second over the whole job.
    pub rate: f64,
    pub done: bool,
    pub output: PathBuf,
    pub errors_file: PathBuf,
}

/// The checkpoint and the errors file live beside the output.
pub fn checkpoint_path(output: &Path) -> PathBuf {
    sibling(output, "checkpoint")
}

pub fn errors_path(output: &Path) -> PathBuf {
    sibling(output, "errors.jsonl")
}

fn sibling(output: &Path, suffix: &str) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    output.with_file_name(name)
}

/// One item of a chunk: where it came from and what it became.
struct Item {
    line: u64,
    /// The case, with its stored vector when it comes from the store; or why the line is bad.
    case: std::result::Result<(Case, Option<Vec<f32>>), String>,
    /// The head of a bad line, masked, for the errors file.
    bad_input: Option<String>,
}

/// One classified item of a chunk, as [`run_observed`]'s observer sees it.
pub struct Served<'a> {
    /// The input line (or, from the store, the position in the scan), 1-based.
    pub line: u64,
    pub case: &'a Case,
    pub suggestion: &'a Suggestion,
    pub draft: Option<&'a Draft>,
}

/// Runs (or resumes) a job. `between_chunks` is called with the progress before every chunk; a
/// caller may block in it (the server yields to interactive requests there) or return `false`
/// to stop (the job stays resumable).
pub fn run(
    pipeline: &Pipeline,
    spec: &BatchSpec,
    between_chunks: &mut dyn FnMut(&Summary) -> bool,
) -> Result<Summary> {
    run_observed(pipeline, spec, between_chunks, &mut |_| Ok(()))
}

/// [`run`], with `on_chunk` shown every classified item of a chunk before any of the chunk is
/// written (output, write-back, checkpoint): the server's audit trail records a job's
/// suggestions there. An error from it stops the job with nothing of that chunk served; the job
/// resumes from that chunk.
pub fn run_observed(
    pipeline: &Pipeline,
    spec: &BatchSpec,
    between_chunks: &mut dyn FnMut(&Summary) -> bool,
    on_chunk: &mut dyn FnMut(&[Served]) -> Result<()>,
) -> Result<Summary> {
    let classifier = pipeline.require_classifier()?;
    if spec.write_back != WriteBack::Off && !matches!(spec.source, Source::Store(_)) {
        return Err(Error::InvalidInput(
            "write-back reclassifies stored cases: use the store as the input".into(),
        ));
    }
    if spec.draft && (spec.fast || !pipeline.can_draft()) {
        return Err(Error::InvalidInput(
            "drafts need the LLM and the full pipeline (not --fast)".into(),
        ));
    }
    let started = Instant::now();
    let mut state = open(spec, &classifier.version)?;
    let resumed_at = state.checkpoint.counts.consumed;
    let total = match &spec.source {
        Source::File(path) => Some(count_lines(path)?),
        Source::Store(filter) => Some(pipeline.count_cases(filter)? as u64),
    };
    let summary = |state: &State| {
        let seconds = state.seconds_before + started.elapsed().as_secs_f64();
        Summary {
            counts: state.checkpoint.counts.clone(),
            total,
            resumed_at,
            seconds,
            rate: state.checkpoint.counts.classified as f64 / seconds.max(1e-9),
            done: state.checkpoint.done,
            output: spec.output.clone(),
            errors_file: errors_path(&spec.output),
        }
    };
    if state.checkpoint.done {
        return Ok(summary(&state));
    }
    let chunk = spec.chunk.max(1);
    let mut input = match &spec.source {
        Source::File(path) => Input::File(open_input(path, resumed_at)?),
        // An empty cursor marks a finished scan (a missing one: not started).
        Source::Store(filter) => Input::Store(pipeline.cases(
            filter,
            state.checkpoint.cursor.clone().filter(|c| !c.is_empty()),
            chunk,
        )),
    };
    loop {
        if !between_chunks(&summary(&state)) {
            break;
        }
        let clock = Instant::now();
        let items = match &mut input {
            Input::File(reader) => read_lines(reader, &mut state.checkpoint, spec, chunk)?,
            Input::Store(pages) => read_store(pages, &mut state.checkpoint, spec)?,
        };
        add_seconds(&mut state.checkpoint.counts, "read", clock);
        let Some(items) = items else {
            state.checkpoint.done = true;
            state.save(started)?;
            break;
        };
        process(pipeline, spec, items, &mut state, on_chunk)?;
        state.save(started)?;
    }
    Ok(summary(&state))
}

/// Open output, errors file and checkpoint: fresh, or truncated back to the last checkpoint.
struct State {
    output: File,
    errors: File,
    checkpoint: Checkpoint,
    checkpoint_path: PathBuf,
    seconds_before: f64,
}

impl State {
    /// Syncs both files, then records their lengths: the order that makes a crash harmless.
    fn save(&mut self, started: Instant) -> Result<()> {
        let output = &self.checkpoint.spec.output;
        self.output.sync_data().map_err(|e| Error::io(output, e))?;
        self.errors.sync_data().map_err(|e| Error::io(output, e))?;
        self.checkpoint.output_bytes = self
            .output
            .stream_position()
            .map_err(|e| Error::io(output, e))?;
        self.checkpoint.errors_bytes = self
            .errors
            .stream_position()
            .map_err(|e| Error::io(output, e))?;
        self.checkpoint.seconds = self.seconds_before + started.elapsed().as_secs_f64();
        let bytes = serde_json::to_vec_pretty(&self.checkpoint).expect("checkpoint serialises");
        fsutil::write_atomic(&self.checkpoint_path, &bytes)
    }
}

fn open(spec: &BatchSpec, classifier_version: &str) -> Result<State> {
    let checkpoint_path = checkpoint_path(&spec.output);
    let errors_path = errors_path(&spec.output);
    let open_rw = |path: &Path, truncate: bool| {
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(truncate)
            .open(path)
            .map_err(|e| Error::io(path, e))
    };
    let checkpoint = match std::fs::read(&checkpoint_path) {
        Ok(bytes) => {
            let c: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
                Error::InvalidInput(format!(
                    "unreadable checkpoint {}: {e}",
                    checkpoint_path.display()
                ))
            })?;
            if c.spec != *spec {
                return Err(Error::InvalidInput(format!(
                    "{} belongs to a different job ({}); choose another output or delete it and its checkpoint",
                    spec.output.display(),
                    serde_json::to_string(&c.spec).unwrap_or_default()
                )));
            }
            if c.classifier_version != classifier_version {
                return Err(Error::InvalidInput(format!(
                    "the job started with classifier {} but {} is loaded; finish it with that classifier or start a new output",
                    c.classifier_version, classifier_version
                )));
            }
            Some(c)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&checkpoint_path, e)),
    };
    let Some(checkpoint) = checkpoint else {
        if std::fs::metadata(&spec.output).is_ok_and(|m| m.len() > 0) {
            return Err(Error::InvalidInput(format!(
                "{} exists and has no checkpoint: refusing to overwrite it",
                spec.output.display()
            )));
        }
        return Ok(State {
            output: open_rw(&spec.output, true)?,
            errors: open_rw(&errors_path, true)?,
            checkpoint: Checkpoint {
                spec: spec.clone(),
                classifier_version: classifier_version.to_string(),
                cursor: None,
                output_bytes: 0,
                errors_bytes: 0,
                counts: Counts::default(),
                seconds: 0.0,
                done: false,
            },
            checkpoint_path,
            seconds_before: 0.0,
        });
    };
    // Anything written after the last checkpoint is written again: cut it off.
    let mut output = open_rw(&spec.output, false)?;
    let mut errors = open_rw(&errors_path, false)?;
    for (file, len, path) in [
        (&mut output, checkpoint.output_bytes, &spec.output),
        (&mut errors, checkpoint.errors_bytes, &errors_path),
    ] {
        file.set_len(len)
            .and_then(|_| file.seek(SeekFrom::Start(len)).map(|_| ()))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(State {
        output,
        errors,
        seconds_before: checkpoint.seconds,
        checkpoint,
        checkpoint_path,
    })
}

fn count_lines(path: &Path) -> Result<u64> {
    let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut lines = 0;
    loop {
        let buf = reader.fill_buf().map_err(|e| Error::io(path, e))?;
        if buf.is_empty() {
            return Ok(lines);
        }
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        let ends_open = buf[n - 1] != b'\n';
        reader.consume(n);
        if ends_open
            && reader
                .fill_buf()
                .map_err(|e| Error::io(path, e))?
                .is_empty()
        {
            return Ok(lines + 1);
        }
    }
}

/// The input, positioned after the first `skip` lines.
fn open_input(path: &Path, skip: u64) -> Result<(BufReader<File>, PathBuf)> {
    let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut line = Vec::new();
    for _ in 0..skip {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(path, e))?
            == 0
        {
            break;
        }
    }
    Ok((reader, path.to_path_buf()))
}

/// The next `chunk` lines of this shard; `None` at the end of the input.
fn read_lines(
    input: &mut (BufReader<File>, PathBuf),
    checkpoint: &mut Checkpoint,
    spec: &BatchSpec,
    chunk: usize,
) -> Result<Option<Vec<Item>>> {
    let (reader, path) = (&mut input.0, &input.1);
    let mut items = Vec::new();
    let mut raw = Vec::new();
    while items.len() < chunk {
        raw.clear();
        if reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| Error::io(path, e))?
            == 0
        {
            break;
        }
        let index = checkpoint.counts.consumed;
        checkpoint.counts.consumed += 1;
        if index % spec.shard.count as u64 != spec.shard.index as u64 {
            continue;
        }
        let line = index + 1;
        let case = match std::str::from_utf8(&raw) {
            Err(e) => Err(format!("not UTF-8 (byte {})", e.valid_up_to())),
            Ok(s) if s.trim().is_empty() => Err("empty line".to_string()),
            Ok(s) => ingest::parse_case_line(s.trim_start_matches('\u{feff}')).map(|c| (c, None)),
        };
        let bad_input = case.is_err().then(|| {
            pii::mask(text::truncate_chars(
                String::from_utf8_lossy(&raw).trim_end(),
                200,
            ))
        });
        items.push(Item {
            line,
            case,
            bad_input,
        });
    }
    Ok((!items.is_empty()).then_some(items))
}

/// Where a job's complaints come from, opened at the point it resumes.
enum Input<'a> {
    File((BufReader<File>, PathBuf)),
    Store(Pages<'a>),
}

/// The next page of stored cases of this shard (by a hash of the id); `None` at the end.
fn read_store(
    pages: &mut Pages,
    checkpoint: &mut Checkpoint,
    spec: &BatchSpec,
) -> Result<Option<Vec<Item>>> {
    let mut items = Vec::new();
    while items.is_empty() {
        if checkpoint.cursor.as_deref() == Some("") {
            return Ok(None);
        }
        let Some(page) = pages.next() else {
            return Ok(None);
        };
        let page = page?;
        checkpoint.cursor = Some(pages.cursor().unwrap_or_default().to_string());
        for (case, vector) in page.cases {
            checkpoint.counts.consumed += 1;
            if text::stable_hash(&case.id) % spec.shard.count as u64 == spec.shard.index as u64 {
                items.push(Item {
                    line: checkpoint.counts.consumed,
                    case: Ok((case, Some(vector))),
                    bad_input: None,
                });
            }
        }
    }
    Ok(Some(items))
}

fn add_seconds(counts: &mut Counts, stage: &str, since: Instant) {
    *counts.stage_seconds.entry(stage.into()).or_default() += since.elapsed().as_secs_f64();
}

/// Classifies a chunk and appends its records (in input order) to the output.
fn process(
    pipeline: &Pipeline,
    spec: &BatchSpec,
    items: Vec<Item>,
    state: &mut State,
    on_chunk: &mut dyn FnMut(&[Served]) -> Result<()>,
) -> Result<()> {
    let counts = &mut state.checkpoint.counts;
    let complaints: Vec<std::result::Result<(Complaint, String), String>> = items
        .iter()
        .map(|item| {
            let (case, _) = item.case.as_ref().map_err(Clone::clone)?;
            let complaint = Complaint::from(case);
            let full = Pipeline::complaint_text(&complaint).map_err(|e| e.to_string())?;
            Ok((complaint, full))
        })
        .collect();

    let vectors = if spec.fast {
        Vec::new()
    } else {
        let clock = Instant::now();
        let texts: Vec<&str> = complaints
            .iter()
            .filter_map(|c| c.as_ref().ok().map(|(_, full)| full.as_str()))
            .collect();
        let vectors = pipeline.embed_complaints(&texts)?;
        add_seconds(counts, "embed", clock);
        vectors
    };

    let clock = Instant::now();
    let mut vectors = vectors.into_iter();
    let jobs: Vec<_> = complaints
        .into_iter()
        .map(|c| c.map(|(complaint, full)| (complaint, full, vectors.next())))
        .collect();
    let analyzed: Vec<std::result::Result<Analyzed, String>> = jobs
        .into_par_iter()
        .map(|job| {
            let (complaint, full, vector) = job?;
            let result = match vector {
                Some(embedded) => pipeline
                    .analyze_embedded(&complaint, &full, &embedded)
                    .map(Analyzed::Full),
                None => pipeline.analyze_fast(&complaint).map(Analyzed::Fast),
            };
            result.map_err(|e| e.to_string())
        })
        .collect();
    add_seconds(counts, "analyze", clock);

    let clock = Instant::now();
    let mut records = Vec::with_capacity(items.len());
    let mut served = Vec::with_capacity(items.len());
    let mut write_back = Vec::new();
    for (item, result) in items.into_iter().zip(analyzed) {
        let analyzed = match result {
            Ok(analyzed) => analyzed,
            Err(reason) => {
                counts.errors += 1;
                let detail = json!({"line": item.line, "error": reason, "input": item.bad_input});
                writeln!(state.errors, "{detail}").map_err(|e| Error::io(&spec.output, e))?;
                records.push(json!({"line": item.line, "error": reason}));
                continue;
            }
        };
        let (case, vector) = item.case.expect("an analysed item was parsed");
        let draft = match &analyzed {
            Analyzed::Full(analysis) if spec.draft => pipeline
                .draft(analysis, &mut |_| true)
                .inspect_err(|e| tracing::warn!(line = item.line, "draft failed: {e}"))
                .ok(),
            _ => None,
        };
        let s = analyzed.suggestion();
        for (step, ms) in &s.timings_ms {
            *counts.analysis_cpu_seconds.entry(step.clone()).or_default() += ms / 1e3;
        }
        counts.classified += 1;
        counts.abstained += s.abstain as u64;
        counts.duplicates += s.duplicate.is_some() as u64;
        if let (WriteBack::DryRun | WriteBack::Apply, Some(top), Some(vector)) =
            (spec.write_back, s.categories.first(), vector)
        {
            let old = case.predicted.as_ref().map_or("-", |p| p.category.as_str());
            *counts
                .changes
                .entry(old.to_string())
                .or_default()
                .entry(top.id.clone())
                .or_default() += 1;
            counts.written_back += 1;
            let mut case = case.clone();
            case.predicted = Some(Prediction {
                category: top.id.clone(),
                confidence: top.probability,
                unit: s.units.first().map(|u| u.unit_id.clone()),
                classifier_version: s.classifier_version.clone(),
            });
            write_back.push((case, vector));
        }
        records.push(record(item.line, &case, s, draft.clone()));
        served.push((item.line, case, analyzed, draft));
    }
    let shown: Vec<Served> = served
        .iter()
        .map(|(line, case, analyzed, draft)| Served {
            line: *line,
            case,
            suggestion: analyzed.suggestion(),
            draft: draft.as_ref(),
        })
        .collect();
    on_chunk(&shown)?;
    // Upserts are durable when they return, before the checkpoint moves past them.
    if spec.write_back == WriteBack::Apply && !write_back.is_empty() {
        pipeline.save_predictions(&write_back)?;
    }
    let mut out = Vec::new();
    for record in records {
        serde_json::to_writer(&mut out, &record).expect("records serialise");
        out.push(b'\n');
    }
    state
        .output
        .write_all(&out)
        .map_err(|e| Error::io(&spec.output, e))?;
    add_seconds(counts, "write", clock);
    Ok(())
}

/// A complaint's analysis: the full one (with what a draft needs), or the lexical `--fast` one.
enum Analyzed {
    Full(Analysis),
    Fast(Suggestion),
}

impl Analyzed {
    fn suggestion(&self) -> &Suggestion {
        match self {
            Analyzed::Full(analysis) => &analysis.suggestion,
            Analyzed::Fast(suggestion) => suggestion,
        }
    }
}

/// One output line: the suggestion without the similar cases' text (kept short for thousands).
fn record(line: u64, case: &Case, s: &Suggestion, draft: Option<Draft>) -> Value {
    let (draft, draft_checks) = match draft {
        Some(d) => (Some(d.text), d.checks),
        None => (None, Vec::new()),
    };
    let top = s.categories.first();
    json!({
        "line": line,
        "id": case.id,
        "label": case.label,
        "category": top.map(|c| &c.id),
        "confidence": top.map(|c| c.probability),
        "categories": s.categories,
        "abstain": s.abstain,
        "district": s.district,
        "units": s.units.iter().map(|u| json!({"unit_id": u.unit_id, "name": u.name, "score": u.score})).collect::<Vec<_>>(),
        "similar": s.similar.iter().map(|c| json!({"id": c.id, "score": c.score})).collect::<Vec<_>>(),
        "duplicate": s.duplicate,
        "work_order": s.work_order,
        "draft": draft,
        "draft_checks": draft_checks,
        "classifier_version": s.classifier_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_nonsense() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        assert!("3/3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("1".parse::<Shard>().is_err());
    }

    #[test]
    fn counts_lines_with_or_without_a_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        for (text, lines) in [("", 0), ("a\n", 1), ("a\nb", 2), ("a\n\nb\n", 3)] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(count_lines(&path).unwrap(), lines, "{text:?}");
        }
    }

    #[test]
    fn side_files_sit_beside_the_output() {
        let out = Path::new("/data/out.jsonl");
        assert_eq!(
            checkpoint_path(out),
            Path::new("/data/out.jsonl.checkpoint")
        );
        assert_eq!(errors_path(out), Path::new("/data/out.jsonl.errors.jsonl"));
    }

    #[test]
    fn change_matrix_counts_only_changes() {
        let mut counts = Counts::default();
        counts
            .changes
            .entry("a".into())
            .or_default()
            .insert("a".into(), 5);
        counts
            .changes
            .entry("a".into())
            .or_default()
            .insert("b".into(), 2);
        counts
            .changes
            .entry("-".into())
            .or_default()
            .insert("a".into(), 1);
        assert_eq!(counts.changed(), 3);
    }
}
