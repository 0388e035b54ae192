//! The answer library over HTTP: upsert (one, an array, or
//! `{"answers": [...]}`), read, list with filters and a cursor, replace,
//! delete; related answers (editor links, then the nearest answers).

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use time::OffsetDateTime;

use super::error::{json_error, parse_json, ApiError};
use super::recommend::{body, round6};
use super::{blocking, AppState};
use crate::recommend::{Engine, Flag, RelatedSource};
use crate::store::{
    answer_json, valid_id, Answer, AnswerDraft, AnswerInput, Link, LinksOutcome, Status,
    UpsertOutcome,
};

const MAX_BATCH: usize = 10_000;

fn with_freshness(engine: &Engine, a: &Answer, now: OffsetDateTime) -> serde_json::Value {
    let mut v = answer_json(a);
    v["freshness"] = serde_json::to_value(engine.freshness(a, now)).unwrap_or_default();
    v
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_id",
            "an answer id is 1-128 characters of A-Z a-z 0-9 . _ : -",
        ))
    }
}

pub async fn upsert(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let value: serde_json::Value = parse_json(&body(raw)?)?;
    let records = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut o) if o.len() == 1 && o.contains_key("answers") => {
            match o.remove("answers") {
                Some(serde_json::Value::Array(items)) => items,
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_type",
                        "\"answers\" must be an array of answers",
                    ))
                }
            }
        }
        obj @ serde_json::Value::Object(_) => vec![obj],
        _ => {
            return Err(ApiError::bad_request(
                "invalid_type",
                "the body must be an answer, an array of answers, or {\"answers\": [...]}",
            ))
        }
    };
    if records.is_empty() {
        return Err(ApiError::invalid("no_answers", "no answers were given"));
    }
    if records.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "too_many_answers",
            format!("at most {MAX_BATCH} answers per request"),
        ));
    }
    let mut valid: Vec<AnswerInput> = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (index, record) in records.into_iter().enumerate() {
        let id_hint = record
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let parsed = serde_json::from_value::<AnswerDraft>(record)
            .map_err(|e| vec![serde_json::json!({"field": null, "message": json_error(e).message})])
            .and_then(|d| {
                d.validate(None)
                    .map_err(|errs| errs.iter().map(|e| serde_json::json!(e)).collect())
            });
        match parsed {
            Ok(input) if !seen.insert(input.id.clone()) => errors.push(serde_json::json!({
                "index": index, "id": input.id,
                "errors": [{"field": "id", "message": "appears more than once in this request"}],
            })),
            Ok(input) => valid.push(input),
            Err(errs) => {
                errors.push(serde_json::json!({"index": index, "id": id_hint, "errors": errs}))
            }
        }
    }
    if valid.is_empty() {
        return Err(
            ApiError::invalid("invalid_answers", "no answer in the request is valid")
                .with_details(serde_json::json!(errors)),
        );
    }
    let engine = state.engine()?;
    let stored = blocking(move || engine.upsert(&valid).map_err(ApiError::from)).await?;
    let stored: Vec<serde_json::Value> = stored
        .iter()
        .map(|(a, outcome)| {
            serde_json::json!({"id": a.input.id, "version": a.version, "outcome": outcome})
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((
        status,
        Json(serde_json::json!({"stored": stored, "errors": errors})),
    )
        .into_response())
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_id(&id)?;
    let engine = state.engine()?;
    let a = engine
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no answer with id '{id}'")))?;
    Ok(Json(with_freshness(&engine, &a, OffsetDateTime::now_utc())))
}

pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let draft: AnswerDraft = parse_json(&body(raw)?)?;
    let input = draft.validate(Some(&id)).map_err(|errs| {
        ApiError::invalid("invalid_answer", "the answer has invalid fields")
            .with_details(serde_json::json!(errs))
    })?;
    let engine = state.engine()?;
    let e2 = engine.clone();
    let mut stored = blocking(move || e2.upsert(&[input]).map_err(ApiError::from)).await?;
    let (a, outcome) = stored
        .pop()
        .ok_or_else(|| ApiError::internal("nothing stored"))?;
    let status = if outcome == UpsertOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(with_freshness(&engine, &a, OffsetDateTime::now_utc())),
    )
        .into_response())
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_id(&id)?;
    let engine = state.engine()?;
    let id2 = id.clone();
    if blocking(move || engine.delete(&id2).map_err(ApiError::from)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no answer with id '{id}'")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    category: Option<String>,
    tag: Option<String>,
    locale: Option<String>,
    status: Option<String>,
    freshness: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            "limit must be between 1 and 500",
        ));
    }
    let status = p
        .status
        .as_deref()
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_status",
                    "status must be published, draft or archived",
                )
            })
        })
        .transpose()?;
    let freshness = p
        .freshness
        .as_deref()
        .map(|s| {
            Flag::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_freshness",
                    "freshness must be fresh, stale, expired or pending_reindex",
                )
            })
        })
        .transpose()?;
    if let Some(c) = &p.cursor {
        check_id(c)?;
    }
    let engine = state.engine()?;
    let now = OffsetDateTime::now_utc();
    let mut page = Vec::new();
    let mut next_cursor = None;
    for a in engine.list() {
        let i = &a.input;
        if p.cursor
            .as_ref()
            .is_some_and(|c| i.id.as_str() <= c.as_str())
            || p.category.as_ref().is_some_and(|c| &i.category != c)
            || p.tag.as_ref().is_some_and(|t| !i.tags.contains(t))
            || p.locale.as_ref().is_some_and(|l| &i.locale != l)
            || status.is_some_and(|s| i.status != s)
        {
            continue;
        }
        let f = engine.freshness(&a, now);
        if freshness.is_some_and(|want| !f.flags.contains(&want)) {
            continue;
        }
        if page.len() == limit as usize {
            next_cursor = page
                .last()
                .and_then(|v: &serde_json::Value| v["id"].as_str().map(str::to_string));
            break;
        }
        page.push(with_freshness(&engine, &a, now));
    }
    Ok(Json(
        serde_json::json!({"answers": page, "next_cursor": next_cursor}),
    ))
}

// ---------------------------------------------------------------------------
// Related answers.

const DEFAULT_RELATED_K: i64 = 5;
const MAX_RELATED_K: i64 = 50;
/// Most links an editor may set on one answer.
pub const MAX_LINKS: usize = 20;
/// Longest note on a link, in characters.
pub const MAX_NOTE_CHARS: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelatedParams {
    k: Option<i64>,
}

/// `GET /v1/answers/{id}/related?k=5`: the editor's links first, then the
/// nearest answers in the vector index; `k` caps the whole list.
pub async fn related(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    params: Result<Query<RelatedParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_id(&id)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let k = p.k.unwrap_or(DEFAULT_RELATED_K);
    if !(1..=MAX_RELATED_K).contains(&k) {
        return Err(ApiError::invalid(
            "invalid_k",
            format!("k must be between 1 and {MAX_RELATED_K}, got {k}"),
        ));
    }
    let engine = state.ready_engine()?;
    let id2 = id.clone();
    let related = blocking(move || engine.related(&id2, k as usize).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no answer with id '{id}'")))?;
    let items: Vec<serde_json::Value> = related
        .iter()
        .map(|r| {
            let a = &r.answer.input;
            let mut v = serde_json::json!({
                "answer_id": a.id,
                "question": a.question,
                "category": a.category,
                "subcategory": a.subcategory,
            });
            match &r.source {
                RelatedSource::Link { note } => {
                    v["score"] = serde_json::Value::Null;
                    v["source"] = "link".into();
                    v["note"] = serde_json::json!(note);
                }
                RelatedSource::Similar { score } => {
                    v["score"] = serde_json::json!(round6(*score));
                    v["source"] = "similar".into();
                }
            }
            v
        })
        .collect();
    Ok(Json(serde_json::json!({"answer_id": id, "related": items})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksBody {
    links: Vec<LinkBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    answer_id: String,
    #[serde(default)]
    note: Option<String>,
}

fn links_json(id: &str, links: &[Link]) -> serde_json::Value {
    let links: Vec<serde_json::Value> = links
        .iter()
        .map(|l| serde_json::json!({"answer_id": l.answer_id, "note": l.note}))
        .collect();
    serde_json::json!({"answer_id": id, "links": links})
}

fn unknown_related(index: usize, answer_id: &str) -> ApiError {
    ApiError::invalid(
        "unknown_related_answer",
        format!("links[{index}]: no answer with id '{answer_id}'"),
    )
    .with_details(serde_json::json!({"index": index, "answer_id": answer_id}))
}

/// `PUT /v1/answers/{id}/related`: replaces the editor's links (at most
/// [`MAX_LINKS`], each to an existing other answer, no repeats).
pub async fn put_related(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_id(&id)?;
    let req: LinksBody = parse_json(&body(raw)?)?;
    if req.links.len() > MAX_LINKS {
        return Err(ApiError::invalid(
            "too_many_links",
            format!(
                "at most {MAX_LINKS} links per answer, got {}",
                req.links.len()
            ),
        ));
    }
    let engine = state.engine()?;
    if engine.get(&id).is_none() {
        return Err(ApiError::not_found(format!("no answer with id '{id}'")));
    }
    let mut seen = HashSet::new();
    let mut links = Vec::with_capacity(req.links.len());
    for (index, l) in req.links.into_iter().enumerate() {
        if !valid_id(&l.answer_id) {
            return Err(ApiError::invalid(
                "unknown_related_answer",
                format!(
                    "links[{index}].answer_id is not an answer id \
                     (1-128 characters of A-Z a-z 0-9 . _ : -)"
                ),
            )
            .with_details(serde_json::json!({"index": index})));
        }
        if l.answer_id == id {
            return Err(ApiError::invalid(
                "self_link",
                format!("links[{index}]: an answer cannot be related to itself"),
            )
            .with_details(serde_json::json!({"index": index, "answer_id": l.answer_id})));
        }
        if engine.get(&l.answer_id).is_none() {
            return Err(unknown_related(index, &l.answer_id));
        }
        if !seen.insert(l.answer_id.clone()) {
            return Err(ApiError::invalid(
                "duplicate_link",
                format!("links[{index}]: '{}' is linked twice", l.answer_id),
            )
            .with_details(serde_json::json!({"index": index, "answer_id": l.answer_id})));
        }
        let note = l
            .note
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());
        if note
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
        {
            return Err(ApiError::invalid(
                "note_too_long",
                format!("links[{index}].note is over {MAX_NOTE_CHARS} characters"),
            )
            .with_details(serde_json::json!({"index": index})));
        }
        links.push(Link {
            answer_id: l.answer_id,
            note,
        });
    }
    let (id2, links2) = (id.clone(), links.clone());
    let outcome = blocking(move || engine.set_links(&id2, &links2).map_err(ApiError::from)).await?;
    match outcome {
        LinksOutcome::Stored => Ok(Json(links_json(&id, &links))),
        // Deleted between the checks above and the write.
        LinksOutcome::UnknownAnswer => {
            Err(ApiError::not_found(format!("no answer with id '{id}'")))
        }
        LinksOutcome::UnknownRelated(r) => {
            let index = links.iter().position(|l| l.answer_id == r).unwrap_or(0);
            Err(unknown_related(index, &r))
        }
    }
}
