//! `triage classify TEXT`

use crate::app::GlobalArgs;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use triage_core::pipeline::Complaint;

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    /// The complaint text
    text: Option<String>,
    /// Read the complaint from a file instead ("-" for standard input)
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Skip the reply draft (no LLM)
    #[arg(long, env = "TRIAGE_NO_DRAFT")]
    no_draft: bool,
    /// District, when known (otherwise extracted from the text)
    #[arg(long)]
    district: Option<String>,
}

pub fn run(global: &GlobalArgs, args: ClassifyArgs) -> Result<()> {
    let text = match (&args.text, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, None) => bail!("give the complaint text, or --file PATH"),
    };
    let pipeline = global.pipeline(!args.no_draft)?;
    let complaint = Complaint {
        text,
        district: args.district,
        ..Default::default()
    };
    let suggestion = pipeline.triage(&complaint, !args.no_draft)?;
    println!("{}", serde_json::to_string_pretty(&suggestion)?);
    Ok(())
}
