//! The taxonomy: categories, subcategories and tags of the published
//! answers with their counts, the labels editors gave questions in the
//! review queue, and relations between tags, both those editors set
//! (symmetric, stored) and those computed from the library (tags that
//! appear together on published answers).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use time::OffsetDateTime;

use super::{Engine, EngineError};
use crate::store::{AnswerInput, ReviewLabel, Status};

/// Most tags one tag may be related to.
pub const MAX_RELATED: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Taxonomy {
    /// Published answers in all.
    pub answers: usize,
    /// Confirmed and corrected review labels in use.
    pub reviewed: usize,
    /// Most answers first, then by name.
    pub categories: Vec<CategoryCount>,
    /// Most answers first, then by name.
    pub tags: Vec<TagEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryCount {
    pub category: String,
    /// Published answers in it.
    pub answers: usize,
    /// Reviewed questions labelled with it (a category only editors used
    /// in the review queue has 0 answers).
    pub reviewed: usize,
    pub subcategories: Vec<SubcategoryCount>,
    /// Tags of its published answers.
    pub tags: Vec<TagCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubcategoryCount {
    /// Empty for answers without one.
    pub subcategory: String,
    pub answers: usize,
    pub reviewed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagCount {
    pub tag: String,
    pub answers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagEntry {
    pub tag: String,
    /// Published answers carrying it.
    pub answers: usize,
    /// Related by editors (symmetric), sorted.
    pub related: Vec<String>,
    /// Computed from the library: tags on the same published answers, with
    /// how many answers carry both; most first.
    pub co_occurring: Vec<TagCount>,
}

#[derive(Default)]
struct Counts {
    answers: usize,
    reviewed: usize,
}

/// A category's counts, its subcategories' and its tags'.
type CategoryAcc = (Counts, HashMap<String, Counts>, HashMap<String, usize>);

fn by_count<T>(
    m: impl IntoIterator<Item = (String, T)>,
    count: impl Fn(&T) -> usize,
) -> Vec<(String, T)> {
    let mut v: Vec<(String, T)> = m.into_iter().collect();
    v.sort_by(|a, b| count(&b.1).cmp(&count(&a.1)).then_with(|| a.0.cmp(&b.0)));
    v
}

fn tag_counts(m: HashMap<String, usize>) -> Vec<TagCount> {
    by_count(m, |c| *c)
        .into_iter()
        .map(|(tag, answers)| TagCount { tag, answers })
        .collect()
}

/// Builds the taxonomy of these answers (only published ones count), review
/// labels and editor-set relations (pairs, either order).
pub fn build<'a>(
    answers: impl IntoIterator<Item = &'a AnswerInput>,
    labels: &[ReviewLabel],
    relations: &[(String, String)],
) -> Taxonomy {
    let mut categories: HashMap<String, CategoryAcc> = HashMap::new();
    let mut tags: HashMap<String, usize> = HashMap::new();
    let mut together: HashMap<String, HashMap<String, usize>> = HashMap::new();
    let mut total = 0;
    for a in answers
        .into_iter()
        .filter(|a| a.status == Status::Published)
    {
        total += 1;
        let (c, subs, ctags) = categories.entry(a.category.clone()).or_default();
        c.answers += 1;
        subs.entry(a.subcategory.clone()).or_default().answers += 1;
        let unique: BTreeSet<&String> = a.tags.iter().collect();
        for t in &unique {
            *ctags.entry((*t).clone()).or_default() += 1;
            *tags.entry((*t).clone()).or_default() += 1;
            for u in &unique {
                if u != t {
                    *together
                        .entry((*t).clone())
                        .or_default()
                        .entry((*u).clone())
                        .or_default() += 1;
                }
            }
        }
    }
    for l in labels {
        let (c, subs, _) = categories.entry(l.category.clone()).or_default();
        c.reviewed += 1;
        subs.entry(l.subcategory.clone()).or_default().reviewed += 1;
    }
    let mut related: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in relations {
        if a != b {
            related.entry(a.clone()).or_default().insert(b.clone());
            related.entry(b.clone()).or_default().insert(a.clone());
        }
    }
    for t in related.keys() {
        tags.entry(t.clone()).or_default();
    }
    let categories = by_count(categories, |c| c.0.answers)
        .into_iter()
        .map(|(category, (c, subs, ctags))| CategoryCount {
            category,
            answers: c.answers,
            reviewed: c.reviewed,
            subcategories: by_count(subs, |s| s.answers)
                .into_iter()
                .map(|(subcategory, s)| SubcategoryCount {
                    subcategory,
                    answers: s.answers,
                    reviewed: s.reviewed,
                })
                .collect(),
            tags: tag_counts(ctags),
        })
        .collect();
    let tags = by_count(tags, |c| *c)
        .into_iter()
        .map(|(tag, answers)| TagEntry {
            related: related
                .get(&tag)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
            co_occurring: tag_counts(together.remove(&tag).unwrap_or_default()),
            tag,
            answers,
        })
        .collect();
    Taxonomy {
        answers: total,
        reviewed: labels.len(),
        categories,
        tags,
    }
}

impl Engine {
    /// The taxonomy of the library as it is now.
    pub fn taxonomy(&self) -> Result<Taxonomy, EngineError> {
        let relations = self.store.tag_relations()?;
        let labels = self.reviewed_labels();
        let catalog = self.catalog();
        Ok(build(
            catalog.values().map(|a| &a.input),
            &labels,
            &relations,
        ))
    }

    /// Replaces the editor-set relations of `tag` (symmetric: `tag` is
    /// removed from, or added to, the other tags' relations too); returns
    /// its related tags, sorted. The caller validates the tags.
    pub fn set_related_tags(
        &self,
        tag: &str,
        related: &[String],
    ) -> Result<Vec<String>, EngineError> {
        Ok(self
            .store
            .set_related_tags(tag, related, OffsetDateTime::now_utc())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnswerDraft;

    fn answer(id: &str, cat: &str, sub: &str, tags: &[&str], status: &str) -> AnswerInput {
        let d: AnswerDraft = serde_json::from_value(serde_json::json!({"id": id,
            "question": "q", "answer": "a", "category": cat, "subcategory": sub,
            "tags": tags, "locale": "zh-CN", "status": status}))
        .unwrap();
        d.validate(None).unwrap()
    }

    #[test]
    fn counts_published_answers_labels_and_relations() {
        let answers = [
            answer("1", "returns", "policy", &["退货", "运费"], "published"),
            answer("2", "returns", "policy", &["退货"], "published"),
            answer("3", "returns", "process", &["退货", "运费"], "published"),
            answer("4", "shipping", "", &["物流"], "published"),
            answer("5", "shipping", "fees", &["物流", "运费"], "draft"),
        ];
        let labels = [ReviewLabel {
            category: "logistics-complaint".into(),
            subcategory: "late".into(),
            tags: vec![],
        }];
        let relations = [("退货".to_string(), "退款".to_string())];
        let t = build(answers.iter(), &labels, &relations);
        assert_eq!((t.answers, t.reviewed), (4, 1));
        let names: Vec<(&str, usize, usize)> = t
            .categories
            .iter()
            .map(|c| (c.category.as_str(), c.answers, c.reviewed))
            .collect();
        assert_eq!(
            names,
            vec![
                ("returns", 3, 0),
                ("shipping", 1, 0),
                ("logistics-complaint", 0, 1)
            ]
        );
        let returns = &t.categories[0];
        assert_eq!(
            returns.subcategories,
            vec![
                SubcategoryCount {
                    subcategory: "policy".into(),
                    answers: 2,
                    reviewed: 0
                },
                SubcategoryCount {
                    subcategory: "process".into(),
                    answers: 1,
                    reviewed: 0
                },
            ]
        );
        assert_eq!(
            returns.tags,
            vec![
                TagCount {
                    tag: "退货".into(),
                    answers: 3
                },
                TagCount {
                    tag: "运费".into(),
                    answers: 2
                },
            ]
        );
        let tag = |name: &str| t.tags.iter().find(|x| x.tag == name).unwrap();
        // The draft's 运费 and 物流 do not count.
        assert_eq!(tag("运费").answers, 2);
        assert_eq!(tag("物流").answers, 1);
        assert_eq!(
            tag("退货").co_occurring,
            vec![TagCount {
                tag: "运费".into(),
                answers: 2
            }]
        );
        assert_eq!(
            tag("运费").co_occurring,
            vec![TagCount {
                tag: "退货".into(),
                answers: 2
            }]
        );
        assert!(tag("物流").co_occurring.is_empty());
        // Editor relations are symmetric; a related tag no answer carries is listed.
        assert_eq!(tag("退货").related, vec!["退款".to_string()]);
        assert_eq!(tag("退款").related, vec!["退货".to_string()]);
        assert_eq!(tag("退款").answers, 0);
        assert!(tag("运费").related.is_empty());
    }
}
