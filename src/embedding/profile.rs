//! A model's own settings that callers must not hard-code: its id and the
//! prefixes it expects on queries and passages.
//!
//! Resolution: a `kefu.json` in the model directory wins; otherwise the
//! built-in table of known model families (keyed by hub id or folder name)
//! decides; an unknown model gets no prefixes.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::recommend::rank::Calibration;

/// The per-model settings read from `kefu.json` or the built-in table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Canonical id, e.g. `intfloat/multilingual-e5-small`.
    pub model_id: String,
    /// Prepended to every query (`query: ` for multilingual-e5).
    #[serde(default)]
    pub query_prefix: String,
    /// Prepended to every passage (`passage: ` for multilingual-e5).
    #[serde(default)]
    pub passage_prefix: String,
    /// The confidence calibration fitted for this model (`kefu eval
    /// --calibrate`); absent: the built-in one for the model family, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
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

/// Calibrations fitted with `kefu eval --calibrate` under the default
/// retrieval settings (see the README's Quality section): clinc150's 2,000
/// in-scope and 1,000 out-of-scope questions over its 150 intents.
fn builtin_calibration(model_id: &str) -> Option<Calibration> {
    match model_id {
        "intfloat/multilingual-e5-small" => Some(Calibration {
            bias: 0.539_580_4,
            weights: [
                0.348_623_4,
                1.113_077_3,
                0.250_469_9,
                0.687_294_24,
                1.021_808_6,
                0.223_486_13,
                0.721_196_9,
            ],
            mean: [
                0.968_970_9,
                0.898_167_9,
                0.169_928_34,
                0.219_173_79,
                0.038_277_73,
                0.671_990_9,
                0.014_207_389,
            ],
            scale: [
                0.048_207_42,
                0.043_345_205,
                0.127_495_4,
                0.175_479_9,
                0.026_569_951,
                0.294_094_06,
                0.006_870_542_7,
            ],
            min_confidence: 0.343_963,
            source: "kefu eval --calibrate on clinc150 (2000 in scope, 1000 out of scope): \
                     hybrid, minmax, w=0.85, T=0.02, questions as query"
                .into(),
        }),
        _ => None,
    }
}

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
                    calibration: builtin_calibration(model_id),
                };
            }
        }
        Self {
            model_id: name.to_string(),
            query_prefix: String::new(),
            passage_prefix: String::new(),
            calibration: None,
        }
    }

    /// The calibration to use: this profile's, else the built-in one for its model.
    pub fn calibration(&self) -> Calibration {
        self.calibration
            .clone()
            .or_else(|| builtin_calibration(&self.model_id))
            .unwrap_or_else(Calibration::uncalibrated)
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
    fn e5_small_carries_its_calibration() {
        let p = ModelProfile::builtin("multilingual-e5-small");
        let c = p.calibration();
        assert!(c.source.contains("clinc150"));
        assert!(c.min_confidence > 0.0 && c.min_confidence < 1.0);
        // A kefu.json calibration wins over the built-in one.
        let mut own = c.clone();
        own.min_confidence = 0.9;
        let p = ModelProfile {
            calibration: Some(own),
            ..p
        };
        assert_eq!(p.calibration().min_confidence, 0.9);
        assert!(ModelProfile::builtin("all-MiniLM-L6-v2")
            .calibration
            .is_none());
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
