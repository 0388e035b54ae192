//! A model's own settings that callers must not hard-code: its id and the
//! prefixes it expects on queries and passages.
//!
//! Resolution: a `kefu.json` in the model directory wins; otherwise the
//! built-in table of known model families (keyed by hub id or folder name)
//! decides; an unknown model gets no prefixes.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The per-model settings read from `kefu.json` or the built-in table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Canonical id, e.g. `intfloat/multilingual-e5-small`.
    pub model_id: String,
    /// Prepended to every query (`query: ` for multilingual-e5).
    #[serde(default)]
    pub query_prefix: String,
    /// Prepended to every passage (`passage: ` for multilingual-e5).
    #[serde(default)]
    pub passage_prefix: String,
}

/// Known families: (name fragment, canonical hub id, query prefix, passage prefix).
const KNOWN: &[(&str, &str, &str, &str)] = &[
    (
        "multilingual-e5-small",
        "intfloat/multilingual-e5-small",
        "query: ",
        "passage: ",
    ),
    (
        "multilingual-e5-base",
        "intfloat/multilingual-e5-base",
        "query: ",
        "passage: ",
    ),
    ("e5-", "", "query: ", "passage: "),
    (
        "all-minilm-l6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "",
        "",
    ),
];

impl ModelProfile {
    /// The built-in profile for a model name or hub id.
    pub fn builtin(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        for (fragment, id, q, p) in KNOWN {
            if lower.contains(fragment) {
                let model_id = if id.is_empty() { name } else { id };
                return Self {
                    model_id: model_id.to_string(),
                    query_prefix: q.to_string(),
                    passage_prefix: p.to_string(),
                };
            }
        }
        Self {
            model_id: name.to_string(),
            query_prefix: String::new(),
            passage_prefix: String::new(),
        }
    }

    /// The canonical hub id for a short model name (`multilingual-e5-small`),
    /// or the name itself when it already looks like `owner/name`.
    pub fn hub_id(name: &str) -> Option<String> {
        if name.contains('/') {
            return Some(name.to_string());
        }
        let lower = name.to_ascii_lowercase();
        KNOWN
            .iter()
            .find(|(fragment, id, ..)| !id.is_empty() && lower == *fragment)
            .map(|(_, id, ..)| id.to_string())
    }

    /// Reads `kefu.json` from a model directory, falling back to the
    /// built-in table for `fallback_name`.
    pub fn for_dir(dir: &Path, fallback_name: &str) -> Result<Self, String> {
        let path = dir.join("kefu.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{} does not parse: {e}", path.display())),
            Err(_) => Ok(Self::builtin(fallback_name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e5_uses_query_and_passage_prefixes() {
        let p = ModelProfile::builtin("intfloat/multilingual-e5-small");
        assert_eq!(p.query_prefix, "query: ");
        assert_eq!(p.passage_prefix, "passage: ");
        let p = ModelProfile::builtin("all-MiniLM-L6-v2");
        assert_eq!(p.model_id, "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(p.query_prefix, "");
    }

    #[test]
    fn short_names_map_to_hub_ids() {
        assert_eq!(
            ModelProfile::hub_id("multilingual-e5-small").as_deref(),
            Some("intfloat/multilingual-e5-small")
        );
        assert_eq!(ModelProfile::hub_id("a/b").as_deref(), Some("a/b"));
        assert_eq!(ModelProfile::hub_id("nothing-known"), None);
    }
}
