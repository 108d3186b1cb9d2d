//! The OpenAPI 3 description at `/openapi.json`, generated from the route table.

use serde_json::{json, Map, Value};

use crate::routes::{Access, ROUTES};

/// The document: one operation per route of [`ROUTES`], its path parameters, its access
/// (security) and the answer envelope.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = match r.access {
            Access::Open => json!([]),
            Access::Read | Access::Write => json!([{"api-key": []}, {"bearer": []}]),
        };
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method.to_lowercase(), r.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "security": security,
            "x-access": format!("{:?}", r.access).to_lowercase(),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if matches!(r.method, "PUT" | "POST") {
            op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ksparse",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Collections of K-sparse codes: a Qdrant-shaped REST API with text in, explain and scoring modes.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "api-key": {"type": "apiKey", "in": "header", "name": "api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Answer": {"type": "object", "required": ["result", "status", "time"], "properties": {
                    "result": {}, "status": {"type": "string", "enum": ["ok"]}, "time": {"type": "number"}}},
                "Error": {"type": "object", "required": ["status", "time"], "properties": {
                    "status": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                    "time": {"type": "number"}}},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_described() {
        let doc = super::document();
        for r in super::ROUTES {
            let op = &doc["paths"][r.path][r.method.to_lowercase()];
            assert_eq!(op["summary"], r.summary, "{} {}", r.method, r.path);
        }
    }
}
