//! The answer record: what editors send ([`AnswerDraft`], untrusted JSON),
//! its validated form ([`AnswerInput`]) and the stored [`Answer`] with the
//! fields the server keeps (version, timestamps, index bookkeeping).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Publication state; only `published` answers are recommended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Published,
    Draft,
    Archived,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Draft => "draft",
            Self::Archived => "archived",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "published" => Some(Self::Published),
            "draft" => Some(Self::Draft),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

/// An answer as editors send it (JSON body, JSON Lines import). Unknown
/// fields are refused; server-kept fields may be present (e.g. in an export)
/// and are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerDraft {
    pub id: Option<String>,
    pub question: Option<String>,
    #[serde(default)]
    pub variants: Vec<String>,
    pub answer: Option<String>,
    pub category: Option<String>,
    #[serde(default)]
    pub subcategory: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub locale: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub valid_from: Option<String>,
    #[serde(default)]
    pub valid_until: Option<String>,
    #[serde(default)]
    pub review_after: Option<String>,
    // Server-kept; accepted so that `kefu export | kefu import` round-trips.
    #[serde(default, rename = "version")]
    pub _version: Option<serde_json::Value>,
    #[serde(default, rename = "created_at")]
    pub _created_at: Option<serde_json::Value>,
    #[serde(default, rename = "updated_at")]
    pub _updated_at: Option<serde_json::Value>,
    #[serde(default, rename = "indexed_at")]
    pub _indexed_at: Option<serde_json::Value>,
}

/// A validated answer, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerInput {
    pub id: String,
    pub question: String,
    pub variants: Vec<String>,
    pub answer: String,
    pub category: String,
    pub subcategory: String,
    pub tags: Vec<String>,
    pub locale: String,
    pub status: Status,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
    pub review_after: Option<OffsetDateTime>,
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub input: AnswerInput,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// When the vectors now in the index for this answer were computed.
    pub indexed_at: Option<OffsetDateTime>,
    /// Hash of the texts the index holds for this answer (None: not indexed).
    pub indexed_hash: Option<String>,
}

/// One field's problem in a draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

pub const MAX_ID_LEN: usize = 128;
const MAX_QUESTION_CHARS: usize = 1_000;
const MAX_ANSWER_CHARS: usize = 20_000;
const MAX_VARIANTS: usize = 50;
const MAX_TAGS: usize = 32;
const MAX_LABEL_CHARS: usize = 64;

/// Is `id` 1-128 chars of `[A-Za-z0-9._:-]`?
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn parse_time(
    field: &'static str,
    v: &Option<String>,
    errs: &mut Vec<FieldError>,
) -> Option<OffsetDateTime> {
    let s = v.as_deref()?;
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => Some(t),
        Err(_) => {
            errs.push(FieldError {
                field,
                message: format!(
                    "'{s}' is not an RFC 3339 date-time (e.g. 2026-11-11T00:00:00+08:00)"
                ),
            });
            None
        }
    }
}

/// Trims a list of short texts, drops duplicates (and `skip`), and reports
/// too many entries or an entry that is empty or too long.
fn clean_list(
    field: &'static str,
    items: &[String],
    (max_items, max_chars): (usize, usize),
    skip: Option<&str>,
    errs: &mut Vec<FieldError>,
) -> Vec<String> {
    if items.len() > max_items {
        errs.push(FieldError {
            field,
            message: format!("has more than {max_items} entries"),
        });
    }
    let mut out: Vec<String> = Vec::new();
    for item in items.iter().map(|i| i.trim()) {
        if item.is_empty() || item.chars().count() > max_chars {
            errs.push(FieldError {
                field,
                message: format!("each entry must be 1-{max_chars} characters"),
            });
            break;
        }
        if Some(item) != skip && !out.iter().any(|x| x == item) {
            out.push(item.to_string());
        }
    }
    out
}

fn text(field: &'static str, v: &Option<String>, max: usize, errs: &mut Vec<FieldError>) -> String {
    match v.as_deref().map(str::trim) {
        None | Some("") => {
            errs.push(FieldError {
                field,
                message: "is required and must not be empty".into(),
            });
            String::new()
        }
        Some(s) if s.chars().count() > max => {
            errs.push(FieldError {
                field,
                message: format!("is longer than {max} characters"),
            });
            String::new()
        }
        Some(s) => s.to_string(),
    }
}

impl AnswerDraft {
    /// Validates every field, reporting all problems at once. `id_override`
    /// is the id from the URL of a PUT (which wins over, and must agree with,
    /// an id in the body).
    pub fn validate(&self, id_override: Option<&str>) -> Result<AnswerInput, Vec<FieldError>> {
        let mut errs = Vec::new();
        let id = match (id_override, self.id.as_deref()) {
            (Some(url), Some(body)) if url != body => {
                errs.push(FieldError {
                    field: "id",
                    message: format!("'{body}' differs from the id in the URL '{url}'"),
                });
                String::new()
            }
            (Some(id), _) | (None, Some(id)) => id.to_string(),
            (None, None) => {
                errs.push(FieldError {
                    field: "id",
                    message: "is required".into(),
                });
                String::new()
            }
        };
        if !id.is_empty() && !valid_id(&id) {
            errs.push(FieldError {
                field: "id",
                message: "must be 1-128 characters of A-Z a-z 0-9 . _ : -".into(),
            });
        }
        let question = text("question", &self.question, MAX_QUESTION_CHARS, &mut errs);
        let answer = text("answer", &self.answer, MAX_ANSWER_CHARS, &mut errs);
        let category = text("category", &self.category, MAX_LABEL_CHARS, &mut errs);
        let locale = text("locale", &self.locale, 35, &mut errs);
        let subcategory = self.subcategory.as_deref().unwrap_or("").trim().to_string();
        if subcategory.chars().count() > MAX_LABEL_CHARS {
            errs.push(FieldError {
                field: "subcategory",
                message: format!("is longer than {MAX_LABEL_CHARS} characters"),
            });
        }
        let variants = clean_list(
            "variants",
            &self.variants,
            (MAX_VARIANTS, MAX_QUESTION_CHARS),
            Some(&question),
            &mut errs,
        );
        let tags = clean_list(
            "tags",
            &self.tags,
            (MAX_TAGS, MAX_LABEL_CHARS),
            None,
            &mut errs,
        );
        let status = match self.status.as_deref() {
            None => Status::Published,
            Some(s) => Status::parse(s).unwrap_or_else(|| {
                errs.push(FieldError {
                    field: "status",
                    message: format!("'{s}' is not one of published, draft, archived"),
                });
                Status::Published
            }),
        };
        let valid_from = parse_time("valid_from", &self.valid_from, &mut errs);
        let valid_until = parse_time("valid_until", &self.valid_until, &mut errs);
        let review_after = parse_time("review_after", &self.review_after, &mut errs);
        if let (Some(a), Some(b)) = (valid_from, valid_until) {
            if a >= b {
                errs.push(FieldError {
                    field: "valid_until",
                    message: "must be later than valid_from".into(),
                });
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(AnswerInput {
            id,
            question,
            variants,
            answer,
            category,
            subcategory,
            tags,
            locale,
            status,
            valid_from,
            valid_until,
            review_after,
        })
    }
}

/// Which text of an answer a vector was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextRole {
    Question,
    Variant,
    Answer,
}

impl TextRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Question => "question",
            Self::Variant => "variant",
            Self::Answer => "answer",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "question" => Some(Self::Question),
            "variant" => Some(Self::Variant),
            "answer" => Some(Self::Answer),
            _ => None,
        }
    }
}

impl AnswerInput {
    /// The texts the index holds for this answer, in a stable order:
    /// the standard question, each variant, the answer text.
    pub fn texts(&self) -> Vec<(TextRole, &str)> {
        let mut out = vec![(TextRole::Question, self.question.as_str())];
        out.extend(
            self.variants
                .iter()
                .map(|v| (TextRole::Variant, v.as_str())),
        );
        out.push((TextRole::Answer, self.answer.as_str()));
        // Editors' answers always have both; an evaluation corpus may lack one.
        out.retain(|(_, t)| !t.is_empty());
        out
    }

    /// A hash of the indexed texts: when it changes, the answer needs reindexing.
    pub fn text_hash(&self) -> String {
        let mut h = Sha256::new();
        for (role, t) in self.texts() {
            h.update(role.as_str().as_bytes());
            h.update([0]);
            h.update(t.as_bytes());
            h.update([0]);
        }
        hex(&h.finalize())
    }
}

/// Hash of one text for the embedding cache.
pub fn hash_text(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Formats a time as RFC 3339 (UTC offsets kept as given).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The JSON form of a stored answer (for the API and `kefu export`).
pub fn answer_json(a: &Answer) -> serde_json::Value {
    let i = &a.input;
    let opt = |t: Option<OffsetDateTime>| t.map(rfc3339);
    serde_json::json!({
        "id": i.id,
        "question": i.question,
        "variants": i.variants,
        "answer": i.answer,
        "category": i.category,
        "subcategory": i.subcategory,
        "tags": i.tags,
        "locale": i.locale,
        "status": i.status.as_str(),
        "valid_from": opt(i.valid_from),
        "valid_until": opt(i.valid_until),
        "review_after": opt(i.review_after),
        "version": a.version,
        "created_at": rfc3339(a.created_at),
        "updated_at": rfc3339(a.updated_at),
        "indexed_at": opt(a.indexed_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(json: serde_json::Value) -> AnswerDraft {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("ship.delivery-time:v2_x"));
        assert!(!valid_id(""));
        assert!(!valid_id("has space"));
        assert!(!valid_id("中文"));
        assert!(!valid_id(&"a".repeat(129)));
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let d = draft(
            serde_json::json!({"id": "bad id", "question": " ", "answer": "ok",
            "category": "order", "locale": "zh-CN", "status": "gone", "valid_until": "tomorrow"}),
        );
        let errs = d.validate(None).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["id", "question", "status", "valid_until"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<AnswerDraft, _> =
            serde_json::from_value(serde_json::json!({"id": "a", "colour": 1}));
        assert!(r.is_err());
    }

    #[test]
    fn text_hash_follows_the_indexed_texts_only() {
        let d = draft(
            serde_json::json!({"id": "a", "question": "q", "answer": "x",
            "category": "order", "locale": "en"}),
        );
        let a = d.validate(None).unwrap();
        let mut b = a.clone();
        b.tags.push("new".into());
        assert_eq!(a.text_hash(), b.text_hash());
        b.answer.push('!');
        assert_ne!(a.text_hash(), b.text_hash());
    }
}
