//! The HNSW graph as kefu searches and stores it: flat neighbour arrays
//! (compressed rows of `u32` point ids) over the index's own vector array.
//!
//! hnsw_rs builds the graph (its parallel insertion and neighbour selection);
//! the result is then copied out of hnsw_rs's structure (one `Arc` per point
//! and per edge, its own copy of every vector) into a few flat arrays, and
//! hnsw_rs's structure is dropped. That halves the memory, makes loading a
//! saved graph a matter of reading a few arrays (hnsw_rs's loader rebuilds
//! every `Arc`, about 35 µs per point: 10 s for 300k points), and the search
//! below visits the same graph without hashing or reference counting.
//!
//! On disk (`graph.bin`, little-endian): magic, point count, entry point,
//! each point's top layer, the layer-0 rows (offsets, then ids), and the
//! upper-layer rows (per point: for each layer from 1 up, a count then ids).

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::Path;

use hnsw_rs::prelude::{Distance, Hnsw};

use super::binio::{Reader, Writer};
use super::distance::{dot, DistCosine};

const MAGIC: &[u8; 8] = b"KEFUHNS1";

/// The graph: neighbour rows per layer, by point id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Graph {
    entry: u32,
    levels: Vec<u8>,
    /// Layer 0: the neighbours of point `p` are `base[base_off[p]..base_off[p + 1]]`.
    base_off: Vec<u32>,
    base: Vec<u32>,
    /// Layers above 0: point `p`'s block `upper[upper_off[p]..upper_off[p + 1]]`
    /// holds, for layers 1..=levels[p], a count followed by that many ids.
    upper_off: Vec<u32>,
    upper: Vec<u32>,
}

/// A similarity with a total order, for the heaps.
#[derive(Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

thread_local! {
    /// Visit marks of this thread's searches: a point is visited when its
    /// mark equals the current search's stamp (no clearing between searches).
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

impl Graph {
    /// Copies the graph out of hnsw_rs (points inserted with ids `0..n`).
    pub fn from_hnsw<D: Distance<f32> + Send + Sync>(hnsw: &Hnsw<'_, f32, D>, n: usize) -> Self {
        let mut levels = vec![0u8; n];
        let mut rows: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
        for p in hnsw.get_point_indexation() {
            let id = p.get_origin_id();
            if id >= n {
                continue;
            }
            let level = p.get_point_id().0;
            levels[id] = level;
            rows[id] = p
                .get_neighborhood_id()
                .into_iter()
                .take(level as usize + 1)
                .map(|layer| {
                    layer
                        .into_iter()
                        .map(|nb| nb.d_id)
                        .filter(|&d| d < n)
                        .map(|d| d as u32)
                        .collect()
                })
                .collect();
        }
        let top = levels.iter().copied().max().unwrap_or(0);
        let entry = levels.iter().position(|&l| l == top).unwrap_or(0) as u32;
        let mut g = Graph {
            entry,
            levels,
            base_off: Vec::with_capacity(n + 1),
            base: Vec::new(),
            upper_off: Vec::with_capacity(n + 1),
            upper: Vec::new(),
        };
        g.base_off.push(0);
        g.upper_off.push(0);
        for (p, layers) in rows.into_iter().enumerate() {
            let mut layers = layers.into_iter();
            g.base.extend(layers.next().unwrap_or_default());
            for l in 1..=g.levels[p] as usize {
                let row = layers.next().unwrap_or_default();
                let _ = l;
                g.upper.push(row.len() as u32);
                g.upper.extend(row);
            }
            g.base_off.push(g.base.len() as u32);
            g.upper_off.push(g.upper.len() as u32);
        }
        g
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    fn base_row(&self, p: u32) -> &[u32] {
        let p = p as usize;
        &self.base[self.base_off[p] as usize..self.base_off[p + 1] as usize]
    }

    fn upper_row(&self, p: u32, layer: usize) -> &[u32] {
        let p = p as usize;
        let block = &self.upper[self.upper_off[p] as usize..self.upper_off[p + 1] as usize];
        let mut at = 0;
        for _ in 1..layer {
            at += 1 + block[at] as usize;
        }
        &block[at + 1..at + 1 + block[at] as usize]
    }

    /// The `ef` points nearest `query` (by dot product with the rows of
    /// `vectors`) that pass `admit`, best first, as (id, similarity). Points
    /// that do not pass are still walked through, just not returned.
    pub fn search(
        &self,
        vectors: &[f32],
        dim: usize,
        query: &[f32],
        ef: usize,
        admit: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)> {
        let n = self.len();
        if n == 0 || ef == 0 {
            return Vec::new();
        }
        let sim = |p: u32| dot(query, &vectors[p as usize * dim..(p as usize + 1) * dim]);
        // Greedy descent through the upper layers.
        let mut cur = self.entry;
        let mut cur_sim = sim(cur);
        for layer in (1..=self.levels[cur as usize] as usize).rev() {
            loop {
                let mut moved = false;
                for &nb in self.upper_row(cur, layer) {
                    // hnsw_rs can link a point to one of a lower layer.
                    if (self.levels[nb as usize] as usize) < layer {
                        continue;
                    }
                    let s = sim(nb);
                    if s > cur_sim {
                        (cur, cur_sim, moved) = (nb, s, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        VISITED.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (marks, stamp) = &mut *guard;
            if marks.len() < n {
                marks.resize(n, 0);
            }
            *stamp = stamp.wrapping_add(1);
            if *stamp == 0 {
                marks.fill(0);
                *stamp = 1;
            }
            let stamp = *stamp;
            let admitted = |p: u32| admit.is_none_or(|f| f(p as usize));
            // Candidates to expand, best first; results, worst on top.
            let mut candidates = BinaryHeap::with_capacity(ef * 4);
            let mut results: BinaryHeap<std::cmp::Reverse<Scored>> =
                BinaryHeap::with_capacity(ef + 1);
            marks[cur as usize] = stamp;
            candidates.push(Scored(cur_sim, cur));
            if admitted(cur) {
                results.push(std::cmp::Reverse(Scored(cur_sim, cur)));
            }
            while let Some(Scored(s, c)) = candidates.pop() {
                if results.len() >= ef && results.peek().is_some_and(|w| s < w.0 .0) {
                    break;
                }
                for &nb in self.base_row(c) {
                    let mark = &mut marks[nb as usize];
                    if *mark == stamp {
                        continue;
                    }
                    *mark = stamp;
                    let s = sim(nb);
                    let worst = results.peek().map_or(f32::NEG_INFINITY, |w| w.0 .0);
                    if results.len() < ef || s > worst {
                        candidates.push(Scored(s, nb));
                        if admitted(nb) {
                            results.push(std::cmp::Reverse(Scored(s, nb)));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            let mut out: Vec<(usize, f32)> = results
                .into_iter()
                .map(|r| (r.0 .1 as usize, r.0 .0))
                .collect();
            out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            out
        })
    }

    /// Writes `graph.bin`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut w = Writer(std::io::BufWriter::new(std::fs::File::create(path)?));
        w.bytes(MAGIC)?;
        w.u64(self.len() as u64)?;
        w.u32(self.entry)?;
        w.bytes(&self.levels)?;
        for part in [&self.base_off, &self.base, &self.upper_off, &self.upper] {
            w.u32s(part)?;
        }
        w.0.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// Reads `graph.bin`, checking that it is whole and consistent.
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let mut r = Reader::new(&bytes);
        if r.take(8)? != MAGIC {
            return Err("not a kefu graph file".into());
        }
        let n = usize::try_from(r.u64()?).map_err(|_| "truncated")?;
        let entry = r.u32()?;
        let levels = r.take(n)?.to_vec();
        let mut parts = Vec::with_capacity(4);
        for _ in 0..4 {
            parts.push(r.u32s()?);
        }
        r.finish()?;
        let upper = parts.pop().expect("four parts");
        let upper_off = parts.pop().expect("four parts");
        let base = parts.pop().expect("four parts");
        let base_off = parts.pop().expect("four parts");
        let g = Graph {
            entry,
            levels,
            base_off,
            base,
            upper_off,
            upper,
        };
        g.check().map(|()| g)
    }

    /// Every offset and id in range, so that a search cannot panic.
    fn check(&self) -> Result<(), String> {
        let n = self.len();
        let rows_ok = |off: &[u32], data: &[u32]| {
            off.len() == n + 1
                && off.first() == Some(&0)
                && off.last().map(|&l| l as usize) == Some(data.len())
                && off.windows(2).all(|w| w[0] <= w[1])
        };
        if n == 0 {
            return Ok(());
        }
        if (self.entry as usize) >= n {
            return Err("entry point out of range".into());
        }
        if !rows_ok(&self.base_off, &self.base) || !rows_ok(&self.upper_off, &self.upper) {
            return Err("bad row offsets".into());
        }
        if self.base.iter().any(|&p| p as usize >= n) {
            return Err("neighbour out of range".into());
        }
        for p in 0..n {
            let block = &self.upper[self.upper_off[p] as usize..self.upper_off[p + 1] as usize];
            let mut at = 0;
            for layer in 1..=self.levels[p] {
                let len = *block.get(at).ok_or("bad upper block")? as usize;
                let row = block.get(at + 1..at + 1 + len).ok_or("bad upper block")?;
                let _ = layer;
                if row.iter().any(|&q| q as usize >= n) {
                    return Err("upper neighbour out of range".into());
                }
                at += 1 + len;
            }
            if at != block.len() {
                return Err("bad upper block".into());
            }
        }
        // The descent from the entry point only meets points of its layers.
        let top = self.levels[self.entry as usize];
        if self.levels.iter().any(|&l| l > top) {
            return Err("entry point below the top layer".into());
        }
        Ok(())
    }
}

/// Builds the graph over `vectors` with hnsw_rs.
pub fn build(
    vectors: &[f32],
    dim: usize,
    max_connections: usize,
    ef_construction: usize,
    max_layers: usize,
) -> Graph {
    let n = vectors.len() / dim.max(1);
    if n == 0 {
        return Graph::default();
    }
    let hnsw: Hnsw<'_, f32, DistCosine> =
        Hnsw::new(max_connections, n, max_layers, ef_construction, DistCosine);
    let rows: Vec<(&[f32], usize)> = vectors.chunks_exact(dim).zip(0..).collect();
    hnsw.parallel_insert_slice(&rows);
    Graph::from_hnsw(&hnsw, n)
}
