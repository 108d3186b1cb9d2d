//! Points as the API sees them: ids (u64 or string), payloads, and the record each point
//! keeps in the index's document store.
//!
//! The index knows a document by one string: a u64 id `7` is the document `"7"`, a UUID
//! is its lowercase hyphenated form, any other string is itself (so the string `"7"` and
//! the number 7 name the same point). The stored record keeps the id as it was given, so
//! answers return it with its type.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::ApiError;

/// A point's payload: a JSON object.
pub type Payload = Map<String, Value>;

/// A point id as users give it: an unsigned integer or a string (Qdrant: u64 or UUID).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PointId {
    /// A number.
    Num(u64),
    /// A string (a UUID is normalised to lowercase with hyphens).
    Str(String),
}

/// Longest string id, in bytes.
pub const MAX_ID_BYTES: usize = 512;

impl PointId {
    /// The document id the index stores for this point; refuses empty, overlong or
    /// multi-line strings.
    pub fn key(&self) -> Result<String, ApiError> {
        match self {
            PointId::Num(n) => Ok(n.to_string()),
            PointId::Str(s) => {
                if s.is_empty() || s.len() > MAX_ID_BYTES || s.contains(['\n', '\r']) {
                    return Err(ApiError::bad(format!(
                        "point id {s:?}: ids are u64 numbers or strings of 1 to {MAX_ID_BYTES} bytes without line breaks"
                    )));
                }
                Ok(uuid::Uuid::try_parse(s)
                    .map(|u| u.hyphenated().to_string())
                    .unwrap_or_else(|_| s.clone()))
            }
        }
    }

    /// The id of a document that has no stored record (adopted from a search folder):
    /// its document id, as a string.
    pub fn from_key(key: &str) -> Self {
        PointId::Str(key.to_string())
    }
}

/// Qdrant's `with_payload` / `with_vector` options: absent or `null` means `default`, a
/// boolean says itself, anything else (a list of fields, a selector) means yes.
pub fn wanted(option: &Option<serde_json::Value>, default: bool) -> bool {
    match option {
        None | Some(serde_json::Value::Null) => default,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => true,
    }
}

/// A sparse vector: latent (or term) indices and their values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sparse {
    /// Indices, any order, no repeats.
    pub indices: Vec<u32>,
    /// One value per index.
    pub values: Vec<f32>,
}

impl Sparse {
    /// (index, value) pairs sorted by index; refuses mismatched lengths, repeats and
    /// non-finite values.
    pub fn pairs(&self, what: &str) -> Result<Vec<(u32, f32)>, ApiError> {
        if self.indices.len() != self.values.len() {
            return Err(ApiError::bad(format!(
                "{what}: {} indices but {} values",
                self.indices.len(),
                self.values.len()
            )));
        }
        let mut pairs: Vec<(u32, f32)> = self
            .indices
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect();
        pairs.sort_by_key(|p| p.0);
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ApiError::bad(format!(
                "{what}: index {} appears twice",
                w[0].0
            )));
        }
        if let Some(p) = pairs.iter().find(|p| !p.1.is_finite()) {
            return Err(ApiError::bad(format!(
                "{what}: value {} of index {} is not finite",
                p.1, p.0
            )));
        }
        Ok(pairs)
    }
}

/// The vector part of a point: a dense vector (encoded by the collection's encoder) or
/// named vectors (Qdrant's `{"text": {"indices": …, "values": …}}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VectorInput {
    /// A dense vector of the model's dimension.
    Dense(Vec<f32>),
    /// Named sparse vectors; the collection has one name.
    Named(std::collections::BTreeMap<String, Sparse>),
}

/// One point of an upsert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointInput {
    /// Its id.
    pub id: PointId,
    /// A dense vector, or named sparse vectors.
    #[serde(default)]
    pub vector: Option<VectorInput>,
    /// A sparse code given directly.
    #[serde(default)]
    pub sparse: Option<Sparse>,
    /// Text, embedded with the collection's model and encoded by its encoder.
    #[serde(default)]
    pub text: Option<String>,
    /// A title, embedded with the text (title + " " + text, as `ksparse build` does).
    #[serde(default)]
    pub title: Option<String>,
    /// Payload (a JSON object).
    #[serde(default)]
    pub payload: Option<Payload>,
}

/// What the document store keeps per point (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StoredPoint {
    /// The id as given.
    pub id: Option<PointId>,
    /// Its payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// Its title, when it came as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its text, when it came as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Its dense vector, in collections that keep them (to train an encoder on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

impl StoredPoint {
    /// Parses a stored record; an empty record (a document without one) is the default.
    pub fn parse(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            return Self::default();
        }
        // Records are written by this server from a value it serialised; a record that
        // does not parse is reported as empty rather than failing every search.
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// Qdrant's `Record` (retrieve) and the body of a point in answers.
#[derive(Debug, Serialize)]
pub struct Record {
    /// The id as given.
    pub id: PointId,
    /// Payload, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// The stored code, when asked for (`with_vector`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<std::collections::BTreeMap<String, Sparse>>,
}

/// One hit of a query: Qdrant's `ScoredPoint`, with ksparse's optional `document` and
/// `explain`.
#[derive(Debug, Serialize)]
pub struct ScoredPoint {
    /// The id as given.
    pub id: PointId,
    /// The commit that answered (Qdrant's point version).
    pub version: u64,
    /// The score under the query's scoring mode.
    pub score: f32,
    /// Payload, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// Title and snippet, when asked for (`with_document`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Document>,
    /// The latents that contributed most to the score, when asked for (`explain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Vec<Contribution>>,
}

/// A document's title and the start of its text.
#[derive(Debug, Serialize)]
pub struct Document {
    /// Title (empty when none).
    pub title: String,
    /// The first ~200 characters of the text.
    pub snippet: String,
}

/// One latent's share of a score.
#[derive(Debug, Serialize)]
pub struct Contribution {
    /// The latent.
    pub latent: u32,
    /// Its term of the score.
    pub contribution: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_one_document_key() {
        assert_eq!(PointId::Num(7).key().unwrap(), "7");
        assert_eq!(PointId::Str("7".into()).key().unwrap(), "7");
        let u = "A1B2C3D4-0000-4000-8000-00000000000F";
        assert_eq!(
            PointId::Str(u.into()).key().unwrap(),
            "a1b2c3d4-0000-4000-8000-00000000000f"
        );
        assert!(PointId::Str("".into()).key().is_err());
        assert!(PointId::Str("a\nb".into()).key().is_err());
        let id: PointId = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(id, PointId::Num(u64::MAX));
        assert!(serde_json::from_str::<PointId>("-1").is_err());
    }

    #[test]
    fn sparse_vectors_are_checked() {
        let s = Sparse {
            indices: vec![5, 1],
            values: vec![0.5, 2.0],
        };
        assert_eq!(s.pairs("q").unwrap(), [(1, 2.0), (5, 0.5)]);
        let twice = Sparse {
            indices: vec![1, 1],
            values: vec![1.0, 1.0],
        };
        assert!(twice.pairs("q").unwrap_err().message.contains("twice"));
        let short = Sparse {
            indices: vec![1],
            values: vec![],
        };
        assert!(short.pairs("q").is_err());
    }
}
