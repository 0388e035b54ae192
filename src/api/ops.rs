//! Operations: reindex jobs, index status, health, readiness, metrics and
//! the OpenAPI document.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{parse_json, ApiError};
use super::recommend::body;
use super::{blocking, AppState};
use crate::recommend::batcher::QueueError;
use crate::recommend::ReindexMode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReindexRequest {
    mode: Option<ReindexMode>,
}

pub async fn reindex(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw)?;
    let mode = if raw.iter().all(u8::is_ascii_whitespace) {
        ReindexMode::Incremental
    } else {
        parse_json::<ReindexRequest>(&raw)?
            .mode
            .unwrap_or(ReindexMode::Incremental)
    };
    let engine = state.engine()?;
    let job_id = engine.start_reindex(mode)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"job_id": job_id, "status": "queued"})),
    )
        .into_response())
}

pub async fn job(
    State(state): State<Arc<AppState>>,
    Path(job_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = state.engine()?;
    let job = engine
        .job(&job_id)
        .ok_or_else(|| ApiError::not_found(format!("no reindex job '{job_id}'")))?;
    Ok(Json(serde_json::to_value(job).unwrap_or_default()))
}

pub async fn index(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = state.engine()?;
    let ready = state.ready.load(Ordering::Acquire);
    let e2 = engine.clone();
    let status = blocking(move || Ok(e2.index_status())).await?;
    state.metrics.index_vectors.set(status.vectors as i64);
    state.metrics.index_answers.set(status.answers as i64);
    let mut v = serde_json::to_value(status).unwrap_or_default();
    let settings = engine.settings();
    v["min_confidence"] = serde_json::json!(super::recommend::round6(settings.min_confidence()));
    v["retrieval"] = serde_json::json!({
        "mode": settings.fusion.mode,
        "norm": settings.fusion.norm,
        "dense_weight": super::recommend::round6(settings.fusion.dense_weight),
        "question_kind": settings.question_kind.to_string(),
    });
    v["calibration"] = serde_json::to_value(&*settings.calibration()).unwrap_or_default();
    v["ready"] = serde_json::json!(ready);
    Ok(Json(v))
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = state.ready_engine()?;
    if !state.embed_queue()?.is_alive() {
        return Err(QueueError::Stopped.into());
    }
    let index = engine.index();
    Ok(Json(serde_json::json!({
        "ready": true,
        "model_id": engine.model_id(),
        "index_version": index.manifest().version,
    })))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if let Some(engine) = state.engine.load_full() {
        let index = engine.index();
        state.metrics.index_vectors.set(index.len() as i64);
        state
            .metrics
            .index_answers
            .set(engine.answer_count() as i64);
    }
    if let Some(queue) = state.queue.load_full() {
        state.metrics.queue_depth.set(queue.depth() as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
