//! The use cases of unit routing: the gold unit of a past case (from its reply), the units as
//! routing sees them, the learned unit directory and its routing model (`train_units`, part of
//! `train`), and the baselines the evaluation compares the router with.

use super::Pipeline;
use crate::classify::{Classifier, Neighbor};
use crate::reply_units::{self, ExtractedUnit};
use crate::units::learned::{learn_units, HistoryCase, NamedUnit};
use crate::units::route::{fit_model, TrainingCase};
use crate::units::{
    CategoryProb, LearnedUnits, RouteQuery, RouteUnit, Router, UnitDirectory, UnitNeighbor,
};
use crate::{vector, Case, CaseFilter, Result};
use std::collections::HashMap;

/// What the two simple routers say about a complaint, beside the router's suggestion: (a) the
/// directory's rule from the predicted categories and the extracted district alone, (b) the unit
/// of the most similar past case with one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitBaselines {
    /// Top 3 units of the directory's rule.
    pub directory_rule: Vec<String>,
    /// The unit of the nearest past case that has one.
    pub nearest_case: Option<String>,
}

impl UnitBaselines {
    pub(super) fn new(directory: &UnitDirectory, query: &RouteQuery) -> Self {
        let categories: Vec<(String, f32)> = query
            .categories
            .iter()
            .map(|c| (c.id.clone(), c.probability))
            .collect();
        Self {
            directory_rule: directory
                .suggest(&categories, query.district, &[], 3)
                .into_iter()
                .map(|u| u.unit_id)
                .collect(),
            nearest_case: query.neighbors.first().map(|n| n.unit_id.clone()),
        }
    }
}

/// A unit as `GET /v1/units` lists it.
pub type UnitListing = RouteUnit;

impl Pipeline {
    /// Every unit, configured and learned, with its source and the history it has.
    pub fn unit_list(&self) -> Vec<UnitListing> {
        self.router().units().to_vec()
    }

    /// The units a reply names, with their roles (those with the handler role are its gold).
    pub fn reply_units(&self, reply: &str, complaint: &str) -> Vec<ExtractedUnit> {
        reply_units::extract_units(reply, complaint, &self.units, &self.aliases)
    }

    /// The gold units of a case: its `unit` when given, else the handlers its reply names
    /// (none when the reply names none with confidence).
    pub fn gold_units(&self, case: &Case) -> Vec<String> {
        if let Some(unit) = &case.unit {
            return vec![unit.clone()];
        }
        let Some(reply) = &case.reply else {
            return Vec::new();
        };
        let mut ids: Vec<String> = Vec::new();
        for u in reply_units::handlers(&self.reply_units(reply, &case.full_text())) {
            if !ids.contains(&u.id) {
                ids.push(u.id.clone());
            }
        }
        ids
    }

    /// The learned unit directory and routing model from every stored case with a unit: each
    /// case's category is its label, or else what `classifier` predicts for it (such cases were
    /// not among its training cases); the weights are fitted with each case scored without its
    /// own contribution (its counts and its vote among the similar cases).
    pub fn train_units(&self, classifier: &Classifier) -> Result<LearnedUnits> {
        let with_unit = CaseFilter {
            with_unit: true,
            ..Default::default()
        };
        let cases = self.store.as_ref().all(&with_unit)?;
        let labeled = CaseFilter {
            labeled_only: true,
            ..Default::default()
        };
        // A classifier with adapted encoder layers scores a case from their pass over its text
        // too (a stored vector is the frozen encoder's alone).
        let adapted: Vec<Option<Vec<f32>>> = match classifier.head() {
            None => vec![None; cases.len()],
            Some(head) => {
                let mut out = Vec::with_capacity(cases.len());
                for chunk in cases.chunks(64) {
                    let texts: Vec<String> = chunk.iter().map(|(c, _)| c.full_text()).collect();
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    let embedded =
                        self.embedder
                            .embed_scored(&refs, super::COMPLAINT_EMBEDDING, head)?;
                    out.extend(embedded.into_iter().map(|e| e.scores));
                }
                out
            }
        };
        let mut history: Vec<HistoryCase> = Vec::with_capacity(cases.len());
        for ((case, vector), adapted) in cases.iter().zip(&adapted) {
            let Some(unit) = case.unit.as_deref() else {
                continue;
            };
            let text = case.full_text();
            let neighbors = if classifier.uses_neighbors() {
                let mut hits = self
                    .store
                    .search(vector, classifier.config.knn_k + 1, &labeled)?;
                hits.retain(|h| h.case.id != case.id);
                hits.truncate(classifier.config.knn_k);
                hits
            } else {
                Vec::new()
            };
            let votes = Neighbor::votes(&neighbors);
            let scores = classifier.predict(&text, vector, adapted.as_deref(), &votes)?;
            let categories: Vec<(String, f32)> = classifier
                .labels
                .iter()
                .cloned()
                .zip(scores.ensemble.iter().copied())
                .collect();
            let category = case.label.clone().or_else(|| {
                categories
                    .iter()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|c| c.0.clone())
            });
            let named = case.reply.as_deref().and_then(|reply| {
                self.reply_units(reply, &text)
                    .into_iter()
                    .find(|u| u.id == unit)
                    .map(|u| NamedUnit {
                        name: u.name,
                        kind: u.kind,
                        district: u.district,
                    })
            });
            history.push(HistoryCase {
                id: &case.id,
                text,
                unit,
                district: case.district.as_deref(),
                categories,
                category,
                vector,
                named,
            });
        }
        let previous = self.classifier().map(|c| c.units.clone());
        let mut learned = LearnedUnits {
            units: learn_units(&history, &self.units, &self.aliases, previous.as_ref()),
            ..Default::default()
        };
        let router = Router::new(&self.units, &learned, &self.aliases);
        learned.model = fit_model(
            &router,
            &training_cases(
                &history,
                &self.taxonomy_names(),
                self.config.unit_neighbors_k,
            )?
            .as_cases(&history),
        );
        Ok(learned)
    }

    /// Display names of category ids (the taxonomy's, else the id).
    fn taxonomy_names(&self) -> HashMap<String, String> {
        self.taxonomy
            .categories
            .iter()
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect()
    }
}

/// The routing queries of the history cases, each with its own similar cases (the other cases
/// with a unit, as the store would return them) and categories.
struct TrainingQueries {
    categories: Vec<Vec<CategoryProb>>,
    neighbors: Vec<Vec<UnitNeighbor>>,
}

impl TrainingQueries {
    fn as_cases<'a>(&'a self, history: &'a [HistoryCase<'a>]) -> Vec<TrainingCase<'a>> {
        history
            .iter()
            .enumerate()
            .map(|(i, h)| TrainingCase {
                query: RouteQuery {
                    text: &h.text,
                    categories: &self.categories[i],
                    district: h.district,
                    neighbors: &self.neighbors[i],
                },
                unit: h.unit,
                category: h.category.as_deref(),
            })
            .collect()
    }
}

/// For every history case, the `k` most similar other history cases (by the stored vectors, which
/// are unit length: a dot product is the cosine the store ranks by).
fn training_cases(
    history: &[HistoryCase],
    names: &HashMap<String, String>,
    k: usize,
) -> Result<TrainingQueries> {
    let neighbors = history
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut scored: Vec<(f32, usize)> = history
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && o.id != h.id)
                .map(|(j, o)| (vector::dot(h.vector, o.vector), j))
                .collect();
            let k = k.min(scored.len());
            if k > 0 {
                scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
                scored.truncate(k);
            }
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored
                .into_iter()
                .map(|(similarity, j)| UnitNeighbor {
                    case_id: history[j].id.to_string(),
                    unit_id: history[j].unit.to_string(),
                    similarity,
                })
                .collect()
        })
        .collect();
    let categories = history
        .iter()
        .map(|h| {
            h.categories
                .iter()
                .map(|(id, p)| CategoryProb {
                    id: id.clone(),
                    name: names.get(id).cloned().unwrap_or_else(|| id.clone()),
                    probability: *p,
                })
                .collect()
        })
        .collect();
    Ok(TrainingQueries {
        categories,
        neighbors,
    })
}
