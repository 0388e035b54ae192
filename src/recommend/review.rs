//! Classification on the engine, and the review queue: questions classified
//! with a confidence below the configured threshold are queued for an
//! editor, who confirms or corrects the label; confirmed and corrected
//! labels take part in later classifications as labelled neighbours.
//!
//! Invariants: nothing here writes to SQLite on the recommend path: a
//! question to review is handed to a background writer thread through a
//! bounded channel (when it is full the question is dropped and counted,
//! never waited for). The question is masked ([`crate::privacy::mask`])
//! before it leaves this module; its vector is kept (a confirmed label is
//! used without re-embedding). Labels in memory are those whose vectors
//! were computed by the engine's model; a decision is stored first, then
//! the in-memory labels change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use time::OffsetDateTime;

use super::classify::{self, Classification, Neighbour, Source};
use super::{Engine, EngineError};
use crate::index::{dot, PointMeta};
use crate::store::{
    LabelledVector, NewReviewItem, Predicted, ReviewItem, ReviewLabel, ReviewStatus, SqliteStore,
    Status, TextRole,
};

/// Questions waiting for the background writer; beyond it they are dropped.
const WRITER_QUEUE: usize = 4_096;
/// Most questions the writer stores in one transaction.
const WRITER_BATCH: usize = 256;

/// The default review threshold on classification confidence (see the
/// README's "Classification" for the measurement it comes from).
pub const DEFAULT_REVIEW_BELOW: f32 = 0.45;

/// What an editor decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Accept the prediction as the label.
    Confirm,
    /// Replace it by this label.
    Correct(ReviewLabel),
}

/// The outcome of [`Engine::review_decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    Updated(Box<ReviewItem>),
    NotFound,
    /// A confirm on an item predicted with no category.
    NothingToConfirm,
}

enum Msg {
    Item(Box<NewReviewItem>),
    Flush(SyncSender<()>),
}

/// The background writer of review items (started on first use).
#[derive(Default)]
pub(super) struct Writer {
    tx: OnceLock<SyncSender<Msg>>,
    /// Questions dropped because the writer's queue was full (logged).
    dropped: AtomicU64,
}

impl Writer {
    fn sender(&self, store: &Arc<SqliteStore>) -> &SyncSender<Msg> {
        self.tx.get_or_init(|| {
            let (tx, rx) = sync_channel(WRITER_QUEUE);
            let store = store.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("kefu-review-writer".into())
                .spawn(move || write_loop(&store, &rx))
            {
                tracing::error!(error = %e, "cannot start the review writer thread");
            }
            tx
        })
    }
}

fn write_loop(store: &SqliteStore, rx: &Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Item(it) => batch.push(*it),
                Msg::Flush(ack) => acks.push(ack),
            }
            if batch.len() < WRITER_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = store.review_add(&batch) {
                tracing::error!(error = %e, items = batch.len(), "storing questions for review failed");
            }
        }
        for ack in acks {
            let _ = ack.try_send(());
        }
    }
}

/// The key under which a masked question counts as "the same question":
/// lower case, full-width ASCII folded to half-width, only letters and
/// digits kept (so spacing and punctuation do not make a new item).
pub fn question_key(masked: &str) -> String {
    masked
        .chars()
        .map(|c| match c as u32 {
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .filter(|c| c.is_alphanumeric() || matches!(c, '[' | ']'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Validated labels' limits (as for answers).
pub const MAX_LABEL_CHARS: usize = 64;
pub const MAX_LABEL_TAGS: usize = 32;

impl Engine {
    /// Classifies a question from its embedding (see [`classify`]); no
    /// category when the vector is empty (lexical-only mode), the library is
    /// empty or nothing is near.
    pub fn classify(&self, vector: &[f32]) -> Classification {
        let s = self.settings.classifier;
        self.with_neighbours(vector, s.neighbours.max(1), s.answer_texts, |n| {
            classify::vote(n, &s)
        })
    }

    /// Calls `f` with the `k` nearest labelled neighbours of `vector`, best
    /// first: indexed texts of published answers (answer texts only with
    /// `answer_texts`) and reviewed questions.
    pub fn with_neighbours<R>(
        &self,
        vector: &[f32],
        k: usize,
        answer_texts: bool,
        f: impl FnOnce(&[Neighbour<'_>]) -> R,
    ) -> R {
        if vector.is_empty() {
            return f(&[]);
        }
        let index = self.index();
        let catalog = self.catalog();
        let reviewed = self.reviewed();
        let keep = |p: &PointMeta| {
            (answer_texts || p.role != TextRole::Answer)
                && catalog
                    .get(&*p.answer_id)
                    .is_some_and(|a| a.input.status == Status::Published)
        };
        let ef = self.settings.ef_search.max(k);
        let mut out: Vec<Neighbour<'_>> = Vec::with_capacity(2 * k);
        for (p, cosine) in index.search(vector, k, ef, &keep) {
            let point = index.point(p);
            if let Some(a) = catalog.get(&*point.answer_id) {
                out.push(Neighbour {
                    cosine,
                    category: &a.input.category,
                    subcategory: &a.input.subcategory,
                    tags: &a.input.tags,
                    source: Source::Answer {
                        answer_text: point.role == TextRole::Answer,
                    },
                });
            }
        }
        for r in reviewed.iter().filter(|r| r.vector.len() == vector.len()) {
            out.push(Neighbour {
                cosine: dot(vector, &r.vector),
                category: &r.label.category,
                subcategory: &r.label.subcategory,
                tags: &r.label.tags,
                source: Source::Reviewed,
            });
        }
        out.sort_by(|a, b| b.cosine.total_cmp(&a.cosine));
        out.truncate(k);
        f(&out)
    }

    fn reviewed(&self) -> std::sync::RwLockReadGuard<'_, Vec<LabelledVector>> {
        self.reviewed.read().unwrap_or_else(|p| p.into_inner())
    }

    /// How many reviewed labels take part in classification.
    pub fn reviewed_labels(&self) -> Vec<ReviewLabel> {
        self.reviewed().iter().map(|r| r.label.clone()).collect()
    }

    /// Queues the question for review when its classification's confidence
    /// is below the configured threshold. Never blocks and never writes to
    /// SQLite here: the background writer stores it. Returns whether it was
    /// handed over.
    pub fn review_if_unsure(&self, question: &str, vector: &[f32], c: &Classification) -> bool {
        if vector.is_empty() || c.confidence >= self.settings.review_below {
            return false;
        }
        let masked = crate::privacy::mask(question).into_owned();
        let item = NewReviewItem {
            key: question_key(&masked),
            question: masked,
            model_id: self.model_id().to_string(),
            vector: vector.to_vec(),
            predicted: predicted(c),
            at: OffsetDateTime::now_utc(),
        };
        match self
            .review_writer
            .sender(&self.store)
            .try_send(Msg::Item(Box::new(item)))
        {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                let n = self.review_writer.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "the review writer is behind: questions dropped"
                    );
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Waits until every question handed to the review writer so far is
    /// stored (or `timeout` passes); false on timeout.
    pub fn flush_reviews(&self, timeout: Duration) -> bool {
        let Some(tx) = self.review_writer.tx.get() else {
            return true;
        };
        let (ack_tx, ack_rx) = sync_channel(1);
        if tx.send(Msg::Flush(ack_tx)).is_err() {
            return false;
        }
        ack_rx.recv_timeout(timeout).is_ok()
    }

    /// A page of the review queue and the number of matching items.
    pub fn review_list(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<ReviewItem>, usize), EngineError> {
        Ok(self.store.review_list(status, limit, offset)?)
    }

    /// Records an editor's decision; from then on the label takes part in
    /// classification (when the item's vector is from this model).
    pub fn review_decide(&self, id: i64, decision: Decision) -> Result<Decided, EngineError> {
        let Some(item) = self.store.review_get(id)? else {
            return Ok(Decided::NotFound);
        };
        let (status, label) = match decision {
            Decision::Confirm => {
                let Some(category) = item.predicted.category.clone() else {
                    return Ok(Decided::NothingToConfirm);
                };
                let p = &item.predicted;
                let label = ReviewLabel {
                    category,
                    subcategory: p.subcategory.clone().unwrap_or_default(),
                    tags: p.tags.clone(),
                };
                (ReviewStatus::Confirmed, label)
            }
            Decision::Correct(label) => (ReviewStatus::Corrected, label),
        };
        let now = OffsetDateTime::now_utc();
        let Some((item, vector)) =
            self.store
                .review_decide(id, status, &label, self.model_id(), now)?
        else {
            return Ok(Decided::NotFound);
        };
        let mut reviewed = self.reviewed.write().unwrap_or_else(|p| p.into_inner());
        reviewed.retain(|r| r.id != id);
        if let Some(vector) = vector {
            reviewed.push(LabelledVector { id, vector, label });
        }
        Ok(Decided::Updated(Box::new(item)))
    }
}

/// A classification as stored with a review item.
pub fn predicted(c: &Classification) -> Predicted {
    Predicted {
        category: c.category.clone(),
        subcategory: c.subcategory.clone(),
        tags: c.tags.clone(),
        confidence: c.confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_keys_ignore_case_spacing_punctuation_and_width() {
        assert_eq!(
            question_key("退货 运费谁出？"),
            question_key("退货运费谁出")
        );
        assert_eq!(question_key("Where is MY order?!"), "whereismyorder");
        assert_eq!(question_key("ＡＢＣ１２３"), "abc123");
        assert_eq!(question_key("订单 [NUMBER] 到哪了"), "订单[number]到哪了");
        assert_ne!(question_key("退货"), question_key("退款"));
    }
}
