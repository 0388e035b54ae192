//! Freshness of an answer at a moment: `expired` (past `valid_until`, or not
//! yet `valid_from`), `pending_reindex` (its texts changed after its vectors
//! were computed, or it was never indexed), `stale` (past `review_after`, or
//! older than the configured maximum age), else `fresh`. `status` is the most
//! severe flag; `flags` lists all that apply.

use std::collections::HashMap;

use serde::Serialize;
use time::OffsetDateTime;

use crate::store::{rfc3339, Answer};

/// One freshness flag, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    Expired,
    PendingReindex,
    Stale,
    Fresh,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::PendingReindex => "pending_reindex",
            Self::Stale => "stale",
            Self::Fresh => "fresh",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "expired" => Some(Self::Expired),
            "pending_reindex" => Some(Self::PendingReindex),
            "stale" => Some(Self::Stale),
            "fresh" => Some(Self::Fresh),
            _ => None,
        }
    }
}

/// Age limits after which an answer counts as stale.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgePolicy {
    /// Days since the last update after which any answer is stale.
    pub max_age_days: Option<u32>,
    /// Per-category overrides of `max_age_days`.
    pub by_category: HashMap<String, u32>,
}

/// The freshness report of one answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    pub status: Flag,
    pub flags: Vec<Flag>,
    pub updated_at: String,
    pub indexed_at: Option<String>,
    pub review_after: Option<String>,
    pub valid_until: Option<String>,
    pub age_days: i64,
}

/// Is the answer outside its validity window at `now`?
pub fn is_expired(a: &Answer, now: OffsetDateTime) -> bool {
    a.input.valid_until.is_some_and(|t| t <= now) || a.input.valid_from.is_some_and(|t| t > now)
}

/// Is the answer past review or too old at `now`?
pub fn is_stale(a: &Answer, now: OffsetDateTime, policy: &AgePolicy) -> bool {
    let age = (now - a.updated_at).whole_days();
    let limit = policy
        .by_category
        .get(&a.input.category)
        .copied()
        .or(policy.max_age_days);
    a.input.review_after.is_some_and(|t| t <= now) || limit.is_some_and(|d| age > d as i64)
}

/// Have the answer's texts changed since its vectors were computed?
pub fn is_pending(a: &Answer) -> bool {
    a.indexed_hash.as_deref() != Some(a.input.text_hash().as_str())
}

/// The full report.
pub fn assess(a: &Answer, now: OffsetDateTime, policy: &AgePolicy) -> Freshness {
    let mut flags = Vec::new();
    if is_expired(a, now) {
        flags.push(Flag::Expired);
    }
    if is_pending(a) {
        flags.push(Flag::PendingReindex);
    }
    if is_stale(a, now, policy) {
        flags.push(Flag::Stale);
    }
    if flags.is_empty() {
        flags.push(Flag::Fresh);
    }
    Freshness {
        status: flags[0],
        flags,
        updated_at: rfc3339(a.updated_at),
        indexed_at: a.indexed_at.map(rfc3339),
        review_after: a.input.review_after.map(rfc3339),
        valid_until: a.input.valid_until.map(rfc3339),
        age_days: (now - a.updated_at).whole_days(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnswerDraft;
    use time::macros::datetime;

    fn answer(extra: serde_json::Value) -> Answer {
        let mut j = serde_json::json!({"id": "a", "question": "q", "answer": "x",
            "category": "promotion", "locale": "en"});
        j.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let input = serde_json::from_value::<AnswerDraft>(j)
            .unwrap()
            .validate(None)
            .unwrap();
        let hash = input.text_hash();
        Answer {
            input,
            version: 1,
            created_at: datetime!(2026-01-01 0:00 UTC),
            updated_at: datetime!(2026-01-01 0:00 UTC),
            indexed_at: Some(datetime!(2026-01-02 0:00 UTC)),
            indexed_hash: Some(hash),
        }
    }

    #[test]
    fn each_state_and_the_most_severe_wins() {
        let now = datetime!(2026-11-23 0:00 UTC);
        let p = AgePolicy::default();
        assert_eq!(
            assess(&answer(serde_json::json!({})), now, &p).flags,
            vec![Flag::Fresh]
        );
        let expired = answer(serde_json::json!({"valid_until": "2025-11-12T00:00:00+08:00"}));
        assert_eq!(assess(&expired, now, &p).status, Flag::Expired);
        let future = answer(serde_json::json!({"valid_from": "2099-01-01T00:00:00+08:00"}));
        assert!(is_expired(&future, now));
        let mut stale = answer(serde_json::json!({"review_after": "2026-06-30T00:00:00+08:00"}));
        assert_eq!(assess(&stale, now, &p).flags, vec![Flag::Stale]);
        stale.input.answer.push('!');
        assert_eq!(
            assess(&stale, now, &p).flags,
            vec![Flag::PendingReindex, Flag::Stale]
        );
        let old = answer(serde_json::json!({}));
        let policy = AgePolicy {
            max_age_days: Some(400),
            by_category: [("promotion".to_string(), 30)].into(),
        };
        assert_eq!(assess(&old, now, &policy).status, Flag::Stale);
        assert_eq!(assess(&old, now, &policy).age_days, 326);
    }
}
