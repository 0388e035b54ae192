//! `kefu eval`: retrieval quality on a labelled question set, measured
//! through the same pipeline the service uses (store, reindex, recommend).
//!
//! Input (JSON Lines, the format of the shared benchmark sets):
//! - corpus: `{"id", "question", "answer", "group"}` (question or answer may be empty, not both);
//! - queries: `{"qid", "query", "relevant_ids": [...]}` (ids from the corpus);
//! - out-of-scope queries: the same with `relevant_ids` empty or absent.
//!
//! Metrics follow the benchmark's README: a query's rank is the position of
//! the first relevant answer; R@k is the share of queries ranked <= k;
//! MRR@10 the mean of 1/rank (0 beyond 10); nDCG@10 uses binary gains over
//! all relevant answers. Hand-off quality treats "hand off" as the positive
//! prediction for out-of-scope questions.

pub mod classify;
pub mod context;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::embedding::Embedder;
use crate::recommend::rank::{
    self, Calibration, Candidates, Fusion, Mode, Norm, FEATURES, N_FEATURES,
};
use crate::recommend::{Engine, Query, ReindexMode, Settings};
use crate::store::{valid_id, AnswerInput, Status};

#[derive(Debug, Deserialize)]
struct CorpusLine {
    id: String,
    #[serde(default)]
    question: String,
    #[serde(default)]
    answer: String,
    #[serde(default)]
    group: Option<String>,
}

#[derive(Debug, Deserialize)]
struct QueryLine {
    #[serde(default)]
    qid: Option<String>,
    query: String,
    #[serde(default)]
    relevant_ids: Vec<String>,
}

/// A corpus entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub question: String,
    pub answer: String,
    pub group: Option<String>,
}

/// A labelled query; `relevant` empty means out of scope.
#[derive(Debug, Clone)]
pub struct LabelledQuery {
    pub qid: String,
    pub query: String,
    pub relevant: Vec<String>,
}

/// A JSON Lines file's non-empty lines, trimmed, with their 1-based numbers.
pub(crate) fn lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// Reads and checks a corpus file.
pub fn read_corpus(path: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in lines(path)? {
        let at = || format!("{} line {n}", path.display());
        let c: CorpusLine = serde_json::from_str(&line).with_context(at)?;
        if c.id.trim().is_empty() {
            bail!("{}: empty id", at());
        }
        if !seen.insert(c.id.clone()) {
            bail!("{}: id '{}' appears twice", at(), c.id);
        }
        if c.question.trim().is_empty() && c.answer.trim().is_empty() {
            bail!("{}: '{}' has neither a question nor an answer", at(), c.id);
        }
        out.push(Entry {
            id: c.id,
            question: c.question.trim().to_string(),
            answer: c.answer.trim().to_string(),
            group: c.group.filter(|g| !g.trim().is_empty()),
        });
    }
    if out.is_empty() {
        bail!("{}: the corpus has no entries", path.display());
    }
    Ok(out)
}

/// Reads and checks a query file against the corpus ids.
pub fn read_queries(
    path: &Path,
    corpus: &HashSet<&str>,
    out_of_scope: bool,
) -> Result<Vec<LabelledQuery>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let at = || format!("{} line {n}", path.display());
        let q: QueryLine = serde_json::from_str(&line).with_context(at)?;
        if q.query.trim().is_empty() {
            bail!("{}: empty query", at());
        }
        if out_of_scope && !q.relevant_ids.is_empty() {
            bail!("{}: an out-of-scope query must have no relevant_ids", at());
        }
        if !out_of_scope && q.relevant_ids.is_empty() {
            bail!(
                "{}: no relevant_ids (put out-of-scope questions in the --oos file)",
                at()
            );
        }
        if let Some(bad) = q.relevant_ids.iter().find(|r| !corpus.contains(r.as_str())) {
            bail!("{}: relevant id '{bad}' is not in the corpus", at());
        }
        out.push(LabelledQuery {
            qid: q.qid.unwrap_or_else(|| format!("line{n}")),
            query: q.query.trim().to_string(),
            relevant: q.relevant_ids,
        });
    }
    if out.is_empty() {
        bail!("{}: no queries", path.display());
    }
    Ok(out)
}

/// The answers a corpus loads as, and which answer each entry went into.
pub struct Loaded {
    pub answers: Vec<AnswerInput>,
    pub answer_of: HashMap<String, String>,
}

fn answer(id: String, question: String, variants: Vec<String>, answer: String) -> AnswerInput {
    AnswerInput {
        id,
        question,
        variants,
        answer,
        category: "eval".into(),
        subcategory: String::new(),
        tags: Vec::new(),
        locale: String::new(),
        status: Status::Published,
        valid_from: None,
        valid_until: None,
        review_after: None,
    }
}

/// One answer per entry, or (`group_variants`) one answer per group with the
/// other entries' questions as variants.
pub fn load_answers(corpus: &[Entry], group_variants: bool) -> Loaded {
    let mut answers = Vec::new();
    let mut answer_of = HashMap::new();
    let safe = |id: &str, n: usize, prefix: &str| {
        if valid_id(id) {
            id.to_string()
        } else {
            format!("{prefix}{n}")
        }
    };
    if !group_variants {
        for (n, e) in corpus.iter().enumerate() {
            let id = safe(&e.id, n, "entry-");
            answer_of.insert(e.id.clone(), id.clone());
            answers.push(answer(id, e.question.clone(), Vec::new(), e.answer.clone()));
        }
        return Loaded { answers, answer_of };
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<&Entry>> = HashMap::new();
    for e in corpus {
        let g = e.group.clone().unwrap_or_else(|| format!("\u{0}{}", e.id));
        if !groups.contains_key(&g) {
            order.push(g.clone());
        }
        groups.entry(g).or_default().push(e);
    }
    for (n, g) in order.iter().enumerate() {
        let members = &groups[g];
        let id = safe(g.trim_start_matches('\u{0}'), n, "group-");
        let mut questions: Vec<String> = Vec::new();
        for m in members {
            if !m.question.is_empty() && !questions.contains(&m.question) {
                questions.push(m.question.clone());
            }
            answer_of.insert(m.id.clone(), id.clone());
        }
        let text = members
            .iter()
            .find(|m| !m.answer.is_empty())
            .map(|m| m.answer.clone())
            .unwrap_or_default();
        let first = if questions.is_empty() {
            String::new()
        } else {
            questions.remove(0)
        };
        answers.push(answer(id, first, questions, text));
    }
    Loaded { answers, answer_of }
}

/// Ranking metrics over in-scope queries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ranking {
    pub queries: usize,
    pub r1: f64,
    pub r5: f64,
    pub r10: f64,
    pub mrr10: f64,
    pub ndcg10: f64,
}

/// Hand-off quality (positive: an out-of-scope question handed off).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Handoff {
    pub min_confidence: f64,
    pub oos_queries: usize,
    pub oos_precision: f64,
    pub oos_recall: f64,
    pub oos_f1: f64,
    /// Share of in-scope questions answered (not handed off).
    pub in_scope_accepted: f64,
    /// Top-1 accuracy among the in-scope questions answered.
    pub in_scope_accuracy_accepted: f64,
    /// Area under the ROC curve of top-1 confidence, in scope vs out of scope.
    pub auroc: f64,
}

/// One query's outcome under some ranking.
#[derive(Debug, Clone)]
struct Outcome {
    /// 1-based rank of the first relevant answer within the top 10.
    rank: Option<usize>,
    ndcg: f64,
    top1_correct: bool,
    top1_confidence: f64,
    features: Option<[f32; N_FEATURES]>,
    in_scope: bool,
}

fn outcome(ranked: &[rank::Ranked], relevant: &HashSet<&str>) -> Outcome {
    let hits: Vec<bool> = ranked
        .iter()
        .take(10)
        .map(|r| relevant.contains(&*r.answer_id))
        .collect();
    let rank = hits.iter().position(|&h| h).map(|p| p + 1);
    let dcg: f64 = hits
        .iter()
        .enumerate()
        .filter(|(_, &h)| h)
        .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(10))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    Outcome {
        rank,
        ndcg: if ideal > 0.0 { dcg / ideal } else { 0.0 },
        top1_correct: rank == Some(1),
        top1_confidence: ranked.first().map_or(0.0, |r| r.confidence as f64),
        features: ranked.first().map(|r| r.features),
        in_scope: !relevant.is_empty(),
    }
}

fn ranking(outcomes: &[Outcome]) -> Ranking {
    let ins: Vec<&Outcome> = outcomes.iter().filter(|o| o.in_scope).collect();
    let n = ins.len().max(1) as f64;
    let share = |k: usize| {
        ins.iter()
            .filter(|o| o.rank.is_some_and(|r| r <= k))
            .count() as f64
            / n
    };
    Ranking {
        queries: ins.len(),
        r1: share(1),
        r5: share(5),
        r10: share(10),
        mrr10: ins
            .iter()
            .map(|o| o.rank.map_or(0.0, |r| 1.0 / r as f64))
            .sum::<f64>()
            / n,
        ndcg10: ins.iter().map(|o| o.ndcg).sum::<f64>() / n,
    }
}

/// AUROC of `score` for in-scope (positive) against out-of-scope questions.
fn auroc(outcomes: &[Outcome], score: impl Fn(&Outcome) -> f64) -> f64 {
    let v: Vec<(f64, bool)> = outcomes.iter().map(|o| (score(o), o.in_scope)).collect();
    auroc_of(&v)
}

/// AUROC of (score, positive?) pairs: Mann-Whitney U with average ranks for
/// ties; NaN without both classes.
pub(crate) fn auroc_of(scored: &[(f64, bool)]) -> f64 {
    let mut v = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = v.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += v[i..=j].iter().filter(|x| x.1).count() as f64 * avg;
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn handoff_at(outcomes: &[Outcome], t: f64) -> Handoff {
    let oos: Vec<&Outcome> = outcomes.iter().filter(|o| !o.in_scope).collect();
    let ins: Vec<&Outcome> = outcomes.iter().filter(|o| o.in_scope).collect();
    let tp = oos.iter().filter(|o| o.top1_confidence < t).count() as f64;
    let fp = ins.iter().filter(|o| o.top1_confidence < t).count() as f64;
    let accepted: Vec<&&Outcome> = ins.iter().filter(|o| o.top1_confidence >= t).collect();
    let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let recall = tp / (oos.len().max(1) as f64);
    Handoff {
        min_confidence: t,
        oos_queries: oos.len(),
        oos_precision: precision,
        oos_recall: recall,
        oos_f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        },
        in_scope_accepted: accepted.len() as f64 / ins.len().max(1) as f64,
        in_scope_accuracy_accepted: accepted.iter().filter(|o| o.top1_correct).count() as f64
            / accepted.len().max(1) as f64,
        auroc: auroc(outcomes, |o| o.top1_confidence),
    }
}

/// The threshold with the best OOS F1 among those keeping in-scope accuracy
/// among accepted at `min_accuracy` or more (or the best F1 if none does).
fn best_threshold(outcomes: &[Outcome], min_accuracy: f64) -> Handoff {
    let mut ts: Vec<f64> = outcomes.iter().map(|o| o.top1_confidence).collect();
    ts.sort_by(|a, b| a.total_cmp(b));
    ts.dedup();
    let mut best: Option<Handoff> = None;
    let mut best_any: Option<Handoff> = None;
    for w in ts.windows(2) {
        let h = handoff_at(outcomes, (w[0] + w[1]) / 2.0);
        if best_any.as_ref().is_none_or(|b| h.oos_f1 > b.oos_f1) {
            best_any = Some(h.clone());
        }
        if h.in_scope_accuracy_accepted >= min_accuracy
            && best.as_ref().is_none_or(|b| h.oos_f1 > b.oos_f1)
        {
            best = Some(h);
        }
    }
    best.or(best_any).unwrap_or_default()
}

/// Fits the confidence model: L2-regularised logistic regression on
/// standardised features, by Newton's method; the label is "the top result
/// is a right answer" (always false for out-of-scope questions).
fn fit_logistic(
    x: &[[f32; N_FEATURES]],
    y: &[bool],
) -> ([f32; N_FEATURES], [f32; N_FEATURES], f32, [f32; N_FEATURES]) {
    const F: usize = N_FEATURES;
    const D: usize = N_FEATURES + 1;
    let n = x.len().max(1) as f64;
    let mut mean = [0f64; F];
    let mut var = [0f64; F];
    for r in x {
        for j in 0..F {
            mean[j] += r[j] as f64 / n;
        }
    }
    for r in x {
        for j in 0..F {
            var[j] += (r[j] as f64 - mean[j]).powi(2) / n;
        }
    }
    let scale = var.map(|v| if v > 1e-12 { v.sqrt() } else { 1.0 });
    let z: Vec<[f64; D]> = x
        .iter()
        .map(|r| {
            let mut v = [1.0; D];
            for j in 0..F {
                v[j + 1] = (r[j] as f64 - mean[j]) / scale[j];
            }
            v
        })
        .collect();
    let lambda = 1.0;
    let mut w = [0f64; D];
    for _ in 0..50 {
        let mut g = [0f64; D];
        let mut h = [[0f64; D]; D];
        for (zi, &yi) in z.iter().zip(y) {
            let p = 1.0 / (1.0 + (-(0..D).map(|j| w[j] * zi[j]).sum::<f64>()).exp());
            let t = if yi { 1.0 } else { 0.0 };
            for j in 0..D {
                g[j] += (p - t) * zi[j];
                for k in 0..D {
                    h[j][k] += p * (1.0 - p) * zi[j] * zi[k];
                }
            }
        }
        for j in 1..D {
            g[j] += lambda * w[j];
            h[j][j] += lambda;
        }
        let step = solve(h, g);
        let mut moved = 0.0f64;
        for j in 0..D {
            w[j] -= step[j];
            moved = moved.max(step[j].abs());
        }
        if moved < 1e-9 {
            break;
        }
    }
    let mut weights = [0f32; F];
    for j in 0..F {
        weights[j] = w[j + 1] as f32;
    }
    (
        weights,
        mean.map(|v| v as f32),
        w[0] as f32,
        scale.map(|v| v as f32),
    )
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting.
fn solve<const D: usize>(mut a: [[f64; D]; D], mut b: [f64; D]) -> [f64; D] {
    for c in 0..D {
        let p = (c..D)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, p);
        b.swap(c, p);
        if a[c][c].abs() < 1e-12 {
            continue;
        }
        let pivot = a[c];
        for r in c + 1..D {
            let f = a[r][c] / pivot[c];
            for (x, p) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0f64; D];
    for c in (0..D).rev() {
        let s: f64 = (c + 1..D).map(|k| a[c][k] * x[k]).sum();
        x[c] = if a[c][c].abs() < 1e-12 {
            0.0
        } else {
            (b[c] - s) / a[c][c]
        };
    }
    x
}

/// Told (phase, done, total) as an evaluation advances.
pub type Progress = Box<dyn Fn(&str, usize, usize)>;

/// What `kefu eval` is asked to do.
pub struct EvalOptions {
    pub group_variants: bool,
    pub settings: Settings,
    pub sweep: bool,
    pub calibrate: bool,
    pub limit: Option<usize>,
    /// Keep the data directory here instead of a temporary one.
    pub data_dir: Option<std::path::PathBuf>,
    /// Write each query's candidates (JSON Lines) here, for error analysis.
    pub trace: Option<std::path::PathBuf>,
    pub progress: Progress,
}

/// One fusion configuration's figures in a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub fusion: Fusion,
    pub ranking: Ranking,
    /// AUROC of the top-1 fused score (in scope vs out of scope), when there are OOS queries.
    pub score_auroc: Option<f64>,
}

/// A fitted calibration, with its figures under two-fold cross-validation.
#[derive(Debug, Clone, Serialize)]
pub struct Calibrated {
    pub calibration: Calibration,
    pub in_sample: Handoff,
    pub cross_validated: Handoff,
}

/// The report `kefu eval` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub corpus_entries: usize,
    pub answers: usize,
    pub loading: &'static str,
    pub fusion: Fusion,
    pub question_kind: String,
    pub ranking: Ranking,
    pub latency_ms: Latency,
    pub handoff: Option<Handoff>,
    /// The best achievable on this set by a threshold on confidence (for comparison).
    pub handoff_best: Option<Handoff>,
    /// The best a threshold on the raw top-1 cosine achieves (the baseline
    /// hand-off signal), with in-scope accuracy among accepted >= 0.85.
    pub handoff_cosine: Option<Handoff>,
    pub sweep: Vec<SweepRow>,
    pub calibrated: Option<Calibrated>,
    pub index_secs: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
}

/// The nearest-rank percentile of sorted values (0 when empty).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs an evaluation.
pub fn run(
    embedder: Arc<dyn Embedder>,
    corpus: &[Entry],
    queries: &[LabelledQuery],
    oos: &[LabelledQuery],
    opts: EvalOptions,
) -> Result<Report> {
    let loaded = load_answers(corpus, opts.group_variants);
    let tmp;
    let dir = match &opts.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary data directory")?;
            tmp.path().to_path_buf()
        }
    };
    let mut settings = opts.settings.clone();
    let fusion = settings.fusion;
    if opts.sweep || opts.calibrate {
        // Collect both legs' candidates; each configuration re-ranks them.
        settings.fusion.mode = Mode::Hybrid;
    }
    let (engine, _) = Engine::open(&dir, embedder, settings)?;
    for chunk in loaded.answers.chunks(500) {
        engine.upsert(chunk)?;
    }
    let started = Instant::now();
    engine.reindex_now(ReindexMode::Incremental, &|d, t| {
        (opts.progress)("indexing", d, t)
    })?;
    let index_secs = started.elapsed().as_secs_f64();
    let calibration = engine.settings().calibration().into_owned();

    let limit = opts.limit.unwrap_or(usize::MAX);
    let all: Vec<&LabelledQuery> = queries
        .iter()
        .take(limit)
        .chain(oos.iter().take(limit))
        .collect();
    let mut latencies = Vec::with_capacity(all.len());
    let mut traces: Vec<(Candidates, HashSet<&str>)> = Vec::with_capacity(all.len());
    for (i, q) in all.iter().enumerate() {
        let query = Query {
            include_expired: true,
            ..Query::new(q.query.as_str(), 10)
        };
        let t = Instant::now();
        let (_, cands) = engine.recommend_traced(&query)?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let relevant: HashSet<&str> = q
            .relevant
            .iter()
            .filter_map(|r| loaded.answer_of.get(r).map(String::as_str))
            .collect();
        traces.push((cands, relevant));
        (opts.progress)("querying", i + 1, all.len());
    }
    if let Some(path) = &opts.trace {
        write_trace(path, &all, &traces)?;
    }
    let outcomes_for = |f: &Fusion, cal: &Calibration| -> Vec<Outcome> {
        traces
            .iter()
            .map(|(c, rel)| outcome(&c.rank(f, cal, 10), rel))
            .collect()
    };
    let outcomes = outcomes_for(&fusion, &calibration);
    let has_oos = outcomes.iter().any(|o| !o.in_scope);
    let min_confidence = opts
        .settings
        .min_confidence
        .unwrap_or(calibration.min_confidence) as f64;

    let mut sweep = Vec::new();
    if opts.sweep {
        let mut configs = vec![
            Fusion {
                mode: Mode::Dense,
                ..fusion
            },
            Fusion {
                mode: Mode::Lexical,
                ..fusion
            },
        ];
        for norm in [Norm::Raw, Norm::MinMax] {
            for w in [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95] {
                configs.push(Fusion {
                    mode: Mode::Hybrid,
                    norm,
                    dense_weight: w,
                    ..fusion
                });
            }
        }
        for t in [0.0, 0.01, 0.02, 0.03, 0.05] {
            for mode in [Mode::Dense, Mode::Hybrid] {
                configs.push(Fusion {
                    mode,
                    pool_temperature: t,
                    ..fusion
                });
            }
        }
        for f in configs {
            let o = outcomes_for(&f, &calibration);
            sweep.push(SweepRow {
                fusion: f,
                ranking: ranking(&o),
                score_auroc: has_oos
                    .then(|| auroc(&o, |x| x.features.map_or(0.0, |f| f[0] as f64))),
            });
        }
    }

    let calibrated = if opts.calibrate {
        if !has_oos {
            bail!("--calibrate needs out-of-scope queries (--oos)");
        }
        Some(calibrate(
            &outcomes,
            &fusion,
            &traces,
            opts.settings.question_kind.to_string(),
        ))
    } else {
        None
    };

    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(Report {
        corpus_entries: corpus.len(),
        answers: loaded.answers.len(),
        loading: if opts.group_variants {
            "entries sharing a group loaded as variants of one answer"
        } else {
            "one answer per corpus entry"
        },
        fusion,
        question_kind: opts.settings.question_kind.to_string(),
        ranking: ranking(&outcomes),
        latency_ms: Latency {
            p50: percentile(&latencies, 0.5),
            p90: percentile(&latencies, 0.9),
            p99: percentile(&latencies, 0.99),
            mean: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
        },
        handoff: has_oos.then(|| handoff_at(&outcomes, min_confidence)),
        handoff_best: has_oos.then(|| best_threshold(&outcomes, MIN_ACCURACY)),
        handoff_cosine: has_oos.then(|| {
            let by_cosine: Vec<Outcome> = outcomes
                .iter()
                .map(|o| Outcome {
                    top1_confidence: o.features.map_or(-1.0, |f| f[1] as f64),
                    ..o.clone()
                })
                .collect();
            best_threshold(&by_cosine, MIN_ACCURACY)
        }),
        sweep,
        calibrated,
        index_secs,
    })
}

fn write_trace(
    path: &Path,
    queries: &[&LabelledQuery],
    traces: &[(Candidates, HashSet<&str>)],
) -> Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for (q, (c, rel)) in queries.iter().zip(traces) {
        let mut list: Vec<&rank::Candidate> = c.list.iter().collect();
        list.sort_by(|a, b| b.dense.total_cmp(&a.dense));
        let cands: Vec<serde_json::Value> = list
            .iter()
            .map(|x| {
                serde_json::json!([
                    &*x.answer_id,
                    x.dense,
                    x.lexical,
                    rel.contains(&*x.answer_id)
                ])
            })
            .collect();
        let line = serde_json::json!({
            "qid": q.qid,
            "query": q.query,
            "in_scope": !rel.is_empty(),
            "coverage": c.coverage,
            "candidates": cands,
        });
        writeln!(w, "{line}")?;
    }
    w.flush()?;
    Ok(())
}

const MIN_ACCURACY: f64 = 0.85;

fn calibrate(
    outcomes: &[Outcome],
    fusion: &Fusion,
    traces: &[(Candidates, HashSet<&str>)],
    question_kind: String,
) -> Calibrated {
    let rows: Vec<([f32; N_FEATURES], bool)> = outcomes
        .iter()
        .map(|o| (o.features.unwrap_or([0.0; N_FEATURES]), o.top1_correct))
        .collect();
    let fit = |idx: &[usize]| -> Calibration {
        let x: Vec<[f32; N_FEATURES]> = idx.iter().map(|&i| rows[i].0).collect();
        let y: Vec<bool> = idx.iter().map(|&i| rows[i].1).collect();
        let (weights, mean, bias, scale) = fit_logistic(&x, &y);
        Calibration {
            bias,
            weights,
            mean,
            scale,
            min_confidence: 0.5,
            source: String::new(),
        }
    };
    let rescored = |cal: &Calibration, idx: &[usize]| -> Vec<Outcome> {
        idx.iter()
            .map(|&i| outcome(&traces[i].0.rank(fusion, cal, 10), &traces[i].1))
            .collect()
    };
    // Two folds: fit and pick the threshold on one half, measure on the other.
    let (even, odd): (Vec<usize>, Vec<usize>) = (0..rows.len()).partition(|i| i % 2 == 0);
    let mut held_out = Vec::new();
    for (train, test) in [(&even, &odd), (&odd, &even)] {
        let mut cal = fit(train);
        cal.min_confidence =
            best_threshold(&rescored(&cal, train), MIN_ACCURACY).min_confidence as f32;
        let t = cal.min_confidence as f64;
        held_out.push((rescored(&cal, test), t));
    }
    // Pool the two held-out halves, each judged at its own fold's threshold.
    let pooled: Vec<Outcome> = held_out
        .iter()
        .flat_map(|(o, t)| {
            o.iter().map(move |x| Outcome {
                top1_confidence: x.top1_confidence - t + 0.5,
                ..x.clone()
            })
        })
        .collect();
    let cross_validated = handoff_at(&pooled, 0.5);
    let all: Vec<usize> = (0..rows.len()).collect();
    let mut cal = fit(&all);
    let in_sample = best_threshold(&rescored(&cal, &all), MIN_ACCURACY);
    cal.min_confidence = in_sample.min_confidence as f32;
    cal.source = format!(
        "kefu eval --calibrate: {} questions ({} out of scope); fusion {:?}/{:?}/w={}/T={}; questions as {}",
        rows.len(),
        outcomes.iter().filter(|o| !o.in_scope).count(),
        fusion.mode,
        fusion.norm,
        fusion.dense_weight,
        fusion.pool_temperature,
        question_kind
    );
    Calibrated {
        calibration: cal,
        in_sample,
        cross_validated,
    }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "corpus: {} entries -> {} answers ({})",
        r.corpus_entries, r.answers, r.loading
    );
    let _ = writeln!(
        s,
        "retrieval: mode {:?}, norm {:?}, dense weight {}, pooling temperature {}, questions embedded as {}; indexed in {:.1} s",
        r.fusion.mode, r.fusion.norm, r.fusion.dense_weight, r.fusion.pool_temperature, r.question_kind, r.index_secs
    );
    let k = &r.ranking;
    let _ = writeln!(
        s,
        "in scope: {} queries  R@1 {:.3}  R@5 {:.3}  R@10 {:.3}  MRR@10 {:.3}  nDCG@10 {:.3}",
        k.queries, k.r1, k.r5, k.r10, k.mrr10, k.ndcg10
    );
    let l = &r.latency_ms;
    let _ = writeln!(
        s,
        "latency per recommend (ms): p50 {:.1}  p90 {:.1}  p99 {:.1}  mean {:.1}",
        l.p50, l.p90, l.p99, l.mean
    );
    let line = |s: &mut String, what: &str, h: &Handoff| {
        let _ = writeln!(
            s,
            "{what} (min confidence {:.3}): OOS precision {:.3} recall {:.3} F1 {:.3}; in scope accepted {:.3}, accuracy among accepted {:.3}; AUROC {:.3}",
            h.min_confidence,
            h.oos_precision,
            h.oos_recall,
            h.oos_f1,
            h.in_scope_accepted,
            h.in_scope_accuracy_accepted,
            h.auroc
        );
    };
    if let Some(h) = &r.handoff {
        let _ = writeln!(s, "out of scope: {} queries", h.oos_queries);
        line(&mut s, "hand-off", h);
    }
    if let Some(h) = &r.handoff_best {
        line(&mut s, "best confidence threshold on this set", h);
    }
    if let Some(h) = &r.handoff_cosine {
        line(&mut s, "best raw top-1 cosine threshold (baseline)", h);
    }
    if !r.sweep.is_empty() {
        let _ = writeln!(s, "\nsweep (same candidates, re-ranked):");
        let _ = writeln!(
            s,
            "{:<28} {:>6} {:>6} {:>7} {:>8}",
            "fusion", "R@1", "R@10", "MRR@10", "AUROC"
        );
        for row in &r.sweep {
            let name = match row.fusion.mode {
                Mode::Hybrid => format!(
                    "hybrid {:?} w={} T={}",
                    row.fusion.norm, row.fusion.dense_weight, row.fusion.pool_temperature
                ),
                m => format!("{m:?} T={}", row.fusion.pool_temperature),
            };
            let _ = writeln!(
                s,
                "{:<28} {:>6.3} {:>6.3} {:>7.3} {:>8}",
                name,
                row.ranking.r1,
                row.ranking.r10,
                row.ranking.mrr10,
                row.score_auroc.map_or("-".into(), |a| format!("{a:.3}"))
            );
        }
    }
    if let Some(c) = &r.calibrated {
        let _ = writeln!(s, "\ncalibration (features {FEATURES:?}):");
        line(&mut s, "two-fold cross-validated", &c.cross_validated);
        line(&mut s, "fitted on all", &c.in_sample);
        let _ = writeln!(
            s,
            "put under \"calibration\" in the model's kefu.json:\n{}",
            serde_json::to_string_pretty(&c.calibration).unwrap_or_default()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(rank: Option<usize>, conf: f64, in_scope: bool) -> Outcome {
        Outcome {
            rank,
            ndcg: 0.0,
            top1_correct: rank == Some(1),
            top1_confidence: conf,
            features: None,
            in_scope,
        }
    }

    #[test]
    fn metrics_follow_the_definitions() {
        let r = ranking(&[
            o(Some(1), 0.9, true),
            o(Some(4), 0.8, true),
            o(None, 0.1, true),
        ]);
        assert!((r.r1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((r.r5 - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.mrr10 - (1.0 + 0.25) / 3.0).abs() < 1e-9);
        let all = [
            o(Some(1), 0.9, true),
            o(Some(2), 0.7, true),
            o(None, 0.2, false),
            o(None, 0.75, false),
        ];
        assert!((auroc(&all, |x| x.top1_confidence) - 0.75).abs() < 1e-9);
        let h = handoff_at(&all, 0.72);
        // Hands off 0.2 (OOS), 0.7 (in scope); accepts 0.75 (OOS), 0.9.
        assert!((h.oos_precision - 0.5).abs() < 1e-9);
        assert!((h.oos_recall - 0.5).abs() < 1e-9);
        assert!((h.in_scope_accepted - 0.5).abs() < 1e-9);
        assert!((h.in_scope_accuracy_accepted - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ndcg_counts_every_relevant_answer() {
        let ranked: Vec<rank::Ranked> = ["a", "x", "b"]
            .iter()
            .map(|id| rank::Ranked {
                answer_id: (*id).into(),
                score: 0.0,
                dense: 0.0,
                lexical: 0.0,
                point: 0,
                features: [0.0; N_FEATURES],
                confidence: 0.5,
            })
            .collect();
        let rel: HashSet<&str> = ["a", "b"].into_iter().collect();
        let out = outcome(&ranked, &rel);
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((out.ndcg - (1.0 + 0.5) / ideal).abs() < 1e-9);
        assert_eq!(out.rank, Some(1));
    }

    #[test]
    fn logistic_fit_separates() {
        let x: Vec<[f32; N_FEATURES]> = (0..200)
            .map(|i| {
                let v = i as f32 / 200.0;
                [v, v, 0.0, 0.0, 0.0, 0.0, 0.0]
            })
            .collect();
        let y: Vec<bool> = (0..200).map(|i| i >= 100).collect();
        let (w, mean, bias, scale) = fit_logistic(&x, &y);
        let cal = Calibration {
            bias,
            weights: w,
            mean,
            scale,
            min_confidence: 0.5,
            source: String::new(),
        };
        assert!(cal.confidence(&[0.9, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0]) > 0.9);
        assert!(cal.confidence(&[0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]) < 0.1);
    }

    #[test]
    fn grouping_loads_variants() {
        let e = |id: &str, q: &str, g: &str| Entry {
            id: id.into(),
            question: q.into(),
            answer: String::new(),
            group: Some(g.into()),
        };
        let corpus = [e("1", "a", "g"), e("2", "b", "g"), e("3", "c", "h")];
        let l = load_answers(&corpus, true);
        assert_eq!(l.answers.len(), 2);
        assert_eq!(l.answers[0].variants, vec!["b".to_string()]);
        assert_eq!(l.answer_of["2"], "g");
        assert_eq!(load_answers(&corpus, false).answers.len(), 3);
    }
}
