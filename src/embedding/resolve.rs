//! Finding a model's files. Order: a local directory (`--model` /
//! `KEFU_MODEL` given as a path); a name under the models directory
//! (default `models/`); the Hugging Face hub through hf-hub (honouring
//! `HF_ENDPOINT` and `HF_HOME`, skipped when `HF_HUB_OFFLINE=1`). When all
//! fail, the error names every place tried and the offline fetch command.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{EmbedError, ModelProfile};

/// Where a model was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOrigin {
    /// A directory given directly.
    Directory,
    /// A folder under the models directory.
    ModelsDir,
    /// The Hugging Face hub (or the server `HF_ENDPOINT` names).
    Hub { repo: String, endpoint: String },
}

impl fmt::Display for ModelOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory => f.write_str("directory"),
            Self::ModelsDir => f.write_str("models directory"),
            Self::Hub { repo, endpoint } => write!(f, "hub {repo} via {endpoint}"),
        }
    }
}

/// The files of a resolved model and its settings.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
    pub profile: ModelProfile,
    pub origin: ModelOrigin,
}

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const WEIGHTS: &str = "model.safetensors";
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The command that installs a model without the hub.
pub fn fetch_hint(model: &str) -> String {
    let lower = model.to_ascii_lowercase();
    if lower.contains("minilm") {
        "scripts/fetch-model.sh all-MiniLM-L6-v2".into()
    } else {
        "scripts/fetch-model.sh multilingual-e5-small".into()
    }
}

fn from_dir(dir: &Path, origin: ModelOrigin) -> Result<ModelFiles, EmbedError> {
    let missing: Vec<&str> = [CONFIG, TOKENIZER, WEIGHTS]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(EmbedError::InvalidModel {
            path: dir.display().to_string(),
            reason: format!(
                "missing {} (a complete model folder has {CONFIG}, {TOKENIZER} and {WEIGHTS})",
                missing.join(", ")
            ),
        });
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let profile = ModelProfile::for_dir(dir, &name).map_err(|reason| EmbedError::InvalidModel {
        path: dir.display().to_string(),
        reason,
    })?;
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        config: dir.join(CONFIG),
        tokenizer: dir.join(TOKENIZER),
        weights: dir.join(WEIGHTS),
        profile,
        origin,
    })
}

fn from_hub(repo: &str) -> Result<ModelFiles, String> {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(progress)
        .build()
        .map_err(|e| e.to_string())?;
    let model = api.model(repo.to_string());
    let mut paths = Vec::new();
    for file in [CONFIG, TOKENIZER, WEIGHTS] {
        let path = model
            .get(file)
            .map_err(|e| format!("fetching {file} failed: {e}"))?;
        paths.push(path);
    }
    let dir = paths[0].parent().map(Path::to_path_buf).unwrap_or_default();
    let mut paths = paths.into_iter();
    let mut next = || paths.next().unwrap_or_default();
    Ok(ModelFiles {
        dir,
        config: next(),
        tokenizer: next(),
        weights: next(),
        profile: ModelProfile::builtin(repo),
        origin: ModelOrigin::Hub {
            repo: repo.into(),
            endpoint,
        },
    })
}

/// Finds the files of `spec` (a path, a name under `models_dir`, or a hub id).
pub fn resolve_model(spec: &str, models_dir: &Path) -> Result<ModelFiles, EmbedError> {
    let mut tried = Vec::new();
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return from_dir(as_path, ModelOrigin::Directory);
    }
    tried.push(format!("directory '{spec}': not a directory"));

    let under = models_dir.join(spec);
    if under.is_dir() {
        return from_dir(&under, ModelOrigin::ModelsDir);
    }
    tried.push(format!("{}: not a directory", under.display()));

    match ModelProfile::hub_id(spec) {
        None => tried.push(format!(
            "Hugging Face hub: '{spec}' is neither a hub id (owner/name) nor a known model name"
        )),
        Some(_) if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") => {
            tried.push("Hugging Face hub: skipped (HF_HUB_OFFLINE=1)".into())
        }
        Some(repo) => match from_hub(&repo) {
            Ok(files) => return Ok(files),
            Err(e) => {
                let endpoint =
                    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
                tried.push(format!("Hugging Face hub '{repo}' at {endpoint}: {e}"));
            }
        },
    }
    Err(EmbedError::ModelNotFound {
        model: spec.to_string(),
        tried,
        fetch_hint: fetch_hint(spec),
    })
}
