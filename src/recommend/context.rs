//! Conversation context: resolving a follow-up question ("那运费谁出？",
//! "and for international orders?") with the earlier turns of the chat,
//! without letting old turns drown a question that changes topic.
//!
//! Method (chosen by `kefu eval context` on tests/fixtures/conversations.jsonl):
//! the question is embedded twice, alone and in context (the latest turns
//! joined before it, see [`contextual_text`]). When the question alone is
//! answered with high confidence it stands (a self-contained new question
//! keeps its own answer however long the conversation was); otherwise the
//! search vector is the normalised weighted sum of the two readings
//! ([`blend`]), so a bare follow-up ("多久到账？") borrows the topic of the
//! turns before it while its own words still count. The lexical leg reads
//! the question alone: old turns add no keywords.

use serde::Deserialize;

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Agent => "agent",
        }
    }
}

/// One earlier turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

/// How the context is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextPolicy {
    /// How many of the latest turns join the question.
    pub turns: usize,
    /// Whether agent turns join too (they often restate the topic).
    pub agent_turns: bool,
    /// The in-context vector's weight against the question alone's (1).
    pub weight: f32,
    /// The question alone stands when its top confidence reaches this: a
    /// confidently answered new question is not pulled back to the old topic.
    pub keep_alone_above: f32,
}

impl Default for ContextPolicy {
    fn default() -> Self {
        Self {
            turns: 3,
            agent_turns: true,
            weight: 2.0,
            keep_alone_above: 0.9,
        }
    }
}

/// The question in context: the latest `policy.turns` turns (customer turns
/// only unless `agent_turns`), oldest first, then the question, one per
/// line. `None` when no turn qualifies.
pub fn contextual_text(turns: &[Turn], question: &str, policy: &ContextPolicy) -> Option<String> {
    let picked: Vec<&str> = turns
        .iter()
        .rev()
        .filter(|t| policy.agent_turns || t.role == Role::Customer)
        .map(|t| t.text.trim())
        .filter(|t| !t.is_empty())
        .take(policy.turns)
        .collect();
    if picked.is_empty() {
        return None;
    }
    let mut text: String = picked.iter().rev().fold(String::new(), |mut acc, t| {
        acc.push_str(t);
        acc.push('\n');
        acc
    });
    text.push_str(question.trim());
    Some(text)
}

/// The search vector for a question in context: `alone + weight *
/// in_context`, normalised (both inputs are unit vectors).
pub fn blend(alone: &[f32], in_context: &[f32], weight: f32) -> Vec<f32> {
    let mut v: Vec<f32> = alone
        .iter()
        .zip(in_context)
        .map(|(a, c)| a + weight * c)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, text: &str) -> Turn {
        Turn {
            role,
            text: text.into(),
        }
    }

    #[test]
    fn contextual_text_takes_the_latest_turns_oldest_first() {
        let turns = [
            turn(Role::Customer, "我想退货"),
            turn(Role::Agent, "好的，请在订单页申请"),
            turn(Role::Customer, "  "),
        ];
        let p = ContextPolicy {
            turns: 2,
            ..ContextPolicy::default()
        };
        assert_eq!(
            contextual_text(&turns, " 那运费谁出？", &p).as_deref(),
            Some("我想退货\n好的，请在订单页申请\n那运费谁出？")
        );
        let customer_only = ContextPolicy {
            agent_turns: false,
            ..p
        };
        assert_eq!(
            contextual_text(&turns, "那运费谁出？", &customer_only).as_deref(),
            Some("我想退货\n那运费谁出？")
        );
        assert_eq!(contextual_text(&[], "q", &p), None);
        assert_eq!(
            contextual_text(&[turn(Role::Agent, "hi")], "q", &customer_only),
            None
        );
    }

    #[test]
    fn blend_is_the_normalised_weighted_sum() {
        let v = blend(&[1.0, 0.0], &[0.0, 1.0], 1.0);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((v[0] - h).abs() < 1e-6 && (v[1] - h).abs() < 1e-6);
        let v = blend(&[1.0, 0.0], &[0.0, 1.0], 0.0);
        assert_eq!(v, vec![1.0, 0.0]);
        let v = blend(&[0.6, 0.8], &[0.6, 0.8], 2.0);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
