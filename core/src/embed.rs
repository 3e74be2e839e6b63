//! The embedding seam.

use crate::Result;

/// Asymmetric retrieval models (e5, bge) embed what is searched for differently from what is
/// stored. The model's spec decides what that means (a `query: ` prefix, an instruction, or
/// nothing), so callers only say which side a text is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmbedKind {
    /// A new complaint, looking for similar past cases or matching category descriptions.
    Query,
    /// A stored past case or a category description.
    Passage,
}

/// A sentence embedder: texts in, L2-normalised vectors out (cosine = dot product).
pub trait Embedder: Send + Sync {
    /// Name of the model, e.g. `multilingual-e5-small`.
    fn model_id(&self) -> &str;
    /// Length of every vector it returns.
    fn dim(&self) -> usize;
    /// Longest input in tokens (special tokens included); longer texts are truncated.
    fn max_tokens(&self) -> usize;
    /// Embeds a batch. The result has one vector per text, in input order. Implementations
    /// batch internally (by length, under a token budget), so callers may pass many texts.
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>>;
}
