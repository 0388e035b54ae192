//! The search index: an HNSW graph (hnsw_rs, cosine distance) over every
//! indexed text of every answer (standard question, variants, answer text),
//! with the exact vectors kept beside it for re-scoring, and a BM25 index
//! ([`lexical`]) over the same texts.
//!
//! Invariants: a [`VectorIndex`] is immutable once built; the live one is
//! swapped atomically by the recommendation engine. Point ids are positions
//! in `points`; deleted or replaced texts are never removed from the graph
//! (hnsw_rs cannot delete): callers exclude them with the search filter, and
//! a rebuild compacts them away. On disk a version lives in its own folder
//! (`v{N}/`), written under a temporary name and renamed into place.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{DistCosine, Hnsw};
use serde::{Deserialize, Serialize};

use crate::store::TextRole;

pub mod lexical;
pub use lexical::{LexicalIndex, LexicalQuery};

/// Errors while saving or loading an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("index files are corrupt: {0}")]
    Corrupt(String),
}

/// What one point of the graph stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointMeta {
    pub answer_id: Arc<str>,
    pub role: TextRole,
    /// The text the vector was computed from (what `matched_text` reports).
    pub text: String,
}

/// Facts about an index version, saved as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    pub model_id: String,
    pub dimension: usize,
    pub points: usize,
    pub built_at: String,
    /// How standard questions and variants were embedded: `query` (the
    /// query prefix on both sides) or `passage`.
    #[serde(default = "default_question_kind")]
    pub question_kind: String,
}

fn default_question_kind() -> String {
    "query".into()
}

/// HNSW parameters (hnsw_rs naming).
const MAX_CONNECTIONS: usize = 24;
const EF_CONSTRUCTION: usize = 200;
const MAX_LAYERS: usize = 16;
const BASENAME: &str = "hnsw";

/// An immutable index version.
pub struct VectorIndex {
    hnsw: Hnsw<'static, f32, DistCosine>,
    points: Vec<PointMeta>,
    vectors: Vec<f32>,
    by_answer: HashMap<Arc<str>, Vec<usize>>,
    lexical: LexicalIndex,
    manifest: Manifest,
}

fn new_hnsw(capacity: usize) -> Hnsw<'static, f32, DistCosine> {
    Hnsw::new(
        MAX_CONNECTIONS,
        capacity.max(1),
        MAX_LAYERS,
        EF_CONSTRUCTION,
        DistCosine {},
    )
}

fn group(points: &[PointMeta]) -> HashMap<Arc<str>, Vec<usize>> {
    let mut by_answer: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
    for (i, p) in points.iter().enumerate() {
        by_answer.entry(p.answer_id.clone()).or_default().push(i);
    }
    by_answer
}

impl VectorIndex {
    /// An index with no points.
    pub fn empty(model_id: &str, dimension: usize) -> Self {
        Self::build(
            Manifest {
                version: 0,
                model_id: model_id.into(),
                dimension,
                points: 0,
                built_at: String::new(),
                question_kind: default_question_kind(),
            },
            Vec::new(),
            Vec::new(),
        )
    }

    /// Builds the graph over `vectors` (row `i` belongs to `points[i]`).
    pub fn build(mut manifest: Manifest, points: Vec<PointMeta>, vectors: Vec<f32>) -> Self {
        let dim = manifest.dimension;
        assert_eq!(points.len() * dim, vectors.len(), "one vector per point");
        manifest.points = points.len();
        let hnsw = new_hnsw(points.len());
        let rows: Vec<(&[f32], usize)> = vectors.chunks_exact(dim).zip(0..).collect();
        if !rows.is_empty() {
            hnsw.parallel_insert_slice(&rows);
        }
        let by_answer = group(&points);
        let lexical =
            LexicalIndex::build(&points.iter().map(|p| p.text.as_str()).collect::<Vec<_>>());
        Self {
            hnsw,
            points,
            vectors,
            by_answer,
            lexical,
            manifest,
        }
    }

    /// The BM25 index over the same points.
    pub fn lexical(&self) -> &LexicalIndex {
        &self.lexical
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn point(&self, id: usize) -> &PointMeta {
        &self.points[id]
    }

    pub fn points(&self) -> &[PointMeta] {
        &self.points
    }

    pub fn vector(&self, id: usize) -> &[f32] {
        let d = self.manifest.dimension;
        &self.vectors[id * d..(id + 1) * d]
    }

    /// The points of one answer.
    pub fn points_of(&self, answer_id: &str) -> &[usize] {
        self.by_answer.get(answer_id).map_or(&[], Vec::as_slice)
    }

    /// Answers that have points in this index.
    pub fn answer_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_answer.keys()
    }

    /// Approximate nearest points that pass `keep`, best first, with their
    /// exact cosine similarity. The filter runs inside the graph search.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(&PointMeta) -> bool,
    ) -> Vec<(usize, f32)> {
        if self.points.is_empty() || query.len() != self.manifest.dimension {
            return Vec::new();
        }
        let filter = |id: &usize| self.points.get(*id).is_some_and(keep);
        let found = self.hnsw.search_filter(query, k, ef.max(k), Some(&filter));
        let mut out: Vec<(usize, f32)> = found
            .into_iter()
            .map(|n| n.d_id)
            .filter(|&id| id < self.points.len() && keep(&self.points[id]))
            .map(|id| (id, dot(query, self.vector(id))))
            .collect();
        if out.len() < k {
            // A selective filter can starve the graph walk: fall back to an
            // exact scan of the admissible points, so a filter never hides an
            // answer that exists.
            out = (0..self.points.len())
                .filter(|&id| keep(&self.points[id]))
                .map(|id| (id, dot(query, self.vector(id))))
                .collect();
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.truncate(k);
        out
    }

    /// Writes this version into `root/v{version}` (via a temporary folder).
    pub fn save(&self, root: &Path) -> Result<PathBuf, IndexError> {
        let final_dir = root.join(format!("v{}", self.manifest.version));
        let tmp = root.join(format!(".v{}.partial", self.manifest.version));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        if !self.points.is_empty() {
            let name = self
                .hnsw
                .file_dump(&tmp, BASENAME)
                .map_err(|e| IndexError::Corrupt(format!("dumping the graph: {e}")))?;
            if name != BASENAME {
                return Err(IndexError::Corrupt(format!("graph dumped as {name}")));
            }
        }
        let mut w = BufWriter::new(fs::File::create(tmp.join("points.jsonl"))?);
        for p in &self.points {
            serde_json::to_writer(&mut w, p).map_err(|e| IndexError::Corrupt(e.to_string()))?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let mut w = BufWriter::new(fs::File::create(tmp.join("lexical.jsonl"))?);
        serde_json::to_writer(&mut w, &lexical::ANALYZER).expect("a string serialises");
        w.write_all(b"\n")?;
        for t in self.lexical.tokens() {
            serde_json::to_writer(&mut w, t).map_err(|e| IndexError::Corrupt(e.to_string()))?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let bytes: Vec<u8> = self.vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
        fs::write(tmp.join("vectors.f32"), bytes)?;
        let manifest = serde_json::to_vec_pretty(&self.manifest).expect("manifest serialises");
        fs::write(tmp.join("manifest.json"), manifest)?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir)?;
        }
        fs::rename(&tmp, &final_dir)?;
        Ok(final_dir)
    }

    /// Loads a version saved by [`VectorIndex::save`], checking that its
    /// parts agree.
    pub fn load(dir: &Path) -> Result<Self, IndexError> {
        let corrupt = |what: String| IndexError::Corrupt(format!("{}: {what}", dir.display()));
        let manifest: Manifest = serde_json::from_slice(&fs::read(dir.join("manifest.json"))?)
            .map_err(|e| corrupt(format!("manifest.json: {e}")))?;
        let mut points = Vec::with_capacity(manifest.points);
        for line in std::io::BufReader::new(fs::File::open(dir.join("points.jsonl"))?).lines() {
            points.push(
                serde_json::from_str::<PointMeta>(&line?)
                    .map_err(|e| corrupt(format!("points.jsonl: {e}")))?,
            );
        }
        let bytes = fs::read(dir.join("vectors.f32"))?;
        let vectors: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if points.len() != manifest.points
            || bytes.len() != manifest.points * manifest.dimension * 4
        {
            return Err(corrupt("points, vectors and manifest disagree".into()));
        }
        let hnsw = if points.is_empty() {
            new_hnsw(1)
        } else {
            // hnsw_rs ties the loaded graph's lifetime to its loader; without
            // memory-mapping the graph owns its data, so the small loader is
            // leaked once per load to give the graph a 'static lifetime.
            let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, BASENAME)));
            let hnsw: Hnsw<'static, f32, DistCosine> =
                io.load_hnsw().map_err(|e| corrupt(format!("graph: {e}")))?;
            if hnsw.get_nb_point() != points.len() {
                return Err(corrupt("graph and points disagree".into()));
            }
            hnsw
        };
        let lexical = load_lexical(dir, &points)?;
        let by_answer = group(&points);
        Ok(Self {
            hnsw,
            points,
            vectors,
            by_answer,
            lexical,
            manifest,
        })
    }
}

/// Reads `lexical.jsonl`; re-analyses the points' texts when the file is
/// missing (an index saved before the lexical leg existed) or was written by
/// another analyzer. A file that is there but damaged is an error.
fn load_lexical(dir: &Path, points: &[PointMeta]) -> Result<LexicalIndex, IndexError> {
    let corrupt =
        |what: String| IndexError::Corrupt(format!("{}: lexical.jsonl: {what}", dir.display()));
    let rebuild =
        || LexicalIndex::build(&points.iter().map(|p| p.text.as_str()).collect::<Vec<_>>());
    let file = match fs::File::open(dir.join("lexical.jsonl")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rebuild()),
        Err(e) => return Err(e.into()),
    };
    let mut lines = std::io::BufReader::new(file).lines();
    let analyzer: String = match lines.next() {
        Some(l) => serde_json::from_str(&l?).map_err(|e| corrupt(e.to_string()))?,
        None => return Err(corrupt("empty".into())),
    };
    if analyzer != lexical::ANALYZER {
        return Ok(rebuild());
    }
    let mut tokens = Vec::with_capacity(points.len());
    for line in lines {
        tokens
            .push(serde_json::from_str::<Vec<String>>(&line?).map_err(|e| corrupt(e.to_string()))?);
    }
    if tokens.len() != points.len() {
        return Err(corrupt("one line per point expected".into()));
    }
    Ok(LexicalIndex::from_tokens(tokens))
}

/// Dot product (cosine for unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        let n = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    fn sample(n: usize, dim: usize) -> VectorIndex {
        let points = (0..n)
            .map(|i| PointMeta {
                answer_id: format!("a{}", i / 2).into(),
                role: if i % 2 == 0 {
                    TextRole::Question
                } else {
                    TextRole::Answer
                },
                text: format!("text {i}"),
            })
            .collect();
        let vectors = (0..n).flat_map(|i| unit(i as u64, dim)).collect();
        let manifest = Manifest {
            version: 3,
            model_id: "m".into(),
            dimension: dim,
            points: 0,
            built_at: "now".into(),
            question_kind: "query".into(),
        };
        VectorIndex::build(manifest, points, vectors)
    }

    #[test]
    fn finds_itself_and_respects_the_filter() {
        let idx = sample(200, 16);
        let q = idx.vector(57).to_vec();
        let hits = idx.search(&q, 5, 64, &|_| true);
        assert_eq!(hits[0].0, 57);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        let hits = idx.search(&q, 5, 64, &|p| &*p.answer_id != "a28");
        assert!(hits
            .iter()
            .all(|(id, _)| &*idx.point(*id).answer_id != "a28"));
        assert_eq!(idx.points_of("a28"), &[56, 57]);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let idx = sample(100, 8);
        let saved = idx.save(dir.path()).unwrap();
        assert!(saved.ends_with("v3"));
        let back = VectorIndex::load(&saved).unwrap();
        assert_eq!(back.manifest(), idx.manifest());
        assert_eq!(back.points(), idx.points());
        let q = idx.vector(10).to_vec();
        assert_eq!(back.search(&q, 3, 32, &|_| true)[0].0, 10);
        assert_eq!(back.lexical().tokens(), idx.lexical().tokens());
        assert!(!back.lexical().tokens()[10].is_empty());
        // An index saved before the lexical leg existed is re-analysed.
        fs::remove_file(saved.join("lexical.jsonl")).unwrap();
        let old = VectorIndex::load(&saved).unwrap();
        assert_eq!(old.lexical().tokens(), idx.lexical().tokens());
        // A damaged lexical file is an error.
        fs::write(
            saved.join("lexical.jsonl"),
            format!("\"{}\"\n[1,2]\n", lexical::ANALYZER),
        )
        .unwrap();
        assert!(VectorIndex::load(&saved).is_err());
        // One written by another analyzer is re-analysed.
        fs::write(saved.join("lexical.jsonl"), "\"old/0\"\n[\"x\"]\n").unwrap();
        let other = VectorIndex::load(&saved).unwrap();
        assert_eq!(other.lexical().tokens(), idx.lexical().tokens());
        // A damaged folder is an error, not a panic.
        fs::write(saved.join("vectors.f32"), b"xx").unwrap();
        assert!(VectorIndex::load(&saved).is_err());
    }

    #[test]
    fn empty_index_saves_loads_and_searches() {
        let dir = tempfile::tempdir().unwrap();
        let idx = VectorIndex::empty("m", 4);
        let saved = idx.save(dir.path()).unwrap();
        let back = VectorIndex::load(&saved).unwrap();
        assert!(back.is_empty());
        assert!(back
            .search(&[1.0, 0.0, 0.0, 0.0], 3, 10, &|_| true)
            .is_empty());
    }
}
