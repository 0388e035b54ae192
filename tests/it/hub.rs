//! The hub path for real, with no internet: a local HTTP server serves the
//! converted model files the way the Hugging Face hub does (`/{repo}/resolve/
//! {revision}/{file}`, `ETag`, `X-Repo-Commit`, ranged first-byte probes),
//! and `kefu` fetches them through the hf-hub crate via `HF_ENDPOINT`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use kefu::embedding::{cosine, Embedder, TextKind};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::common::{kefu_bin, model, model_dir};

const REPO: &str = "intfloat/multilingual-e5-small";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone)]
struct Hub {
    files: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

async fn resolve(State(hub): State<Hub>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    hub.log
        .lock()
        .unwrap()
        .push(format!("{path} range={}", range.as_deref().unwrap_or("-")));
    let not_found = || {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("x-error-code", "EntryNotFound")
            .body(Body::from("Entry not found"))
            .unwrap()
    };
    let Some(file) = path
        .strip_prefix(&format!("{REPO}/resolve/main/"))
        .filter(|f| ["config.json", "tokenizer.json", "model.safetensors"].contains(f))
    else {
        return not_found();
    };
    let path = hub.files.join(file);
    let Ok(mut f) = tokio::fs::File::open(&path).await else {
        return not_found();
    };
    let size = f.metadata().await.unwrap().len();
    let builder = Response::builder()
        .header(
            header::ETAG,
            HeaderValue::from_str(&format!("\"{file}-{size}\"")).unwrap(),
        )
        .header("x-repo-commit", COMMIT)
        .header(header::ACCEPT_RANGES, "bytes");
    match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let a: u64 = a.parse().unwrap();
            let b: u64 = b.parse::<u64>().unwrap_or(size - 1).min(size - 1);
            f.seek(std::io::SeekFrom::Start(a)).await.unwrap();
            let body = tokio_util::io::ReaderStream::new(f.take(b - a + 1));
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"))
                .header(header::CONTENT_LENGTH, b - a + 1)
                .body(Body::from_stream(body))
                .unwrap()
        }
        None => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size)
            .body(Body::from_stream(tokio_util::io::ReaderStream::new(f)))
            .unwrap(),
    }
}

/// Starts the fake hub on a free loopback port; it lives until the test ends.
fn start_hub() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let hub = Hub {
        files: model_dir(),
        log: Arc::default(),
    };
    let log = hub.log.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new()
                .route("/{*path}", axum::routing::get(resolve))
                .with_state(hub);
            axum::serve(listener, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), log)
}

#[test]
fn model_is_fetched_from_a_hub_endpoint_through_hf_hub() {
    let (addr, log) = start_hub();
    let hf_home = tempfile::tempdir().unwrap();
    let empty_models = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(kefu_bin())
            .args(["embed", "--kind", "query", "--model", REPO, "--models-dir"])
            .arg(empty_models.path())
            .arg("退货运费谁出？")
            .env("HF_ENDPOINT", format!("http://{addr}"))
            .env("HF_HOME", hf_home.path())
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("KEFU_MODEL")
            .output()
            .unwrap()
    };

    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hub_vector: Vec<f32> = serde_json::from_value(row["embedding"].clone()).unwrap();
    let local = &model().embed(&["退货运费谁出？"], TextKind::Query).unwrap()[0];
    assert!(cosine(&hub_vector, &local.vector) > 0.99999);

    let requests = log.lock().unwrap().clone();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        // hf-hub probes with `bytes=0-0`, then downloads the whole file.
        let url = format!("{REPO}/resolve/main/{file}");
        let downloads = requests
            .iter()
            .filter(|r| r.starts_with(&url) && !r.ends_with("range=bytes=0-0"))
            .count();
        assert_eq!(downloads, 1, "downloads of {file}: {requests:?}");
    }
    assert!(hf_home
        .path()
        .join("hub/models--intfloat--multilingual-e5-small/snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());

    // The second run is served from HF_HOME's cache: no new requests.
    let before = log.lock().unwrap().len();
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        log.lock().unwrap().len(),
        before,
        "cached files were fetched again"
    );
}
