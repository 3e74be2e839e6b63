//! Local models on candle: BERT-family sentence embedders and GGUF text generators.

pub mod e5s1;
pub mod embedder;
pub mod error;
pub mod gemma3;
pub mod generator;
pub mod gguf_tokenizer;

pub use e5s1::convert_e5s1;
pub use embedder::{default_device, BertEmbedder, EmbedderSpec, Pooling};
pub use error::{Error, Result};
pub use generator::{load_generator, GgufGenerator};
pub use gguf_tokenizer::GgufTokenizer;
