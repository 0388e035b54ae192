//! HNSW search through kefu's own index (`VectorIndex::build` / `search`, the
//! graph parameters the service uses: 24 connections, ef_construction 200,
//! and `Settings::default().ef_search`) on synthetic unit vectors of
//! dimension 384: latency (criterion, and a per-query p50/p99) and recall@10
//! against an exact brute-force search.
//!
//! Two distributions, both L2-normalised (what the embedder produces):
//! - `uniform`: every coordinate i.i.d. N(0, 1), then normalised: uniform on
//!   the sphere. A known worst case for graph indexes (no structure, all
//!   distances nearly equal), far from real sentence embeddings.
//! - `clustered`: a Gaussian mixture. n/100 centres drawn uniformly on the
//!   sphere (about 100 points per centre); a point is a centre picked
//!   uniformly at random plus isotropic Gaussian noise of norm about 0.6
//!   (N(0, 0.6²/384) per coordinate), then normalised: cosine about 0.86 to
//!   its centre, about 0.73 between two points of the same centre, about 0
//!   across centres.
//!
//! Queries are fresh draws from the same distribution (not indexed points).
//! The search filter admits every point (the service passes one that checks
//! the catalog; an unfiltered library admits everything).
//!
//! Beside the graph's figures, per vector set: the exact scan (every vector,
//! one thread) timed on the first 50 queries, the baseline a graph search has
//! to beat; and how hard the set is for any index, as medians over the
//! queries: the relative contrast at 10 (mean distance over the 10th
//! neighbour's, distance 1 - cosine; near 1 nothing stands out) and the local
//! intrinsic dimensionality (Levina-Bickel estimate from the 10 nearest).
//!
//! Run: `cargo bench --bench hnsw`. Environment:
//! - `KEFU_BENCH_SIZES` (default `10000,100000,1000000`)
//! - `KEFU_BENCH_DISTS` (default `clustered,uniform`)
//! - `KEFU_BENCH_QUERIES` (default 500)
//! - `KEFU_BENCH_EF` (default: the service's `ef_search`): a list of ef
//!   values to measure recall and per-query latency at (criterion times the
//!   first)
//! - `KEFU_BENCH_VECTORS`: a JSON Lines file of real vectors (what
//!   `kefu embed` prints) to measure instead of the synthetic sets: a
//!   seeded tenth of its distinct rows (at most `KEFU_BENCH_QUERIES`) are
//!   the queries, the rest the index. Named `file-<file stem>` in the output
//!
//! Built indexes are cached under `target/hnsw-bench/` (kefu's own
//! `VectorIndex::save` / `load`), so only the first run builds them; delete
//! the folder after changing the index code. Recall, per-query latency and the
//! parameters are printed and written to `target/hnsw-bench/summary.json`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use kefu::index::{dot, Manifest, PointMeta, VectorIndex};
use kefu::recommend::Settings;
use kefu::store::TextRole;

const DIM: usize = 384;
const K: usize = 10;
/// Bump when the generator changes, so cached indexes are not reused.
const GENERATOR: &str = "g1";
const NOISE_NORM: f32 = 0.6;
const POINTS_PER_CENTRE: usize = 100;
/// How many queries time the exact scan.
const EXACT_TIMED: usize = 50;

/// SplitMix64 plus Box-Muller: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Two independent standard normals.
    fn normal2(&mut self) -> (f32, f32) {
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let t = std::f64::consts::TAU * self.uniform();
        ((r * t.cos()) as f32, (r * t.sin()) as f32)
    }
    fn gaussian(&mut self, out: &mut [f32], sigma: f32) {
        for pair in out.chunks_mut(2) {
            let (a, b) = self.normal2();
            pair[0] = a * sigma;
            if pair.len() > 1 {
                pair[1] = b * sigma;
            }
        }
    }
}

fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

#[derive(Clone, Copy, PartialEq)]
enum Dist {
    Uniform,
    Clustered,
}

impl Dist {
    fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Clustered => "clustered",
        }
    }
}

/// Draws `count` vectors of distribution `dist` for a library of `n` points;
/// `stream` separates the indexed points (0) from the queries (1).
fn draw(dist: Dist, n: usize, count: usize, stream: u64) -> Vec<f32> {
    let mut out = vec![0f32; count * DIM];
    match dist {
        Dist::Uniform => {
            let mut rng = Rng::new(0xA11CE ^ ((n as u64) << 8) ^ stream);
            for v in out.chunks_exact_mut(DIM) {
                rng.gaussian(v, 1.0);
                normalise(v);
            }
        }
        Dist::Clustered => {
            let centres_n = (n / POINTS_PER_CENTRE).max(1);
            let mut rng = Rng::new(0xC1057E5 ^ ((n as u64) << 8));
            let mut centres = vec![0f32; centres_n * DIM];
            for c in centres.chunks_exact_mut(DIM) {
                rng.gaussian(c, 1.0);
                normalise(c);
            }
            let mut rng = Rng::new(0xBEEF ^ ((n as u64) << 8) ^ stream);
            let sigma = NOISE_NORM / (DIM as f32).sqrt();
            for v in out.chunks_exact_mut(DIM) {
                let c = (rng.next_u64() % centres_n as u64) as usize;
                rng.gaussian(v, sigma);
                v.iter_mut()
                    .zip(&centres[c * DIM..(c + 1) * DIM])
                    .for_each(|(x, m)| *x += m);
                normalise(v);
            }
        }
    }
    out
}

fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("hnsw-bench")
}

/// The index of the vector set `name` (its cache folder), with `n` points:
/// loaded from the cache, or built over `vectors()` and saved. Returns it
/// with how it was obtained and how long that took.
fn index_for(
    name: &str,
    n: usize,
    vectors: impl FnOnce() -> Vec<f32>,
) -> (VectorIndex, &'static str, f64) {
    let root = bench_dir().join(format!("{name}-{n}-{GENERATOR}"));
    let dir = root.join("v1");
    let started = Instant::now();
    if dir.join("manifest.json").exists() {
        match VectorIndex::load(&dir) {
            Ok(index) if index.len() == n => {
                let secs = started.elapsed().as_secs_f64();
                if !dir.join("graph.bin").exists() {
                    // Cached by an older kefu (hnsw_rs's dump): save it anew.
                    let _ = index.save(&root);
                }
                return (index, "loaded", secs);
            }
            Ok(_) => eprintln!(
                "hnsw bench: cached index at {} has the wrong size",
                dir.display()
            ),
            Err(e) => eprintln!("hnsw bench: cached index at {}: {e}", dir.display()),
        }
    }
    eprintln!(
        "hnsw bench: building {name} n={n} (cached in {} for the next run)",
        root.display()
    );
    let vectors = vectors();
    assert_eq!(vectors.len(), n * DIM, "one vector per point");
    let points = (0..n)
        .map(|i| PointMeta {
            answer_id: format!("a{i}").into(),
            role: TextRole::Question,
            text: String::new(),
        })
        .collect();
    let manifest = Manifest {
        version: 1,
        model_id: format!("bench-{name}"),
        dimension: DIM,
        points: n,
        built_at: String::new(),
        question_kind: "query".into(),
    };
    let index = VectorIndex::build(manifest, points, vectors);
    let secs = started.elapsed().as_secs_f64();
    eprintln!("hnsw bench: built in {secs:.1} s; saving");
    if let Err(e) = index.save(&root) {
        eprintln!("hnsw bench: could not cache the index: {e}");
    }
    (index, "built", secs)
}

/// One set of vectors to measure: the indexed points (made only when the
/// cache does not hold the index) and the queries.
struct VectorSet {
    name: String,
    n: usize,
    base: Box<dyn FnOnce() -> Vec<f32>>,
    queries: Vec<f32>,
}

/// Real vectors from `path`: JSON Lines with an `embedding` array per line
/// (what `kefu embed` prints), L2-normalised. Rows equal to an earlier row
/// are dropped (a tie makes the exact top 10 ambiguous). A seeded shuffle
/// holds out `queries` rows (at most a tenth) as the queries; the rest are
/// indexed. Returns the set's name, the indexed rows and the queries.
fn read_vectors(path: &Path, queries: usize) -> (String, Vec<f32>, Vec<f32>) {
    use std::collections::HashSet;
    use std::io::BufRead;
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("KEFU_BENCH_VECTORS: {}: {e}", path.display()));
    let mut seen = HashSet::new();
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.expect("KEFU_BENCH_VECTORS: readable");
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("KEFU_BENCH_VECTORS line {}: {e}", i + 1));
        let mut row: Vec<f32> = serde_json::from_value(v["embedding"].clone())
            .unwrap_or_else(|e| panic!("KEFU_BENCH_VECTORS line {}: embedding: {e}", i + 1));
        assert_eq!(
            row.len(),
            DIM,
            "KEFU_BENCH_VECTORS line {}: dimension",
            i + 1
        );
        normalise(&mut row);
        if seen.insert(row.iter().map(|x| x.to_bits()).collect::<Vec<_>>()) {
            rows.push(row);
        }
    }
    // Fisher-Yates with the bench's own generator: the same split every run.
    let mut rng = Rng::new(0xF11E);
    for i in (1..rows.len()).rev() {
        rows.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let held = queries.min(rows.len() / 10).max(1);
    assert!(
        rows.len() >= held + K,
        "KEFU_BENCH_VECTORS: {} distinct rows; at least {} needed",
        rows.len(),
        held + K
    );
    let stem = path
        .file_stem()
        .map_or("vectors".into(), |s| s.to_string_lossy().into_owned());
    let qs = rows[..held].concat();
    let base = rows[held..].concat();
    (format!("file-{stem}"), base, qs)
}

/// The exact top-K ids of one query: a scan of every vector.
fn exact_one(index: &VectorIndex, q: &[f32]) -> Truth {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(K + 1);
    let mut sum = 0f64;
    for id in 0..index.len() {
        let s = dot(q, index.vector(id));
        sum += s as f64;
        if best.len() < K || s > best[K - 1].0 {
            let at = best.partition_point(|b| b.0 >= s);
            best.insert(at, (s, id));
            best.truncate(K);
        }
    }
    Truth {
        ids: best.iter().map(|b| b.1).collect(),
        sims: best.iter().map(|b| b.0).collect(),
        mean: sum / index.len().max(1) as f64,
    }
}

/// A query's exact top K (ids and cosines, best first) and its mean cosine
/// to every indexed point.
struct Truth {
    ids: Vec<usize>,
    sims: Vec<f32>,
    mean: f64,
}

impl Truth {
    /// Relative contrast at K: the mean distance over the Kth neighbour's
    /// (distance 1 - cosine). Near 1, every point is about as near as the
    /// neighbours and a graph walk has little to follow.
    fn contrast(&self) -> f64 {
        (1.0 - self.mean) / (1.0 - self.sims[K - 1] as f64).max(1e-9)
    }

    /// Local intrinsic dimensionality, the maximum-likelihood estimate from
    /// the K nearest Euclidean distances (Levina and Bickel); `None` when the
    /// query sits on an indexed point.
    fn lid(&self) -> Option<f64> {
        let r: Vec<f64> = self
            .sims
            .iter()
            .map(|&s| (2.0 - 2.0 * s as f64).max(0.0).sqrt())
            .collect();
        if r[0] <= 0.0 {
            return None;
        }
        let sum: f64 = r[..K - 1].iter().map(|&rj| (r[K - 1] / rj).ln()).sum();
        (sum > 0.0).then(|| (K - 1) as f64 / sum)
    }
}

/// The exact top-K ids of each query (two threads).
fn exact_top_k(index: &VectorIndex, queries: &[f32]) -> Vec<Truth> {
    let qs: Vec<&[f32]> = queries.chunks_exact(DIM).collect();
    let half = qs.len().div_ceil(2).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = qs
            .chunks(half)
            .map(|part| {
                s.spawn(move || part.iter().map(|q| exact_one(index, q)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("exact search thread"))
            .collect()
    })
}

/// Median latency of the exact scan on one thread (the baseline a graph
/// search must beat), over the first `EXACT_TIMED` queries.
fn exact_p50(index: &VectorIndex, qs: &[&[f32]]) -> f64 {
    let mut times: Vec<f64> = qs
        .iter()
        .take(EXACT_TIMED)
        .map(|q| {
            let t = Instant::now();
            std::hint::black_box(exact_one(index, q));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    percentile(&times, 0.5)
}

/// Recall@10 and per-query latency at one ef.
struct Measured {
    recall: f64,
    p50: f64,
    p99: f64,
    mean: f64,
}

/// One warm pass counting hits, then two timed passes.
fn measure(index: &VectorIndex, qs: &[&[f32]], truth: &[Truth], ef: usize) -> Measured {
    let keep = |_: &PointMeta| true;
    let mut hits = 0usize;
    let mut times = Vec::with_capacity(2 * qs.len());
    for pass in 0..3 {
        for (q, want) in qs.iter().zip(truth) {
            let t = Instant::now();
            let got = index.search(q, K, ef, &keep);
            let dt = t.elapsed().as_secs_f64() * 1e3;
            if pass == 0 {
                hits += got.iter().filter(|g| want.ids.contains(&g.0)).count();
            } else {
                times.push(dt);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let n = qs.len() as f64;
    Measured {
        recall: hits as f64 / (K as f64 * n),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        mean: times.iter().sum::<f64>() / times.len() as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let sizes: Vec<usize> = env_list("KEFU_BENCH_SIZES", "10000,100000,1000000")
        .iter()
        .map(|s| {
            s.replace('_', "")
                .parse()
                .expect("KEFU_BENCH_SIZES: numbers")
        })
        .collect();
    let dists: Vec<Dist> = env_list("KEFU_BENCH_DISTS", "clustered,uniform")
        .iter()
        .map(|d| match d.as_str() {
            "uniform" => Dist::Uniform,
            "clustered" => Dist::Clustered,
            other => panic!("KEFU_BENCH_DISTS: unknown distribution {other}"),
        })
        .collect();
    let n_queries: usize = std::env::var("KEFU_BENCH_QUERIES")
        .ok()
        .map(|q| q.parse().expect("KEFU_BENCH_QUERIES: a number"))
        .unwrap_or(500);
    let efs: Vec<usize> = env_list("KEFU_BENCH_EF", &Settings::default().ef_search.to_string())
        .iter()
        .map(|e| e.parse().expect("KEFU_BENCH_EF: numbers"))
        .collect();
    let keep = |_: &PointMeta| true;
    let mut summary = Vec::new();

    // The vector sets: a file's, or every (distribution, size).
    let mut sets: Vec<VectorSet> = Vec::new();
    if let Some(path) = std::env::var_os("KEFU_BENCH_VECTORS") {
        let (name, base, queries) = read_vectors(Path::new(&path), n_queries);
        sets.push(VectorSet {
            name,
            n: base.len() / DIM,
            base: Box::new(move || base),
            queries,
        });
    } else {
        for &dist in &dists {
            for &n in &sizes {
                sets.push(VectorSet {
                    name: dist.name().to_string(),
                    n,
                    base: Box::new(move || draw(dist, n, n, 0)),
                    queries: draw(dist, n, n_queries, 1),
                });
            }
        }
    }

    for VectorSet {
        name,
        n,
        base,
        queries,
    } in sets
    {
        let (index, how, secs) = index_for(&name, n, base);
        let truth = exact_top_k(&index, &queries);
        let qs: Vec<&[f32]> = queries.chunks_exact(DIM).collect();
        let exact_ms = exact_p50(&index, &qs);
        let contrast = median(truth.iter().map(Truth::contrast).collect());
        let lid = median(truth.iter().filter_map(Truth::lid).collect());
        // Mean exact cosine of the 1st and the 10th true neighbour.
        let mean_sim =
            |i: usize| truth.iter().map(|t| t.sims[i] as f64).sum::<f64>() / qs.len() as f64;
        let (top1, top10) = (mean_sim(0), mean_sim(K - 1));
        println!(
            "hnsw {name:>9} n={n:>7}: relative contrast@10 {contrast:.2}, local intrinsic \
             dimensionality {lid:.1} (medians over the queries; exact scan p50 {exact_ms:.3} ms)"
        );

        for &ef in &efs {
            let m = measure(&index, &qs, &truth, ef);
            println!(
                "hnsw {name:>9} n={n:>7} dim={DIM} M=24 ef_construction=200 ef_search={ef} k={K} \
                     queries={}: recall@10 {:.4}  p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms  \
                     (exact 1st/10th neighbour cosine {:.3}/{:.3}; index {how} in {secs:.1} s)",
                qs.len(),
                m.recall,
                m.p50,
                m.p99,
                m.mean,
                top1,
                top10,
            );
            summary.push(serde_json::json!({
                "measured_at": time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                "distribution": name,
                "n": n,
                "dim": DIM,
                "max_connections": 24,
                "ef_construction": 200,
                "ef_search": ef,
                "k": K,
                "queries": qs.len(),
                "recall_at_10": m.recall,
                "p50_ms": m.p50,
                "p99_ms": m.p99,
                "mean_ms": m.mean,
                "exact_top1_cosine": top1,
                "exact_top10_cosine": top10,
                "exact_scan_p50_ms": exact_ms,
                "relative_contrast_at_10": contrast,
                "local_intrinsic_dimensionality": lid,
                "index": how,
                "index_secs": secs,
            }));
        }
        let ef = efs[0];

        let mut g = c.benchmark_group(format!("hnsw/{name}"));
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("search_k10", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                index.search(qs[i], K, ef, &keep)
            })
        });
        g.finish();
    }

    // Merge into the summary: a run over some sizes keeps the others' figures.
    let out = bench_dir().join("summary.json");
    let mut results: Vec<serde_json::Value> = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|d| d["generator"] == GENERATOR)
        .and_then(|d| d["results"].as_array().cloned())
        .unwrap_or_default();
    let key = |r: &serde_json::Value| {
        (
            r["distribution"].to_string(),
            r["n"].as_u64(),
            r["ef_search"].as_u64(),
        )
    };
    results.retain(|r| !summary.iter().any(|s| key(s) == key(r)));
    results.extend(summary);
    results.sort_by_key(|r| key(r));
    let doc = serde_json::json!({
        "generator": GENERATOR,
        "distributions": {
            "uniform": "coordinates i.i.d. N(0,1), L2-normalised (uniform on the sphere)",
            "file-*": "the rows of KEFU_BENCH_VECTORS (real embeddings), a tenth held out as the queries",
            "clustered": format!(
                "Gaussian mixture: n/{POINTS_PER_CENTRE} centres uniform on the sphere; point = centre + N(0, {NOISE_NORM}^2/{DIM}) per coordinate, L2-normalised"
            ),
        },
        "results": results,
    });
    let _ = std::fs::create_dir_all(bench_dir());
    match std::fs::write(&out, serde_json::to_vec_pretty(&doc).expect("json")) {
        Ok(()) => println!("hnsw bench: summary written to {}", out.display()),
        Err(e) => eprintln!("hnsw bench: could not write {}: {e}", out.display()),
    }
    c.final_summary();
}
