//! Hotline Triage's domain: the types a complaint becomes, the seams to models and storage
//! (`Embedder`, `Generator`, `CaseStore`) and the logic between them. No HTTP, candle or Qdrant here.

pub mod adapt;
pub mod audit;
pub mod batch;
pub mod case;
pub mod classify;
pub mod digest;
pub mod embed;
pub mod error;
pub mod fsutil;
pub mod generate;
pub mod guard;
pub mod hotspots;
pub mod ingest;
pub mod pii;
pub mod pipeline;
pub mod places;
pub mod prompt;
pub mod reply;
pub mod reply_units;
pub mod store;
pub mod taxonomy;
#[cfg(test)]
mod testfs;
pub mod text;
pub mod units;
pub mod vector;
pub mod work_order;

pub use adapt::{Embedded, EncoderHead};
pub use case::{Case, Prediction};
pub use embed::{EmbedKind, Embedder};
pub use error::{Error, Result};
pub use generate::{GenerateParams, Generation, Generator, StopReason};
pub use store::{CaseFilter, CaseStore, Hit, Page, Pages};
pub use taxonomy::{Category, Taxonomy};
