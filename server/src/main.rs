//! `triage`: the Hotline Triage command line and service.

mod app;
mod commands;
mod config;
mod http;

use clap::{CommandFactory, Parser, Subcommand};

/// Hotline Triage: local, LLM-assisted triage for city complaint hotlines.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: app::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage local model files (conversion from the wheels; see scripts/setup.sh).
    Models(commands::models::ModelsArgs),
    /// Embed texts and print their dimensions and pairwise cosine similarities.
    Embed(commands::smoke::EmbedArgs),
    /// Stream a continuation of a prompt from the local LLM.
    Generate(commands::smoke::GenerateArgs),
    /// Load past cases (JSONL or CSV) into the store: embed, upsert by id, resumable.
    Import(commands::import::ImportArgs),
    /// Fit the classifier from the labeled cases in the store and save it beside the store.
    Train(commands::train::TrainArgs),
    /// Triage one complaint and print the suggestion as JSON.
    Classify(commands::classify::ClassifyArgs),
    /// Reclassify many complaints (a JSONL file or the stored cases): resumable, in input order.
    Batch(commands::batch::BatchArgs),
    /// Manage the case store (migrate between the embedded store and a Qdrant server).
    Store(commands::store::StoreArgs),
    /// Evaluate routing on a labeled set (report.json, report.md, SVG charts).
    Eval(commands::eval::EvalArgs),
    /// Measure work orders: titles against human titles (ROUGE-L, chrF), locations against a gold.
    EvalWorkorder(commands::eval_workorder::EvalWorkOrderArgs),
    /// Reply drafts side by side on held-out replies: unsupported facts, investigative statements,
    /// length, time, ROUGE-L and chrF against the official reply (report.json, report.md).
    EvalDrafts(commands::eval_drafts::EvalDraftsArgs),
    /// Mine hotspots (specific problems at one place, ranked by heat) from the stored cases or a
    /// file: hotspots.json, hotspots.md, SVG charts; --gold evaluates against a gold set.
    Hotspots(commands::hotspots::HotspotsArgs),
    /// Early warning: places and district × category cells whose count rises against their own
    /// baseline; --replay reports how early the top hotspots were flagged.
    Alerts(commands::hotspots::AlertsArgs),
    /// Period digest (daily bulletin, weekly summary, monthly analysis): counts by category,
    /// district and unit against the period before, abstain/correction rates, the top hotspots.
    Digest(commands::hotspots::DigestArgs),
    /// Run the HTTP service and the call-taker page.
    Serve(commands::serve::ServeArgs),
    /// Check the audit trail's hash chain; acceptance and correction rates for an audit.
    Audit(commands::audit::AuditArgs),
}

fn main() {
    triage_models::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = config::config_path(&args) {
        if let Err(error) = config::apply(&Cli::command(), &path) {
            eprintln!("error: {error:#}");
            std::process::exit(2);
        }
    }
    let cli = Cli::parse();
    app::init_tracing(&cli.global);
    let result = match cli.command {
        Command::Models(args) => commands::models::run(&cli.global, args),
        Command::Embed(args) => commands::smoke::embed(&cli.global, args),
        Command::Generate(args) => commands::smoke::generate(&cli.global, args),
        Command::Import(args) => commands::import::run(&cli.global, args),
        Command::Train(args) => commands::train::run(&cli.global, args),
        Command::Classify(args) => commands::classify::run(&cli.global, args),
        Command::Serve(args) => commands::serve::run(&cli.global, args),
        Command::Eval(args) => commands::eval::run(&cli.global, args),
        Command::EvalWorkorder(args) => commands::eval_workorder::run(&cli.global, args),
        Command::EvalDrafts(args) => commands::eval_drafts::run(&cli.global, args),
        Command::Batch(args) => commands::batch::run(&cli.global, args),
        Command::Store(args) => commands::store::run(&cli.global, args),
        Command::Audit(args) => commands::audit::run(&cli.global, args),
        Command::Hotspots(args) => commands::hotspots::run(&cli.global, args),
        Command::Alerts(args) => commands::hotspots::run_alerts(&cli.global, args),
        Command::Digest(args) => commands::hotspots::run_digest(&cli.global, args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// Every command parses beside the global options (a global option with the name of a
    /// command's own makes clap panic when the arguments are read, not when they are defined).
    #[test]
    fn representative_command_lines_parse() {
        for line in [
            "triage --store qdrant --qdrant-url http://q:6334 serve --bind 127.0.0.1:0",
            "triage eval --current --test t.jsonl",
            "triage eval --train a.jsonl --test t.jsonl --baseline",
            "triage batch --input a.jsonl --output b.jsonl --fast --shard 1/2",
            "triage batch --from-store --write-back --dry-run --output b.jsonl",
            "triage store migrate --from edge:/data --to qdrant:http://q:6334",
            "triage --data-dir d store check",
            "triage serve --no-audit --audit-text sha256 --audit-refuse-unaudited",
            "triage --config c.toml classify --no-draft text",
            "triage import a.jsonl b.csv",
            "triage --data-dir d audit verify --json --audit-key k",
            "triage audit report --from 2025-03-01 --to 2025-03-31 --out r",
            "triage hotspots --input u.jsonl --from 2019-01-01 --to 2019-12-31 --out h --gold g.jsonl",
            "triage hotspots --district A2区 --category 城乡建设 --link-cosine 0.9 --out h",
            "triage alerts --input u.jsonl --replay --out a",
            "triage digest --week 2019-11-13 --input u.jsonl --out d",
        ] {
            let args = line.split_whitespace();
            if let Err(e) = super::Cli::try_parse_from(args) {
                panic!("{line}: {e}");
            }
        }
    }
}
