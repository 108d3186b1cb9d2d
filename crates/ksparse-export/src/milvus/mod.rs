//! Milvus: a collection of (id, code, title, text, digest) with an inverted index on the
//! codes, searched by inner product with `drop_ratio_search` 0 — exact.
//!
//! The client speaks Milvus's gRPC API (tonic, over the messages of [`proto`]) and reads
//! its own writes: every call asks for Strong consistency. Milvus keeps strings of at
//! most 65,535 bytes, so longer titles and texts are cut (and counted by the export).

mod proto;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use ksparse::base::SparseCode;
use ksparse::encoder::scoring::{EngineHit, Fetch, SparseEngine};

use crate::{cut, redacted, Destination, Provenance, Row};
use proto::field_data::Field;
use proto::scalar_field::Data as Scalars;
use proto::vector_field::Data as Vectors;

/// The longest VarChar Milvus keeps, in bytes.
pub const MAX_STRING_BYTES: usize = 65_535;
/// The longest document id, in bytes (the primary key's VarChar length).
const MAX_ID_BYTES: usize = 512;
/// The most hits one Milvus search returns.
const MAX_TOPK: usize = 16_384;
/// The largest request the client sends: well below Milvus's default gRPC limit (64 MiB).
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// The largest message the client accepts (search results with codes and texts).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A Milvus collection, named `milvus://[USER:PASSWORD@]HOST:PORT/COLLECTION[?db=NAME]`.
pub struct Milvus {
    name: String,
    collection: String,
    db: String,
    /// `USER:PASSWORD`, base64-encoded, sent as the `authorization` header.
    authorization: Option<String>,
    channel: Channel,
    runtime: tokio::runtime::Runtime,
}

impl Milvus {
    /// Connects to the server of `url` (nothing is created yet).
    pub fn connect(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("milvus://")
            .ok_or_else(|| anyhow!("{url:?} is not a milvus:// URL"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (host, collection) = rest.split_once('/').ok_or_else(|| {
            anyhow!(
                "{}: no collection: write milvus://HOST:PORT/COLLECTION",
                redacted(url)
            )
        })?;
        if collection.is_empty()
            || !collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || collection.starts_with(|c: char| c.is_ascii_digit())
        {
            bail!(
                "{}: collection name {collection:?}: Milvus names are letters, digits and _, not starting with a digit",
                redacted(url)
            );
        }
        let mut db = String::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("db", v)) => db = v.to_string(),
                _ => bail!(
                    "{}: unknown parameter {pair:?} (Milvus URLs take db=NAME)",
                    redacted(url)
                ),
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the Milvus client's runtime")?;
        let endpoint = Endpoint::from_shared(format!("http://{host}"))
            .with_context(|| format!("{}: not a HOST:PORT", redacted(url)))?
            .connect_timeout(Duration::from_secs(10))
            // A hung server fails the call instead of blocking the export forever.
            .timeout(Duration::from_secs(600));
        let channel = runtime
            .block_on(endpoint.connect())
            .with_context(|| format!("cannot connect to Milvus at {host}"))?;
        Ok(Self {
            name: redacted(url),
            collection: collection.to_string(),
            db,
            authorization: auth.map(|a| base64::engine::general_purpose::STANDARD.encode(a)),
            channel,
            runtime,
        })
    }

    /// One unary call of the Milvus service.
    fn call<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let path = PathAndQuery::try_from(format!("{}{method}", proto::SERVICE))
            .expect("a valid gRPC path");
        let mut request = tonic::Request::new(request);
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert(
                "authorization",
                auth.parse().expect("base64 is a valid header value"),
            );
        }
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let reply = self.runtime.block_on(async move {
            grpc.ready().await?;
            grpc.unary(request, path, tonic_prost::ProstCodec::default())
                .await
                .map_err(anyhow::Error::from)
        });
        Ok(reply
            .with_context(|| format!("{}: {method} failed", self.name))?
            .into_inner())
    }

    /// A call whose reply is a bare [`proto::Status`], failing unless it says success.
    fn call_ok<Req>(&self, method: &str, request: Req) -> Result<()>
    where
        Req: Message + Send + Sync + 'static,
    {
        let status: proto::Status = self.call(method, request)?;
        self.check(method, Some(status))
    }

    /// Fails with the server's reason unless `status` says success.
    fn check(&self, what: &str, status: Option<proto::Status>) -> Result<()> {
        match status {
            Some(s) if s.code != 0 || s.error_code != 0 => {
                bail!(
                    "{}: {what}: {} (code {})",
                    self.name,
                    s.reason,
                    s.code.max(s.error_code)
                )
            }
            _ => Ok(()),
        }
    }

    fn exists(&self) -> Result<bool> {
        let r: proto::BoolResponse = self.call(
            "HasCollection",
            proto::HasCollectionRequest {
                db_name: self.db.clone(),
                collection_name: self.collection.clone(),
                time_stamp: 0,
            },
        )?;
        self.check("HasCollection", r.status)?;
        Ok(r.value)
    }

    fn provenance(&self) -> Result<Provenance> {
        let r: proto::DescribeCollectionResponse = self.call(
            "DescribeCollection",
            proto::DescribeCollectionRequest {
                db_name: self.db.clone(),
                collection_name: self.collection.clone(),
            },
        )?;
        self.check("DescribeCollection", r.status)?;
        let schema = r.schema.unwrap_or_default();
        Provenance::parse(&schema.description, &self.name, "description")
    }

    /// Creates the collection, its schema's description holding `provenance`.
    fn create(&self, provenance: &Provenance) -> Result<()> {
        let varchar = |name: &str, max: usize, primary: bool| proto::FieldSchema {
            name: name.to_string(),
            is_primary_key: primary,
            data_type: proto::data_type::VAR_CHAR,
            type_params: vec![kv("max_length", &max.to_string())],
        };
        let schema = proto::CollectionSchema {
            name: self.collection.clone(),
            description: serde_json::to_string(provenance)?,
            fields: vec![
                varchar("id", MAX_ID_BYTES, true),
                proto::FieldSchema {
                    name: "code".into(),
                    data_type: proto::data_type::SPARSE_FLOAT_VECTOR,
                    ..Default::default()
                },
                varchar("title", MAX_STRING_BYTES, false),
                varchar("text", MAX_STRING_BYTES, false),
                proto::FieldSchema {
                    name: "digest".into(),
                    data_type: proto::data_type::INT64,
                    ..Default::default()
                },
            ],
        };
        self.call_ok(
            "CreateCollection",
            proto::CreateCollectionRequest {
                db_name: self.db.clone(),
                collection_name: self.collection.clone(),
                schema: schema.encode_to_vec(),
                shards_num: 1,
                consistency_level: proto::consistency_level::STRONG,
            },
        )
    }

    /// Creates the inverted index on the codes (Milvus accepts the same index again, so a
    /// collection whose creation was interrupted before its index gets it on the next run).
    fn create_index(&self) -> Result<()> {
        self.call_ok(
            "CreateIndex",
            proto::CreateIndexRequest {
                db_name: self.db.clone(),
                collection_name: self.collection.clone(),
                field_name: "code".into(),
                index_name: "code".into(),
                extra_params: vec![
                    kv("index_type", "SPARSE_INVERTED_INDEX"),
                    kv("metric_type", "IP"),
                    kv("params", r#"{"drop_ratio_build": 0}"#),
                ],
            },
        )
    }

    /// Loads the collection for search and waits until it is loaded.
    fn load(&self) -> Result<()> {
        self.call_ok(
            "LoadCollection",
            proto::LoadCollectionRequest {
                db_name: self.db.clone(),
                collection_name: self.collection.clone(),
            },
        )?;
        for _ in 0..600 {
            let r: proto::GetLoadStateResponse = self.call(
                "GetLoadState",
                proto::GetLoadStateRequest {
                    collection_name: self.collection.clone(),
                    db_name: self.db.clone(),
                },
            )?;
            self.check("GetLoadState", r.status)?;
            if r.state == proto::load_state::LOADED {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{}: not loaded after 60 s", self.name)
    }

    /// The columns of `rows` as Milvus takes them.
    fn columns(&self, rows: &[Row]) -> Result<Vec<proto::FieldData>> {
        if let Some(r) = rows.iter().find(|r| r.id.len() > MAX_ID_BYTES) {
            bail!(
                "document id {:?}… is {} bytes; Milvus keys hold at most {MAX_ID_BYTES}",
                cut(&r.id, 40),
                r.id.len()
            );
        }
        let strings = |name: &str, f: &dyn Fn(&Row) -> &str| {
            scalar_column(
                name,
                proto::data_type::VAR_CHAR,
                Scalars::StringData(proto::StringArray {
                    data: rows
                        .iter()
                        .map(|r| cut(f(r), MAX_STRING_BYTES).to_string())
                        .collect(),
                }),
            )
        };
        Ok(vec![
            strings("id", &|r| &r.id),
            proto::FieldData {
                r#type: proto::data_type::SPARSE_FLOAT_VECTOR,
                field_name: "code".into(),
                field: Some(Field::Vectors(proto::VectorField {
                    dim: 0,
                    data: Some(Vectors::SparseFloatVector(proto::SparseFloatArray {
                        contents: rows
                            .iter()
                            .map(|r| {
                                sparse_bytes(
                                    r.code
                                        .ids
                                        .iter()
                                        .copied()
                                        .zip(r.code.values.iter().copied()),
                                )
                            })
                            .collect(),
                        dim: 0,
                    })),
                })),
            },
            strings("title", &|r| &r.title),
            strings("text", &|r| &r.text),
            scalar_column(
                "digest",
                proto::data_type::INT64,
                Scalars::LongData(proto::LongArray {
                    data: rows.iter().map(|r| r.digest).collect(),
                }),
            ),
        ])
    }

    /// Inserts (or, with `upsert`, replaces) `rows`, in requests of at most
    /// [`MAX_REQUEST_BYTES`] (Milvus refuses larger gRPC messages).
    fn write(&self, rows: &[Row], upsert: bool) -> Result<()> {
        let mut start = 0;
        while start < rows.len() {
            let (mut end, mut bytes) = (start, 0);
            while end < rows.len() && (end == start || bytes < MAX_REQUEST_BYTES) {
                let r = &rows[end];
                bytes += r.id.len() + r.title.len() + r.text.len() + 8 * r.code.len() + 64;
                end += 1;
            }
            let chunk = &rows[start..end];
            let (fields_data, num_rows) = (self.columns(chunk)?, chunk.len() as u32);
            let (method, r): (&str, proto::MutationResult) = if upsert {
                let request = proto::UpsertRequest {
                    db_name: self.db.clone(),
                    collection_name: self.collection.clone(),
                    fields_data,
                    num_rows,
                };
                ("Upsert", self.call("Upsert", request)?)
            } else {
                let request = proto::InsertRequest {
                    db_name: self.db.clone(),
                    collection_name: self.collection.clone(),
                    fields_data,
                    num_rows,
                };
                ("Insert", self.call("Insert", request)?)
            };
            self.check(method, r.status)?;
            let written = if upsert { r.upsert_cnt } else { r.insert_cnt };
            if written as usize != chunk.len() {
                bail!(
                    "{}: {method} wrote {written} of {} rows",
                    self.name,
                    chunk.len()
                );
            }
            start = end;
        }
        Ok(())
    }

    /// A query with Strong consistency; the columns it returns.
    fn query(&self, expr: String, output_fields: &[&str]) -> Result<Vec<proto::FieldData>> {
        let r: proto::QueryResults = self.call(
            "Query",
            proto::QueryRequest {
                db_name: self.db.clone(),
                collection_name: self.collection.clone(),
                expr,
                output_fields: output_fields.iter().map(|s| s.to_string()).collect(),
                consistency_level: proto::consistency_level::STRONG,
            },
        )?;
        self.check("Query", r.status)?;
        Ok(r.fields_data)
    }
}

fn kv(key: &str, value: &str) -> proto::KeyValuePair {
    proto::KeyValuePair {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn scalar_column(name: &str, data_type: i32, data: Scalars) -> proto::FieldData {
    proto::FieldData {
        r#type: data_type,
        field_name: name.to_string(),
        field: Some(Field::Scalars(proto::ScalarField { data: Some(data) })),
    }
}

/// A sparse vector as Milvus encodes it: (u32 index, f32 value) pairs, little-endian.
fn sparse_bytes(pairs: impl Iterator<Item = (u32, f32)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (j, v) in pairs {
        out.extend_from_slice(&j.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The inverse of [`sparse_bytes`].
fn sparse_code(bytes: &[u8]) -> SparseCode {
    let mut code = SparseCode::default();
    for pair in bytes.chunks_exact(8) {
        code.ids
            .push(u32::from_le_bytes(pair[..4].try_into().expect("4 bytes")));
        code.values
            .push(f32::from_le_bytes(pair[4..].try_into().expect("4 bytes")));
    }
    code
}

/// The column named `name` of a query's or search's output.
fn column<'a>(columns: &'a [proto::FieldData], name: &str) -> Option<&'a Field> {
    columns
        .iter()
        .find(|c| c.field_name == name)
        .and_then(|c| c.field.as_ref())
}

fn strings<'a>(columns: &'a [proto::FieldData], name: &str) -> Option<&'a [String]> {
    match column(columns, name) {
        Some(Field::Scalars(proto::ScalarField {
            data: Some(Scalars::StringData(a)),
        })) => Some(&a.data),
        _ => None,
    }
}

fn longs<'a>(columns: &'a [proto::FieldData], name: &str) -> Option<&'a [i64]> {
    match column(columns, name) {
        Some(Field::Scalars(proto::ScalarField {
            data: Some(Scalars::LongData(a)),
        })) => Some(&a.data),
        _ => None,
    }
}

/// A document id as a Milvus string literal (double-quoted, `"` and `\` escaped). Milvus
/// expressions do not match ids with control characters, which are refused.
fn literal(id: &str) -> Result<String> {
    if id.chars().any(char::is_control) {
        bail!("document id {id:?} holds a control character, which Milvus expressions cannot match: give the documents printable ids");
    }
    Ok(format!(
        "\"{}\"",
        id.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

impl SparseEngine for Milvus {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn encoder_sha256(&self) -> Result<Option<String>> {
        Ok(Some(self.provenance()?.encoder_sha256))
    }

    fn count(&self) -> Result<usize> {
        let columns = self.query(String::new(), &["count(*)"])?;
        let n = longs(&columns, "count(*)")
            .and_then(|c| c.first())
            .ok_or_else(|| anyhow!("{}: count(*) returned no number", self.name))?;
        Ok(*n as usize)
    }

    fn top(&self, terms: &[(u32, f32)], depth: usize, fetch: Fetch) -> Result<Vec<EngineHit>> {
        if terms.is_empty() || depth == 0 {
            return Ok(Vec::new());
        }
        if terms.iter().any(|t| t.1 < 0.0) {
            bail!("{}: Milvus takes sparse vectors of non-negative values, and this query has negative weights (scoring modes reconstruction and projected:M with a negative weight): search with symmetric or two-stage", self.name);
        }
        if depth > MAX_TOPK {
            bail!(
                "{}: Milvus returns at most {MAX_TOPK} hits a search, {depth} were asked for",
                self.name
            );
        }
        let placeholder = proto::PlaceholderGroup {
            placeholders: vec![proto::PlaceholderValue {
                tag: "$0".into(),
                r#type: proto::placeholder_type::SPARSE_FLOAT_VECTOR,
                values: vec![sparse_bytes(terms.iter().copied())],
            }],
        };
        let mut output_fields = Vec::new();
        if fetch.codes {
            output_fields.push("code".to_string());
        }
        if fetch.documents {
            output_fields.extend(["title".to_string(), "text".to_string()]);
        }
        let r: proto::SearchResults = self.call(
            "Search",
            proto::SearchRequest {
                db_name: self.db.clone(),
                collection_name: self.collection.clone(),
                placeholder_group: placeholder.encode_to_vec(),
                dsl_type: proto::dsl_type::BOOL_EXPR_V1,
                output_fields,
                search_params: vec![
                    kv("anns_field", "code"),
                    kv("topk", &depth.to_string()),
                    kv("metric_type", "IP"),
                    kv("params", r#"{"drop_ratio_search": 0}"#),
                    kv("round_decimal", "-1"),
                ],
                nq: 1,
                consistency_level: proto::consistency_level::STRONG,
                ..Default::default()
            },
        )?;
        self.check("Search", r.status)?;
        let Some(data) = r.results else {
            return Ok(Vec::new());
        };
        let ids = match data.ids.and_then(|i| i.id_field) {
            Some(proto::ids::IdField::StrId(a)) => a.data,
            None => Vec::new(),
            Some(_) => bail!(
                "{}: integer ids: not a collection written by ksparse",
                self.name
            ),
        };
        if data.scores.len() != ids.len() {
            bail!(
                "{}: {} ids but {} scores in a search result",
                self.name,
                ids.len(),
                data.scores.len()
            );
        }
        let codes = match column(&data.fields_data, "code") {
            Some(Field::Vectors(proto::VectorField {
                data: Some(Vectors::SparseFloatVector(a)),
                ..
            })) => Some(&a.contents),
            _ => None,
        };
        let titles = strings(&data.fields_data, "title");
        let texts = strings(&data.fields_data, "text");
        let mut hits = Vec::with_capacity(ids.len());
        for (i, (id, score)) in ids.into_iter().zip(data.scores).enumerate() {
            hits.push(EngineHit {
                id,
                score,
                code: if fetch.codes {
                    let c = codes.and_then(|c| c.get(i)).ok_or_else(|| {
                        anyhow!("{}: the search returned no code for hit {i}", self.name)
                    })?;
                    Some(sparse_code(c))
                } else {
                    None
                },
                document: titles
                    .zip(texts)
                    .and_then(|(t, x)| Some((t.get(i)?.clone(), x.get(i)?.clone()))),
            });
        }
        Ok(hits)
    }
}

impl Destination for Milvus {
    fn prepare(&self, provenance: &Provenance) -> Result<()> {
        if !self.exists()? {
            // Another export (a part's) may create it at the same moment: then it exists.
            if let Err(e) = self.create(provenance) {
                if !self.exists()? {
                    return Err(e);
                }
            }
        }
        provenance.check_same_encoder(&self.provenance()?, &self.name)?;
        self.create_index()?;
        self.load()
    }

    fn present(&self, ids: &[&str]) -> Result<HashMap<String, i64>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let list = ids
            .iter()
            .map(|id| literal(id))
            .collect::<Result<Vec<_>>>()?;
        let columns = self.query(format!("id in [{}]", list.join(",")), &["id", "digest"])?;
        let (found, digests) = (
            strings(&columns, "id").unwrap_or_default(),
            longs(&columns, "digest").unwrap_or_default(),
        );
        if found.len() != digests.len() {
            bail!(
                "{}: a query returned {} ids but {} digests",
                self.name,
                found.len(),
                digests.len()
            );
        }
        Ok(found.iter().cloned().zip(digests.iter().copied()).collect())
    }

    fn insert(&self, rows: &[Row]) -> Result<()> {
        self.write(rows, false)
    }

    fn replace(&self, rows: &[Row]) -> Result<()> {
        self.write(rows, true)
    }

    fn seal(&self) -> Result<()> {
        let r: proto::FlushResponse = self.call(
            "Flush",
            proto::FlushRequest {
                db_name: self.db.clone(),
                collection_names: vec![self.collection.clone()],
            },
        )?;
        self.check("Flush", r.status)
    }

    fn longest_string(&self) -> Option<usize> {
        Some(MAX_STRING_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_vectors_round_trip_and_literals_escape() {
        let code = SparseCode {
            ids: vec![0, 7, 4_000_000],
            values: vec![0.5, 1e-7, 3.25],
        };
        let bytes = sparse_bytes(code.ids.iter().copied().zip(code.values.iter().copied()));
        assert_eq!(bytes.len(), 24);
        assert_eq!(sparse_code(&bytes), code);
        assert_eq!(literal(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(literal("a\nb").is_err());
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        for (url, want) in [
            ("milvus://127.0.0.1:1", "no collection"),
            ("milvus://127.0.0.1:1/bad-name", "collection name"),
            ("milvus://127.0.0.1:1/c?x=1", "unknown parameter"),
        ] {
            let e = Milvus::connect(url).err().unwrap().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
