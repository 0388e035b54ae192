//! The answer library: records, validation, and their SQLite storage
//! (answers, the embedding cache, index bookkeeping, the review queue and
//! tag relations).

pub mod answer;
mod sqlite;

pub use answer::{
    answer_json, hash_text, rfc3339, valid_id, Answer, AnswerDraft, AnswerInput, FieldError,
    Status, TextRole,
};
pub(crate) use sqlite::open_read_write;
pub use sqlite::review::{
    LabelledVector, NewReviewItem, Predicted, ReviewItem, ReviewLabel, ReviewStatus, MAX_PENDING,
};
pub use sqlite::{Link, LinksOutcome, SqliteStore, StoreError, UpsertOutcome};
