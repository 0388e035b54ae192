//! `POST /v1/recommend` and `GET /v1/suggest`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query as UrlQuery, State};
use axum::Json;
use serde::Deserialize;

use super::error::{parse_json, ApiError};
use super::{blocking, AppState};
use crate::analytics::LogEntry;
use crate::assist::sentiment::{self, Sentiment};
use crate::embedding::TextKind;
use crate::recommend::batcher::QueueError;
use crate::recommend::context::{self, Turn};
use crate::recommend::{Classification, Query, Recommendations};

const MAX_TOP_K: i64 = 50;
/// Most earlier turns a request may carry (only the latest few are read).
const MAX_CONTEXT_TURNS: usize = 50;
const DEFAULT_TOP_K: i64 = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    category: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    locale: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendRequest {
    question: String,
    top_k: Option<i64>,
    filters: Option<Filters>,
    min_confidence: Option<f32>,
    include_stale: Option<bool>,
    include_expired: Option<bool>,
    /// Earlier turns of the conversation, oldest first.
    #[serde(default)]
    context: Vec<Turn>,
}

/// Checks the conversation context: at most [`MAX_CONTEXT_TURNS`] turns,
/// each with text no longer than a question.
fn validate_context(state: &AppState, turns: &[Turn]) -> Result<(), ApiError> {
    if turns.len() > MAX_CONTEXT_TURNS {
        return Err(ApiError::invalid(
            "invalid_context",
            format!("context holds at most {MAX_CONTEXT_TURNS} turns"),
        ));
    }
    let max = state.settings.max_question_chars;
    for (i, t) in turns.iter().enumerate() {
        if t.text.trim().is_empty() {
            return Err(ApiError::invalid(
                "invalid_context",
                format!("context turn {i} has no text"),
            ));
        }
        if t.text.chars().count() > max {
            return Err(ApiError::invalid(
                "invalid_context",
                format!("context turn {i} is longer than {max} characters"),
            ));
        }
    }
    Ok(())
}

/// Turns a request (a POST body, or suggest's query string) into a validated [`Query`].
fn validate(state: &AppState, req: RecommendRequest) -> Result<Query, ApiError> {
    let RecommendRequest {
        question,
        top_k,
        filters,
        min_confidence,
        include_stale,
        include_expired,
        context: _,
    } = req;
    let question = question.trim().to_string();
    if question.is_empty() {
        return Err(ApiError::invalid(
            "empty_question",
            "question must not be empty or only whitespace",
        ));
    }
    let max = state.settings.max_question_chars;
    if question.chars().count() > max {
        return Err(ApiError::invalid(
            "question_too_long",
            format!("question is longer than {max} characters"),
        ));
    }
    let top_k = top_k.unwrap_or(DEFAULT_TOP_K);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(ApiError::invalid(
            "invalid_top_k",
            format!("top_k must be between 1 and {MAX_TOP_K}, got {top_k}"),
        ));
    }
    if let Some(c) = min_confidence {
        if !(0.0..=1.0).contains(&c) {
            return Err(ApiError::invalid(
                "invalid_min_confidence",
                "min_confidence must be between 0 and 1",
            ));
        }
    }
    let f = filters.unwrap_or(Filters {
        category: None,
        tags: Vec::new(),
        locale: None,
    });
    let nonempty = |o: Option<String>| o.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    Ok(Query {
        question,
        top_k: top_k as usize,
        category: nonempty(f.category),
        tags: f
            .tags
            .into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        locale: nonempty(f.locale),
        min_confidence,
        include_stale: include_stale.unwrap_or(true),
        include_expired: include_expired.unwrap_or(false),
    })
}

/// Reads a body, mapping the size limit to 413.
pub fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                r.status(),
                "payload_too_large",
                "the request body is over the configured limit",
            )
        } else {
            ApiError::bad_request("invalid_body", r.body_text())
        }
    })
}

/// Embeds one text through the batching queue.
async fn embed_query(state: &AppState, text: &str) -> Result<Vec<f32>, ApiError> {
    let queue = state.embed_queue()?;
    match queue.embed(text, TextKind::Query).await {
        Ok(e) => Ok(e.vector),
        Err(e) => {
            if matches!(e, QueueError::Full { .. }) {
                state.metrics.queue_rejected.inc();
            }
            Err(e.into())
        }
    }
}

async fn run(
    state: Arc<AppState>,
    q: Query,
    turns: Vec<Turn>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let started = Instant::now();
    let engine = state.ready_engine()?;
    // Tone and escalation of the question: rules over lexicons, microseconds.
    // An angry or threatening customer turn among the latest ones keeps the
    // conversation escalated even when the follow-up itself is calm.
    let mut mood = sentiment::analyze(&q.question);
    mood.escalate = mood.escalate
        || turns
            .iter()
            .rev()
            .filter(|t| t.role == context::Role::Customer)
            .take(3)
            .any(|t| sentiment::analyze(&t.text).escalate);
    let policy = engine.settings().context;
    // The question read with its latest turns, when context is given.
    let in_context = (policy.turns > 0)
        .then(|| context::contextual_text(&turns, &q.question, &policy))
        .flatten();
    // The question (and its in-context reading, batched together) join the
    // embedding queue (awaited, off the runtime's threads); the search, a
    // few milliseconds of CPU, runs on a blocking thread.
    let (alone, with) = if !engine.embeds_questions() {
        (Vec::new(), None)
    } else if let Some(text) = &in_context {
        let (alone, with) =
            tokio::join!(embed_query(&state, &q.question), embed_query(&state, text));
        (alone?, Some(with?))
    } else {
        (embed_query(&state, &q.question).await?, None)
    };
    // Classification votes over the vector that was searched; an unsure
    // one is handed to the review queue's background writer (no SQLite
    // write here).
    let (recs, used, classification, q, searched) = blocking(move || {
        let (recs, blended) = engine.recommend_in_context(&alone, with.as_deref(), &q);
        let used = blended.is_some();
        let searched = blended.unwrap_or(alone);
        let classification = engine.classify(&searched);
        engine.review_if_unsure(&q.question, &searched, &classification);
        Ok((recs, used, classification, q, searched))
    })
    .await?;
    let mut body = render(&recs, &classification, &mood, started);
    body["context"] = serde_json::json!({"turns": turns.len(), "used": used});
    // The query log: handed to its writer thread, never waited for. It
    // keeps the vector that was searched (a follow-up's, in context).
    state.log_query(LogEntry::from_recommendation(&body, &q, &recs, searched));
    Ok(Json(body))
}

/// An f32 as the nearest 6-decimal f64, so JSON shows 0.86, not 0.8600000143.
pub fn round6(x: f32) -> f64 {
    (x as f64 * 1e6).round() / 1e6
}

fn render(
    r: &Recommendations,
    c: &Classification,
    mood: &Sentiment,
    started: Instant,
) -> serde_json::Value {
    let results: Vec<serde_json::Value> = r
        .results
        .iter()
        .map(|x| {
            let a = &x.answer.input;
            serde_json::json!({
                "answer_id": a.id,
                "question": a.question,
                "answer": a.answer,
                "score": round6(x.score),
                "confidence": round6(x.confidence),
                "signals": {"dense": round6(x.dense), "lexical": round6(x.lexical)},
                "matched_text": x.matched_text,
                "matched_field": x.matched_role.as_str(),
                "category": a.category,
                "subcategory": a.subcategory,
                "tags": a.tags,
                "locale": a.locale,
                "freshness": x.freshness,
            })
        })
        .collect();
    serde_json::json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "results": results,
        "handoff": r.handoff,
        "sentiment": {"label": mood.label.as_str(), "score": round6(mood.score)},
        "escalate": mood.escalate,
        "min_confidence": round6(r.min_confidence),
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
        "index_version": r.index_version,
        "classification": super::review::classification_json(c),
    })
}

pub async fn recommend(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut req: RecommendRequest = parse_json(&body(raw)?)?;
    validate_context(&state, &req.context)?;
    let turns = std::mem::take(&mut req.context);
    let q = validate(&state, req)?;
    run(state, q, turns).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestParams {
    q: Option<String>,
    k: Option<i64>,
    category: Option<String>,
    /// Comma-separated.
    tags: Option<String>,
    locale: Option<String>,
    min_confidence: Option<f32>,
    include_stale: Option<bool>,
    include_expired: Option<bool>,
}

pub async fn suggest(
    State(state): State<Arc<AppState>>,
    params: Result<UrlQuery<SuggestParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let UrlQuery(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let tags = p
        .tags
        .map(|t| t.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let req = RecommendRequest {
        question: p.q.unwrap_or_default(),
        top_k: p.k,
        filters: Some(Filters {
            category: p.category,
            tags,
            locale: p.locale,
        }),
        min_confidence: p.min_confidence,
        include_stale: p.include_stale,
        include_expired: p.include_expired,
        context: Vec::new(),
    };
    let q = validate(&state, req)?;
    run(state, q, Vec::new()).await
}
