//! Ranking: how the dense and lexical legs' candidates become an ordered
//! list of answers with a score and a calibrated confidence.
//!
//! Each candidate answer carries two signals computed over all of its
//! indexed texts (standard question, variants, answer text): `pooled`, the
//! log-sum-exp of the exact cosines of the question's embedding with every
//! text (`T * ln(sum(exp(cos / T)))`: the best cosine, raised a little when
//! several phrasings of the answer agree, so an answer whose variants all sit
//! near the question beats one lucky phrasing of another), and `lexical`, the
//! best text's BM25 normalised by the question's own ceiling (see
//! [`crate::index::lexical`]). The fused score is
//! `w * pooled' + (1 - w) * lexical'`, where `'` is either the raw signal
//! (`Norm::Raw`) or the signal min-max normalised over the candidates of this
//! question (`Norm::MinMax`). `dense`, the best single cosine, is what
//! responses report and one of the confidence features.
//!
//! Confidence is a logistic model over features of a result and of the list
//! it is in ([`Calibration`]); it estimates the probability that the result
//! is a right answer, and the hand-off decision compares the top result's
//! confidence with the calibrated threshold. Calibrations are fitted by
//! `kefu eval --calibrate` and stored with the model's settings.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Which legs rank the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dense,
    Lexical,
    Hybrid,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(Self::Dense),
            "lexical" => Ok(Self::Lexical),
            "hybrid" => Ok(Self::Hybrid),
            _ => Err(format!("'{s}' is not a mode (dense, lexical, hybrid)")),
        }
    }
}

/// How each leg's signal is scaled before the weighted sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    Raw,
    MinMax,
}

impl std::str::FromStr for Norm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Self::Raw),
            "minmax" => Ok(Self::MinMax),
            _ => Err(format!("'{s}' is not a normalisation (raw, minmax)")),
        }
    }
}

/// Fusion settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fusion {
    pub mode: Mode,
    pub norm: Norm,
    /// Weight of the dense leg in hybrid mode (the lexical leg gets the rest).
    pub dense_weight: f32,
    /// Temperature of the log-sum-exp pooling of an answer's cosines (0: the best cosine).
    #[serde(default)]
    pub pool_temperature: f32,
}

/// Pools cosines by log-sum-exp at temperature `t` (the maximum when `t` is 0);
/// `None` for no cosines.
pub fn pool(cosines: impl Iterator<Item = f32> + Clone, t: f32) -> Option<f32> {
    let max = cosines.clone().reduce(f32::max)?;
    if t <= 0.0 {
        return Some(max);
    }
    let sum: f32 = cosines.map(|c| ((c - max) / t).exp()).sum();
    Some(max + t * sum.ln())
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            mode: Mode::Hybrid,
            norm: Norm::MinMax,
            dense_weight: 0.85,
            pool_temperature: 0.02,
        }
    }
}

/// The features confidence is computed from, in the order of
/// [`Calibration::weights`].
pub const FEATURES: [&str; N_FEATURES] = [
    "score",
    "dense",
    "lexical",
    "margin",
    "spread",
    "coverage",
    "agreement",
];
pub const N_FEATURES: usize = 7;

/// A logistic model from a result's features to the probability that it is
/// a right answer, and the hand-off threshold on that probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub bias: f32,
    /// One weight per feature in [`FEATURES`] order.
    pub weights: [f32; N_FEATURES],
    /// Feature means and scales used to standardise before the weights apply.
    pub mean: [f32; N_FEATURES],
    pub scale: [f32; N_FEATURES],
    /// Hand off when the top result's confidence is below this.
    pub min_confidence: f32,
    /// Where the figures come from (dataset and settings), for `GET /v1/index`.
    #[serde(default)]
    pub source: String,
}

impl Calibration {
    /// A plain logistic over the dense cosine, for models nobody calibrated:
    /// confidence 0.5 at cosine 0.85.
    pub fn uncalibrated() -> Self {
        Self {
            bias: 0.0,
            weights: [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            mean: [0.0, 0.85, 0.0, 0.0, 0.0, 0.0, 0.0],
            scale: [1.0, 0.05, 1.0, 1.0, 1.0, 1.0, 1.0],
            min_confidence: 0.5,
            source: "uncalibrated: logistic of the cosine around 0.85".into(),
        }
    }

    pub fn confidence(&self, f: &[f32; N_FEATURES]) -> f32 {
        let mut z = self.bias;
        for (i, x) in f.iter().enumerate() {
            let s = if self.scale[i] > 0.0 {
                self.scale[i]
            } else {
                1.0
            };
            z += self.weights[i] * (x - self.mean[i]) / s;
        }
        1.0 / (1.0 + (-z).exp())
    }
}

/// One candidate answer with both legs' signals (best text of each).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub answer_id: Arc<str>,
    /// Exact cosine of the best text, clamped to [-1, 1].
    pub dense: f32,
    /// The cosines of all its texts (pooled by [`pool`] for ranking).
    pub cosines: Vec<f32>,
    /// The point (text) with the best cosine.
    pub dense_point: usize,
    /// Normalised BM25 of the best text, in [0, 1).
    pub lexical: f32,
    /// The point with the best BM25, when any text shares a term.
    pub lexical_point: Option<usize>,
}

/// Every candidate considered for one question.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub list: Vec<Candidate>,
    /// The question's lexical coverage ([`crate::index::LexicalQuery::coverage`]).
    pub coverage: f32,
}

impl Candidates {
    /// Ranks these candidates (see [`rank`]).
    pub fn rank(&self, fusion: &Fusion, cal: &Calibration, top_k: usize) -> Vec<Ranked> {
        rank(&self.list, self.coverage, fusion, cal, top_k)
    }

    /// Ranks with a per-answer term added to the ordering score (see
    /// [`rank_boosted`]).
    pub fn rank_boosted(
        &self,
        fusion: &Fusion,
        cal: &Calibration,
        top_k: usize,
        boost: &dyn Fn(&str) -> f32,
    ) -> Vec<Ranked> {
        rank_boosted(&self.list, self.coverage, fusion, cal, top_k, Some(boost))
    }
}

/// The feedback boost's term for an answer with `helpful` of `total`
/// feedback: `w` times the smoothed helpful rate mapped to [-1, 1]
/// (`2 * (helpful + 1) / (total + 2) - 1`), so 0 without feedback.
pub fn feedback_term(w: f32, helpful: u32, total: u32) -> f32 {
    let total = total.max(helpful);
    w * (2.0 * (helpful as f32 + 1.0) / (total as f32 + 2.0) - 1.0)
}

/// A ranked answer.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub answer_id: Arc<str>,
    pub score: f32,
    pub dense: f32,
    pub lexical: f32,
    /// The text reported as matched.
    pub point: usize,
    pub features: [f32; N_FEATURES],
    pub confidence: f32,
}

fn scaled(values: impl Iterator<Item = f32> + Clone, norm: Norm) -> impl Fn(f32) -> f32 {
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    move |v| match norm {
        Norm::Raw => v,
        Norm::MinMax if hi - lo > 1e-6 => (v - lo) / (hi - lo),
        Norm::MinMax => 1.0,
    }
}

/// Orders candidates by fused score and attaches confidences; returns the
/// best `top_k`.
/// `coverage` is the question's lexical coverage (a feature of confidence).
pub fn rank(
    cands: &[Candidate],
    coverage: f32,
    fusion: &Fusion,
    cal: &Calibration,
    top_k: usize,
) -> Vec<Ranked> {
    rank_boosted(cands, coverage, fusion, cal, top_k, None)
}

/// [`rank`] with an optional per-answer term added to the fused score
/// before ordering (the feedback boost). The reported score is the boosted
/// one (what orders the list); confidence features use the fused score.
pub fn rank_boosted(
    cands: &[Candidate],
    coverage: f32,
    fusion: &Fusion,
    cal: &Calibration,
    top_k: usize,
    boost: Option<&dyn Fn(&str) -> f32>,
) -> Vec<Ranked> {
    if cands.is_empty() {
        return Vec::new();
    }
    let pooled: Vec<f32> = cands
        .iter()
        .map(|c| pool(c.cosines.iter().copied(), fusion.pool_temperature).unwrap_or(c.dense))
        .collect();
    let dense = scaled(pooled.iter().copied(), fusion.norm);
    let lexical = scaled(cands.iter().map(|c| c.lexical), fusion.norm);
    let w = fusion.dense_weight.clamp(0.0, 1.0);
    // (ordering score, fused score, candidate, pooled cosine)
    let mut scored: Vec<(f32, f32, &Candidate, f32)> = cands
        .iter()
        .zip(&pooled)
        .map(|(c, &p)| {
            let s = match fusion.mode {
                Mode::Dense => p,
                Mode::Lexical => c.lexical,
                Mode::Hybrid => w * dense(p) + (1.0 - w) * lexical(c.lexical),
            };
            let order = boost.map_or(s, |b| s + b(&c.answer_id));
            (order, s, c, p)
        })
        .collect();
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.2.dense.total_cmp(&a.2.dense))
            .then(a.2.answer_id.cmp(&b.2.answer_id))
    });
    // How far the best cosine stands out from the question's typical
    // neighbours: the mean cosine of the ten nearest candidate answers.
    let mut by_dense: Vec<f32> = cands.iter().map(|c| c.dense).collect();
    by_dense.sort_by(|a, b| b.total_cmp(a));
    let near = &by_dense[..by_dense.len().min(10)];
    let typical = near.iter().sum::<f32>() / near.len() as f32;
    let best = scored[0].1;
    let second = scored.get(1).map_or(best - 1.0, |s| s.1);
    scored
        .iter()
        .take(top_k)
        .enumerate()
        .map(|(i, &(order, s, c, pooled))| {
            let margin = if i == 0 { best - second } else { s - best };
            // How much the answer's other phrasings add to its best one.
            let agreement = pooled - c.dense;
            let features = [
                s,
                c.dense,
                c.lexical,
                margin,
                c.dense - typical,
                coverage,
                agreement,
            ];
            let point = match fusion.mode {
                Mode::Lexical => c.lexical_point.unwrap_or(c.dense_point),
                _ => c.dense_point,
            };
            Ranked {
                answer_id: c.answer_id.clone(),
                score: order,
                dense: c.dense,
                lexical: c.lexical,
                point,
                confidence: cal.confidence(&features),
                features,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, dense: f32, lexical: f32) -> Candidate {
        Candidate {
            answer_id: id.into(),
            dense,
            cosines: vec![dense],
            dense_point: 0,
            lexical,
            lexical_point: None,
        }
    }

    #[test]
    fn fuses_and_orders() {
        let cands = [
            cand("a", 0.90, 0.0),
            cand("b", 0.89, 0.8),
            cand("c", 0.80, 0.1),
        ];
        let cal = Calibration::uncalibrated();
        let dense = Fusion {
            mode: Mode::Dense,
            ..Fusion::default()
        };
        assert_eq!(&*rank(&cands, 1.0, &dense, &cal, 3)[0].answer_id, "a");
        let lexical = Fusion {
            mode: Mode::Lexical,
            ..Fusion::default()
        };
        assert_eq!(&*rank(&cands, 1.0, &lexical, &cal, 3)[0].answer_id, "b");
        // Min-max: a is 1.0 dense, b is 0.9 dense and 1.0 lexical.
        let hybrid = Fusion::default();
        let r = rank(&cands, 1.0, &hybrid, &cal, 2);
        assert_eq!(r.len(), 2);
        assert_eq!(&*r[0].answer_id, "b");
        assert!(r[0].score > r[1].score);
        assert!(r[0].features[3] > 0.0 && r[1].features[3] < 0.0);
    }

    #[test]
    fn the_feedback_boost_is_bounded_and_reorders_close_answers() {
        assert_eq!(feedback_term(0.05, 0, 0), 0.0);
        assert!((feedback_term(0.05, 10, 10) - 0.05 * 10.0 / 12.0).abs() < 1e-6);
        assert!((feedback_term(0.05, 0, 10) + 0.05 * 10.0 / 12.0).abs() < 1e-6);
        assert!(feedback_term(0.1, 1000, 1000) <= 0.1);
        assert!(feedback_term(0.1, 0, 1000) >= -0.1);
        // Dense only: a 0.90, b 0.89. Unhelpful feedback on a puts b first.
        let cands = [cand("a", 0.90, 0.0), cand("b", 0.89, 0.0)];
        let cal = Calibration::uncalibrated();
        let dense = Fusion {
            mode: Mode::Dense,
            ..Fusion::default()
        };
        let plain = rank(&cands, 1.0, &dense, &cal, 2);
        let none = |_: &str| 0.0;
        let same = rank_boosted(&cands, 1.0, &dense, &cal, 2, Some(&none));
        assert_eq!(plain[0].answer_id, same[0].answer_id);
        assert_eq!(plain[0].confidence, same[0].confidence);
        let boost = |id: &str| {
            if id == "a" {
                feedback_term(0.05, 0, 8)
            } else {
                0.0
            }
        };
        let r = rank_boosted(&cands, 1.0, &dense, &cal, 2, Some(&boost));
        assert_eq!(&*r[0].answer_id, "b");
        assert!(
            r[0].score > r[1].score,
            "the reported score orders the list"
        );
        // Confidence still comes from the unboosted signals.
        assert_eq!(r[1].confidence, plain[0].confidence);
        // A large gap is not overturned by the bounded term.
        let far = [cand("a", 0.95, 0.0), cand("b", 0.80, 0.0)];
        let r = rank_boosted(&far, 1.0, &dense, &cal, 2, Some(&boost));
        assert_eq!(&*r[0].answer_id, "a");
    }

    #[test]
    fn pooling_rewards_agreeing_phrasings() {
        let one = pool([0.90f32].into_iter(), 0.02).unwrap();
        assert!((one - 0.90).abs() < 1e-6);
        let three = pool([0.90f32, 0.89, 0.88].into_iter(), 0.02).unwrap();
        assert!(
            three > 0.90 && three < 0.90 + 0.02 * 3f32.ln() + 1e-6,
            "{three}"
        );
        // A far-off answer text hardly moves it.
        let far = pool([0.90f32, 0.70].into_iter(), 0.02).unwrap();
        assert!(far - 0.90 < 1e-4);
        assert_eq!(pool([0.5f32, 0.7].into_iter(), 0.0), Some(0.7));
        assert_eq!(pool(std::iter::empty::<f32>(), 0.02), None);
    }

    #[test]
    fn confidence_rises_with_the_cosine() {
        let cal = Calibration::uncalibrated();
        let lo = rank(&[cand("a", 0.80, 0.0)], 1.0, &Fusion::default(), &cal, 1)[0].confidence;
        let hi = rank(&[cand("a", 0.95, 0.0)], 1.0, &Fusion::default(), &cal, 1)[0].confidence;
        assert!(lo < 0.5 && hi > 0.5 && (0.0..=1.0).contains(&lo) && hi <= 1.0);
    }
}
