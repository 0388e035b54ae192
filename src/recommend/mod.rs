//! The recommendation engine: answers in, recommendations out. It owns the
//! answer catalog (an in-memory mirror of the store), the live vector index
//! (swapped atomically after each rebuild), the embedder, and the reindex
//! worker. It knows nothing of HTTP; every method is synchronous and may
//! block (call it off the async runtime).
//!
//! Invariants: a write is committed to the store before the catalog changes,
//! so a deleted answer is excluded from search from the moment `delete`
//! returns; searches filter inside the graph search by the catalog's current
//! state (category, tags, locale, status, validity); scores are exact
//! cosines recomputed over every indexed text of each candidate answer.

pub mod freshness;
mod reindex;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::embedding::{EmbedError, Embedder, TextKind};
use crate::index::{dot, VectorIndex};
use crate::store::{Answer, AnswerInput, SqliteStore, Status, StoreError, TextRole, UpsertOutcome};
pub use freshness::{AgePolicy, Flag, Freshness};
pub use reindex::{JobState, JobStatus, ReindexMode};

/// Engine errors, mapped to HTTP statuses by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error("the reindex queue is full")]
    QueueFull,
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Default hand-off threshold on the best score.
    pub min_score: f32,
    /// When answers count as stale by age.
    pub age: AgePolicy,
    /// HNSW search breadth.
    pub ef_search: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_score: 0.86,
            age: AgePolicy::default(),
            ef_search: 128,
        }
    }
}

/// A recommend request after validation.
#[derive(Debug, Clone)]
pub struct Query {
    pub question: String,
    pub top_k: usize,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub locale: Option<String>,
    pub min_score: Option<f32>,
    pub include_stale: bool,
    pub include_expired: bool,
}

/// One recommended answer.
#[derive(Debug, Clone)]
pub struct Recommendation {
    pub answer: Arc<Answer>,
    pub score: f32,
    pub matched_text: String,
    pub matched_role: TextRole,
    pub freshness: Freshness,
}

/// The result of a recommend call.
#[derive(Debug, Clone)]
pub struct Recommendations {
    pub results: Vec<Recommendation>,
    pub handoff: bool,
    pub threshold: f32,
    pub index_version: u64,
}

/// Counts for `GET /v1/index`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexStatus {
    pub answers: usize,
    pub vectors: usize,
    pub tombstones: usize,
    pub pending_reindex: usize,
    pub model_id: String,
    pub index_version: u64,
    pub built_at: Option<String>,
}

/// The engine.
pub struct Engine {
    embedder: Arc<dyn Embedder>,
    store: Arc<SqliteStore>,
    index: ArcSwap<VectorIndex>,
    catalog: RwLock<HashMap<String, Arc<Answer>>>,
    settings: Settings,
    index_root: PathBuf,
    jobs: reindex::Jobs,
    reindex_observer: std::sync::OnceLock<Box<dyn Fn(f64) + Send + Sync>>,
}

/// The folder holding index versions inside a data directory.
pub fn index_root(data_dir: &Path) -> PathBuf {
    data_dir.join("vectors")
}

impl Engine {
    /// Opens the engine over a data directory: loads the catalog, and the
    /// current index if it was built with this model (else starts empty and
    /// reports `needs_build`).
    pub fn open(
        data_dir: &Path,
        embedder: Arc<dyn Embedder>,
        settings: Settings,
    ) -> Result<(Arc<Self>, bool), EngineError> {
        let store = Arc::new(SqliteStore::open(data_dir)?);
        let catalog = store
            .all()?
            .into_iter()
            .map(|a| (a.input.id.clone(), Arc::new(a)))
            .collect();
        let root = index_root(data_dir);
        std::fs::create_dir_all(&root).map_err(StoreError::from)?;
        let (index, needs_build) = reindex::load_current(&store, &root, embedder.as_ref());
        let engine = Arc::new(Self {
            embedder,
            store,
            index: ArcSwap::from_pointee(index),
            catalog: RwLock::new(catalog),
            settings,
            index_root: root,
            jobs: reindex::Jobs::default(),
            reindex_observer: std::sync::OnceLock::new(),
        });
        reindex::start_worker(&engine);
        Ok((engine, needs_build))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn model_id(&self) -> &str {
        self.embedder.model_id()
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    fn catalog(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Answer>>> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    fn catalog_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Answer>>> {
        self.catalog.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The live index.
    pub fn index(&self) -> Arc<VectorIndex> {
        self.index.load_full()
    }

    /// One answer.
    pub fn get(&self, id: &str) -> Option<Arc<Answer>> {
        self.catalog().get(id).cloned()
    }

    /// How many answers the library holds.
    pub fn answer_count(&self) -> usize {
        self.catalog().len()
    }

    /// All answers, ordered by id.
    pub fn list(&self) -> Vec<Arc<Answer>> {
        let mut all: Vec<Arc<Answer>> = self.catalog().values().cloned().collect();
        all.sort_by(|a, b| a.input.id.cmp(&b.input.id));
        all
    }

    /// Freshness of an answer now.
    pub fn freshness(&self, a: &Answer, now: OffsetDateTime) -> Freshness {
        freshness::assess(a, now, &self.settings.age)
    }

    /// Stores a batch (one transaction), then updates the catalog.
    pub fn upsert(
        &self,
        inputs: &[AnswerInput],
    ) -> Result<Vec<(Arc<Answer>, UpsertOutcome)>, EngineError> {
        let stored = self.store.upsert(inputs, OffsetDateTime::now_utc())?;
        let mut catalog = self.catalog_mut();
        Ok(stored
            .into_iter()
            .map(|(a, outcome)| {
                let a = Arc::new(a);
                catalog.insert(a.input.id.clone(), a.clone());
                (a, outcome)
            })
            .collect())
    }

    /// Deletes an answer; false when there was none.
    pub fn delete(&self, id: &str) -> Result<bool, EngineError> {
        let existed = self.store.delete(id)?;
        self.catalog_mut().remove(id);
        Ok(existed)
    }

    /// Recommends answers for a question.
    pub fn recommend(&self, q: &Query) -> Result<Recommendations, EngineError> {
        let embedded = self
            .embedder
            .embed(&[q.question.as_str()], TextKind::Query)?;
        let vector = &embedded[0].vector;
        Ok(self.recommend_vector(vector, q))
    }

    /// The search part of [`Engine::recommend`], for an embedded question.
    pub fn recommend_vector(&self, vector: &[f32], q: &Query) -> Recommendations {
        let now = OffsetDateTime::now_utc();
        let index = self.index();
        let catalog = self.catalog();
        let admissible = |a: &Answer| {
            a.input.status == Status::Published
                && q.category.as_ref().is_none_or(|c| &a.input.category == c)
                && q.locale.as_ref().is_none_or(|l| &a.input.locale == l)
                && q.tags.iter().all(|t| a.input.tags.contains(t))
                && (q.include_expired || !freshness::is_expired(a, now))
                && (q.include_stale || !freshness::is_stale(a, now, &self.settings.age))
        };
        let keep =
            |p: &crate::index::PointMeta| catalog.get(&*p.answer_id).is_some_and(|a| admissible(a));
        // Several texts per answer: ask for enough points to fill top_k answers.
        let k_points = (q.top_k * 4).max(20);
        let ef = self.settings.ef_search.max(k_points);
        let hits = index.search(vector, k_points, ef, &keep);

        let mut best: Vec<(Arc<str>, usize, f32)> = Vec::new();
        for (point, _) in hits {
            let id = &index.point(point).answer_id;
            if best.iter().any(|(a, ..)| a == id) {
                continue;
            }
            // Exact re-scoring over every indexed text of this answer.
            let (p, s) = index
                .points_of(id)
                .iter()
                .map(|&p| (p, dot(vector, index.vector(p))))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((point, dot(vector, index.vector(point))));
            // f32 rounding can put an exact match a hair above 1.
            best.push((id.clone(), p, s.clamp(-1.0, 1.0)));
        }
        best.sort_by(|a, b| b.2.total_cmp(&a.2));
        best.truncate(q.top_k);

        let threshold = q.min_score.unwrap_or(self.settings.min_score);
        let results: Vec<Recommendation> = best
            .into_iter()
            .filter_map(|(id, p, score)| {
                let answer = catalog.get(&*id)?.clone();
                let point = index.point(p);
                Some(Recommendation {
                    freshness: self.freshness(&answer, now),
                    answer,
                    score,
                    matched_text: point.text.clone(),
                    matched_role: point.role,
                })
            })
            .collect();
        let handoff = results.first().is_none_or(|r| r.score < threshold);
        Recommendations {
            results,
            handoff,
            threshold,
            index_version: index.manifest().version,
        }
    }

    /// Counts for the index status endpoint.
    pub fn index_status(&self) -> IndexStatus {
        let index = self.index();
        let catalog = self.catalog();
        let tombstones = index
            .points()
            .iter()
            .filter(|p| !catalog.contains_key(&*p.answer_id))
            .count();
        let pending = catalog
            .values()
            .filter(|a| freshness::is_pending(a))
            .count();
        let m = index.manifest();
        IndexStatus {
            answers: catalog.len(),
            vectors: index.len(),
            tombstones,
            pending_reindex: pending,
            model_id: m.model_id.clone(),
            index_version: m.version,
            built_at: (!m.built_at.is_empty()).then(|| m.built_at.clone()),
        }
    }

    /// Registers a callback told the duration (seconds) of each finished rebuild.
    pub fn on_reindex(&self, f: Box<dyn Fn(f64) + Send + Sync>) {
        let _ = self.reindex_observer.set(f);
    }

    /// Queues a reindex; returns its job id.
    pub fn start_reindex(&self, mode: ReindexMode) -> Result<String, EngineError> {
        self.jobs.submit(mode)
    }

    /// A reindex job's state.
    pub fn job(&self, id: &str) -> Option<JobState> {
        self.jobs.get(id)
    }

    /// Runs a reindex now on this thread (the CLI's `kefu reindex`),
    /// reporting progress as (done, total).
    pub fn reindex_now(
        &self,
        mode: ReindexMode,
        progress: &dyn Fn(usize, usize),
    ) -> Result<u64, EngineError> {
        reindex::run(self, mode, progress)
    }
}
