//! A compact SentencePiece-unigram model for the `tokenizers` pipeline.
//!
//! `tokenizers`' own `Unigram` keeps its pieces in a trie with a hash map per
//! node: for XLM-R's 250,002 pieces that is ~285 MB resident and ~0.5 s to
//! load. [`CompactUnigram`] keeps the same pieces in a double-array trie
//! (yada), their scores, and the piece strings in one buffer (~20 MB), and
//! runs the same Viterbi search (the same unknown-token penalty, fused
//! unknowns and tie-breaking), so token ids are identical. Everything else
//! (normaliser, pre-tokeniser, added tokens, template) is `tokenizers`' own
//! code, built from the same `tokenizer.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::models::unigram::UnigramTrainer;
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Token, TokenizerBuilder, TokenizerImpl,
};

/// `tokenizers`' unknown-piece penalty (`K_UNK_PENALTY`).
const UNK_PENALTY: f64 = 10.0;

/// A `tokenizers` pipeline around [`CompactUnigram`].
pub type LeanTokenizer = TokenizerImpl<
    CompactUnigram,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Unigram pieces in a double-array trie.
pub struct CompactUnigram {
    trie: yada::DoubleArray<Vec<u8>>,
    scores: Vec<f64>,
    text: String,
    offsets: Vec<u32>,
    unk_id: u32,
    min_score: f64,
}

impl CompactUnigram {
    /// Builds the model from `(piece, score)` pairs in id order. `None` when
    /// the vocabulary cannot be stored this way (an empty piece, too many
    /// pieces for the trie's 31-bit values).
    pub fn new(vocab: Vec<(String, f64)>, unk_id: usize) -> Option<Self> {
        if unk_id >= vocab.len() || vocab.len() >= 1 << 31 {
            return None;
        }
        let mut text = String::new();
        let mut offsets = Vec::with_capacity(vocab.len() + 1);
        let mut scores = Vec::with_capacity(vocab.len());
        offsets.push(0u32);
        for (piece, score) in &vocab {
            if piece.is_empty() {
                return None;
            }
            text.push_str(piece);
            offsets.push(u32::try_from(text.len()).ok()?);
            scores.push(*score);
        }
        let min_score = scores.iter().copied().fold(f64::INFINITY, f64::min);
        // `tokenizers` maps a repeated piece to its last id.
        let mut keys: HashMap<&str, u32> = HashMap::with_capacity(vocab.len());
        for (id, (piece, _)) in vocab.iter().enumerate() {
            keys.insert(piece.as_str(), id as u32);
        }
        let mut keyset: Vec<(&[u8], u32)> =
            keys.into_iter().map(|(k, v)| (k.as_bytes(), v)).collect();
        keyset.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let trie = yada::builder::DoubleArrayBuilder::build(&keyset).ok()?;
        Some(Self {
            trie: yada::DoubleArray::new(trie).ok()?,
            scores,
            text,
            offsets,
            unk_id: unk_id as u32,
            min_score,
        })
    }

    fn piece(&self, id: u32) -> Option<&str> {
        let id = id as usize;
        let (a, b) = (*self.offsets.get(id)?, *self.offsets.get(id + 1)?);
        self.text.get(a as usize..b as usize)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.trie.0.len() + 8 * self.scores.len() + self.text.len() + 4 * self.offsets.len()
    }

    /// The best segmentation of `sentence` as (id, byte range) pieces, the
    /// same search as `tokenizers`' `Unigram::encode_optimized`.
    fn segment(&self, sentence: &str) -> Vec<(u32, usize, usize)> {
        #[derive(Clone, Copy)]
        struct Node {
            id: u32,
            score: f64,
            starts_at: Option<usize>,
        }
        let size = sentence.len();
        let bytes = sentence.as_bytes();
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![
            Node {
                id: 0,
                score: 0.0,
                starts_at: None,
            };
            size + 1
        ];
        let mut starts_at = 0;
        while starts_at < size {
            let here = best[starts_at].score;
            let mblen = sentence[starts_at..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
            let mut has_single_node = false;
            for (id, len) in self.trie.common_prefix_search(&bytes[starts_at..]) {
                let key_pos = starts_at + len;
                let candidate = self.scores[id as usize] + here;
                let target = &mut best[key_pos];
                if target.starts_at.is_none() || candidate > target.score {
                    *target = Node {
                        id,
                        score: candidate,
                        starts_at: Some(starts_at),
                    };
                }
                if len == mblen {
                    has_single_node = true;
                }
            }
            if !has_single_node {
                let candidate = unk_score + here;
                let target = &mut best[starts_at + mblen];
                if target.starts_at.is_none() || candidate > target.score {
                    *target = Node {
                        id: self.unk_id,
                        score: candidate,
                        starts_at: Some(starts_at),
                    };
                }
            }
            starts_at += mblen;
        }
        // Backtrack; runs of unknown pieces fuse into one.
        let mut out = Vec::new();
        let mut ends_at = size;
        let mut unk_end: Option<usize> = None;
        while ends_at > 0 {
            let node = best[ends_at];
            let Some(start) = node.starts_at else { break };
            if node.id == self.unk_id {
                unk_end.get_or_insert(ends_at);
            } else {
                if let Some(end) = unk_end.take() {
                    out.push((ends_at, end));
                }
                out.push((start, ends_at));
            }
            ends_at = start;
        }
        if let Some(end) = unk_end {
            out.push((0, end));
        }
        out.reverse();
        // Each piece string back to its id, as `Unigram::tokenize` does (a
        // fused unknown run that happens to be a piece takes its id).
        out.into_iter()
            .map(|(a, b)| {
                let id = self
                    .trie
                    .exact_match_search(&bytes[a..b])
                    .unwrap_or(self.unk_id);
                (id, a, b)
            })
            .collect()
    }
}

impl Model for CompactUnigram {
    type Trainer = UnigramTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        if sequence.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .segment(sequence)
            .into_iter()
            .map(|(id, a, b)| Token::new(id, sequence[a..b].to_string(), (a, b)))
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.trie.exact_match_search(token.as_bytes())
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.piece(id).map(str::to_string)
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.scores.len() as u32)
            .filter_map(|id| self.piece(id).map(|p| (p.to_string(), id)))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.scores.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("kefu's compact unigram model is load-only".into())
    }

    fn get_trainer(&self) -> UnigramTrainer {
        UnigramTrainer::default()
    }
}

#[derive(Deserialize)]
struct FileSpec {
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    post_processor: Option<PostProcessorWrapper>,
    decoder: Option<DecoderWrapper>,
    #[serde(default)]
    added_tokens: Vec<AddedSpec>,
    #[serde(default)]
    truncation: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    padding: Option<serde::de::IgnoredAny>,
    model: ModelSpec,
}

#[derive(Deserialize)]
struct AddedSpec {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default = "yes")]
    normalized: bool,
    #[serde(default)]
    special: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct ModelSpec {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    vocab: Option<serde_json::Value>,
    #[serde(default)]
    unk_id: Option<usize>,
    #[serde(default)]
    byte_fallback: bool,
}

/// Loads `tokenizer.json` with a [`CompactUnigram`] model when it holds a
/// unigram model this module reproduces (no byte fallback, an unknown piece,
/// no truncation or padding, added tokens at their stated ids); `Ok(None)`
/// otherwise, for the caller to load it with `tokenizers` as it is.
pub fn load_lean(text: &str) -> Result<Option<LeanTokenizer>, String> {
    let spec: FileSpec = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let unigram = spec.model.kind.as_deref() == Some("Unigram") && !spec.model.byte_fallback;
    let (Some(vocab), Some(unk_id), true) = (spec.model.vocab, spec.model.unk_id, unigram) else {
        return Ok(None);
    };
    if spec.truncation.is_some() || spec.padding.is_some() {
        return Ok(None);
    }
    let vocab: Vec<(String, f64)> = serde_json::from_value(vocab).map_err(|e| e.to_string())?;
    let Some(model) = CompactUnigram::new(vocab, unk_id) else {
        return Ok(None);
    };
    let mut tokenizer: LeanTokenizer = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(spec.normalizer)
        .with_pre_tokenizer(spec.pre_tokenizer)
        .with_post_processor(spec.post_processor)
        .with_decoder(spec.decoder)
        .build()
        .map_err(|e| e.to_string())?;
    for t in &spec.added_tokens {
        let token = AddedToken::from(t.content.clone(), t.special)
            .single_word(t.single_word)
            .lstrip(t.lstrip)
            .rstrip(t.rstrip)
            .normalized(t.normalized);
        if t.special {
            tokenizer.add_special_tokens(&[token]);
        } else {
            tokenizer.add_tokens(&[token]);
        }
        if tokenizer.token_to_id(&t.content) != Some(t.id) {
            return Ok(None);
        }
    }
    Ok(Some(tokenizer))
}
