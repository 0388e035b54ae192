//! The taxonomy over HTTP: `GET /v1/taxonomy` (reader) and
//! `PUT /v1/taxonomy/tags/{tag}/related` (editor).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;

use super::error::{parse_json, ApiError};
use super::recommend::body;
use super::{blocking, AppState};
use crate::recommend::review::MAX_LABEL_CHARS;
use crate::recommend::taxonomy::MAX_RELATED;

/// `GET /v1/taxonomy`.
pub async fn get(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = state.engine()?;
    let t = blocking(move || engine.taxonomy().map_err(ApiError::from)).await?;
    Ok(Json(serde_json::to_value(t).map_err(|e| {
        ApiError::internal(format!("taxonomy does not serialise: {e}"))
    })?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelatedBody {
    related: Option<Vec<String>>,
}

fn check_tag(tag: &str, what: &str) -> Result<(), ApiError> {
    if tag.is_empty() {
        return Err(ApiError::invalid(
            "invalid_tag",
            format!("{what} must not be empty or only whitespace"),
        ));
    }
    if tag.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::invalid(
            "invalid_tag",
            format!("{what} is longer than {MAX_LABEL_CHARS} characters"),
        ));
    }
    Ok(())
}

/// `PUT /v1/taxonomy/tags/{tag}/related` with `{"related": [...]}`:
/// replaces the tag's editor-set relations (symmetric) and returns
/// `{"tag", "related"}`.
pub async fn put_related(
    State(state): State<Arc<AppState>>,
    Path(tag): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tag = tag.trim().to_string();
    check_tag(&tag, "the tag")?;
    let b: RelatedBody = parse_json(&body(raw)?)?;
    let Some(list) = b.related else {
        return Err(ApiError::invalid(
            "missing_related",
            "give the related tags as {\"related\": [...]} (an empty list removes them all)",
        ));
    };
    if list.len() > MAX_RELATED {
        return Err(ApiError::invalid(
            "too_many_related",
            format!("at most {MAX_RELATED} related tags"),
        ));
    }
    let mut related: Vec<String> = Vec::new();
    for r in list.iter().map(|r| r.trim()) {
        check_tag(r, "each related tag")?;
        if r == tag {
            return Err(ApiError::invalid(
                "self_relation",
                format!("'{tag}' cannot be related to itself"),
            ));
        }
        if !related.iter().any(|x| x == r) {
            related.push(r.to_string());
        }
    }
    let engine = state.engine()?;
    let t = tag.clone();
    let related = blocking(move || {
        engine
            .set_related_tags(&t, &related)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(serde_json::json!({"tag": tag, "related": related})))
}
