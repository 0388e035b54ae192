//! `kefu eval sentiment`: measures [`analyze`] on a labelled set.
//!
//! Input: JSON Lines `{"id", "text", "lang", "label", "escalate"}` with
//! `label` one of `negative`, `neutral`, `positive` and `escalate` a
//! boolean (`lang` is optional and only groups the breakdown; other fields
//! are ignored; blank lines are skipped).
//!
//! Output: escalation precision, recall and F1 with "escalate" as the
//! positive class; accuracy, macro-F1 and per-label precision/recall/F1 of
//! the sentiment label; the confusion matrix (rows: gold, columns:
//! predicted); the same per language; every message whose label or
//! escalation was wrong, with the cues that fired; and the analysis time
//! per message.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::sentiment::{analyze, Label};

/// One labelled message.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub id: String,
    pub text: String,
    pub lang: String,
    pub label: Label,
    pub escalate: bool,
}

#[derive(Debug, Deserialize)]
struct Line {
    id: serde_json::Value,
    text: String,
    #[serde(default)]
    lang: Option<String>,
    label: String,
    escalate: bool,
}

/// Parses the JSON Lines input; errors name the line.
pub fn parse_examples(input: &str) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in input.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = match serde_json::from_str(line) {
            Ok(l) => l,
            Err(e) => bail!("line {n}: {e}"),
        };
        let id = match l.id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(x) => x.to_string(),
            other => bail!("line {n}: \"id\" must be a string or a number, got {other}"),
        };
        let Some(label) = Label::parse(l.label.trim()) else {
            bail!(
                "line {n}: label must be negative, neutral or positive, got {:?}",
                l.label
            );
        };
        if !seen.insert(id.clone()) {
            bail!("line {n}: id {id:?} appears more than once");
        }
        out.push(Example {
            id,
            text: l.text,
            lang: l
                .lang
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".into()),
            label,
            escalate: l.escalate,
        });
    }
    if out.is_empty() {
        bail!("the input holds no labelled messages");
    }
    Ok(out)
}

/// Precision, recall and F1 of a yes/no decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Binary {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub tn: usize,
    /// `None` when nothing was predicted positive (or nothing is positive,
    /// for recall; or both undefined, for F1).
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

impl Binary {
    fn add(&mut self, gold: bool, predicted: bool) {
        match (gold, predicted) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    fn finish(mut self) -> Self {
        let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
        self.precision = ratio(self.tp, self.tp + self.fp);
        self.recall = ratio(self.tp, self.tp + self.fn_);
        self.f1 = f1(self.precision, self.recall);
        self
    }
}

fn f1(p: Option<f64>, r: Option<f64>) -> Option<f64> {
    match (p, r) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        // Nothing predicted positive but some are: precision is undefined,
        // and F1 is 0 (every positive was missed).
        (None, Some(r)) => Some(if r == 0.0 { 0.0 } else { r }),
        (Some(_), None) => Some(0.0),
        (None, None) => None,
    }
}

/// One sentiment label's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerLabel {
    pub label: Label,
    /// How many messages carry this label.
    pub support: usize,
    /// How many were predicted to carry it.
    pub predicted: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

/// Label figures over a group of messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Labels {
    pub accuracy: f64,
    /// Mean F1 over the labels present (in gold or predictions).
    pub macro_f1: f64,
    pub per_label: Vec<PerLabel>,
    /// `confusion[gold][predicted]`, labels in the order negative, neutral, positive.
    pub confusion: [[usize; 3]; 3],
}

/// Figures for one language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Language {
    pub lang: String,
    pub messages: usize,
    pub labels: Labels,
    pub escalate: Binary,
}

/// A message the analyser got wrong (label, escalation, or both).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Miss {
    pub id: String,
    pub lang: String,
    pub text: String,
    pub label: Label,
    pub predicted_label: Label,
    pub escalate: bool,
    pub predicted_escalate: bool,
    pub score: f32,
    pub cues: Vec<String>,
}

/// The whole measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub messages: usize,
    pub escalate: Binary,
    pub labels: Labels,
    pub by_language: Vec<Language>,
    pub misclassified: Vec<Miss>,
    /// Mean analysis time per message, in microseconds.
    pub micros_per_message: f64,
}

fn index(l: Label) -> usize {
    match l {
        Label::Negative => 0,
        Label::Neutral => 1,
        Label::Positive => 2,
    }
}

fn label_figures(pairs: &[(Label, Label)]) -> Labels {
    let mut confusion = [[0usize; 3]; 3];
    for &(g, p) in pairs {
        confusion[index(g)][index(p)] += 1;
    }
    let correct: usize = (0..3).map(|i| confusion[i][i]).sum();
    let per_label: Vec<PerLabel> = Label::ALL
        .iter()
        .map(|&l| {
            let i = index(l);
            let support: usize = confusion[i].iter().sum();
            let predicted: usize = (0..3).map(|g| confusion[g][i]).sum();
            let tp = confusion[i][i];
            let precision = (predicted > 0).then(|| tp as f64 / predicted as f64);
            let recall = (support > 0).then(|| tp as f64 / support as f64);
            PerLabel {
                label: l,
                support,
                predicted,
                precision,
                recall,
                f1: f1(precision, recall),
            }
        })
        .collect();
    let present: Vec<f64> = per_label
        .iter()
        .filter(|p| p.support + p.predicted > 0)
        .map(|p| p.f1.unwrap_or(0.0))
        .collect();
    Labels {
        accuracy: if pairs.is_empty() {
            0.0
        } else {
            correct as f64 / pairs.len() as f64
        },
        macro_f1: if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        },
        per_label,
        confusion,
    }
}

/// Runs the analyser over the examples and computes the figures.
pub fn evaluate(examples: &[Example]) -> Report {
    analyze(""); // Builds the lexicon outside the timing.
    let started = Instant::now();
    let predictions: Vec<_> = examples.iter().map(|e| analyze(&e.text)).collect();
    let micros = started.elapsed().as_secs_f64() * 1e6 / examples.len().max(1) as f64;

    let mut escalate = Binary::default();
    let mut pairs = Vec::new();
    // Per language: the escalation counts and the (gold, predicted) labels.
    type Group = (Binary, Vec<(Label, Label)>);
    let mut by_lang: BTreeMap<&str, Group> = BTreeMap::new();
    let mut misclassified = Vec::new();
    for (e, p) in examples.iter().zip(&predictions) {
        escalate.add(e.escalate, p.escalate);
        pairs.push((e.label, p.label));
        let slot = by_lang.entry(e.lang.as_str()).or_default();
        slot.0.add(e.escalate, p.escalate);
        slot.1.push((e.label, p.label));
        if e.label != p.label || e.escalate != p.escalate {
            misclassified.push(Miss {
                id: e.id.clone(),
                lang: e.lang.clone(),
                text: e.text.clone(),
                label: e.label,
                predicted_label: p.label,
                escalate: e.escalate,
                predicted_escalate: p.escalate,
                score: p.score,
                cues: p.cues.clone(),
            });
        }
    }
    Report {
        messages: examples.len(),
        escalate: escalate.finish(),
        labels: label_figures(&pairs),
        by_language: by_lang
            .into_iter()
            .map(|(lang, (esc, pairs))| Language {
                lang: lang.to_string(),
                messages: pairs.len(),
                labels: label_figures(&pairs),
                escalate: esc.finish(),
            })
            .collect(),
        misclassified,
        micros_per_message: micros,
    }
}

fn fmt(x: Option<f64>) -> String {
    x.map_or_else(|| "  n/a".to_string(), |v| format!("{v:.3}"))
}

/// The report as text.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let langs: Vec<String> = r
        .by_language
        .iter()
        .map(|l| format!("{} {}", l.lang, l.messages))
        .collect();
    let _ = writeln!(
        s,
        "sentiment: {} messages ({}), {:.1} µs per message",
        r.messages,
        langs.join(", "),
        r.micros_per_message
    );
    let e = &r.escalate;
    let _ = writeln!(
        s,
        "\nescalate (positive class: escalate)\n  precision {}  recall {}  F1 {}   (tp {}, fp {}, fn {}, tn {})",
        fmt(e.precision),
        fmt(e.recall),
        fmt(e.f1),
        e.tp,
        e.fp,
        e.fn_,
        e.tn
    );
    let l = &r.labels;
    let _ = writeln!(
        s,
        "\nlabel\n  accuracy {:.3}  macro-F1 {:.3}\n  {:<9} {:>9} {:>9} {:>9} {:>8} {:>10}",
        l.accuracy, l.macro_f1, "", "precision", "recall", "F1", "support", "predicted"
    );
    for p in &l.per_label {
        let _ = writeln!(
            s,
            "  {:<9} {:>9} {:>9} {:>9} {:>8} {:>10}",
            p.label.as_str(),
            fmt(p.precision),
            fmt(p.recall),
            fmt(p.f1),
            p.support,
            p.predicted
        );
    }
    let _ = writeln!(
        s,
        "\nconfusion (rows: labelled, columns: predicted)\n  {:<9} {:>9} {:>9} {:>9}",
        "", "negative", "neutral", "positive"
    );
    for g in Label::ALL {
        let row = &l.confusion[index(g)];
        let _ = writeln!(
            s,
            "  {:<9} {:>9} {:>9} {:>9}",
            g.as_str(),
            row[0],
            row[1],
            row[2]
        );
    }
    let _ = writeln!(
        s,
        "\nby language\n  {:<8} {:>8} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "lang", "messages", "accuracy", "macro-F1", "esc. P", "esc. R", "esc. F1"
    );
    for g in &r.by_language {
        let _ = writeln!(
            s,
            "  {:<8} {:>8} {:>9.3} {:>9.3} {:>9} {:>10} {:>7}",
            g.lang,
            g.messages,
            g.labels.accuracy,
            g.labels.macro_f1,
            fmt(g.escalate.precision),
            fmt(g.escalate.recall),
            fmt(g.escalate.f1)
        );
    }
    let _ = writeln!(s, "\nmisclassified: {}", r.misclassified.len());
    for m in &r.misclassified {
        let label = if m.label == m.predicted_label {
            m.label.as_str().to_string()
        } else {
            format!("{} -> {}", m.label.as_str(), m.predicted_label.as_str())
        };
        let esc = if m.escalate == m.predicted_escalate {
            format!("escalate {}", m.escalate)
        } else {
            format!("escalate {} -> {}", m.escalate, m.predicted_escalate)
        };
        let _ = writeln!(
            s,
            "  {} [{}] {}; {}; score {:.3}\n    {}\n    cues: {}",
            m.id,
            m.lang,
            label,
            esc,
            m.score,
            m.text.replace('\n', " "),
            if m.cues.is_empty() {
                "(none)".to_string()
            } else {
                m.cues.join(", ")
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_metrics_follow_the_definitions() {
        let mut b = Binary::default();
        for (g, p) in [
            (true, true),
            (true, true),
            (true, false),
            (false, true),
            (false, false),
        ] {
            b.add(g, p);
        }
        let b = b.finish();
        assert_eq!((b.tp, b.fp, b.fn_, b.tn), (2, 1, 1, 1));
        assert!((b.precision.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((b.recall.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((b.f1.unwrap() - 2.0 / 3.0).abs() < 1e-12);

        // Nothing predicted positive: precision undefined, recall and F1 0.
        let mut b = Binary::default();
        b.add(true, false);
        b.add(false, false);
        let b = b.finish();
        assert_eq!((b.precision, b.recall, b.f1), (None, Some(0.0), Some(0.0)));
        // No positives at all and none predicted: all undefined.
        let mut b = Binary::default();
        b.add(false, false);
        let b = b.finish();
        assert_eq!((b.precision, b.recall, b.f1), (None, None, None));
    }

    #[test]
    fn label_metrics_and_confusion() {
        use Label::*;
        let pairs = [
            (Negative, Negative),
            (Negative, Neutral),
            (Neutral, Neutral),
            (Positive, Positive),
            (Positive, Negative),
        ];
        let l = label_figures(&pairs);
        assert_eq!(l.confusion, [[1, 1, 0], [0, 1, 0], [1, 0, 1]]);
        assert!((l.accuracy - 0.6).abs() < 1e-12);
        let neg = &l.per_label[0];
        assert_eq!((neg.support, neg.predicted), (2, 2));
        assert_eq!((neg.precision, neg.recall), (Some(0.5), Some(0.5)));
        let neu = &l.per_label[1];
        assert_eq!((neu.precision, neu.recall), (Some(0.5), Some(1.0)));
        let pos = &l.per_label[2];
        assert_eq!((pos.precision, pos.recall), (Some(1.0), Some(0.5)));
        let f = |p: f64, r: f64| 2.0 * p * r / (p + r);
        let macro_f1 = (0.5 + f(0.5, 1.0) + f(1.0, 0.5)) / 3.0;
        assert!((l.macro_f1 - macro_f1).abs() < 1e-12);
    }

    #[test]
    fn input_errors_name_the_line() {
        let ok =
            r#"{"id": "a", "text": "谢谢", "lang": "zh", "label": "positive", "escalate": false}"#;
        let cases = [
            (format!("{ok}\n{{not json"), "line 2"),
            (
                format!("{ok}\n{{\"id\": \"b\", \"text\": \"x\", \"label\": \"angry\", \"escalate\": true}}"),
                "line 2: label must be",
            ),
            (
                format!("{ok}\n{{\"id\": \"c\", \"text\": \"x\", \"label\": \"neutral\"}}"),
                "line 2: missing field `escalate`",
            ),
            (format!("{ok}\n\n{ok}"), "line 3: id \"a\" appears more than once"),
            ("\n \n".to_string(), "no labelled messages"),
        ];
        for (input, want) in cases {
            let err = parse_examples(&input).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        let parsed = parse_examples(&format!(
            "{ok}\n{{\"id\": 7, \"text\": \"x\", \"label\": \"neutral\", \"escalate\": false, \"extra\": 1}}"
        ))
        .unwrap();
        assert_eq!(parsed[1].id, "7");
        assert_eq!(parsed[1].lang, "unknown");
    }

    #[test]
    fn evaluate_reports_misses_with_cues() {
        let input = [
            r#"{"id": "1", "text": "怎么投诉？", "lang": "zh", "label": "neutral", "escalate": false}"#,
            r#"{"id": "2", "text": "我要去12315投诉你们", "lang": "zh", "label": "negative", "escalate": true}"#,
            // Deliberately mislabelled: a thank-you labelled as an angry threat.
            r#"{"id": "3", "text": "Thank you so much!", "lang": "en", "label": "negative", "escalate": true}"#,
        ]
        .join("\n");
        let r = evaluate(&parse_examples(&input).unwrap());
        assert_eq!(r.messages, 3);
        assert_eq!(
            (r.escalate.tp, r.escalate.fp, r.escalate.fn_, r.escalate.tn),
            (1, 0, 1, 1)
        );
        assert_eq!(r.misclassified.len(), 1);
        let m = &r.misclassified[0];
        assert_eq!(m.id, "3");
        assert_eq!(m.predicted_label, Label::Positive);
        assert!(
            m.cues.iter().any(|c| c.starts_with("pos:thank you")),
            "{m:?}"
        );
        assert_eq!(r.by_language.len(), 2);
        assert_eq!(r.by_language[0].lang, "en");
        let text = render(&r);
        for want in [
            "escalate",
            "precision 1.000",
            "recall 0.500",
            "confusion",
            "by language",
            "misclassified: 1",
            "cues: ",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
    }
}
