//! The embedding seam.

use crate::adapt::{AdaptJob, Adapted, Embedded, EncoderHead};
use crate::{Error, Result};
use std::sync::{mpsc, Arc, Mutex};

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

    /// Whether this embedder can fine-tune its top layers (`adapt`, see `crate::adapt`).
    fn can_adapt(&self) -> bool {
        false
    }

    /// Fine-tunes a copy of the top layers and a classification head on labeled texts.
    fn adapt(&self, _job: &AdaptJob) -> Result<Adapted> {
        Err(cannot_adapt(self.model_id()))
    }

    /// An adapted head from the bytes `EncoderHead::to_bytes` wrote; refused when it was fitted
    /// on another model.
    fn load_head(&self, _bytes: &[u8]) -> Result<Arc<dyn EncoderHead>> {
        Err(cannot_adapt(self.model_id()))
    }

    /// `embed`, and in the same encoder pass the raw class scores of `head`. The vectors are
    /// exactly those `embed` gives.
    fn embed_scored(
        &self,
        _texts: &[&str],
        _kind: EmbedKind,
        _head: &Arc<dyn EncoderHead>,
    ) -> Result<Vec<Embedded>> {
        Err(cannot_adapt(self.model_id()))
    }
}

fn cannot_adapt(model_id: &str) -> Error {
    Error::InvalidInput(format!(
        "the embedder {model_id} cannot adapt its layers to the categories (train without --adapt)"
    ))
}

/// Coalesces concurrent `embed` calls into one batch of the wrapped model (dynamic batching, as
/// text-embeddings-inference does): under load, four single-complaint requests cost about what
/// one batch of four does, instead of four passes fighting over the same cores.
pub struct BatchingEmbedder {
    inner: Arc<dyn Embedder>,
    queue: Mutex<mpsc::Sender<Request>>,
}

struct Request {
    texts: Vec<String>,
    kind: EmbedKind,
    /// The adapted head to score with in the same pass, if any.
    head: Option<Arc<dyn EncoderHead>>,
    reply: mpsc::Sender<Result<Vec<Embedded>>>,
}

impl Request {
    /// Requests of one group are answered by one model call.
    fn same_group(&self, kind: EmbedKind, head: Option<&Arc<dyn EncoderHead>>) -> bool {
        self.kind == kind
            && match (&self.head, head) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl BatchingEmbedder {
    /// Starts the batching thread. A batch takes every waiting request, up to `max_texts` texts.
    pub fn new(inner: Arc<dyn Embedder>, max_texts: usize) -> Self {
        let (sender, receiver) = mpsc::channel::<Request>();
        let model = inner.clone();
        std::thread::Builder::new()
            .name("embed-batcher".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut texts = first.texts.len();
                    let mut batch = vec![first];
                    while texts < max_texts {
                        let Ok(next) = receiver.try_recv() else { break };
                        texts += next.texts.len();
                        batch.push(next);
                    }
                    // One model call per (kind, head) among the waiting requests.
                    let mut done = vec![false; batch.len()];
                    for i in 0..batch.len() {
                        if done[i] {
                            continue;
                        }
                        let (kind, head) = (batch[i].kind, batch[i].head.clone());
                        let group: Vec<&Request> = batch
                            .iter()
                            .zip(done.iter_mut())
                            .filter(|(r, _)| r.same_group(kind, head.as_ref()))
                            .map(|(r, d)| {
                                *d = true;
                                r
                            })
                            .collect();
                        embed_group(model.as_ref(), kind, head.as_ref(), &group);
                    }
                }
            })
            .expect("spawning the embedding thread");
        Self {
            inner,
            queue: Mutex::new(sender),
        }
    }
}

/// One model call for a group of requests; each gets its own vectors (or the error) back.
fn embed_group(
    model: &dyn Embedder,
    kind: EmbedKind,
    head: Option<&Arc<dyn EncoderHead>>,
    group: &[&Request],
) {
    let texts: Vec<&str> = group
        .iter()
        .flat_map(|r| r.texts.iter().map(String::as_str))
        .collect();
    let result = match head {
        Some(head) => model.embed_scored(&texts, kind, head),
        None => model
            .embed(&texts, kind)
            .map(|vs| vs.into_iter().map(Embedded::from).collect()),
    };
    match result {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for request in group {
                let mine = vectors.by_ref().take(request.texts.len()).collect();
                let _ = request.reply.send(Ok(mine));
            }
        }
        Err(error) => {
            for request in group {
                let copy = match &error {
                    Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
                    other => Error::Model(other.to_string()),
                };
                let _ = request.reply.send(Err(copy));
            }
        }
    }
}

impl Embedder for BatchingEmbedder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
        let embedded = self.submit(texts, kind, None)?;
        Ok(embedded.into_iter().map(|e| e.vector).collect())
    }
    fn can_adapt(&self) -> bool {
        self.inner.can_adapt()
    }
    fn adapt(&self, job: &AdaptJob) -> Result<Adapted> {
        self.inner.adapt(job)
    }
    fn load_head(&self, bytes: &[u8]) -> Result<Arc<dyn EncoderHead>> {
        self.inner.load_head(bytes)
    }
    fn embed_scored(
        &self,
        texts: &[&str],
        kind: EmbedKind,
        head: &Arc<dyn EncoderHead>,
    ) -> Result<Vec<Embedded>> {
        self.submit(texts, kind, Some(head.clone()))
    }
}

impl BatchingEmbedder {
    fn submit(
        &self,
        texts: &[&str],
        kind: EmbedKind,
        head: Option<Arc<dyn EncoderHead>>,
    ) -> Result<Vec<Embedded>> {
        let (reply, answer) = mpsc::channel();
        let request = Request {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            kind,
            head,
            reply,
        };
        let stopped = || Error::Model("the embedding thread stopped".into());
        self.queue
            .lock()
            .map_err(|_| stopped())?
            .send(request)
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts model calls; each text becomes [its length, kind].
    struct Counting(AtomicUsize);

    impl Embedder for Counting {
        fn model_id(&self) -> &str {
            "counting"
        }
        fn dim(&self) -> usize {
            2
        }
        fn max_tokens(&self) -> usize {
            8
        }
        fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            if texts.contains(&"bad") {
                return Err(Error::InvalidInput("bad text".into()));
            }
            let k = (kind == EmbedKind::Query) as u8 as f32;
            Ok(texts.iter().map(|t| vec![t.len() as f32, k]).collect())
        }
    }

    #[test]
    fn concurrent_calls_share_batches_and_get_their_own_vectors() {
        let model = Arc::new(Counting(AtomicUsize::new(0)));
        let batching = Arc::new(BatchingEmbedder::new(model.clone(), 64));
        let results: Vec<_> = (0..8)
            .map(|i| {
                let b = batching.clone();
                std::thread::spawn(move || {
                    let text = "x".repeat(i + 1);
                    let kind = if i % 2 == 0 {
                        EmbedKind::Query
                    } else {
                        EmbedKind::Passage
                    };
                    (i, kind, b.embed(&[&text, "ab"], kind).unwrap())
                })
            })
            .collect();
        for handle in results {
            let (i, kind, vectors) = handle.join().unwrap();
            let k = (kind == EmbedKind::Query) as u8 as f32;
            assert_eq!(vectors, vec![vec![(i + 1) as f32, k], vec![2.0, k]]);
        }
        assert!(
            model.0.load(Ordering::SeqCst) < 8,
            "some calls were coalesced"
        );
        let error = batching.embed(&["bad"], EmbedKind::Query).unwrap_err();
        assert!(matches!(error, Error::InvalidInput(_)), "{error}");
    }
}
