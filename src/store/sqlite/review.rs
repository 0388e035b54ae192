//! The review queue and the editors' tag relations in SQLite.
//!
//! `review_items`: one row per question sent to review (its text already
//! masked by the caller), with the question's vector (to use a confirmed
//! label without re-embedding; it belongs to `model_id`), the prediction,
//! how often and when it was seen, and the editors' decision. A question
//! whose normalised text is already pending is counted on that row, not
//! added again (a partial unique index on the key of pending rows).
//!
//! `tag_relations`: symmetric editor-set relations between tags, one row
//! per pair with `a < b`.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{bytes_vector, vector_bytes, SqliteStore, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS review_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    question TEXT NOT NULL,
    question_key TEXT NOT NULL,
    model_id TEXT NOT NULL,
    vector BLOB NOT NULL,
    predicted TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    label TEXT,
    reviewed_at_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS review_items_pending_key
    ON review_items (question_key) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS review_items_status ON review_items (status, count, last_seen_ms);
CREATE TABLE IF NOT EXISTS tag_relations (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (a, b),
    CHECK (a < b)
);
";

/// Most pending items kept: beyond it new questions are not queued (ones
/// already pending are still counted).
pub const MAX_PENDING: i64 = 100_000;

/// A review item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Pending,
    Confirmed,
    Corrected,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Corrected => "corrected",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "confirmed" => Some(Self::Confirmed),
            "corrected" => Some(Self::Corrected),
            _ => None,
        }
    }
}

/// Labels an editor gave a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewLabel {
    pub category: String,
    #[serde(default)]
    pub subcategory: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The classification predicted for a question when it was (last) queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predicted {
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub tags: Vec<String>,
    pub confidence: f32,
}

/// A question to queue for review.
#[derive(Debug, Clone)]
pub struct NewReviewItem {
    /// The question, masked.
    pub question: String,
    /// The normalised masked question: one pending item per key.
    pub key: String,
    pub model_id: String,
    pub vector: Vec<f32>,
    pub predicted: Predicted,
    pub at: OffsetDateTime,
}

/// A stored review item.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewItem {
    pub id: i64,
    pub question: String,
    pub predicted: Predicted,
    pub count: i64,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    pub status: ReviewStatus,
    pub label: Option<ReviewLabel>,
    pub reviewed_at: Option<OffsetDateTime>,
}

/// A decided item and, when it was embedded by the model asked about, its vector.
pub type Decided = (ReviewItem, Option<Vec<f32>>);

/// A reviewed question's label with its vector, for classification.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledVector {
    pub id: i64,
    pub vector: Vec<f32>,
    pub label: ReviewLabel,
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

const ITEM_COLUMNS: &str = "id, question, predicted, count, first_seen_ms, last_seen_ms, status, \
    label, reviewed_at_ms";

fn row_to_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ReviewItem, StoreError>> {
    let id: i64 = row.get(0)?;
    let question: String = row.get(1)?;
    let predicted: String = row.get(2)?;
    let count: i64 = row.get(3)?;
    let first: i64 = row.get(4)?;
    let last: i64 = row.get(5)?;
    let status: String = row.get(6)?;
    let label: Option<String> = row.get(7)?;
    let reviewed: Option<i64> = row.get(8)?;
    Ok((|| {
        let corrupt =
            |what: &str, e: String| StoreError::Corrupt(format!("review item {id}: {what}: {e}"));
        Ok(ReviewItem {
            id,
            question,
            predicted: serde_json::from_str(&predicted)
                .map_err(|e| corrupt("prediction", e.to_string()))?,
            count,
            first_seen: from_ms(first),
            last_seen: from_ms(last),
            status: ReviewStatus::parse(&status)
                .ok_or_else(|| corrupt("status", status.clone()))?,
            label: label
                .map(|l| serde_json::from_str(&l).map_err(|e| corrupt("label", e.to_string())))
                .transpose()?,
            reviewed_at: reviewed.map(from_ms),
        })
    })())
}

/// Orders a pair of tags as stored (`a < b`).
fn pair(x: &str, y: &str) -> (String, String) {
    if x < y {
        (x.to_string(), y.to_string())
    } else {
        (y.to_string(), x.to_string())
    }
}

impl SqliteStore {
    /// Queues questions for review in one transaction: a question whose key
    /// is already pending is counted there (count + 1, last seen; the text,
    /// vector and prediction stay those of the first sighting, so a label
    /// given later sits on the question shown); a new one is added unless
    /// [`MAX_PENDING`] items are pending. Returns how many new items were
    /// added.
    pub fn review_add(&self, items: &[NewReviewItem]) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut added = 0;
        {
            let mut pending: i64 = tx.query_row(
                "SELECT COUNT(*) FROM review_items WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )?;
            let mut bump = tx.prepare_cached(
                "UPDATE review_items SET count = count + 1, last_seen_ms = MAX(last_seen_ms, ?2) \
                 WHERE question_key = ?1 AND status = 'pending'",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO review_items (question, question_key, model_id, vector, predicted, \
                 count, first_seen_ms, last_seen_ms, status) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6, 'pending')",
            )?;
            for it in items {
                let predicted = serde_json::to_string(&it.predicted)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let at = ms(it.at);
                let bumped = bump.execute(params![it.key, at])?;
                if bumped == 0 && pending < MAX_PENDING {
                    insert.execute(params![
                        it.question,
                        it.key,
                        it.model_id,
                        vector_bytes(&it.vector),
                        predicted,
                        at
                    ])?;
                    pending += 1;
                    added += 1;
                }
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// A page of review items (all statuses when `status` is None), most
    /// frequent first, then most recently seen, then newest; and how many
    /// items match in all.
    pub fn review_list(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<ReviewItem>, usize), StoreError> {
        let conn = self.conn();
        let status = status.map(ReviewStatus::as_str);
        let total: i64 = conn.query_row(
            "SELECT COUNT(*) FROM review_items WHERE ?1 IS NULL OR status = ?1",
            [status],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS} FROM review_items WHERE ?1 IS NULL OR status = ?1 \
             ORDER BY count DESC, last_seen_ms DESC, id DESC LIMIT ?2 OFFSET ?3"
        ))?;
        let rows = stmt.query_map(
            params![
                status,
                i64::try_from(limit).unwrap_or(i64::MAX),
                i64::try_from(offset).unwrap_or(i64::MAX)
            ],
            row_to_item,
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok((out, total.max(0) as usize))
    }

    /// One review item.
    pub fn review_get(&self, id: i64) -> Result<Option<ReviewItem>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS} FROM review_items WHERE id = ?1"
        ))?;
        match stmt.query_row([id], row_to_item).optional()? {
            Some(r) => Ok(Some(r?)),
            None => Ok(None),
        }
    }

    /// Records an editor's decision on an item; None when there is no such
    /// item. Returns the updated item and, when it was embedded by
    /// `model_id`, its vector.
    pub fn review_decide(
        &self,
        id: i64,
        status: ReviewStatus,
        label: &ReviewLabel,
        model_id: &str,
        at: OffsetDateTime,
    ) -> Result<Option<Decided>, StoreError> {
        let label = serde_json::to_string(label).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE review_items SET status = ?2, label = ?3, reviewed_at_ms = ?4 WHERE id = ?1",
            params![id, status.as_str(), label, ms(at)],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        let item = match tx
            .query_row(
                &format!("SELECT {ITEM_COLUMNS} FROM review_items WHERE id = ?1"),
                [id],
                row_to_item,
            )
            .optional()?
        {
            Some(r) => r?,
            None => return Ok(None),
        };
        let vector: Option<Vec<u8>> = tx
            .query_row(
                "SELECT vector FROM review_items WHERE id = ?1 AND model_id = ?2",
                params![id, model_id],
                |r| r.get(0),
            )
            .optional()?;
        tx.commit()?;
        Ok(Some((item, vector.map(|b| bytes_vector(&b)))))
    }

    /// Every confirmed or corrected label whose vector was computed by `model_id`.
    pub fn review_labels(&self, model_id: &str) -> Result<Vec<LabelledVector>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, vector, label FROM review_items \
             WHERE status IN ('confirmed', 'corrected') AND label IS NOT NULL AND model_id = ?1 \
             ORDER BY id",
        )?;
        let rows = stmt.query_map([model_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, vector, label) = r?;
            let label = serde_json::from_str(&label)
                .map_err(|e| StoreError::Corrupt(format!("review item {id}: label: {e}")))?;
            out.push(LabelledVector {
                id,
                vector: bytes_vector(&vector),
                label,
            });
        }
        Ok(out)
    }

    /// Every editor-set tag relation, each pair once (`a < b`).
    pub fn tag_relations(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT a, b FROM tag_relations ORDER BY a, b")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }

    /// Replaces the tags related to `tag` (both directions) by `related`, in
    /// one transaction; returns them sorted. `related` must not hold `tag`.
    pub fn set_related_tags(
        &self,
        tag: &str,
        related: &[String],
        at: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM tag_relations WHERE a = ?1 OR b = ?1", [tag])?;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO tag_relations (a, b, created_ms) VALUES (?1, ?2, ?3)",
            )?;
            for r in related.iter().filter(|r| r.as_str() != tag) {
                let (a, b) = pair(tag, r);
                insert.execute(params![a, b, ms(at)])?;
            }
        }
        let mut out: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT b FROM tag_relations WHERE a = ?1 UNION SELECT a FROM tag_relations WHERE b = ?1",
            )?;
            let rows = stmt.query_map([tag], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.commit()?;
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(q: &str, key: &str, conf: f32, at: i64) -> NewReviewItem {
        NewReviewItem {
            question: q.into(),
            key: key.into(),
            model_id: "m".into(),
            vector: vec![0.6, 0.8],
            predicted: Predicted {
                category: Some("order".into()),
                subcategory: None,
                tags: vec!["订单".into()],
                confidence: conf,
            },
            at: OffsetDateTime::from_unix_timestamp(at).unwrap(),
        }
    }

    #[test]
    fn the_same_pending_question_is_counted_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let added = s
            .review_add(&[item("在吗", "在吗", 0.3, 100), item("x", "x", 0.2, 101)])
            .unwrap();
        assert_eq!(added, 2);
        let mut again = item("在吗?", "在吗", 0.35, 200);
        again.vector = vec![1.0, 0.0];
        assert_eq!(s.review_add(&[again]).unwrap(), 0);
        let (items, total) = s.review_list(Some(ReviewStatus::Pending), 10, 0).unwrap();
        assert_eq!(total, 2);
        // Most frequent first.
        assert_eq!(items[0].question, "在吗");
        assert_eq!(items[0].count, 2);
        assert_eq!(items[0].first_seen.unix_timestamp(), 100);
        assert_eq!(items[0].last_seen.unix_timestamp(), 200);
        // Text and prediction of the first sighting.
        assert_eq!(items[0].predicted.confidence, 0.3);
        assert_eq!(items[1].count, 1);
        // Paging.
        let (page, total) = s.review_list(None, 1, 1).unwrap();
        assert_eq!((page.len(), total, page[0].question.as_str()), (1, 2, "x"));

        // Once decided, the same question asked again is a new pending item.
        let label = ReviewLabel {
            category: "account".into(),
            subcategory: "login".into(),
            tags: vec![],
        };
        let (decided, vector) = s
            .review_decide(
                items[0].id,
                ReviewStatus::Corrected,
                &label,
                "m",
                OffsetDateTime::now_utc(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(decided.status, ReviewStatus::Corrected);
        assert_eq!(decided.label.as_ref(), Some(&label));
        assert_eq!(vector, Some(vec![0.6, 0.8]));
        assert_eq!(s.review_add(&[item("在吗", "在吗", 0.3, 300)]).unwrap(), 1);
        assert_eq!(
            s.review_list(Some(ReviewStatus::Pending), 10, 0).unwrap().1,
            2
        );
        assert_eq!(
            s.review_list(Some(ReviewStatus::Corrected), 10, 0)
                .unwrap()
                .1,
            1
        );
        let labels = s.review_labels("m").unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[0].label, label);
        assert!(s.review_labels("other-model").unwrap().is_empty());
        assert!(s
            .review_decide(
                9999,
                ReviewStatus::Confirmed,
                &label,
                "m",
                OffsetDateTime::now_utc()
            )
            .unwrap()
            .is_none());

        // Survives reopening.
        drop(s);
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.review_list(None, 10, 0).unwrap().1, 3);
        assert_eq!(s.review_get(decided.id).unwrap().unwrap(), decided);
    }

    #[test]
    fn tag_relations_are_symmetric_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let v = |x: &[&str]| {
            let mut v: Vec<String> = x.iter().map(|s| s.to_string()).collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(
            s.set_related_tags("退货", &v(&["退款", "运费", "退款"]), now)
                .unwrap(),
            v(&["运费", "退款"])
        );
        // Seen from the other side.
        assert_eq!(
            s.set_related_tags("退款", &v(&["退货", "发票"]), now)
                .unwrap(),
            v(&["发票", "退货"])
        );
        let mut expected = vec![
            pair("发票", "退款"),
            pair("运费", "退货"),
            pair("退款", "退货"),
        ];
        expected.sort();
        assert_eq!(s.tag_relations().unwrap(), expected);
        // Replacing drops the pairs not listed, in both directions.
        assert_eq!(
            s.set_related_tags("退货", &v(&["运费"]), now).unwrap(),
            v(&["运费"])
        );
        assert_eq!(
            s.set_related_tags("退款", &v(&["发票"]), now).unwrap(),
            v(&["发票"])
        );
        assert!(s.set_related_tags("运费", &[], now).unwrap().is_empty());
        assert_eq!(s.tag_relations().unwrap(), vec![pair("发票", "退款")]);
    }
}
