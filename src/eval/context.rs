//! `kefu eval context`: top-1 on multi-turn conversations, with and without
//! the conversation context, through the engine the service uses.
//!
//! Input: JSON Lines of `{"id", "lang", "kind": "follow_up"|"topic_change",
//! "context": [{"role", "text"}], "question", "expected_id"}` (the project's
//! own set: tests/fixtures/conversations.jsonl), over a data directory that
//! holds the library the expected ids come from (e.g. `kefu import --demo`).
//!
//! Follow-ups need the context; topic changes check that it does not drown
//! a new question. Besides the service's policy, alternative readings (the
//! question alone, the in-context text alone, other weights and turn counts)
//! are scored on the same conversations so that the choice stays measured.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::embedding::TextKind;
use crate::recommend::context::{blend, contextual_text, ContextPolicy, Turn};
use crate::recommend::{Engine, Query};

#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub id: String,
    #[serde(default)]
    pub lang: String,
    pub kind: String,
    pub context: Vec<Turn>,
    pub question: String,
    pub expected_id: String,
}

pub fn read_conversations(path: &Path) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for (n, line) in super::lines(path)? {
        let c: Conversation = serde_json::from_str(&line)
            .with_context(|| format!("{}:{n}: not a conversation", path.display()))?;
        if c.kind != "follow_up" && c.kind != "topic_change" {
            bail!(
                "{}:{n}: kind must be follow_up or topic_change",
                path.display()
            );
        }
        out.push(c);
    }
    if out.is_empty() {
        bail!("{}: no conversations", path.display());
    }
    Ok(out)
}

/// Top-1 counts of one reading, per kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub follow_up: (usize, usize),
    pub topic_change: (usize, usize),
}

impl Score {
    fn add(&mut self, kind: &str, hit: bool) {
        let slot = if kind == "follow_up" {
            &mut self.follow_up
        } else {
            &mut self.topic_change
        };
        slot.0 += hit as usize;
        slot.1 += 1;
    }
    fn all(&self) -> (usize, usize) {
        (
            self.follow_up.0 + self.topic_change.0,
            self.follow_up.1 + self.topic_change.1,
        )
    }
}

#[derive(Debug, Serialize)]
pub struct ContextReport {
    pub conversations: usize,
    /// (reading, scores): the question alone first, the service policy second.
    pub readings: Vec<(String, Score)>,
    /// Conversations the service policy gets wrong: (id, kind, expected, got).
    pub misses: Vec<(String, String, String, String)>,
}

fn top1(engine: &Engine, vector: &[f32], question: &str) -> Option<String> {
    top(engine, vector, question).0
}

fn top(engine: &Engine, vector: &[f32], question: &str) -> (Option<String>, f32) {
    let (recs, _) = engine.recommend_vector(vector, &Query::new(question, 1));
    recs.results.first().map_or((None, 0.0), |r| {
        (Some(r.answer.input.id.clone()), r.confidence)
    })
}

/// Scores the service's policy and alternative readings on `convs`.
pub fn run(
    engine: &Engine,
    convs: &[Conversation],
    policy: &ContextPolicy,
) -> Result<ContextReport> {
    let mut readings: Vec<(String, ContextPolicy)> = vec![("service policy".into(), *policy)];
    for turns in [1, 2, 3] {
        for agent_turns in [true, false] {
            for weight in [0.5, 1.0, 2.0] {
                for keep_alone_above in [0.9, 1.01] {
                    let p = ContextPolicy {
                        turns,
                        agent_turns,
                        weight,
                        keep_alone_above,
                    };
                    if p != *policy {
                        let who = if agent_turns { "any" } else { "customer" };
                        let guard = if keep_alone_above > 1.0 {
                            String::new()
                        } else {
                            format!(", alone above {keep_alone_above}")
                        };
                        readings
                            .push((format!("{turns} {who} turn(s), weight {weight}{guard}"), p));
                    }
                }
            }
        }
    }
    let alone_name = "question alone".to_string();
    let text_name = "in-context text alone (service turns)".to_string();
    let mut scores: Vec<Score> = vec![Score::default(); readings.len() + 2];
    let mut misses = Vec::new();
    let embedder = engine.embedder();
    for c in convs {
        let mut texts = vec![c.question.clone()];
        for (_, p) in &readings {
            texts.push(
                contextual_text(&c.context, &c.question, p).unwrap_or_else(|| c.question.clone()),
            );
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder
            .embed(&refs, TextKind::Query)
            .with_context(|| format!("embedding conversation {}", c.id))?;
        let hit = |id: &Option<String>| id.as_deref() == Some(c.expected_id.as_str());
        let alone = &vectors[0].vector;
        let (alone_top, alone_conf) = top(engine, alone, &c.question);
        scores[0].add(&c.kind, hit(&alone_top));
        scores[1].add(&c.kind, hit(&top1(engine, &vectors[1].vector, &texts[1])));
        for (i, (_, p)) in readings.iter().enumerate() {
            let got = if i == 0 {
                // The service's own code path.
                let q = Query::new(c.question.as_str(), 1);
                let (recs, _) = engine.recommend_in_context(alone, Some(&vectors[1].vector), &q);
                recs.results.first().map(|r| r.answer.input.id.clone())
            } else if alone_conf >= p.keep_alone_above {
                alone_top.clone()
            } else {
                let v = blend(alone, &vectors[i + 1].vector, p.weight);
                top1(engine, &v, &c.question)
            };
            if i == 0 && !hit(&got) {
                misses.push((
                    c.id.clone(),
                    c.kind.clone(),
                    c.expected_id.clone(),
                    got.clone().unwrap_or_default(),
                ));
            }
            scores[i + 2].add(&c.kind, hit(&got));
        }
    }
    let mut names = vec![alone_name];
    names.extend(readings.into_iter().map(|(n, _)| n));
    names.insert(2, text_name);
    // Order: question alone, service policy, in-context text alone, the rest.
    let mut scores = scores.into_iter();
    let alone = scores.next().unwrap_or_default();
    let text = scores.next().unwrap_or_default();
    let mut ordered = vec![alone];
    let mut rest: Vec<Score> = scores.collect();
    let policy_score = if rest.is_empty() {
        Score::default()
    } else {
        rest.remove(0)
    };
    ordered.push(policy_score);
    ordered.push(text);
    ordered.extend(rest);
    Ok(ContextReport {
        conversations: convs.len(),
        readings: names.into_iter().zip(ordered).collect(),
        misses,
    })
}

fn pct((hit, n): (usize, usize)) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{:5.1}% ({hit}/{n})", 100.0 * hit as f64 / n as f64)
    }
}

pub fn render(r: &ContextReport) -> String {
    let mut s = format!(
        "{} conversations; top-1 (share whose first answer is the expected one)\n\n{:<58} {:>16} {:>16} {:>16}\n",
        r.conversations, "reading", "all", "follow-ups", "topic changes"
    );
    for (name, sc) in &r.readings {
        s.push_str(&format!(
            "{:<58} {:>16} {:>16} {:>16}\n",
            name,
            pct(sc.all()),
            pct(sc.follow_up),
            pct(sc.topic_change)
        ));
    }
    if let (Some(alone), Some(policy)) = (r.readings.first(), r.readings.get(1)) {
        let (a, n) = alone.1.all();
        let (p, _) = policy.1.all();
        s.push_str(&format!(
            "\ncontext gain (service policy - question alone): {:+.1} points of top-1\n",
            100.0 * (p as f64 - a as f64) / n.max(1) as f64
        ));
    }
    if !r.misses.is_empty() {
        s.push_str("\nmissed by the service policy (id, kind: expected -> got):\n");
        for (id, kind, want, got) in &r.misses {
            s.push_str(&format!("  {id} {kind}: {want} -> {got}\n"));
        }
    }
    s
}
