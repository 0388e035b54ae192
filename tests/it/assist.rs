//! Sentiment and escalation in recommend responses, and related answers
//! (`GET`/`PUT /v1/answers/{id}/related`), over HTTP against the real
//! binary and model on the demo library.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::{
    assert_error, delete, demo_answers, expect, get, get_json, put_body, put_json, recommend,
    request, send, shared,
};
use crate::server::{demo_data_dir, Server};

// ---------------------------------------------------------------------------
// Sentiment in recommend.

fn mood(recs: &Value) -> (String, f64, bool) {
    let s = recs["sentiment"]
        .as_object()
        .unwrap_or_else(|| panic!("no sentiment object: {recs}"));
    assert_eq!(s.len(), 2, "sentiment is {{label, score}}: {recs}");
    let score = s["score"].as_f64().expect("sentiment.score is a number");
    assert!((-1.0..=1.0).contains(&score), "{recs}");
    let escalate = recs["escalate"].as_bool().expect("escalate is a boolean");
    (
        s["label"].as_str().expect("label").to_string(),
        score,
        escalate,
    )
}

#[test]
fn recommend_and_suggest_report_sentiment_and_escalation() {
    let base = shared();
    let angry = recommend(base, &json!({"question": "你们再不退款我就打12315投诉！"}));
    let (label, score, escalate) = mood(&angry);
    assert_eq!((label.as_str(), escalate), ("negative", true), "{angry}");
    assert!(score < -0.2, "{angry}");
    assert!(
        !angry["results"].as_array().unwrap().is_empty(),
        "answers are still recommended: {angry}"
    );

    // A calm how-to question that names a complaint word.
    let calm = recommend(base, &json!({"question": "怎么投诉？"}));
    assert_eq!(mood(&calm).0, "neutral", "{calm}");
    assert!(!mood(&calm).2, "{calm}");
    assert_eq!(
        calm["results"][0]["answer_id"], "complaint.how-to-file",
        "{calm}"
    );
    let calm_en = recommend(base, &json!({"question": "How do I file a complaint?"}));
    assert_eq!(
        (mood(&calm_en).0.as_str(), mood(&calm_en).2),
        ("neutral", false)
    );

    let thanks = recommend(base, &json!({"question": "谢谢，问题解决了"}));
    assert_eq!(
        (mood(&thanks).0.as_str(), mood(&thanks).2),
        ("positive", false)
    );

    let fire = recommend(
        base,
        &json!({"question": "The charger caught fire and burned my desk!!"}),
    );
    assert!(mood(&fire).2, "{fire}");

    let sug = expect(
        send(
            request(Method::GET, base, "/v1/suggest", None)
                .query(&[("q", "I will sue you if my refund is late again")]),
        ),
        200,
    );
    let (label, _, escalate) = mood(&sug);
    assert_eq!((label.as_str(), escalate), ("negative", true), "{sug}");
}

// ---------------------------------------------------------------------------
// Related answers.

fn related(base: &str, id: &str, k: Option<usize>) -> Value {
    let path = match k {
        Some(k) => format!("/v1/answers/{id}/related?k={k}"),
        None => format!("/v1/answers/{id}/related"),
    };
    let v = get_json(base, &path);
    assert_eq!(v["answer_id"], id, "{v}");
    check_related(id, &v);
    v
}

/// Every related list: the answer itself never appears, nothing twice,
/// links (score null, a note key) before similar answers (a cosine, sorted),
/// and only published, unexpired answers, with the demo record's fields.
fn check_related(id: &str, v: &Value) {
    let items = v["related"].as_array().expect("related is an array");
    let mut seen = HashSet::new();
    let mut in_links = true;
    let mut last = f64::INFINITY;
    for r in items {
        let rid = r["answer_id"].as_str().expect("answer_id");
        assert_ne!(rid, id, "an answer is not related to itself: {v}");
        assert!(seen.insert(rid.to_string()), "{rid} twice: {v}");
        let d = demo_answers().iter().find(|a| a["id"] == rid);
        if let Some(d) = d {
            for k in ["question", "category", "subcategory"] {
                assert_eq!(r[k], d[k], "{k} of {rid}");
            }
        }
        assert!(
            !rid.starts_with("draft.")
                && !rid.starts_with("archived.")
                && !rid.starts_with("promo.expired."),
            "not servable: {rid}"
        );
        match r["source"].as_str() {
            Some("link") => {
                assert!(in_links, "a link after similar answers: {v}");
                assert!(r["score"].is_null(), "{r}");
                assert!(r.as_object().unwrap().contains_key("note"), "{r}");
            }
            Some("similar") => {
                in_links = false;
                let s = r["score"].as_f64().expect("a cosine");
                assert!((-1.0..=1.0).contains(&s), "{r}");
                assert!(s <= last, "similar answers not sorted: {v}");
                last = s;
                assert!(!r.as_object().unwrap().contains_key("note"), "{r}");
            }
            other => panic!("source {other:?}: {r}"),
        }
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["related"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["answer_id"].as_str().unwrap().to_string())
        .collect()
}

fn sources(v: &Value) -> Vec<String> {
    v["related"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap().to_string())
        .collect()
}

fn put_links(base: &str, id: &str, links: Value) -> Value {
    expect(
        put_json(
            base,
            &format!("/v1/answers/{id}/related"),
            &json!({ "links": links }),
        ),
        200,
    )
}

#[test]
fn related_answers_of_a_demo_answer_are_on_topic() {
    let base = shared();
    // Who pays return shipping (seven-day returns) and who pays it for
    // quality problems: the same question for two cases.
    let v = related(base, "returns.shipping-cost-no-reason", None);
    let got = ids(&v);
    assert_eq!(got.len(), 5, "k defaults to 5: {v}");
    assert!(sources(&v).iter().all(|s| s == "similar"), "{v}");
    assert!(
        got[..3].contains(&"returns.shipping-cost-quality".to_string()),
        "{got:?}"
    );
    for r in v["related"].as_array().unwrap() {
        let cat = r["category"].as_str().unwrap();
        assert!(
            ["returns", "refunds", "exchanges"].contains(&cat),
            "off-topic: {r}"
        );
    }
    // English: return shipping cost is near returning an item.
    let en = related(base, "en.returns.shipping-cost", Some(5));
    assert!(ids(&en).contains(&"en.returns.how-to".to_string()), "{en}");
    // Invoices are near invoices.
    let inv = related(base, "invoice.how-to", Some(3));
    for r in inv["related"].as_array().unwrap() {
        assert_eq!(r["category"], "invoice", "{inv}");
    }
    // k bounds the list; the widest list still holds only servable answers.
    assert_eq!(ids(&related(base, "invoice.how-to", Some(1))).len(), 1);
    let wide = related(base, "promotion.coupon-get", Some(50));
    assert_eq!(ids(&wide).len(), 50, "{wide}");
}

#[test]
fn related_requests_are_checked() {
    let base = shared();
    assert_error(
        &get(base, "/v1/answers/no.such.answer/related"),
        404,
        "not_found",
    );
    assert_error(
        &get(base, "/v1/answers/bad%20id/related"),
        400,
        "invalid_id",
    );
    for k in ["0", "51", "-3"] {
        assert_error(
            &get(base, &format!("/v1/answers/invoice.how-to/related?k={k}")),
            422,
            "invalid_k",
        );
    }
    assert_error(
        &get(base, "/v1/answers/invoice.how-to/related?k=abc"),
        400,
        "invalid_query",
    );
    assert_error(
        &get(base, "/v1/answers/invoice.how-to/related?top=3"),
        400,
        "invalid_query",
    );
    assert_error(
        &delete(base, "/v1/answers/invoice.how-to/related"),
        405,
        "method_not_allowed",
    );
    // The contract documents the route and the recommend fields.
    let doc = get_json(base, "/openapi.json");
    let path = &doc["paths"]["/v1/answers/{id}/related"];
    assert!(path["get"].is_object() && path["put"].is_object(), "{path}");
    let props = &doc["components"]["schemas"]["RecommendResponse"]["properties"];
    assert!(
        props["sentiment"].is_object() && props["escalate"].is_object(),
        "{props}"
    );
}

#[test]
fn editor_links_round_trip_come_first_and_bad_links_change_nothing() {
    let dir = demo_data_dir();
    let mut server = Server::start(dir.path(), &[]);
    let base = server.base.clone();
    let base = base.as_str();
    let id = "returns.shipping-cost-no-reason";
    let before = related(base, id, Some(5));
    assert!(ids(&before).contains(&"returns.shipping-cost-quality".to_string()));

    // Two links, one of them also the nearest answer: it appears once, as a link.
    let links = json!([
        {"answer_id": "invoice.returns", "note": "  退货后发票怎么处理  "},
        {"answer_id": "returns.shipping-cost-quality"},
    ]);
    let stored = put_links(base, id, links);
    assert_eq!(
        stored,
        json!({"answer_id": id, "links": [
            {"answer_id": "invoice.returns", "note": "退货后发票怎么处理"},
            {"answer_id": "returns.shipping-cost-quality", "note": null},
        ]})
    );
    let v = related(base, id, Some(5));
    let got = ids(&v);
    assert_eq!(
        &got[..2],
        ["invoice.returns", "returns.shipping-cost-quality"],
        "{v}"
    );
    assert_eq!(got.len(), 5);
    assert_eq!(
        sources(&v),
        ["link", "link", "similar", "similar", "similar"]
    );
    assert_eq!(v["related"][0]["note"], "退货后发票怎么处理");
    assert!(v["related"][1]["note"].is_null());
    assert_eq!(
        ids(&related(base, id, Some(1))),
        ["invoice.returns"],
        "k caps the whole list"
    );

    // Bad requests get stable codes and leave the stored links as they were.
    let unchanged = |server_base: &str| {
        let now = related(server_base, id, Some(2));
        assert_eq!(
            ids(&now),
            ["invoice.returns", "returns.shipping-cost-quality"]
        );
    };
    let path = format!("/v1/answers/{id}/related");
    let put = |body: Value| put_json(base, &path, &body);
    assert_error(
        &put(json!({"links": [{"answer_id": "no.such.answer"}]})),
        422,
        "unknown_related_answer",
    );
    assert_error(
        &put(json!({"links": [{"answer_id": "bad id"}]})),
        422,
        "unknown_related_answer",
    );
    assert_error(
        &put(json!({"links": [{"answer_id": "invoice.how-to"}, {"answer_id": id}]})),
        422,
        "self_link",
    );
    assert_error(
        &put(json!({"links": [{"answer_id": "invoice.how-to"}, {"answer_id": "invoice.how-to"}]})),
        422,
        "duplicate_link",
    );
    let many: Vec<Value> = demo_answers()
        .iter()
        .filter(|a| a["id"] != id)
        .take(21)
        .map(|a| json!({"answer_id": a["id"]}))
        .collect();
    assert_error(&put(json!({ "links": many })), 422, "too_many_links");
    assert_error(
        &put(json!({"links": [{"answer_id": "invoice.how-to", "note": "长".repeat(501)}]})),
        422,
        "note_too_long",
    );
    assert_error(&put(json!({"link": []})), 400, "unknown_field");
    assert_error(&put(json!({})), 400, "missing_field");
    assert_error(
        &put(json!({"links": "invoice.how-to"})),
        400,
        "invalid_type",
    );
    assert_error(
        &put(json!({"links": [{"answer_id": "invoice.how-to", "weight": 2}]})),
        400,
        "unknown_field",
    );
    assert_error(
        &send(
            request(Method::PUT, base, &path, None)
                .header("content-type", "application/json")
                .body("{\"links\": ["),
        ),
        400,
        "invalid_json",
    );
    assert_error(
        &put_json(
            base,
            "/v1/answers/no.such.answer/related",
            &json!({"links": []}),
        ),
        404,
        "not_found",
    );
    assert_error(
        &put_json(base, "/v1/answers/bad%20id/related", &json!({"links": []})),
        400,
        "invalid_id",
    );
    unchanged(base);

    // Exactly 20 links are allowed.
    let twenty: Vec<Value> = demo_answers()
        .iter()
        .filter(|a| a["id"] != id)
        .take(20)
        .map(|a| json!({"answer_id": a["id"]}))
        .collect();
    assert_eq!(
        put_links(base, id, json!(twenty))["links"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
    // A linked answer that is not servable (a draft; an archived one) is
    // kept but left out, and is back once it is published again.
    put_links(
        base,
        id,
        json!([
            {"answer_id": "draft.payment.digital-rmb"},
            {"answer_id": "invoice.returns"},
            {"answer_id": "refunds.shipping-fee"},
        ]),
    );
    let v = related(base, id, Some(3));
    assert_eq!(
        &ids(&v)[..2],
        ["invoice.returns", "refunds.shipping-fee"],
        "{v}"
    );
    assert_eq!(sources(&v), ["link", "link", "similar"]);
    let mut archived = put_body("invoice.returns");
    archived["status"] = json!("archived");
    expect(
        put_json(base, "/v1/answers/invoice.returns", &archived),
        200,
    );
    let v = related(base, id, Some(3));
    assert_eq!(ids(&v)[0], "refunds.shipping-fee", "{v}");
    assert!(!ids(&v).contains(&"invoice.returns".to_string()), "{v}");
    archived["status"] = json!("published");
    expect(
        put_json(base, "/v1/answers/invoice.returns", &archived),
        200,
    );
    let v = related(base, id, Some(3));
    assert_eq!(
        &ids(&v)[..2],
        ["invoice.returns", "refunds.shipping-fee"],
        "{v}"
    );

    // Deleting an answer removes the links to and from it (the other links
    // stay); re-creating it does not bring them back.
    put_links(base, "invoice.returns", json!([{"answer_id": id}]));
    assert_eq!(delete(base, "/v1/answers/invoice.returns").status, 204);
    let after_delete = |v: &Value| {
        assert_eq!(ids(v)[0], "refunds.shipping-fee", "{v}");
        assert_eq!(sources(v), ["link", "similar", "similar"], "{v}");
        assert!(!ids(v).contains(&"invoice.returns".to_string()), "{v}");
    };
    after_delete(&related(base, id, Some(3)));
    expect(
        put_json(
            base,
            "/v1/answers/invoice.returns",
            &put_body("invoice.returns"),
        ),
        201,
    );
    let v = related(base, id, Some(3));
    assert!(
        v["related"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["answer_id"] != "invoice.returns" || r["source"] == "similar"),
        "{v}"
    );
    assert_eq!(&ids(&v)[..1], ["refunds.shipping-fee"], "{v}");
    assert_eq!(sources(&v)[..2], ["link", "similar"], "{v}");
    let back = related(base, "invoice.returns", Some(3));
    assert!(sources(&back).iter().all(|s| s == "similar"), "{back}");

    // Links survive a restart; readers read them, only editors change them.
    put_links(
        base,
        id,
        json!([{"answer_id": "refunds.shipping-fee", "note": "运费退不退"}]),
    );
    assert!(server.stop(), "graceful stop");
    let keys = "reader:readerkey1,editor:editorkey1";
    let server = Server::start(dir.path(), &[("KEFU_API_KEYS", keys)]);
    let base = server.base.as_str();
    assert_error(&get(base, &path), 401, "unauthorized");
    let v = expect(
        send(request(
            Method::GET,
            base,
            &format!("{path}?k=2"),
            Some("readerkey1"),
        )),
        200,
    );
    check_related(id, &v);
    assert_eq!(ids(&v)[0], "refunds.shipping-fee", "{v}");
    assert_eq!(v["related"][0]["note"], "运费退不退");
    assert_eq!(sources(&v), ["link", "similar"]);
    let body = json!({"links": []});
    assert_error(
        &send(request(Method::PUT, base, &path, Some("readerkey1")).json(&body)),
        403,
        "forbidden",
    );
    let cleared = expect(
        send(request(Method::PUT, base, &path, Some("editorkey1")).json(&body)),
        200,
    );
    assert_eq!(cleared, json!({"answer_id": id, "links": []}));
    let v = expect(
        send(request(Method::GET, base, &path, Some("readerkey1"))),
        200,
    );
    assert!(sources(&v).iter().all(|s| s == "similar"), "{v}");
}

/// The sentiment rules on the team's labelled set (tests/fixtures/sentiment.jsonl:
/// 221 messages written and labelled apart from the rules, which were never
/// tuned on it). README, "Sentiment and escalation", 2026-11-24: escalation
/// precision 0.913, recall 0.824; label accuracy 0.846. Fails 0.05 below
/// those.
#[test]
fn sentiment_measures_the_labelled_set() {
    use kefu::assist::sentiment_eval::{evaluate, parse_examples};
    let path = crate::common::repo_root().join("tests/fixtures/sentiment.jsonl");
    let examples = parse_examples(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(examples.len() >= 150);
    let r = evaluate(&examples);
    let (p, rec) = (r.escalate.precision.unwrap(), r.escalate.recall.unwrap());
    assert!(p >= 0.863, "escalation precision {p}");
    assert!(rec >= 0.774, "escalation recall {rec}");
    assert!(
        r.labels.accuracy >= 0.796,
        "label accuracy {}",
        r.labels.accuracy
    );
}
