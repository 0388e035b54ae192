//! Related answers: the links an editor set on an answer, in the editor's
//! order, then the answers nearest to it in the vector index.
//!
//! Nearness is the cosine between the answers' mean vectors: each answer's
//! indexed texts (standard question, variants, answer text) are averaged and
//! normalised. On the demo library this ranks same-topic answers first more
//! often than the best pair of texts does, which a single generic phrasing
//! ("how do I ...") can dominate. Candidates come from an HNSW search with
//! the answer's mean vector and are re-scored exactly. Only published,
//! unexpired answers are served, never the answer itself, and an answer that
//! is linked is not repeated among the similar ones. An answer with no
//! vectors in the live index (new, before its first reindex) has no similar
//! answers yet; an edited one is compared by its vectors from the last
//! reindex, as recommend does.

use std::collections::HashSet;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{freshness, Engine, EngineError};
use crate::index::{dot, PointMeta, VectorIndex};
use crate::store::{Answer, Link, LinksOutcome, Status};

/// Why an answer is related.
#[derive(Debug, Clone, PartialEq)]
pub enum RelatedSource {
    /// An editor linked it, with an optional note.
    Link { note: Option<String> },
    /// It is near in the vector index: the cosine of the mean vectors.
    Similar { score: f32 },
}

/// One related answer.
#[derive(Debug, Clone)]
pub struct Related {
    pub answer: Arc<Answer>,
    pub source: RelatedSource,
}

/// Whether an answer may be shown to customers now.
fn servable(a: &Answer, now: OffsetDateTime) -> bool {
    a.input.status == Status::Published && !freshness::is_expired(a, now)
}

/// The normalised mean of some points' vectors; `None` for no points.
fn mean_vector(index: &VectorIndex, points: &[usize]) -> Option<Vec<f32>> {
    let first = points.first()?;
    let mut sum = index.vector(*first).to_vec();
    for &p in &points[1..] {
        for (s, x) in sum.iter_mut().zip(index.vector(p)) {
            *s += x;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return None;
    }
    sum.iter_mut().for_each(|x| *x /= norm);
    Some(sum)
}

impl Engine {
    /// The links an editor set on an answer, in their order (linked answers
    /// deleted since are gone: deleting an answer removes links to it).
    pub fn links(&self, id: &str) -> Result<Vec<Link>, EngineError> {
        Ok(self.store.links(id)?)
    }

    /// Replaces an answer's links. Checks existence in the same transaction
    /// as the write.
    pub fn set_links(&self, id: &str, links: &[Link]) -> Result<LinksOutcome, EngineError> {
        Ok(self.store.set_links(id, links)?)
    }

    /// Up to `k` published, unexpired answers nearest to `id` in the vector
    /// index, best first, leaving out `id` itself and `exclude`.
    pub fn similar(&self, id: &str, k: usize, exclude: &HashSet<&str>) -> Vec<(Arc<Answer>, f32)> {
        let index = self.index();
        let Some(centre) = mean_vector(&index, index.points_of(id)) else {
            return Vec::new();
        };
        let now = OffsetDateTime::now_utc();
        let catalog = self.catalog();
        let admissible = |answer_id: &str| {
            answer_id != id
                && !exclude.contains(answer_id)
                && catalog.get(answer_id).is_some_and(|a| servable(a, now))
        };
        let keep = |p: &PointMeta| admissible(&p.answer_id);
        // Several texts per answer: ask for enough points to find k answers.
        let k_points = (k * 8).max(self.settings.candidates);
        let ef = self.settings.ef_search.max(k_points);
        let mut seen = HashSet::new();
        let mut scored: Vec<(Arc<Answer>, f32)> = Vec::new();
        for (p, _) in index.search(&centre, k_points, ef, &keep) {
            let answer_id = &index.point(p).answer_id;
            if !seen.insert(answer_id.clone()) {
                continue;
            }
            let (Some(a), Some(v)) = (
                catalog.get(&**answer_id),
                mean_vector(&index, index.points_of(answer_id)),
            ) else {
                continue;
            };
            // f32 rounding can put identical texts a hair above 1.
            scored.push((a.clone(), dot(&centre, &v).clamp(-1.0, 1.0)));
        }
        scored.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| a.0.input.id.cmp(&b.0.input.id))
        });
        scored.truncate(k);
        scored
    }

    /// At most `k` related answers of `id`: its servable links first, in the
    /// editor's order, then the nearest other answers. `None` when there is
    /// no answer `id`.
    pub fn related(&self, id: &str, k: usize) -> Result<Option<Vec<Related>>, EngineError> {
        if self.get(id).is_none() {
            return Ok(None);
        }
        let now = OffsetDateTime::now_utc();
        let links = self.links(id)?;
        let mut out: Vec<Related> = links
            .iter()
            .filter_map(|l| {
                let a = self.get(&l.answer_id)?;
                servable(&a, now).then(|| Related {
                    answer: a,
                    source: RelatedSource::Link {
                        note: l.note.clone(),
                    },
                })
            })
            .take(k)
            .collect();
        if out.len() < k {
            let exclude: HashSet<&str> = links.iter().map(|l| l.answer_id.as_str()).collect();
            out.extend(self.similar(id, k - out.len(), &exclude).into_iter().map(
                |(answer, score)| Related {
                    answer,
                    source: RelatedSource::Similar { score },
                },
            ));
        }
        Ok(Some(out))
    }
}
