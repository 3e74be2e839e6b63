//! The case-store seam: past cases with their vectors, searchable by similarity.

use crate::{Case, Result};
use serde::{Deserialize, Serialize};

/// Payload filters for search, count and scroll. Every set field must match.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Only cases with a `unit` (the unit that handled them): the history unit routing learns from.
    pub with_unit: bool,
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

impl dyn CaseStore + '_ {
    /// Every case matching `filter`, a page of up to `size` at a time, in the store's stable
    /// order; starts after the cursor `after` (from an earlier `Pages::cursor`) when given. The one
    /// paging loop: training, batch jobs, Open311 listings and migrations all read through it.
    pub fn pages(&self, filter: &CaseFilter, after: Option<String>, size: usize) -> Pages<'_> {
        Pages {
            store: self,
            filter: filter.clone(),
            size: size.max(1),
            cursor: after,
            done: false,
        }
    }

    /// Every case matching `filter`, with its vector.
    pub fn all(&self, filter: &CaseFilter) -> Result<Vec<(Case, Vec<f32>)>> {
        let mut cases = Vec::new();
        for page in self.pages(filter, None, 1000) {
            cases.extend(page?.cases);
        }
        Ok(cases)
    }
}

/// The pages of a full scan (see `CaseStore::pages`). An error ends the iteration.
pub struct Pages<'a> {
    store: &'a dyn CaseStore,
    filter: CaseFilter,
    size: usize,
    cursor: Option<String>,
    done: bool,
}

impl Pages<'_> {
    /// Where the scan stands: pass it back as `after` to resume after the last page returned
    /// (`None` once the last page is out).
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Whether the last page has been returned.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<Page>;

    fn next(&mut self) -> Option<Result<Page>> {
        if self.done {
            return None;
        }
        let page = self
            .store
            .scroll(&self.filter, self.cursor.as_deref(), self.size);
        match &page {
            Ok(page) => {
                self.cursor = page.next.clone();
                self.done = page.next.is_none();
            }
            Err(_) => self.done = true,
        }
        Some(page)
    }
}
