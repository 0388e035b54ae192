//! [`SqliteStore`]: the answer library, the embedding cache and index
//! bookkeeping in one SQLite database (`kefu.db` in the data directory).
//!
//! Invariants: every write is one transaction (a batch of answers is stored
//! whole or not at all); WAL journaling, so a killed process loses no
//! committed answer; vectors are cached by (model id, kind, text hash), so a
//! restart never re-embeds and a model change shows as a cache miss.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::answer::{rfc3339, Answer, AnswerInput, Status};

pub mod review;

/// Errors from the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the data directory {0} is in use by another kefu process (a running `kefu serve`, \
         import or reindex): stop it first, or change answers through the HTTP API"
    )]
    Locked(String),
}

/// What an upsert did to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpsertOutcome {
    Created,
    Updated,
    Unchanged,
}

/// An editor-set link from one answer to a related one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub answer_id: String,
    pub note: Option<String>,
}

/// What [`SqliteStore::set_links`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinksOutcome {
    /// The list was replaced.
    Stored,
    /// The answer itself does not exist; nothing changed.
    UnknownAnswer,
    /// A linked answer does not exist; nothing changed.
    UnknownRelated(String),
}

/// The SQLite-backed store. One connection behind a mutex: SQLite
/// serialises writers anyway, and reads on the request path use the
/// in-memory catalog instead.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Held for the store's lifetime by writers: one writer per data directory.
    _lock: Option<std::fs::File>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS answers (
    id TEXT PRIMARY KEY,
    question TEXT NOT NULL,
    variants TEXT NOT NULL,
    answer TEXT NOT NULL,
    category TEXT NOT NULL,
    subcategory TEXT NOT NULL,
    tags TEXT NOT NULL,
    locale TEXT NOT NULL,
    status TEXT NOT NULL,
    valid_from TEXT,
    valid_until TEXT,
    review_after TEXT,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    indexed_hash TEXT,
    indexed_at TEXT
);
CREATE TABLE IF NOT EXISTS embeddings (
    model_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model_id, kind, text_hash)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS answer_links (
    answer_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    related_id TEXT NOT NULL,
    note TEXT,
    PRIMARY KEY (answer_id, related_id)
);
CREATE INDEX IF NOT EXISTS answer_links_related ON answer_links (related_id);
";

fn ts(s: Option<String>) -> Result<Option<OffsetDateTime>, StoreError> {
    s.map(|s| {
        OffsetDateTime::parse(&s, &Rfc3339)
            .map_err(|e| StoreError::Corrupt(format!("time '{s}': {e}")))
    })
    .transpose()
}

fn row_to_answer(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Answer, StoreError>> {
    let get_s = |i: usize| row.get::<_, String>(i);
    let get_o = |i: usize| row.get::<_, Option<String>>(i);
    let (variants, tags) = (get_s(2)?, get_s(6)?);
    let status = get_s(8)?;
    let raw = (
        get_o(9)?,
        get_o(10)?,
        get_o(11)?,
        get_s(13)?,
        get_s(14)?,
        get_o(16)?,
    );
    let id = get_s(0)?;
    let question = get_s(1)?;
    let answer = get_s(3)?;
    let category = get_s(4)?;
    let subcategory = get_s(5)?;
    let locale = get_s(7)?;
    let version: i64 = row.get(12)?;
    let indexed_hash = get_o(15)?;
    Ok((|| {
        let parse_list = |s: &str| {
            serde_json::from_str::<Vec<String>>(s).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        Ok(Answer {
            input: AnswerInput {
                id,
                question,
                variants: parse_list(&variants)?,
                answer,
                category,
                subcategory,
                tags: parse_list(&tags)?,
                locale,
                status: Status::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("status '{status}'")))?,
                valid_from: ts(raw.0)?,
                valid_until: ts(raw.1)?,
                review_after: ts(raw.2)?,
            },
            version,
            created_at: ts(Some(raw.3))?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            updated_at: ts(Some(raw.4))?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            indexed_at: ts(raw.5)?,
            indexed_hash,
        })
    })())
}

const SELECT: &str = "SELECT id, question, variants, answer, category, subcategory, tags, locale, \
    status, valid_from, valid_until, review_after, version, created_at, updated_at, indexed_hash, \
    indexed_at FROM answers";

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A read-write connection to `kefu.db` as every writer in kefu opens it
/// (the store, the query log, feedback): WAL, synchronous NORMAL, a 10 s busy
/// timeout, and transactions that take the write lock when they begin
/// (`BEGIN IMMEDIATE`). A deferred transaction that reads first fails at once
/// with "database is locked" when another connection commits before its
/// first write (the busy timeout does not cover that upgrade): under load
/// that lost review items. So `transaction()` on such a connection is for
/// writes; a read that wants one snapshot should use
/// `transaction_with_behavior(Deferred)`.
pub(crate) fn open_read_write(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `kefu.db` in `data_dir`.
    ///
    /// Takes the data directory's writer lock (`kefu.lock`, released by the
    /// kernel when the process ends, even on kill -9): a second writer, such
    /// as `kefu import` beside a running server whose in-memory catalog would
    /// not see the change, is refused with [`StoreError::Locked`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("kefu.lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(data_dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut store = Self::connect(data_dir, false)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Opens the database for reading only, without the writer lock (for
    /// `kefu export` beside a running server).
    pub fn open_read_only(data_dir: &Path) -> Result<Self, StoreError> {
        Self::connect(data_dir, true)
    }

    fn connect(data_dir: &Path, read_only: bool) -> Result<Self, StoreError> {
        if read_only {
            let conn = Connection::open_with_flags(
                data_dir.join("kefu.db"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            return Ok(Self {
                conn: Mutex::new(conn),
                _lock: None,
            });
        }
        let conn = open_read_write(&data_dir.join("kefu.db"))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(review::SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
            _lock: None,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored answer, ordered by id.
    pub fn all(&self) -> Result<Vec<Answer>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_answer)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// One answer.
    pub fn get(&self, id: &str) -> Result<Option<Answer>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{SELECT} WHERE id = ?1"))?;
        match stmt.query_row([id], row_to_answer).optional()? {
            Some(r) => Ok(Some(r?)),
            None => Ok(None),
        }
    }

    /// Inserts or updates a batch in one transaction. A record whose content
    /// is unchanged keeps its version and timestamps.
    pub fn upsert(
        &self,
        inputs: &[AnswerInput],
        now: OffsetDateTime,
    ) -> Result<Vec<(Answer, UpsertOutcome)>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(inputs.len());
        {
            let mut select = tx.prepare(&format!("{SELECT} WHERE id = ?1"))?;
            let mut write = tx.prepare(
                "INSERT INTO answers (id, question, variants, answer, category, subcategory, tags, \
                 locale, status, valid_from, valid_until, review_after, version, created_at, \
                 updated_at, indexed_hash, indexed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
                 ON CONFLICT(id) DO UPDATE SET question=excluded.question, variants=excluded.variants, \
                 answer=excluded.answer, category=excluded.category, subcategory=excluded.subcategory, \
                 tags=excluded.tags, locale=excluded.locale, status=excluded.status, \
                 valid_from=excluded.valid_from, valid_until=excluded.valid_until, \
                 review_after=excluded.review_after, version=excluded.version, \
                 updated_at=excluded.updated_at",
            )?;
            for input in inputs {
                let existing = match select.query_row([&input.id], row_to_answer).optional()? {
                    Some(r) => Some(r?),
                    None => None,
                };
                let (answer, outcome) = match existing {
                    Some(old) if old.input == *input => (old, UpsertOutcome::Unchanged),
                    Some(old) => (
                        Answer {
                            input: input.clone(),
                            version: old.version + 1,
                            created_at: old.created_at,
                            updated_at: now,
                            indexed_at: old.indexed_at,
                            indexed_hash: old.indexed_hash,
                        },
                        UpsertOutcome::Updated,
                    ),
                    None => (
                        Answer {
                            input: input.clone(),
                            version: 1,
                            created_at: now,
                            updated_at: now,
                            indexed_at: None,
                            indexed_hash: None,
                        },
                        UpsertOutcome::Created,
                    ),
                };
                if outcome != UpsertOutcome::Unchanged {
                    let i = &answer.input;
                    write.execute(params![
                        i.id,
                        i.question,
                        serde_json::to_string(&i.variants).unwrap_or_default(),
                        i.answer,
                        i.category,
                        i.subcategory,
                        serde_json::to_string(&i.tags).unwrap_or_default(),
                        i.locale,
                        i.status.as_str(),
                        i.valid_from.map(rfc3339),
                        i.valid_until.map(rfc3339),
                        i.review_after.map(rfc3339),
                        answer.version,
                        rfc3339(answer.created_at),
                        rfc3339(answer.updated_at),
                        answer.indexed_hash,
                        answer.indexed_at.map(rfc3339),
                    ])?;
                }
                out.push((answer, outcome));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Deletes one answer and the links to and from it (one transaction);
    /// false when there was none.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existed = tx.execute("DELETE FROM answers WHERE id = ?1", [id])? > 0;
        tx.execute(
            "DELETE FROM answer_links WHERE answer_id = ?1 OR related_id = ?1",
            [id],
        )?;
        tx.commit()?;
        Ok(existed)
    }

    /// The links an editor set on an answer, in their order.
    pub fn links(&self, id: &str) -> Result<Vec<Link>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT related_id, note FROM answer_links WHERE answer_id = ?1 ORDER BY position",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(Link {
                answer_id: r.get(0)?,
                note: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces an answer's links (one transaction). The answer and every
    /// linked answer must exist when the transaction runs, so a link never
    /// points at an answer deleted meanwhile.
    pub fn set_links(&self, id: &str, links: &[Link]) -> Result<LinksOutcome, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut exists = tx.prepare_cached("SELECT 1 FROM answers WHERE id = ?1")?;
            if !exists.exists([id])? {
                return Ok(LinksOutcome::UnknownAnswer);
            }
            for l in links {
                if !exists.exists([&l.answer_id])? {
                    return Ok(LinksOutcome::UnknownRelated(l.answer_id.clone()));
                }
            }
            tx.execute("DELETE FROM answer_links WHERE answer_id = ?1", [id])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO answer_links (answer_id, position, related_id, note) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (i, l) in links.iter().enumerate() {
                insert.execute(params![id, i as i64, l.answer_id, l.note])?;
            }
        }
        tx.commit()?;
        Ok(LinksOutcome::Stored)
    }

    /// Cached vectors for these text hashes (missing ones are absent).
    pub fn cached_vectors(
        &self,
        model_id: &str,
        kind: &str,
        hashes: &[&str],
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT vector FROM embeddings WHERE model_id = ?1 AND kind = ?2 AND text_hash = ?3",
        )?;
        let mut out = HashMap::new();
        for h in hashes {
            if let Some(blob) = stmt
                .query_row(params![model_id, kind, h], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
            {
                out.insert(h.to_string(), bytes_vector(&blob));
            }
        }
        Ok(out)
    }

    /// Stores computed vectors in the cache.
    pub fn put_vectors(
        &self,
        model_id: &str,
        kind: &str,
        vectors: &[(String, Vec<f32>)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO embeddings (model_id, kind, text_hash, vector) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (h, v) in vectors {
                stmt.execute(params![model_id, kind, h, vector_bytes(v)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a finished index build: the meta entries and, per answer, the
    /// hash of the texts the new index holds. One transaction: this is the
    /// moment the new index becomes the current one on disk.
    pub fn commit_index(
        &self,
        meta: &[(&str, String)],
        indexed: &[(String, String)],
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut set = tx.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
            for (k, v) in meta {
                set.execute(params![k, v])?;
            }
            let mut mark =
                tx.prepare("UPDATE answers SET indexed_hash = ?2, indexed_at = ?3 WHERE id = ?1")?;
            tx.execute(
                "UPDATE answers SET indexed_hash = NULL, indexed_at = NULL",
                [],
            )?;
            for (id, hash) in indexed {
                mark.execute(params![id, hash, rfc3339(at)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::answer::AnswerDraft;

    fn input(id: &str, answer: &str) -> AnswerInput {
        let d: AnswerDraft = serde_json::from_value(serde_json::json!({"id": id,
            "question": "q", "answer": answer, "category": "order", "locale": "en",
            "valid_until": "2099-01-01T00:00:00+08:00"}))
        .unwrap();
        d.validate(None).unwrap()
    }

    #[test]
    fn a_writer_transaction_holds_the_write_lock_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kefu.db");
        let mut a = open_read_write(&path).unwrap();
        a.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let b = open_read_write(&path).unwrap();
        b.busy_timeout(std::time::Duration::ZERO).unwrap();
        let tx = a.transaction().unwrap();
        // `a` has only begun (a deferred transaction would hold no lock yet).
        let blocked = b.execute("INSERT INTO t VALUES (1)", []);
        assert!(
            matches!(&blocked, Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy),
            "{blocked:?}"
        );
        tx.commit().unwrap();
        b.execute("INSERT INTO t VALUES (1)", []).unwrap();
    }

    #[test]
    fn upsert_versions_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let r = s.upsert(&[input("a", "x"), input("b", "y")], now).unwrap();
        assert_eq!(r[0].1, UpsertOutcome::Created);
        let r = s.upsert(&[input("a", "x")], now).unwrap();
        assert_eq!((r[0].1, r[0].0.version), (UpsertOutcome::Unchanged, 1));
        let r = s.upsert(&[input("a", "z")], now).unwrap();
        assert_eq!((r[0].1, r[0].0.version), (UpsertOutcome::Updated, 2));
        drop(s);
        let s = SqliteStore::open(dir.path()).unwrap();
        let a = s.get("a").unwrap().unwrap();
        assert_eq!(a.input, input("a", "z"));
        assert_eq!(s.all().unwrap().len(), 2);
        assert!(s.delete("a").unwrap());
        assert!(!s.delete("a").unwrap());
        assert!(s.get("a").unwrap().is_none());
    }

    #[test]
    fn links_keep_their_order_and_go_with_a_deleted_answer() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        s.upsert(&[input("a", "x"), input("b", "y"), input("c", "z")], now)
            .unwrap();
        let link = |id: &str, note: Option<&str>| Link {
            answer_id: id.into(),
            note: note.map(str::to_string),
        };
        let links = vec![link("c", Some("see also")), link("b", None)];
        assert_eq!(s.set_links("a", &links).unwrap(), LinksOutcome::Stored);
        assert_eq!(
            s.set_links("b", &[link("a", None)]).unwrap(),
            LinksOutcome::Stored
        );
        assert_eq!(s.links("a").unwrap(), links);
        // Unknown answers change nothing.
        assert_eq!(
            s.set_links("a", &[link("b", None), link("nope", None)])
                .unwrap(),
            LinksOutcome::UnknownRelated("nope".into())
        );
        assert_eq!(
            s.set_links("nope", &[link("a", None)]).unwrap(),
            LinksOutcome::UnknownAnswer
        );
        assert_eq!(s.links("a").unwrap(), links);
        assert!(s.links("nope").unwrap().is_empty());
        // Replacing, then deleting: links to and from a deleted answer go.
        assert_eq!(
            s.set_links("c", &[link("b", None), link("a", None)])
                .unwrap(),
            LinksOutcome::Stored
        );
        assert!(s.delete("b").unwrap());
        assert_eq!(s.links("a").unwrap(), vec![link("c", Some("see also"))]);
        assert_eq!(s.links("c").unwrap(), vec![link("a", None)]);
        assert!(s.links("b").unwrap().is_empty());
        // A new answer under the old id starts without links.
        s.upsert(&[input("b", "again")], now).unwrap();
        assert!(s.links("b").unwrap().is_empty());
        drop(s);
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.links("a").unwrap(), vec![link("c", Some("see also"))]);
        assert_eq!(s.set_links("a", &[]).unwrap(), LinksOutcome::Stored);
        assert!(s.links("a").unwrap().is_empty());
    }

    #[test]
    fn a_database_from_before_links_gains_the_table() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old_schema = SCHEMA
                .split("CREATE TABLE IF NOT EXISTS answer_links")
                .next()
                .unwrap();
            let conn = Connection::open(dir.path().join("kefu.db")).unwrap();
            conn.execute_batch(old_schema).unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        s.upsert(&[input("a", "x"), input("b", "y")], now).unwrap();
        let links = [Link {
            answer_id: "b".into(),
            note: None,
        }];
        assert_eq!(s.set_links("a", &links).unwrap(), LinksOutcome::Stored);
        assert_eq!(s.links("a").unwrap(), links);
    }

    #[test]
    fn one_writer_per_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = SqliteStore::open(dir.path()).unwrap();
        first
            .upsert(&[input("a", "x")], OffsetDateTime::now_utc())
            .unwrap();
        assert!(matches!(
            SqliteStore::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
        let reader = SqliteStore::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.all().unwrap().len(), 1);
        drop(first);
        assert!(SqliteStore::open(dir.path()).is_ok());
    }

    #[test]
    fn vector_cache_is_keyed_by_model_kind_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        s.put_vectors("m1", "query", &[("h".into(), vec![0.5, -1.0])])
            .unwrap();
        assert_eq!(
            s.cached_vectors("m1", "query", &["h"]).unwrap()["h"],
            vec![0.5, -1.0]
        );
        assert!(s.cached_vectors("m2", "query", &["h"]).unwrap().is_empty());
        assert!(s
            .cached_vectors("m1", "passage", &["h"])
            .unwrap()
            .is_empty());
    }
}
