//! Shared set-up of every command: paths, models, store, pipeline.

use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use triage_core::pipeline::{Pipeline, PipelineBuilder};
use triage_core::prompt::Prompts;
use triage_core::units::UnitDirectory;
use triage_core::{classify::Classifier, CaseStore, Embedder, Generator, Taxonomy};

const BUILTIN_TAXONOMY: &str = include_str!("../../data/taxonomy.json");
const BUILTIN_UNITS: &str = include_str!("../../data/units.toml");

/// `--chat-template`: whether the generator is prompted through its model file's chat template.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    None,
    Auto,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// qdrant-edge, embedded, on disk under --data-dir
    Edge,
    /// A Qdrant server or cluster (--qdrant-url)
    Qdrant,
}

/// Options every command takes. Each also reads an environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Configuration file (TOML of option = value; flags and environment win over it)
    #[arg(long, env = "TRIAGE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Store, classifier and caches [default: ~/.cache/hotline-triage/data]
    #[arg(long, env = "TRIAGE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Model files, as laid out by scripts/setup.sh [default: ~/.cache/hotline-triage/models]
    #[arg(long, env = "TRIAGE_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,
    /// Embedding model: a directory name under --models-dir or a path to a Hugging Face directory
    #[arg(
        long,
        env = "TRIAGE_EMBEDDER",
        default_value = "multilingual-e5-small",
        global = true
    )]
    pub embedder: String,
    /// Tokens of each text the embedder reads (title and the head of the body; at most the
    /// model's limit). 128 keeps routing accuracy and embeds ~5x faster than 512 (see README).
    #[arg(long, env = "TRIAGE_MAX_TOKENS", default_value_t = 128, global = true)]
    pub max_tokens: usize,
    /// Arithmetic of the embedder's dense layers: int8 (a scale per block of 32 or 64 values;
    /// ~2x faster, vectors within cosine 0.9999 of f32's: see the README) or f32. Default: int8,
    /// or f32 with `--adapt` (it fine-tunes f32 copies of the top layers). int8 runs in f32 on
    /// a CPU without AVX2
    #[arg(long, env = "TRIAGE_EMBEDDER_PRECISION", global = true)]
    pub embedder_precision: Option<triage_models::Precision>,
    /// Generator model: a GGUF file (path, or relative to --models-dir)
    #[arg(
        long,
        env = "TRIAGE_GENERATOR",
        default_value = "gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
        global = true
    )]
    pub generator: String,
    /// How the generator is prompted: `none` (a base model continuing a few-shot document, the
    /// default Gemma 3 270M base) or `auto` (an instruct GGUF, through the chat template in its
    /// metadata)
    #[arg(long, env = "TRIAGE_CHAT_TEMPLATE", value_enum, default_value_t = ChatTemplate::None, global = true)]
    pub chat_template: ChatTemplate,
    /// Category taxonomy (JSON) [default: the shipped data/taxonomy.json]
    #[arg(long, env = "TRIAGE_TAXONOMY", global = true)]
    pub taxonomy: Option<PathBuf>,
    /// Unit directory (TOML or JSON) [default: the shipped data/units.toml]
    #[arg(long, env = "TRIAGE_UNITS", global = true)]
    pub units: Option<PathBuf>,
    /// Directory of prompt templates overriding the built-in ones (prompts/*.jinja)
    #[arg(long, env = "TRIAGE_PROMPTS", global = true)]
    pub prompts: Option<PathBuf>,
    /// Case store: `edge` (embedded, in --data-dir) or `qdrant` (a Qdrant server or cluster)
    #[arg(long, env = "TRIAGE_STORE", value_enum, default_value_t = StoreKind::Edge, global = true)]
    pub store: StoreKind,
    /// gRPC address of the Qdrant server (with --store qdrant)
    #[arg(
        long,
        env = "TRIAGE_QDRANT_URL",
        default_value = "http://127.0.0.1:6334",
        global = true
    )]
    pub qdrant_url: String,
    #[arg(
        long,
        env = "TRIAGE_QDRANT_API_KEY",
        hide_env_values = true,
        global = true
    )]
    pub qdrant_api_key: Option<String>,
    /// Collection of the cases in Qdrant
    #[arg(
        long,
        env = "TRIAGE_QDRANT_COLLECTION",
        default_value = "cases",
        global = true
    )]
    pub qdrant_collection: String,
    /// Shards of a new collection (spread over the cluster's nodes)
    #[arg(long, env = "TRIAGE_QDRANT_SHARDS", global = true)]
    pub qdrant_shards: Option<u32>,
    /// Copies of each shard in a new collection (survives losing copies - 1 nodes)
    #[arg(long, env = "TRIAGE_QDRANT_REPLICATION", global = true)]
    pub qdrant_replication: Option<u32>,
    /// Copies that must confirm a write before it is acknowledged
    #[arg(long, env = "TRIAGE_QDRANT_WRITE_CONSISTENCY", global = true)]
    pub qdrant_write_consistency: Option<u32>,
    /// Shard a new collection by district: one custom shard key per district, each with
    /// --qdrant-shards shards and --qdrant-replication copies
    #[arg(long, env = "TRIAGE_QDRANT_SHARD_BY_DISTRICT", global = true)]
    pub qdrant_shard_by_district: bool,
    /// Int8 scalar quantization for a new collection: a quarter of the vector memory, originals on
    /// disk for rescoring
    #[arg(long, env = "TRIAGE_QDRANT_INT8", global = true)]
    pub qdrant_int8: bool,
    /// Log filter, e.g. `info` or `triage=debug`
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = "warn,qdrant_edge=error",
        global = true
    )]
    pub log: String,
}

pub fn init_tracing(args: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A progress bar on stderr when it is a terminal; hidden otherwise (logs and pipes stay clean).
pub fn progress_bar(len: u64, prefix: &str, template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// A long job's error with how to resume it (`hint`) when running it again can help: I/O and
/// store failures such as a full disk. Other errors (bad input, another job's output) are left as
/// they are: running the same command again would not help.
pub fn resumable(error: triage_core::Error, hint: String) -> anyhow::Error {
    match error {
        triage_core::Error::Io { .. } | triage_core::Error::Store(_) => {
            anyhow::Error::new(error).context(hint)
        }
        error => error.into(),
    }
}

fn cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("hotline-triage")
}

impl GlobalArgs {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| cache_dir().join("data"))
    }

    pub fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| cache_dir().join("models"))
    }

    fn model_path(&self, name: &str) -> PathBuf {
        let path = Path::new(name);
        if path.is_absolute() || path.exists() {
            path.to_path_buf()
        } else {
            self.models_dir().join(name)
        }
    }

    /// The encoder's arithmetic: as asked, else int8. (`--adapt` asks for f32: it fine-tunes
    /// f32 copies of the top layers; a classifier's adapted layers run at either precision.)
    pub fn precision(&self) -> triage_models::Precision {
        self.embedder_precision
            .unwrap_or(triage_models::Precision::Int8)
    }

    pub fn load_embedder(&self) -> Result<Arc<dyn Embedder>> {
        let dir = self.model_path(&self.embedder);
        let embedder = triage_models::BertEmbedder::load_with(
            &dir,
            &triage_models::default_device()?,
            self.precision(),
        )
        .and_then(|e| e.with_max_tokens(self.max_tokens))
        .with_context(|| format!("loading the embedder from {}", dir.display()))?;
        Ok(Arc::new(embedder))
    }

    pub fn load_generator(&self) -> Result<Arc<dyn Generator>> {
        let path = self.model_path(&self.generator);
        let generator = triage_models::load_generator(&path, &triage_models::default_device()?)
            .with_context(|| format!("loading the generator from {}", path.display()))?;
        Ok(Arc::from(generator))
    }

    pub fn open_store(&self, dim: usize) -> Result<Arc<dyn CaseStore>> {
        match self.store {
            StoreKind::Edge => self.open_edge(&self.data_dir(), dim),
            StoreKind::Qdrant => self.open_qdrant(&self.qdrant_url, dim),
        }
    }

    /// The embedded store in `data_dir`. Damaged files are named, with what to do about them.
    pub fn open_edge(&self, data_dir: &Path, dim: usize) -> Result<Arc<dyn CaseStore>> {
        match triage_store::EdgeStore::open(data_dir, dim) {
            Ok(store) => Ok(Arc::new(store)),
            Err(e @ (triage_store::Error::Backend { .. } | triage_store::Error::Io { .. })) => {
                let said = e.to_string();
                if said.contains("No space left on device") {
                    return Err(anyhow::anyhow!(
                        "{said}\nthe disk of {} is full: free space and run the command again",
                        data_dir.display()
                    ));
                }
                Err(anyhow::anyhow!(
                    "{said}\nthe store's files are damaged or unreadable: `triage store check` \
                     says which; {}",
                    crate::commands::store::REBUILD_STORE
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A Qdrant server at `url`, with this command's key, collection and cluster settings.
    pub fn open_qdrant(&self, url: &str, dim: usize) -> Result<Arc<dyn CaseStore>> {
        let config = triage_store::QdrantConfig {
            api_key: self.qdrant_api_key.clone(),
            collection: self.qdrant_collection.clone(),
            shard_number: self.qdrant_shards,
            replication_factor: self.qdrant_replication,
            write_consistency_factor: self.qdrant_write_consistency,
            shard_by_district: self.qdrant_shard_by_district,
            int8: self.qdrant_int8,
            ..triage_store::QdrantConfig::new(url)
        };
        Ok(Arc::new(triage_store::QdrantStore::open(config, dim)?))
    }

    pub fn taxonomy(&self) -> Result<Taxonomy> {
        match &self.taxonomy {
            Some(path) => Ok(Taxonomy::load(path)?),
            None => Taxonomy::from_json(BUILTIN_TAXONOMY).map_err(anyhow::Error::msg),
        }
    }

    pub fn units(&self) -> Result<UnitDirectory> {
        match &self.units {
            Some(path) => Ok(UnitDirectory::load(path)?),
            None => Ok(UnitDirectory::from_toml(BUILTIN_UNITS)?),
        }
    }

    pub fn classifier_dir(&self) -> PathBuf {
        self.data_dir().join("classifier")
    }

    /// The version `classifier/current` names (what `triage train` wrote last).
    pub fn current_classifier_version(&self) -> Result<String> {
        let dir = self.classifier_dir();
        let version = std::fs::read_to_string(dir.join("current")).map_err(|_| {
            anyhow::anyhow!(
                "no classifier in {}: run `triage train` (after `triage import`)",
                dir.display()
            )
        })?;
        Ok(version.trim().to_string())
    }

    /// The file of the current classifier (named by `classifier/current`).
    pub fn current_classifier_path(&self) -> Result<PathBuf> {
        let version = self.current_classifier_version()?;
        Ok(self.classifier_dir().join(format!("{version}.bin")))
    }

    /// The current classifier (named by `classifier/current`).
    pub fn load_classifier(&self) -> Result<Classifier> {
        Ok(Classifier::load(&self.current_classifier_path()?)?)
    }

    /// The parts of every command's pipeline around an embedder: taxonomy, units, prompts (no
    /// store, LLM or classifier yet).
    pub fn parts(&self, embedder: Arc<dyn Embedder>) -> Result<PipelineBuilder> {
        Ok(Pipeline::builder(embedder)
            .taxonomy(self.taxonomy()?)
            .units(self.units()?)
            .prompts(Prompts::load(self.prompts.as_deref())?)
            .model_chat_template(self.chat_template == ChatTemplate::Auto))
    }

    /// Models, store, taxonomy, units and prompts; the caller adds the classifier (or trains one).
    pub fn builder(&self, with_generator: bool) -> Result<PipelineBuilder> {
        let embedder = self.load_embedder()?;
        let store = self.open_store(embedder.dim())?;
        let generator = if with_generator {
            Some(self.load_generator()?)
        } else {
            None
        };
        Ok(self.parts(embedder)?.store(store).generator(generator))
    }

    /// A pipeline with the current classifier.
    pub fn pipeline(&self, with_generator: bool) -> Result<Pipeline> {
        let builder = self.builder(with_generator)?;
        Ok(builder.classifier(Some(self.load_classifier()?)).build()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use triage_models::Precision;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(flatten)]
        adapt: crate::commands::train::AdaptArgs,
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("triage").chain(args.iter().copied())).unwrap()
    }

    /// int8 unless asked otherwise or `--adapt` needs f32 (an explicit int8 with it is
    /// refused); a current classifier with adapted layers runs them in int8 too.
    #[test]
    fn precision_is_int8_unless_asked_or_adapting() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let plain = parse(&["--data-dir", data]);
        assert_eq!(plain.global.precision(), Precision::Int8);
        let asked = parse(&["--data-dir", data, "--embedder-precision", "f32"]);
        assert_eq!(asked.global.precision(), Precision::F32);

        let adapting = parse(&["--data-dir", data, "--adapt"]);
        let global = adapting.adapt.global(&adapting.global).unwrap();
        assert_eq!(global.precision(), Precision::F32);
        let refused = parse(&[
            "--data-dir",
            data,
            "--adapt",
            "--embedder-precision",
            "int8",
        ]);
        let err = refused
            .adapt
            .global(&refused.global)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--adapt needs the encoder in f32"), "{err}");

        // A current classifier with adapted layers (what `triage train --adapt` leaves).
        let classifier = plain.global.classifier_dir();
        std::fs::create_dir_all(&classifier).unwrap();
        std::fs::write(classifier.join("current"), "v7\n").unwrap();
        assert_eq!(plain.global.precision(), Precision::Int8);
        std::fs::write(classifier.join("v7.adapt.safetensors"), b"").unwrap();
        assert_eq!(plain.global.precision(), Precision::Int8);
        assert_eq!(asked.global.precision(), Precision::F32);
        let int8 = parse(&["--data-dir", data, "--embedder-precision", "int8"]);
        assert_eq!(int8.global.precision(), Precision::Int8);
    }
}
