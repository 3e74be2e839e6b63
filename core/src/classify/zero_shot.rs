//! `zero_shot`: similarity between the complaint and each category's description, so a city with
//! a taxonomy and no labeled history still gets suggestions.

use super::svm::UNKNOWN_CLASS_SCORE;
use super::{dot, Taxonomy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ZeroShot {
    /// One embedding ("passage") per label, or `None` for labels the taxonomy doesn't describe.
    profiles: Vec<Option<Vec<f32>>>,
    pub(super) scale: f32,
}

impl ZeroShot {
    /// `profiles` holds the embedding of each taxonomy category's profile, in the taxonomy's
    /// order; they are matched to `labels` by id.
    pub(super) fn new(
        labels: &[String],
        taxonomy: &Taxonomy,
        profiles: &[Vec<f32>],
        scale: f32,
    ) -> Self {
        let profiles = labels
            .iter()
            .map(|label| {
                let at = taxonomy.categories.iter().position(|c| &c.id == label)?;
                profiles.get(at).cloned()
            })
            .collect();
        Self { profiles, scale }
    }

    pub(super) fn raw_scores(&self, vector: &[f32]) -> Vec<f32> {
        self.profiles
            .iter()
            .map(|p| p.as_deref().map_or(UNKNOWN_CLASS_SCORE, |p| dot(p, vector)))
            .collect()
    }
}
