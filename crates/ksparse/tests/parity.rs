//! Stage 1 parity: our embeddings equal sentence-transformers' (token ids and vectors).
//!
//! The reference (`tests/fixtures/reference-embeddings.json`) was made by
//! sentence-transformers 6.2.0 on CPU in float32 with normalize_embeddings=True.

use ksparse_testkit as common;

use ksparse::embed::Embedder;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<String>,
    models: std::collections::HashMap<String, ModelRef>,
}

#[derive(Deserialize)]
struct ModelRef {
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

const MIN_COSINE: f64 = 0.99999;

fn reference() -> Reference {
    let text =
        std::fs::read_to_string(common::root().join("tests/fixtures/reference-embeddings.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check_model(name: &str) {
    let Some(dir) = common::model(name) else {
        return;
    };
    let r = reference();
    let m = &r.models[name];
    let e = Embedder::load(dir.to_str().unwrap()).unwrap();
    for (i, s) in r.sentences.iter().enumerate() {
        assert_eq!(
            e.tokenize(s).unwrap(),
            m.token_ids[i],
            "{name}: token ids of sentence {i} {s:?}"
        );
    }
    // Alone: one sentence per call.
    for (i, s) in r.sentences.iter().enumerate() {
        let v = e.embed(&[s], 1, |_| {}).unwrap();
        let c = common::cosine(v.row(0).as_slice().unwrap(), &m.embeddings[i]);
        assert!(c >= MIN_COSINE, "{name}: sentence {i} alone: cosine {c}");
    }
    // Together: one padded batch of mixed lengths, in the reference's (unsorted) order.
    let tokens: Vec<Vec<u32>> = r.sentences.iter().map(|s| e.tokenize(s).unwrap()).collect();
    let batch: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    let lens: std::collections::HashSet<usize> = batch.iter().map(|t| t.len()).collect();
    assert!(lens.len() > 3, "the batch must mix lengths");
    let vectors = e.embed_tokens(&batch).unwrap();
    for (i, v) in vectors.iter().enumerate() {
        let c = common::cosine(v, &m.embeddings[i]);
        assert!(
            c >= MIN_COSINE,
            "{name}: sentence {i} in a mixed batch: cosine {c}"
        );
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{name}: output is normalised");
    }
}

#[test]
fn minilm_matches_sentence_transformers() {
    check_model("all-MiniLM-L6-v2");
}

#[test]
fn mpnet_matches_sentence_transformers() {
    check_model("all-mpnet-base-v2");
}
