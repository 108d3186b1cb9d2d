//! Postgres with pgvector: a table of (id, code `sparsevec`, title, text, digest),
//! searched by negative inner product (`<#>`) — exactly by a sequential scan, or
//! approximately through an HNSW index (`index=hnsw` at export, `search=hnsw` to use it).
//!
//! pgvector's `sparsevec` holds at most 16,000 non-zeros (an HNSW index: 1,000), far above
//! ksparse's code lengths; its indices count from 1 in text form, but the binary form the
//! client sends counts from 0 like ksparse's latents.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use pgvector::SparseVector;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{Kind, Type};
use postgres::{Client, Config, GenericClient, NoTls};

use ksparse::base::SparseCode;
use ksparse::encoder::scoring::{EngineHit, Fetch, SparseEngine};

use crate::{redacted, Destination, Provenance, Row};

/// Which index a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    /// A sequential scan: exact.
    Exact,
    /// The HNSW index with this `hnsw.ef_search`: approximate.
    Hnsw(usize),
}

/// A Postgres table, named
/// `postgres://USER[:PASSWORD]@HOST:PORT/DB?table=T[&search=exact|hnsw][&ef_search=N][&index=hnsw]`
/// (other parameters, e.g. `connect_timeout`, go to the client; it connects without TLS).
pub struct Postgres {
    name: String,
    config: Config,
    /// The table, quoted for SQL (`"schema"."table"` or `"table"`; also what `to_regclass`
    /// takes, so that capitals are kept).
    table: String,
    /// The table as the URL names it, for messages and the index's name.
    table_text: String,
    search: Search,
    /// Build an HNSW index on the codes when sealing an export.
    build_hnsw: bool,
    /// Open connections not in use (searches run on several threads at once).
    idle: Mutex<Vec<Client>>,
    /// The `code` column's declared width, once read.
    width: OnceLock<usize>,
}

/// `ef_search` when `search=hnsw` names none: pgvector's default.
const DEFAULT_EF_SEARCH: usize = 40;

impl Postgres {
    /// Parses `url` and opens one connection (nothing is created yet).
    pub fn connect(url: &str) -> Result<Self> {
        let name = redacted(url);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut table, mut search, mut ef, mut build_hnsw) = (None, "exact", None, false);
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "table" => table = Some(value.to_string()),
                "search" => search = value,
                "ef_search" => {
                    ef = Some(
                        value
                            .parse::<usize>()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| {
                                anyhow!("{name}: ef_search={value:?} is not a positive number")
                            })?,
                    )
                }
                "index" if value == "hnsw" => build_hnsw = true,
                "index" => bail!("{name}: index={value:?}: the index offered is hnsw"),
                _ => passed.push(pair),
            }
        }
        let table = table.ok_or_else(|| {
            anyhow!("{name}: no table: add ?table=NAME (or SCHEMA.NAME) to the URL")
        })?;
        let parts: Vec<&str> = table.split('.').collect();
        if parts.len() > 2
            || parts.iter().any(|p| {
                p.is_empty()
                    || p.len() > 63
                    || p.starts_with(|c: char| c.is_ascii_digit())
                    || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        {
            bail!(
                "{name}: table {table:?}: write NAME or SCHEMA.NAME, each of letters, digits and _"
            );
        }
        let search = match (search, ef) {
            ("exact", None) => Search::Exact,
            ("exact", Some(_)) => bail!("{name}: ef_search applies to search=hnsw"),
            ("hnsw", ef) => Search::Hnsw(ef.unwrap_or(DEFAULT_EF_SEARCH)),
            (other, _) => bail!(
                "{name}: search={other:?}: write search=exact (a sequential scan) or search=hnsw"
            ),
        };
        let client_url = if passed.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        let config: Config = client_url
            .parse()
            .with_context(|| format!("{name}: not a Postgres URL"))?;
        let pg = Self {
            name,
            config,
            table: parts
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join("."),
            table_text: table,
            search,
            build_hnsw,
            idle: Mutex::new(Vec::new()),
            width: OnceLock::new(),
        };
        let client = pg.open()?;
        pg.idle.lock().expect("pool").push(client);
        Ok(pg)
    }

    /// A new connection, set up for this URL's kind of search.
    fn open(&self) -> Result<Client> {
        let mut client = self
            .config
            .connect(NoTls)
            .with_context(|| format!("cannot connect to {}", self.name))?;
        let setup = match self.search {
            // The planner would use an HNSW index for ORDER BY … LIMIT when one exists.
            Search::Exact => "SET enable_indexscan = off".to_string(),
            Search::Hnsw(ef) => format!("SET hnsw.ef_search = {ef}"),
        };
        client
            .batch_execute(&setup)
            .with_context(|| format!("{}: {setup}", self.name))?;
        Ok(client)
    }

    /// Runs `work` on a connection of the pool (opening one when none is idle).
    fn with<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let pooled = self.idle.lock().expect("pool").pop();
        let mut client = match pooled {
            Some(c) => c,
            None => self.open()?,
        };
        let out = work(&mut client);
        // A connection that failed mid-transaction is dropped, not reused.
        if out.is_ok() && !client.is_closed() {
            self.idle.lock().expect("pool").push(client);
        }
        out
    }

    /// The `sparsevec` type of this database (an extension type: its id differs).
    fn sparsevec(client: &mut Client) -> Result<Type> {
        let row = client.query_one(
            "SELECT t.oid, n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = 'sparsevec'",
            &[],
        )?;
        Ok(Type::new(
            "sparsevec".into(),
            row.get(0),
            Kind::Simple,
            row.get(1),
        ))
    }

    /// The provenance kept in the table's comment.
    fn provenance(&self, comment: Option<String>) -> Result<Provenance> {
        Provenance::parse(
            comment.as_deref().unwrap_or_default(),
            &self.name,
            "table comment",
        )
    }

    /// Whether the table exists (`Some`), with its comment.
    fn comment(&self, client: &mut impl GenericClient) -> Result<Option<Option<String>>> {
        let row = client.query_one(
            "SELECT to_regclass($1) IS NOT NULL, obj_description(to_regclass($1), 'pg_class')",
            &[&self.table],
        )?;
        let exists: bool = row.get(0);
        Ok(exists.then(|| row.get(1)))
    }
}

/// Refuses rows Postgres's `text` cannot hold (a NUL character), naming the document.
fn check_text(rows: &[Row]) -> Result<()> {
    match rows
        .iter()
        .find(|r| r.id.contains('\0') || r.title.contains('\0') || r.text.contains('\0'))
    {
        Some(r) => bail!(
            "document {:?}: Postgres text cannot hold a NUL character",
            r.id
        ),
        None => Ok(()),
    }
}

/// (latent, value) pairs as a `sparsevec` of `width` dimensions.
fn sparse(pairs: impl Iterator<Item = (u32, f32)>, width: usize) -> SparseVector {
    let pairs: Vec<(i32, f32)> = pairs.map(|(j, v)| (j as i32, v)).collect();
    SparseVector::from_map(pairs.iter().map(|(j, v)| (j, v)), width as i32)
}

fn code_vector(code: &SparseCode, width: usize) -> SparseVector {
    sparse(
        code.ids.iter().copied().zip(code.values.iter().copied()),
        width,
    )
}

impl SparseEngine for Postgres {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn encoder_sha256(&self) -> Result<Option<String>> {
        let comment = self.with(|c| self.comment(c))?;
        match comment {
            None => bail!("{}: no table {}", self.name, self.table_text),
            Some(text) => Ok(Some(self.provenance(text)?.encoder_sha256)),
        }
    }

    fn count(&self) -> Result<usize> {
        let n: i64 = self.with(|c| {
            Ok(
                c.query_one(&format!("SELECT count(*) FROM {}", self.table), &[])?
                    .get(0),
            )
        })?;
        Ok(n as usize)
    }

    fn top(&self, terms: &[(u32, f32)], depth: usize, fetch: Fetch) -> Result<Vec<EngineHit>> {
        if terms.is_empty() || depth == 0 {
            return Ok(Vec::new());
        }
        let mut columns = "id, (code <#> $1) * -1".to_string();
        if fetch.codes {
            columns += ", code";
        }
        if fetch.documents {
            columns += ", title, text";
        }
        let sql = format!(
            "SELECT {columns} FROM {} ORDER BY code <#> $1 LIMIT $2",
            self.table
        );
        let rows = self.with(|c| {
            // The query must have the column's width for <#>.
            let width = self.width(c)?;
            let query = sparse(terms.iter().copied(), width);
            let params: [&(dyn postgres::types::ToSql + Sync); 2] = [&query, &(depth as i64)];
            match self.search {
                // An HNSW scan returns at most ef_search rows: widen it for deeper searches.
                Search::Hnsw(ef) if depth > ef => {
                    let mut tx = c.transaction()?;
                    tx.batch_execute(&format!("SET LOCAL hnsw.ef_search = {depth}"))?;
                    let rows = tx.query(&sql, &params)?;
                    tx.commit()?;
                    Ok(rows)
                }
                _ => Ok(c.query(&sql, &params)?),
            }
        })?;
        rows.iter()
            .map(|row| {
                let code = if fetch.codes {
                    let v: SparseVector = row.get(2);
                    Some(SparseCode {
                        ids: v.indices().iter().map(|&j| j as u32).collect(),
                        values: v.values().to_vec(),
                    })
                } else {
                    None
                };
                let at = if fetch.codes { 3 } else { 2 };
                Ok(EngineHit {
                    id: row.get(0),
                    score: row.get::<_, f64>(1) as f32,
                    code,
                    document: fetch.documents.then(|| (row.get(at), row.get(at + 1))),
                })
            })
            .collect()
    }
}

impl Postgres {
    /// Bytes the table takes on the server, with its indexes and TOAST data.
    pub fn table_bytes(&self) -> Result<u64> {
        let n: i64 = self.with(|c| {
            Ok(c.query_one(
                "SELECT pg_total_relation_size(to_regclass($1))",
                &[&self.table],
            )?
            .get(0))
        })?;
        Ok(n as u64)
    }

    /// The dimension the table's `code` column declares (`sparsevec(N)`), read once.
    fn width(&self, client: &mut Client) -> Result<usize> {
        if let Some(&w) = self.width.get() {
            return Ok(w);
        }
        let row = client.query_opt(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'code'",
            &[&self.table],
        )?;
        let w: i32 = row
            .ok_or_else(|| {
                anyhow!(
                    "{}: no table {} with a code column",
                    self.name,
                    self.table_text
                )
            })?
            .get(0);
        Ok(*self.width.get_or_init(|| w.max(1) as usize))
    }
}

impl Destination for Postgres {
    fn prepare(&self, provenance: &Provenance) -> Result<()> {
        self.with(|c| {
            let enabled = c
                .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'vector'", &[])?
                .is_some();
            if !enabled {
                // IF NOT EXISTS: another export (a part's) may enable it at the same time.
                c.batch_execute("CREATE EXTENSION IF NOT EXISTS vector").with_context(|| {
                    format!("{}: cannot enable pgvector (CREATE EXTENSION vector)", self.name)
                })?;
            }
            // Created and recorded in one transaction, IF NOT EXISTS: exports of several
            // parts that start together create it once, and each checks the record.
            let record = serde_json::to_string(provenance)?.replace('\'', "''");
            let mut tx = c.transaction()?;
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {t} (id text PRIMARY KEY, code sparsevec({h}) NOT NULL, title text NOT NULL, text text NOT NULL, digest bigint NOT NULL)",
                t = self.table,
                h = provenance.hidden
            ))?;
            match self.comment(&mut tx)?.flatten() {
                None => tx.batch_execute(&format!("COMMENT ON TABLE {} IS '{record}'", self.table))?,
                Some(text) => provenance.check_same_encoder(&self.provenance(Some(text))?, &self.name)?,
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn present(&self, ids: &[&str]) -> Result<HashMap<String, i64>> {
        self.with(|c| {
            let rows = c.query(
                &format!("SELECT id, digest FROM {} WHERE id = ANY($1)", self.table),
                &[&ids],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn insert(&self, rows: &[Row]) -> Result<()> {
        check_text(rows)?;
        self.with(|c| {
            let width = self.width(c)?;
            let types = [
                Type::TEXT,
                Self::sparsevec(c)?,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
            ];
            let mut tx = c.transaction()?;
            let sink = tx.copy_in(&format!(
                "COPY {} (id, code, title, text, digest) FROM STDIN (FORMAT binary)",
                self.table
            ))?;
            let mut writer = BinaryCopyInWriter::new(sink, &types);
            for r in rows {
                writer.write(&[
                    &r.id,
                    &code_vector(&r.code, width),
                    &r.title,
                    &r.text,
                    &r.digest,
                ])?;
            }
            writer.finish()?;
            tx.commit()?;
            Ok(())
        })
    }

    fn replace(&self, rows: &[Row]) -> Result<()> {
        check_text(rows)?;
        self.with(|c| {
            let width = self.width(c)?;
            let mut tx = c.transaction()?;
            let statement = tx.prepare(&format!(
                "INSERT INTO {} (id, code, title, text, digest) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET code = EXCLUDED.code, title = EXCLUDED.title, text = EXCLUDED.text, digest = EXCLUDED.digest",
                self.table
            ))?;
            for r in rows {
                tx.execute(&statement, &[&r.id, &code_vector(&r.code, width), &r.title, &r.text, &r.digest])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn seal(&self) -> Result<()> {
        if !self.build_hnsw {
            return Ok(());
        }
        self.with(|c| {
            // The build is fast while the graph fits in maintenance_work_mem (default
            // 64 MB): raise it to 1 GB for this session unless the server allows more.
            let allowed: i64 = c
                .query_one(
                    "SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem'",
                    &[],
                )?
                .get(0);
            if allowed < 1 << 20 {
                c.batch_execute("SET maintenance_work_mem = '1GB'")?;
            }
            let index = format!("{}_code_hnsw", self.table_text.replace('.', "_"));
            c.batch_execute(&format!(
                "CREATE INDEX IF NOT EXISTS \"{index}\" ON {} USING hnsw (code sparsevec_ip_ops)",
                self.table
            ))
            .with_context(|| format!("{}: building the HNSW index", self.name))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_connecting() {
        for (url, want) in [
            ("postgres://u@127.0.0.1:1/db", "no table"),
            ("postgres://u@127.0.0.1:1/db?table=a;drop", "table"),
            ("postgres://u@127.0.0.1:1/db?table=t&search=ivf", "search="),
            (
                "postgres://u@127.0.0.1:1/db?table=t&ef_search=10",
                "ef_search applies",
            ),
            ("postgres://u@127.0.0.1:1/db?table=t&index=ivf", "hnsw"),
        ] {
            let e = format!("{:#}", Postgres::connect(url).err().unwrap());
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
