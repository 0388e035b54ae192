//! `POST /v1/feedback` (reader) and `GET /v1/analytics/*` (editor): hot
//! and unanswered question clusters, volume, answer usage, content needing
//! attention. Every handler waits for the query log to catch up first, so
//! a feedback right after its recommend finds the request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use time::OffsetDateTime;

use super::error::{parse_json, ApiError};
use super::recommend::body;
use super::{blocking, AppState};
use crate::analytics::report::{self, AnswerInfo, ClusterOptions, Scope, Window};
use crate::analytics::{Analytics, AnalyticsError, FeedbackError, FeedbackInput};
use crate::recommend::Engine;

/// Longest feedback comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2_000;
const MAX_ID_CHARS: usize = 200;
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 1_000;

impl From<AnalyticsError> for ApiError {
    fn from(e: AnalyticsError) -> Self {
        tracing::error!(error = %e, "analytics failure");
        match e {
            AnalyticsError::Timeout => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_busy",
                "the query log is behind; retry shortly",
            )
            .with_retry_after(1),
            _ => ApiError::internal("the analytics store failed"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    request_id: String,
    answer_id: String,
    helpful: bool,
    resolved: Option<bool>,
    comment: Option<String>,
}

pub async fn feedback(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: FeedbackRequest = parse_json(&body(raw)?)?;
    let request_id = req.request_id.trim().to_string();
    let answer_id = req.answer_id.trim().to_string();
    if request_id.is_empty() || request_id.chars().count() > MAX_ID_CHARS {
        return Err(ApiError::invalid(
            "invalid_request_id",
            format!(
                "request_id must be the request_id of a response (1 to {MAX_ID_CHARS} characters)"
            ),
        ));
    }
    if answer_id.is_empty() || answer_id.chars().count() > MAX_ID_CHARS {
        return Err(ApiError::invalid(
            "invalid_answer_id",
            format!("answer_id must be one of the response's answer ids (1 to {MAX_ID_CHARS} characters)"),
        ));
    }
    let comment = req
        .comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
    {
        return Err(ApiError::invalid(
            "comment_too_long",
            format!("comment is longer than {MAX_COMMENT_CHARS} characters"),
        ));
    }
    let input = FeedbackInput {
        request_id,
        answer_id,
        helpful: req.helpful,
        resolved: req.resolved,
        comment,
    };
    let analytics = state.analytics()?;
    let engine = state.engine()?;
    let stored = blocking(move || {
        let stored = analytics.record_feedback(&input).map_err(|e| match e {
            FeedbackError::UnknownRequest(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_request",
                format!(
                    "no logged response has request_id '{id}' (it may be older than the log's retention)"
                ),
            ),
            FeedbackError::AnswerNotShown {
                request_id,
                answer_id,
                shown,
            } => ApiError::invalid(
                "answer_not_shown",
                format!("answer '{answer_id}' was not among the answers of request '{request_id}'"),
            )
            .with_details(serde_json::json!({"shown": shown})),
            FeedbackError::Db(e) => e.into(),
        })?;
        // Keep the feedback boost's counts current (only when it is on).
        if engine.settings().feedback_boost > 0.0 {
            match analytics.helpful_counts(Some(&stored.answer_id)) {
                Ok(counts) => {
                    for (id, (helpful, total)) in counts {
                        engine.set_feedback_count(&id, helpful, total);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "refreshing feedback counts failed"),
            }
        }
        Ok(stored)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(stored).unwrap_or_default()),
    )
        .into_response())
}

/// The query string of volume, answers and content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowParams {
    window: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
}

/// The query string of hot and unanswered.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterParams {
    window: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    /// Cosine threshold of the clustering.
    threshold: Option<f32>,
}

fn query<T>(p: Result<UrlQuery<T>, QueryRejection>) -> Result<T, ApiError> {
    p.map(|UrlQuery(p)| p)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// What every report handler starts from: the window and row limit of its
/// query string, checked, and the stores it reads.
struct ReportInputs {
    window: Window,
    limit: usize,
    analytics: Arc<Analytics>,
    engine: Arc<Engine>,
}

impl ReportInputs {
    fn new(
        state: &AppState,
        window: &Option<String>,
        since: &Option<String>,
        until: &Option<String>,
        limit: Option<i64>,
    ) -> Result<Self, ApiError> {
        let window = Window::parse(
            window.as_deref(),
            since.as_deref(),
            until.as_deref(),
            OffsetDateTime::now_utc(),
        )
        .map_err(|m| ApiError::invalid("invalid_window", m))?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "invalid_limit",
                format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
            ));
        }
        Ok(Self {
            window,
            limit: limit as usize,
            analytics: state.analytics()?,
            engine: state.engine()?,
        })
    }
}

impl WindowParams {
    fn inputs(&self, state: &AppState) -> Result<ReportInputs, ApiError> {
        ReportInputs::new(state, &self.window, &self.since, &self.until, self.limit)
    }
}

fn lookup(engine: &Engine) -> impl Fn(&str) -> Option<AnswerInfo> + '_ {
    move |id| {
        engine.get(id).map(|a| AnswerInfo {
            question: a.input.question.clone(),
            category: a.input.category.clone(),
        })
    }
}

fn json<T: serde::Serialize>(v: T) -> Json<serde_json::Value> {
    Json(serde_json::to_value(v).unwrap_or_default())
}

async fn cluster_report(
    state: Arc<AppState>,
    p: ClusterParams,
    scope: Scope,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = ReportInputs::new(&state, &p.window, &p.since, &p.until, p.limit)?;
    let threshold = p.threshold.unwrap_or(report::DEFAULT_CLUSTER_THRESHOLD);
    if !(0.05..=0.99).contains(&threshold) {
        return Err(ApiError::invalid(
            "invalid_threshold",
            "threshold must be between 0.05 and 0.99",
        ));
    }
    blocking(move || {
        let opts = ClusterOptions {
            threshold,
            limit: r.limit,
            ..ClusterOptions::default()
        };
        Ok(json(report::clusters(
            &r.analytics.reader()?,
            &r.window,
            scope,
            opts,
            &lookup(&r.engine),
        )?))
    })
    .await
}

pub async fn hot(
    State(state): State<Arc<AppState>>,
    p: Result<UrlQuery<ClusterParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    cluster_report(state, query(p)?, Scope::All).await
}

pub async fn unanswered(
    State(state): State<Arc<AppState>>,
    p: Result<UrlQuery<ClusterParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    cluster_report(state, query(p)?, Scope::Unanswered).await
}

pub async fn volume(
    State(state): State<Arc<AppState>>,
    p: Result<UrlQuery<WindowParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = query(p)?.inputs(&state)?;
    blocking(move || Ok(json(report::volume(&r.analytics.reader()?, &r.window)?))).await
}

pub async fn answers(
    State(state): State<Arc<AppState>>,
    p: Result<UrlQuery<WindowParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = query(p)?.inputs(&state)?;
    blocking(move || {
        Ok(json(report::answer_usage(
            &r.analytics.reader()?,
            &r.window,
            &r.analytics.settings().flags,
            r.limit,
            &lookup(&r.engine),
        )?))
    })
    .await
}

pub async fn content(
    State(state): State<Arc<AppState>>,
    p: Result<UrlQuery<WindowParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = query(p)?.inputs(&state)?;
    blocking(move || {
        let answers = r.engine.list();
        Ok(json(report::content(
            &r.analytics.reader()?,
            &r.window,
            answers.iter().map(|a| a.as_ref()),
            OffsetDateTime::now_utc(),
            &r.engine.settings().age,
            r.limit,
        )?))
    })
    .await
}
