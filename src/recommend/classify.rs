//! Question classification: a category, a subcategory and tags for an
//! incoming question, by k-nearest-neighbour voting over the question's
//! embedding (the one recommend already computed).
//!
//! The neighbours are the nearest indexed texts of published answers (each
//! votes with its answer's labels, read from the catalog, so a relabelled
//! answer votes with its new labels at once) and the questions editors
//! labelled in the review queue (confirmed or corrected, kept in memory).
//! Each of the `neighbours` nearest votes with the weight
//! `exp((cos - cos_max) / temperature)` (a softmax of the cosines):
//! - the category with the largest weight wins; `confidence` is its share
//!   of the total weight;
//! - the subcategory is the (category, subcategory) with the largest weight
//!   among the winning category's neighbours;
//! - a tag is predicted when the winning category's neighbours carrying it
//!   hold at least `tag_threshold` of that category's weight (shares over
//!   all neighbours, tags of other categories included, measured worse:
//!   tag F1 0.901 at best against 0.926).
//!
//! Two rules come before the vote: with no neighbour, or the nearest below
//! `min_cosine` ("nothing is near"), the answer is no category at confidence
//! 0; and when the nearest neighbour is a reviewed question at cosine
//! `SAME_QUESTION` or more (the same question asked again), its label is the
//! answer at confidence 1: a human has decided that very question.
//!
//! The defaults come from `kefu eval classify --sweep` on the demo library
//! and `tests/fixtures/demo_questions.jsonl` (README, "Classification").

use serde::{Deserialize, Serialize};

/// Cosine at or above which a reviewed question counts as the same question.
pub const SAME_QUESTION: f32 = 0.99;

/// Tunables of the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSettings {
    /// How many nearest texts vote.
    pub neighbours: usize,
    /// Softmax temperature over the neighbours' cosines (small: the nearest
    /// dominates; large: every neighbour counts the same).
    pub temperature: f32,
    /// Share of the winning category's weight a tag needs to be predicted.
    pub tag_threshold: f32,
    /// Below this cosine of the nearest neighbour nothing is near: no category.
    pub min_cosine: f32,
    /// Whether answer texts vote too (else only standard questions, variants
    /// and reviewed questions).
    pub answer_texts: bool,
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        Self {
            neighbours: 20,
            temperature: 0.02,
            tag_threshold: 0.4,
            min_cosine: 0.83,
            answer_texts: true,
        }
    }
}

/// Where a neighbour comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An indexed text of a published answer (`answer text` when true).
    Answer { answer_text: bool },
    /// A question an editor confirmed or corrected in the review queue.
    Reviewed,
}

/// One neighbour of a question: its cosine and the labels it votes with.
#[derive(Debug, Clone, Copy)]
pub struct Neighbour<'a> {
    pub cosine: f32,
    pub category: &'a str,
    pub subcategory: &'a str,
    pub tags: &'a [String],
    pub source: Source,
}

/// A predicted classification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// None when the library is empty or nothing is near.
    pub category: Option<String>,
    /// None without a category, or when the winning subcategory is empty.
    pub subcategory: Option<String>,
    /// Predicted tags, largest weight first.
    pub tags: Vec<String>,
    /// The winning category's share of the neighbours' weight, in [0, 1]
    /// (1 for a reviewed question asked again, 0 without a category).
    pub confidence: f32,
}

impl Classification {
    /// No category, confidence 0.
    pub fn none() -> Self {
        Self {
            category: None,
            subcategory: None,
            tags: Vec::new(),
            confidence: 0.0,
        }
    }
}

/// Adds `w` to `key`'s entry, keeping first-seen order (ties then go to the
/// label whose nearest neighbour is nearer: neighbours come best first).
fn add<'a>(acc: &mut Vec<(&'a str, f32)>, key: &'a str, w: f32) {
    match acc.iter_mut().find(|(k, _)| *k == key) {
        Some(e) => e.1 += w,
        None => acc.push((key, w)),
    }
}

fn best<'a>(acc: &[(&'a str, f32)]) -> Option<(&'a str, f32)> {
    acc.iter()
        .copied()
        .fold(None, |b: Option<(&str, f32)>, x| match b {
            Some(b) if b.1 >= x.1 => Some(b),
            _ => Some(x),
        })
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Classifies from neighbours sorted by cosine, best first (only the first
/// `settings.neighbours` of those allowed to vote are used).
pub fn vote(neighbours: &[Neighbour<'_>], settings: &ClassifierSettings) -> Classification {
    let voters: Vec<&Neighbour<'_>> = neighbours
        .iter()
        .filter(|n| settings.answer_texts || n.source != (Source::Answer { answer_text: true }))
        .take(settings.neighbours.max(1))
        .collect();
    let Some(nearest) = voters
        .iter()
        .copied()
        .max_by(|a, b| a.cosine.total_cmp(&b.cosine))
    else {
        return Classification::none();
    };
    if !nearest.cosine.is_finite() || nearest.cosine < settings.min_cosine {
        return Classification::none();
    }
    if nearest.source == Source::Reviewed && nearest.cosine >= SAME_QUESTION {
        return Classification {
            category: nonempty(nearest.category),
            subcategory: nonempty(nearest.subcategory),
            tags: nearest.tags.to_vec(),
            confidence: 1.0,
        };
    }
    let t = settings.temperature.max(1e-4);
    let weights: Vec<f32> = voters
        .iter()
        .map(|n| {
            let w = ((n.cosine - nearest.cosine) / t).exp();
            if w.is_finite() {
                w
            } else {
                0.0
            }
        })
        .collect();
    let total: f32 = weights.iter().sum();
    if total <= 0.0 {
        return Classification::none();
    }
    let mut categories: Vec<(&str, f32)> = Vec::new();
    for (n, &w) in voters.iter().zip(&weights) {
        add(&mut categories, n.category, w);
    }
    let Some((category, category_weight)) = best(&categories) else {
        return Classification::none();
    };
    let mut subcategories: Vec<(&str, f32)> = Vec::new();
    for (n, &w) in voters.iter().zip(&weights) {
        if n.category == category {
            add(&mut subcategories, n.subcategory, w);
        }
    }
    let mut tags: Vec<(&str, f32)> = Vec::new();
    for (n, &w) in voters.iter().zip(&weights) {
        if n.category != category {
            continue;
        }
        // A neighbour listing a tag twice still votes once for it.
        for (i, tag) in n.tags.iter().enumerate() {
            if !n.tags[..i].contains(tag) {
                add(&mut tags, tag, w);
            }
        }
    }
    tags.retain(|(_, w)| *w / category_weight >= settings.tag_threshold);
    // Stable: equal weights keep first-seen order.
    tags.sort_by(|a, b| b.1.total_cmp(&a.1));
    Classification {
        category: nonempty(category),
        subcategory: best(&subcategories).and_then(|(s, _)| nonempty(s)),
        tags: tags.into_iter().map(|(t, _)| t.to_string()).collect(),
        confidence: (category_weight / total).clamp(0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n<'a>(cosine: f32, category: &'a str, sub: &'a str, tags: &'a [String]) -> Neighbour<'a> {
        Neighbour {
            cosine,
            category,
            subcategory: sub,
            tags,
            source: Source::Answer { answer_text: false },
        }
    }

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    fn settings(neighbours: usize, temperature: f32) -> ClassifierSettings {
        ClassifierSettings {
            neighbours,
            temperature,
            tag_threshold: 0.5,
            min_cosine: 0.5,
            answer_texts: true,
        }
    }

    #[test]
    fn the_weighted_majority_wins_and_confidence_is_its_share() {
        let (a, b) = (tags(&["退货"]), tags(&["物流"]));
        // Equal cosines: plain majority, 2 of 3.
        let nb = [
            n(0.9, "returns", "policy", &a),
            n(0.9, "shipping", "tracking", &b),
            n(0.9, "returns", "process", &a),
        ];
        let c = vote(&nb, &settings(3, 0.02));
        assert_eq!(c.category.as_deref(), Some("returns"));
        assert!((c.confidence - 2.0 / 3.0).abs() < 1e-6, "{c:?}");
        // Softmax: w = exp((cos - max) / T); at T = 0.01 a neighbour 0.01
        // nearer weighs e times more than each of the two others.
        let nb = [
            n(0.91, "shipping", "tracking", &b),
            n(0.90, "returns", "policy", &a),
            n(0.90, "returns", "process", &a),
        ];
        let c = vote(&nb, &settings(3, 0.01));
        let e = std::f32::consts::E;
        assert_eq!(c.category.as_deref(), Some("shipping"));
        assert!((c.confidence - e / (e + 2.0)).abs() < 1e-5, "{c:?}");
        // A high temperature makes every neighbour count the same.
        let c = vote(&nb, &settings(3, 100.0));
        assert_eq!(c.category.as_deref(), Some("returns"));
        assert!((c.confidence - 2.0 / 3.0).abs() < 1e-3, "{c:?}");
        // Only the first N vote.
        let c = vote(&nb, &settings(1, 100.0));
        assert_eq!(c.category.as_deref(), Some("shipping"));
        assert_eq!(c.confidence, 1.0);
    }

    #[test]
    fn subcategory_is_voted_within_the_winning_category_only() {
        let none: Vec<String> = Vec::new();
        // "tracking" has the most weight overall but is not in the winner.
        let nb = [
            n(0.90, "returns", "process", &none),
            n(0.90, "returns", "policy", &none),
            n(0.90, "returns", "policy", &none),
            n(0.90, "shipping", "tracking", &none),
            n(0.90, "shipping", "tracking", &none),
            n(0.90, "invoice", "tracking", &none),
        ];
        let c = vote(&nb, &settings(6, 0.02));
        assert_eq!(c.category.as_deref(), Some("returns"));
        assert_eq!(c.subcategory.as_deref(), Some("policy"));
        // An empty winning subcategory is reported as none.
        let nb = [n(0.9, "order", "", &none), n(0.9, "order", "", &none)];
        assert_eq!(vote(&nb, &settings(2, 0.02)).subcategory, None);
    }

    #[test]
    fn a_tag_needs_its_weighted_share_to_pass_the_threshold() {
        let (ab, a, c2) = (tags(&["a", "b", "a"]), tags(&["a"]), tags(&["c"]));
        let (other, d) = (tags(&["d", "a"]), tags(&["d"]));
        let nb = [
            n(0.9, "x", "", &ab),
            n(0.9, "y", "", &other),
            n(0.9, "x", "", &a),
            n(0.9, "y", "", &d),
            n(0.9, "x", "", &c2),
            n(0.9, "x", "", &c2),
        ];
        // Within the winner x: a 2/4 (listed twice on one neighbour, counted
        // once), b 1/4, c 2/4; y's votes (d, a) do not count.
        let mut s = settings(6, 0.02);
        s.tag_threshold = 0.5;
        assert_eq!(vote(&nb, &s).tags, tags(&["a", "c"]));
        s.tag_threshold = 0.51;
        assert!(vote(&nb, &s).tags.is_empty());
        s.tag_threshold = 0.25;
        assert_eq!(vote(&nb, &s).tags, tags(&["a", "c", "b"]));
    }

    #[test]
    fn nothing_near_or_nothing_at_all_gives_no_category() {
        assert_eq!(
            vote(&[], &ClassifierSettings::default()),
            Classification::none()
        );
        let t = tags(&["x"]);
        let nb = [n(0.45, "order", "status", &t)];
        let c = vote(&nb, &settings(5, 0.02));
        assert_eq!(c, Classification::none());
        assert_eq!(c.confidence, 0.0);
        let nb = [n(f32::NAN, "order", "status", &t)];
        assert_eq!(vote(&nb, &settings(5, 0.02)), Classification::none());
    }

    #[test]
    fn answer_texts_vote_only_when_allowed() {
        let none: Vec<String> = Vec::new();
        let nb = [
            Neighbour {
                source: Source::Answer { answer_text: true },
                ..n(0.95, "invoice", "apply", &none)
            },
            n(0.90, "order", "status", &none),
        ];
        let mut s = settings(1, 0.02);
        assert_eq!(vote(&nb, &s).category.as_deref(), Some("invoice"));
        s.answer_texts = false;
        assert_eq!(vote(&nb, &s).category.as_deref(), Some("order"));
    }

    #[test]
    fn a_reviewed_question_asked_again_takes_its_label() {
        let (lib, label) = (tags(&["物流"]), tags(&["投诉", "物流"]));
        let reviewed = Neighbour {
            source: Source::Reviewed,
            ..n(0.995, "complaint", "filing", &label)
        };
        let mut nb = vec![reviewed];
        for _ in 0..9 {
            nb.push(n(0.994, "shipping", "tracking", &lib));
        }
        let s = settings(10, 0.02);
        let c = vote(&nb, &s);
        assert_eq!(c.category.as_deref(), Some("complaint"));
        assert_eq!(c.subcategory.as_deref(), Some("filing"));
        assert_eq!(c.tags, label);
        assert_eq!(c.confidence, 1.0);
        // Not the same question: it is one vote among the others.
        nb[0].cosine = 0.98;
        nb.rotate_left(1);
        let c = vote(&nb, &s);
        assert_eq!(c.category.as_deref(), Some("shipping"));
        assert!(c.confidence > 0.5 && c.confidence < 1.0, "{c:?}");
        // A library text that close has no such privilege.
        nb.rotate_right(1);
        nb[0].source = Source::Answer { answer_text: false };
        nb[0].cosine = 0.995;
        assert_eq!(vote(&nb, &s).category.as_deref(), Some("shipping"));
    }
}
