//! The HTTP API (axum): routes, shared state, auth and metrics middleware,
//! JSON errors. Only this module knows axum. Handlers call the engine on
//! blocking threads (`spawn_blocking`), never on the async runtime;
//! recommend's question embedding goes through the batching queue
//! ([`EmbedQueue`]) and is awaited.

mod analytics;
mod answers;
pub mod auth;
pub mod error;
pub mod metrics;
mod ops;
mod recommend;
mod review;
mod taxonomy;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::analytics::{Analytics, LogEntry};
use crate::recommend::batcher::EmbedQueue;
use crate::recommend::Engine;
pub use auth::Keys;
pub use error::ApiError;
pub use metrics::Metrics;

/// Limits and defaults of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body (413 above).
    pub max_body_bytes: usize,
    /// Longest question, in characters (422 above).
    pub max_question_chars: usize,
    pub keys: Keys,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_question_chars: 2_000,
            keys: Keys::default(),
        }
    }
}

/// Shared state: the engine and the embedding queue appear once the model
/// and index are loaded.
pub struct AppState {
    pub engine: ArcSwapOption<Engine>,
    pub queue: ArcSwapOption<EmbedQueue>,
    pub ready: AtomicBool,
    pub settings: ApiSettings,
    pub metrics: Metrics,
    /// The query log and feedback store, once the engine is open.
    pub analytics: ArcSwapOption<Analytics>,
}

impl AppState {
    pub fn new(settings: ApiSettings, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            engine: ArcSwapOption::empty(),
            queue: ArcSwapOption::empty(),
            ready: AtomicBool::new(false),
            settings,
            metrics,
            analytics: ArcSwapOption::empty(),
        })
    }

    /// The engine, or 503 while loading.
    pub fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        self.engine.load_full().ok_or_else(ApiError::not_ready)
    }

    /// The engine once ready to recommend (model and index loaded).
    pub fn ready_engine(&self) -> Result<Arc<Engine>, ApiError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(ApiError::not_ready());
        }
        self.engine()
    }

    /// The analytics store, or 503 while loading.
    pub fn analytics(&self) -> Result<Arc<Analytics>, ApiError> {
        self.analytics.load_full().ok_or_else(ApiError::not_ready)
    }

    /// Hands a response's entry to the query log writer (never blocks).
    pub fn log_query(&self, entry: LogEntry) {
        if let Some(a) = self.analytics.load().as_ref() {
            a.log(entry);
        }
    }

    /// The question-embedding queue, or 503 while loading.
    pub fn embed_queue(&self) -> Result<Arc<EmbedQueue>, ApiError> {
        self.queue.load_full().ok_or_else(ApiError::not_ready)
    }
}

/// Runs blocking engine work off the async runtime.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    if let Some(role) = auth::needed_role(&method, &route) {
        if let Err(e) = state.settings.keys.check(req.headers(), role) {
            let resp = e.into_response();
            record(&state, &route, method.as_str(), resp.status(), started);
            return resp;
        }
    }
    let resp = next.run(req).await;
    record(&state, &route, method.as_str(), resp.status(), started);
    resp
}

fn record(state: &AppState, route: &str, method: &str, status: StatusCode, started: Instant) {
    let m = &state.metrics;
    m.requests
        .with_label_values(&[route, method, status.as_str()])
        .inc();
    m.latency
        .with_label_values(&[route, method])
        .observe(started.elapsed().as_secs_f64());
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
        .into_response();
    }
    resp
}

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.settings.max_body_bytes;
    Router::new()
        .route("/v1/recommend", post(recommend::recommend))
        .route("/v1/suggest", get(recommend::suggest))
        .route("/v1/answers", post(answers::upsert).get(answers::list))
        .route(
            "/v1/answers/{id}",
            get(answers::get_one)
                .put(answers::put)
                .delete(answers::delete),
        )
        .route(
            "/v1/answers/{id}/related",
            get(answers::related).put(answers::put_related),
        )
        .route("/v1/reindex", post(ops::reindex))
        .route("/v1/reindex/{job_id}", get(ops::job))
        .route("/v1/index", get(ops::index))
        .route("/v1/review", get(review::list))
        .route("/v1/review/{id}", post(review::decide))
        .route("/v1/taxonomy", get(taxonomy::get))
        .route(
            "/v1/taxonomy/tags/{tag}/related",
            axum::routing::put(taxonomy::put_related),
        )
        .route("/v1/feedback", post(analytics::feedback))
        .route("/v1/analytics/hot", get(analytics::hot))
        .route("/v1/analytics/unanswered", get(analytics::unanswered))
        .route("/v1/analytics/volume", get(analytics::volume))
        .route("/v1/analytics/answers", get(analytics::answers))
        .route("/v1/analytics/content", get(analytics::content))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(method_not_allowed))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
