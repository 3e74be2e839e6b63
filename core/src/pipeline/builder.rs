//! The one way to build a pipeline: parts in, pipeline out.

use super::{check_embedder, Pipeline, PipelineConfig};
use crate::classify::Classifier;
use crate::embed::BatchingEmbedder;
use crate::prompt::Prompts;
use crate::reply_units::UnitAliases;
use crate::units::{Router, UnitDirectory};
use crate::{CaseStore, Embedder, Error, Generator, Result, Taxonomy};
use std::sync::{Arc, RwLock};

/// The parts of a pipeline. Cloning is cheap (models and store are shared), so one builder can
/// make several pipelines over different stores: the evaluation builds one per fold.
#[derive(Clone)]
pub struct PipelineBuilder {
    embedder: Arc<dyn Embedder>,
    store: Option<Arc<dyn CaseStore>>,
    generator: Option<Arc<dyn Generator>>,
    taxonomy: Taxonomy,
    units: UnitDirectory,
    aliases: Option<Arc<UnitAliases>>,
    prompts: Option<Arc<Prompts>>,
    config: PipelineConfig,
    classifier: Option<Classifier>,
    batch_embeddings: Option<usize>,
    model_chat_template: bool,
}

impl PipelineBuilder {
    /// A builder around the embedder: everything else has a default (no store yet, no LLM, an
    /// empty taxonomy and unit directory, the built-in prompts, no classifier).
    pub fn new(embedder: Arc<dyn Embedder>) -> Self {
        Self {
            embedder,
            store: None,
            generator: None,
            taxonomy: Taxonomy::default(),
            units: UnitDirectory::default(),
            aliases: None,
            prompts: None,
            config: PipelineConfig::default(),
            classifier: None,
            batch_embeddings: None,
            model_chat_template: false,
        }
    }

    /// The embedder the pipeline will use (callers that embed many texts before building, such
    /// as the evaluation, embed with it so every vector comes from the same model).
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    pub fn store(mut self, store: Arc<dyn CaseStore>) -> Self {
        self.store = Some(store);
        self
    }

    pub fn generator(mut self, generator: Option<Arc<dyn Generator>>) -> Self {
        self.generator = generator;
        self
    }

    pub fn taxonomy(mut self, taxonomy: Taxonomy) -> Self {
        self.taxonomy = taxonomy;
        self
    }

    pub fn units(mut self, units: UnitDirectory) -> Self {
        self.units = units;
        self
    }

    /// Unit names and short forms for reading replies (default: the shipped
    /// `data/unit_aliases.toml`).
    pub fn aliases(mut self, aliases: UnitAliases) -> Self {
        self.aliases = Some(Arc::new(aliases));
        self
    }

    pub fn prompts(mut self, prompts: Prompts) -> Self {
        self.prompts = Some(Arc::new(prompts));
        self
    }

    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// The classifier to start with (a pipeline without one can store cases and train).
    pub fn classifier(mut self, classifier: Option<Classifier>) -> Self {
        self.classifier = classifier;
        self
    }

    /// Concurrent callers share encoder batches of up to `max_texts` (the service: under load,
    /// four single-complaint requests cost about what one batch of four does).
    pub fn batch_embeddings(mut self, max_texts: usize) -> Self {
        self.batch_embeddings = Some(max_texts);
        self
    }

    /// Prompt the generator through the chat template its model file carries (an instruct
    /// GGUF's `tokenizer.chat_template`; `--chat-template auto`). Building fails, naming the
    /// model, when the generator has none: a base model is prompted with a few-shot document.
    pub fn model_chat_template(mut self, yes: bool) -> Self {
        self.model_chat_template = yes;
        self
    }

    pub fn build(mut self) -> Result<Pipeline> {
        if let (true, Some(generator)) = (self.model_chat_template, &self.generator) {
            let template = generator.chat_template().ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the generator {} carries no chat template (tokenizer.chat_template): it is a \
                     base model, prompted without one (leave out --chat-template auto)",
                    generator.model_id()
                ))
            })?;
            self.config.draft.chat_template = Some(template);
        }
        let store = self.store.ok_or_else(|| {
            Error::InvalidInput("a pipeline needs a case store (PipelineBuilder::store)".into())
        })?;
        let mut classifier = self.classifier;
        if let Some(classifier) = &mut classifier {
            check_embedder(classifier, self.embedder.as_ref())?;
            classifier.bind(self.embedder.as_ref())?;
        }
        let embedder: Arc<dyn Embedder> = match self.batch_embeddings {
            Some(max_texts) => Arc::new(BatchingEmbedder::new(self.embedder, max_texts)),
            None => self.embedder,
        };
        let prompts = match self.prompts {
            Some(prompts) => prompts,
            None => Arc::new(Prompts::load(None)?),
        };
        let aliases = self
            .aliases
            .unwrap_or_else(|| Arc::new(UnitAliases::builtin()));
        let router = match &classifier {
            Some(c) => Router::new(&self.units, &c.units, &aliases),
            None => Router::from_directory(&self.units, &aliases),
        };
        Ok(Pipeline {
            embedder,
            store,
            generator: self.generator,
            taxonomy: self.taxonomy,
            unit_names: crate::guard::DirectoryNames::new(&self.units),
            units: self.units,
            aliases,
            router: RwLock::new(Arc::new(router)),
            prompts,
            config: self.config,
            classifier: RwLock::new(classifier.map(Arc::new)),
        })
    }
}
