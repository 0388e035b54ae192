//! Conversation context in `POST /v1/recommend`, over HTTP with the real
//! model: follow-ups resolved with earlier turns, a new topic not drowned by
//! them, bad context refused. (Top-1 with and without context on the whole
//! conversation set is measured by `kefu eval context`.)

use serde_json::{json, Value};

use crate::api::{assert_error, post_raw, recommend, result_ids, shared};

fn top(recs: &Value) -> (String, f64) {
    let first = &recs["results"][0];
    (
        first["answer_id"].as_str().unwrap_or_default().to_string(),
        first["confidence"].as_f64().unwrap_or(0.0),
    )
}

#[test]
fn a_chinese_follow_up_is_resolved_by_the_earlier_turns() {
    let base = shared();
    let question = "那运费谁出？";
    let context = json!([
        {"role": "customer", "text": "我想退货，七天无理由可以退吗"},
        {"role": "agent", "text": "可以的，签收后7天内商品完好就能申请"}
    ]);
    let alone = recommend(base, &json!({"question": question}));
    let with = recommend(base, &json!({"question": question, "context": context}));
    assert_eq!(with["context"], json!({"turns": 2, "used": true}));
    assert_eq!(alone["context"], json!({"turns": 0, "used": false}));
    let (id, confidence) = top(&with);
    assert_eq!(id, "returns.shipping-cost-no-reason", "{with}");
    // Alone, the bare question is about some other shipping fee and is not
    // confidently answered: the context is what resolved it.
    let (alone_id, alone_confidence) = top(&alone);
    assert_ne!(alone_id, id, "{alone}");
    assert!(confidence > alone_confidence + 0.3, "{alone} / {with}");
    assert_eq!(with["handoff"], json!(false));
}

#[test]
fn an_english_follow_up_is_resolved_by_the_earlier_turns() {
    let base = shared();
    let question = "how long until I see the money?";
    let context = json!([
        {"role": "customer", "text": "I paid with PayPal and returned the item last week"}
    ]);
    let alone = recommend(base, &json!({"question": question}));
    let with = recommend(base, &json!({"question": question, "context": context}));
    assert_eq!(with["context"]["used"], json!(true));
    assert_eq!(top(&with).0, "en.refunds.paypal", "{with}");
    assert_ne!(top(&alone).0, "en.refunds.paypal", "{alone}");
}

#[test]
fn a_new_topic_is_not_drowned_by_the_old_turns() {
    let base = shared();
    let question = "你们支持花呗分期吗？";
    let context = json!([
        {"role": "customer", "text": "我申请了退款，什么时候能到账"},
        {"role": "agent", "text": "原路退回，1-3个工作日"},
        {"role": "customer", "text": "退款退到花呗的话怎么算"}
    ]);
    let alone = recommend(base, &json!({"question": question}));
    let with = recommend(base, &json!({"question": question, "context": context}));
    assert_eq!(top(&alone).0, "payment.huabei-installment", "{alone}");
    assert_eq!(top(&with).0, "payment.huabei-installment", "{with}");
    assert_eq!(result_ids(&with), result_ids(&alone));
    assert_eq!(with["context"], json!({"turns": 3, "used": false}));
}

#[test]
fn context_works_with_filters_and_top_k() {
    let base = shared();
    let with = recommend(
        base,
        &json!({
            "question": "who covers the postage?",
            "top_k": 2,
            "filters": {"locale": "en"},
            "context": [
                {"role": "customer", "text": "I'd like to send these sneakers back, they don't fit"},
                {"role": "agent", "text": "No problem, you can start a return from your order page."}
            ]
        }),
    );
    let ids = result_ids(&with);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "en.returns.shipping-cost");
    for r in with["results"].as_array().unwrap() {
        assert_eq!(r["locale"], "en");
    }
}

#[test]
fn bad_context_is_refused_with_stable_codes() {
    let base = shared();
    let q = |context: Value| json!({"question": "那运费谁出？", "context": context}).to_string();
    let cases = [
        (
            q(json!("earlier we talked about returns")),
            400,
            "invalid_type",
        ),
        (
            q(json!([{"role": "bot", "text": "hi"}])),
            400,
            "invalid_type",
        ),
        (q(json!([{"text": "hi"}])), 400, "missing_field"),
        (
            q(json!([{"role": "agent", "text": "hi", "at": "10:00"}])),
            400,
            "unknown_field",
        ),
        (
            q(json!([{"role": "customer", "text": "  "}])),
            422,
            "invalid_context",
        ),
        (
            q(json!([{"role": "customer", "text": "长".repeat(2001)}])),
            422,
            "invalid_context",
        ),
        (
            q(Value::Array(
                (0..51)
                    .map(|i| json!({"role": "customer", "text": format!("turn {i}")}))
                    .collect(),
            )),
            422,
            "invalid_context",
        ),
    ];
    for (body, status, code) in cases {
        let reply = post_raw(base, "/v1/recommend", body.clone());
        assert_error(&reply, status, code);
    }
    // An empty context is the same as none.
    let recs = recommend(base, &json!({"question": "那运费谁出？", "context": []}));
    assert_eq!(recs["context"], json!({"turns": 0, "used": false}));
}

#[test]
fn an_angry_earlier_turn_keeps_the_conversation_escalated() {
    let base = shared();
    let question = "那现在怎么处理？";
    let calm = recommend(base, &json!({"question": question}));
    assert_eq!(calm["escalate"], json!(false), "{calm}");
    let with = recommend(
        base,
        &json!({
            "question": question,
            "context": [
                {"role": "customer", "text": "收到的充电宝用了两次就鼓包发烫了，再不处理我就去12315投诉！"},
                {"role": "agent", "text": "非常抱歉，请您先停止使用"}
            ]
        }),
    );
    assert_eq!(with["escalate"], json!(true), "{with}");
    // An agent's words never escalate a conversation.
    let agent_only = recommend(
        base,
        &json!({
            "question": question,
            "context": [{"role": "agent", "text": "如需投诉可拨打12315，我们也可以立刻为您处理"}]
        }),
    );
    assert_eq!(agent_only["escalate"], json!(false), "{agent_only}");
}

/// `kefu eval context` on the team's 88 conversations over the demo library
/// (README, "Conversation context", 2026-11-24: top-1 62.5% alone, 83.0%
/// with the service policy; follow-ups 31 -> 49 of 63, topic changes 24 and
/// 24 of 25). Fails three conversations below the measured figure, when the
/// follow-up gain shrinks below 12 conversations, or when context costs a
/// topic change.
#[test]
fn eval_context_measures_the_conversation_set() {
    let dir = crate::server::demo_data_dir();
    let input = crate::common::repo_root().join("tests/fixtures/conversations.jsonl");
    let r = crate::server::kefu_json(&[
        "eval",
        "context",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r["conversations"], json!(88));
    let reading = |i: usize, name: &str| {
        let row = &r["readings"][i];
        assert_eq!(row[0], json!(name), "{r}");
        let pair = |k: &str| {
            (
                row[1][k][0].as_u64().unwrap(),
                row[1][k][1].as_u64().unwrap(),
            )
        };
        (pair("follow_up"), pair("topic_change"))
    };
    let (alone_f, alone_t) = reading(0, "question alone");
    let (policy_f, policy_t) = reading(1, "service policy");
    assert_eq!((alone_f.1, alone_t.1), (63, 25));
    assert!(
        policy_f.0 + policy_t.0 >= 70,
        "service policy top-1 {} + {} of 88: {r}",
        policy_f.0,
        policy_t.0
    );
    assert!(
        policy_f.0 >= alone_f.0 + 12,
        "follow-ups: {} with context, {} alone",
        policy_f.0,
        alone_f.0
    );
    assert!(
        policy_t.0 >= alone_t.0,
        "topic changes: {} with context, {} alone",
        policy_t.0,
        alone_t.0
    );
}
