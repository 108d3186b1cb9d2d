//! A hand-written subset of the Milvus gRPC API (milvus-proto v2.5.x:
//! `common.proto`, `schema.proto`, `milvus.proto`) as prost messages.
//!
//! Only the messages and fields this crate sends or reads (plus the few that the wire
//! tests below check against pymilvus) are declared. Field numbers and wire types match
//! the real schema (checked against the descriptors shipped in pymilvus 2.5.18 and the
//! milvus-proto v2.5.10 tag), so numbering has gaps where fields are left out; those are
//! skipped by prost when decoding and are simply absent (proto3 default) when encoding.
//! Protobuf enums are carried as plain `int32` fields; their numeric values are the
//! constants in the small modules below. The optional `common.MsgBase base = 1` of every
//! request is left out: the server accepts requests without it.

/// gRPC path prefix of the Milvus service; append the method name, e.g. `"Search"`.
pub const SERVICE: &str = "/milvus.proto.milvus.MilvusService/";

// ---------------------------------------------------------------------------
// Enum values (sent and received as int32).
// ---------------------------------------------------------------------------

/// `milvus.proto.schema.DataType` values.
pub mod data_type {
    /// `Int64`: 64-bit signed integers (the `digest` column, `count(*)`).
    pub const INT64: i32 = 5;
    /// `VarChar`: UTF-8 strings of at most `max_length` bytes.
    pub const VAR_CHAR: i32 = 21;
    /// `SparseFloatVector`: sparse vectors of (u32 index, f32 value) pairs.
    pub const SPARSE_FLOAT_VECTOR: i32 = 104;
}

/// `milvus.proto.common.PlaceholderType` values.
pub mod placeholder_type {
    /// `SparseFloatVector`: query vectors in the sparse row encoding.
    pub const SPARSE_FLOAT_VECTOR: i32 = 104;
}

/// `milvus.proto.common.ConsistencyLevel` values.
pub mod consistency_level {
    /// `Strong`: reads see every write acknowledged before them.
    pub const STRONG: i32 = 0;
}

/// `milvus.proto.common.LoadState` values.
pub mod load_state {
    /// `LoadStateLoaded`: the collection is in memory and searchable.
    pub const LOADED: i32 = 3;
}

/// `milvus.proto.common.DslType` values.
pub mod dsl_type {
    /// `BoolExprV1`: `dsl` is a boolean filter expression.
    pub const BOOL_EXPR_V1: i32 = 1;
}

// ---------------------------------------------------------------------------
// common.proto
// ---------------------------------------------------------------------------

/// Outcome of a call; success when both `error_code` and `code` are 0.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Status {
    /// Legacy `ErrorCode` enum (deprecated upstream, still filled by servers).
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    /// Human-readable error message ("" on success).
    #[prost(string, tag = "2")]
    pub reason: String,
    /// Current error code (0 = success).
    #[prost(int32, tag = "3")]
    pub code: i32,
    /// Whether the server says the call may succeed if retried.
    #[prost(bool, tag = "4")]
    pub retriable: bool,
    /// Extra detail on the error (often a stack or cause chain).
    #[prost(string, tag = "5")]
    pub detail: String,
}

/// A string key with a string value (properties, params, statistics).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct KeyValuePair {
    /// The key, e.g. `"max_length"` or `"metric_type"`.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value, as text (numbers and JSON objects included).
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Query vectors of a search, serialized into `SearchRequest.placeholder_group`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PlaceholderGroup {
    /// One entry per placeholder; a plain search has one, tagged `"$0"`.
    #[prost(message, repeated, tag = "1")]
    pub placeholders: Vec<PlaceholderValue>,
}

/// One placeholder (tag `"$0"`): its vector type and one encoded vector per query.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PlaceholderValue {
    /// The placeholder's name in the search expression, `"$0"`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// A `placeholder_type` value.
    #[prost(int32, tag = "2")]
    pub r#type: i32,
    /// One encoded query vector per query (for sparse vectors: the row encoding of
    /// [`SparseFloatArray::contents`]).
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub values: Vec<Vec<u8>>,
}

// ---------------------------------------------------------------------------
// schema.proto
// ---------------------------------------------------------------------------

/// Definition of one collection field (name, type, primary key, type params).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FieldSchema {
    /// The field's name, unique in the collection.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Whether this field is the collection's primary key.
    #[prost(bool, tag = "3")]
    pub is_primary_key: bool,
    /// A `data_type` value.
    #[prost(int32, tag = "5")]
    pub data_type: i32,
    /// E.g. `max_length` for VarChar, `dim` for dense vectors.
    #[prost(message, repeated, tag = "6")]
    pub type_params: Vec<KeyValuePair>,
}

/// Schema of a collection; sent serialized in `CreateCollectionRequest.schema`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CollectionSchema {
    /// The collection's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Free text kept with the collection (ksparse stores its provenance JSON here).
    #[prost(string, tag = "2")]
    pub description: String,
    /// The collection's fields, in order.
    #[prost(message, repeated, tag = "4")]
    pub fields: Vec<FieldSchema>,
}

/// Column of int64 values (Int64 fields, int primary keys, `count(*)`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct LongArray {
    /// The values, one per row.
    #[prost(int64, repeated, tag = "1")]
    pub data: Vec<i64>,
}

/// Column of strings (VarChar fields, string primary keys).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct StringArray {
    /// The values, one per row.
    #[prost(string, repeated, tag = "1")]
    pub data: Vec<String>,
}

/// Column of sparse float vectors: one encoded row per entry of `contents`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SparseFloatArray {
    /// Per row: (u32 index LE, f32 value LE) pairs, indices ascending.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub contents: Vec<Vec<u8>>,
    /// Max index + 1 over the rows (pymilvus leaves it 0 on row inserts).
    #[prost(int64, tag = "2")]
    pub dim: i64,
}

/// A scalar column: exactly one typed array (only the two types ksparse's columns use
/// are declared; a column of another type decodes as `None`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ScalarField {
    /// The column's values (`None` if of an undeclared type).
    #[prost(oneof = "scalar_field::Data", tags = "3, 6")]
    pub data: Option<scalar_field::Data>,
}

/// The `oneof data` of [`ScalarField`].
pub mod scalar_field {
    /// Which typed array a scalar column holds.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Data {
        /// Int64 values.
        #[prost(message, tag = "3")]
        LongData(super::LongArray),
        /// VarChar values.
        #[prost(message, tag = "6")]
        StringData(super::StringArray),
    }
}

/// A vector column: its dimension and exactly one encoding of the vectors (only sparse
/// vectors are declared).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct VectorField {
    /// Dimension of dense vectors; 0 for sparse vectors.
    #[prost(int64, tag = "1")]
    pub dim: i64,
    /// The column's vectors (`None` if of an undeclared encoding).
    #[prost(oneof = "vector_field::Data", tags = "6")]
    pub data: Option<vector_field::Data>,
}

/// The `oneof data` of [`VectorField`].
pub mod vector_field {
    /// Which encoding a vector column holds.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Data {
        /// Sparse float vectors.
        #[prost(message, tag = "6")]
        SparseFloatVector(super::SparseFloatArray),
    }
}

/// One column of entities (insert payload, query output, search output field).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FieldData {
    /// A `data_type` value.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Name of the collection field (or output expression, e.g. `count(*)`).
    #[prost(string, tag = "2")]
    pub field_name: String,
    /// The column's values, scalar or vector.
    #[prost(oneof = "field_data::Field", tags = "3, 4")]
    pub field: Option<field_data::Field>,
}

/// The `oneof field` of [`FieldData`].
pub mod field_data {
    /// Whether a column is scalar or vector.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Field {
        /// A scalar column.
        #[prost(message, tag = "3")]
        Scalars(super::ScalarField),
        /// A vector column.
        #[prost(message, tag = "4")]
        Vectors(super::VectorField),
    }
}

/// Primary keys: either int64 or string.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Ids {
    /// The keys, one per row or hit.
    #[prost(oneof = "ids::IdField", tags = "1, 2")]
    pub id_field: Option<ids::IdField>,
}

/// The `oneof id_field` of [`Ids`].
pub mod ids {
    /// Int64 or VarChar primary keys.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum IdField {
        /// Int64 primary keys.
        #[prost(message, tag = "1")]
        IntId(super::LongArray),
        /// VarChar primary keys.
        #[prost(message, tag = "2")]
        StrId(super::StringArray),
    }
}

/// Hits of a search, all queries concatenated; `topks[i]` hits belong to query i.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SearchResultData {
    /// Number of queries searched.
    #[prost(int64, tag = "1")]
    pub num_queries: i64,
    /// The requested number of hits per query.
    #[prost(int64, tag = "2")]
    pub top_k: i64,
    /// Requested output fields, one column each, rows aligned with `ids`.
    #[prost(message, repeated, tag = "3")]
    pub fields_data: Vec<FieldData>,
    /// Score of each hit (inner product for metric IP), aligned with `ids`.
    #[prost(float, repeated, tag = "4")]
    pub scores: Vec<f32>,
    /// Primary key of each hit.
    #[prost(message, optional, tag = "5")]
    pub ids: Option<Ids>,
    /// Number of hits of each query, in query order.
    #[prost(int64, repeated, tag = "6")]
    pub topks: Vec<i64>,
}

// ---------------------------------------------------------------------------
// milvus.proto: requests and responses
// ---------------------------------------------------------------------------

/// `CreateCollection` request (returns [`Status`]).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CreateCollectionRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection to create.
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// A serialized [`CollectionSchema`] (bytes, not a nested message).
    #[prost(bytes = "vec", tag = "4")]
    pub schema: Vec<u8>,
    /// Number of shards (0 lets the server choose).
    #[prost(int32, tag = "5")]
    pub shards_num: i32,
    /// A `consistency_level` value (pymilvus default: Bounded).
    #[prost(int32, tag = "6")]
    pub consistency_level: i32,
}

/// `HasCollection` request (returns [`BoolResponse`]).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HasCollectionRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection asked about.
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// Answer as of this timestamp (0 = now).
    #[prost(uint64, tag = "4")]
    pub time_stamp: u64,
}

/// Status plus a boolean answer (e.g. of `HasCollection`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct BoolResponse {
    /// Outcome of the call.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// The answer.
    #[prost(bool, tag = "2")]
    pub value: bool,
}

/// `DescribeCollection` request (by name).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DescribeCollectionRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection to describe.
    #[prost(string, tag = "3")]
    pub collection_name: String,
}

/// `DescribeCollection` answer (only the schema is declared).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DescribeCollectionResponse {
    /// Outcome of the call.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// A nested message here (unlike the bytes in `CreateCollectionRequest`).
    #[prost(message, optional, tag = "2")]
    pub schema: Option<CollectionSchema>,
}

/// `CreateIndex` request (returns [`Status`]); `extra_params` holds
/// `index_type`, `metric_type` and `params` (a JSON object as text).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CreateIndexRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection to index.
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// Name of the field to index.
    #[prost(string, tag = "4")]
    pub field_name: String,
    /// Index settings: `index_type`, `metric_type`, `params`.
    #[prost(message, repeated, tag = "5")]
    pub extra_params: Vec<KeyValuePair>,
    /// Name of the new index.
    #[prost(string, tag = "6")]
    pub index_name: String,
}

/// `LoadCollection` request: load a collection into memory for search (returns [`Status`]).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct LoadCollectionRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection to load.
    #[prost(string, tag = "3")]
    pub collection_name: String,
}

/// `GetLoadState` request. Note the numbering: `collection_name` is 2, `db_name` is 4.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetLoadStateRequest {
    /// Name of the collection asked about.
    #[prost(string, tag = "2")]
    pub collection_name: String,
    /// Database name ("" for the default database).
    #[prost(string, tag = "4")]
    pub db_name: String,
}

/// `GetLoadState` answer; `state` is a `load_state` value.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetLoadStateResponse {
    /// Outcome of the call.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// A `load_state` value.
    #[prost(int32, tag = "2")]
    pub state: i32,
}

/// `Insert` request: columns of new entities (returns [`MutationResult`]).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct InsertRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection written to.
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// One column per collection field, all `num_rows` long.
    #[prost(message, repeated, tag = "5")]
    pub fields_data: Vec<FieldData>,
    /// Number of rows (entities) in `fields_data`.
    #[prost(uint32, tag = "7")]
    pub num_rows: u32,
}

/// `Upsert` request: same shape as [`InsertRequest`] (returns [`MutationResult`]).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct UpsertRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection written to.
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// One column per collection field, all `num_rows` long.
    #[prost(message, repeated, tag = "5")]
    pub fields_data: Vec<FieldData>,
    /// Number of rows (entities) in `fields_data`.
    #[prost(uint32, tag = "7")]
    pub num_rows: u32,
}

/// Outcome of `Insert` and `Upsert`: status and row counts.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct MutationResult {
    /// Outcome of the call.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// Number of rows inserted (by `Insert`).
    #[prost(int64, tag = "6")]
    pub insert_cnt: i64,
    /// Number of rows upserted (by `Upsert`).
    #[prost(int64, tag = "8")]
    pub upsert_cnt: i64,
}

/// `Flush` request: seal the growing segments of the named collections.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FlushRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Names of the collections to flush.
    #[prost(string, repeated, tag = "3")]
    pub collection_names: Vec<String>,
}

/// `Flush` answer (only the status is declared).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FlushResponse {
    /// Outcome of the call.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
}

/// `Query` request: entities matching a filter, or `count(*)`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct QueryRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection queried.
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// The boolean filter expression ("" for none, e.g. with `count(*)`).
    #[prost(string, tag = "4")]
    pub expr: String,
    /// Fields (or `count(*)`) to return, one column each.
    #[prost(string, repeated, tag = "5")]
    pub output_fields: Vec<String>,
    /// A `consistency_level` value.
    #[prost(int32, tag = "11")]
    pub consistency_level: i32,
}

/// `Query` answer: one column per output field.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct QueryResults {
    /// Outcome of the call.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// The requested columns, rows aligned.
    #[prost(message, repeated, tag = "2")]
    pub fields_data: Vec<FieldData>,
}

/// `Search` request: ANN search of `nq` query vectors in `placeholder_group`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SearchRequest {
    /// Database name ("" for the default database).
    #[prost(string, tag = "2")]
    pub db_name: String,
    /// Name of the collection searched.
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// A serialized [`PlaceholderGroup`].
    #[prost(bytes = "vec", tag = "6")]
    pub placeholder_group: Vec<u8>,
    /// A `dsl_type` value; pymilvus sends BoolExprV1.
    #[prost(int32, tag = "7")]
    pub dsl_type: i32,
    /// Fields to return with each hit, one column each.
    #[prost(string, repeated, tag = "8")]
    pub output_fields: Vec<String>,
    /// `anns_field`, `topk`, `metric_type`, `params` (JSON), `round_decimal`, ...
    #[prost(message, repeated, tag = "9")]
    pub search_params: Vec<KeyValuePair>,
    /// Read at least up to this timestamp (pymilvus's session consistency; 0 = none).
    #[prost(uint64, tag = "11")]
    pub guarantee_timestamp: u64,
    /// Number of query vectors in `placeholder_group`.
    #[prost(int64, tag = "12")]
    pub nq: i64,
    /// A `consistency_level` value.
    #[prost(int32, tag = "14")]
    pub consistency_level: i32,
    /// Use the collection's consistency level instead of `consistency_level`.
    #[prost(bool, tag = "15")]
    pub use_default_consistency: bool,
}

/// `Search` answer.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SearchResults {
    /// Outcome of the call.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// The hits (`None` when there are none).
    #[prost(message, optional, tag = "2")]
    pub results: Option<SearchResultData>,
    /// Name of the collection searched.
    #[prost(string, tag = "3")]
    pub collection_name: String,
}

// ---------------------------------------------------------------------------
// Wire checks against bytes produced by pymilvus 2.5.18 (Python protobuf).
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn hex(s: &str) -> Vec<u8> {
        assert_eq!(s.len() % 2, 0);
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn kv(k: &str, v: &str) -> KeyValuePair {
        KeyValuePair {
            key: k.into(),
            value: v.into(),
        }
    }

    fn sparse_row(pairs: &[(u32, f32)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(pairs.len() * 8);
        for &(i, v) in pairs {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    #[test]
    fn create_collection_matches_pymilvus() {
        let schema = CollectionSchema {
            name: "c".into(),
            fields: vec![
                FieldSchema {
                    name: "id".into(),
                    is_primary_key: true,
                    data_type: data_type::VAR_CHAR,
                    type_params: vec![kv("max_length", "64")],
                },
                FieldSchema {
                    name: "sparse".into(),
                    data_type: data_type::SPARSE_FLOAT_VECTOR,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let schema_bytes = schema.encode_to_vec();
        assert_eq!(
            schema_bytes,
            hex("0a0163221a120269641801281532100a0a6d61785f6c656e67746812023634220a12067370617273652868")
        );
        let req = CreateCollectionRequest {
            collection_name: "c".into(),
            schema: schema_bytes,
            consistency_level: 2, // Bounded, as pymilvus sends by default
            ..Default::default()
        };
        assert_eq!(
            req.encode_to_vec(),
            hex("1a0163222b0a0163221a120269641801281532100a0a6d61785f6c656e67746812023634220a120673706172736528683002")
        );
    }

    #[test]
    fn insert_matches_pymilvus() {
        let req = InsertRequest {
            collection_name: "c".into(),
            fields_data: vec![
                FieldData {
                    r#type: data_type::VAR_CHAR,
                    field_name: "id".into(),
                    field: Some(field_data::Field::Scalars(ScalarField {
                        data: Some(scalar_field::Data::StringData(StringArray {
                            data: vec!["a".into(), "b".into()],
                        })),
                    })),
                },
                FieldData {
                    r#type: data_type::SPARSE_FLOAT_VECTOR,
                    field_name: "sparse".into(),
                    field: Some(field_data::Field::Vectors(VectorField {
                        dim: 0,
                        data: Some(vector_field::Data::SparseFloatVector(SparseFloatArray {
                            contents: vec![sparse_row(&[(2, 0.5), (5, 1.5)]), Vec::new()],
                            dim: 0,
                        })),
                    })),
                },
            ],
            num_rows: 2,
            ..Default::default()
        };
        assert_eq!(
            req.encode_to_vec(),
            hex("1a01632a100815120269641a0832060a01610a01622a2208681206737061727365221632140a10020000000000003f050000000000c03f0a003802")
        );
    }

    #[test]
    fn sparse_search_matches_pymilvus() {
        let group = PlaceholderGroup {
            placeholders: vec![PlaceholderValue {
                tag: "$0".into(),
                r#type: placeholder_type::SPARSE_FLOAT_VECTOR,
                values: vec![sparse_row(&[(1, 0.25), (3, 0.5)])],
            }],
        };
        let req = SearchRequest {
            collection_name: "c".into(),
            placeholder_group: group.encode_to_vec(),
            dsl_type: dsl_type::BOOL_EXPR_V1,
            output_fields: vec!["id".into()],
            search_params: vec![
                kv("topk", "10"),
                kv("round_decimal", "-1"),
                kv("ignore_growing", "False"),
                kv("metric_type", "IP"),
                kv("anns_field", "sparse"),
                kv("params", r#"{"drop_ratio_search":0,"metric_type":"IP"}"#),
            ],
            guarantee_timestamp: 1,
            nq: 1,
            use_default_consistency: true,
            ..Default::default()
        };
        assert_eq!(
            req.encode_to_vec(),
            hex(concat!(
                "1a0163321a0a180a02243010681a10010000000000803e030000000000003f3801420269644a0a0a04746f706b",
                "120231304a130a0d726f756e645f646563696d616c12022d314a170a0e69676e6f72655f67726f77696e6712",
                "0546616c73654a110a0b6d65747269635f74797065120249504a140a0a616e6e735f6669656c641206737061",
                "7273654a340a06706172616d73122a7b2264726f705f726174696f5f736561726368223a302c226d65747269",
                "635f74797065223a224950227d580160017801"
            ))
        );
    }

    #[test]
    fn decodes_count_query_results() {
        let r =
            QueryResults::decode(hex("0a00121308051208636f756e74282a291a051a030a012a").as_slice())
                .unwrap();
        assert_eq!(r.status, Some(Status::default()));
        assert_eq!(r.fields_data.len(), 1);
        let f = &r.fields_data[0];
        assert_eq!(f.field_name, "count(*)");
        assert_eq!(f.r#type, data_type::INT64);
        match &f.field {
            Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::LongData(l)),
            })) => assert_eq!(l.data, vec![42]),
            other => panic!("unexpected field: {other:?}"),
        }
    }

    #[test]
    fn decodes_search_results() {
        let r = SearchResults::decode(
            hex("0a00121b0801100222080000403f0000003f2a0812060a01610a01623201021a0163").as_slice(),
        )
        .unwrap();
        assert_eq!(r.collection_name, "c");
        let d = r.results.unwrap();
        assert_eq!((d.num_queries, d.top_k), (1, 2));
        assert_eq!(d.scores, vec![0.75, 0.5]);
        assert_eq!(d.topks, vec![2]);
        match d.ids.and_then(|i| i.id_field) {
            Some(ids::IdField::StrId(s)) => {
                assert_eq!(s.data, vec!["a".to_string(), "b".to_string()])
            }
            other => panic!("unexpected ids: {other:?}"),
        }
    }

    #[test]
    fn decodes_status() {
        let s = Status::decode(hex("08011204626f6f6d18642a0164").as_slice()).unwrap();
        assert_eq!(s.error_code, 1);
        assert_eq!(s.reason, "boom");
        assert_eq!(s.code, 100);
        assert!(!s.retriable);
        assert_eq!(s.detail, "d");
    }
}
