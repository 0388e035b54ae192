//! The recommendation engine: answers in, recommendations out. It owns the
//! answer catalog (an in-memory mirror of the store), the live vector index
//! (swapped atomically after each rebuild), the embedder, and the reindex
//! worker. It knows nothing of HTTP; every method is synchronous and may
//! block (call it off the async runtime).
//!
//! Invariants: a write is committed to the store before the catalog changes,
//! so a deleted answer is excluded from search from the moment `delete`
//! returns; searches filter inside the graph search by the catalog's current
//! state (category, tags, locale, status, validity); both legs' signals are
//! computed exactly over every indexed text of each candidate answer, and
//! fused and calibrated by [`rank`].

pub mod batcher;
pub mod classify;
pub mod context;
pub mod freshness;
pub mod rank;
mod reindex;
mod related;
pub mod review;
pub mod taxonomy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::embedding::{EmbedError, Embedder, TextKind};
use crate::index::{dot, LexicalQuery, PointMeta, VectorIndex};
use crate::store::{Answer, AnswerInput, SqliteStore, Status, StoreError, TextRole, UpsertOutcome};
pub use classify::{Classification, ClassifierSettings};
pub use freshness::{AgePolicy, Flag, Freshness};
use rank::{Calibration, Candidate, Candidates, Fusion};
pub use reindex::{JobState, JobStatus, ReindexMode};
pub use related::{Related, RelatedSource};

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
    /// When answers count as stale by age.
    pub age: AgePolicy,
    /// HNSW search breadth.
    pub ef_search: usize,
    /// How many texts each leg contributes as candidates (at least).
    pub candidates: usize,
    /// How the legs are fused.
    pub fusion: Fusion,
    /// Confidence model and default hand-off threshold; `None`: the one
    /// stored with the model's settings (resolved when the engine opens).
    pub calibration: Option<Calibration>,
    /// Overrides the calibration's hand-off threshold.
    pub min_confidence: Option<f32>,
    /// How standard questions and variants are embedded: as queries (the
    /// query prefix on both sides, the default) or as passages.
    pub question_kind: TextKind,
    /// How conversation context is read.
    pub context: context::ContextPolicy,
    /// The question classifier.
    pub classifier: ClassifierSettings,
    /// Questions classified with a confidence below this are queued for
    /// review (0: none are).
    pub review_below: f32,
    /// Weight of the feedback term in the ordering score (0: off, at most
    /// 0.1): `w * (2 * (helpful + 1) / (feedback + 2) - 1)`, in [-w, w].
    pub feedback_boost: f32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            age: AgePolicy::default(),
            ef_search: 128,
            candidates: 50,
            fusion: Fusion::default(),
            calibration: None,
            min_confidence: None,
            question_kind: TextKind::Query,
            context: context::ContextPolicy::default(),
            classifier: ClassifierSettings::default(),
            review_below: review::DEFAULT_REVIEW_BELOW,
            feedback_boost: 0.0,
        }
    }
}

impl Settings {
    /// The default hand-off threshold on confidence.
    pub fn min_confidence(&self) -> f32 {
        self.min_confidence
            .unwrap_or_else(|| self.calibration().min_confidence)
    }

    /// The confidence model in use.
    pub fn calibration(&self) -> std::borrow::Cow<'_, Calibration> {
        match &self.calibration {
            Some(c) => std::borrow::Cow::Borrowed(c),
            None => std::borrow::Cow::Owned(Calibration::uncalibrated()),
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
    /// Hand-off threshold on the top result's confidence (default: the settings').
    pub min_confidence: Option<f32>,
    pub include_stale: bool,
    pub include_expired: bool,
}

impl Query {
    /// A question with no filters and the API's defaults: stale answers
    /// included, expired ones left out, the default hand-off threshold.
    pub fn new(question: impl Into<String>, top_k: usize) -> Self {
        Self {
            question: question.into(),
            top_k,
            category: None,
            tags: Vec::new(),
            locale: None,
            min_confidence: None,
            include_stale: true,
            include_expired: false,
        }
    }
}

/// One recommended answer.
#[derive(Debug, Clone)]
pub struct Recommendation {
    pub answer: Arc<Answer>,
    /// The fused ranking score.
    pub score: f32,
    /// Probability that this is a right answer (calibrated).
    pub confidence: f32,
    /// The legs' signals: best cosine and normalised BM25 over the answer's texts.
    pub dense: f32,
    pub lexical: f32,
    pub matched_text: String,
    pub matched_role: TextRole,
    pub freshness: Freshness,
}

/// The result of a recommend call.
#[derive(Debug, Clone)]
pub struct Recommendations {
    pub results: Vec<Recommendation>,
    pub handoff: bool,
    /// The confidence threshold used for `handoff`.
    pub min_confidence: f32,
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
    /// How many distinct terms the lexical index holds.
    pub lexical_terms: usize,
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
    /// Confirmed and corrected review labels of this model's vectors.
    reviewed: RwLock<Vec<crate::store::LabelledVector>>,
    review_writer: review::Writer,
    /// (helpful, total) feedback per answer, for the feedback boost.
    feedback: RwLock<HashMap<String, (u32, u32)>>,
}

/// The folder holding index versions inside a data directory.
pub fn index_root(data_dir: &Path) -> PathBuf {
    data_dir.join("vectors")
}

/// What a data directory holds for one model, read before the model itself
/// is needed: the store, the catalog, the review labels and the current
/// index. [`LibraryData::load`] runs beside the model load when the server
/// starts; [`Engine::from_data`] joins the two.
pub struct LibraryData {
    store: Arc<SqliteStore>,
    catalog: HashMap<String, Arc<Answer>>,
    reviewed: Vec<crate::store::LabelledVector>,
    root: PathBuf,
    index: VectorIndex,
    needs_build: bool,
    model_id: String,
    dimension: usize,
    question_kind: TextKind,
}

impl LibraryData {
    /// Opens the store and reads the catalog and, on a second thread, the
    /// current index if it was built with this model (`model_id`,
    /// `dimension`, `question_kind`); else an empty index and `needs_build`.
    pub fn load(
        data_dir: &Path,
        model_id: &str,
        dimension: usize,
        question_kind: TextKind,
    ) -> Result<Self, EngineError> {
        let started = std::time::Instant::now();
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        let store = Arc::new(SqliteStore::open(data_dir)?);
        let root = index_root(data_dir);
        std::fs::create_dir_all(&root).map_err(StoreError::from)?;
        let current = reindex::Current::read(&store);
        let ((catalog, reviewed, catalog_ms), (index, needs_build, index_ms)) =
            std::thread::scope(|s| {
                let index_job = std::thread::Builder::new()
                    .name("kefu-load-index".into())
                    .spawn_scoped(s, || {
                        let t = std::time::Instant::now();
                        let (index, needs_build) = reindex::load_version(
                            current,
                            &root,
                            model_id,
                            dimension,
                            question_kind,
                        );
                        (index, needs_build, ms(t))
                    })
                    .map_err(StoreError::from)?;
                let t = std::time::Instant::now();
                let catalog: Result<HashMap<String, Arc<Answer>>, StoreError> =
                    store.all().map(|all| {
                        all.into_iter()
                            .map(|a| (a.input.id.clone(), Arc::new(a)))
                            .collect()
                    });
                let reviewed = store.review_labels(model_id);
                let catalog_ms = ms(t);
                let index = match index_job.join() {
                    Ok(index) => index,
                    Err(panic) => std::panic::resume_unwind(panic),
                };
                Ok::<_, EngineError>(((catalog?, reviewed?, catalog_ms), index))
            })?;
        tracing::info!(
            answers = catalog.len(),
            points = index.len(),
            reviewed = reviewed.len(),
            catalog_ms,
            index_ms,
            total_ms = ms(started),
            "library loaded"
        );
        Ok(Self {
            store,
            catalog,
            reviewed,
            root,
            index,
            needs_build,
            model_id: model_id.to_string(),
            dimension,
            question_kind,
        })
    }
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
        let data = LibraryData::load(
            data_dir,
            embedder.model_id(),
            embedder.dimension(),
            settings.question_kind,
        )?;
        Self::from_data(data, embedder, settings)
    }

    /// The engine over `data` read for this embedder's model (if it was read
    /// for another model, dimension or question kind, the index and labels
    /// are read again for this one).
    pub fn from_data(
        mut data: LibraryData,
        embedder: Arc<dyn Embedder>,
        mut settings: Settings,
    ) -> Result<(Arc<Self>, bool), EngineError> {
        // The segmentation dictionary, if nothing loaded it yet.
        crate::index::lexical::warm_up();
        if data.model_id != embedder.model_id()
            || data.dimension != embedder.dimension()
            || data.question_kind != settings.question_kind
        {
            let (index, needs_build) = reindex::load_current(
                &data.store,
                &data.root,
                embedder.model_id(),
                embedder.dimension(),
                settings.question_kind,
            );
            data.index = index;
            data.needs_build = needs_build;
            data.reviewed = data.store.review_labels(embedder.model_id())?;
        }
        if settings.calibration.is_none() {
            settings.calibration = Some(
                embedder
                    .calibration()
                    .unwrap_or_else(Calibration::uncalibrated),
            );
        }
        let engine = Arc::new(Self {
            embedder,
            store: data.store,
            index: ArcSwap::from_pointee(data.index),
            catalog: RwLock::new(data.catalog),
            settings,
            index_root: data.root,
            jobs: reindex::Jobs::default(),
            reindex_observer: std::sync::OnceLock::new(),
            reviewed: RwLock::new(data.reviewed),
            review_writer: review::Writer::default(),
            feedback: RwLock::new(HashMap::new()),
        });
        reindex::start_worker(&engine);
        Ok((engine, data.needs_build))
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
        Ok(self.recommend_traced(q)?.0)
    }

    /// [`Engine::recommend`], also returning every candidate considered
    /// (what `kefu eval --sweep` re-ranks under other settings).
    pub fn recommend_traced(
        &self,
        q: &Query,
    ) -> Result<(Recommendations, Candidates), EngineError> {
        let vector = if !self.embeds_questions() {
            Vec::new()
        } else {
            let embedded = self
                .embedder
                .embed(&[q.question.as_str()], TextKind::Query)?;
            embedded
                .into_iter()
                .next()
                .map(|e| e.vector)
                .unwrap_or_default()
        };
        Ok(self.recommend_vector(&vector, q))
    }

    /// Whether recommending embeds the question (false in lexical-only
    /// mode, where [`Engine::recommend_vector`] takes an empty vector).
    pub fn embeds_questions(&self) -> bool {
        self.settings.fusion.mode != rank::Mode::Lexical
    }

    /// The search part of [`Engine::recommend`], for an embedded question
    /// (an empty vector skips the dense leg).
    pub fn recommend_vector(&self, vector: &[f32], q: &Query) -> (Recommendations, Candidates) {
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
        let keep = |p: &PointMeta| catalog.get(&*p.answer_id).is_some_and(|a| admissible(a));
        let cands = self.candidates(&index, vector, &q.question, q.top_k, &keep);
        let ranked = self.rank(&cands, q.top_k);
        let min_confidence = q.min_confidence.unwrap_or(self.settings.min_confidence());
        let results: Vec<Recommendation> = ranked
            .into_iter()
            .filter_map(|r| {
                let answer = catalog.get(&*r.answer_id)?.clone();
                let point = index.point(r.point);
                Some(Recommendation {
                    freshness: self.freshness(&answer, now),
                    answer,
                    score: r.score,
                    confidence: r.confidence,
                    dense: r.dense,
                    lexical: r.lexical,
                    matched_text: point.text.clone(),
                    matched_role: point.role,
                })
            })
            .collect();
        let handoff = results
            .first()
            .is_none_or(|r| r.confidence < min_confidence);
        let recs = Recommendations {
            results,
            handoff,
            min_confidence,
            index_version: index.manifest().version,
        };
        (recs, cands)
    }

    /// [`Engine::recommend_vector`] for a question asked in a conversation:
    /// `alone` embeds the question, `in_context` the question read with its
    /// latest turns ([`context::contextual_text`]). The question alone stands
    /// when it is answered confidently; otherwise the blend of both readings
    /// is searched. Returns the blended vector when the context was used.
    pub fn recommend_in_context(
        &self,
        alone: &[f32],
        in_context: Option<&[f32]>,
        q: &Query,
    ) -> (Recommendations, Option<Vec<f32>>) {
        let policy = &self.settings.context;
        let (recs, _) = self.recommend_vector(alone, q);
        let Some(with) = in_context.filter(|_| !alone.is_empty()) else {
            return (recs, None);
        };
        let top = recs.results.first().map_or(0.0, |r| r.confidence);
        if top >= policy.keep_alone_above {
            return (recs, None);
        }
        let blended = context::blend(alone, with, policy.weight);
        let recs = self.recommend_vector(&blended, q).0;
        (recs, Some(blended))
    }

    /// Ranks candidates, with the feedback boost when it is on.
    fn rank(&self, cands: &Candidates, top_k: usize) -> Vec<rank::Ranked> {
        let (fusion, cal) = (&self.settings.fusion, self.settings.calibration());
        let w = self.settings.feedback_boost;
        if w <= 0.0 {
            return cands.rank(fusion, &cal, top_k);
        }
        let counts = self.feedback.read().unwrap_or_else(|p| p.into_inner());
        let boost = |id: &str| {
            counts
                .get(id)
                .map_or(0.0, |&(h, n)| rank::feedback_term(w, h, n))
        };
        cands.rank_boosted(fusion, &cal, top_k, &boost)
    }

    /// Replaces the feedback counts the boost ranks with ((helpful, total)
    /// per answer id).
    pub fn set_feedback_counts(&self, counts: HashMap<String, (u32, u32)>) {
        *self.feedback.write().unwrap_or_else(|p| p.into_inner()) = counts;
    }

    /// Updates one answer's feedback counts.
    pub fn set_feedback_count(&self, answer_id: &str, helpful: u32, total: u32) {
        self.feedback
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(answer_id.to_string(), (helpful, total));
    }

    /// Candidate answers from both legs, each scored exactly over all of
    /// its texts.
    fn candidates(
        &self,
        index: &VectorIndex,
        vector: &[f32],
        question: &str,
        top_k: usize,
        keep: &dyn Fn(&PointMeta) -> bool,
    ) -> Candidates {
        let mode = self.settings.fusion.mode;
        // Several texts per answer: ask for enough points to fill top_k answers.
        let k_points = (top_k * 4).max(self.settings.candidates);
        let mut ids: Vec<Arc<str>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        if mode != rank::Mode::Lexical && !vector.is_empty() {
            let ef = self.settings.ef_search.max(k_points);
            for (p, _) in index.search(vector, k_points, ef, keep) {
                let id = &index.point(p).answer_id;
                if seen.insert(id.clone()) {
                    ids.push(id.clone());
                }
            }
        }
        let lexical = index.lexical();
        // Dense-only mode does no lexical work at all (it is the baseline).
        let lq = if mode == rank::Mode::Dense {
            LexicalQuery::default()
        } else {
            lexical.query(question)
        };
        if mode != rank::Mode::Dense {
            let keep_doc = |d: usize| keep(index.point(d));
            for (p, _) in lexical.search(&lq, k_points, &keep_doc) {
                let id = &index.point(p).answer_id;
                if seen.insert(id.clone()) {
                    ids.push(id.clone());
                }
            }
        }
        let list = ids
            .into_iter()
            .map(|id| {
                let points = index.points_of(&id);
                let cosines: Vec<(usize, f32)> = if vector.is_empty() {
                    Vec::new()
                } else {
                    points
                        .iter()
                        .map(|&p| (p, dot(vector, index.vector(p))))
                        .collect()
                };
                let (dense_point, dense) = cosines
                    .iter()
                    .copied()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((points.first().copied().unwrap_or(0), 0.0));
                let (lexical_point, lex) = points
                    .iter()
                    .map(|&p| (p, lexical.score(&lq, p)))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .filter(|x| x.1 > 0.0)
                    .map_or((None, 0.0), |(p, s)| (Some(p), s));
                Candidate {
                    answer_id: id,
                    // f32 rounding can put an exact match a hair above 1.
                    dense: dense.clamp(-1.0, 1.0),
                    cosines: cosines.iter().map(|c| c.1).collect(),
                    dense_point,
                    lexical: lex,
                    lexical_point,
                }
            })
            .collect();
        Candidates {
            list,
            coverage: lq.coverage(),
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
            lexical_terms: index.lexical().term_count(),
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
