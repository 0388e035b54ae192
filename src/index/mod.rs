//! The search index: an HNSW graph (built by hnsw_rs, cosine distance, then
//! kept and searched as flat arrays, see `graph.rs`) over every indexed text of
//! every answer (standard question, variants, answer text), searched over the
//! exact vectors, and a BM25 index ([`lexical`]) over the same texts.
//!
//! Invariants: a [`VectorIndex`] is immutable once built; the live one is
//! swapped atomically by the recommendation engine. Point ids are positions
//! in `points`; deleted or replaced texts are never removed from the graph:
//! callers exclude them with the search filter, and
//! a rebuild compacts them away. On disk a version lives in its own folder
//! (`v{N}/`), written under a temporary name and renamed into place.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::Hnsw;
use serde::{Deserialize, Serialize};

use crate::store::TextRole;

mod binio;
mod distance;
mod graph;
pub mod lexical;
pub use distance::{dot, DistCosine};
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
/// The graph as hnsw_rs dumped it (indexes saved before `graph.bin`).
const BASENAME: &str = "hnsw";
const GRAPH_FILE: &str = "graph.bin";
const LEXICAL_FILE: &str = "lexical.bin";
/// The lexical index as indexes saved before `lexical.bin` hold it.
const LEXICAL_TOKENS_FILE: &str = "lexical.jsonl";
const VECTORS_FILE: &str = "vectors.f32";

/// Writes `path` through a buffer and syncs it to disk.
fn write_synced(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut w = BufWriter::new(fs::File::create(path)?);
    body(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The vectors of an index, row `i` for point `i`: in memory when just
/// built, memory-mapped from `vectors.f32` when loaded (so a start does not
/// read or copy them, and pages are shared with the page cache).
enum Vectors {
    Owned(Vec<f32>),
    #[cfg(target_endian = "little")]
    Mapped(memmap2::Mmap),
}

impl Vectors {
    fn as_slice(&self) -> &[f32] {
        match self {
            Vectors::Owned(v) => v,
            // SAFETY: `map` checked that the mapping's length is a multiple
            // of 4 and its start 4-aligned (mappings start on a page), and the
            // target is little-endian like the file. Index version folders are
            // written once under a temporary name and never modified in place
            // (a replaced or removed folder is unlinked, which leaves the
            // mapping valid), so the bytes do not change under the slice.
            #[cfg(target_endian = "little")]
            Vectors::Mapped(m) => unsafe {
                std::slice::from_raw_parts(m.as_ptr().cast::<f32>(), m.len() / 4)
            },
        }
    }

    /// Maps `path` (`len` bytes expected), or reads it where mapping is not
    /// possible (an empty file, a big-endian target).
    fn map(path: &Path, len: usize) -> Result<Self, IndexError> {
        let file = fs::File::open(path)?;
        let actual = file.metadata()?.len();
        if actual != len as u64 {
            return Err(IndexError::Corrupt(format!(
                "{}: {actual} bytes, expected {len}",
                path.display()
            )));
        }
        #[cfg(target_endian = "little")]
        if len > 0 {
            // SAFETY: see `as_slice`: the file is not modified while mapped.
            let map = unsafe { memmap2::Mmap::map(&file)? };
            if map.len() != len || map.as_ptr().align_offset(4) != 0 {
                return Err(IndexError::Corrupt(format!(
                    "{}: cannot map",
                    path.display()
                )));
            }
            // Read ahead in the background; the first searches would
            // otherwise fault pages in one by one.
            #[cfg(unix)]
            let _ = map.advise(memmap2::Advice::WillNeed);
            return Ok(Vectors::Mapped(map));
        }
        let bytes = fs::read(path)?;
        Ok(Vectors::Owned(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}

/// An immutable index version.
pub struct VectorIndex {
    graph: graph::Graph,
    points: Vec<PointMeta>,
    vectors: Vectors,
    by_answer: HashMap<Arc<str>, Vec<usize>>,
    lexical: LexicalIndex,
    manifest: Manifest,
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
        let graph = graph::build(&vectors, dim, MAX_CONNECTIONS, EF_CONSTRUCTION, MAX_LAYERS);
        let by_answer = group(&points);
        let lexical =
            LexicalIndex::build(&points.iter().map(|p| p.text.as_str()).collect::<Vec<_>>());
        Self {
            graph,
            points,
            by_answer,
            lexical,
            manifest,
            vectors: Vectors::Owned(vectors),
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
        &self.vectors.as_slice()[id * d..(id + 1) * d]
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
    /// exact cosine similarity.
    ///
    /// The graph is walked without the filter for the `ef` nearest points,
    /// which are then filtered. Only when fewer than `k` of those pass does
    /// the filter go inside the walk: hnsw_rs's filtered walk never stops
    /// early (it drains its whole candidate queue and calls the filter on
    /// every point it visits), which made every search several times slower
    /// even with a filter that admits everything.
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
        let ef = ef.max(k);
        let dim = self.manifest.dimension;
        let vectors = self.vectors.as_slice();
        let mut out = self.graph.search(vectors, dim, query, ef, None);
        out.retain(|&(id, _)| keep(&self.points[id]));
        if out.len() < k {
            // A selective filter: walk again, returning only admissible points.
            let admit = |id: usize| keep(&self.points[id]);
            out = self.graph.search(vectors, dim, query, ef, Some(&admit));
        }
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
        self.graph.write(&tmp.join(GRAPH_FILE))?;
        let mut w = BufWriter::new(fs::File::create(tmp.join("points.jsonl"))?);
        for p in &self.points {
            serde_json::to_writer(&mut w, p).map_err(|e| IndexError::Corrupt(e.to_string()))?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        write_synced(&tmp.join(LEXICAL_FILE), |w| self.lexical.write(w))?;
        write_synced(&tmp.join(VECTORS_FILE), |w| {
            for chunk in self.vectors.as_slice().chunks(1 << 14) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
            Ok(())
        })?;
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
        let started = std::time::Instant::now();
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        let corrupt = |what: String| IndexError::Corrupt(format!("{}: {what}", dir.display()));
        let manifest: Manifest = serde_json::from_slice(&fs::read(dir.join("manifest.json"))?)
            .map_err(|e| corrupt(format!("manifest.json: {e}")))?;
        // The lexical index (the slowest part: parsing every point's tokens)
        // loads on its own thread while this one reads the rest.
        let lexical_job = {
            let (dir, expected) = (dir.to_path_buf(), manifest.points);
            std::thread::Builder::new()
                .name("kefu-load-lexical".into())
                .spawn(move || {
                    let t = std::time::Instant::now();
                    read_lexical(&dir, expected).map(|l| (l, ms(t)))
                })?
        };
        let mut points = Vec::with_capacity(manifest.points);
        for line in std::io::BufReader::new(fs::File::open(dir.join("points.jsonl"))?).lines() {
            points.push(
                serde_json::from_str::<PointMeta>(&line?)
                    .map_err(|e| corrupt(format!("points.jsonl: {e}")))?,
            );
        }
        let points_ms = ms(started);
        let t = std::time::Instant::now();
        if points.len() != manifest.points {
            return Err(corrupt("points and manifest disagree".into()));
        }
        let vectors = Vectors::map(
            &dir.join(VECTORS_FILE),
            manifest.points * manifest.dimension * 4,
        )?;
        let vectors_ms = ms(t);
        let t = std::time::Instant::now();
        let graph = if dir.join(GRAPH_FILE).exists() {
            graph::Graph::read(&dir.join(GRAPH_FILE))
                .map_err(|e| corrupt(format!("{GRAPH_FILE}: {e}")))?
        } else if points.is_empty() {
            graph::Graph::default()
        } else {
            // Saved before graph.bin: load hnsw_rs's dump and copy it out.
            let mut io = HnswIo::new(dir, BASENAME);
            let hnsw: Hnsw<'_, f32, DistCosine> =
                io.load_hnsw().map_err(|e| corrupt(format!("graph: {e}")))?;
            graph::Graph::from_hnsw(&hnsw, points.len())
        };
        if graph.len() != points.len() {
            return Err(corrupt("graph and points disagree".into()));
        }
        let graph_ms = ms(t);
        let (lexical, lexical_ms) = match lexical_job.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let (lexical, upgrade) = match lexical {
            FoundLexical::Binary(lexical) => (lexical, false),
            FoundLexical::Legacy(lexical) => (lexical, true),
            FoundLexical::Reanalyse => (
                LexicalIndex::build(&points.iter().map(|p| p.text.as_str()).collect::<Vec<_>>()),
                true,
            ),
        };
        if upgrade {
            // Upgrade the folder, so that the next start reads the binary
            // file (written aside and renamed: a reader sees all or none).
            let tmp = dir.join(format!(".{LEXICAL_FILE}.partial"));
            let saved = write_synced(&tmp, |w| lexical.write(w))
                .and_then(|()| fs::rename(&tmp, dir.join(LEXICAL_FILE)));
            if let Err(e) = saved {
                let _ = fs::remove_file(&tmp);
                tracing::warn!(error = %e, dir = %dir.display(), "could not save lexical.bin");
            }
        }
        let by_answer = group(&points);
        tracing::info!(
            points = points.len(),
            points_ms,
            vectors_ms,
            graph_ms,
            lexical_ms,
            total_ms = ms(started),
            "index loaded"
        );
        Ok(Self {
            graph,
            points,
            vectors,
            by_answer,
            lexical,
            manifest,
        })
    }
}

/// What a version folder held of its lexical index.
enum FoundLexical {
    /// `lexical.bin`.
    Binary(LexicalIndex),
    /// `lexical.jsonl`, from an index saved before `lexical.bin` existed.
    Legacy(LexicalIndex),
    /// Nothing usable: neither file (an index saved before the lexical leg
    /// existed), or one written by another analyzer. The points' texts must
    /// be re-analysed.
    Reanalyse,
}

/// Reads the lexical index of `expected` documents. A file that is there
/// but damaged is an error.
fn read_lexical(dir: &Path, expected: usize) -> Result<FoundLexical, IndexError> {
    match fs::read(dir.join(LEXICAL_FILE)) {
        Ok(bytes) => {
            return LexicalIndex::read(&bytes, expected)
                .map(|found| found.map_or(FoundLexical::Reanalyse, FoundLexical::Binary))
                .map_err(|e| {
                    IndexError::Corrupt(format!("{}: {LEXICAL_FILE}: {e}", dir.display()))
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let corrupt = |what: String| {
        IndexError::Corrupt(format!("{}: {LEXICAL_TOKENS_FILE}: {what}", dir.display()))
    };
    let file = match fs::File::open(dir.join(LEXICAL_TOKENS_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FoundLexical::Reanalyse),
        Err(e) => return Err(e.into()),
    };
    let mut lines = std::io::BufReader::new(file).lines();
    let analyzer: String = match lines.next() {
        Some(l) => serde_json::from_str(&l?).map_err(|e| corrupt(e.to_string()))?,
        None => return Err(corrupt("empty".into())),
    };
    if analyzer != lexical::ANALYZER {
        return Ok(FoundLexical::Reanalyse);
    }
    let mut tokens = Vec::with_capacity(expected);
    for line in lines {
        tokens
            .push(serde_json::from_str::<Vec<String>>(&line?).map_err(|e| corrupt(e.to_string()))?);
    }
    if tokens.len() != expected {
        return Err(corrupt("one line per point expected".into()));
    }
    Ok(FoundLexical::Legacy(LexicalIndex::from_tokens(tokens)))
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
    fn a_selective_filter_still_finds_the_best_admissible_points() {
        let idx = sample(400, 16);
        let q = idx.vector(5).to_vec();
        // Three answers out of 200 are admissible; the query sits elsewhere.
        let keep = |p: &PointMeta| ["a70", "a140", "a190"].contains(&&*p.answer_id);
        let hits = idx.search(&q, 4, 16, &keep);
        let mut exact: Vec<(usize, f32)> = (0..idx.len())
            .filter(|&i| keep(idx.point(i)))
            .map(|i| (i, dot(&q, idx.vector(i))))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        exact.truncate(4);
        assert_eq!(hits, exact);
        // A permissive filter gets the unfiltered walk's answer.
        let all = idx.search(&q, 10, 64, &|_| true);
        assert_eq!(all.len(), 10);
        assert_eq!(all[0].0, 5);
        assert!(all.windows(2).all(|w| w[0].1 >= w[1].1));
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
        assert_eq!(back.lexical(), idx.lexical());
        assert!(matches!(back.vectors, Vectors::Mapped(_)));
        assert_eq!(back.vector(99), idx.vector(99));
        // An index saved before the lexical leg existed is re-analysed, and
        // the folder gains lexical.bin.
        fs::remove_file(saved.join(LEXICAL_FILE)).unwrap();
        let old = VectorIndex::load(&saved).unwrap();
        assert_eq!(old.lexical(), idx.lexical());
        assert!(saved.join(LEXICAL_FILE).exists());
        // One saved with lexical.jsonl (the tokens of each point) reads it.
        fs::remove_file(saved.join(LEXICAL_FILE)).unwrap();
        let mut jsonl = format!("\"{}\"\n", lexical::ANALYZER);
        for (i, p) in idx.points().iter().enumerate() {
            let mut tokens = lexical::analyze(&p.text);
            if i == 3 {
                // A token the text does not have: proves the file was read.
                tokens.push("zzqx".into());
            }
            jsonl += &format!("{}\n", serde_json::to_string(&tokens).unwrap());
        }
        fs::write(saved.join(LEXICAL_TOKENS_FILE), &jsonl).unwrap();
        let legacy = VectorIndex::load(&saved).unwrap();
        let lex = legacy.lexical();
        assert_eq!(lex.search(&lex.query("zzqx"), 3, &|_| true)[0].0, 3);
        assert_eq!(lex.term_count(), idx.lexical().term_count() + 1);
        // ... and the folder now has the binary file, which says the same.
        let upgraded = VectorIndex::load(&saved).unwrap();
        assert_eq!(upgraded.lexical(), legacy.lexical());
        // A damaged legacy file is an error.
        fs::remove_file(saved.join(LEXICAL_FILE)).unwrap();
        fs::write(
            saved.join(LEXICAL_TOKENS_FILE),
            format!("\"{}\"\n[1,2]\n", lexical::ANALYZER),
        )
        .unwrap();
        assert!(VectorIndex::load(&saved).is_err());
        // One written by another analyzer is re-analysed.
        fs::write(saved.join(LEXICAL_TOKENS_FILE), "\"old/0\"\n[\"x\"]\n").unwrap();
        let other = VectorIndex::load(&saved).unwrap();
        assert_eq!(other.lexical(), idx.lexical());
        // A damaged lexical.bin is an error.
        let bin = fs::read(saved.join(LEXICAL_FILE)).unwrap();
        fs::write(saved.join(LEXICAL_FILE), &bin[..bin.len() - 2]).unwrap();
        assert!(VectorIndex::load(&saved).is_err());
        fs::write(saved.join(LEXICAL_FILE), &bin).unwrap();
        // A damaged folder is an error, not a panic.
        fs::write(saved.join("vectors.f32"), b"xx").unwrap();
        assert!(VectorIndex::load(&saved).is_err());
    }

    #[test]
    fn loads_a_graph_saved_by_hnsw_rs_and_refuses_a_damaged_one() {
        use hnsw_rs::api::AnnT;
        let dir = tempfile::tempdir().unwrap();
        let idx = sample(120, 8);
        let saved = idx.save(dir.path()).unwrap();
        // An index saved before graph.bin held hnsw_rs's dump instead.
        let hnsw: Hnsw<'_, f32, DistCosine> = Hnsw::new(24, 120, 16, 200, DistCosine);
        let rows: Vec<(&[f32], usize)> = (0..120).map(|i| (idx.vector(i), i)).collect();
        hnsw.parallel_insert_slice(&rows);
        hnsw.file_dump(&saved, BASENAME).unwrap();
        fs::remove_file(saved.join(GRAPH_FILE)).unwrap();
        let old = VectorIndex::load(&saved).unwrap();
        for i in [0, 33, 119] {
            let q = idx.vector(i).to_vec();
            assert_eq!(old.search(&q, 3, 32, &|_| true)[0].0, i);
        }
        // A truncated graph.bin is an error, not a panic.
        idx.graph.write(&saved.join(GRAPH_FILE)).unwrap();
        let bytes = fs::read(saved.join(GRAPH_FILE)).unwrap();
        fs::write(saved.join(GRAPH_FILE), &bytes[..bytes.len() - 3]).unwrap();
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
