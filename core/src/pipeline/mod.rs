//! One complaint in, one suggestion out: embed → similar cases → classify → units → draft.
//! `Pipeline` is the one door: its methods are the use cases (here the analysis and the draft;
//! in `cases` those on stored cases), and `PipelineBuilder` is the one way to make one.

mod builder;
mod cases;
mod draft;
mod insights;
mod routing;

pub use builder::PipelineBuilder;
pub use cases::{Feedback, Stored, TrainOptions};
pub use draft::postprocess_draft;
pub use insights::{
    time_bound, AlertReport, AlertRequest, CaseSource, DigestReport, DigestRequest, HotspotReport,
    HotspotRequest, Loaded, Scope,
};
pub use routing::{UnitBaselines, UnitListing};

use crate::classify::{ClassScores, Classifier, Neighbor};
use crate::guard::{self, DraftCheck};
use crate::prompt::{ChatTemplate, Prompts};
use crate::reply::{CitationConfig, DraftMethod};
use crate::reply_units::UnitAliases;
use crate::units::{CategoryProb, RouteQuery, Router, UnitDirectory, UnitNeighbor, UnitSuggestion};
use crate::work_order::{self, WorkOrder};
use crate::{
    pii, text, Case, CaseFilter, CaseStore, EmbedKind, Embedded, Embedder, Error, GenerateParams,
    Generator, Hit, Result, Taxonomy,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// How a new complaint is embedded: as a passage, like the stored cases. Complaint-to-complaint
/// similarity is symmetric, the classifier is fitted on passage vectors (out of fold) and the
/// duplicate threshold was measured on passage pairs. On dev, query -> passage: embedding head
/// 0.840 -> 0.868, knn 0.874 -> 0.884 (ensemble: see README's Evaluation). Free-text search
/// (`/v1/search`) stays a query.
pub const COMPLAINT_EMBEDDING: EmbedKind = EmbedKind::Passage;

/// When a new complaint is flagged as a repeat of a past one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DuplicateConfig {
    /// Cosine similarity at or above which the nearest case counts as the same complaint.
    pub threshold: f32,
    /// Only past cases this recent (days) count; cases without a time always do.
    pub window_days: i64,
    /// Both must be in the same district when both districts are known.
    pub same_district: bool,
}

impl Default for DuplicateConfig {
    fn default() -> Self {
        Self {
            threshold: 0.98,
            window_days: 90,
            same_district: true,
        }
    }
}

/// How reply drafts are written (`reply` has the methods and the why).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DraftConfig {
    /// The method the service uses (`restate`); the evaluation measures the others beside it.
    pub method: DraftMethod,
    /// The restatement the model writes (`prompts/restate.jinja`).
    pub summary: SummaryConfig,
    /// Citations of past replies (`prompts/reply.jinja`).
    pub citations: CitationConfig,
    /// An instruct model's chat template (`--chat-template`): the restatement prompt is then a
    /// user message rendered through it; without one, a few-shot document a base model continues.
    pub chat_template: Option<ChatTemplate>,
    /// The drafts before issue 13 (`DraftMethod::Legacy`), kept to be measured.
    pub legacy: LegacyDraftConfig,
}

impl Default for DraftConfig {
    fn default() -> Self {
        Self {
            method: DraftMethod::Restate,
            summary: SummaryConfig::default(),
            citations: CitationConfig::default(),
            chat_template: None,
            legacy: LegacyDraftConfig::default(),
        }
    }
}

/// The restatement sentence a model writes for the draft.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SummaryConfig {
    /// Characters of the complaint the model reads.
    pub complaint_chars: usize,
    /// Longest restatement, in characters.
    pub max_chars: usize,
    /// Share of the restatement's character pairs that must occur in the complaint; otherwise
    /// the work order's title stands in (the model copied an example or wandered).
    pub min_support: f32,
    pub params: GenerateParams,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        Self {
            complaint_chars: 160,
            max_chars: 60,
            min_support: 0.8,
            params: GenerateParams {
                max_tokens: 48,
                temperature: 0.0,
                top_p: 0.9,
                seed: 42,
                stop: vec!["\n".into()],
                repeat_penalty: 1.1,
            },
        }
    }
}

/// The drafts before issue 13: the model writes the whole reply after retrieved replies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LegacyDraftConfig {
    /// Past replies shown to the model as examples.
    pub examples: usize,
    /// Characters of each example complaint and reply kept in the prompt.
    pub example_chars: usize,
    /// Characters of the new complaint kept in the prompt.
    pub complaint_chars: usize,
    /// Longest draft, in characters, after post-processing.
    pub max_chars: usize,
    pub params: GenerateParams,
}

impl Default for LegacyDraftConfig {
    fn default() -> Self {
        Self {
            examples: 2,
            example_chars: 160,
            complaint_chars: 300,
            max_chars: 300,
            params: GenerateParams {
                max_tokens: 160,
                temperature: 0.0,
                top_p: 0.9,
                seed: 42,
                stop: vec!["###".into(), "\n\n\n".into(), "\n来信".into()],
                repeat_penalty: 1.2,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// Similar cases returned with a suggestion.
    pub similar_k: usize,
    /// Units returned with a suggestion.
    pub units_k: usize,
    /// Categories returned with a suggestion.
    pub categories_k: usize,
    pub duplicate: DuplicateConfig,
    pub draft: DraftConfig,
    /// Characters of a similar case's text shown as its snippet.
    pub snippet_chars: usize,
    /// Similar past cases with a unit the unit suggestions read.
    pub unit_neighbors_k: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            similar_k: 5,
            units_k: 3,
            categories_k: 3,
            duplicate: DuplicateConfig::default(),
            draft: DraftConfig::default(),
            snippet_chars: 120,
            unit_neighbors_k: 20,
        }
    }
}

/// What a call-taker typed, plus what is known about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Complaint {
    /// The case id when the complaint is already stored (batch reclassification): the case is
    /// then never its own similar case, neighbour or duplicate.
    #[serde(default)]
    pub id: Option<String>,
    pub text: String,
    #[serde(default)]
    pub title: Option<String>,
    /// When known; otherwise the district is extracted from the text.
    #[serde(default)]
    pub district: Option<String>,
    /// Unix seconds; defaults to now (for the duplicate window).
    #[serde(default)]
    pub time: Option<i64>,
}

impl From<&Case> for Complaint {
    /// A stored (or exported) case seen as a complaint: it keeps its id, so it is never its own
    /// similar case.
    fn from(case: &Case) -> Self {
        Self {
            id: Some(case.id.clone()),
            text: case.text.clone(),
            title: case.title.clone(),
            district: case.district.clone(),
            time: case.time,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub id: String,
    pub name: String,
    pub probability: f32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarCase {
    pub id: String,
    pub score: f32,
    /// The head of the case's text with personal data masked.
    pub snippet: String,
    pub category: Option<String>,
    pub unit: Option<String>,
    pub district: Option<String>,
    pub time: Option<i64>,
    pub has_reply: bool,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Duplicate {
    pub case_id: String,
    pub score: f32,
}

/// The answer for one complaint. Timings are per stage, in milliseconds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suggestion {
    pub categories: Vec<CategoryScore>,
    /// True when the top category's confidence is below the classifier's threshold: a person
    /// must choose.
    pub abstain: bool,
    pub threshold: f32,
    /// The top categories of each method the ensemble combines, for transparency.
    pub methods: BTreeMap<String, Vec<CategoryScore>>,
    pub district: Option<String>,
    pub units: Vec<UnitSuggestion>,
    pub similar: Vec<SimilarCase>,
    pub duplicate: Option<Duplicate>,
    /// The work order (工单) filled from the complaint: title, location, request, flags.
    #[serde(default)]
    pub work_order: Option<WorkOrder>,
    /// What the faithfulness guard changed in the work order (normally nothing: its fields are
    /// taken from the complaint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub work_order_checks: Vec<DraftCheck>,
    /// The reply draft, after the faithfulness guard: 【slots】 for the handling unit,
    /// 「citations」(case id) for the reviewer.
    pub draft: Option<String>,
    /// What the guard changed in the draft.
    #[serde(default)]
    pub draft_checks: Vec<DraftCheck>,
    pub classifier_version: String,
    pub timings_ms: BTreeMap<String, f64>,
}

/// What `analyze` found, and what the draft stage needs from it. The prompt (and the search for
/// past replies it quotes) is built only when a draft is written, so routing alone does not pay
/// for it.
pub struct Analysis {
    pub suggestion: Suggestion,
    /// The stored case's id when the complaint is one (never its own citation or example).
    id: Option<String>,
    full: String,
    vector: Vec<f32>,
    baselines: UnitBaselines,
}

impl Analysis {
    /// The complaint's vector (as a passage, as cases are stored): storing the complaint as a
    /// case reuses it instead of embedding the text again.
    pub fn vector(&self) -> &[f32] {
        &self.vector
    }

    /// What the two simple unit routers would have said (the evaluation's baselines).
    pub fn unit_baselines(&self) -> &UnitBaselines {
        &self.baselines
    }
}

/// The one door to the service's use cases: triage, draft, search, store cases, record
/// feedback, train. Handlers and commands call these and never reach into the parts (built once
/// by `PipelineBuilder`, as text-embeddings-inference's router only knows `Infer`).
pub struct Pipeline {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn CaseStore>,
    generator: Option<Arc<dyn Generator>>,
    taxonomy: Taxonomy,
    units: UnitDirectory,
    /// `units`' names as the guard reads them, folded once.
    unit_names: guard::DirectoryNames,
    aliases: Arc<UnitAliases>,
    /// The configured directory merged with the current classifier's learned units.
    router: RwLock<Arc<Router>>,
    prompts: Arc<Prompts>,
    config: PipelineConfig,
    classifier: RwLock<Option<Arc<Classifier>>>,
}

/// Models, store and classifier of a pipeline, as `/info` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineInfo {
    pub store: String,
    pub embedder: String,
    pub dim: usize,
    /// Tokens of each text the embedder reads.
    pub max_tokens: usize,
    pub generator: Option<String>,
    pub classifier: Option<ClassifierInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassifierInfo {
    pub version: String,
    pub methods: Vec<String>,
    pub threshold: f32,
    pub labeled_cases: usize,
    pub coverage: Option<f32>,
}

/// Why a suggestion cannot be made yet.
const NO_CLASSIFIER: &str = "no classifier yet: run `triage train`";

impl Pipeline {
    pub fn builder(embedder: Arc<dyn Embedder>) -> PipelineBuilder {
        PipelineBuilder::new(embedder)
    }

    /// Replaces the classifier (a newly trained one); refused when it was trained on another
    /// embedder's vectors. Its adapted encoder layers, if any, are bound to this embedder.
    pub fn set_classifier(&self, mut classifier: Classifier) -> Result<()> {
        check_embedder(&classifier, self.embedder.as_ref())?;
        classifier.bind(self.embedder.as_ref())?;
        let router = Router::new(&self.units, &classifier.units, &self.aliases);
        *self.router.write().expect("router lock") = Arc::new(router);
        *self.classifier.write().expect("classifier lock") = Some(Arc::new(classifier));
        Ok(())
    }

    /// The units as routing sees them: configured and learned, with the routing model.
    pub fn router(&self) -> Arc<Router> {
        self.router.read().expect("router lock").clone()
    }

    pub fn classifier(&self) -> Option<Arc<Classifier>> {
        self.classifier.read().expect("classifier lock").clone()
    }

    /// The classifier, or the one "not trained yet" error.
    pub fn require_classifier(&self) -> Result<Arc<Classifier>> {
        self.classifier()
            .ok_or_else(|| Error::NotReady(NO_CLASSIFIER.into()))
    }

    pub fn taxonomy(&self) -> &Taxonomy {
        &self.taxonomy
    }

    /// The unit directory (configured units and districts).
    pub fn units(&self) -> &UnitDirectory {
        &self.units
    }

    /// What a draft or work order of `complaint` may state (`guard::Sources`), with the
    /// directory's names folded once for all requests.
    fn sources(&self, complaint: &str, passages: &[guard::Passage]) -> guard::Sources<'_> {
        let names = std::borrow::Cow::Borrowed(&self.unit_names);
        guard::Sources::with_names(complaint, &self.units, names, passages)
    }

    /// Whether a generator is loaded (reply drafts can be written).
    pub fn can_draft(&self) -> bool {
        self.generator.is_some()
    }

    /// Whether the case store answers now.
    pub fn health(&self) -> Result<()> {
        self.store.health()
    }

    pub fn info(&self) -> PipelineInfo {
        PipelineInfo {
            store: self.store.backend().to_string(),
            embedder: self.embedder.model_id().to_string(),
            dim: self.embedder.dim(),
            max_tokens: self.embedder.max_tokens(),
            generator: self.generator.as_ref().map(|g| g.model_id().to_string()),
            classifier: self.classifier().map(|c| ClassifierInfo {
                version: c.version.clone(),
                methods: c.methods().iter().map(|m| m.to_string()).collect(),
                threshold: c.threshold,
                labeled_cases: c.report.labeled_cases,
                coverage: c.report.coverage,
            }),
        }
    }

    /// The text a complaint is embedded and classified as (normalised title + body), checked
    /// against the input limits.
    pub fn complaint_text(complaint: &Complaint) -> Result<String> {
        let case = Case {
            title: complaint.title.as_deref().map(text::normalize),
            text: text::normalize(&complaint.text),
            ..Default::default()
        };
        let full = case.full_text();
        if full.trim().is_empty() {
            return Err(Error::InvalidInput("the complaint text is empty".into()));
        }
        if full.chars().count() > text::MAX_INPUT_CHARS {
            return Err(Error::InvalidInput(format!(
                "the complaint is longer than {} characters",
                text::MAX_INPUT_CHARS
            )));
        }
        Ok(full)
    }

    /// Embeds complaints (their `complaint_text`) as the pipeline analyses them: the vector, and
    /// in the same encoder pass the adapted layers' class scores when the classifier has them.
    /// Batch jobs embed a chunk at once and then call `analyze_embedded` for each.
    pub fn embed_complaints(&self, texts: &[&str]) -> Result<Vec<Embedded>> {
        match self.classifier().as_ref().and_then(|c| c.head().cloned()) {
            Some(head) => self
                .embedder
                .embed_scored(texts, COMPLAINT_EMBEDDING, &head),
            None => Ok(self
                .embedder
                .embed(texts, COMPLAINT_EMBEDDING)?
                .into_iter()
                .map(Embedded::from)
                .collect()),
        }
    }

    /// Everything but the draft: categories, units, similar cases, duplicate flag.
    pub fn analyze(&self, complaint: &Complaint) -> Result<Analysis> {
        let full = Self::complaint_text(complaint)?;
        let started = Instant::now();
        let embedded = self
            .embed_complaints(&[full.as_str()])?
            .pop()
            .ok_or_else(|| Error::Model("the embedder returned no vector".into()))?;
        let embed_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut analysis = self.analyze_embedded(complaint, &full, &embedded)?;
        analysis
            .suggestion
            .timings_ms
            .insert("embed".into(), embed_ms);
        Ok(analysis)
    }

    /// `analyze` for a complaint already embedded (by `embed_complaints`): batch jobs embed many
    /// at once.
    pub fn analyze_embedded(
        &self,
        complaint: &Complaint,
        full: &str,
        embedded: &Embedded,
    ) -> Result<Analysis> {
        let classifier = self.require_classifier()?;
        let vector = embedded.vector.as_slice();
        let mut timings = BTreeMap::new();
        let mut clock = Instant::now();
        let mut lap = |name: &str, timings: &mut BTreeMap<String, f64>| {
            timings.insert(name.to_string(), clock.elapsed().as_secs_f64() * 1e3);
            clock = Instant::now();
        };

        let similar = self.search_others(
            complaint.id.as_deref(),
            vector,
            self.config.similar_k,
            &CaseFilter::default(),
        )?;
        let labeled = if classifier.uses_neighbors() {
            let filter = CaseFilter {
                labeled_only: true,
                ..Default::default()
            };
            self.search_others(
                complaint.id.as_deref(),
                vector,
                classifier.config.knn_k,
                &filter,
            )?
        } else {
            Vec::new()
        };
        let with_unit = CaseFilter {
            with_unit: true,
            ..Default::default()
        };
        let handled: Vec<UnitNeighbor> = self
            .search_others(
                complaint.id.as_deref(),
                vector,
                self.config.unit_neighbors_k,
                &with_unit,
            )?
            .into_iter()
            .filter_map(|h| {
                Some(UnitNeighbor {
                    unit_id: h.case.unit?,
                    case_id: h.case.id,
                    similarity: h.score,
                })
            })
            .collect();
        lap("search", &mut timings);

        let neighbors = Neighbor::votes(&labeled);
        let scores = classifier.predict(full, vector, embedded.scores.as_deref(), &neighbors)?;
        lap("classify", &mut timings);

        let (mut suggestion, baselines) =
            self.route(&classifier, complaint, full, &scores, &handled);
        suggestion.duplicate =
            self.duplicate(&similar, suggestion.district.as_deref(), complaint.time);
        suggestion.similar = similar.iter().map(|h| self.similar_case(h)).collect();
        lap("units", &mut timings);
        self.fill_work_order(&mut suggestion, complaint, full);
        lap("work_order", &mut timings);
        suggestion.timings_ms = timings;
        Ok(Analysis {
            suggestion,
            id: complaint.id.clone(),
            full: full.to_string(),
            vector: vector.to_vec(),
            baselines,
        })
    }

    /// The quick path of batch `--fast`: the lexical model alone (no embedding, no search), units
    /// by the directory's rules. No similar cases, duplicate flag or draft.
    pub fn analyze_fast(&self, complaint: &Complaint) -> Result<Suggestion> {
        let classifier = self.require_classifier()?;
        let full = Self::complaint_text(complaint)?;
        let started = Instant::now();
        let scores = classifier.predict_lexical(&full).ok_or_else(|| {
            Error::NotReady("the classifier has no lexical model (no labeled cases)".into())
        })?;
        // The ensemble's threshold then applies to the lexical model's calibrated probability.
        let (mut suggestion, _) = self.route(&classifier, complaint, &full, &scores, &[]);
        suggestion
            .timings_ms
            .insert("classify".into(), started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        self.fill_work_order(&mut suggestion, complaint, &full);
        suggestion
            .timings_ms
            .insert("work_order".into(), started.elapsed().as_secs_f64() * 1e3);
        Ok(suggestion)
    }

    /// The work order of a complaint (`work_order::build`, under a millisecond), from its
    /// sanitised text (a complaint's 【】「」 never reach a field), checked by the guard. A title
    /// the caller gave is the work order's title.
    fn fill_work_order(&self, suggestion: &mut Suggestion, complaint: &Complaint, full: &str) {
        let clean = guard::sanitize_complaint(full);
        let hints = work_order::Hints {
            duplicate_of: suggestion.duplicate.as_ref().map(|d| d.case_id.clone()),
        };
        let mut order = work_order::build(&clean, &self.units, &hints);
        if let Some(title) = complaint.title.as_deref().map(str::trim) {
            if !title.is_empty() {
                let title = guard::sanitize_complaint(&text::normalize(title));
                order.title = text::truncate_chars(&title, work_order::TITLE_MAX_CHARS).to_string();
            }
        }
        let sources = self.sources(&clean, &[]);
        let (order, checks) = guard::check_work_order(&order, &sources);
        suggestion.work_order = Some(order);
        suggestion.work_order_checks = checks;
    }

    /// The routing step both analyses share: top categories and the abstain decision, the
    /// district, and the units (the router's, from the directory's rules, the units' history,
    /// the places the text names and `handled`, the similar past cases with a unit), with what
    /// the two baselines would have said.
    fn route(
        &self,
        classifier: &Classifier,
        complaint: &Complaint,
        full: &str,
        scores: &ClassScores,
        handled: &[UnitNeighbor],
    ) -> (Suggestion, UnitBaselines) {
        let k = self.config.categories_k;
        let categories = self.top_categories(classifier, &scores.ensemble, k);
        let confidence = categories.first().map_or(0.0, |c| c.probability);
        let methods = scores
            .methods
            .iter()
            .map(|(m, p)| (m.to_string(), self.top_categories(classifier, p, k)))
            .collect();
        let district = complaint
            .district
            .clone()
            .or_else(|| self.units.extract_district(full).map(|d| d.name.clone()));
        let category_probs: Vec<CategoryProb> = classifier
            .labels
            .iter()
            .zip(scores.ensemble.iter().copied())
            .map(|(id, probability)| CategoryProb {
                id: id.clone(),
                name: self
                    .taxonomy
                    .resolve(id)
                    .map_or_else(|| id.clone(), |c| c.name.clone()),
                probability,
            })
            .collect();
        let query = RouteQuery {
            text: full,
            categories: &category_probs,
            district: district.as_deref(),
            neighbors: handled,
        };
        let units = self.router().suggest(&query, self.config.units_k);
        let baselines = UnitBaselines::new(&self.units, &query);
        let suggestion = Suggestion {
            abstain: confidence < classifier.threshold,
            threshold: classifier.threshold,
            categories,
            methods,
            district,
            units,
            similar: Vec::new(),
            duplicate: None,
            work_order: None,
            work_order_checks: Vec::new(),
            draft: None,
            draft_checks: Vec::new(),
            classifier_version: classifier.version.clone(),
            timings_ms: BTreeMap::new(),
        };
        (suggestion, baselines)
    }

    /// The `k` most similar stored cases other than the complaint itself (its stored `id`).
    fn search_others(
        &self,
        id: Option<&str>,
        vector: &[f32],
        k: usize,
        filter: &CaseFilter,
    ) -> Result<Vec<Hit>> {
        let Some(id) = id else {
            return self.store.search(vector, k, filter);
        };
        let mut hits = self.store.search(vector, k + 1, filter)?;
        hits.retain(|h| h.case.id != id);
        hits.truncate(k);
        Ok(hits)
    }

    fn top_categories(
        &self,
        classifier: &Classifier,
        probs: &[f32],
        k: usize,
    ) -> Vec<CategoryScore> {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        order
            .into_iter()
            .take(k.max(1))
            .map(|i| {
                let id = classifier.labels[i].clone();
                let name = self
                    .taxonomy
                    .resolve(&id)
                    .map_or_else(|| id.clone(), |c| c.name.clone());
                CategoryScore {
                    id,
                    name,
                    probability: probs[i],
                }
            })
            .collect()
    }

    fn duplicate(
        &self,
        similar: &[Hit],
        district: Option<&str>,
        time: Option<i64>,
    ) -> Option<Duplicate> {
        let rule = &self.config.duplicate;
        let now = time.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let nearest = similar.first()?;
        let recent = nearest
            .case
            .time
            .is_none_or(|t| (now - t).abs() <= rule.window_days * 86_400);
        let same_place = !rule.same_district
            || match (district, nearest.case.district.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
        (nearest.score >= rule.threshold && recent && same_place).then(|| Duplicate {
            case_id: nearest.case.id.clone(),
            score: nearest.score,
        })
    }

    /// A stored case as a similar case of a complaint: a masked snippet, no full text.
    fn similar_case(&self, hit: &Hit) -> SimilarCase {
        let snippet =
            text::truncate_chars(&hit.case.full_text(), self.config.snippet_chars).to_string();
        SimilarCase {
            id: hit.case.id.clone(),
            score: hit.score,
            snippet: pii::mask(&snippet),
            category: hit.case.label.clone(),
            unit: hit.case.unit.clone(),
            district: hit.case.district.clone(),
            time: hit.case.time,
            has_reply: hit.case.reply.is_some(),
        }
    }
}

/// A classifier only reads vectors of the embedder it was trained with.
fn check_embedder(classifier: &Classifier, embedder: &dyn Embedder) -> Result<()> {
    if classifier.embedder != embedder.model_id() {
        return Err(Error::InvalidInput(format!(
            "the classifier was trained with embedder {} but {} is loaded: run `triage train`",
            classifier.embedder,
            embedder.model_id()
        )));
    }
    Ok(())
}
