//! Feedback on a logged response: was the answer helpful, did it resolve
//! the customer's problem. One record per (request, answer); a second
//! feedback for the same pair replaces the first (`replaced: true`), keeping
//! its `created_at`.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use time::OffsetDateTime;

use super::AnalyticsError;
use crate::store::rfc3339;

/// Feedback as sent, after validation of its fields.
#[derive(Debug, Clone)]
pub struct FeedbackInput {
    pub request_id: String,
    pub answer_id: String,
    pub helpful: bool,
    pub resolved: Option<bool>,
    /// Stored masked ([`crate::privacy::mask`]).
    pub comment: Option<String>,
}

/// A stored feedback record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feedback {
    pub request_id: String,
    pub answer_id: String,
    /// The answer's position in the response (1 = first).
    pub rank: u32,
    pub helpful: bool,
    pub resolved: Option<bool>,
    pub comment: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Whether this replaced an earlier feedback for the same request and answer.
    pub replaced: bool,
}

/// Why feedback was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("no logged request '{0}' (unknown, older than the log's retention, or not logged)")]
    UnknownRequest(String),
    #[error("answer '{answer_id}' was not shown in request '{request_id}'")]
    AnswerNotShown {
        request_id: String,
        answer_id: String,
        shown: Vec<String>,
    },
    #[error(transparent)]
    Db(#[from] AnalyticsError),
}

impl From<rusqlite::Error> for FeedbackError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Stores one feedback (one transaction): checks that the request was
/// logged and showed the answer, then inserts or replaces.
pub fn record(
    conn: &mut Connection,
    input: &FeedbackInput,
    now: OffsetDateTime,
) -> Result<Feedback, FeedbackError> {
    let tx = conn.transaction()?;
    let logged: bool = tx
        .query_row(
            "SELECT 1 FROM query_log WHERE request_id = ?1",
            [&input.request_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !logged {
        return Err(FeedbackError::UnknownRequest(input.request_id.clone()));
    }
    let shown: Vec<(String, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT answer_id, rank FROM query_log_shown WHERE request_id = ?1 ORDER BY rank",
        )?;
        let rows = stmt.query_map([&input.request_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let Some(rank) = shown
        .iter()
        .find(|(id, _)| *id == input.answer_id)
        .map(|(_, r)| *r)
    else {
        return Err(FeedbackError::AnswerNotShown {
            request_id: input.request_id.clone(),
            answer_id: input.answer_id.clone(),
            shown: shown.into_iter().map(|(id, _)| id).collect(),
        });
    };
    let earlier: Option<String> = tx
        .query_row(
            "SELECT created_at FROM feedback WHERE request_id = ?1 AND answer_id = ?2",
            params![input.request_id, input.answer_id],
            |r| r.get(0),
        )
        .optional()?;
    let now_s = rfc3339(now);
    let created_at = earlier.clone().unwrap_or_else(|| now_s.clone());
    let comment = input
        .comment
        .as_deref()
        .map(|c| crate::privacy::mask(c).into_owned());
    tx.execute(
        "INSERT INTO feedback (request_id, answer_id, helpful, resolved, comment, created_at, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (request_id, answer_id) DO UPDATE SET helpful = excluded.helpful, \
         resolved = excluded.resolved, comment = excluded.comment, updated_at = excluded.updated_at",
        params![
            input.request_id,
            input.answer_id,
            input.helpful,
            input.resolved,
            comment,
            created_at,
            now_s
        ],
    )?;
    tx.commit()?;
    Ok(Feedback {
        request_id: input.request_id.clone(),
        answer_id: input.answer_id.clone(),
        rank: rank as u32 + 1,
        helpful: input.helpful,
        resolved: input.resolved,
        comment,
        created_at,
        updated_at: now_s,
        replaced: earlier.is_some(),
    })
}

/// Helpful and total feedback counts per answer over all retained
/// feedback (what the optional feedback boost ranks with); only `answer_id`
/// when given.
pub fn helpful_counts(
    conn: &Connection,
    answer_id: Option<&str>,
) -> Result<HashMap<String, (u32, u32)>, AnalyticsError> {
    let mut stmt = conn.prepare(
        "SELECT answer_id, SUM(helpful), COUNT(*) FROM feedback \
         WHERE ?1 IS NULL OR answer_id = ?1 GROUP BY answer_id",
    )?;
    let rows = stmt.query_map([answer_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            (r.get::<_, i64>(1)? as u32, r.get::<_, i64>(2)? as u32),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
