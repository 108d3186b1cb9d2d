//! A sentence-transformers model folder: where it is and what its config files say.
//!
//! The layout (`modules.json` → Transformer → Pooling → Normalize, with
//! `sentence_bert_config.json` and `1_Pooling/config.json`) is the one every
//! sentence-transformers model on disk uses, so users can point ksparse at the
//! folders they already have, or at a Hugging Face id already in their local cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// How token vectors become one sentence vector (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the non-padding token vectors.
    Mean,
    /// The first token's (`[CLS]` / `<s>`) vector.
    Cls,
    /// Element-wise maximum over the non-padding token vectors.
    Max,
}

/// Which transformer family the weights belong to (`config.json` `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// BERT (absolute position embeddings, token-type embeddings), e.g. all-MiniLM-L6-v2.
    Bert,
    /// MPNet (positions offset by the padding index, learned relative-position attention bias),
    /// e.g. all-mpnet-base-v2.
    MpNet,
}

/// The Hugging Face `config.json` fields the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct TransformerConfig {
    /// `bert` or `mpnet`.
    pub model_type: String,
    /// Width of every token vector (the sentence embedding's dimension before any dense layer).
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; `hidden_size` must be divisible by it.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the position-embedding table.
    pub max_position_embeddings: usize,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// Only `gelu` (the exact, erf-based one) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Padding token id; MPNet numbers positions from `pad_token_id + 1`.
    #[serde(default)]
    pub pad_token_id: usize,
    /// MPNet only: number of relative-position buckets.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_buckets() -> usize {
    32
}

/// Everything read from a model folder, validated, before any weight is loaded.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The folder itself.
    pub path: PathBuf,
    /// Transformer family.
    pub architecture: Architecture,
    /// `config.json`.
    pub config: TransformerConfig,
    /// Tokens per input, special tokens included; longer inputs are truncated.
    pub max_seq_length: usize,
    /// Lower-case the text before tokenizing (`sentence_bert_config.json`).
    pub do_lower_case: bool,
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether the pipeline ends with an L2 normalisation.
    pub normalize: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct SbertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("model file missing or unreadable: {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", path.display()))
}

impl ModelDir {
    /// Reads and validates the folder's config files. Errors name the file at fault.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            bail!("model folder not found: {}", path.display());
        }
        let modules: Vec<ModuleEntry> = read_json(&path.join("modules.json"))?;
        let mut pooling_path = None;
        let mut normalize = false;
        let mut has_transformer = false;
        for m in &modules {
            match m.kind.as_str() {
                "sentence_transformers.models.Transformer" => has_transformer = true,
                "sentence_transformers.models.Pooling" => pooling_path = Some(path.join(&m.path)),
                "sentence_transformers.models.Normalize" => normalize = true,
                other => bail!(
                    "{}: unsupported module type {other:?} (supported: Transformer, Pooling, Normalize)",
                    path.join("modules.json").display()
                ),
            }
        }
        if !has_transformer {
            bail!(
                "{}: no Transformer module",
                path.join("modules.json").display()
            );
        }
        let pooling_path = pooling_path.with_context(|| {
            format!("{}: no Pooling module", path.join("modules.json").display())
        })?;
        let pooling_file = pooling_path.join("config.json");
        let pc: PoolingConfig = read_json(&pooling_file)?;
        if pc.pooling_mode_mean_sqrt_len_tokens
            || pc.pooling_mode_weightedmean_tokens
            || pc.pooling_mode_lasttoken
        {
            bail!(
                "{}: unsupported pooling mode (supported: mean, cls, max)",
                pooling_file.display()
            );
        }
        let pooling = match (
            pc.pooling_mode_mean_tokens,
            pc.pooling_mode_cls_token,
            pc.pooling_mode_max_tokens,
        ) {
            (true, false, false) => Pooling::Mean,
            (false, true, false) => Pooling::Cls,
            (false, false, true) => Pooling::Max,
            _ => bail!(
                "{}: exactly one of mean / cls / max pooling must be set",
                pooling_file.display()
            ),
        };
        let sbert: SbertConfig = read_json(&path.join("sentence_bert_config.json"))?;
        let config_file = path.join("config.json");
        let config: TransformerConfig = read_json(&config_file)?;
        let architecture = match config.model_type.as_str() {
            "bert" => Architecture::Bert,
            "mpnet" => Architecture::MpNet,
            other => bail!(
                "{}: unsupported model_type {other:?} (supported: bert, mpnet)",
                config_file.display()
            ),
        };
        if config.hidden_act != "gelu" {
            bail!(
                "{}: unsupported hidden_act {:?} (supported: gelu)",
                config_file.display(),
                config.hidden_act
            );
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            bail!(
                "{}: hidden_size {} is not divisible by num_attention_heads {}",
                config_file.display(),
                config.hidden_size,
                config.num_attention_heads
            );
        }
        // Positions available to real tokens: MPNet reserves the first pad_token_id + 1 rows.
        let position_rows = match architecture {
            Architecture::Bert => config.max_position_embeddings,
            Architecture::MpNet => config
                .max_position_embeddings
                .saturating_sub(config.pad_token_id + 1),
        };
        let max_seq_length = sbert
            .max_seq_length
            .unwrap_or(position_rows)
            .min(position_rows);
        for file in ["tokenizer.json", "model.safetensors"] {
            if !path.join(file).is_file() {
                bail!("model file missing: {}", path.join(file).display());
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            architecture,
            config,
            max_seq_length,
            do_lower_case: sbert.do_lower_case,
            pooling,
            normalize,
        })
    }

    /// Finds a model by folder path, by name under the models folder, or by Hugging Face id
    /// in the local Hugging Face cache (no network is used).
    ///
    /// Order: `spec` as a path; `$KSPARSE_MODELS/<name>` and `models/<name>` (the default of
    /// `scripts/fetch-models.sh`), where `<name>` is the part after the last `/`; the Hub cache
    /// (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`) as
    /// `models--ORG--NAME/snapshots/<refs/main>`, with `sentence-transformers/` assumed when
    /// the id has no organisation.
    pub fn resolve(spec: &str) -> Result<PathBuf> {
        let direct = PathBuf::from(spec);
        if direct.is_dir() {
            return Ok(direct);
        }
        let mut tried = vec![direct];
        let name = spec.rsplit('/').next().unwrap_or(spec);
        let mut roots = Vec::new();
        if let Some(dir) = std::env::var_os("KSPARSE_MODELS") {
            roots.push(PathBuf::from(dir));
        }
        roots.push(PathBuf::from("models"));
        for root in roots {
            let p = root.join(name);
            if p.is_dir() {
                return Ok(p);
            }
            tried.push(p);
        }
        let id = if spec.contains('/') {
            spec.to_string()
        } else {
            format!("sentence-transformers/{spec}")
        };
        if let Some(cache) = hub_cache_dir() {
            let repo = cache.join(format!("models--{}", id.replace('/', "--")));
            let snapshot = std::fs::read_to_string(repo.join("refs").join("main"))
                .ok()
                .map(|rev| repo.join("snapshots").join(rev.trim()));
            if let Some(snap) = snapshot {
                if snap.is_dir() {
                    return Ok(snap);
                }
                tried.push(snap);
            } else {
                tried.push(repo.join("refs/main"));
            }
        }
        let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "model {spec:?} not found (looked in: {}). Run scripts/fetch-models.sh to get \
             all-MiniLM-L6-v2 and all-mpnet-base-v2 into models/, or pass a model folder",
            tried.join(", ")
        )
    }
}

fn hub_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::io::write_test_file as write;

    fn fake_folder(dir: &Path) {
        write(
            dir,
            "modules.json",
            r#"[{"type":"sentence_transformers.models.Transformer","path":""},
                {"type":"sentence_transformers.models.Pooling","path":"1_Pooling"},
                {"type":"sentence_transformers.models.Normalize","path":"2_Normalize"}]"#,
        );
        write(
            dir,
            "sentence_bert_config.json",
            r#"{"max_seq_length": 256, "do_lower_case": false}"#,
        );
        write(
            dir,
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens": true}"#,
        );
        write(
            dir,
            "config.json",
            r#"{"model_type":"bert","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,
                "intermediate_size":16,"max_position_embeddings":512,"layer_norm_eps":1e-12}"#,
        );
        write(dir, "tokenizer.json", "{}");
        write(dir, "model.safetensors", "");
    }

    #[test]
    fn reads_a_complete_folder() {
        let dir = tempfile::tempdir().unwrap();
        fake_folder(dir.path());
        let m = ModelDir::open(dir.path()).unwrap();
        assert_eq!(m.architecture, Architecture::Bert);
        assert_eq!(m.pooling, Pooling::Mean);
        assert!(m.normalize);
        assert_eq!(m.max_seq_length, 256);
    }

    #[test]
    fn missing_or_unsupported_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        fake_folder(dir.path());
        std::fs::remove_file(dir.path().join("1_Pooling/config.json")).unwrap();
        let err = format!("{:#}", ModelDir::open(dir.path()).unwrap_err());
        assert!(err.contains("1_Pooling/config.json"), "{err}");

        fake_folder(dir.path());
        write(
            dir.path(),
            "config.json",
            r#"{"model_type":"t5","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":512,"layer_norm_eps":1e-12}"#,
        );
        let err = format!("{:#}", ModelDir::open(dir.path()).unwrap_err());
        assert!(err.contains("config.json") && err.contains("t5"), "{err}");

        fake_folder(dir.path());
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        let err = format!("{:#}", ModelDir::open(dir.path()).unwrap_err());
        assert!(err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn resolves_hub_cache_layout() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache
            .path()
            .join("models--sentence-transformers--tiny-test-model");
        write(&repo, "refs/main", "abc123\n");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        // SAFETY of the env change: this is the only test reading HF_HUB_CACHE.
        std::env::set_var("HF_HUB_CACHE", cache.path());
        let got = ModelDir::resolve("tiny-test-model").unwrap();
        assert_eq!(got, repo.join("snapshots/abc123"));
        let err = format!("{:#}", ModelDir::resolve("no-such-model-xyz").unwrap_err());
        assert!(err.contains("fetch-models.sh"), "{err}");
    }
}
