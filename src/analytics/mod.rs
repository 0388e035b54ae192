//! Analytics: the query log (every recommend and suggest response, the
//! question masked, written off the request path), feedback on responses,
//! and the reports built from them (hot and unanswered question clusters,
//! volume, per-answer helpfulness with editor flags, content needing
//! attention). Tables live in the data directory's `kefu.db` (WAL, so the
//! log's own connection writes beside the answer store's).
//!
//! Tables (created if missing, so older data directories keep working):
//! - `query_log`: one row per response: `request_id`, `at_ms` (Unix ms),
//!   the masked `question`, the request's `locale` and `category_filter`,
//!   `top_confidence`, `handoff`, `threshold` (the default hand-off
//!   threshold in force), the predicted `category`, `sentiment`, `escalate`,
//!   `latency_ms`, and the question's embedding as int8 (`vector`,
//!   [`cluster::encode`]);
//! - `query_log_shown`: the answers each response showed, in order, with
//!   score and confidence;
//! - `feedback`: one row per (request, answer): helpful, resolved, the
//!   masked comment.
//!
//! Retention deletes log rows older than N days, with their shown answers
//! and feedback, at startup and hourly.

pub mod cluster;
pub mod feedback;
pub mod log;
pub mod report;
pub mod stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;
use time::OffsetDateTime;

pub use feedback::{Feedback, FeedbackError, FeedbackInput};
pub use log::{LogCounters, LogEntry, LogSettings, QueryLog, Shown};

/// Errors of the analytics store.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the query log writer has stopped")]
    Stopped,
    #[error("the query log writer did not catch up in time")]
    Timeout,
}

/// The analytics tables (see the module documentation).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS query_log (
    request_id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    question TEXT NOT NULL,
    locale TEXT,
    category_filter TEXT,
    top_confidence REAL,
    handoff INTEGER NOT NULL,
    threshold REAL NOT NULL,
    category TEXT,
    sentiment TEXT,
    escalate INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL NOT NULL,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS query_log_at ON query_log (at_ms);
CREATE TABLE IF NOT EXISTS query_log_shown (
    request_id TEXT NOT NULL,
    rank INTEGER NOT NULL,
    answer_id TEXT NOT NULL,
    score REAL NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (request_id, rank)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS query_log_shown_answer ON query_log_shown (answer_id);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL,
    answer_id TEXT NOT NULL,
    helpful INTEGER NOT NULL,
    resolved INTEGER,
    comment TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (request_id, answer_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feedback_answer ON feedback (answer_id);
";

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// When an answer is flagged for editors: shown at least `min_shown` times
/// in the window, with at least `min_feedback` feedback, of which a share
/// below `helpful_below` said helpful.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FlagThresholds {
    pub min_shown: u64,
    pub min_feedback: u64,
    pub helpful_below: f64,
}

impl Default for FlagThresholds {
    fn default() -> Self {
        Self {
            min_shown: 20,
            min_feedback: 5,
            helpful_below: 0.4,
        }
    }
}

impl FlagThresholds {
    /// Whether these counts flag an answer.
    pub fn flags(&self, shown: u64, feedback: u64, helpful: u64) -> bool {
        shown >= self.min_shown
            && feedback >= self.min_feedback.max(1)
            && (helpful as f64) < self.helpful_below * feedback as f64
    }
}

/// Settings of the server's analytics.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalyticsSettings {
    pub log: LogSettings,
    pub flags: FlagThresholds,
}

/// The server's analytics: the query log writer, a connection for
/// feedback, and read-only connections for reports.
pub struct Analytics {
    db: PathBuf,
    log: QueryLog,
    conn: Mutex<Connection>,
    settings: AnalyticsSettings,
}

/// How long a feedback or report waits for the log writer to catch up.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The database of a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kefu.db")
}

impl Analytics {
    /// Opens the analytics tables in `data_dir`'s database, applies the
    /// retention, and starts the log writer. `threshold`: the default
    /// hand-off threshold.
    pub fn open(
        data_dir: &Path,
        threshold: f32,
        settings: AnalyticsSettings,
        counters: LogCounters,
    ) -> Result<Self, AnalyticsError> {
        let db = db_path(data_dir);
        let log = QueryLog::start(&db, threshold, settings.log, counters)?;
        let conn = log::open_db(&db)?;
        Ok(Self {
            db,
            log,
            conn: Mutex::new(conn),
            settings,
        })
    }

    pub fn settings(&self) -> &AnalyticsSettings {
        &self.settings
    }

    /// Queues a response's entry (never blocks; see [`QueryLog::log`]).
    pub fn log(&self, entry: LogEntry) {
        self.log.log(entry)
    }

    /// Waits until everything logged so far is written.
    pub fn flush(&self) -> Result<(), AnalyticsError> {
        self.log.flush(FLUSH_TIMEOUT)
    }

    /// Writes what is queued and stops the writer.
    pub fn close(&self) {
        self.log.close()
    }

    /// Stores a feedback after the log has caught up.
    pub fn record_feedback(&self, input: &FeedbackInput) -> Result<Feedback, FeedbackError> {
        self.flush()?;
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        feedback::record(&mut conn, input, OffsetDateTime::now_utc())
    }

    /// Helpful and total feedback per answer (all answers, or one).
    pub fn helpful_counts(
        &self,
        answer_id: Option<&str>,
    ) -> Result<HashMap<String, (u32, u32)>, AnalyticsError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        feedback::helpful_counts(&conn, answer_id)
    }

    /// A read-only connection for a report, after the log has caught up.
    pub fn reader(&self) -> Result<Connection, AnalyticsError> {
        self.flush()?;
        let conn =
            Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }
}

/// A read-only connection to a data directory's analytics tables for
/// `kefu report`, beside a running server or not. A database the log never
/// wrote to (no tables yet) reads as an empty log.
pub fn open_read_only(data_dir: &Path) -> Result<Connection, AnalyticsError> {
    let path = db_path(data_dir);
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let has_log: bool = conn.query_row(
        "SELECT COUNT(*) = 3 FROM sqlite_master WHERE type = 'table' \
         AND name IN ('query_log', 'query_log_shown', 'feedback')",
        [],
        |r| r.get(0),
    )?;
    if has_log {
        return Ok(conn);
    }
    let empty = Connection::open_in_memory()?;
    empty.execute_batch(SCHEMA)?;
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::report::{ClusterOptions, Scope, Window};

    fn entry(id: &str, question: &str, shown: &[&str], handoff: bool, v: Vec<f32>) -> LogEntry {
        LogEntry {
            request_id: id.into(),
            at: OffsetDateTime::now_utc(),
            question: question.into(),
            locale: None,
            category_filter: None,
            shown: shown
                .iter()
                .enumerate()
                .map(|(i, a)| Shown {
                    answer_id: a.to_string(),
                    score: 1.0 - i as f32 * 0.1,
                    confidence: if handoff { 0.1 } else { 0.9 - i as f32 * 0.1 },
                })
                .collect(),
            handoff,
            category: Some("returns".into()),
            sentiment: None,
            escalate: false,
            latency_ms: 12.0,
            vector: v,
        }
    }

    fn unit(axis: usize) -> Vec<f32> {
        let mut v = vec![0.0; 8];
        v[axis] = 1.0;
        v
    }

    #[test]
    fn logged_entries_are_masked_flushed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let counters = LogCounters::default();
        let a = Analytics::open(
            dir.path(),
            0.3,
            AnalyticsSettings::default(),
            counters.clone(),
        )
        .unwrap();
        a.log(entry(
            "r1",
            "订单DD20241123001 退货",
            &["x", "y"],
            false,
            unit(0),
        ));
        a.log(entry(
            "r2",
            "call 13812345678 about returns",
            &["x"],
            false,
            unit(0),
        ));
        a.log(entry("r3", "weather?", &["y"], true, unit(3)));
        a.flush().unwrap();
        assert_eq!(counters.written.get(), 3);
        assert_eq!(counters.dropped.get(), 0);
        let conn = a.reader().unwrap();
        let q: String = conn
            .query_row(
                "SELECT question FROM query_log WHERE request_id = 'r1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(q, "订单[NUMBER] 退货");
        let w = Window::parse(None, None, None, OffsetDateTime::now_utc()).unwrap();
        let none = |_: &str| None;
        let hot =
            report::clusters(&conn, &w, Scope::All, ClusterOptions::default(), &none).unwrap();
        assert_eq!(hot.rows_in_window, 3);
        let counts: Vec<usize> = hot.clusters.iter().map(|c| c.count).collect();
        assert_eq!(counts, vec![2, 1]);
        assert_eq!(hot.clusters[0].top_answer.as_ref().unwrap().answer_id, "x");
        assert!(
            hot.clusters[0].representative.contains("[NUMBER]")
                || hot.clusters[0].representative.contains("[PHONE]")
        );
        let gaps = report::clusters(
            &conn,
            &w,
            Scope::Unanswered,
            ClusterOptions::default(),
            &none,
        )
        .unwrap();
        assert_eq!(gaps.rows_in_window, 1);
        assert_eq!(gaps.clusters[0].representative, "weather?");
        let vol = report::volume(&conn, &w).unwrap();
        assert_eq!((vol.total, vol.handoffs, vol.unanswered), (3, 1, 1));
        assert_eq!(vol.by_hour_utc.iter().sum::<u64>(), 3);
        // Feedback: known request and shown answer only; a second replaces the first.
        let fb = |req: &str, ans: &str, helpful: bool| FeedbackInput {
            request_id: req.into(),
            answer_id: ans.into(),
            helpful,
            resolved: None,
            comment: Some("mail me at a@b.co".into()),
        };
        assert!(matches!(
            a.record_feedback(&fb("nope", "x", true)),
            Err(FeedbackError::UnknownRequest(_))
        ));
        assert!(matches!(
            a.record_feedback(&fb("r2", "y", true)),
            Err(FeedbackError::AnswerNotShown { .. })
        ));
        let first = a.record_feedback(&fb("r1", "y", true)).unwrap();
        assert_eq!((first.rank, first.replaced), (2, false));
        assert_eq!(first.comment.as_deref(), Some("mail me at [EMAIL]"));
        let second = a.record_feedback(&fb("r1", "y", false)).unwrap();
        assert!(second.replaced);
        assert_eq!(second.created_at, first.created_at);
        assert_eq!(a.helpful_counts(None).unwrap()["y"], (0, 1));
        let flags = FlagThresholds {
            min_shown: 2,
            min_feedback: 1,
            helpful_below: 0.5,
        };
        let conn = a.reader().unwrap();
        let usage = report::answer_usage(&conn, &w, &flags, 10, &none).unwrap();
        let y = usage.answers.iter().find(|u| u.answer_id == "y").unwrap();
        assert_eq!(
            (y.shown, y.shown_first, y.feedback, y.helpful),
            (2, 1, 1, 0)
        );
        assert!(y.flagged);
        assert_eq!(
            usage.answers[0].answer_id, "y",
            "flagged answers come first"
        );
        let x = usage.answers.iter().find(|u| u.answer_id == "x").unwrap();
        assert!(!x.flagged, "no feedback, no flag");
    }

    #[test]
    fn retention_deletes_old_rows_with_their_feedback() {
        let dir = tempfile::tempdir().unwrap();
        let a = Analytics::open(
            dir.path(),
            0.3,
            AnalyticsSettings::default(),
            LogCounters::default(),
        )
        .unwrap();
        let mut old = entry("old", "old question", &["x"], false, unit(0));
        old.at = OffsetDateTime::now_utc() - time::Duration::days(40);
        a.log(old);
        a.log(entry("new", "new question", &["x"], false, unit(0)));
        a.flush().unwrap();
        a.record_feedback(&FeedbackInput {
            request_id: "old".into(),
            answer_id: "x".into(),
            helpful: true,
            resolved: Some(true),
            comment: None,
        })
        .unwrap();
        let mut conn = log::open_db(&db_path(dir.path())).unwrap();
        assert_eq!(
            log::apply_retention(&mut conn, 30, OffsetDateTime::now_utc()).unwrap(),
            1
        );
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM query_log"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM query_log_shown"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM feedback"), 0);
    }

    #[test]
    fn a_full_channel_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let counters = LogCounters::default();
        let settings = AnalyticsSettings {
            log: LogSettings {
                capacity: 2,
                batch: 1,
                ..LogSettings::default()
            },
            ..AnalyticsSettings::default()
        };
        let a = Analytics::open(dir.path(), 0.3, settings, counters.clone()).unwrap();
        // Another connection holds the write lock, so the writer waits on
        // its first batch while the channel fills.
        let blocker = Connection::open(db_path(dir.path())).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        for i in 0..20 {
            a.log(entry(&format!("r{i}"), "q", &["x"], false, unit(0)));
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "log() must not block"
        );
        let dropped = counters.dropped.get();
        // At most the capacity plus the batch being written got through.
        assert!(dropped >= 20 - 2 - 1, "dropped {dropped}");
        blocker.execute_batch("COMMIT").unwrap();
        a.flush().unwrap();
        assert_eq!(counters.written.get() + dropped, 20);
    }

    #[test]
    fn a_report_on_a_database_without_a_log_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(dir.path()).unwrap();
        drop(store);
        let conn = open_read_only(dir.path()).unwrap();
        let w = Window::parse(None, None, None, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(report::volume(&conn, &w).unwrap().total, 0);
        assert!(open_read_only(&dir.path().join("missing")).is_err());
    }
}
