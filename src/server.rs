//! `kefu serve`: binds the address, serves the API at once (healthz up,
//! readyz 503), loads the model beside the library (catalog and index) on
//! blocking threads (building the index if none fits the model), then
//! reports ready. Shuts down
//! gracefully on SIGINT or SIGTERM, letting in-flight requests finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::analytics::{Analytics, AnalyticsSettings};
use crate::api::metrics::Instrumented;
use crate::api::{router, ApiSettings, AppState, Metrics};
use crate::embedding::{resolve_model, CandleBert, EmbedOptions, Embedder};
use crate::recommend::batcher::{BatchSettings, EmbedQueue};
use crate::recommend::{Engine, LibraryData, ReindexMode, Settings};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub model: String,
    pub models_dir: PathBuf,
    pub embed: EmbedOptions,
    pub engine: Settings,
    pub api: ApiSettings,
    /// The question-embedding queue of recommend and suggest.
    pub queue: BatchSettings,
    /// The query log (retention, queue) and the editor flags.
    pub analytics: AnalyticsSettings,
}

/// Refuses to expose an unauthenticated API beyond loopback.
pub fn check_exposure(addr: &SocketAddr, keys_configured: bool) -> Result<()> {
    if !keys_configured && !addr.ip().is_loopback() {
        bail!(
            "refusing to serve on {addr} without API keys: set KEFU_API_KEYS=reader:KEY,editor:KEY \
             or bind a loopback address such as 127.0.0.1"
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Loads model and engine, building the index if needed, then marks ready.
fn load(state: &AppState, cfg: &ServerConfig) -> Result<()> {
    let files = resolve_model(&cfg.model, &cfg.models_dir)?;
    let (model_id, dimension) = CandleBert::describe(&files)?;
    // The segmentation dictionary, the model and the library (catalog and
    // index) load side by side: a start takes as long as the slowest.
    std::thread::spawn(crate::index::lexical::warm_up);
    let (model, data) = std::thread::scope(|s| {
        let model = std::thread::Builder::new()
            .name("kefu-load-model".into())
            .spawn_scoped(s, || CandleBert::load(&files, cfg.embed))
            .context("starting the model loader")?;
        let data = LibraryData::load(
            &cfg.data_dir,
            &model_id,
            dimension,
            cfg.engine.question_kind,
        );
        let model = match model.join() {
            Ok(model) => model,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        Ok::<_, anyhow::Error>((model, data))
    })?;
    let model = model?;
    let data = data?;
    tracing::info!(
        model = model.model_id(),
        ms = model.info().load_ms,
        "model loaded"
    );
    let embedder: Arc<dyn Embedder> = Arc::new(Instrumented {
        inner: Arc::new(model),
        metrics: state.metrics.clone(),
    });
    let (engine, needs_build) = Engine::from_data(data, embedder, cfg.engine.clone())?;
    let metrics = state.metrics.clone();
    engine.on_reindex(Box::new(move |secs| metrics.reindex_seconds.observe(secs)));
    let queue = EmbedQueue::start(
        engine.embedder().clone(),
        cfg.queue,
        Some(state.metrics.queue_observer()),
    )
    .context("starting the embedding worker thread")?;
    state.queue.store(Some(Arc::new(queue)));
    // The query log opens with the engine (retention applied before ready).
    let analytics = Analytics::open(
        &cfg.data_dir,
        engine.settings().min_confidence(),
        cfg.analytics,
        state.metrics.query_log.clone(),
    )
    .context("opening the query log")?;
    if engine.settings().feedback_boost > 0.0 {
        engine.set_feedback_counts(analytics.helpful_counts(None)?);
    }
    state.analytics.store(Some(Arc::new(analytics)));
    state.engine.store(Some(engine.clone()));
    if needs_build && !engine.list().is_empty() {
        tracing::info!("no index for this model on disk: building it");
        engine.reindex_now(ReindexMode::Incremental, &|_, _| {})?;
    }
    state.ready.store(true, Ordering::Release);
    tracing::info!(index_version = engine.index().manifest().version, "ready");
    eprintln!("kefu: ready");
    Ok(())
}

/// Runs the server until a shutdown signal.
pub async fn serve(cfg: ServerConfig) -> Result<()> {
    check_exposure(&cfg.addr, !cfg.api.keys.is_empty())?;
    if cfg.api.keys.is_empty() {
        eprintln!(
            "kefu: no API keys configured (KEFU_API_KEYS): serving without authentication on loopback only"
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("binding {}", cfg.addr))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "kefu: listening on http://{addr} (data dir {})",
        cfg.data_dir.display()
    );
    let state = AppState::new(cfg.api.clone(), Metrics::new());
    let loader_state = state.clone();
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    tokio::spawn(async move {
        let failure = match tokio::task::spawn_blocking(move || load(&loader_state, &cfg)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("loading panicked: {e}"),
        };
        let _ = fail_tx.send(failure);
    });
    let failed = Arc::new(std::sync::Mutex::new(None));
    let failed_slot = failed.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            Ok(e) = fail_rx => {
                *failed_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
    };
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(stop)
        .await
        .context("serving")?;
    // Questions handed to the review queue's background writer are stored
    // before the process exits.
    if let Some(engine) = state.engine.load_full() {
        let flushed = tokio::task::spawn_blocking(move || {
            engine.flush_reviews(std::time::Duration::from_secs(5))
        })
        .await
        .unwrap_or(false);
        if !flushed {
            tracing::warn!("questions waiting for the review queue may not have been stored");
        }
    }
    // Write what the query log still holds.
    if let Some(analytics) = state.analytics.load_full() {
        tokio::task::spawn_blocking(move || analytics.close())
            .await
            .ok();
    }
    let failure = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failure {
        Some(e) => Err(e.context("loading the model or the index failed")),
        None => Ok(()),
    }
}
