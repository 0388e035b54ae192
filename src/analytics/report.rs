//! The analytics reports over a time window: hot question clusters,
//! unanswered clusters (content gaps), volume, per-answer usage and
//! helpfulness, and answers whose content needs attention. The HTTP
//! endpoints (`/v1/analytics/*`) and `kefu report` both call these.

use std::collections::HashMap;
use std::fmt::Write as _;

use rusqlite::{params, Connection};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::cluster::{center, cluster, decode, mean};
use super::stats::{percentiles, rate, round4};
use super::{unix_ms, AnalyticsError, FlagThresholds};
use crate::recommend::freshness::{self, AgePolicy, Flag, Freshness};
use crate::store::{rfc3339, Answer};

/// The default window.
pub const DEFAULT_WINDOW: &str = "7d";
/// At most this many of the newest rows of a window are clustered.
pub const CLUSTER_ROW_CAP: usize = 20_000;
/// At most this many clusters are formed (the rest count as unclustered).
pub const MAX_CLUSTERS: usize = 2_000;
/// Percentiles are computed over at most this many of the newest rows.
pub const PERCENTILE_ROW_CAP: usize = 200_000;
/// The default threshold of the question clustering (mean cosine of centred
/// embeddings, see [`crate::analytics::cluster`]), tuned on the demo
/// library's phrasings (`tests/it/analytics.rs`,
/// `cluster_threshold_fits_the_demo_library`: B-cubed precision 0.687,
/// recall 0.546, F1 0.608 at 0.45; the sweep over 0.30-0.70 peaks at 0.48
/// with F1 0.612 and is flat from 0.45 to 0.50; the lower end keeps more
/// paraphrases together).
pub const DEFAULT_CLUSTER_THRESHOLD: f32 = 0.45;
/// At most this many of the library's cached question embeddings are
/// averaged for centring.
const MEAN_SAMPLE: i64 = 5_000;
/// Longest window.
pub const MAX_WINDOW_DAYS: i64 = 3650;

/// A time window `[since, until)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    #[serde(serialize_with = "ser_time")]
    pub since: OffsetDateTime,
    #[serde(serialize_with = "ser_time")]
    pub until: OffsetDateTime,
}

fn ser_time<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

impl Window {
    /// `window` (`<N>h` or `<N>d`: the last N hours or days up to `now`), or
    /// `since` / `until` (RFC 3339; `until` defaults to `now`, `since` to 7
    /// days before `until`); neither: the last 7 days. The two forms do not
    /// mix; `since` must be before `until`; at most 3650 days.
    pub fn parse(
        window: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Self, String> {
        let parse_time = |what: &str, s: &str| {
            OffsetDateTime::parse(s.trim(), &Rfc3339)
                .map_err(|_| format!("{what} '{s}' is not an RFC 3339 time (2026-11-24T08:00:00Z)"))
        };
        if window.is_some() && (since.is_some() || until.is_some()) {
            return Err("give either window or since/until, not both".into());
        }
        let w = match (window, since, until) {
            (Some(w), _, _) => {
                let d = parse_duration(w)?;
                Self {
                    since: now - d,
                    until: now,
                }
            }
            (None, None, None) => Self::last(DEFAULT_WINDOW, now),
            (None, since, until) => {
                let until = until
                    .map(|u| parse_time("until", u))
                    .transpose()?
                    .unwrap_or(now);
                let since = since
                    .map(|s| parse_time("since", s))
                    .transpose()?
                    .unwrap_or(until - time::Duration::days(7));
                Self { since, until }
            }
        };
        if w.since >= w.until {
            return Err("since must be before until".into());
        }
        if w.until - w.since > time::Duration::days(MAX_WINDOW_DAYS) {
            return Err(format!("the window is longer than {MAX_WINDOW_DAYS} days"));
        }
        Ok(w)
    }

    /// The last `spec` (`24h`, `7d`, ...) up to `now`; the default window
    /// when `spec` does not parse.
    pub fn last(spec: &str, now: OffsetDateTime) -> Self {
        let d = parse_duration(spec).unwrap_or(time::Duration::days(7));
        Self {
            since: now - d,
            until: now,
        }
    }

    /// The window in the log's milliseconds. Times are logged rounded down
    /// to the millisecond, so `until` rounds up: a question asked earlier
    /// in the very millisecond the window ends in is inside it.
    fn ms(&self) -> (i64, i64) {
        let until = self.until.unix_timestamp_nanos().div_euclid(1_000_000)
            + i128::from(!self.until.nanosecond().is_multiple_of(1_000_000));
        (unix_ms(self.since), until as i64)
    }
}

/// `<N>h` or `<N>d`, 1 hour to 3650 days.
pub fn parse_duration(s: &str) -> Result<time::Duration, String> {
    let bad = || format!("window '{s}' is not a number of hours or days such as 24h, 7d or 30d");
    let s2 = s.trim();
    let unit = s2.chars().next_back().ok_or_else(bad)?;
    let n: i64 = s2[..s2.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    if n < 1 {
        return Err(bad());
    }
    let d = match unit {
        'h' => time::Duration::hours(n.min(MAX_WINDOW_DAYS * 24 + 1)),
        'd' => time::Duration::days(n.min(MAX_WINDOW_DAYS + 1)),
        _ => return Err(bad()),
    };
    if d > time::Duration::days(MAX_WINDOW_DAYS) {
        return Err(format!(
            "window '{s}' must be between 1h and {MAX_WINDOW_DAYS}d"
        ));
    }
    Ok(d)
}

/// What a report knows of an answer from the library.
#[derive(Debug, Clone)]
pub struct AnswerInfo {
    pub question: String,
    pub category: String,
}

/// Looks answers up by id (the engine's catalog, or the store read by
/// `kefu report`).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<AnswerInfo>;

/// Which questions a cluster report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every logged question.
    All,
    /// Questions that were handed off, or whose top confidence was below the
    /// default hand-off threshold in force when they were logged.
    Unanswered,
}

/// Options of a cluster report.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    pub threshold: f32,
    pub limit: usize,
    pub row_cap: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_CLUSTER_THRESHOLD,
            limit: 20,
            row_cap: CLUSTER_ROW_CAP,
        }
    }
}

/// The answer most often shown first to a cluster's questions.
#[derive(Debug, Clone, Serialize)]
pub struct TopAnswer {
    pub answer_id: String,
    pub question: Option<String>,
    /// How many of the cluster's questions got it first.
    pub times_first: usize,
}

/// One cluster of questions.
#[derive(Debug, Clone, Serialize)]
pub struct QuestionCluster {
    pub count: usize,
    /// Of the clustered questions.
    pub share: f64,
    /// The question nearest the cluster's centroid (masked).
    pub representative: String,
    /// Up to 3 other distinct questions of the cluster (masked), nearest first.
    pub examples: Vec<String>,
    /// Share of the cluster's questions that were handed off.
    pub handoff_share: f64,
    pub top_answer: Option<TopAnswer>,
    pub first_seen: String,
    pub last_seen: String,
}

/// `GET /v1/analytics/hot` and `/unanswered`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub window: Window,
    pub scope: Scope,
    pub threshold: f64,
    /// What the embeddings were centred on: `library` (the mean of the
    /// answer library's question embeddings) or `window` (the mean of the
    /// clustered questions, when the library has none cached).
    pub centred_on: &'static str,
    /// Questions of the scope in the window.
    pub rows_in_window: u64,
    /// How many of them were clustered: the newest `row_cap`.
    pub rows_clustered: usize,
    pub row_cap: usize,
    /// True when the window held more rows than were clustered.
    pub capped: bool,
    /// Rows without a stored vector (lexical-only mode), not clustered.
    pub without_vector: usize,
    /// Rows that fit no cluster after the cluster cap was reached.
    pub unclustered: usize,
    /// Clusters found (before `limit`).
    pub cluster_count: usize,
    pub clusters: Vec<QuestionCluster>,
}

struct LogRow {
    at_ms: i64,
    question: String,
    handoff: bool,
    vector: Option<Vec<f32>>,
    first_answer: Option<String>,
}

const UNANSWERED: &str =
    "(q.handoff = 1 OR q.top_confidence IS NULL OR q.top_confidence < q.threshold)";

fn scope_sql(scope: Scope) -> &'static str {
    match scope {
        Scope::All => "1",
        Scope::Unanswered => UNANSWERED,
    }
}

fn time_str(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(rfc3339)
        .unwrap_or_default()
}

/// Clusters the window's questions (the newest `row_cap` of the scope).
pub fn clusters(
    conn: &Connection,
    window: &Window,
    scope: Scope,
    opts: ClusterOptions,
    lookup: Lookup<'_>,
) -> Result<ClusterReport, AnalyticsError> {
    let (since, until) = window.ms();
    let filter = scope_sql(scope);
    let rows_in_window: i64 = conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM query_log q WHERE q.at_ms >= ?1 AND q.at_ms < ?2 AND {filter}"
        ),
        params![since, until],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(&format!(
        "SELECT q.at_ms, q.question, q.handoff, q.vector, s.answer_id FROM query_log q \
         LEFT JOIN query_log_shown s ON s.request_id = q.request_id AND s.rank = 0 \
         WHERE q.at_ms >= ?1 AND q.at_ms < ?2 AND {filter} \
         ORDER BY q.at_ms DESC, q.request_id DESC LIMIT ?3"
    ))?;
    let mut rows: Vec<LogRow> = stmt
        .query_map(params![since, until, opts.row_cap as i64], |r| {
            Ok(LogRow {
                at_ms: r.get(0)?,
                question: r.get(1)?,
                handoff: r.get(2)?,
                vector: r.get::<_, Option<Vec<u8>>>(3)?.and_then(|b| decode(&b)),
                first_answer: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    rows.reverse(); // oldest first
    let rows_clustered = rows.len();
    let without_vector = rows.iter().filter(|r| r.vector.is_none()).count();
    let mut vectors: Vec<Vec<f32>> = rows
        .iter_mut()
        .map(|r| r.vector.take().unwrap_or_default())
        .collect();
    let dim = vectors.iter().map(Vec::len).max().unwrap_or(0);
    let (centre, centred_on) = match library_mean(conn).filter(|m| m.len() == dim) {
        Some(m) => (Some(m), "library"),
        None => (
            mean(vectors.iter().filter(|v| v.len() == dim).map(Vec::as_slice)),
            "window",
        ),
    };
    if let Some(m) = centre {
        center(&mut vectors, &m);
    }
    let found = cluster(&vectors, opts.threshold, MAX_CLUSTERS);
    let clustered_total: usize = found.clusters.iter().map(|c| c.members.len()).sum();
    let cluster_count = found.clusters.len();
    let clusters = found
        .clusters
        .iter()
        .take(opts.limit)
        .map(|c| {
            let ordered = c.members_by_closeness(&vectors);
            let representative = rows[c.representative].question.clone();
            let mut examples: Vec<String> = Vec::new();
            for &i in &ordered {
                let q = &rows[i].question;
                if examples.len() >= 3 {
                    break;
                }
                if *q != representative && !examples.contains(q) {
                    examples.push(q.clone());
                }
            }
            let handoffs = c.members.iter().filter(|&&i| rows[i].handoff).count();
            let mut firsts: HashMap<&str, usize> = HashMap::new();
            for &i in &c.members {
                if let Some(a) = rows[i].first_answer.as_deref() {
                    *firsts.entry(a).or_default() += 1;
                }
            }
            let top_answer = firsts
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
                .map(|(id, n)| TopAnswer {
                    answer_id: id.to_string(),
                    question: lookup(id).map(|a| a.question),
                    times_first: n,
                });
            let times = c.members.iter().map(|&i| rows[i].at_ms);
            QuestionCluster {
                count: c.members.len(),
                share: round4(c.members.len() as f64 / clustered_total.max(1) as f64),
                representative,
                examples,
                handoff_share: round4(handoffs as f64 / c.members.len() as f64),
                top_answer,
                first_seen: time_str(times.clone().min().unwrap_or(0)),
                last_seen: time_str(times.max().unwrap_or(0)),
            }
        })
        .collect();
    Ok(ClusterReport {
        window: window.clone(),
        scope,
        threshold: (opts.threshold as f64 * 1e6).round() / 1e6,
        centred_on,
        rows_in_window: rows_in_window as u64,
        rows_clustered,
        row_cap: opts.row_cap,
        capped: (rows_in_window as u64) > rows_clustered as u64,
        without_vector,
        unclustered: found.unclustered,
        cluster_count,
        clusters,
    })
}

/// The mean of the library's cached question embeddings for the model of
/// the current index (`None` when there are none, or no such tables).
fn library_mean(conn: &Connection) -> Option<Vec<f32>> {
    let mut stmt = conn
        .prepare(
            "SELECT vector FROM embeddings WHERE kind = 'query' AND model_id = \
             (SELECT value FROM meta WHERE key = 'index_model') LIMIT ?1",
        )
        .ok()?;
    let rows = stmt
        .query_map([MEAN_SAMPLE], |r| r.get::<_, Vec<u8>>(0))
        .ok()?;
    let vectors: Vec<Vec<f32>> = rows
        .filter_map(Result::ok)
        .map(|b| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect();
    mean(vectors.iter().map(Vec::as_slice))
}

/// Count of one category.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryCount {
    /// `null` when no category was predicted (no result).
    pub category: Option<String>,
    pub count: u64,
}

/// Count of one day (UTC).
#[derive(Debug, Clone, Serialize)]
pub struct DayCount {
    pub day: String,
    pub count: u64,
}

/// `GET /v1/analytics/volume`.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeReport {
    pub window: Window,
    pub total: u64,
    pub handoffs: u64,
    pub handoff_rate: Option<f64>,
    /// Questions that were handed off or answered below the hand-off threshold.
    pub unanswered: u64,
    pub escalations: u64,
    pub by_category: Vec<CategoryCount>,
    /// 24 counts, hour of day 0-23 in UTC.
    pub by_hour_utc: Vec<u64>,
    /// Days with questions, oldest first (UTC).
    pub by_day: Vec<DayCount>,
    /// Percentiles of the top result's confidence (questions with a result).
    pub confidence: serde_json::Map<String, serde_json::Value>,
    /// Percentiles of the response time in milliseconds.
    pub latency_ms: serde_json::Map<String, serde_json::Value>,
    /// How many of the newest rows the percentiles are over.
    pub percentiles_over: usize,
    pub feedback: FeedbackSummary,
}

/// Feedback on the window's responses.
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackSummary {
    pub count: u64,
    pub helpful: u64,
    pub helpful_rate: Option<f64>,
}

/// Volume, hand-off rate, percentiles.
pub fn volume(conn: &Connection, window: &Window) -> Result<VolumeReport, AnalyticsError> {
    let (since, until) = window.ms();
    let w = params![since, until];
    let (total, handoffs, escalations, unanswered): (i64, i64, i64, i64) = conn.query_row(
        &format!(
            "SELECT COUNT(*), COALESCE(SUM(q.handoff), 0), COALESCE(SUM(q.escalate), 0), \
             COALESCE(SUM({UNANSWERED}), 0) FROM query_log q WHERE q.at_ms >= ?1 AND q.at_ms < ?2"
        ),
        w,
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let mut stmt = conn.prepare(
        "SELECT category, COUNT(*) FROM query_log WHERE at_ms >= ?1 AND at_ms < ?2 \
         GROUP BY category ORDER BY COUNT(*) DESC, category",
    )?;
    let by_category = stmt
        .query_map(w, |r| {
            Ok(CategoryCount {
                category: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut by_hour_utc = vec![0u64; 24];
    let mut stmt = conn.prepare(
        "SELECT (at_ms / 3600000) % 24, COUNT(*) FROM query_log \
         WHERE at_ms >= ?1 AND at_ms < ?2 GROUP BY 1",
    )?;
    for r in stmt.query_map(w, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (h, n) = r?;
        if let Some(slot) = by_hour_utc.get_mut(h.rem_euclid(24) as usize) {
            *slot += n as u64;
        }
    }
    let mut stmt = conn.prepare(
        "SELECT strftime('%Y-%m-%d', at_ms / 1000, 'unixepoch'), COUNT(*) FROM query_log \
         WHERE at_ms >= ?1 AND at_ms < ?2 GROUP BY 1 ORDER BY 1",
    )?;
    let by_day = stmt
        .query_map(w, |r| {
            Ok(DayCount {
                day: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT top_confidence, latency_ms FROM query_log WHERE at_ms >= ?1 AND at_ms < ?2 \
         ORDER BY at_ms DESC LIMIT ?3",
    )?;
    let (mut conf, mut lat) = (Vec::new(), Vec::new());
    for r in stmt.query_map(params![since, until, PERCENTILE_ROW_CAP as i64], |r| {
        Ok((r.get::<_, Option<f64>>(0)?, r.get::<_, f64>(1)?))
    })? {
        let (c, l) = r?;
        conf.extend(c);
        lat.push(l);
    }
    let (fb_count, fb_helpful): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(f.helpful), 0) FROM feedback f \
         JOIN query_log q ON q.request_id = f.request_id WHERE q.at_ms >= ?1 AND q.at_ms < ?2",
        w,
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(VolumeReport {
        window: window.clone(),
        total: total as u64,
        handoffs: handoffs as u64,
        handoff_rate: rate(handoffs as u64, total as u64),
        unanswered: unanswered as u64,
        escalations: escalations as u64,
        by_category,
        by_hour_utc,
        by_day,
        confidence: percentiles(&conf, &[10, 50, 90]),
        latency_ms: percentiles(&lat, &[50, 90, 99]),
        percentiles_over: lat.len(),
        feedback: FeedbackSummary {
            count: fb_count as u64,
            helpful: fb_helpful as u64,
            helpful_rate: rate(fb_helpful as u64, fb_count as u64),
        },
    })
}

/// Usage and helpfulness of one answer over the window.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerUsage {
    pub answer_id: String,
    /// `null` when the answer is no longer in the library.
    pub question: Option<String>,
    pub category: Option<String>,
    pub in_library: bool,
    /// Responses that showed it, and that showed it first.
    pub shown: u64,
    pub shown_first: u64,
    pub feedback: u64,
    pub helpful: u64,
    pub helpful_rate: Option<f64>,
    /// Feedback that said whether the problem was resolved, and how many said yes.
    pub resolved_reported: u64,
    pub resolved: u64,
    pub resolved_rate: Option<f64>,
    /// Needs an editor's look (see [`FlagThresholds`]).
    pub flagged: bool,
}

/// `GET /v1/analytics/answers`.
#[derive(Debug, Clone, Serialize)]
pub struct AnswersReport {
    pub window: Window,
    pub thresholds: FlagThresholds,
    /// Answers shown or given feedback in the window.
    pub answer_count: usize,
    pub flagged_count: usize,
    /// Flagged first, then most shown.
    pub answers: Vec<AnswerUsage>,
}

/// Per-answer usage: times shown (first), feedback, rates, flags.
pub fn answer_usage(
    conn: &Connection,
    window: &Window,
    flags: &FlagThresholds,
    limit: usize,
    lookup: Lookup<'_>,
) -> Result<AnswersReport, AnalyticsError> {
    let mut all = usage_map(conn, window)?;
    for u in all.values_mut() {
        if let Some(a) = lookup(&u.answer_id) {
            u.question = Some(a.question);
            u.category = Some(a.category);
            u.in_library = true;
        }
        u.helpful_rate = rate(u.helpful, u.feedback);
        u.resolved_rate = rate(u.resolved, u.resolved_reported);
        u.flagged = flags.flags(u.shown, u.feedback, u.helpful);
    }
    let mut answers: Vec<AnswerUsage> = all.into_values().collect();
    answers.sort_by(|a, b| {
        b.flagged
            .cmp(&a.flagged)
            .then(b.shown.cmp(&a.shown))
            .then(b.feedback.cmp(&a.feedback))
            .then(a.answer_id.cmp(&b.answer_id))
    });
    let answer_count = answers.len();
    let flagged_count = answers.iter().filter(|a| a.flagged).count();
    answers.truncate(limit);
    Ok(AnswersReport {
        window: window.clone(),
        thresholds: *flags,
        answer_count,
        flagged_count,
        answers,
    })
}

fn usage_map(
    conn: &Connection,
    window: &Window,
) -> Result<HashMap<String, AnswerUsage>, AnalyticsError> {
    let (since, until) = window.ms();
    let w = params![since, until];
    let mut out: HashMap<String, AnswerUsage> = HashMap::new();
    let blank = |id: &str| AnswerUsage {
        answer_id: id.to_string(),
        question: None,
        category: None,
        in_library: false,
        shown: 0,
        shown_first: 0,
        feedback: 0,
        helpful: 0,
        helpful_rate: None,
        resolved_reported: 0,
        resolved: 0,
        resolved_rate: None,
        flagged: false,
    };
    let mut stmt = conn.prepare(
        "SELECT s.answer_id, COUNT(*), SUM(s.rank = 0) FROM query_log_shown s \
         JOIN query_log q ON q.request_id = s.request_id \
         WHERE q.at_ms >= ?1 AND q.at_ms < ?2 GROUP BY s.answer_id",
    )?;
    for r in stmt.query_map(w, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (id, shown, first) = r?;
        let u = out.entry(id.clone()).or_insert_with(|| blank(&id));
        u.shown = shown as u64;
        u.shown_first = first as u64;
    }
    let mut stmt = conn.prepare(
        "SELECT f.answer_id, COUNT(*), SUM(f.helpful), SUM(f.resolved IS NOT NULL), \
         SUM(f.resolved = 1) FROM feedback f JOIN query_log q ON q.request_id = f.request_id \
         WHERE q.at_ms >= ?1 AND q.at_ms < ?2 GROUP BY f.answer_id",
    )?;
    for r in stmt.query_map(w, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?.unwrap_or(0),
        ))
    })? {
        let (id, n, helpful, reported, resolved) = r?;
        let u = out.entry(id.clone()).or_insert_with(|| blank(&id));
        u.feedback = n as u64;
        u.helpful = helpful as u64;
        u.resolved_reported = reported as u64;
        u.resolved = resolved as u64;
    }
    Ok(out)
}

/// One answer whose content needs attention.
#[derive(Debug, Clone, Serialize)]
pub struct ContentItem {
    pub answer_id: String,
    pub question: String,
    pub category: String,
    pub status: Flag,
    pub flags: Vec<Flag>,
    pub freshness: Freshness,
    /// Responses in the window that showed it.
    pub shown_in_window: u64,
}

/// Counts by flag.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContentCounts {
    pub expired: usize,
    pub pending_reindex: usize,
    pub stale: usize,
}

/// `GET /v1/analytics/content`.
#[derive(Debug, Clone, Serialize)]
pub struct ContentReport {
    pub window: Window,
    pub answers_in_library: usize,
    /// Answers with each flag (an answer can have several).
    pub counts: ContentCounts,
    /// Answers that are not fresh: most severe status first, then most shown.
    pub answers: Vec<ContentItem>,
    pub total: usize,
}

/// The library's answers that are expired, pending reindex or stale, with
/// how often each was shown in the window.
pub fn content<'a>(
    conn: &Connection,
    window: &Window,
    answers: impl Iterator<Item = &'a Answer>,
    now: OffsetDateTime,
    policy: &AgePolicy,
    limit: usize,
) -> Result<ContentReport, AnalyticsError> {
    let usage = usage_map(conn, window)?;
    let mut counts = ContentCounts::default();
    let mut items = Vec::new();
    let mut in_library = 0;
    for a in answers {
        in_library += 1;
        let f = freshness::assess(a, now, policy);
        if f.status == Flag::Fresh {
            continue;
        }
        for flag in &f.flags {
            match flag {
                Flag::Expired => counts.expired += 1,
                Flag::PendingReindex => counts.pending_reindex += 1,
                Flag::Stale => counts.stale += 1,
                Flag::Fresh => {}
            }
        }
        let id = &a.input.id;
        items.push(ContentItem {
            answer_id: id.clone(),
            question: a.input.question.clone(),
            category: a.input.category.clone(),
            status: f.status,
            flags: f.flags.clone(),
            shown_in_window: usage.get(id).map_or(0, |u| u.shown),
            freshness: f,
        });
    }
    items.sort_by(|a, b| {
        a.status
            .cmp(&b.status)
            .then(b.shown_in_window.cmp(&a.shown_in_window))
            .then(a.answer_id.cmp(&b.answer_id))
    });
    let total = items.len();
    items.truncate(limit);
    Ok(ContentReport {
        window: window.clone(),
        answers_in_library: in_library,
        counts,
        answers: items,
        total,
    })
}

/// Everything `kefu report` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub window: Window,
    pub volume: VolumeReport,
    pub hot: ClusterReport,
    pub unanswered: ClusterReport,
    pub answers: AnswersReport,
    pub content: ContentReport,
}

/// Builds the full report (`limit` entries per section).
pub fn build(
    conn: &Connection,
    window: &Window,
    answers: &[Answer],
    policy: &AgePolicy,
    flags: &FlagThresholds,
    limit: usize,
    now: OffsetDateTime,
) -> Result<Report, AnalyticsError> {
    let by_id: HashMap<&str, &Answer> = answers.iter().map(|a| (a.input.id.as_str(), a)).collect();
    let lookup = |id: &str| {
        by_id.get(id).map(|a| AnswerInfo {
            question: a.input.question.clone(),
            category: a.input.category.clone(),
        })
    };
    let opts = ClusterOptions {
        limit,
        ..ClusterOptions::default()
    };
    Ok(Report {
        generated_at: rfc3339(now),
        window: window.clone(),
        volume: volume(conn, window)?,
        hot: clusters(conn, window, Scope::All, opts, &lookup)?,
        unanswered: clusters(conn, window, Scope::Unanswered, opts, &lookup)?,
        answers: answer_usage(conn, window, flags, limit, &lookup)?,
        content: content(conn, window, answers.iter(), now, policy, limit)?,
    })
}

/// `2026-11-24 08:05 UTC`.
fn minutes(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn num(m: &serde_json::Map<String, serde_json::Value>, k: &str, digits: usize) -> String {
    m.get(k)
        .and_then(serde_json::Value::as_f64)
        .map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn clusters_text(out: &mut String, c: &ClusterReport, empty: &str) {
    if c.clusters.is_empty() {
        let _ = writeln!(out, "  {empty}");
        return;
    }
    for (i, k) in c.clusters.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>2}. {:>5}x  {}  (handed off {})",
            i + 1,
            k.count,
            k.representative,
            pct(Some(k.handoff_share))
        );
        for e in &k.examples {
            let _ = writeln!(out, "             e.g. {e}");
        }
        if let Some(a) = &k.top_answer {
            let _ = writeln!(
                out,
                "             answered first with {} ({}x)",
                a.answer_id, a.times_first
            );
        }
    }
    if c.cluster_count > c.clusters.len() {
        let _ = writeln!(
            out,
            "  ... {} more clusters",
            c.cluster_count - c.clusters.len()
        );
    }
    if c.capped {
        let _ = writeln!(
            out,
            "  (clustered the newest {} of {} questions)",
            c.rows_clustered, c.rows_in_window
        );
    }
}

/// The report as text for a manager.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let v = &r.volume;
    let _ = writeln!(
        out,
        "kefu report: {} to {}",
        minutes(r.window.since),
        minutes(r.window.until)
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "Volume");
    if v.total == 0 {
        let _ = writeln!(out, "  no queries logged in the window");
    } else {
        let _ = writeln!(
            out,
            "  {} questions, {} handed off ({}), {} unanswered or below the hand-off threshold, {} escalated",
            v.total,
            v.handoffs,
            pct(v.handoff_rate),
            v.unanswered,
            v.escalations
        );
        let cats: Vec<String> = v
            .by_category
            .iter()
            .take(8)
            .map(|c| format!("{} {}", c.category.as_deref().unwrap_or("(none)"), c.count))
            .collect();
        let _ = writeln!(out, "  by category: {}", cats.join(", "));
        let days: Vec<String> = v
            .by_day
            .iter()
            .map(|d| format!("{} {}", d.day, d.count))
            .collect();
        let _ = writeln!(out, "  by day (UTC): {}", days.join(", "));
        let busiest = v
            .by_hour_utc
            .iter()
            .enumerate()
            .max_by_key(|(h, n)| (**n, std::cmp::Reverse(*h)))
            .map(|(h, n)| format!("{h:02}:00 UTC ({n})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  busiest hour: {busiest}");
        let _ = writeln!(
            out,
            "  top confidence p10/p50/p90: {} / {} / {}",
            num(&v.confidence, "p10", 3),
            num(&v.confidence, "p50", 3),
            num(&v.confidence, "p90", 3)
        );
        let _ = writeln!(
            out,
            "  latency p50/p90/p99: {} / {} / {} ms",
            num(&v.latency_ms, "p50", 1),
            num(&v.latency_ms, "p90", 1),
            num(&v.latency_ms, "p99", 1)
        );
        let _ = writeln!(
            out,
            "  feedback: {} ({} helpful)",
            v.feedback.count,
            pct(v.feedback.helpful_rate)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Hot questions");
    clusters_text(&mut out, &r.hot, "no queries logged in the window");
    let _ = writeln!(out);
    let _ = writeln!(out, "Unanswered (content gaps)");
    clusters_text(&mut out, &r.unanswered, "none in the window");
    let _ = writeln!(out);
    let a = &r.answers;
    let _ = writeln!(
        out,
        "Answers flagged for editors (shown >= {}, feedback >= {}, helpful < {})",
        a.thresholds.min_shown,
        a.thresholds.min_feedback,
        pct(Some(a.thresholds.helpful_below))
    );
    let flagged: Vec<&AnswerUsage> = a.answers.iter().filter(|u| u.flagged).collect();
    if flagged.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for u in flagged {
        let _ = writeln!(
            out,
            "  {}  shown {}, feedback {}, helpful {}  {}",
            u.answer_id,
            u.shown,
            u.feedback,
            pct(u.helpful_rate),
            u.question
                .as_deref()
                .unwrap_or("(no longer in the library)")
        );
    }
    let most: Vec<String> = a
        .answers
        .iter()
        .filter(|u| u.shown > 0)
        .take(5)
        .map(|u| format!("{} ({})", u.answer_id, u.shown))
        .collect();
    if !most.is_empty() {
        let _ = writeln!(out, "  most shown: {}", most.join(", "));
    }
    let _ = writeln!(out);
    let c = &r.content;
    let _ = writeln!(
        out,
        "Content: {} expired, {} pending reindex, {} stale (of {} answers)",
        c.counts.expired, c.counts.pending_reindex, c.counts.stale, c.answers_in_library
    );
    for item in &c.answers {
        let flags: Vec<&str> = item.flags.iter().map(|f| f.as_str()).collect();
        let _ = writeln!(
            out,
            "  [{}] {}  shown {}  {}",
            flags.join(","),
            item.answer_id,
            item.shown_in_window,
            item.question
        );
    }
    if c.total > c.answers.len() {
        let _ = writeln!(out, "  ... {} more", c.total - c.answers.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_window_holds_what_was_logged_earlier_in_its_last_millisecond() {
        let until = datetime!(2026-11-24 12:00:00.000_500 UTC);
        let w = Window {
            since: until - time::Duration::hours(1),
            until,
        };
        let (since, end) = w.ms();
        let logged = unix_ms(datetime!(2026-11-24 12:00:00.000_200 UTC));
        assert!(logged >= since && logged < end);
        // On a whole millisecond the end stays exclusive.
        let until = datetime!(2026-11-24 12:00:00.001 UTC);
        let w = Window {
            since: until - time::Duration::hours(1),
            until,
        };
        assert_eq!(w.ms().1, unix_ms(until));
    }

    #[test]
    fn windows_parse_and_bad_ones_are_refused() {
        let now = datetime!(2026-11-24 12:00 UTC);
        let w = Window::parse(None, None, None, now).unwrap();
        assert_eq!(w.until - w.since, time::Duration::days(7));
        let w = Window::parse(Some("24h"), None, None, now).unwrap();
        assert_eq!(w.since, datetime!(2026-11-23 12:00 UTC));
        let w = Window::parse(Some("30d"), None, None, now).unwrap();
        assert_eq!(w.until - w.since, time::Duration::days(30));
        let w = Window::parse(None, Some("2026-11-01T00:00:00+08:00"), None, now).unwrap();
        assert_eq!(w.since, datetime!(2026-10-31 16:00 UTC));
        assert_eq!(w.until, now);
        let w = Window::parse(None, None, Some("2026-11-20T00:00:00Z"), now).unwrap();
        assert_eq!(w.since, datetime!(2026-11-13 0:00 UTC));
        for (window, since, until) in [
            (Some("7"), None, None),
            (Some("7w"), None, None),
            (Some("0d"), None, None),
            (Some("-1d"), None, None),
            (Some(""), None, None),
            (Some("7天"), None, None),
            (Some("d"), None, None),
            (Some("99999999999999999d"), None, None),
            (Some("-99999999999999999d"), None, None),
            (Some("3651d"), None, None),
            (Some("7d"), Some("2026-11-01T00:00:00Z"), None),
            (None, Some("yesterday"), None),
            (
                None,
                Some("2026-11-20T00:00:00Z"),
                Some("2026-11-19T00:00:00Z"),
            ),
            (
                None,
                Some("2026-11-20T00:00:00Z"),
                Some("2026-11-20T00:00:00Z"),
            ),
            (None, Some("2000-01-01T00:00:00Z"), None),
        ] {
            assert!(
                Window::parse(window, since, until, now).is_err(),
                "{window:?} {since:?} {until:?}"
            );
        }
    }
}
