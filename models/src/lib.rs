//! Local models on candle: BERT-family sentence embedders and GGUF text generators.

pub mod adapt;
pub mod bert;
pub mod e5s1;
pub mod embedder;
pub mod error;
pub mod gemma3;
pub mod generator;
pub mod gguf_tokenizer;
mod kernels;
mod pool;
pub mod profile;
mod q8_0;

pub use adapt::AdaptedTop;
pub use bert::{Pooling, Precision};
pub use e5s1::convert_e5s1;
pub use embedder::{default_device, BertEmbedder, EmbedderSpec};
pub use error::{Error, Result};
pub use generator::{load_generator, GgufGenerator};
pub use gguf_tokenizer::GgufTokenizer;

/// The int8 kernel the encoder uses on this CPU: "avx512-vnni", "avx2" or "scalar".
pub fn int8_kernel() -> &'static str {
    kernels::int8::Isa::detect().name()
}

/// The Q8_0 kernel the Gemma 3 generator uses on this CPU.
pub fn generator_kernel() -> &'static str {
    q8_0::kernel_name()
}

/// Keeps freed tensor memory in the process. Inference allocates many large, short-lived
/// buffers; glibc's default hands each one back to the OS (mmap/munmap) and faults it in again on
/// the next use, which cost half the time of embedding long texts (measured with bench-embed).
/// Call once at the start of a binary.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before threads start allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
    }
}
