//! Unit suggestions from all the evidence, one calibrated score per unit.
//!
//! The candidates for a complaint are the units of its district and its district's parent
//! (configured and learned), the units everywhere, the units that handled its most similar past
//! cases, and the streets and towns its text names. Each gets a few numbers (`Feature`): the
//! directory's category × district rule, how much of its history is in the complaint's district
//! and likely categories, its share of the similar past cases, whether the text names its place,
//! how its district relates to the complaint's, its kind. A conditional logit turns them into one
//! probability per unit (a softmax over the candidates), with weights fitted by `triage train`
//! on the deployment's own history, each case scored with itself left out (its counts and its
//! own similar-case vote): so the scores are calibrated on held-out data, never on a test split.
//! Without history (a new city with only its directory) the default weights route by the
//! directory's rules, the place names and whatever similar cases carry a unit.
//!
//! Evidence is given in the call-taker's language (the complaint's): "处理过 3 件相似案件（最相似
//! 0.93）", "投诉地点在洋湖街道", "负责A3区的城乡建设".

use super::learned::{LearnedUnit, LearnedUnits, RouteFit, RouteModel};
use super::{UnitDirectory, UnitSuggestion};
use crate::reply_units::{UnitAliases, UnitKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The numbers a unit is scored on. Kinds are a type (STYLE 23): names are the keys of the
/// weights in the learned file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The directory's rule: probability of a category it handles × how near its districts are.
    Rule,
    /// Share of its past cases in the complaint's likely categories.
    HistoryCategory,
    /// Share of the complaint district's past cases it handled.
    HistoryDistrict,
    /// Share of the district's past cases in the complaint's likely categories it handled: a
    /// learned P(unit | category, district).
    HistoryCell,
    /// Its share of the similar past cases (similarity-weighted).
    SimilarShare,
    /// It handled the most similar past case.
    SimilarTop,
    /// How many of the similar past cases it handled (log).
    SimilarCount,
    /// The text names its place in full ("洋湖街道").
    PlaceFull,
    /// The text names its place's name only ("洋湖").
    PlaceCore,
    /// The text names the unit itself with its district ("A3区洋湖街道", "A2区住建局"), read as
    /// replies are read: a unit no past case had is a candidate this way too.
    Named,
    /// It covers the complaint's district.
    SameDistrict,
    /// It covers the district's parent (a city unit for a county's complaint).
    ParentDistrict,
    /// It covers every district.
    Everywhere,
    /// It belongs to another district than the complaint's (a candidate by similarity or place).
    Elsewhere,
    /// How many past cases it handled (log).
    Experience,
    /// The configured directory lists it.
    Configured,
    Bureau,
    Street,
    Town,
    Government,
    OtherKind,
}

const FEATURES: usize = 21;

impl Feature {
    pub const ALL: [Feature; FEATURES] = [
        Feature::Rule,
        Feature::HistoryCategory,
        Feature::HistoryDistrict,
        Feature::HistoryCell,
        Feature::SimilarShare,
        Feature::SimilarTop,
        Feature::SimilarCount,
        Feature::PlaceFull,
        Feature::PlaceCore,
        Feature::Named,
        Feature::SameDistrict,
        Feature::ParentDistrict,
        Feature::Everywhere,
        Feature::Elsewhere,
        Feature::Experience,
        Feature::Configured,
        Feature::Bureau,
        Feature::Street,
        Feature::Town,
        Feature::Government,
        Feature::OtherKind,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Feature::Rule => "rule",
            Feature::HistoryCategory => "history_category",
            Feature::HistoryDistrict => "history_district",
            Feature::HistoryCell => "history_cell",
            Feature::SimilarShare => "similar_share",
            Feature::SimilarTop => "similar_top",
            Feature::SimilarCount => "similar_count",
            Feature::PlaceFull => "place_full",
            Feature::PlaceCore => "place_core",
            Feature::Named => "named",
            Feature::SameDistrict => "same_district",
            Feature::ParentDistrict => "parent_district",
            Feature::Everywhere => "everywhere",
            Feature::Elsewhere => "elsewhere",
            Feature::Experience => "experience",
            Feature::Configured => "configured",
            Feature::Bureau => "kind_bureau",
            Feature::Street => "kind_street",
            Feature::Town => "kind_town",
            Feature::Government => "kind_district_government",
            Feature::OtherKind => "kind_other",
        }
    }

    fn index(self) -> usize {
        Feature::ALL
            .iter()
            .position(|f| *f == self)
            .expect("every feature is in ALL")
    }
}

type Row = [f32; FEATURES];

/// One weight per feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights([f32; FEATURES]);

impl Default for Weights {
    /// Before any history: the directory's rule decides, a named place or a similar case with a
    /// unit adds to it, a unit of another district needs strong evidence.
    fn default() -> Self {
        let mut w = Weights([0.0; FEATURES]);
        for (f, v) in [
            (Feature::Rule, 8.0),
            (Feature::SimilarShare, 4.0),
            (Feature::SimilarTop, 1.0),
            (Feature::PlaceFull, 4.0),
            (Feature::PlaceCore, 1.5),
            (Feature::Named, 2.0),
            (Feature::SameDistrict, 1.0),
            (Feature::ParentDistrict, 0.3),
            (Feature::Elsewhere, -2.0),
        ] {
            w.set(f, v);
        }
        w
    }
}

impl Weights {
    pub fn get(&self, f: Feature) -> f32 {
        self.0[f.index()]
    }

    pub fn set(&mut self, f: Feature, v: f32) {
        self.0[f.index()] = v;
    }

    fn score(&self, row: &Row) -> f32 {
        self.0.iter().zip(row).map(|(w, x)| w * x).sum()
    }
}

/// Whether a unit comes from the configured directory or was learned from past cases.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitSource {
    Configured,
    Learned,
    /// Named in the complaint itself, with no past case and not configured.
    Named,
}

/// A past case that a unit handled, similar to the complaint.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitNeighbor {
    pub case_id: String,
    pub unit_id: String,
    pub similarity: f32,
}

/// A category the classifier suggests, with its display name (for the evidence).
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryProb {
    pub id: String,
    pub name: String,
    pub probability: f32,
}

/// What the router reads about one complaint.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    /// Title and text.
    pub text: &'a str,
    pub categories: &'a [CategoryProb],
    pub district: Option<&'a str>,
    /// Similar past cases with a unit, most similar first.
    pub neighbors: &'a [UnitNeighbor],
}

/// A past case's own contribution, taken out when the case is scored in training.
#[derive(Debug, Clone, Copy)]
struct Own<'a> {
    unit: &'a str,
    category: Option<&'a str>,
    district: Option<&'a str>,
}

/// Why a unit is suggested, in words a call-taker reads and in fields a page can render.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnitEvidence {
    /// The directory says it handles the category in the district.
    Rule {
        category: String,
        district: Option<String>,
        text: String,
    },
    /// It handled similar past cases.
    SimilarCases {
        count: usize,
        best: f32,
        case_ids: Vec<String>,
        text: String,
    },
    /// The complaint names its place.
    Place { place: String, text: String },
    /// It handled past cases from the complaint's district.
    History {
        district: String,
        cases: u32,
        text: String,
    },
}

/// The language evidence is written in: the complaint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// Chinese when at least a fifth of the text's letters are Han characters.
    pub fn of(text: &str) -> Self {
        let (mut han, mut letters) = (0usize, 0usize);
        for c in text.chars().filter(|c| c.is_alphabetic()) {
            letters += 1;
            if ('\u{4e00}'..='\u{9fff}').contains(&c) {
                han += 1;
            }
        }
        if letters > 0 && han * 5 >= letters {
            Lang::Zh
        } else {
            Lang::En
        }
    }
}

impl UnitEvidence {
    fn rule(category: &str, district: Option<&str>, lang: Lang) -> Self {
        let text = match (lang, district) {
            (Lang::Zh, Some(d)) => format!("负责{d}的{category}"),
            (Lang::Zh, None) => format!("负责{category}"),
            (Lang::En, Some(d)) => format!("handles {category} in {d}"),
            (Lang::En, None) => format!("handles {category}"),
        };
        UnitEvidence::Rule {
            category: category.to_string(),
            district: district.map(str::to_string),
            text,
        }
    }

    fn similar(case_ids: Vec<String>, best: f32, lang: Lang) -> Self {
        let count = case_ids.len();
        let text = match lang {
            Lang::Zh => format!("处理过 {count} 件相似案件（最相似 {best:.2}）"),
            Lang::En if count == 1 => format!("handled 1 similar past case ({best:.2} similar)"),
            Lang::En => format!("handled {count} similar past cases (most similar {best:.2})"),
        };
        UnitEvidence::SimilarCases {
            count,
            best,
            case_ids,
            text,
        }
    }

    fn place(place: &str, lang: Lang) -> Self {
        let text = match lang {
            Lang::Zh => format!("投诉地点在{place}"),
            Lang::En => format!("the complaint names {place}"),
        };
        UnitEvidence::Place {
            place: place.to_string(),
            text,
        }
    }

    fn history(district: &str, cases: u32, lang: Lang) -> Self {
        let text = match lang {
            Lang::Zh => format!("处理过{district}的 {cases} 件案件"),
            Lang::En if cases == 1 => format!("handled 1 past case in {district}"),
            Lang::En => format!("handled {cases} past cases in {district}"),
        };
        UnitEvidence::History {
            district: district.to_string(),
            cases,
            text,
        }
    }

    /// The sentence shown to the call-taker.
    pub fn text(&self) -> &str {
        match self {
            UnitEvidence::Rule { text, .. }
            | UnitEvidence::SimilarCases { text, .. }
            | UnitEvidence::Place { text, .. }
            | UnitEvidence::History { text, .. } => text,
        }
    }
}

/// A unit as the router sees it: configured and learned, merged.
#[derive(Debug, Clone, Serialize)]
pub struct RouteUnit {
    pub id: String,
    pub name: String,
    pub kind: UnitKind,
    pub source: UnitSource,
    /// Districts it covers; empty: everywhere.
    pub districts: Vec<String>,
    /// Categories the configured directory says it handles (its rules).
    pub categories: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// The parent of its district (for learned units).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Past cases it handled, with their categories and districts.
    pub cases: u32,
    pub case_categories: BTreeMap<String, u32>,
    pub case_districts: BTreeMap<String, u32>,
    /// The place it is named after, in full ("洋湖街道") and short ("洋湖").
    #[serde(skip)]
    place: Option<(String, String)>,
}

/// Configured and learned units with the routing model: suggests units for complaints.
#[derive(Debug, Clone)]
pub struct Router {
    directory: UnitDirectory,
    units: Vec<RouteUnit>,
    by_id: HashMap<String, usize>,
    /// Units covering each district, and those covering every district.
    by_district: HashMap<String, Vec<usize>>,
    everywhere: Vec<usize>,
    /// Units named after a place.
    places: Vec<usize>,
    /// Past cases with a unit, per district of the case.
    district_cases: HashMap<String, u32>,
    /// Past cases with a unit, per (district, category) of the case. A unit keeps its category
    /// and district counts apart, so each unit's cases are spread over its districts in
    /// proportion (exact for the usual unit of one district).
    cell_cases: HashMap<(String, String), f32>,
    /// For reading the units a complaint names.
    aliases: UnitAliases,
    weights: Weights,
    fit: RouteFit,
}

/// Candidates of one complaint with their features.
struct Scored {
    /// Indices into the router's units, then into `extra`.
    units: Vec<usize>,
    rows: Vec<Row>,
    /// Units the complaint names that the router does not know (no past case, not configured).
    extra: Vec<RouteUnit>,
}

impl Scored {
    fn unit<'a>(&'a self, router: &'a Router, i: usize) -> &'a RouteUnit {
        let n = router.units.len();
        if i < n {
            &router.units[i]
        } else {
            &self.extra[i - n]
        }
    }
}

/// Precision of similar-case weights: the most similar case weighs e ≈ 2.7 times one 0.05 less
/// similar.
const SIMILAR_TAU: f32 = 0.05;

impl Router {
    /// The configured directory alone, default weights.
    pub fn from_directory(directory: &UnitDirectory, aliases: &UnitAliases) -> Self {
        Self::new(directory, &LearnedUnits::default(), aliases)
    }

    /// The configured directory with what was learned (the configured directory wins on a unit's
    /// name, categories and districts; the learned file adds history and units it lacks).
    pub fn new(directory: &UnitDirectory, learned: &LearnedUnits, aliases: &UnitAliases) -> Self {
        let history: HashMap<&str, &LearnedUnit> =
            learned.units.iter().map(|u| (u.id.as_str(), u)).collect();
        let mut units: Vec<RouteUnit> = Vec::new();
        for u in &directory.units {
            let h = history.get(u.id.as_str());
            let (_, body) = super::learned::split_district(directory, &u.name);
            units.push(RouteUnit {
                id: u.id.clone(),
                name: u.name.clone(),
                kind: aliases.kind_of(body),
                source: UnitSource::Configured,
                districts: u.districts.clone(),
                categories: u.categories.clone(),
                contact: u.contact.clone(),
                parent: None,
                cases: h.map_or(0, |h| h.cases),
                case_categories: h.map(|h| h.categories.clone()).unwrap_or_default(),
                case_districts: h.map(|h| h.districts.clone()).unwrap_or_default(),
                place: None,
            });
        }
        for u in &learned.units {
            if directory.units.iter().any(|c| c.id == u.id) {
                continue;
            }
            units.push(RouteUnit {
                id: u.id.clone(),
                name: u.name.clone(),
                kind: u.kind,
                source: UnitSource::Learned,
                districts: u.district.iter().cloned().collect(),
                categories: Vec::new(),
                contact: None,
                parent: u.parent.clone(),
                cases: u.cases,
                case_categories: u.categories.clone(),
                case_districts: u.districts.clone(),
                place: None,
            });
        }
        let mut by_id = HashMap::new();
        let mut by_district: HashMap<String, Vec<usize>> = HashMap::new();
        let (mut everywhere, mut places) = (Vec::new(), Vec::new());
        let mut district_cases: HashMap<String, u32> = HashMap::new();
        let mut cell_cases: HashMap<(String, String), f32> = HashMap::new();
        for (i, unit) in units.iter_mut().enumerate() {
            by_id.entry(unit.id.clone()).or_insert(i);
            if unit.districts.is_empty() {
                everywhere.push(i);
            }
            for d in &unit.districts {
                by_district.entry(d.clone()).or_default().push(i);
            }
            for (d, n) in &unit.case_districts {
                *district_cases.entry(d.clone()).or_default() += n;
                for (c, m) in &unit.case_categories {
                    *cell_cases.entry((d.clone(), c.clone())).or_default() +=
                        (*n as f32) * (*m as f32) / unit.cases.max(1) as f32;
                }
            }
            unit.place = place_of_unit(directory, aliases, unit);
            if unit.place.is_some() {
                places.push(i);
            }
        }
        Self {
            directory: directory.clone(),
            units,
            by_id,
            by_district,
            everywhere,
            places,
            district_cases,
            cell_cases,
            aliases: aliases.clone(),
            weights: learned.model.weights(),
            fit: learned.model.fit.clone(),
        }
    }

    /// Every unit, configured first.
    pub fn units(&self) -> &[RouteUnit] {
        &self.units
    }

    /// The unit with this id or name (configured or learned).
    pub fn resolve(&self, id_or_name: &str) -> Option<&RouteUnit> {
        self.by_id
            .get(id_or_name)
            .map(|&i| &self.units[i])
            .or_else(|| self.units.iter().find(|u| u.name == id_or_name))
    }

    pub fn fit(&self) -> &RouteFit {
        &self.fit
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The top `k` units for a complaint, each with its probability and evidence.
    pub fn suggest(&self, query: &RouteQuery, k: usize) -> Vec<UnitSuggestion> {
        let scored = self.score(query, None);
        let probs = softmax(&scored.rows, &self.weights);
        let mut order: Vec<usize> = (0..scored.units.len()).collect();
        order.sort_by(|&a, &b| {
            probs[b].total_cmp(&probs[a]).then_with(|| {
                let id = |c: usize| &scored.unit(self, scored.units[c]).id;
                id(a).cmp(id(b))
            })
        });
        let lang = Lang::of(query.text);
        order
            .into_iter()
            .take(k)
            .map(|c| {
                let unit = scored.unit(self, scored.units[c]);
                self.suggestion(unit, &scored.rows[c], probs[c], query, lang)
            })
            .collect()
    }

    fn suggestion(
        &self,
        unit: &RouteUnit,
        row: &Row,
        probability: f32,
        query: &RouteQuery,
        lang: Lang,
    ) -> UnitSuggestion {
        let mut evidence = Vec::new();
        let mut rule = None;
        if row[Feature::Rule.index()] > 0.0 {
            if let Some((category, place)) = self.rule_match(unit, query) {
                let name = query
                    .categories
                    .iter()
                    .find(|c| c.id == category)
                    .map_or(category.as_str(), |c| c.name.as_str());
                rule = Some(format!(
                    "handles {category} in {}",
                    place.as_deref().unwrap_or("everywhere")
                ));
                evidence.push(UnitEvidence::rule(name, place.as_deref(), lang));
            }
        }
        let similar: Vec<&UnitNeighbor> = query
            .neighbors
            .iter()
            .filter(|n| n.unit_id == unit.id)
            .collect();
        if let Some(best) = similar.first() {
            let ids = similar.iter().map(|n| n.case_id.clone()).collect();
            evidence.push(UnitEvidence::similar(ids, best.similarity, lang));
        }
        let placed = [Feature::PlaceFull, Feature::PlaceCore, Feature::Named]
            .iter()
            .any(|f| row[f.index()] > 0.0);
        if placed {
            if let Some((full, core)) = &unit.place {
                let named = if query.text.contains(full.as_str()) {
                    full
                } else {
                    core
                };
                evidence.push(UnitEvidence::place(named, lang));
            }
        }
        if let Some(d) = query.district {
            let n = unit.case_districts.get(d).copied().unwrap_or(0);
            if n > 0 && similar.is_empty() {
                evidence.push(UnitEvidence::history(d, n, lang));
            }
        }
        UnitSuggestion {
            unit_id: unit.id.clone(),
            name: unit.name.clone(),
            score: probability,
            rule,
            similar_cases: similar.iter().map(|n| n.case_id.clone()).collect(),
            contact: unit.contact.clone(),
            kind: Some(unit.kind),
            source: Some(unit.source),
            district: unit.districts.first().cloned(),
            evidence,
        }
    }

    /// The category (of those the unit handles, the likeliest) and the district of its rule.
    fn rule_match(&self, unit: &RouteUnit, query: &RouteQuery) -> Option<(String, Option<String>)> {
        let category = query
            .categories
            .iter()
            .filter(|c| unit.categories.contains(&c.id))
            .max_by(|a, b| a.probability.total_cmp(&b.probability))?;
        let lineage = query
            .district
            .map(|d| self.directory.lineage(d))
            .unwrap_or_default();
        let place = lineage
            .iter()
            .find(|d| unit.districts.contains(d))
            .cloned()
            .or_else(|| unit.districts.first().cloned());
        Some((category.id.clone(), place))
    }

    /// The candidates of a complaint and their features. `own` takes a training case's own
    /// contribution out of the counts (and its similar cases are given without it).
    fn score(&self, query: &RouteQuery, own: Option<Own>) -> Scored {
        // No district in the text: the district of the places it names in full, when the known
        // street and town units named after them all lie in one district.
        let inferred = match query.district {
            Some(_) => None,
            None => {
                let districts: std::collections::BTreeSet<&String> = self
                    .places
                    .iter()
                    .map(|&i| &self.units[i])
                    .filter(|u| {
                        u.place
                            .as_ref()
                            .is_some_and(|(full, _)| query.text.contains(full.as_str()))
                    })
                    .flat_map(|u| &u.districts)
                    .collect();
                match districts.len() {
                    1 => districts.into_iter().next().cloned(),
                    _ => None,
                }
            }
        };
        let district = query.district.or(inferred.as_deref());
        let lineage = district
            .map(|d| self.directory.lineage(d))
            .unwrap_or_default();
        let mut candidates: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // A training case's unit learned from that case alone is, with the case left out, a unit
        // no past case had: as at serving time, only the text naming it makes it a candidate.
        let unseen = |i: usize| {
            let u = &self.units[i];
            own.is_some_and(|o| u.source == UnitSource::Learned && u.cases <= 1 && u.id == o.unit)
        };
        let mut add = |i: usize, candidates: &mut Vec<usize>| {
            if (i >= self.units.len() || !unseen(i)) && seen.insert(i) {
                candidates.push(i);
            }
        };
        for i in &self.everywhere {
            add(*i, &mut candidates);
        }
        if lineage.is_empty() {
            // No district: the units of the top-level districts (cities) may still apply.
            for d in self
                .directory
                .districts
                .iter()
                .filter(|d| d.parent.is_none())
            {
                for &i in self.by_district.get(&d.name).into_iter().flatten() {
                    add(i, &mut candidates);
                }
            }
        }
        for d in &lineage {
            for &i in self.by_district.get(d).into_iter().flatten() {
                add(i, &mut candidates);
            }
        }
        for n in query.neighbors {
            if let Some(&i) = self.by_id.get(&n.unit_id) {
                add(i, &mut candidates);
            }
        }
        let text = query.text;
        let place_in_text = |unit: &RouteUnit| -> (bool, bool) {
            match &unit.place {
                Some((full, core)) => {
                    let full_hit = text.contains(full.as_str());
                    (full_hit, !full_hit && text.contains(core.as_str()))
                }
                None => (false, false),
            }
        };
        for &i in &self.places {
            let (full, core) = place_in_text(&self.units[i]);
            if full || core {
                add(i, &mut candidates);
            }
        }
        // Units the text names with their district, read as a reply is read; one no past case
        // had becomes a candidate of its own.
        let mut extra: Vec<RouteUnit> = Vec::new();
        let mut named: Vec<usize> = Vec::new();
        for u in crate::reply_units::extract_units(text, text, &self.directory, &self.aliases) {
            if u.district.is_none() || u.kind == UnitKind::Other {
                continue;
            }
            let i = match self.by_id.get(&u.id) {
                Some(&i) => i,
                None => match extra.iter().position(|e| e.id == u.id) {
                    Some(e) => self.units.len() + e,
                    None => {
                        let mut unit = RouteUnit {
                            id: u.id.clone(),
                            name: u.name.clone(),
                            kind: u.kind,
                            source: UnitSource::Named,
                            districts: u.district.iter().cloned().collect(),
                            categories: Vec::new(),
                            contact: None,
                            parent: None,
                            cases: 0,
                            case_categories: BTreeMap::new(),
                            case_districts: BTreeMap::new(),
                            place: None,
                        };
                        unit.place = place_of_unit(&self.directory, &self.aliases, &unit);
                        extra.push(unit);
                        self.units.len() + extra.len() - 1
                    }
                },
            };
            if seen.insert(i) {
                candidates.push(i);
            }
            named.push(i);
        }
        // The complaint district's government, where the history has district governments
        // handling cases (replies say a case went "to the district"): a candidate even when no
        // past case of this district went there.
        let governments = self
            .units
            .iter()
            .any(|u| u.kind == UnitKind::DistrictGovernment && u.cases > 0);
        if let (true, Some(d)) = (governments, district) {
            let (id, name) =
                crate::reply_units::district_government(d, &self.directory, &self.aliases);
            let i = match self.by_id.get(&id) {
                Some(&i) => Some(i),
                None if extra.iter().any(|e| e.id == id) => None,
                None => {
                    extra.push(RouteUnit {
                        id,
                        name,
                        kind: UnitKind::DistrictGovernment,
                        source: UnitSource::Named,
                        districts: vec![d.to_string()],
                        categories: Vec::new(),
                        contact: None,
                        parent: None,
                        cases: 0,
                        case_categories: BTreeMap::new(),
                        case_districts: BTreeMap::new(),
                        place: None,
                    });
                    Some(self.units.len() + extra.len() - 1)
                }
            };
            if let Some(i) = i {
                if seen.insert(i) {
                    candidates.push(i);
                }
            }
        }
        let get = |i: usize| -> &RouteUnit {
            if i < self.units.len() {
                &self.units[i]
            } else {
                &extra[i - self.units.len()]
            }
        };
        // Similar cases: similarity-weighted votes.
        let top = query.neighbors.first().map_or(0.0, |n| n.similarity);
        let mut votes: HashMap<&str, (f32, u32)> = HashMap::new();
        let mut total = 0.0f32;
        for n in query.neighbors {
            let w = ((n.similarity - top) / SIMILAR_TAU).exp();
            total += w;
            let v = votes.entry(n.unit_id.as_str()).or_default();
            v.0 += w;
            v.1 += 1;
        }
        let top_unit = query.neighbors.first().map(|n| n.unit_id.as_str());
        // History of the complaint's district, less a training case's own.
        let own_in = |unit: &str| own.filter(|o| o.unit == unit);
        let district_total = district.map_or(0.0, |d| {
            let n = self.district_cases.get(d).copied().unwrap_or(0) as f32;
            n - own.filter(|o| o.district == Some(d)).map_or(0.0, |_| 1.0)
        });
        let rows = candidates
            .iter()
            .map(|&i| {
                let unit = get(i);
                let mut row = [0f32; FEATURES];
                let mut set = |f: Feature, v: f32| row[f.index()] = v;
                // The directory's rule.
                let fit = if unit.districts.is_empty() {
                    if lineage.is_empty() {
                        1.0
                    } else {
                        0.3
                    }
                } else if lineage.is_empty() {
                    0.2
                } else {
                    lineage
                        .iter()
                        .position(|d| unit.districts.contains(d))
                        .map_or(0.0, |level| 0.5f32.powi(level as i32))
                };
                let p = query
                    .categories
                    .iter()
                    .filter(|c| unit.categories.contains(&c.id))
                    .map(|c| c.probability)
                    .fold(0.0f32, f32::max);
                set(Feature::Rule, p * fit);
                // History, less the case's own.
                let mine = own_in(&unit.id);
                let cases = unit.cases as f32 - mine.map_or(0.0, |_| 1.0);
                if cases > 0.0 {
                    let share: f32 = query
                        .categories
                        .iter()
                        .map(|c| {
                            let n = unit.case_categories.get(&c.id).copied().unwrap_or(0) as f32
                                - mine
                                    .filter(|o| o.category == Some(c.id.as_str()))
                                    .map_or(0.0, |_| 1.0);
                            c.probability * n.max(0.0) / cases
                        })
                        .sum();
                    set(Feature::HistoryCategory, share);
                    set(Feature::Experience, (1.0 + cases).ln());
                }
                if let Some(d) = district {
                    let n = unit.case_districts.get(d).copied().unwrap_or(0) as f32
                        - mine.filter(|o| o.district == Some(d)).map_or(0.0, |_| 1.0);
                    if district_total > 0.0 && n > 0.0 {
                        set(Feature::HistoryDistrict, n / district_total);
                    }
                    // P(unit | category, district): of the district's past cases in each likely
                    // category, the share this unit handled (less the case's own).
                    if n > 0.0 && cases > 0.0 {
                        let cell: f32 = query
                            .categories
                            .iter()
                            .map(|c| {
                                let own_cell = own
                                    .filter(|o| {
                                        o.district == Some(d) && o.category == Some(c.id.as_str())
                                    })
                                    .map_or(0.0, |_| 1.0);
                                let all = self
                                    .cell_cases
                                    .get(&(d.to_string(), c.id.clone()))
                                    .copied()
                                    .unwrap_or(0.0)
                                    - own_cell;
                                let m = unit.case_categories.get(&c.id).copied().unwrap_or(0)
                                    as f32
                                    - mine
                                        .filter(|o| o.category == Some(c.id.as_str()))
                                        .map_or(0.0, |_| 1.0);
                                let mine_cell = (m.max(0.0) * n / cases).min(all);
                                if all > 0.0 {
                                    c.probability * mine_cell / all
                                } else {
                                    0.0
                                }
                            })
                            .sum();
                        set(Feature::HistoryCell, cell.min(1.0));
                    }
                }
                // Similar cases.
                if let Some((w, count)) = votes.get(unit.id.as_str()) {
                    set(Feature::SimilarShare, w / total.max(1e-6));
                    set(Feature::SimilarCount, (1.0 + *count as f32).ln());
                }
                if top_unit == Some(unit.id.as_str()) {
                    set(Feature::SimilarTop, 1.0);
                }
                // Place named in the text.
                let (full, core) = place_in_text(unit);
                set(Feature::PlaceFull, full as u8 as f32);
                set(Feature::PlaceCore, core as u8 as f32);
                set(Feature::Named, named.contains(&i) as u8 as f32);
                // Districts.
                if unit.districts.is_empty() {
                    set(Feature::Everywhere, 1.0);
                } else if let Some(level) = lineage.iter().position(|d| unit.districts.contains(d))
                {
                    set(
                        if level == 0 {
                            Feature::SameDistrict
                        } else {
                            Feature::ParentDistrict
                        },
                        1.0,
                    );
                } else if !lineage.is_empty() {
                    set(Feature::Elsewhere, 1.0);
                }
                set(
                    Feature::Configured,
                    (unit.source == UnitSource::Configured) as u8 as f32,
                );
                set(
                    match unit.kind {
                        UnitKind::Bureau => Feature::Bureau,
                        UnitKind::Street => Feature::Street,
                        UnitKind::Town => Feature::Town,
                        UnitKind::DistrictGovernment => Feature::Government,
                        _ => Feature::OtherKind,
                    },
                    1.0,
                );
                row
            })
            .collect();
        Scored {
            units: candidates,
            rows,
            extra,
        }
    }
}

/// The place a street, town or village unit is named after, in full and short.
fn place_of_unit(
    directory: &UnitDirectory,
    aliases: &UnitAliases,
    unit: &RouteUnit,
) -> Option<(String, String)> {
    if !matches!(
        unit.kind,
        UnitKind::Street | UnitKind::Town | UnitKind::Village
    ) {
        return None;
    }
    let (_, body) = super::learned::split_district(directory, &unit.name);
    aliases
        .place_core(body)
        .map(|(core, ending, _)| (format!("{core}{ending}"), core))
}

/// Softmax of the weighted rows.
fn softmax(rows: &[Row], weights: &Weights) -> Vec<f32> {
    let scores: Vec<f32> = rows.iter().map(|r| weights.score(r)).collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum.max(1e-30)).collect()
}

/// One past case for fitting: the query as the service would see it (its similar cases with
/// units, without itself), and the gold unit.
#[derive(Debug, Clone)]
pub struct TrainingCase<'a> {
    pub query: RouteQuery<'a>,
    pub unit: &'a str,
    /// The case's own category (label or top prediction) and district, taken out of the counts.
    pub category: Option<&'a str>,
}

/// Fits the weights of `router` on past cases (each scored with its own contribution left out)
/// and returns the fitted model. With no usable case the default weights stay, unfitted.
pub fn fit_model(router: &Router, cases: &[TrainingCase]) -> RouteModel {
    let samples: Vec<(Scored, usize)> = cases
        .iter()
        .map(|c| {
            let own = Own {
                unit: c.unit,
                category: c.category,
                district: c.query.district,
            };
            let scored = router.score(&c.query, Some(own));
            let gold = scored
                .units
                .iter()
                .position(|&u| scored.unit(router, u).id == c.unit);
            (scored, gold.unwrap_or(usize::MAX))
        })
        .collect();
    let usable: Vec<(&[Row], usize)> = samples
        .iter()
        .filter(|(_, g)| *g != usize::MAX)
        .map(|(s, g)| (s.rows.as_slice(), *g))
        .collect();
    if usable.is_empty() {
        return RouteModel::from_weights(&router.weights, RouteFit::default());
    }
    let weights = conditional_logit(&usable, router.weights);
    let (mut top1, mut top3) = (0usize, 0usize);
    for (rows, gold) in &usable {
        let probs = softmax(rows, &weights);
        let better = probs.iter().filter(|p| **p > probs[*gold]).count();
        top1 += (better == 0) as usize;
        top3 += (better < 3) as usize;
    }
    let n = samples.len() as f32;
    RouteModel::from_weights(
        &weights,
        RouteFit {
            cases: samples.len(),
            loo_top1: Some(top1 as f32 / n),
            loo_top3: Some(top3 as f32 / n),
            reachable: Some(usable.len() as f32 / n),
        },
    )
}

/// Maximum likelihood of the gold candidate under a softmax over each case's candidates, with a
/// small L2 penalty, by Adam from `start`. Twenty weights on hundreds of cases: full batch.
fn conditional_logit(samples: &[(&[Row], usize)], start: Weights) -> Weights {
    const STEPS: usize = 400;
    const RATE: f32 = 0.05;
    const L2: f32 = 1e-3;
    let n = samples.len() as f32;
    let mut w = start.0;
    let (mut m, mut v) = ([0f32; FEATURES], [0f32; FEATURES]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    for step in 1..=STEPS {
        let mut grad = [0f32; FEATURES];
        for (rows, gold) in samples {
            let probs = softmax(rows, &Weights(w));
            for (row, p) in rows.iter().zip(&probs) {
                for j in 0..FEATURES {
                    grad[j] += p * row[j];
                }
            }
            for j in 0..FEATURES {
                grad[j] -= rows[*gold][j];
            }
        }
        for j in 0..FEATURES {
            let g = grad[j] / n + L2 * w[j];
            m[j] = b1 * m[j] + (1.0 - b1) * g;
            v[j] = b2 * v[j] + (1.0 - b2) * g * g;
            let m_hat = m[j] / (1.0 - b1.powi(step as i32));
            let v_hat = v[j] / (1.0 - b2.powi(step as i32));
            w[j] -= RATE * m_hat / (v_hat.sqrt() + eps);
        }
    }
    Weights(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beijing() -> UnitDirectory {
        UnitDirectory::from_toml(
            r#"
            [[district]]
            name = "北京市"
            [[district]]
            name = "朝阳区"
            parent = "北京市"
            [[district]]
            name = "海淀区"
            parent = "北京市"

            [[unit]]
            id = "cy-edu"
            name = "朝阳区教育委员会"
            categories = ["education"]
            districts = ["朝阳区"]
            [[unit]]
            id = "hd-edu"
            name = "海淀区教育委员会"
            categories = ["education"]
            districts = ["海淀区"]
            [[unit]]
            id = "cy-wangjing"
            name = "朝阳区望京街道"
            categories = ["urban"]
            districts = ["朝阳区"]
            [[unit]]
            id = "bj-transport"
            name = "北京市交通委员会"
            categories = ["transport"]
            districts = ["北京市"]
            "#,
        )
        .unwrap()
    }

    fn cats(pairs: &[(&str, f32)]) -> Vec<CategoryProb> {
        pairs
            .iter()
            .map(|(id, p)| CategoryProb {
                id: id.to_string(),
                name: id.to_string(),
                probability: *p,
            })
            .collect()
    }

    #[test]
    fn a_directory_alone_routes_by_its_rules_and_places() {
        let router = Router::from_directory(&beijing(), &UnitAliases::builtin());
        let categories = cats(&[("education", 0.9), ("transport", 0.1)]);
        let units = router.suggest(
            &RouteQuery {
                text: "朝阳区某小学乱收费",
                categories: &categories,
                district: Some("朝阳区"),
                neighbors: &[],
            },
            3,
        );
        assert_eq!(units[0].unit_id, "cy-edu");
        assert!(units[0].score > 0.5, "{units:?}");
        assert!(units.iter().all(|u| u.unit_id != "hd-edu"));
        assert_eq!(units[0].evidence[0].text(), "负责朝阳区的education");
        // A city unit for a district's complaint, when its category says so.
        let categories = cats(&[("transport", 0.9)]);
        let units = router.suggest(
            &RouteQuery {
                text: "朝阳区公交车不按站停",
                categories: &categories,
                district: Some("朝阳区"),
                neighbors: &[],
            },
            1,
        );
        assert_eq!(units[0].unit_id, "bj-transport");
        // A street the complaint names.
        let categories = cats(&[("urban", 0.5), ("education", 0.5)]);
        let units = router.suggest(
            &RouteQuery {
                text: "望京街道的路灯坏了",
                categories: &categories,
                district: Some("朝阳区"),
                neighbors: &[],
            },
            1,
        );
        assert_eq!(units[0].unit_id, "cy-wangjing");
        assert!(units[0]
            .evidence
            .iter()
            .any(|e| e.text() == "投诉地点在望京街道"));
    }

    #[test]
    fn a_unit_the_complaint_names_is_a_candidate_without_any_history() {
        // Neither the directory nor any past case knows this street: the text names it with its
        // district, as a reply would, and the street can be suggested.
        let router = Router::from_directory(&beijing(), &UnitAliases::builtin());
        let categories = cats(&[("urban", 0.6), ("education", 0.4)]);
        let units = router.suggest(
            &RouteQuery {
                text: "朝阳区三里屯街道某小区门口的路灯坏了",
                categories: &categories,
                district: Some("朝阳区"),
                neighbors: &[],
            },
            3,
        );
        let street = units
            .iter()
            .find(|u| u.name == "朝阳区三里屯街道")
            .unwrap_or_else(|| panic!("{units:?}"));
        assert_eq!(street.source, Some(UnitSource::Named));
        assert!(
            street
                .evidence
                .iter()
                .any(|e| e.text() == "投诉地点在三里屯街道"),
            "{street:?}"
        );
        assert!(
            router.resolve("朝阳区三里屯街道").is_none(),
            "not added to the directory"
        );
    }

    #[test]
    fn similar_cases_bring_learned_units_and_say_so_in_the_complaints_language() {
        let directory = beijing();
        let learned = LearnedUnits {
            units: vec![LearnedUnit {
                id: "朝阳区物业管理公司".into(),
                name: "朝阳区物业管理公司".into(),
                kind: UnitKind::Company,
                district: Some("朝阳区".into()),
                parent: Some("北京市".into()),
                cases: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        let router = Router::new(&directory, &learned, &UnitAliases::builtin());
        let neighbors: Vec<UnitNeighbor> = [0.93, 0.91, 0.88]
            .iter()
            .enumerate()
            .map(|(i, s)| UnitNeighbor {
                case_id: format!("c{i}"),
                unit_id: "朝阳区物业管理公司".into(),
                similarity: *s,
            })
            .collect();
        let categories = cats(&[("urban", 0.6), ("education", 0.4)]);
        let zh = router.suggest(
            &RouteQuery {
                text: "小区物业不作为，电梯坏了没人修",
                categories: &categories,
                district: Some("朝阳区"),
                neighbors: &neighbors,
            },
            2,
        );
        assert_eq!(zh[0].unit_id, "朝阳区物业管理公司");
        assert_eq!(zh[0].source, Some(UnitSource::Learned));
        assert_eq!(zh[0].similar_cases, ["c0", "c1", "c2"]);
        assert!(zh[0]
            .evidence
            .iter()
            .any(|e| e.text() == "处理过 3 件相似案件（最相似 0.93）"));
        let en = router.suggest(
            &RouteQuery {
                text: "The lift in our building has been broken for weeks",
                categories: &categories,
                district: Some("朝阳区"),
                neighbors: &neighbors,
            },
            1,
        );
        assert_eq!(
            en[0].evidence[0].text(),
            "handled 3 similar past cases (most similar 0.93)"
        );
    }

    #[test]
    fn the_learned_prior_of_a_category_in_a_district_and_a_district_read_from_a_known_place() {
        // 朝阳区's past traffic cases went to its street, its education cases to the bureau.
        let directory = beijing();
        let learned = LearnedUnits {
            units: vec![
                LearnedUnit {
                    id: "朝阳区望京街道".into(),
                    name: "朝阳区望京街道".into(),
                    kind: UnitKind::Street,
                    district: Some("朝阳区".into()),
                    parent: Some("北京市".into()),
                    cases: 6,
                    categories: [("transport".to_string(), 6)].into(),
                    districts: [("朝阳区".to_string(), 6)].into(),
                },
                LearnedUnit {
                    id: "cy-edu".into(),
                    cases: 4,
                    categories: [("education".to_string(), 4)].into(),
                    districts: [("朝阳区".to_string(), 4)].into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let router = Router::new(&directory, &learned, &UnitAliases::builtin());
        let categories = cats(&[("transport", 1.0)]);
        let scored = router.score(
            &RouteQuery {
                text: "路口红绿灯时间太短",
                categories: &categories,
                district: Some("朝阳区"),
                neighbors: &[],
            },
            None,
        );
        let cell = |id: &str| {
            let i = scored
                .units
                .iter()
                .position(|&u| scored.unit(&router, u).id == id)
                .unwrap_or_else(|| panic!("{id} is a candidate"));
            scored.rows[i][Feature::HistoryCell.index()]
        };
        assert!((cell("朝阳区望京街道") - 1.0).abs() < 1e-6);
        assert_eq!(cell("cy-edu"), 0.0);
        // Left out of its own counts, a case is the only one of its cell no more.
        let categories = cats(&[("education", 1.0)]);
        let query = RouteQuery {
            text: "小学乱收费",
            categories: &categories,
            district: Some("朝阳区"),
            neighbors: &[],
        };
        let own = Own {
            unit: "cy-edu",
            category: Some("education"),
            district: Some("朝阳区"),
        };
        let scored = router.score(&query, Some(own));
        let i = scored
            .units
            .iter()
            .position(|&u| scored.unit(&router, u).id == "cy-edu")
            .unwrap();
        assert!((scored.rows[i][Feature::HistoryCell.index()] - 1.0).abs() < 1e-6);
        // No district in the text, but a street the history knows in one district: its district.
        let categories = cats(&[("education", 1.0)]);
        let units = router.suggest(
            &RouteQuery {
                text: "望京街道某小学乱收费",
                categories: &categories,
                district: None,
                neighbors: &[],
            },
            3,
        );
        assert!(units.iter().any(|u| u.unit_id == "cy-edu"), "{units:?}");
        assert!(units.iter().all(|u| u.unit_id != "hd-edu"), "{units:?}");
    }

    #[test]
    fn fitting_learns_what_the_history_says_and_reports_it() {
        // A district whose cases all went to its street, whatever the category: the rule alone
        // would send them to the bureau.
        let directory = beijing();
        let learned = LearnedUnits {
            units: vec![LearnedUnit {
                id: "海淀区人民政府".into(),
                name: "海淀区人民政府".into(),
                kind: UnitKind::DistrictGovernment,
                district: Some("海淀区".into()),
                parent: Some("北京市".into()),
                cases: 40,
                categories: [("education".to_string(), 40)].into(),
                districts: [("海淀区".to_string(), 40)].into(),
            }],
            ..Default::default()
        };
        let router = Router::new(&directory, &learned, &UnitAliases::builtin());
        let categories = cats(&[("education", 0.9), ("transport", 0.1)]);
        let query = RouteQuery {
            text: "海淀区某小学乱收费",
            categories: &categories,
            district: Some("海淀区"),
            neighbors: &[],
        };
        assert_eq!(router.suggest(&query, 1)[0].unit_id, "hd-edu");
        let cases: Vec<TrainingCase> = (0..40)
            .map(|_| TrainingCase {
                query,
                unit: "海淀区人民政府",
                category: Some("education"),
            })
            .collect();
        let model = fit_model(&router, &cases);
        assert_eq!(model.fit.cases, 40);
        assert_eq!(model.fit.loo_top1, Some(1.0));
        let fitted = LearnedUnits { model, ..learned };
        let router = Router::new(&directory, &fitted, &UnitAliases::builtin());
        let top = &router.suggest(&query, 1)[0];
        assert_eq!(top.unit_id, "海淀区人民政府");
        assert!(top
            .evidence
            .iter()
            .any(|e| e.text() == "处理过海淀区的 40 件案件"));
    }
}
