//! `kefu eval classify`: how well questions are classified, on held-out
//! questions over an imported answer library.
//!
//! Input: a data directory holding the library (e.g. `kefu import --demo`)
//! and JSON Lines of `{"qid", "question", "expected_id"}` (the demo set
//! `tests/fixtures/demo_questions.jsonl`); the expected answer's category,
//! subcategory and tags are the truth; a question with no `expected_id` is
//! out of scope (it has no true category: it should go to review).
//!
//! Every question is embedded once; its 64 nearest labelled neighbours are
//! kept, so that other classifier settings (`--sweep`) re-vote the same
//! neighbours. Figures: category accuracy (a null category counts as
//! wrong), subcategory accuracy (category and subcategory both right), tag
//! precision and recall (micro-averaged over questions), accuracy per
//! confidence band of width 0.1, and at the review threshold the share of
//! questions sent to review and the accuracy of the rest. The baseline is
//! the labels of the top recommended answer.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{auroc_of, lines, percentile};
use crate::embedding::TextKind;
use crate::recommend::classify::{self, Classification, ClassifierSettings, Neighbour, Source};
use crate::recommend::{Engine, Query};
use crate::store::Status;

/// Neighbours kept per question for re-voting (the largest N swept).
const KEEP: usize = 64;

#[derive(Debug, Deserialize)]
struct QuestionLine {
    #[serde(default)]
    qid: Option<String>,
    question: String,
    #[serde(default)]
    expected_id: Option<String>,
}

/// A question with its true labels (None: out of scope).
#[derive(Debug, Clone)]
pub struct Labelled {
    pub qid: String,
    pub question: String,
    pub truth: Option<Labels>,
}

/// Category, subcategory and tags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Labels {
    pub category: String,
    pub subcategory: String,
    pub tags: Vec<String>,
}

/// Reads the question file, taking each expected answer's labels from the
/// engine's catalog.
pub fn read_questions(path: &Path, engine: &Engine) -> Result<Vec<Labelled>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let at = || format!("{} line {}", path.display(), n);
        let q: QuestionLine = serde_json::from_str(&line).with_context(at)?;
        if q.question.trim().is_empty() {
            bail!("{}: empty question", at());
        }
        let truth = match q.expected_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id) => {
                let a = engine.get(id).with_context(|| {
                    format!("{}: expected_id '{id}' is not in the library", at())
                })?;
                if a.input.status != Status::Published {
                    bail!("{}: expected_id '{id}' is not published", at());
                }
                Some(Labels {
                    category: a.input.category.clone(),
                    subcategory: a.input.subcategory.clone(),
                    tags: a.input.tags.clone(),
                })
            }
        };
        out.push(Labelled {
            qid: q.qid.unwrap_or_else(|| format!("line{}", n + 1)),
            question: q.question.trim().to_string(),
            truth,
        });
    }
    if out.is_empty() {
        bail!("{}: no questions", path.display());
    }
    Ok(out)
}

/// A neighbour with its labels owned (kept across re-votes).
#[derive(Debug, Clone)]
struct Owned {
    cosine: f32,
    labels: Labels,
    source: Source,
}

struct Case {
    truth: Option<Labels>,
    neighbours: Vec<Owned>,
    /// Labels of the top recommended answer and its confidence.
    baseline: Option<(Labels, f32)>,
}

fn vote(case: &Case, s: &ClassifierSettings) -> Classification {
    let n: Vec<Neighbour<'_>> = case
        .neighbours
        .iter()
        .map(|o| Neighbour {
            cosine: o.cosine,
            category: &o.labels.category,
            subcategory: &o.labels.subcategory,
            tags: &o.labels.tags,
            source: o.source,
        })
        .collect();
    classify::vote(&n, s)
}

/// The figures of one classifier (or the baseline) on the question set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// In-scope questions.
    pub questions: usize,
    pub category_accuracy: f64,
    pub subcategory_accuracy: f64,
    pub tag_precision: f64,
    pub tag_recall: f64,
    pub tag_f1: f64,
    /// In-scope questions given no category.
    pub no_category: usize,
    /// AUROC of confidence separating right from wrong categories (in scope).
    pub auroc: f64,
}

/// Accuracy within one confidence band.
#[derive(Debug, Clone, Serialize)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub questions: usize,
    pub category_accuracy: f64,
    pub mean_confidence: f64,
}

/// What a review threshold does on this set.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewAt {
    pub threshold: f64,
    /// Share of in-scope questions sent to review.
    pub in_scope_reviewed: f64,
    /// Category accuracy of the in-scope questions not sent to review.
    pub accuracy_kept: f64,
    /// Category accuracy of those sent to review.
    pub accuracy_reviewed: f64,
    /// Out-of-scope questions sent to review, of all out-of-scope ones.
    pub out_of_scope_reviewed: usize,
    pub out_of_scope: usize,
    /// Share of all questions sent to review.
    pub all_reviewed: f64,
}

/// One configuration of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub settings: ClassifierSettings,
    pub figures: Figures,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub answers: usize,
    pub review_labels: usize,
    pub questions: usize,
    pub out_of_scope: usize,
    pub settings: ClassifierSettings,
    pub figures: Figures,
    pub baseline: Figures,
    pub bands: Vec<Band>,
    pub review: ReviewAt,
    pub thresholds: Vec<ReviewAt>,
    /// Nearest neighbour's cosine: lowest in scope, and of each out-of-scope question.
    pub nearest_in_scope_min: f64,
    pub nearest_out_of_scope: Vec<f64>,
    /// Engine::classify per question, microseconds.
    pub classify_us_p50: f64,
    pub classify_us_p99: f64,
    pub sweep: Vec<SweepRow>,
    /// Tag thresholds under the configured N, temperature and text roles.
    pub tag_sweep: Vec<SweepRow>,
    /// Two-fold cross-validation of the sweep: settings chosen on one half,
    /// measured on the other, pooled.
    pub cross_validated: Option<Figures>,
}

fn right(c: &Classification, t: &Labels) -> (bool, bool) {
    let cat = c.category.as_deref() == Some(t.category.as_str());
    let sub = cat && c.subcategory.as_deref().unwrap_or("") == t.subcategory;
    (cat, sub)
}

/// Figures of predictions (one per case, in order) on the in-scope cases.
fn figures(cases: &[&Case], predictions: &[Classification]) -> Figures {
    let (mut n, mut cat, mut sub, mut none) = (0usize, 0usize, 0usize, 0usize);
    let (mut tp, mut predicted, mut truth) = (0usize, 0usize, 0usize);
    let mut scored = Vec::new();
    for (case, p) in cases.iter().zip(predictions) {
        let Some(t) = &case.truth else { continue };
        n += 1;
        let (c, s) = right(p, t);
        cat += c as usize;
        sub += s as usize;
        none += p.category.is_none() as usize;
        let tset: HashSet<&String> = t.tags.iter().collect();
        let pset: HashSet<&String> = p.tags.iter().collect();
        tp += pset.intersection(&tset).count();
        predicted += pset.len();
        truth += tset.len();
        scored.push((p.confidence as f64, c));
    }
    let d = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (precision, recall) = (d(tp, predicted), d(tp, truth));
    Figures {
        questions: n,
        category_accuracy: d(cat, n),
        subcategory_accuracy: d(sub, n),
        tag_precision: precision,
        tag_recall: recall,
        tag_f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        },
        no_category: none,
        auroc: auroc_of(&scored),
    }
}

fn review_at(cases: &[&Case], predictions: &[Classification], threshold: f64) -> ReviewAt {
    let (mut ins, mut reviewed, mut kept, mut kept_right, mut rev_right) = (0, 0, 0, 0, 0);
    let (mut oos, mut oos_reviewed) = (0, 0);
    for (case, p) in cases.iter().zip(predictions) {
        let sent = (p.confidence as f64) < threshold;
        match &case.truth {
            Some(t) => {
                ins += 1;
                let ok = right(p, t).0 as usize;
                if sent {
                    reviewed += 1;
                    rev_right += ok;
                } else {
                    kept += 1;
                    kept_right += ok;
                }
            }
            None => {
                oos += 1;
                oos_reviewed += sent as usize;
            }
        }
    }
    let d = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    ReviewAt {
        threshold,
        in_scope_reviewed: d(reviewed, ins),
        accuracy_kept: d(kept_right, kept),
        accuracy_reviewed: d(rev_right, reviewed),
        out_of_scope_reviewed: oos_reviewed,
        out_of_scope: oos,
        all_reviewed: d(reviewed + oos_reviewed, ins + oos),
    }
}

fn bands(cases: &[&Case], predictions: &[Classification]) -> Vec<Band> {
    (0..10)
        .map(|b| {
            let (from, to) = (b as f64 / 10.0, (b + 1) as f64 / 10.0);
            let inside: Vec<(f64, bool)> = cases
                .iter()
                .zip(predictions)
                .filter_map(|(c, p)| {
                    // As the API shows it (0.9, not 0.899999976).
                    let x = (p.confidence as f64 * 1e6).round() / 1e6;
                    let t = c.truth.as_ref()?;
                    (x >= from && (x < to || (b == 9 && x <= 1.0))).then(|| (x, right(p, t).0))
                })
                .collect();
            let n = inside.len();
            Band {
                from,
                to,
                questions: n,
                category_accuracy: inside.iter().filter(|x| x.1).count() as f64 / n.max(1) as f64,
                mean_confidence: if n == 0 {
                    0.0
                } else {
                    inside.iter().map(|x| x.0).sum::<f64>() / n as f64
                },
            }
        })
        .collect()
}

/// The settings a sweep tries.
fn grid(base: &ClassifierSettings) -> Vec<ClassifierSettings> {
    let mut out = Vec::new();
    for answer_texts in [false, true] {
        for neighbours in [1, 3, 5, 7, 10, 15, 20, 30, 50] {
            for temperature in [0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 1.0] {
                out.push(ClassifierSettings {
                    neighbours,
                    temperature,
                    answer_texts,
                    ..*base
                });
            }
        }
    }
    out
}

/// Orders sweep rows best first: category accuracy, then subcategory
/// accuracy, then AUROC (how well confidence tells right from wrong, which
/// is what the review threshold relies on).
fn better(a: &Figures, b: &Figures) -> std::cmp::Ordering {
    let key = |f: &Figures| {
        (
            (f.category_accuracy * 1e6).round() as i64,
            (f.subcategory_accuracy * 1e6).round() as i64,
            if f.auroc.is_nan() {
                0
            } else {
                (f.auroc * 1e6).round() as i64
            },
        )
    };
    key(b).cmp(&key(a))
}

/// Runs the evaluation on an open engine.
pub fn run(
    engine: &Arc<Engine>,
    questions: &[Labelled],
    review_below: f32,
    sweep: bool,
    progress: &dyn Fn(usize, usize),
) -> Result<Report> {
    if engine.index().is_empty() {
        bail!("the data directory has no index: import answers (kefu import) or run kefu reindex first");
    }
    if !engine.embeds_questions() {
        bail!("classification needs the question's embedding: use --retrieval hybrid or dense");
    }
    let settings = engine.settings().classifier;
    let mut cases = Vec::with_capacity(questions.len());
    let mut question_vectors: Vec<Vec<f32>> = Vec::with_capacity(questions.len());
    let mut done = 0;
    progress(0, questions.len());
    for chunk in questions.chunks(32) {
        let texts: Vec<&str> = chunk.iter().map(|q| q.question.as_str()).collect();
        let vectors = engine.embedder().embed(&texts, TextKind::Query)?;
        for (q, e) in chunk.iter().zip(vectors) {
            let live = engine.classify(&e.vector);
            let neighbours = engine.with_neighbours(&e.vector, KEEP, true, |n| {
                n.iter()
                    .map(|x| Owned {
                        cosine: x.cosine,
                        labels: Labels {
                            category: x.category.to_string(),
                            subcategory: x.subcategory.to_string(),
                            tags: x.tags.to_vec(),
                        },
                        source: x.source,
                    })
                    .collect()
            });
            let query = Query {
                include_expired: true,
                ..Query::new(q.question.as_str(), 1)
            };
            let (recs, _) = engine.recommend_vector(&e.vector, &query);
            let baseline = recs.results.first().map(|r| {
                let a = &r.answer.input;
                (
                    Labels {
                        category: a.category.clone(),
                        subcategory: a.subcategory.clone(),
                        tags: a.tags.clone(),
                    },
                    r.confidence,
                )
            });
            let case = Case {
                truth: q.truth.clone(),
                neighbours,
                baseline,
            };
            // The re-vote must reproduce what the engine answers.
            let again = vote(&case, &settings);
            if again != live {
                bail!(
                    "{}: the kept neighbours vote {again:?} but the engine classified {live:?}",
                    q.qid
                );
            }
            cases.push(case);
            question_vectors.push(e.vector);
        }
        done += chunk.len();
        progress(done, questions.len());
    }
    // Timed on a second pass, warm: what a recommend request adds.
    let mut times: Vec<f64> = question_vectors
        .iter()
        .map(|v| {
            let t = Instant::now();
            std::hint::black_box(engine.classify(v));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let all: Vec<&Case> = cases.iter().collect();
    let predict = |s: &ClassifierSettings, of: &[&Case]| -> Vec<Classification> {
        of.iter().map(|c| vote(c, s)).collect()
    };
    let predictions = predict(&settings, &all);
    let baseline: Vec<Classification> = cases
        .iter()
        .map(|c| match &c.baseline {
            Some((l, conf)) => Classification {
                category: Some(l.category.clone()),
                subcategory: (!l.subcategory.is_empty()).then(|| l.subcategory.clone()),
                tags: l.tags.clone(),
                confidence: *conf,
            },
            None => Classification::none(),
        })
        .collect();
    let thresholds = (6..=19)
        .map(|i| review_at(&all, &predictions, i as f64 * 0.05))
        .collect();
    let nearest = |c: &Case| {
        c.neighbours
            .iter()
            .find(|n| settings.answer_texts || n.source != (Source::Answer { answer_text: true }))
            .map_or(f64::NAN, |n| n.cosine as f64)
    };
    let mut sweep_rows = Vec::new();
    let mut tag_sweep = Vec::new();
    let mut cross_validated = None;
    if sweep {
        for s in grid(&settings) {
            sweep_rows.push(SweepRow {
                figures: figures(&all, &predict(&s, &all)),
                settings: s,
            });
        }
        sweep_rows.sort_by(|a, b| better(&a.figures, &b.figures));
        {
            for i in 2..=8 {
                let s = ClassifierSettings {
                    tag_threshold: i as f32 / 10.0,
                    ..settings
                };
                tag_sweep.push(SweepRow {
                    figures: figures(&all, &predict(&s, &all)),
                    settings: s,
                });
            }
        }
        // Two folds: choose on one half, predict the other with the choice.
        let mut held_out: Vec<(&Case, Classification)> = Vec::new();
        let halves: [Vec<&Case>; 2] = [
            all.iter().step_by(2).copied().collect(),
            all.iter().skip(1).step_by(2).copied().collect(),
        ];
        for (train, test) in [(&halves[0], &halves[1]), (&halves[1], &halves[0])] {
            let best = grid(&settings)
                .into_iter()
                .map(|s| (figures(train, &predict(&s, train)), s))
                .min_by(|a, b| better(&a.0, &b.0))
                .map(|x| x.1)
                .unwrap_or(settings);
            held_out.extend(test.iter().map(|c| (*c, vote(c, &best))));
        }
        let (c, p): (Vec<&Case>, Vec<Classification>) = held_out.into_iter().unzip();
        cross_validated = Some(figures(&c, &p));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(Report {
        answers: engine
            .list()
            .iter()
            .filter(|a| a.input.status == Status::Published)
            .count(),
        review_labels: engine.reviewed_labels().len(),
        questions: cases.iter().filter(|c| c.truth.is_some()).count(),
        out_of_scope: cases.iter().filter(|c| c.truth.is_none()).count(),
        settings,
        figures: figures(&all, &predictions),
        baseline: figures(&all, &baseline),
        bands: bands(&all, &predictions),
        review: review_at(&all, &predictions, review_below as f64),
        thresholds,
        nearest_in_scope_min: cases
            .iter()
            .filter(|c| c.truth.is_some())
            .map(nearest)
            .fold(f64::INFINITY, f64::min),
        nearest_out_of_scope: cases
            .iter()
            .filter(|c| c.truth.is_none())
            .map(nearest)
            .collect(),
        classify_us_p50: percentile(&times, 0.5),
        classify_us_p99: percentile(&times, 0.99),
        sweep: sweep_rows,
        tag_sweep,
        cross_validated,
    })
}

fn settings_text(s: &ClassifierSettings) -> String {
    format!(
        "N {:>2}  T {:<5}  tags >= {:.1}  answer texts {}",
        s.neighbours,
        s.temperature,
        s.tag_threshold,
        if s.answer_texts { "yes" } else { "no " }
    )
}

fn figures_text(f: &Figures) -> String {
    format!(
        "category {:.3}  subcategory {:.3}  tags P {:.3} R {:.3} F1 {:.3}  AUROC {:.3}  no category {}",
        f.category_accuracy,
        f.subcategory_accuracy,
        f.tag_precision,
        f.tag_recall,
        f.tag_f1,
        f.auroc,
        f.no_category
    )
}

fn review_text(r: &ReviewAt) -> String {
    format!(
        "below {:.2}: {:>5.1}% of in-scope questions to review (accuracy there {:.3}), accuracy of the rest {:.3}; out of scope to review {}/{}; all questions to review {:.1}%",
        r.threshold,
        r.in_scope_reviewed * 100.0,
        r.accuracy_reviewed,
        r.accuracy_kept,
        r.out_of_scope_reviewed,
        r.out_of_scope,
        r.all_reviewed * 100.0
    )
}

/// The report as text.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "library: {} published answers, {} review labels; questions: {} in scope, {} out of scope",
        r.answers, r.review_labels, r.questions, r.out_of_scope
    );
    if r.review_labels > 0 {
        let _ = writeln!(
            s,
            "note: review labels vote too; if they hold these questions the figures are not held out"
        );
    }
    let _ = writeln!(
        s,
        "classifier: {} (nothing near below cosine {})",
        settings_text(&r.settings),
        r.settings.min_cosine
    );
    let _ = writeln!(s, "  {}", figures_text(&r.figures));
    let _ = writeln!(s, "baseline (labels of the top recommended answer):");
    let _ = writeln!(s, "  {}", figures_text(&r.baseline));
    let _ = writeln!(s, "accuracy by confidence (in scope):");
    for b in &r.bands {
        let _ = writeln!(
            s,
            "  [{:.1}, {:.1}{} {:>4} questions  accuracy {:.3}  mean confidence {:.3}",
            b.from,
            b.to,
            if b.to >= 1.0 { "]" } else { ")" },
            b.questions,
            b.category_accuracy,
            b.mean_confidence
        );
    }
    let _ = writeln!(s, "review threshold: {}", review_text(&r.review));
    let _ = writeln!(s, "other thresholds:");
    for t in &r.thresholds {
        let _ = writeln!(s, "  {}", review_text(t));
    }
    let oos: Vec<String> = r
        .nearest_out_of_scope
        .iter()
        .map(|c| format!("{c:.3}"))
        .collect();
    let _ = writeln!(
        s,
        "nearest neighbour's cosine: lowest in scope {:.3}; out of scope [{}]",
        r.nearest_in_scope_min,
        oos.join(", ")
    );
    let _ = writeln!(
        s,
        "Engine::classify: p50 {:.0} us, p99 {:.0} us",
        r.classify_us_p50, r.classify_us_p99
    );
    if !r.sweep.is_empty() {
        let _ = writeln!(
            s,
            "\nsweep (best 25 of {}, same neighbours re-voted):",
            r.sweep.len()
        );
        for row in r.sweep.iter().take(25) {
            let _ = writeln!(
                s,
                "  {}  {}",
                settings_text(&row.settings),
                figures_text(&row.figures)
            );
        }
        let _ = writeln!(s, "tag thresholds with the configured N, T and texts:");
        for row in &r.tag_sweep {
            let _ = writeln!(
                s,
                "  {}  {}",
                settings_text(&row.settings),
                figures_text(&row.figures)
            );
        }
        if let Some(cv) = &r.cross_validated {
            let _ = writeln!(s, "two-fold cross-validated choice of N, T and texts:");
            let _ = writeln!(s, "  {}", figures_text(cv));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(truth: Option<(&str, &str)>) -> Case {
        Case {
            truth: truth.map(|(c, s)| Labels {
                category: c.into(),
                subcategory: s.into(),
                tags: vec!["t".into(), "u".into()],
            }),
            neighbours: Vec::new(),
            baseline: None,
        }
    }

    fn pred(cat: Option<&str>, sub: Option<&str>, tags: &[&str], conf: f32) -> Classification {
        Classification {
            category: cat.map(str::to_string),
            subcategory: sub.map(str::to_string),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            confidence: conf,
        }
    }

    #[test]
    fn figures_follow_the_definitions() {
        let cases = [
            case(Some(("order", "status"))),
            case(Some(("order", "status"))),
            case(Some(("shipping", "fees"))),
            case(None),
        ];
        let all: Vec<&Case> = cases.iter().collect();
        let p = [
            pred(Some("order"), Some("status"), &["t"], 0.9),
            pred(Some("order"), Some("manage"), &["t", "x"], 0.7),
            pred(None, None, &[], 0.0),
            pred(Some("order"), None, &[], 0.4),
        ];
        let f = figures(&all, &p);
        assert_eq!(f.questions, 3);
        assert!((f.category_accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert!((f.subcategory_accuracy - 1.0 / 3.0).abs() < 1e-9);
        // Predicted t, t, x: 2 right of 3; true tags 6.
        assert!((f.tag_precision - 2.0 / 3.0).abs() < 1e-9);
        assert!((f.tag_recall - 2.0 / 6.0).abs() < 1e-9);
        assert_eq!(f.no_category, 1);
        assert!((f.auroc - 1.0).abs() < 1e-9);
        let r = review_at(&all, &p, 0.8);
        // In scope: 0.7 and 0.0 to review (1 right of 2), 0.9 kept (right).
        assert!((r.in_scope_reviewed - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.accuracy_kept - 1.0).abs() < 1e-9);
        assert!((r.accuracy_reviewed - 0.5).abs() < 1e-9);
        assert_eq!((r.out_of_scope_reviewed, r.out_of_scope), (1, 1));
        assert!((r.all_reviewed - 0.75).abs() < 1e-9);
        let b = bands(&all, &p);
        assert_eq!(b[9].questions, 1);
        assert_eq!(b[7].questions, 1);
        assert_eq!(b[0].questions, 1);
        assert_eq!(b[0].category_accuracy, 0.0);
    }
}
