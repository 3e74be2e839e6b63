//! Adapting the encoder's top layers (issue 16) with the real e5-small and MiniLM, on small real
//! samples: what the adapted pass gives, that the store's vectors do not change, that a stopped
//! run resumes to the same result, and that heads refuse other models.

use crate::models_dir;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use triage_core::adapt::{AdaptConfig, AdaptJob, AdaptMode, AdaptProgress, Adapted};
use triage_core::{EmbedKind, Embedder};
use triage_models::{default_device, BertEmbedder, Precision};

fn load(name: &str) -> BertEmbedder {
    BertEmbedder::load(&models_dir().join(name), &default_device().unwrap())
        .unwrap()
        .with_max_tokens(48)
        .unwrap()
}

/// `per_class` labeled texts of each of the first `classes` categories of the shipped sample.
fn sample(classes: usize, per_class: usize) -> (Vec<String>, Vec<usize>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sample/cases.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let mut labels: Vec<String> = Vec::new();
    let mut counts = Vec::new();
    let (mut texts, mut gold) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let label = v["label"].as_str().unwrap().to_string();
        let class = match labels.iter().position(|l| *l == label) {
            Some(c) => c,
            None if labels.len() < classes => {
                labels.push(label);
                counts.push(0);
                labels.len() - 1
            }
            None => continue,
        };
        if counts[class] == per_class {
            continue;
        }
        counts[class] += 1;
        texts.push(v["text"].as_str().unwrap().chars().take(80).collect());
        gold.push(class);
    }
    (texts, gold)
}

fn config(epochs: usize) -> AdaptConfig {
    AdaptConfig {
        mode: AdaptMode::On,
        layers: 2,
        epochs,
        batch: 8,
        lr: 2e-4,
        head_lr: 5e-3,
        ..AdaptConfig::default()
    }
}

fn adapt(
    model: &BertEmbedder,
    (texts, gold, held_out): (&[String], &[usize], &[bool]),
    config: &AdaptConfig,
    work_dir: Option<&Path>,
    progress: Option<&(dyn Fn(&AdaptProgress) + Sync)>,
    stop: Option<&AtomicBool>,
) -> triage_core::Result<Adapted> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    model.adapt(&AdaptJob {
        texts: &refs,
        kind: EmbedKind::Passage,
        gold,
        classes: gold.iter().max().unwrap() + 1,
        held_out,
        config,
        work_dir: work_dir.map(Path::to_path_buf),
        progress,
        stop,
    })
}

fn argmax(xs: &[f32]) -> usize {
    (0..xs.len())
        .max_by(|&a, &b| xs[a].total_cmp(&xs[b]))
        .unwrap()
}

#[test]
fn adapted_pass_scores_held_out_cases_and_keeps_the_vectors() {
    let model = load("multilingual-e5-small");
    let (texts, gold) = sample(3, 40);
    let held_out: Vec<bool> = (0..texts.len()).map(|i| i % 4 == 0).collect();
    let losses = Mutex::new(Vec::new());
    let record = |p: &AdaptProgress| {
        if let AdaptProgress::Epoch { loss, .. } = p {
            losses.lock().unwrap().push(*loss);
        }
    };
    let adapted = adapt(
        &model,
        (&texts, &gold, &held_out),
        &config(3),
        None,
        Some(&record),
        None,
    )
    .unwrap();
    // Training lowers the loss: the last epoch's mean is well below the first's.
    let losses = losses.into_inner().unwrap();
    assert_eq!(losses.len(), 3);
    assert!(losses[2] < 0.8 * losses[0], "training losses {losses:?}");
    let held: Vec<usize> = (0..texts.len()).filter(|&i| held_out[i]).collect();
    assert_eq!(adapted.held_out_scores.len(), held.len());
    let right = held
        .iter()
        .zip(&adapted.held_out_scores)
        .filter(|(&i, s)| argmax(s) == gold[i])
        .count();
    assert!(
        right * 10 >= held.len() * 7,
        "{right} of {} held-out cases right",
        held.len()
    );

    // One pass: the vectors are exactly the embedder's, the scores those of the held-out run
    // (which read the lower layers' states from the f16 cache: close, not equal).
    let refs: Vec<&str> = held.iter().map(|&i| texts[i].as_str()).collect();
    let plain = model.embed(&refs, EmbedKind::Passage).unwrap();
    let scored = model
        .embed_scored(&refs, EmbedKind::Passage, &adapted.head)
        .unwrap();
    for ((p, s), cached) in plain.iter().zip(&scored).zip(&adapted.held_out_scores) {
        assert_eq!(p, &s.vector);
        let scores = s.scores.as_ref().unwrap();
        assert_eq!(scores.len(), 3);
        for (a, b) in scores.iter().zip(cached) {
            assert!(
                (a - b).abs() < 0.05 * (1.0 + b.abs()),
                "{scores:?} vs {cached:?}"
            );
        }
    }

    // Saved and loaded, the head scores the same; another model refuses it.
    let bytes = adapted.head.to_bytes().unwrap();
    let loaded = model.load_head(&bytes).unwrap();
    let again = model
        .embed_scored(&refs, EmbedKind::Passage, &loaded)
        .unwrap();
    assert_eq!(again, scored);
    let minilm = load("all-MiniLM-L6-v2");
    let err = minilm.load_head(&bytes).unwrap_err().to_string();
    assert!(err.contains("fitted on"), "{err}");
    assert!(model.load_head(b"not safetensors").is_err());

    // An int8 encoder runs the head with its layers quantized too: the scores stay close to
    // the f32 encoder's. Adapting is refused there: it trains f32 copies of the top layers on
    // the f32 layers' hidden states. (Without int8 SIMD, int8 loads as f32.)
    let int8 = BertEmbedder::load_with(
        &models_dir().join("multilingual-e5-small"),
        &default_device().unwrap(),
        Precision::Int8,
    )
    .unwrap()
    .with_max_tokens(48)
    .unwrap();
    let quantized = int8.load_head(&bytes).unwrap();
    let int8_scored = int8
        .embed_scored(&refs, EmbedKind::Passage, &quantized)
        .unwrap();
    for (q, f) in int8_scored.iter().zip(&scored) {
        let (q, f) = (q.scores.as_ref().unwrap(), f.scores.as_ref().unwrap());
        for (a, b) in q.iter().zip(f) {
            assert!((a - b).abs() < 0.05 * (1.0 + b.abs()), "{q:?} vs {f:?}");
        }
    }
    if int8.precision() == Precision::Int8 {
        let err = quantized.to_bytes().unwrap_err().to_string();
        assert!(err.contains("quantized"), "{err}");
        let Err(err) = adapt(
            &int8,
            (&texts, &gold, &held_out),
            &config(1),
            None,
            None,
            None,
        ) else {
            panic!("an int8 encoder adapted");
        };
        let err = err.to_string();
        assert!(err.contains("--embedder-precision f32"), "{err}");
    }
}

#[test]
fn a_stopped_adaptation_resumes_from_its_checkpoint() {
    let model = load("multilingual-e5-small");
    let (texts, gold) = sample(2, 16);
    let held_out: Vec<bool> = (0..texts.len()).map(|i| i % 4 == 0).collect();
    let config = config(2);
    let straight = tempfile::tempdir().unwrap();
    let whole = adapt(
        &model,
        (&texts, &gold, &held_out),
        &config,
        Some(straight.path()),
        None,
        None,
    )
    .unwrap();
    // The finished run leaves only the lower layers' cache behind.
    let left: Vec<String> = std::fs::read_dir(straight.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        left.len() == 1 && left[0].starts_with("hidden-"),
        "{left:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let stop_after_first = |p: &AdaptProgress| {
        if matches!(p, AdaptProgress::Epoch { epoch: 1, .. }) {
            stop.store(true, Ordering::SeqCst);
        }
    };
    let err = adapt(
        &model,
        (&texts, &gold, &held_out),
        &config,
        Some(dir.path()),
        Some(&stop_after_first),
        Some(&stop),
    )
    .err()
    .expect("stopped after the first epoch")
    .to_string();
    assert!(err.contains("stopped after epoch 1 of 2"), "{err}");

    let seen = Mutex::new(Vec::new());
    let record = |p: &AdaptProgress| {
        if matches!(
            p,
            AdaptProgress::Resumed { .. }
                | AdaptProgress::Epoch { .. }
                | AdaptProgress::Encoding { .. }
        ) {
            seen.lock().unwrap().push(p.clone());
        }
    };
    let resumed = adapt(
        &model,
        (&texts, &gold, &held_out),
        &config,
        Some(dir.path()),
        Some(&record),
        None,
    )
    .unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(
        !seen
            .iter()
            .any(|p| matches!(p, AdaptProgress::Encoding { .. })),
        "the lower layers' states come from the cache: {seen:?}"
    );
    assert_eq!(seen[0], AdaptProgress::Resumed { epoch: 1 });
    assert!(
        matches!(seen[1], AdaptProgress::Epoch { epoch: 2, .. }),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 2);
    assert_eq!(resumed.held_out_scores, whole.held_out_scores);
    // The same weights (the header's metadata is a map, written in no fixed order).
    assert_eq!(
        weights(&resumed.head.to_bytes().unwrap()),
        weights(&whole.head.to_bytes().unwrap())
    );
}

/// The tensor data of a safetensors file, after its JSON header.
fn weights(bytes: &[u8]) -> Vec<u8> {
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..].to_vec()
}

#[test]
fn minilm_adapts_too() {
    let model = load("all-MiniLM-L6-v2");
    let texts: Vec<String> = (0..24)
        .map(|i| {
            let topic = [
                "The bus on route {} was late again and the driver skipped our stop",
                "Loud construction noise at night near block {} keeps everyone awake",
            ][i % 2];
            topic.replace("{}", &(i * 7 % 13).to_string())
        })
        .collect();
    let gold: Vec<usize> = (0..24).map(|i| i % 2).collect();
    let held_out: Vec<bool> = (0..24).map(|i| i >= 20).collect();
    let adapted = adapt(
        &model,
        (&texts, &gold, &held_out),
        &config(2),
        None,
        None,
        None,
    )
    .unwrap();
    for (k, scores) in adapted.held_out_scores.iter().enumerate() {
        assert_eq!(argmax(scores), gold[20 + k], "{scores:?}");
    }
    let head: Arc<dyn triage_core::EncoderHead> = adapted.head;
    let scored = model
        .embed_scored(&["The bus never came"], EmbedKind::Query, &head)
        .unwrap();
    assert_eq!(
        scored[0].vector,
        model
            .embed(&["The bus never came"], EmbedKind::Query)
            .unwrap()[0]
    );
}
