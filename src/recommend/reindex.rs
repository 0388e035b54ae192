//! Rebuilding the index: a background worker runs queued jobs one at a time.
//! `incremental` embeds only texts with no cached vector for this model;
//! `full` re-embeds every text. Either way a fresh graph is built (which
//! compacts tombstones), saved as a new version folder, committed in the
//! store, and swapped in atomically; searches keep using the old index until
//! the swap. A crash at any point leaves the previous version current.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;
use time::OffsetDateTime;

use super::{Engine, EngineError};
use crate::embedding::TextKind;
use crate::index::{Manifest, PointMeta, VectorIndex};
use crate::store::{hash_text, rfc3339, SqliteStore, TextRole};

/// How much to re-embed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReindexMode {
    Incremental,
    Full,
}

/// A job's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

/// What `GET /v1/reindex/{job_id}` reports.
#[derive(Debug, Clone, Serialize)]
pub struct JobState {
    pub job_id: String,
    pub mode: ReindexMode,
    pub status: JobStatus,
    pub total: usize,
    pub done: usize,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub index_version: Option<u64>,
}

const QUEUE: usize = 8;
const KEEP_JOBS: usize = 100;
const EMBED_BATCH: usize = 32;

/// Job bookkeeping and the worker's queue.
#[derive(Default)]
pub struct Jobs {
    states: Mutex<(HashMap<String, JobState>, VecDeque<String>)>,
    queue: Mutex<Option<SyncSender<String>>>,
}

impl Jobs {
    fn update(&self, id: &str, f: impl FnOnce(&mut JobState)) {
        let mut s = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = s.0.get_mut(id) {
            f(state);
        }
    }

    pub fn get(&self, id: &str) -> Option<JobState> {
        let s = self.states.lock().unwrap_or_else(|p| p.into_inner());
        s.0.get(id).cloned()
    }

    pub fn submit(&self, mode: ReindexMode) -> Result<String, EngineError> {
        let id = uuid::Uuid::new_v4().to_string();
        {
            let mut s = self.states.lock().unwrap_or_else(|p| p.into_inner());
            s.0.insert(
                id.clone(),
                JobState {
                    job_id: id.clone(),
                    mode,
                    status: JobStatus::Queued,
                    total: 0,
                    done: 0,
                    started_at: None,
                    finished_at: None,
                    error: None,
                    index_version: None,
                },
            );
            s.1.push_back(id.clone());
            while s.1.len() > KEEP_JOBS {
                if let Some(old) = s.1.pop_front() {
                    s.0.remove(&old);
                }
            }
        }
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match queue.as_ref() {
            Some(tx) => tx.try_send(id.clone()),
            None => Err(TrySendError::Disconnected(id.clone())),
        };
        if sent.is_err() {
            let mut s = self.states.lock().unwrap_or_else(|p| p.into_inner());
            s.0.remove(&id);
            return Err(EngineError::QueueFull);
        }
        Ok(id)
    }
}

fn mode_of(jobs: &Jobs, id: &str) -> Option<ReindexMode> {
    jobs.get(id).map(|j| j.mode)
}

/// Starts the worker thread; it ends when the engine is dropped.
pub(super) fn start_worker(engine: &Arc<Engine>) {
    let (tx, rx) = sync_channel::<String>(QUEUE);
    *engine.jobs.queue.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let weak: Weak<Engine> = Arc::downgrade(engine);
    std::thread::Builder::new()
        .name("kefu-reindex".into())
        .spawn(move || {
            while let Ok(id) = rx.recv() {
                let Some(engine) = weak.upgrade() else { break };
                let Some(mode) = mode_of(&engine.jobs, &id) else {
                    continue;
                };
                engine.jobs.update(&id, |j| {
                    j.status = JobStatus::Running;
                    j.started_at = Some(rfc3339(OffsetDateTime::now_utc()));
                });
                let progress = |done, total| {
                    engine.jobs.update(&id, |j| {
                        j.done = done;
                        j.total = total;
                    })
                };
                let result = run(&engine, mode, &progress);
                engine.jobs.update(&id, |j| {
                    j.finished_at = Some(rfc3339(OffsetDateTime::now_utc()));
                    match result {
                        Ok(version) => {
                            j.status = JobStatus::Succeeded;
                            j.index_version = Some(version);
                        }
                        Err(e) => {
                            tracing::error!(job = %id, error = %e, "reindex failed");
                            j.status = JobStatus::Failed;
                            j.error = Some(e.to_string());
                        }
                    }
                });
            }
        })
        .expect("spawning the reindex thread");
}

fn kind_of(role: TextRole, question_kind: TextKind) -> TextKind {
    match role {
        TextRole::Answer => TextKind::Passage,
        TextRole::Question | TextRole::Variant => question_kind,
    }
}

/// Which index version the store names as current, and the model it was
/// built with.
#[derive(Debug, Clone, Default)]
pub(super) struct Current {
    version: Option<u64>,
    model: Option<String>,
}

impl Current {
    pub(super) fn read(store: &SqliteStore) -> Self {
        Self {
            version: store
                .meta("index_version")
                .ok()
                .flatten()
                .and_then(|v| v.parse::<u64>().ok()),
            model: store.meta("index_model").ok().flatten(),
        }
    }
}

/// Loads the index the store names as current, if it was built with this
/// model; otherwise an empty one and `true` (a build is needed). Leftover
/// partial or superseded version folders are removed.
pub(super) fn load_current(
    store: &SqliteStore,
    root: &Path,
    model_id: &str,
    dimension: usize,
    question_kind: TextKind,
) -> (VectorIndex, bool) {
    load_version(
        Current::read(store),
        root,
        model_id,
        dimension,
        question_kind,
    )
}

/// [`load_current`] once the store has been read (so that it need not wait
/// for the store while another thread reads the catalog).
pub(super) fn load_version(
    current: Current,
    root: &Path,
    model_id: &str,
    dimension: usize,
    question_kind: TextKind,
) -> (VectorIndex, bool) {
    let empty = || VectorIndex::empty(model_id, dimension);
    let Current { version, model } = current;
    let current = version.map(|v| format!("v{v}"));
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if Some(&name) != current.as_ref() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let Some(v) = version else {
        return (empty(), true);
    };
    if model.as_deref() != Some(model_id) {
        tracing::warn!(
            index_model = model.as_deref().unwrap_or("?"),
            model = model_id,
            "the index was built with another model; it will be rebuilt"
        );
        return (empty(), true);
    }
    match VectorIndex::load(&root.join(format!("v{v}"))) {
        Ok(index)
            if index.manifest().dimension == dimension
                && index.manifest().question_kind == question_kind.to_string() =>
        {
            (index, false)
        }
        Ok(_) => (empty(), true),
        Err(e) => {
            tracing::warn!(error = %e, "the index on disk does not load; it will be rebuilt");
            (empty(), true)
        }
    }
}

/// One reindex, on the calling thread. Returns the new index version.
pub(super) fn run(
    engine: &Engine,
    mode: ReindexMode,
    progress: &dyn Fn(usize, usize),
) -> Result<u64, EngineError> {
    let started = std::time::Instant::now();
    let model_id = engine.embedder.model_id().to_string();
    let answers = engine.list();

    // Every (answer, role, text) to index, and the vector each needs.
    let mut items: Vec<(Arc<str>, TextRole, String, TextKind, String)> = Vec::new();
    let mut indexed: Vec<(String, String)> = Vec::new();
    for a in &answers {
        let id: Arc<str> = a.input.id.as_str().into();
        for (role, text) in a.input.texts() {
            items.push((
                id.clone(),
                role,
                text.to_string(),
                kind_of(role, engine.settings.question_kind),
                hash_text(text),
            ));
        }
        indexed.push((a.input.id.clone(), a.input.text_hash()));
    }

    let mut vectors: HashMap<(TextKind, String), Vec<f32>> = HashMap::new();
    let mut todo: Vec<(TextKind, String, String)> = Vec::new();
    for kind in [TextKind::Query, TextKind::Passage] {
        let mut seen = HashSet::new();
        let wanted: Vec<(&str, &str)> = items
            .iter()
            .filter(|i| i.3 == kind && seen.insert(i.4.as_str()))
            .map(|i| (i.4.as_str(), i.2.as_str()))
            .collect();
        let cached = match mode {
            ReindexMode::Incremental => {
                let hashes: Vec<&str> = wanted.iter().map(|w| w.0).collect();
                engine
                    .store
                    .cached_vectors(&model_id, &kind.to_string(), &hashes)?
            }
            ReindexMode::Full => HashMap::new(),
        };
        for (hash, text) in wanted {
            match cached.get(hash) {
                Some(v) if v.len() == engine.embedder.dimension() => {
                    vectors.insert((kind, hash.to_string()), v.clone());
                }
                _ => todo.push((kind, hash.to_string(), text.to_string())),
            }
        }
    }

    let total = todo.len();
    progress(0, total);
    let mut done = 0;
    for kind in [TextKind::Query, TextKind::Passage] {
        let batch_items: Vec<&(TextKind, String, String)> =
            todo.iter().filter(|t| t.0 == kind).collect();
        for chunk in batch_items.chunks(EMBED_BATCH) {
            let texts: Vec<&str> = chunk.iter().map(|t| t.2.as_str()).collect();
            let embedded = crate::embedding::in_background(|| engine.embedder.embed(&texts, kind))?;
            let fresh: Vec<(String, Vec<f32>)> = chunk
                .iter()
                .zip(embedded)
                .map(|(t, e)| (t.1.clone(), e.vector))
                .collect();
            engine
                .store
                .put_vectors(&model_id, &kind.to_string(), &fresh)?;
            for (hash, v) in fresh {
                vectors.insert((kind, hash), v);
            }
            done += chunk.len();
            progress(done, total);
        }
    }

    let dim = engine.embedder.dimension();
    let mut points = Vec::with_capacity(items.len());
    let mut flat = Vec::with_capacity(items.len() * dim);
    for (id, role, text, kind, hash) in items {
        let Some(v) = vectors.get(&(kind, hash)) else {
            continue;
        };
        flat.extend_from_slice(v);
        points.push(PointMeta {
            answer_id: id,
            role,
            text,
        });
    }
    let previous = engine
        .store
        .meta("index_version")?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let version = previous.max(engine.index().manifest().version) + 1;
    let now = OffsetDateTime::now_utc();
    let manifest = Manifest {
        version,
        model_id: model_id.clone(),
        dimension: dim,
        points: points.len(),
        built_at: rfc3339(now),
        question_kind: engine.settings.question_kind.to_string(),
    };
    let index = VectorIndex::build(manifest, points, flat);
    index.save(&engine.index_root)?;
    engine.store.commit_index(
        &[
            ("index_version", version.to_string()),
            ("index_model", model_id),
            ("index_built_at", rfc3339(now)),
        ],
        &indexed,
        now,
    )?;
    engine.index.store(Arc::new(index));
    {
        let mut catalog = engine.catalog_mut();
        for (id, hash) in indexed {
            if let Some(current) = catalog.get_mut(&id) {
                let mut a = (**current).clone();
                a.indexed_hash = Some(hash);
                a.indexed_at = Some(now);
                *current = Arc::new(a);
            }
        }
    }
    // Older versions are no longer needed on disk.
    if let Ok(entries) = std::fs::read_dir(&engine.index_root) {
        for e in entries.flatten() {
            if e.file_name() != *format!("v{version}").as_str() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Some(observe) = engine.reindex_observer.get() {
        observe(started.elapsed().as_secs_f64());
    }
    tracing::info!(
        version,
        embedded = total,
        secs = started.elapsed().as_secs_f64(),
        "index rebuilt"
    );
    Ok(version)
}
