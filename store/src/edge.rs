//! The qdrant-edge backend.
//!
//! - A case id (any string) maps to a UUIDv5 point id; the case is the point's payload.
//! - Writes hold an exclusive lock and are flushed (WAL and segments) before they return, so an
//!   acknowledged write survives a crash. qdrant-edge's `flush` asserts that no update runs at the
//!   same time, which the lock also guarantees.
//! - An OS file lock on `store.lock` keeps a second process out before anything is touched
//!   (qdrant-edge only flocks its WAL directory, after reading the config, with an opaque error).
//! - qdrant-edge panics on some I/O faults; every call is wrapped so a panic becomes an error.
//! - qdrant-edge 0.7.2 writes every update to its WAL but never reads it back nor truncates it
//!   (0.9 replays and acks it): durability comes from the flushed segments, and the WAL only grows
//!   (~3 KB per written case at 384 dims). Closed WAL files are therefore deleted when the store is
//!   opened, keeping the newest one, which carries the operation numbers (see `prune_wal`).

use crate::Error;
use fs2::FileExt;
use qdrant_edge::SearchParams;
use qdrant_edge::{
    CountRequest, CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeVectorParams,
    FieldIndexOperations, Filter, NamedQuery, Payload, PayloadFieldSchema, PayloadSchemaType,
    PointId, PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum, QueryRequest,
    ScoringQuery, ScrollRequest, UpdateOperation, VectorInternal, VectorPersisted,
    VectorStructInternal, VectorStructPersisted, WalOptions, WithPayloadInterface, WithVector,
};
use serde_json::json;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use triage_core::{Case, CaseFilter, CaseStore, Hit, Page};

const VECTOR: &str = "text";
/// Stores smaller than this are searched exactly (brute force); larger ones through HNSW.
const EXACT_SEARCH_BELOW: usize = 50_000;
/// Writes are refused while less than this is free on the store's file system. qdrant-edge
/// writes through memory maps, and on a full disk the kernel kills the process (SIGBUS, seen on a
/// full tmpfs during an import) instead of returning an error: refusing first turns that into an
/// error that says what to do, with nothing half-written. (Best effort: another process can still
/// fill the disk between the check and the write.)
pub const MIN_FREE_BYTES: u64 = 16 << 20;
pub struct EdgeStore {
    shard: RwLock<Option<EdgeShard>>,
    path: PathBuf,
    dim: usize,
    _lock: std::fs::File,
}

impl EdgeStore {
    /// Opens the store in `data_dir/store`, creating it for `dim`-dimensional vectors if absent.
    pub fn open(data_dir: &Path, dim: usize) -> Result<Self, Error> {
        let path = data_dir.join("store");
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let lock_path = data_dir.join("store.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| Error::Io {
                path: lock_path.clone(),
                source,
            })?;
        if lock.try_lock_exclusive().is_err() {
            return Err(Error::Locked {
                path,
                lock: lock_path,
            });
        }
        let backend = |message: String| Error::Backend {
            path: path.clone(),
            message,
        };
        let shard = if path.join("edge_config.json").exists() {
            // qdrant-edge would quietly start an empty store over a lost `segments` directory.
            let segments = path.join("segments");
            let found =
                std::fs::read_dir(&segments).map(|d| d.flatten().any(|e| e.path().is_dir()));
            if !found.unwrap_or(false) {
                return Err(Error::Backend {
                    path: segments,
                    message: "no segment in it: the store's data is missing (restore the directory or use a new --data-dir)".into(),
                });
            }
            prune_wal(&path.join("wal"))?;
            let shard = guarded(&path, "open", || {
                EdgeShard::load(&path, None).map_err(|e| e.to_string())
            })?;
            let found = shard.config().vectors.get(VECTOR).map(|v| v.size);
            match found {
                Some(found) if found == dim => shard,
                Some(found) => {
                    return Err(Error::Dimension {
                        path,
                        found,
                        expected: dim,
                    })
                }
                None => {
                    return Err(backend(format!(
                        "no vector named {VECTOR:?}: not a triage store"
                    )))
                }
            }
        } else {
            let mut config = EdgeConfig {
                // The WAL is write-only in 0.7.2 (see the module docs): small files keep what stays
                // after pruning small (the default preallocates 32 MiB per file).
                wal_options: Some(WalOptions {
                    segment_capacity: 4 << 20,
                    ..WalOptions::default()
                }),
                ..EdgeConfig::default()
            };
            config.vectors.insert(
                VECTOR.to_string(),
                EdgeVectorParams {
                    size: dim,
                    distance: Distance::Cosine,
                    on_disk: Some(true),
                    multivector_config: None,
                    datatype: None,
                    quantization_config: None,
                    hnsw_config: None,
                },
            );
            let shard = guarded(&path, "create", || {
                EdgeShard::new(&path, config).map_err(|e| e.to_string())
            })?;
            for (field, schema) in [
                ("label", PayloadSchemaType::Keyword),
                ("unit", PayloadSchemaType::Keyword),
                ("district", PayloadSchemaType::Keyword),
                ("time", PayloadSchemaType::Integer),
            ] {
                let index = UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(CreateIndex {
                        field_name: field.parse().expect("valid JSON path"),
                        field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                    }),
                );
                guarded(&path, "index", || {
                    shard.update(index).map_err(|e| e.to_string())
                })?;
            }
            guarded(&path, "flush", || {
                shard.flush();
                Ok(())
            })?;
            shard
        };
        Ok(Self {
            shard: RwLock::new(Some(shard)),
            path,
            dim,
            _lock: lock,
        })
    }

    fn read<T>(
        &self,
        what: &str,
        op: impl FnOnce(&EdgeShard) -> Result<T, String>,
    ) -> triage_core::Result<T> {
        let guard = self.shard.read().unwrap_or_else(|e| e.into_inner());
        let shard = guard.as_ref().expect("open until dropped");
        Ok(guarded(&self.path, what, || op(shard))?)
    }

    /// Runs `op` alone (no other reads or writes) and flushes before returning: the durability point.
    fn write<T>(
        &self,
        what: &str,
        op: impl FnOnce(&EdgeShard) -> Result<T, String>,
    ) -> triage_core::Result<T> {
        self.check_space()?;
        let guard = self.shard.write().unwrap_or_else(|e| e.into_inner());
        let shard = guard.as_ref().expect("open until dropped");
        Ok(guarded(&self.path, what, || {
            let value = op(shard)?;
            shard.flush();
            Ok(value)
        })?)
    }

    /// `Err` (ENOSPC's message) while less than [`MIN_FREE_BYTES`] is free for the store.
    fn check_space(&self) -> Result<(), Error> {
        let free = match fs2::available_space(&self.path) {
            Ok(free) => free,
            Err(_) => return Ok(()), // a file system that cannot say: let the write tell
        };
        if free >= MIN_FREE_BYTES {
            return Ok(());
        }
        Err(Error::Io {
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "No space left on device: {:.1} MiB free, and the store keeps {} MiB free \
                     (it writes through memory maps, which a full disk would crash); nothing \
                     was written: free space and try again",
                    free as f64 / (1u64 << 20) as f64,
                    MIN_FREE_BYTES >> 20
                ),
            ),
        })
    }

    /// qdrant-edge's own message for a wrong length is a store error; it is the caller's input.
    fn check_dim(&self, what: &str, vector: &[f32]) -> triage_core::Result<()> {
        crate::check_dim(self.dim, self.path.display(), what, vector)
    }
}

impl Drop for EdgeStore {
    fn drop(&mut self) {
        // qdrant-edge flushes on drop and panics if that fails; a drop must not panic.
        let shard = self
            .shard
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if catch_unwind(AssertUnwindSafe(move || drop(shard))).is_err() {
            tracing::error!(path = %self.path.display(), "flushing the store on close failed");
        }
    }
}

fn guarded<T>(path: &Path, what: &str, op: impl FnOnce() -> Result<T, String>) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(op)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(Error::Backend {
            path: path.to_path_buf(),
            message: format!("{what}: {message}"),
        }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(Error::Backend {
                path: path.to_path_buf(),
                message: format!("{what} failed: {message}"),
            })
        }
    }
}

/// Deletes all closed WAL files but the newest (what `Wal::prefix_truncate` would do after an ack).
/// Nothing reads them back in qdrant-edge 0.7.2; the newest one stays because the next operation
/// number continues from its end, and segments ignore updates numbered below a point's version.
fn prune_wal(wal: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: wal.to_path_buf(),
        source,
    };
    let Ok(entries) = std::fs::read_dir(wal) else {
        return Ok(()); // no WAL yet: qdrant-edge creates it
    };
    let mut closed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if let Some(start) = name
            .to_str()
            .and_then(|n| n.strip_prefix("closed-"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            closed.push((start, entry.path()));
        }
    }
    closed.sort();
    closed.pop();
    for (_, file) in closed {
        std::fs::remove_file(&file).map_err(|source| Error::Io { path: file, source })?;
    }
    Ok(())
}

fn point_id(case_id: &str) -> PointId {
    PointId::Uuid(crate::point_uuid(case_id))
}

fn to_payload(case: &Case) -> Payload {
    match serde_json::to_value(case).expect("a case serialises") {
        serde_json::Value::Object(map) => Payload(map),
        _ => unreachable!("a case serialises to an object"),
    }
}

fn from_payload(payload: Option<Payload>) -> triage_core::Result<Case> {
    let map = payload.map(|p| p.0).unwrap_or_default();
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| triage_core::Error::Store(format!("a stored case does not parse: {e}")))
}

fn dense(vector: Option<VectorStructInternal>) -> Vec<f32> {
    match vector {
        Some(VectorStructInternal::Named(mut named)) => match named.remove(VECTOR) {
            Some(VectorInternal::Dense(v)) => v,
            _ => Vec::new(),
        },
        Some(VectorStructInternal::Single(v)) => v,
        _ => Vec::new(),
    }
}

/// The filter in Qdrant's own JSON form (the REST API's), which its types deserialize.
fn to_filter(f: &CaseFilter) -> Option<Filter> {
    let c = crate::PayloadConditions::of(f)?;
    let mut must: Vec<_> = c
        .matches
        .iter()
        .map(|(field, value)| json!({"key": field, "match": {"value": value}}))
        .collect();
    if let Some((gte, lte)) = c.time {
        must.push(json!({"key": "time", "range": {"gte": gte, "lte": lte}}));
    }
    let must_not: Vec<_> = c
        .present
        .iter()
        .map(|field| json!({"is_empty": {"key": field}}))
        .collect();
    let filter = json!({"must": must, "must_not": must_not});
    Some(serde_json::from_value(filter).expect("a well-formed Qdrant filter"))
}

impl CaseStore for EdgeStore {
    fn backend(&self) -> &str {
        "qdrant-edge"
    }

    fn upsert(&self, cases: &[(Case, Vec<f32>)]) -> triage_core::Result<()> {
        if cases.is_empty() {
            return Ok(());
        }
        for (case, vector) in cases {
            self.check_dim(&format!("the vector of case {:?}", case.id), vector)?;
        }
        let points = cases
            .iter()
            .map(|(case, vector)| PointStructPersisted {
                id: point_id(&case.id),
                vector: VectorStructPersisted::Named(HashMap::from([(
                    VECTOR.to_string(),
                    VectorPersisted::Dense(vector.clone()),
                )])),
                payload: Some(to_payload(case)),
            })
            .collect();
        let operation = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
            PointInsertOperations::PointsList(points),
        ));
        self.write("upsert", |s| s.update(operation).map_err(|e| e.to_string()))
    }

    fn delete(&self, id: &str) -> triage_core::Result<bool> {
        let ids = vec![point_id(id)];
        // Looked up under the write lock, so two concurrent deletes cannot both report `true`.
        self.write("delete", |s| {
            let found = s.retrieve(
                &ids,
                Some(WithPayloadInterface::Bool(false)),
                Some(WithVector::Bool(false)),
            );
            if found.map_err(|e| e.to_string())?.is_empty() {
                return Ok(false);
            }
            s.update(UpdateOperation::PointOperation(
                PointOperations::DeletePoints { ids },
            ))
            .map_err(|e| e.to_string())?;
            Ok(true)
        })
    }

    fn get(&self, id: &str) -> triage_core::Result<Option<Case>> {
        let ids = [point_id(id)];
        let records = self.read("get", |s| {
            s.retrieve(
                &ids,
                Some(WithPayloadInterface::Bool(true)),
                Some(WithVector::Bool(false)),
            )
            .map_err(|e| e.to_string())
        })?;
        records
            .into_iter()
            .next()
            .map(|r| from_payload(r.payload))
            .transpose()
    }

    fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &CaseFilter,
    ) -> triage_core::Result<Vec<Hit>> {
        self.check_dim("the query vector", vector)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        // Up to EXACT_SEARCH_BELOW cases a full scan takes about a millisecond and finds the true
        // nearest cases (HNSW recall measured 0.65 at 10k random vectors); beyond, the index.
        let exact = self.read("info", |s| Ok(s.info().points_count))? < EXACT_SEARCH_BELOW;
        let request = QueryRequest {
            prefetches: vec![],
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                query: vector.to_vec().into(),
                using: Some(VECTOR.to_string()),
            }))),
            filter: to_filter(filter),
            score_threshold: None,
            limit: k,
            offset: 0,
            params: Some(SearchParams {
                exact,
                ..Default::default()
            }),
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(true),
        };
        let points = self.read("search", |s| s.query(request).map_err(|e| e.to_string()))?;
        points
            .into_iter()
            .map(|p| {
                Ok(Hit {
                    score: p.score,
                    case: from_payload(p.payload)?,
                })
            })
            .collect()
    }

    fn count(&self, filter: &CaseFilter) -> triage_core::Result<usize> {
        let request = CountRequest {
            filter: to_filter(filter),
            exact: true,
        };
        self.read("count", |s| s.count(request).map_err(|e| e.to_string()))
    }

    fn scroll(
        &self,
        filter: &CaseFilter,
        after: Option<&str>,
        limit: usize,
    ) -> triage_core::Result<Page> {
        let offset = match after {
            Some(cursor) => Some(PointId::Uuid(cursor.parse().map_err(|_| {
                triage_core::Error::InvalidInput(format!("bad scroll cursor {cursor:?}"))
            })?)),
            None => None,
        };
        let request = ScrollRequest {
            offset,
            limit: Some(limit.max(1)),
            filter: to_filter(filter),
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: WithVector::Bool(true),
            order_by: None,
        };
        let (records, next) =
            self.read("scroll", |s| s.scroll(request).map_err(|e| e.to_string()))?;
        let cases = records
            .into_iter()
            .map(|r| Ok((from_payload(r.payload)?, dense(r.vector))))
            .collect::<triage_core::Result<Vec<_>>>()?;
        Ok(Page {
            cases,
            next: next.map(|id| id.to_string()),
        })
    }

    fn optimize(&self) -> triage_core::Result<()> {
        self.write("optimize", |s| {
            s.optimize().map(drop).map_err(|e| e.to_string())
        })
    }
}
