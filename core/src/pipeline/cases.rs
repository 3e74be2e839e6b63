//! The use cases on stored cases: store, import, search, feedback, train.

use super::{Pipeline, SimilarCase};
use crate::adapt::AdaptProgress;
use crate::classify::{train_from_cases, Adaptation, Classifier, ClassifierConfig, LabeledText};
use crate::{ingest, text, Case, CaseFilter, EmbedKind, Error, Pages, Result};
use serde::Deserialize;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// How many of the cases written were new and how many replaced a case with the same id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub new: usize,
    pub updated: usize,
}

/// A call-taker's decision on a complaint: the category (and unit) accepted or chosen.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    pub text: String,
    #[serde(default)]
    pub title: Option<String>,
    /// The category the call-taker accepted or chose (id or name).
    pub category: String,
    /// The unit (id or name) the call-taker accepted or chose.
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub district: Option<String>,
    /// Id to store the case under (e.g. the hotline's ticket number); generated when absent.
    #[serde(default)]
    pub case_id: Option<String>,
    /// What the service had suggested, kept for evaluation of accepted vs corrected.
    #[serde(default)]
    pub suggested_category: Option<String>,
    /// The unit the service had suggested (id or name), for the audit trail's unit figures.
    #[serde(default)]
    pub suggested_unit: Option<String>,
    /// The `request_id` of the suggestion decided on (a triage answer's): joins this decision
    /// to the suggestion in the audit trail.
    #[serde(default)]
    pub suggestion_request_id: Option<String>,
}

/// How a training run that adapts the encoder (`ClassifierConfig::adapt`) keeps its work: where
/// its checkpoints go (a killed run resumes from them), who hears its progress, and a flag that
/// stops it after the next checkpoint.
#[derive(Default, Clone, Copy)]
pub struct TrainOptions<'a> {
    pub work_dir: Option<&'a Path>,
    pub progress: Option<&'a (dyn Fn(&AdaptProgress) + Sync)>,
    pub stop: Option<&'a AtomicBool>,
    /// Short labeled texts that are not cases (titles), more training rows of the lexical model.
    pub extra_texts: &'a [LabeledText],
}

/// What to do with a label no known category has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewLabels {
    /// A client or a person chose it: refuse it (422), never guess.
    Refuse,
    /// The deployment's own history says so: keep it; the next `train` learns it as a category.
    Keep,
}

impl Pipeline {
    /// Cases from a client or a person: a label must name a known category (by id or name; it is
    /// stored by id). Embedded and stored, durable when this returns.
    pub fn store_cases(&self, cases: Vec<Case>) -> Result<Stored> {
        self.put(cases, None, NewLabels::Refuse)
    }

    /// Past cases from the deployment's own history (`triage import`): a label the taxonomy
    /// lacks is kept, and becomes a category at the next `train`.
    pub fn import_cases(&self, cases: Vec<Case>) -> Result<Stored> {
        self.put(cases, None, NewLabels::Keep)
    }

    /// Cases whose vectors are already known (a complaint just analysed, or the evaluation's
    /// cases embedded once for every fold); labels as in `import_cases`.
    pub fn store_embedded(&self, cases: Vec<(Case, Vec<f32>)>) -> Result<Stored> {
        let (cases, vectors) = cases.into_iter().unzip();
        self.put(cases, Some(vectors), NewLabels::Keep)
    }

    /// The one way a case enters the store: its label resolved to a category id, what the
    /// directory can tell filled in (the unit its reply names, the district its text names),
    /// embedded as a passage unless the vector is given.
    fn put(
        &self,
        mut cases: Vec<Case>,
        vectors: Option<Vec<Vec<f32>>>,
        new_labels: NewLabels,
    ) -> Result<Stored> {
        if cases.is_empty() {
            return Ok(Stored::default());
        }
        for case in &mut cases {
            if let Some(label) = case.label.as_deref() {
                match (self.category_id(label), new_labels) {
                    (Some(id), _) => case.label = Some(id),
                    (None, NewLabels::Keep) => {}
                    (None, NewLabels::Refuse) => {
                        return Err(Error::InvalidInput(format!("unknown category {label:?}")))
                    }
                }
            }
            ingest::enrich(case, &self.units, &self.aliases);
        }
        let vectors = match vectors {
            Some(vectors) => vectors,
            None => {
                let texts: Vec<String> = cases.iter().map(Case::full_text).collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                self.embedder.embed(&refs, EmbedKind::Passage)?
            }
        };
        let mut stored = Stored::default();
        for case in &cases {
            match self.store.get(&case.id)? {
                Some(_) => stored.updated += 1,
                None => stored.new += 1,
            }
        }
        self.store
            .upsert(&cases.into_iter().zip(vectors).collect::<Vec<_>>())?;
        Ok(stored)
    }

    /// The id of the category a label names: the taxonomy's (by id or name), or one the current
    /// classifier learned from the deployment's history.
    pub fn category_id(&self, label: &str) -> Option<String> {
        match self.taxonomy.resolve(label) {
            Some(category) => Some(category.id.clone()),
            None => self
                .classifier()
                .and_then(|c| c.labels.iter().find(|l| l.as_str() == label).cloned()),
        }
    }

    /// Stores the call-taker's decision as a labeled case: it is found by the next similar-case
    /// search at once (a unit given counts at once among the similar cases the unit suggestions
    /// read) and used by the next `train`. Returns the case id.
    pub fn record_feedback(&self, feedback: Feedback) -> Result<String> {
        let unit = match feedback.unit.as_deref() {
            Some(unit) => Some(
                self.router()
                    .resolve(unit)
                    .ok_or_else(|| Error::InvalidInput(format!("unknown unit {unit:?}")))?
                    .id
                    .clone(),
            ),
            None => None,
        };
        let id = feedback
            .case_id
            .clone()
            .unwrap_or_else(|| format!("fb-{}", text::random_id()));
        let mut extra = serde_json::Map::new();
        extra.insert("source".into(), json!("feedback"));
        if let Some(suggested) = &feedback.suggested_category {
            extra.insert("suggested_category".into(), json!(suggested));
            let accepted = self.category_id(suggested) == self.category_id(&feedback.category);
            extra.insert("accepted".into(), json!(accepted));
        }
        if let Some(request_id) = &feedback.suggestion_request_id {
            extra.insert("suggestion_request_id".into(), json!(request_id));
        }
        let case = Case {
            id: id.clone(),
            title: feedback.title.as_deref().map(text::normalize),
            text: text::normalize(&feedback.text),
            label: Some(feedback.category),
            unit,
            district: feedback.district,
            time: Some(chrono::Utc::now().timestamp()),
            extra,
            ..Default::default()
        };
        self.store_cases(vec![case])?;
        Ok(id)
    }

    /// The `k` stored cases most similar to a free text (a search query), with filters.
    pub fn search(&self, text: &str, k: usize, filter: &CaseFilter) -> Result<Vec<SimilarCase>> {
        let text = text::normalize(text);
        let vector = self
            .embedder
            .embed(&[text.as_str()], EmbedKind::Query)?
            .pop()
            .ok_or_else(|| Error::Model("the embedder returned no vector".into()))?;
        let hits = self.store.search(&vector, k, filter)?;
        Ok(hits.iter().map(|h| self.similar_case(h)).collect())
    }

    pub fn case(&self, id: &str) -> Result<Option<Case>> {
        self.store.get(id)
    }

    /// Removes a stored case; `false` when there was none with that id.
    pub fn delete_case(&self, id: &str) -> Result<bool> {
        self.store.delete(id)
    }

    pub fn count_cases(&self, filter: &CaseFilter) -> Result<usize> {
        self.store.count(filter)
    }

    /// The stored cases matching `filter`, a page at a time (see `CaseStore::pages`).
    pub fn cases(&self, filter: &CaseFilter, after: Option<String>, size: usize) -> Pages<'_> {
        self.store.as_ref().pages(filter, after, size)
    }

    /// Writes machine predictions back onto stored cases (batch `--write-back`): the cases are
    /// stored as given, with their stored vectors.
    pub fn save_predictions(&self, cases: &[(Case, Vec<f32>)]) -> Result<()> {
        self.store.upsert(cases)
    }

    /// Builds search indexes after a bulk load.
    pub fn optimize(&self) -> Result<()> {
        self.store.optimize()
    }

    /// Trains a classifier on every labeled stored case, with zero-shot profiles of the
    /// taxonomy's categories embedded by this pipeline's embedder (the one that embedded the
    /// cases), and learns the units of every stored case with a unit (`train_units`). The
    /// caller saves it and may `set_classifier` it.
    pub fn train(&self, config: ClassifierConfig) -> Result<Classifier> {
        self.train_with(config, TrainOptions::default())
    }

    /// `train`, with where an adaptation of the encoder keeps its checkpoints and reports its
    /// progress.
    pub fn train_with(
        &self,
        config: ClassifierConfig,
        options: TrainOptions,
    ) -> Result<Classifier> {
        let labeled = CaseFilter {
            labeled_only: true,
            ..Default::default()
        };
        let cases = self.store.as_ref().all(&labeled)?;
        let adaptation = Adaptation {
            embedder: self.embedder.as_ref(),
            work_dir: options.work_dir,
            progress: options.progress,
            stop: options.stop,
        };
        let mut classifier = train_from_cases(
            &cases,
            self.embedder.as_ref(),
            &self.taxonomy,
            config,
            Some(adaptation),
            options.extra_texts,
        )?;
        classifier.units = self.train_units(&classifier)?;
        Ok(classifier)
    }
}
