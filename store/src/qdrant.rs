//! `CaseStore` on a Qdrant server or cluster over gRPC (qdrant-client), for deployments that
//! outgrow one machine. Same point ids, payload and filters as the embedded store, so a case
//! migrates between them unchanged and the pipeline cannot tell them apart.
//!
//! With `shard_by_district`, the collection is sharded by a custom key per district (Qdrant's
//! user-defined sharding): a district's cases live on its own shards, which the operator can place
//! and move per node, and writes name the key. Reads still go to every key with the filter.
//!
//! The client is async; the `CaseStore` seam is not. Each call runs on the store's own small Tokio
//! runtime and the caller waits on a channel, which works from any thread (CLI, the server's
//! blocking workers, even an async task) without nesting runtimes.

use crate::{point_uuid, Error};
use qdrant_client::qdrant::{
    point_id::PointIdOptions, vector_output, vectors_config, CollectionStatus, Condition,
    CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    CreateShardKeyBuilder, CreateShardKeyRequestBuilder, DeletePointsBuilder, Distance, FieldType,
    Filter, GetPointsBuilder, PointId, PointStruct, PointsIdsList, QueryPointsBuilder, Range,
    RetrievedPoint, ScalarQuantizationBuilder, ScrollPointsBuilder, ShardKeySelector,
    ShardingMethod, UpsertPointsBuilder, Value, VectorParamsBuilder, VectorsConfigBuilder,
    VectorsOutput, WriteOrdering, WriteOrderingType,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;
use triage_core::{Case, CaseFilter, CaseStore, Hit, Page};

const VECTOR: &str = "text";
/// Longest wait for the server to finish indexing after a bulk load.
const OPTIMIZE_WAIT: Duration = Duration::from_secs(600);
/// Time limit of calls that change the cluster's layout (collections, shard keys, indexes): they
/// wait for the nodes to agree, which takes seconds on a busy cluster.
const LAYOUT_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts of a call that fails for a transient reason (node down, leader election, timeout).
const ATTEMPTS: u32 = 5;
/// The shard key of cases without a district, when sharding by district.
const NO_DISTRICT: &str = "_none";

/// Where and how the collection lives. `shard_number`, `replication_factor` and
/// `write_consistency_factor` apply when the collection is created (Qdrant's defaults otherwise).
#[derive(Debug, Clone)]
pub struct QdrantConfig {
    /// gRPC address, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    pub api_key: Option<String>,
    pub collection: String,
    pub shard_number: Option<u32>,
    pub replication_factor: Option<u32>,
    pub write_consistency_factor: Option<u32>,
    /// Create the collection with one custom shard key per district (`shard_number` and
    /// `replication_factor` then apply to each key). An existing collection keeps its sharding.
    pub shard_by_district: bool,
    /// Create the collection with int8 scalar quantization: searches read 1-byte components kept
    /// in RAM (a quarter of the vectors' size) and rescore the best with the originals on disk.
    pub int8: bool,
    /// Per-call time limit.
    pub timeout: Duration,
}

impl QdrantConfig {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            api_key: None,
            collection: "cases".into(),
            shard_number: None,
            replication_factor: None,
            write_consistency_factor: None,
            shard_by_district: false,
            int8: false,
            timeout: Duration::from_secs(10),
        }
    }
}

pub struct QdrantStore {
    client: Qdrant,
    /// The same server with LAYOUT_TIMEOUT, for layout changes.
    layout_client: Qdrant,
    config: QdrantConfig,
    runtime: tokio::runtime::Runtime,
    dim: usize,
    /// Whether the collection (as found or created) is sharded by district.
    by_district: bool,
    /// Shard keys known to exist, so each is created once per process.
    shard_keys: std::sync::Mutex<HashSet<String>>,
    /// Qdrant's delete does not say whether the point existed, so a delete looks first; this
    /// makes look-and-delete one step within the process (two replicas racing may both say yes).
    deleting: std::sync::Mutex<()>,
}

impl QdrantStore {
    /// Connects and makes sure the collection exists with `dim`-dimensional cosine vectors and
    /// indexes on the filtered fields. An unreachable server is an error naming the URL.
    pub fn open(config: QdrantConfig, dim: usize) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("qdrant-client")
            .enable_all()
            .build()
            .map_err(|e| backend(&config, format!("starting the client runtime: {e}")))?;
        let connect = |timeout: Duration| {
            Qdrant::from_url(&config.url)
                .api_key(config.api_key.clone())
                .timeout(timeout)
                .connect_timeout(config.timeout)
                .skip_compatibility_check()
                .build()
                .map_err(|e| backend(&config, e.to_string()))
        };
        let client = connect(config.timeout)?;
        let layout_client = connect(LAYOUT_TIMEOUT.max(config.timeout))?;
        let mut store = Self {
            client,
            layout_client,
            by_district: config.shard_by_district,
            config,
            runtime,
            dim,
            shard_keys: Default::default(),
            deleting: std::sync::Mutex::new(()),
        };
        store.by_district = store.ensure_collection()?;
        Ok(store)
    }

    /// Opens or creates the collection; answers whether it is sharded by district.
    fn ensure_collection(&self) -> Result<bool, Error> {
        let name = self.config.collection.clone();
        let exists = {
            let name = name.clone();
            self.call("open", move |c| {
                let name = name.clone();
                async move { c.collection_exists(name).await }
            })?
        };
        if exists {
            let info = {
                let name = name.clone();
                self.call("open", move |c| {
                    let name = name.clone();
                    async move { c.collection_info(name).await }
                })?
            };
            let params = info.result.and_then(|r| r.config).and_then(|c| c.params);
            let by_district = params
                .as_ref()
                .is_some_and(|p| p.sharding_method == Some(ShardingMethod::Custom as i32));
            if by_district != self.config.shard_by_district {
                tracing::warn!(
                    "collection {name:?} is {}sharded by district; it keeps that layout",
                    if by_district { "" } else { "not " }
                );
            }
            let found = params
                .and_then(|p| p.vectors_config)
                .and_then(|v| match v.config {
                    Some(vectors_config::Config::ParamsMap(map)) => {
                        map.map.get(VECTOR).map(|p| p.size)
                    }
                    _ => None,
                });
            return match found {
                Some(size) if size as usize == self.dim => Ok(by_district),
                Some(size) => Err(Error::Dimension {
                    path: self.location().into(),
                    found: size as usize,
                    expected: self.dim,
                }),
                None => Err(backend(
                    &self.config,
                    format!(
                        "collection {name:?} has no vector named {VECTOR:?}: not a triage store"
                    ),
                )),
            };
        }
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(
            VECTOR,
            VectorParamsBuilder::new(self.dim as u64, Distance::Cosine).on_disk(true),
        );
        // The server waits this long for the nodes to agree (its default, 10 s, is short on a busy
        // cluster); the client waits as long.
        let mut create = CreateCollectionBuilder::new(&name)
            .vectors_config(vectors)
            .timeout(LAYOUT_TIMEOUT.as_secs());
        if let Some(n) = self.config.shard_number {
            create = create.shard_number(n);
        }
        if let Some(n) = self.config.replication_factor {
            create = create.replication_factor(n);
        }
        if let Some(n) = self.config.write_consistency_factor {
            create = create.write_consistency_factor(n);
        }
        if self.config.shard_by_district {
            create = create.sharding_method(ShardingMethod::Custom.into());
        }
        if self.config.int8 {
            create =
                create.quantization_config(ScalarQuantizationBuilder::default().always_ram(true));
        }
        self.change_layout("create collection", move |c| {
            let create = create.clone();
            async move { c.create_collection(create).await }
        })?;
        if self.config.shard_by_district {
            // A custom-sharded collection has no shard before its first key, and Qdrant refuses
            // payload indexes until it has one. Without a first key (a single server refuses
            // keys) the collection is removed again, so a retry with other settings starts afresh.
            if let Err(e) = self.ensure_shard_keys([NO_DISTRICT]) {
                let name = name.clone();
                let _ = self.change_layout("delete collection", move |c| {
                    let name = name.clone();
                    async move { c.delete_collection(name).await }
                });
                return Err(e);
            }
        }
        for (field, kind) in [
            ("label", FieldType::Keyword),
            ("unit", FieldType::Keyword),
            ("district", FieldType::Keyword),
            ("time", FieldType::Integer),
        ] {
            let name = name.clone();
            self.change_layout("create index", move |c| {
                let index = CreateFieldIndexCollectionBuilder::new(&name, field, kind).wait(true);
                async move { c.create_field_index(index).await }
            })?;
        }
        Ok(self.config.shard_by_district)
    }

    /// Creates the shard keys not yet known to this process ("already exists" is fine: another
    /// replica, or an earlier run, made it).
    fn ensure_shard_keys<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Result<(), Error> {
        for key in keys {
            if self.known_keys().contains(key) {
                continue;
            }
            let (name, key_name) = (self.config.collection.clone(), key.to_string());
            let (shards, replicas) = (self.config.shard_number, self.config.replication_factor);
            let created = self.change_layout("create shard key", move |c| {
                let mut request = CreateShardKeyBuilder::default().shard_key(key_name.clone());
                if let Some(n) = shards {
                    request = request.shards_number(n);
                }
                if let Some(n) = replicas {
                    request = request.replication_factor(n);
                }
                let request = CreateShardKeyRequestBuilder::new(&name)
                    .request(request)
                    .timeout(LAYOUT_TIMEOUT.as_secs());
                async move { c.create_shard_key(request).await }
            });
            match created {
                Ok(_) => {}
                Err(Error::Backend { message, .. }) if message.contains("already exists") => {}
                Err(Error::Backend { message, .. }) if message.contains("Distributed mode disabled") => {
                    return Err(backend(
                        &self.config,
                        "sharding by district needs Qdrant in distributed (cluster) mode; \
                         start the server with cluster.enabled, or leave --qdrant-shard-by-district off"
                            .into(),
                    ))
                }
                Err(e) => return Err(e),
            }
            self.known_keys().insert(key.to_string());
        }
        Ok(())
    }

    fn known_keys(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.shard_keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shard key a case is written under, when sharding by district.
    fn shard_key(&self, case: &Case) -> Option<String> {
        self.by_district
            .then(|| case.district.clone().unwrap_or_else(|| NO_DISTRICT.into()))
    }

    fn delete_points(&self, ids: Vec<PointId>, key: Option<String>) -> Result<(), Error> {
        let name = self.config.collection.clone();
        self.call("delete", move |c| {
            let mut delete = DeletePointsBuilder::new(&name)
                .points(PointsIdsList { ids: ids.clone() })
                .wait(true);
            if let Some(key) = &key {
                delete = delete.shard_key_selector(ShardKeySelector::from(key.clone()));
            }
            async move { c.delete_points(delete).await.map(|_| ()) }
        })
    }

    fn location(&self) -> String {
        format!(
            "{} (collection {})",
            self.config.url, self.config.collection
        )
    }

    /// Runs one client call on the store's runtime, retrying transient failures with backoff.
    fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(Qdrant) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, QdrantError>> + Send,
    {
        self.call_on(&self.client, what, op)
    }

    /// `call` for a change of the cluster's layout, with its longer time limit.
    fn change_layout<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(Qdrant) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, QdrantError>> + Send,
    {
        self.call_on(&self.layout_client, what, op)
    }

    fn call_on<T, F, Fut>(&self, client: &Qdrant, what: &str, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(Qdrant) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, QdrantError>> + Send,
    {
        let client = client.clone();
        let (reply, answer) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let mut delay = Duration::from_millis(100);
            let mut attempt = 1;
            let result = loop {
                match op(client.clone()).await {
                    Err(e) if attempt < ATTEMPTS && transient(&e) => {
                        tracing::warn!("qdrant call failed ({e}); retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            let _ = reply.send(result);
        });
        match answer.recv() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if transient(&e) => Err(backend(
                &self.config,
                format!(
                    "{what}: the Qdrant server does not answer after {ATTEMPTS} attempts ({e})"
                ),
            )),
            Ok(Err(e)) => Err(backend(&self.config, format!("{what}: {e}"))),
            Err(_) => Err(backend(&self.config, format!("{what}: the client stopped"))),
        }
    }

    fn check_dim(&self, what: &str, vector: &[f32]) -> triage_core::Result<()> {
        crate::check_dim(self.dim, self.location(), what, vector)
    }
}

impl QdrantStore {
    /// The stored cases with these ids (from every shard key), in no particular order.
    fn get_many(&self, ids: &[&str]) -> triage_core::Result<Vec<Case>> {
        let name = self.config.collection.clone();
        let ids: Vec<PointId> = ids.iter().map(|id| point_id(id)).collect();
        let found = self.call("get", move |c| {
            let get = GetPointsBuilder::new(&name, ids.clone()).with_payload(true);
            async move { c.get_points(get).await }
        })?;
        found
            .result
            .into_iter()
            .map(|p| from_payload(p.payload))
            .collect()
    }

    /// A case whose district changed still lives under its old key: it is removed there before
    /// the upsert writes it under the new one, so it never exists twice.
    fn remove_from_old_districts(&self, cases: &[(Case, Vec<f32>)]) -> triage_core::Result<()> {
        let new_keys: HashMap<&str, Option<String>> = cases
            .iter()
            .map(|(case, _)| (case.id.as_str(), self.shard_key(case)))
            .collect();
        let ids: Vec<&str> = new_keys.keys().copied().collect();
        for old in self.get_many(&ids)? {
            let old_key = self.shard_key(&old);
            if new_keys.get(old.id.as_str()) != Some(&old_key) {
                self.delete_points(vec![point_id(&old.id)], old_key)?;
            }
        }
        Ok(())
    }
}

fn backend(config: &QdrantConfig, message: String) -> Error {
    Error::Backend {
        path: config.url.clone().into(),
        message,
    }
}

/// Worth another try: the server is (re)starting, electing a leader, or briefly overloaded.
fn transient(error: &QdrantError) -> bool {
    use tonic::Code;
    match error {
        QdrantError::ResponseError { status } => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted => true,
            // The client reports a refused connection (a node restarting) as Internal.
            Code::Internal => status.message().starts_with("Failed to connect"),
            _ => false,
        },
        _ => false,
    }
}

fn point_id(case_id: &str) -> PointId {
    PointId::from(point_uuid(case_id).to_string())
}

fn to_payload(case: &Case) -> Payload {
    Payload::try_from(serde_json::to_value(case).expect("a case serialises"))
        .expect("a case serialises to an object")
}

fn from_payload(payload: HashMap<String, Value>) -> triage_core::Result<Case> {
    serde_json::from_value(serde_json::Value::from(Payload::from(payload)))
        .map_err(|e| triage_core::Error::Store(format!("a stored case does not parse: {e}")))
}

fn dense(vectors: Option<VectorsOutput>) -> Vec<f32> {
    match vectors.and_then(|v| v.get_vector_by_name(VECTOR)) {
        Some(vector_output::Vector::Dense(dense)) => dense.data,
        _ => Vec::new(),
    }
}

fn to_filter(f: &CaseFilter) -> Option<Filter> {
    let c = crate::PayloadConditions::of(f)?;
    let mut must: Vec<_> = c
        .matches
        .iter()
        .map(|(field, value)| Condition::matches(*field, value.to_string()))
        .collect();
    if let Some((gte, lte)) = c.time {
        let range = Range {
            gte: gte.map(|t| t as f64),
            lte: lte.map(|t| t as f64),
            ..Default::default()
        };
        must.push(Condition::range("time", range));
    }
    let must_not = c.present.iter().map(|f| Condition::is_empty(*f)).collect();
    Some(Filter {
        must,
        must_not,
        ..Default::default()
    })
}

fn cursor(id: Option<PointId>) -> Option<String> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(uuid) => Some(uuid),
        PointIdOptions::Num(n) => Some(n.to_string()),
    }
}

fn retrieved(point: RetrievedPoint) -> triage_core::Result<(Case, Vec<f32>)> {
    Ok((from_payload(point.payload)?, dense(point.vectors)))
}

impl CaseStore for QdrantStore {
    fn backend(&self) -> &str {
        "qdrant"
    }

    fn upsert(&self, cases: &[(Case, Vec<f32>)]) -> triage_core::Result<()> {
        if cases.is_empty() {
            return Ok(());
        }
        for (case, vector) in cases {
            self.check_dim(&format!("the vector of case {:?}", case.id), vector)?;
        }
        // One write per shard key (a single group without district sharding).
        let mut groups: BTreeMap<Option<String>, Vec<PointStruct>> = BTreeMap::new();
        for (case, vector) in cases {
            let vectors = HashMap::from([(VECTOR.to_string(), vector.clone())]);
            groups
                .entry(self.shard_key(case))
                .or_default()
                .push(PointStruct::new(
                    point_id(&case.id),
                    vectors,
                    to_payload(case),
                ));
        }
        if self.by_district {
            self.ensure_shard_keys(groups.keys().flatten().map(String::as_str))?;
            self.remove_from_old_districts(cases)?;
        }
        for (key, points) in groups {
            let name = self.config.collection.clone();
            // Acknowledged only once the write is applied (wait) on a majority of replicas.
            self.call("upsert", move |c| {
                let mut upsert = UpsertPointsBuilder::new(&name, points.clone())
                    .wait(true)
                    .ordering(WriteOrdering {
                        r#type: WriteOrderingType::Medium as i32,
                    });
                if let Some(key) = &key {
                    upsert = upsert.shard_key_selector(ShardKeySelector::from(key.clone()));
                }
                async move { c.upsert_points(upsert).await.map(|_| ()) }
            })?;
        }
        Ok(())
    }

    fn delete(&self, id: &str) -> triage_core::Result<bool> {
        let _one_at_a_time = self.deleting.lock().unwrap_or_else(|e| e.into_inner());
        let Some(case) = self.get(id)? else {
            return Ok(false);
        };
        self.delete_points(vec![point_id(id)], self.shard_key(&case))?;
        Ok(true)
    }

    fn get(&self, id: &str) -> triage_core::Result<Option<Case>> {
        Ok(self.get_many(&[id])?.pop())
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
        let name = self.config.collection.clone();
        let (vector, filter) = (vector.to_vec(), to_filter(filter));
        let found = self.call("search", move |c| {
            let mut query = QueryPointsBuilder::new(&name)
                .query(vector.clone())
                .using(VECTOR)
                .limit(k as u64)
                .with_payload(true);
            if let Some(filter) = filter.clone() {
                query = query.filter(filter);
            }
            async move { c.query(query).await }
        })?;
        found
            .result
            .into_iter()
            .map(|p| {
                Ok(Hit {
                    case: from_payload(p.payload)?,
                    score: p.score,
                })
            })
            .collect()
    }

    fn count(&self, filter: &CaseFilter) -> triage_core::Result<usize> {
        let name = self.config.collection.clone();
        let filter = to_filter(filter);
        let counted = self.call("count", move |c| {
            let mut count = CountPointsBuilder::new(&name).exact(true);
            if let Some(filter) = filter.clone() {
                count = count.filter(filter);
            }
            async move { c.count(count).await }
        })?;
        Ok(counted.result.map_or(0, |r| r.count as usize))
    }

    fn scroll(
        &self,
        filter: &CaseFilter,
        after: Option<&str>,
        limit: usize,
    ) -> triage_core::Result<Page> {
        let name = self.config.collection.clone();
        let filter = to_filter(filter);
        let offset = after.map(|a| PointId::from(a.to_string()));
        let page = self.call("scroll", move |c| {
            let mut scroll = ScrollPointsBuilder::new(&name)
                .limit(limit.max(1) as u32)
                .with_payload(true)
                .with_vectors(true);
            if let Some(filter) = filter.clone() {
                scroll = scroll.filter(filter);
            }
            if let Some(offset) = offset.clone() {
                scroll = scroll.offset(offset);
            }
            async move { c.scroll(scroll).await }
        })?;
        Ok(Page {
            next: cursor(page.next_page_offset),
            cases: page
                .result
                .into_iter()
                .map(retrieved)
                .collect::<triage_core::Result<_>>()?,
        })
    }

    /// The server builds its indexes itself after a bulk load; this waits until it is done (the
    /// collection is green again), so searches right after an import are at full speed.
    fn optimize(&self) -> triage_core::Result<()> {
        let started = std::time::Instant::now();
        loop {
            let name = self.config.collection.clone();
            let info = self.call("collection info", move |c| {
                let name = name.clone();
                async move { c.collection_info(name).await }
            })?;
            let status = info.result.map_or(0, |r| r.status);
            if status == CollectionStatus::Green as i32 || started.elapsed() > OPTIMIZE_WAIT {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn health(&self) -> triage_core::Result<()> {
        self.call("health check", |c| async move {
            c.health_check().await.map(|_| ())
        })?;
        Ok(())
    }
}
