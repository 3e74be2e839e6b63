//! `triage audit verify` and `triage audit report`: check the audit trail's chain, and give the
//! acceptance and correction rates an algorithm audit asks for. The trail itself is written by
//! `triage serve` (`triage_core::audit`); these only read `DATA_DIR/audit`.

use crate::app::GlobalArgs;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use std::path::PathBuf;
use triage_core::audit::{self, AuditLog, AuditSettings, SignatureCheck, TextPolicy};

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Check every record's hash and the chain, and name each edited, removed or reordered
    /// record (exit status 1 when there is any)
    Verify(VerifyArgs),
    /// Acceptance and correction rates per category, unit, district and model version
    /// (Markdown and JSON)
    Report(ReportArgs),
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Key the service signs the head files with; without it their signatures are not checked
    #[arg(long, env = "TRIAGE_AUDIT_KEY", hide_env_values = true)]
    audit_key: Option<Secret>,
    /// Print the full result as JSON
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// First day (YYYY-MM-DD, UTC) or instant (RFC 3339, e.g. 2025-03-01T00:00:00+08:00)
    #[arg(long)]
    from: When,
    /// Last day, included (YYYY-MM-DD, UTC), or instant, excluded (RFC 3339)
    #[arg(long)]
    to: When,
    /// Write audit-report.md and audit-report.json into this directory (otherwise the Markdown
    /// goes to stdout)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON instead of Markdown on stdout
    #[arg(long, conflicts_with = "out")]
    json: bool,
}

/// A day or an instant on the command line (and in `GET /v1/audit/report`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum When {
    Day(NaiveDate),
    Instant(DateTime<Utc>),
}

impl std::str::FromStr for When {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(Self::Day(day));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self::Instant(t.with_timezone(&Utc)))
            .map_err(|_| format!("{s:?}: write YYYY-MM-DD or an RFC 3339 time"))
    }
}

impl When {
    pub(crate) fn start(self) -> DateTime<Utc> {
        match self {
            Self::Day(day) => day.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
            Self::Instant(t) => t,
        }
    }

    /// The end of a period: the day after a day (so `--to` includes its day).
    pub(crate) fn end(self) -> DateTime<Utc> {
        match self {
            Self::Day(day) => Self::Day(day.succ_opt().unwrap_or(day)).start(),
            Self::Instant(t) => t,
        }
    }
}

/// A secret from a flag or the environment; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How `triage serve` keeps complaint text in the audit trail.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditText {
    /// Phone and ID numbers and e-mail addresses replaced by placeholders
    Masked,
    /// Only the text's SHA-256
    Sha256,
    /// Not kept
    Omit,
}

impl From<AuditText> for TextPolicy {
    fn from(text: AuditText) -> Self {
        match text {
            AuditText::Masked => TextPolicy::Masked,
            AuditText::Sha256 => TextPolicy::Sha256,
            AuditText::Omit => TextPolicy::Omit,
        }
    }
}

/// The audit trail's settings, for `triage serve` to flatten into its arguments; `open` gives
/// the one `AuditLog` of the app state.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditOptions {
    /// Keep no audit trail (suggestions and decisions are not recorded)
    #[arg(long, env = "TRIAGE_NO_AUDIT")]
    pub no_audit: bool,
    /// How complaint text is kept in the audit trail
    #[arg(long, env = "TRIAGE_AUDIT_TEXT", value_enum, default_value_t = AuditText::Masked)]
    pub audit_text: AuditText,
    /// Delete audit segments whose last record is older than this many days (the deletion is
    /// recorded in the chain) [default: keep all]
    #[arg(long, env = "TRIAGE_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// Refuse suggestions (503) while the audit trail cannot take records, rather than serve
    /// unaudited ones (which are counted, and recorded once it can write again)
    #[arg(long, env = "TRIAGE_AUDIT_REFUSE_UNAUDITED")]
    pub audit_refuse_unaudited: bool,
    /// This process's audit stream under DATA_DIR/audit: replicas sharing a data directory need
    /// one each (a second writer on a stream is refused)
    #[arg(long, env = "TRIAGE_AUDIT_STREAM", default_value = "main")]
    pub audit_stream: String,
    /// Audit records waiting to be written, at most
    #[arg(long, env = "TRIAGE_AUDIT_QUEUE", default_value_t = 4096)]
    pub audit_queue: usize,
    /// Start a new audit segment at this size (MiB), and at each new UTC day
    #[arg(long, env = "TRIAGE_AUDIT_SEGMENT_MB", default_value_t = 64)]
    pub audit_segment_mb: u64,
    /// Key that signs the audit head file (HMAC-SHA256), so that cutting records off the end and
    /// rewriting the head is caught too; keep it away from the data directory
    #[arg(long, env = "TRIAGE_AUDIT_KEY", hide_env_values = true)]
    pub audit_key: Option<Secret>,
    /// Least milliseconds between updates of the audit head file (each costs a write, two fsyncs
    /// and a rename; records themselves are synced at once, in batches)
    #[arg(long, env = "TRIAGE_AUDIT_HEAD_INTERVAL_MS", default_value_t = 1000)]
    pub audit_head_interval_ms: u64,
}

impl AuditOptions {
    pub fn settings(&self) -> AuditSettings {
        AuditSettings {
            stream: self.audit_stream.clone(),
            text: self.audit_text.into(),
            queue: self.audit_queue,
            segment_max_bytes: self.audit_segment_mb.max(1) << 20,
            rotate_daily: true,
            retention_days: self.audit_retention_days,
            refuse_unaudited: self.audit_refuse_unaudited,
            key: self.audit_key.as_ref().map(|k| k.0.as_bytes().to_vec()),
            head_interval: std::time::Duration::from_millis(self.audit_head_interval_ms),
        }
    }

    /// The service's audit log; None with `--no-audit`.
    pub fn open(&self, global: &GlobalArgs) -> Result<Option<AuditLog>> {
        if self.no_audit {
            return Ok(None);
        }
        let dir = audit_dir(global);
        AuditLog::open(&dir, self.settings())
            .map(Some)
            .with_context(|| format!("opening the audit trail in {}", dir.display()))
    }
}

pub fn audit_dir(global: &GlobalArgs) -> PathBuf {
    global.data_dir().join("audit")
}

pub fn run(global: &GlobalArgs, args: AuditArgs) -> Result<()> {
    match args.command {
        AuditCommand::Verify(args) => verify(global, args),
        AuditCommand::Report(args) => report(global, args),
    }
}

fn verify(global: &GlobalArgs, args: VerifyArgs) -> Result<()> {
    let dir = audit_dir(global);
    let key = args.audit_key.as_ref().map(|k| k.0.as_bytes());
    let result =
        audit::verify(&dir, key).with_context(|| format!("verifying {}", dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("audit trail in {}", dir.display());
        if result.streams.is_empty() {
            println!("  no audit records (the service writes them here once it serves)");
        }
        for s in &result.streams {
            let range = match (s.first_seq, s.last_seq) {
                (Some(a), Some(b)) => format!(" (seq {a}..={b})"),
                _ => String::new(),
            };
            let head = match &s.head {
                Some(h) => format!(
                    "head signed off {} records, signature {}",
                    h.next_seq,
                    match s.signature {
                        SignatureCheck::Verified => "verified",
                        SignatureCheck::NotChecked => "not checked (no --audit-key)",
                        SignatureCheck::Failed => "FAILED",
                        SignatureCheck::NoHead => "absent",
                    }
                ),
                None => "no head file".into(),
            };
            println!(
                "  stream {}: {} records{range} in {} segments; {head}",
                s.stream, s.records, s.segments
            );
            if let Some(from) = s.retained_from_seq {
                println!(
                    "    records before seq {from} were removed by retention, as the chain records"
                );
            }
            for (at, incident) in &s.incidents {
                let tag = if incident.is_damage() {
                    "DAMAGE"
                } else {
                    "incident"
                };
                println!(
                    "    {tag} recorded at {at}: {}",
                    serde_json::to_string(incident)?
                );
            }
            for finding in &s.findings {
                println!("  PROBLEM {}: {finding}", s.stream);
            }
        }
    }
    let problems = result.findings().count();
    let damage = result
        .streams
        .iter()
        .flat_map(|s| &s.incidents)
        .filter(|(_, i)| i.is_damage())
        .count();
    if problems + damage > 0 {
        bail!(
            "the audit trail failed verification: {problems} problems, {damage} recorded damage \
             incidents (see above)"
        );
    }
    if !args.json {
        println!("ok: every record is intact and in its place");
    }
    Ok(())
}

fn report(global: &GlobalArgs, args: ReportArgs) -> Result<()> {
    let (from, to) = (args.from.start(), args.to.end());
    if to <= from {
        bail!("--to ({to}) must be after --from ({from})");
    }
    let dir = audit_dir(global);
    let report =
        audit::report(&dir, from, to).with_context(|| format!("reading {}", dir.display()))?;
    match &args.out {
        Some(out) => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let md = out.join("audit-report.md");
            let json = out.join("audit-report.json");
            std::fs::write(&md, report.to_markdown())
                .with_context(|| format!("writing {}", md.display()))?;
            std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", json.display()))?;
            println!(
                "{} suggestions, {} decisions: wrote {} and {}",
                report.suggestions,
                report.decisions,
                md.display(),
                json.display()
            );
        }
        None if args.json => println!("{}", serde_json::to_string_pretty(&report)?),
        None => print!("{}", report.to_markdown()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        audit: AuditOptions,
    }

    #[test]
    fn serve_options_become_settings() {
        let s = Serve::parse_from([
            "serve",
            "--audit-text",
            "sha256",
            "--audit-retention-days",
            "365",
            "--audit-refuse-unaudited",
            "--audit-stream",
            "replica-2",
            "--audit-key",
            "k",
        ])
        .audit;
        let settings = s.settings();
        assert_eq!(settings.text, TextPolicy::Sha256);
        assert_eq!(settings.retention_days, Some(365));
        assert!(settings.refuse_unaudited);
        assert_eq!(settings.stream, "replica-2");
        assert_eq!(settings.key.as_deref(), Some(&b"k"[..]));
        assert!(
            !format!("{s:?}").contains("\"k\""),
            "the key shows in Debug"
        );
    }

    #[test]
    fn days_cover_whole_days() {
        let from: When = "2025-03-01".parse().unwrap();
        let to: When = "2025-03-31".parse().unwrap();
        assert_eq!(from.start().to_rfc3339(), "2025-03-01T00:00:00+00:00");
        assert_eq!(to.end().to_rfc3339(), "2025-04-01T00:00:00+00:00");
        let t: When = "2025-03-01T00:00:00+08:00".parse().unwrap();
        assert_eq!(t.start().to_rfc3339(), "2025-02-28T16:00:00+00:00");
        assert!("March".parse::<When>().is_err());
    }
}
