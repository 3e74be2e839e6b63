//! The learned unit directory: the units past cases were handled by, with their district, parent
//! and the categories and districts of those cases, kept as data beside the classifier
//! (`DATA_DIR/classifier/<version>.units.toml`, written by `triage train`, versioned with the
//! classifier, and human-editable: a city may rename, merge or delete units there). The configured
//! `units.toml` wins where it speaks (a unit with a configured id keeps its configured name,
//! categories and districts; the file only adds its history).
//!
//! The same file holds the routing model's weights (`[model]`), fitted on the training history
//! out of sample (see `route`).

use super::route::{Feature, Weights};
use super::UnitDirectory;
use crate::reply_units::{UnitAliases, UnitKind};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What past cases say about one unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedUnit {
    pub id: String,
    pub name: String,
    pub kind: UnitKind,
    /// The district the unit belongs to ("A3区" for "A3区洋湖街道"), when its name says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// The district's parent (the city of a county).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Past cases it handled.
    pub cases: u32,
    /// Category id → past cases of that category it handled (the human label, or the
    /// classifier's top category for a case without one).
    #[serde(default)]
    pub categories: BTreeMap<String, u32>,
    /// District → past cases from there it handled.
    #[serde(default)]
    pub districts: BTreeMap<String, u32>,
}

/// How the routing model was fitted, for `/info`, `triage train` and the file's reader.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteFit {
    /// History cases with a unit the weights were fitted on (0: default weights, not fitted).
    pub cases: usize,
    /// Leave-one-out top-1 and top-3 accuracy of the fitted model on those cases (each case
    /// routed with its own case taken out of the counts and the similar cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loo_top1: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loo_top3: Option<f32>,
    /// Share of those cases whose unit was among the candidates at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<f32>,
}

/// The routing model: one weight per feature (names as in `route::Feature`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteModel {
    pub weights: BTreeMap<String, f32>,
    #[serde(default)]
    pub fit: RouteFit,
}

impl Default for RouteModel {
    fn default() -> Self {
        Self::from_weights(&Weights::default(), RouteFit::default())
    }
}

impl RouteModel {
    pub fn from_weights(weights: &Weights, fit: RouteFit) -> Self {
        Self {
            weights: Feature::ALL
                .iter()
                .map(|f| (f.name().to_string(), weights.get(*f)))
                .collect(),
            fit,
        }
    }

    /// The weights, with the default for any feature the file does not give.
    pub fn weights(&self) -> Weights {
        let mut w = Weights::default();
        for f in Feature::ALL {
            if let Some(v) = self.weights.get(f.name()) {
                w.set(f, *v);
            }
        }
        w
    }
}

const HEADER: &str = "\
# Units learned by `triage train` from past cases (the unit each case's official reply names as
# handling it, or the unit a call-taker chose), versioned with the classifier of the same name.
# Edit freely (rename, merge or delete units; the service reads this file when it loads the
# classifier). A unit whose id the configured units.toml has keeps the configured name, categories
# and districts: here it only carries its history. [model] holds the weights of the unit
# suggestions, fitted on the same history out of sample.
";

/// The learned directory and the routing model, as stored beside a classifier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedUnits {
    #[serde(default)]
    pub model: RouteModel,
    #[serde(default, rename = "unit")]
    pub units: Vec<LearnedUnit>,
}

impl LearnedUnits {
    pub fn load(path: &Path) -> Result<Self> {
        let raw = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&raw)
            .map_err(|e| Error::InvalidInput(format!("learned units {}: {e}", path.display())))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let body = toml::to_string(self).map_err(|e| Error::InvalidInput(e.to_string()))?;
        crate::fsutil::write_atomic(path, format!("{HEADER}\n{body}").as_bytes())
    }

    pub fn get(&self, id: &str) -> Option<&LearnedUnit> {
        self.units.iter().find(|u| u.id == id)
    }
}

/// One past case with the unit that handled it, as training reads it.
#[derive(Debug, Clone)]
pub struct HistoryCase<'a> {
    pub id: &'a str,
    /// Title and text, as the pipeline classifies them.
    pub text: String,
    pub unit: &'a str,
    pub district: Option<&'a str>,
    /// The classifier's probabilities (id, probability) for the case's text.
    pub categories: Vec<(String, f32)>,
    /// The human label, or else the classifier's top category.
    pub category: Option<String>,
    pub vector: &'a [f32],
    /// Name, kind and district of the unit as the case's reply writes it, when it has one.
    pub named: Option<NamedUnit>,
}

/// A unit as a reply names it.
#[derive(Debug, Clone)]
pub struct NamedUnit {
    pub name: String,
    pub kind: UnitKind,
    pub district: Option<String>,
}

/// The history of every unit past cases name. A unit's name, kind and district come from the
/// replies that name it, else from the previous learned file (a call-taker's correction names a
/// learned unit by id), else from its id read as a name.
pub fn learn_units(
    history: &[HistoryCase],
    directory: &UnitDirectory,
    aliases: &UnitAliases,
    previous: Option<&LearnedUnits>,
) -> Vec<LearnedUnit> {
    let mut units: BTreeMap<String, LearnedUnit> = BTreeMap::new();
    for case in history {
        let unit = units
            .entry(case.unit.to_string())
            .or_insert_with(|| LearnedUnit {
                id: case.unit.to_string(),
                ..Default::default()
            });
        if unit.name.is_empty() {
            if let Some(named) = &case.named {
                unit.name = named.name.clone();
                unit.kind = named.kind;
                unit.district = named.district.clone();
            }
        }
        unit.cases += 1;
        if let Some(category) = &case.category {
            *unit.categories.entry(category.clone()).or_default() += 1;
        }
        if let Some(district) = case.district {
            *unit.districts.entry(district.to_string()).or_default() += 1;
        }
    }
    for unit in units.values_mut() {
        if unit.name.is_empty() {
            match previous.and_then(|p| p.get(&unit.id)) {
                Some(before) => {
                    unit.name = before.name.clone();
                    unit.kind = before.kind;
                    unit.district = before.district.clone();
                }
                None => {
                    let configured = directory.resolve(&unit.id);
                    unit.name = configured.map_or_else(|| unit.id.clone(), |u| u.name.clone());
                    let (district, body) = split_district(directory, &unit.name);
                    unit.kind = aliases.kind_of(body);
                    unit.district =
                        district.or_else(|| configured.and_then(|u| u.districts.first().cloned()));
                }
            }
        }
        unit.parent = unit.district.as_deref().and_then(|d| {
            directory
                .districts
                .iter()
                .find(|x| x.name == d)
                .and_then(|x| x.parent.clone())
        });
    }
    units.into_values().collect()
}

/// The district a unit's name starts with (the last of a chain, "A市A3区…" → A3区) and the rest.
pub fn split_district<'n>(directory: &UnitDirectory, name: &'n str) -> (Option<String>, &'n str) {
    let mut rest = name;
    let mut found = None;
    loop {
        let next = directory
            .districts
            .iter()
            .flat_map(|d| {
                std::iter::once(&d.name)
                    .chain(&d.aliases)
                    .map(move |n| (d, n))
            })
            .filter(|(_, n)| !n.is_empty() && rest.starts_with(n.as_str()))
            .max_by_key(|(_, n)| n.len());
        match next {
            Some((d, n)) => {
                found = Some(d.name.clone());
                rest = &rest[n.len()..];
            }
            None => return (found, rest),
        }
    }
}
