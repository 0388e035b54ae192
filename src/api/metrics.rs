//! Prometheus metrics: requests and latency per route and status, embedding
//! time and batch sizes, the question queue (depth, requests per batch,
//! rejections), index size, reindex duration, the query log (written,
//! dropped when its queue is full, lost to a failed write).

use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::embedding::{EmbedError, Embedder, Embedding, TextKind};
use crate::recommend::batcher::{BatchInfo, BatchObserver};

/// The registry and every metric kefu exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub embed_seconds: HistogramVec,
    pub embed_batch: Histogram,
    pub queue_depth: IntGauge,
    pub queue_batch: Histogram,
    pub queue_rejected: IntCounter,
    pub index_vectors: IntGauge,
    pub index_answers: IntGauge,
    pub reindex_seconds: Histogram,
    pub query_log: crate::analytics::LogCounters,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "kefu_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("kefu_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]),
            &["route", "method"],
        )
        .expect("metric");
        let embed_seconds = HistogramVec::new(
            HistogramOpts::new("kefu_embedding_seconds", "Time to embed one batch").buckets(vec![
                0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
            ]),
            &["kind"],
        )
        .expect("metric");
        let embed_batch = Histogram::with_opts(
            HistogramOpts::new("kefu_embedding_batch_size", "Texts per embedding batch")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )
        .expect("metric");
        let queue_depth = IntGauge::new(
            "kefu_embed_queue_depth",
            "Questions waiting for the embedding worker",
        )
        .expect("metric");
        let queue_batch = Histogram::with_opts(
            HistogramOpts::new(
                "kefu_embed_queue_batch_requests",
                "Recommend requests embedded together in one batch",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .expect("metric");
        let queue_rejected = IntCounter::new(
            "kefu_embed_queue_rejected_total",
            "Recommend requests refused (429 busy) because the embedding queue was full",
        )
        .expect("metric");
        let index_vectors =
            IntGauge::new("kefu_index_vectors", "Vectors in the live index").expect("metric");
        let index_answers =
            IntGauge::new("kefu_index_answers", "Answers in the library").expect("metric");
        let reindex_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "kefu_reindex_duration_seconds",
                "Duration of index rebuilds",
            )
            .buckets(vec![0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]),
        )
        .expect("metric");
        let query_log = crate::analytics::LogCounters {
            written: IntCounter::new(
                "kefu_query_log_written_total",
                "Recommend and suggest responses written to the query log",
            )
            .expect("metric"),
            dropped: IntCounter::new(
                "kefu_query_log_dropped_total",
                "Query log entries dropped because the writer's queue was full",
            )
            .expect("metric"),
            failed: IntCounter::new(
                "kefu_query_log_failed_total",
                "Query log entries lost to a failed database write",
            )
            .expect("metric"),
        };
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(embed_seconds.clone()),
            Box::new(embed_batch.clone()),
            Box::new(queue_depth.clone()),
            Box::new(queue_batch.clone()),
            Box::new(queue_rejected.clone()),
            Box::new(index_vectors.clone()),
            Box::new(index_answers.clone()),
            Box::new(reindex_seconds.clone()),
            Box::new(query_log.written.clone()),
            Box::new(query_log.dropped.clone()),
            Box::new(query_log.failed.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Self {
            registry,
            requests,
            latency,
            embed_seconds,
            embed_batch,
            queue_depth,
            queue_batch,
            queue_rejected,
            index_vectors,
            index_answers,
            reindex_seconds,
            query_log,
        }
    }

    /// An observer for the embedding queue's worker: batch sizes and depth.
    pub fn queue_observer(&self) -> BatchObserver {
        let (depth, batch) = (self.queue_depth.clone(), self.queue_batch.clone());
        Box::new(move |b: BatchInfo| {
            depth.set(b.depth as i64);
            batch.observe(b.requests as f64);
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// An [`Embedder`] that records time and batch size of every call.
pub struct Instrumented {
    pub inner: Arc<dyn Embedder>,
    pub metrics: Metrics,
}

impl Embedder for Instrumented {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    fn calibration(&self) -> Option<crate::recommend::rank::Calibration> {
        self.inner.calibration()
    }
    fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Embedding>, EmbedError> {
        let started = Instant::now();
        let out = self.inner.embed(texts, kind);
        self.metrics
            .embed_seconds
            .with_label_values(&[&kind.to_string()])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.embed_batch.observe(texts.len() as f64);
        out
    }
}
