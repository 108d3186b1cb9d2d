//! Payload filters in Qdrant's syntax, evaluated per point.
//!
//! `{"must": [c…], "should": [c…], "must_not": [c…]}` where a condition `c` is
//! `{"key": "city", "match": {"value": "Paris"}}` (equality on a keyword, integer or bool),
//! `{"key": "city", "match": {"any": ["Paris", "Rome"]}}` (`in`),
//! `{"key": "year", "range": {"gte": 2000, "lt": 2021}}` (numbers), `{"has_id": [1, "a"]}`,
//! or a nested filter. A key may name a nested field with dots (`"place.city"`); a field
//! holding an array passes when any element does (Qdrant's rule). A filter decides which
//! points a query may return; the search stays exact among those (see
//! `ksparse::index::Exclusion`).

use serde::Deserialize;
use serde_json::Value;

use crate::api::ApiError;
use crate::points::{Payload, PointId};

/// A filter: every `must`, at least one `should` (when any), no `must_not`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// All of these.
    #[serde(default, deserialize_with = "one_or_many")]
    pub must: Vec<Condition>,
    /// At least one of these (when not empty).
    #[serde(default, deserialize_with = "one_or_many")]
    pub should: Vec<Condition>,
    /// None of these.
    #[serde(default, deserialize_with = "one_or_many")]
    pub must_not: Vec<Condition>,
}

/// Qdrant accepts a single condition where a list is expected, and `null`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Condition>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Condition>),
        One(Box<Condition>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(c)) => vec![*c],
    })
}

/// One condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    /// A condition on a payload field.
    Field(FieldCondition),
    /// The point's id is one of these.
    HasId(HasId),
    /// A nested filter.
    Nested(Box<Filter>),
}

/// `{"has_id": [...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HasId {
    /// The ids.
    pub has_id: Vec<PointId>,
}

/// `{"key": …, "match": …}` or `{"key": …, "range": …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldCondition {
    /// The payload field (dots reach into nested objects).
    pub key: String,
    /// Equality or membership.
    #[serde(default, rename = "match")]
    pub matches: Option<Match>,
    /// A numeric range.
    #[serde(default)]
    pub range: Option<Range>,
}

/// `{"value": v}` or `{"any": [v…]}`; values are strings, integers or booleans.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Match {
    /// Equal to this value.
    Value {
        /// The value.
        value: Value,
    },
    /// Equal to one of these.
    Any {
        /// The values.
        any: Vec<Value>,
    },
}

/// Bounds on a number; absent bounds are open.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Greater than.
    pub gt: Option<f64>,
    /// Greater than or equal.
    pub gte: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Less than or equal.
    pub lte: Option<f64>,
}

impl Filter {
    /// Checks what serde cannot: each field condition has exactly one of `match` and
    /// `range`, match values are keywords, integers or booleans; ids are valid.
    pub fn validate(&self) -> Result<(), ApiError> {
        for c in self.must.iter().chain(&self.should).chain(&self.must_not) {
            match c {
                Condition::Field(f) => {
                    if f.matches.is_some() == f.range.is_some() {
                        return Err(ApiError::bad(format!(
                            "filter condition on {:?}: give exactly one of \"match\" and \"range\"",
                            f.key
                        )));
                    }
                    let values: Vec<&Value> = match &f.matches {
                        Some(Match::Value { value }) => vec![value],
                        Some(Match::Any { any }) => any.iter().collect(),
                        None => Vec::new(),
                    };
                    if let Some(v) = values
                        .iter()
                        .find(|v| !(v.is_string() || v.is_i64() || v.is_u64() || v.is_boolean()))
                    {
                        return Err(ApiError::bad(format!(
                            "filter condition on {:?}: match value {v} is not a keyword, integer or boolean",
                            f.key
                        )));
                    }
                }
                Condition::HasId(h) => {
                    for id in &h.has_id {
                        id.key()?;
                    }
                }
                Condition::Nested(f) => f.validate()?,
            }
        }
        Ok(())
    }

    /// Whether the point with index key `key` and `payload` passes.
    pub fn passes(&self, key: &str, payload: Option<&Payload>) -> bool {
        self.must.iter().all(|c| c.passes(key, payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.passes(key, payload)))
            && !self.must_not.iter().any(|c| c.passes(key, payload))
    }
}

impl Condition {
    fn passes(&self, key: &str, payload: Option<&Payload>) -> bool {
        match self {
            Condition::Field(f) => {
                let mut found = Vec::new();
                if let Some(p) = payload {
                    lookup(p, &f.key, &mut found);
                }
                found.iter().any(|v| f.accepts(v))
            }
            Condition::HasId(h) => h.has_id.iter().any(|id| id.key().is_ok_and(|k| k == key)),
            Condition::Nested(f) => f.passes(key, payload),
        }
    }
}

impl FieldCondition {
    fn accepts(&self, v: &Value) -> bool {
        match (&self.matches, &self.range) {
            (Some(Match::Value { value }), _) => same(v, value),
            (Some(Match::Any { any }), _) => any.iter().any(|a| same(v, a)),
            (None, Some(r)) => v.as_f64().is_some_and(|x| r.contains(x)),
            (None, None) => false,
        }
    }
}

impl Range {
    fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// Equality as a keyword index sees it: numbers by value (1 == 1.0), others exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The values at dotted `path` in `payload`, arrays flattened.
fn lookup<'a>(payload: &'a Payload, path: &str, out: &mut Vec<&'a Value>) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let Some(v) = payload.get(head) else { return };
    let mut push = |v: &'a Value| match (rest, v) {
        (None, Value::Array(items)) => out.extend(items),
        (None, v) => out.push(v),
        (Some(r), Value::Object(m)) => lookup(m, r, out),
        (Some(r), Value::Array(items)) => {
            for m in items.iter().filter_map(Value::as_object) {
                lookup(m, r, out);
            }
        }
        _ => {}
    };
    push(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Filter {
        let f: Filter = serde_json::from_str(json).unwrap();
        f.validate().unwrap();
        f
    }

    fn payload(json: &str) -> Payload {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn conditions_follow_qdrant() {
        let p = payload(
            r#"{"city": "Paris", "year": 2020, "tags": ["a", "b"], "place": {"zip": 75001}}"#,
        );
        let yes = |f: &str| filter(f).passes("1", Some(&p));
        assert!(yes(
            r#"{"must": [{"key": "city", "match": {"value": "Paris"}}]}"#
        ));
        assert!(!yes(
            r#"{"must": [{"key": "city", "match": {"value": "Rome"}}]}"#
        ));
        assert!(yes(
            r#"{"must": {"key": "city", "match": {"any": ["Rome", "Paris"]}}}"#
        ));
        assert!(yes(
            r#"{"must": [{"key": "tags", "match": {"value": "b"}}]}"#
        ));
        assert!(yes(
            r#"{"must": [{"key": "year", "range": {"gte": 2020, "lt": 2021}}]}"#
        ));
        assert!(!yes(
            r#"{"must": [{"key": "year", "range": {"gt": 2020}}]}"#
        ));
        assert!(yes(
            r#"{"must": [{"key": "place.zip", "match": {"value": 75001}}]}"#
        ));
        assert!(!yes(
            r#"{"must_not": [{"key": "city", "match": {"value": "Paris"}}]}"#
        ));
        assert!(yes(
            r#"{"should": [{"key": "city", "match": {"value": "x"}}, {"has_id": [1]}]}"#
        ));
        assert!(!yes(
            r#"{"must": [{"key": "missing", "match": {"value": 1}}]}"#
        ));
        assert!(yes(
            r#"{"must": [{"must_not": [{"key": "city", "match": {"value": "Rome"}}]}]}"#
        ));
        assert!(yes("{}"));
        assert!(
            !filter(r#"{"must": [{"key": "city", "match": {"value": "Paris"}}]}"#)
                .passes("1", None)
        );
    }

    #[test]
    fn bad_filters_are_named() {
        let f: Filter = serde_json::from_str(
            r#"{"must": [{"key": "x", "match": {"value": 1}, "range": {"lt": 2}}]}"#,
        )
        .unwrap();
        assert!(f.validate().unwrap_err().message.contains("exactly one"));
        let f: Filter =
            serde_json::from_str(r#"{"must": [{"key": "x", "match": {"value": 1.5}}]}"#).unwrap();
        assert!(f.validate().is_err());
        assert!(serde_json::from_str::<Filter>(r#"{"musts": []}"#).is_err());
    }
}
