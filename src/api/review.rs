//! The review queue over HTTP (editor role): `GET /v1/review` lists
//! questions classified with low confidence, `POST /v1/review/{id}` confirms
//! or corrects one. Also the JSON form of a classification, used by
//! recommend's responses.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{parse_json, ApiError};
use super::recommend::{body, round6};
use super::{blocking, AppState};
use crate::recommend::review::{Decided, Decision, MAX_LABEL_CHARS, MAX_LABEL_TAGS};
use crate::recommend::Classification;
use crate::store::{rfc3339, Predicted, ReviewItem, ReviewLabel, ReviewStatus};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// `{"category", "subcategory", "tags", "confidence"}`.
pub fn classification_json(c: &Classification) -> serde_json::Value {
    serde_json::json!({
        "category": c.category,
        "subcategory": c.subcategory,
        "tags": c.tags,
        "confidence": round6(c.confidence),
    })
}

fn predicted_json(p: &Predicted) -> serde_json::Value {
    serde_json::json!({
        "category": p.category,
        "subcategory": p.subcategory,
        "tags": p.tags,
        "confidence": round6(p.confidence),
    })
}

fn label_json(l: &ReviewLabel) -> serde_json::Value {
    serde_json::json!({
        "category": l.category,
        "subcategory": (!l.subcategory.is_empty()).then_some(&l.subcategory),
        "tags": l.tags,
    })
}

fn item_json(it: &ReviewItem) -> serde_json::Value {
    serde_json::json!({
        "id": it.id,
        "question": it.question,
        "predicted": predicted_json(&it.predicted),
        "count": it.count,
        "first_seen": rfc3339(it.first_seen),
        "last_seen": rfc3339(it.last_seen),
        "status": it.status.as_str(),
        "label": it.label.as_ref().map(label_json),
        "reviewed_at": it.reviewed_at.map(rfc3339),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /v1/review?status=pending|confirmed|corrected|all&limit=&offset=`:
/// most frequent first, then most recently seen.
pub async fn list(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let status = match p.status.as_deref().unwrap_or("pending") {
        "all" => None,
        s => Some(ReviewStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_status",
                "status must be pending, confirmed, corrected or all",
            )
        })?),
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid(
            "invalid_offset",
            "offset must be 0 or more",
        ));
    }
    let engine = state.engine()?;
    let (items, total) = blocking(move || {
        engine
            .review_list(status, limit as usize, offset as usize)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(serde_json::json!({
        "items": items.iter().map(item_json).collect::<Vec<_>>(),
        "total": total,
    })))
}

/// The decision body; every field optional so that problems get 422 codes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    action: Option<String>,
    category: Option<String>,
    subcategory: Option<String>,
    tags: Option<Vec<String>>,
}

/// Trims and checks a label: category 1-64 characters, subcategory at most
/// 64, at most 32 tags of 1-64 characters (duplicates dropped).
pub fn validate_label(
    category: Option<String>,
    subcategory: Option<String>,
    tags: Option<Vec<String>>,
) -> Result<ReviewLabel, ApiError> {
    let category = category.map(|c| c.trim().to_string()).unwrap_or_default();
    if category.is_empty() {
        return Err(ApiError::invalid(
            "invalid_category",
            "a correction needs a non-empty category",
        ));
    }
    if category.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::invalid(
            "invalid_category",
            format!("category is longer than {MAX_LABEL_CHARS} characters"),
        ));
    }
    let subcategory = subcategory
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if subcategory.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::invalid(
            "invalid_subcategory",
            format!("subcategory is longer than {MAX_LABEL_CHARS} characters"),
        ));
    }
    let raw = tags.unwrap_or_default();
    if raw.len() > MAX_LABEL_TAGS {
        return Err(ApiError::invalid(
            "invalid_tags",
            format!("at most {MAX_LABEL_TAGS} tags"),
        ));
    }
    let mut tags: Vec<String> = Vec::new();
    for t in raw.iter().map(|t| t.trim()) {
        if t.is_empty() || t.chars().count() > MAX_LABEL_CHARS {
            return Err(ApiError::invalid(
                "invalid_tags",
                format!("each tag must be 1-{MAX_LABEL_CHARS} characters"),
            ));
        }
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    Ok(ReviewLabel {
        category,
        subcategory,
        tags,
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "review_item_not_found",
        format!("no review item with id '{id}'"),
    )
}

/// `POST /v1/review/{id}` with `{"action": "confirm"}` or
/// `{"action": "correct", "category", "subcategory", "tags"}`.
pub async fn decide(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let numeric = id.parse::<i64>().ok().filter(|n| *n > 0);
    let Some(n) = numeric else {
        return Err(ApiError::bad_request(
            "invalid_id",
            "a review item id is a positive whole number",
        ));
    };
    let b: DecisionBody = parse_json(&body(raw)?)?;
    let decision = match b.action.as_deref().map(str::trim) {
        Some("confirm") => {
            if b.category.is_some() || b.subcategory.is_some() || b.tags.is_some() {
                return Err(ApiError::invalid(
                    "unexpected_label",
                    "confirm accepts the prediction and takes no label: use \"action\": \"correct\" to give one",
                ));
            }
            Decision::Confirm
        }
        Some("correct") => Decision::Correct(validate_label(b.category, b.subcategory, b.tags)?),
        _ => {
            return Err(ApiError::invalid(
                "invalid_action",
                "action must be \"confirm\" or \"correct\"",
            ))
        }
    };
    let engine = state.engine()?;
    match blocking(move || engine.review_decide(n, decision).map_err(ApiError::from)).await? {
        Decided::Updated(item) => Ok(Json(item_json(&item))),
        Decided::NotFound => Err(not_found(&id)),
        Decided::NothingToConfirm => Err(ApiError::invalid(
            "nothing_to_confirm",
            "this question was predicted no category: correct it instead",
        )),
    }
}
