//! Local models on candle: BERT-family sentence embedders and GGUF text generators.

pub mod e5s1;
pub mod embedder;
pub mod error;

pub use e5s1::convert_e5s1;
pub use embedder::{default_device, BertEmbedder, EmbedderSpec, Pooling};
pub use error::{Error, Result};
