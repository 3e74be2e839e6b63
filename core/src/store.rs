//! The case-store seam: past cases with their vectors, searchable by similarity.

use crate::{Case, Result};
use serde::{Deserialize, Serialize};

/// Payload filters for search, count and scroll. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseFilter {
    pub category: Option<String>,
    pub unit: Option<String>,
    pub district: Option<String>,
    /// Unix seconds, inclusive.
    pub time_from: Option<i64>,
    /// Unix seconds, inclusive.
    pub time_to: Option<i64>,
    /// Only cases with a human `label`.
    pub labeled_only: bool,
    /// Only cases with a `reply`.
    pub with_reply: bool,
}

/// A similar case and its cosine similarity to the query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub case: Case,
    pub score: f32,
}

/// One page of a full scan, with the cursor of the next page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub cases: Vec<(Case, Vec<f32>)>,
    pub next: Option<String>,
}

/// Storage of past cases and their embeddings. Writes are durable when the call returns.
pub trait CaseStore: Send + Sync {
    /// Short name of the backend, e.g. `qdrant-edge`.
    fn backend(&self) -> &str;
    /// Inserts or replaces cases by id. Durable (flushed) when it returns.
    fn upsert(&self, cases: &[(Case, Vec<f32>)]) -> Result<()>;
    /// Removes a case; `false` when there was none with that id.
    fn delete(&self, id: &str) -> Result<bool>;
    fn get(&self, id: &str) -> Result<Option<Case>>;
    /// The `k` most similar cases (cosine), best first.
    fn search(&self, vector: &[f32], k: usize, filter: &CaseFilter) -> Result<Vec<Hit>>;
    fn count(&self, filter: &CaseFilter) -> Result<usize>;
    /// A page of cases with their vectors, in a stable order; pass `next` back for the next page.
    fn scroll(&self, filter: &CaseFilter, after: Option<&str>, limit: usize) -> Result<Page>;
    /// Builds search indexes after a bulk load (HNSW); a no-op where the backend does it itself.
    fn optimize(&self) -> Result<()>;
    /// Whether the store answers now (a server backend pings it; `/health` turns 503 if not).
    fn health(&self) -> Result<()> {
        Ok(())
    }
}
