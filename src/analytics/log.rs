//! The query log writer: recommend and suggest hand each response's entry to
//! a bounded channel and return at once; one writer thread inserts entries
//! in batches (one transaction per batch). When the channel is full the
//! entry is dropped and counted, so logging never slows or blocks a
//! recommendation. [`QueryLog::flush`] is a barrier: it returns once every
//! entry sent before it is in the database. The writer also applies the
//! retention (at startup and hourly).

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rusqlite::{params, Connection};
use time::OffsetDateTime;

use super::cluster::encode;
use super::{unix_ms, AnalyticsError, SCHEMA};
use crate::recommend::{Query, Recommendations};

/// One shown answer of a logged response, in the order shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub answer_id: String,
    pub score: f32,
    pub confidence: f32,
}

/// One recommend or suggest response, as the query log stores it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// The response's `request_id`.
    pub request_id: String,
    pub at: OffsetDateTime,
    /// The question as received. The writer masks it
    /// ([`crate::privacy::mask`]) before it is stored; it is never written
    /// unmasked.
    pub question: String,
    /// The request's locale and category filters.
    pub locale: Option<String>,
    pub category_filter: Option<String>,
    /// The answers shown, best first.
    pub shown: Vec<Shown>,
    pub handoff: bool,
    /// The predicted category of the question (`classification`).
    pub category: Option<String>,
    /// Sentiment label and escalation flag of the response.
    pub sentiment: Option<String>,
    pub escalate: bool,
    pub latency_ms: f64,
    /// The question's embedding (empty in lexical-only mode); stored as
    /// int8 ([`encode`]).
    pub vector: Vec<f32>,
}

impl LogEntry {
    /// The entry for a response: `response` is the JSON sent (its
    /// `request_id`, `took_ms`, `classification.category`, `sentiment.label`
    /// and `escalate`), `q` the validated request, `recs` what the engine
    /// returned, `vector` the embedding that was searched.
    pub fn from_recommendation(
        response: &serde_json::Value,
        q: &Query,
        recs: &Recommendations,
        vector: Vec<f32>,
    ) -> Self {
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        Self {
            request_id: text(&response["request_id"]).unwrap_or_default(),
            at: OffsetDateTime::now_utc(),
            question: q.question.clone(),
            locale: q.locale.clone(),
            category_filter: q.category.clone(),
            shown: recs
                .results
                .iter()
                .map(|r| Shown {
                    answer_id: r.answer.input.id.clone(),
                    score: r.score,
                    confidence: r.confidence,
                })
                .collect(),
            handoff: recs.handoff,
            category: text(&response["classification"]["category"]),
            sentiment: text(&response["sentiment"]["label"]),
            escalate: response["escalate"].as_bool().unwrap_or(false),
            latency_ms: response["took_ms"].as_f64().unwrap_or(0.0),
            vector,
        }
    }
}

/// The writer's counters (registered in the server's Prometheus registry).
#[derive(Clone)]
pub struct LogCounters {
    pub written: IntCounter,
    pub dropped: IntCounter,
    pub failed: IntCounter,
}

impl Default for LogCounters {
    /// Unregistered counters (tests, tools).
    fn default() -> Self {
        let c = |n: &str| IntCounter::new(n, n).expect("counter");
        Self {
            written: c("written"),
            dropped: c("dropped"),
            failed: c("failed"),
        }
    }
}

/// How the writer runs.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    /// Entries waiting for the writer; beyond it they are dropped.
    pub capacity: usize,
    /// Most entries per transaction.
    pub batch: usize,
    /// Rows older than this many days are deleted.
    pub retention_days: u32,
    /// How often the retention runs after startup.
    pub retention_every: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            capacity: 4096,
            batch: 256,
            retention_days: 30,
            retention_every: Duration::from_secs(3600),
        }
    }
}

enum Msg {
    Entry(Box<LogEntry>),
    Flush(mpsc::Sender<()>),
}

/// The query log's sending side and its writer thread.
pub struct QueryLog {
    tx: Mutex<Option<SyncSender<Msg>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    counters: LogCounters,
}

/// Opens a read-write connection to `kefu.db` with the log's tables.
pub(crate) fn open_db(path: &Path) -> Result<Connection, AnalyticsError> {
    let conn = crate::store::open_read_write(path)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Deletes log rows (and the feedback on them) logged before `now - days`;
/// returns how many requests were deleted.
pub fn apply_retention(
    conn: &mut Connection,
    days: u32,
    now: OffsetDateTime,
) -> Result<usize, AnalyticsError> {
    let cutoff = unix_ms(now - time::Duration::days(days as i64));
    let tx = conn.transaction()?;
    let old = "SELECT request_id FROM query_log WHERE at_ms < ?1";
    tx.execute(
        &format!("DELETE FROM feedback WHERE request_id IN ({old})"),
        [cutoff],
    )?;
    tx.execute(
        &format!("DELETE FROM query_log_shown WHERE request_id IN ({old})"),
        [cutoff],
    )?;
    let n = tx.execute("DELETE FROM query_log WHERE at_ms < ?1", [cutoff])?;
    tx.commit()?;
    Ok(n)
}

fn write_batch(
    conn: &mut Connection,
    entries: &[Box<LogEntry>],
    threshold: f32,
) -> Result<(), AnalyticsError> {
    let tx = conn.transaction()?;
    {
        let mut row = tx.prepare_cached(
            "INSERT OR IGNORE INTO query_log (request_id, at_ms, question, locale, \
             category_filter, top_confidence, handoff, threshold, category, sentiment, escalate, \
             latency_ms, vector) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut shown = tx.prepare_cached(
            "INSERT OR IGNORE INTO query_log_shown (request_id, rank, answer_id, score, confidence) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for e in entries {
            let vector = (!e.vector.is_empty()).then(|| encode(&e.vector));
            let inserted = row.execute(params![
                e.request_id,
                unix_ms(e.at),
                crate::privacy::mask(&e.question),
                e.locale,
                e.category_filter,
                e.shown.first().map(|s| s.confidence as f64),
                e.handoff,
                threshold as f64,
                e.category,
                e.sentiment,
                e.escalate,
                e.latency_ms,
                vector,
            ])?;
            if inserted == 0 {
                continue; // a duplicate request id: the first entry stands
            }
            for (rank, s) in e.shown.iter().enumerate() {
                shown.execute(params![
                    e.request_id,
                    rank as i64,
                    s.answer_id,
                    s.score as f64,
                    s.confidence as f64
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

struct Writer {
    conn: Connection,
    rx: Receiver<Msg>,
    threshold: f32,
    settings: LogSettings,
    counters: LogCounters,
}

impl Writer {
    fn run(mut self) {
        let mut next_retention = Instant::now() + self.settings.retention_every;
        loop {
            let wait = next_retention.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(first) => {
                    let mut entries = Vec::new();
                    let mut next = Some(first);
                    // A flush ends the batch: everything before it is written
                    // before it is answered.
                    let mut flush = None;
                    while let Some(m) = next.take() {
                        match m {
                            Msg::Entry(e) => entries.push(e),
                            Msg::Flush(done) => {
                                flush = Some(done);
                                break;
                            }
                        }
                        if entries.len() >= self.settings.batch.max(1) {
                            break;
                        }
                        match self.rx.try_recv() {
                            Ok(m) => next = Some(m),
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                        }
                    }
                    self.write(&entries);
                    if let Some(done) = flush {
                        let _ = done.send(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_retention {
                self.retention();
                next_retention = Instant::now() + self.settings.retention_every;
            }
        }
    }

    fn write(&mut self, entries: &[Box<LogEntry>]) {
        if entries.is_empty() {
            return;
        }
        match write_batch(&mut self.conn, entries, self.threshold) {
            Ok(()) => self.counters.written.inc_by(entries.len() as u64),
            Err(e) => {
                tracing::error!(error = %e, entries = entries.len(), "writing the query log failed");
                self.counters.failed.inc_by(entries.len() as u64);
            }
        }
    }

    fn retention(&mut self) {
        let days = self.settings.retention_days;
        match apply_retention(&mut self.conn, days, OffsetDateTime::now_utc()) {
            Ok(n) if n > 0 => tracing::info!(deleted = n, days, "query log retention"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "query log retention failed"),
        }
    }
}

impl QueryLog {
    /// Opens the log in `db` (creating its tables), applies the retention
    /// once, then starts the writer thread. `threshold` is the default
    /// hand-off threshold, stored with each row (what "unanswered" compares
    /// the top confidence with).
    pub fn start(
        db: &Path,
        threshold: f32,
        settings: LogSettings,
        counters: LogCounters,
    ) -> Result<Self, AnalyticsError> {
        let mut conn = open_db(db)?;
        let deleted = apply_retention(
            &mut conn,
            settings.retention_days,
            OffsetDateTime::now_utc(),
        )?;
        if deleted > 0 {
            tracing::info!(
                deleted,
                days = settings.retention_days,
                "query log retention at startup"
            );
        }
        let (tx, rx) = mpsc::sync_channel(settings.capacity.max(1));
        let writer = Writer {
            conn,
            rx,
            threshold,
            settings,
            counters: counters.clone(),
        };
        let worker = std::thread::Builder::new()
            .name("kefu-query-log".into())
            .spawn(move || writer.run())?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            counters,
        })
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Hands an entry to the writer without waiting; drops (and counts) it
    /// when the channel is full or the writer has stopped.
    pub fn log(&self, entry: LogEntry) {
        let sent = match &*self.tx.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(tx) => tx.try_send(Msg::Entry(Box::new(entry))).is_ok(),
            None => false,
        };
        if !sent {
            self.counters.dropped.inc();
        }
    }

    /// Waits until every entry sent before this call is written (or
    /// dropped by a failed write), at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), AnalyticsError> {
        let deadline = Instant::now() + timeout;
        let tx = self.sender().ok_or(AnalyticsError::Stopped)?;
        let (done_tx, done_rx) = mpsc::channel();
        let mut msg = Msg::Flush(done_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return Err(AnalyticsError::Timeout);
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return Err(AnalyticsError::Stopped),
            }
        }
        match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(AnalyticsError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(AnalyticsError::Stopped),
        }
    }

    /// Writes what is queued and stops the writer (at shutdown).
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(w) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        self.close();
    }
}
