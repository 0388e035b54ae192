//! The `kefu` binary run for real: embed from arguments and standard input,
//! model info, and its errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::{kefu_bin, model_dir, repo_root};

fn kefu(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(kefu_bin())
        .args(args)
        .current_dir(repo_root())
        .env("KEFU_MODEL", model_dir())
        .env_remove("HF_ENDPOINT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kefu starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn embed_arguments_prints_one_json_line_each() {
    let out = kefu(
        &["embed", "--kind", "query", "怎么退货", "where is my parcel"],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["text"], "怎么退货");
    assert_eq!(rows[0]["embedding"].as_array().unwrap().len(), 384);
    let ids = rows[1]["token_ids"].as_array().unwrap();
    assert_eq!(ids.first().unwrap(), 0);
    assert_eq!(ids.last().unwrap(), 2);
}

#[test]
fn embed_reads_lines_from_stdin() {
    let out = kefu(
        &["embed", "--kind", "passage"],
        "第一行\r\nsecond line\n第三行 third\n".as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json_lines(&out);
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["第一行", "second line", "第三行 third"]);
}

#[test]
fn invalid_utf8_on_stdin_is_a_clear_error() {
    let out = kefu(&["embed", "--kind", "query"], b"fine\nbad \xff\xfe bytes\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2 of standard input is not valid UTF-8"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn empty_and_whitespace_texts_are_errors() {
    for input in [&b"ok\n\n"[..], &b"ok\n \t \n"[..]] {
        let out = kefu(&["embed", "--kind", "query"], input);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("text 2 is empty or only whitespace"), "{err}");
    }
}

#[test]
fn model_info_reports_the_model() {
    let out = kefu(&["model", "info"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["model_id"], "intfloat/multilingual-e5-small");
    assert_eq!(info["dimension"], 384);
    assert_eq!(info["max_positions"], 512);
    assert_eq!(info["query_prefix"], "query: ");
    assert_eq!(info["passage_prefix"], "passage: ");
    let params = info["parameters"].as_u64().unwrap();
    assert!((117_000_000..119_000_000).contains(&params), "{params}");
    assert!(info["load_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_missing_model_names_every_place_and_the_fetch_command() {
    let models = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("HF_HUB_OFFLINE", "1"),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
    ] {
        let out = Command::new(kefu_bin())
            .args(["model", "info", "--model", "multilingual-e5-small"])
            .arg("--models-dir")
            .arg(models.path())
            .env_remove("KEFU_MODEL")
            .env("HF_HOME", home.path())
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("model 'multilingual-e5-small' was not found"),
            "{err}"
        );
        assert!(
            err.contains(
                &models
                    .path()
                    .join("multilingual-e5-small")
                    .display()
                    .to_string()
            ),
            "{err}"
        );
        assert!(err.contains("Hugging Face hub"), "{err}");
        assert!(
            err.contains("scripts/fetch-model.sh multilingual-e5-small"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Runs kefu, asserts it succeeded, and returns its standard output.
fn kefu_ok(args: &[&str]) -> String {
    let out = kefu(args, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes `files` into a fresh folder and returns it.
fn eval_files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn eval_err(files: &[(&str, &str)], extra: &[&str]) -> String {
    let dir = eval_files(files);
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (corpus, queries) = (p("corpus.jsonl"), p("queries.jsonl"));
    let mut args = vec!["eval", "--corpus", &corpus, "--queries", &queries];
    let oos = p("oos.jsonl");
    if extra.contains(&"--oos") {
        args.extend(["--oos", &oos]);
    }
    let out = kefu(&args, b"");
    assert!(!out.status.success(), "bad input accepted: {files:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const CORPUS: &str = r#"{"id": "ship-1", "question": "多久发货", "answer": "", "group": "ship"}
{"id": "ship-2", "question": "什么时候发货", "answer": "", "group": "ship"}
{"id": "ret-1", "question": "怎么退货", "answer": "", "group": "ret"}
{"id": "pay-1", "question": "", "answer": "We accept Visa, Mastercard, Alipay and WeChat Pay.", "group": "pay"}
"#;

#[test]
fn eval_refuses_bad_input_files_with_clear_errors() {
    let q = r#"{"qid": "q1", "query": "啥时候发货", "relevant_ids": ["ship-1"]}"#;
    let cases: [(&str, &str, &str, &str); 6] = [
        ("", q, "", "the corpus has no entries"),
        (
            r#"{"id": "a", "answer": ""}"#,
            q,
            "",
            "has neither a question nor an answer",
        ),
        (r#"{"question": "x"}"#, q, "", "missing field `id`"),
        (
            CORPUS,
            r#"{"qid": "q1", "query": "啥时候发货", "relevant_ids": ["nope"]}"#,
            "",
            "relevant id 'nope' is not in the corpus",
        ),
        (
            CORPUS,
            r#"{"qid": "q1", "relevant_ids": ["ship-1"]}"#,
            "",
            "missing field `query`",
        ),
        (
            CORPUS,
            q,
            r#"{"qid": "o1", "query": "天气", "relevant_ids": ["ship-1"]}"#,
            "an out-of-scope query must have no relevant_ids",
        ),
    ];
    for (corpus, queries, oos, expected) in cases {
        let extra: &[&str] = if oos.is_empty() { &[] } else { &["--oos"] };
        let err = eval_err(
            &[
                ("corpus.jsonl", corpus),
                ("queries.jsonl", queries),
                ("oos.jsonl", oos),
            ],
            extra,
        );
        assert!(err.contains(expected), "expected '{expected}' in: {err}");
        assert!(
            err.contains("line") || expected.contains("no entries"),
            "{err}"
        );
    }
    // A missing file names the path.
    let out = kefu(
        &[
            "eval",
            "--corpus",
            "/nonexistent/c.jsonl",
            "--queries",
            "/x",
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/c.jsonl"));
}

#[test]
fn eval_measures_a_small_set_through_the_service_pipeline() {
    let queries = r#"{"qid": "q1", "query": "啥时候能发货呀", "relevant_ids": ["ship-1", "ship-2"]}
{"qid": "q2", "query": "我想退货怎么弄", "relevant_ids": ["ret-1"]}
{"qid": "q3", "query": "can I pay with alipay", "relevant_ids": ["pay-1"]}
"#;
    let oos = r#"{"qid": "o1", "query": "明天北京天气怎么样", "relevant_ids": []}
"#;
    let dir = eval_files(&[("c.jsonl", CORPUS), ("q.jsonl", queries), ("o.jsonl", oos)]);
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (c, q, o) = (p("c.jsonl"), p("q.jsonl"), p("o.jsonl"));
    let out = kefu_ok(&[
        "eval",
        "--corpus",
        &c,
        "--queries",
        &q,
        "--oos",
        &o,
        "--json",
        "--sweep",
        "--per-entry",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["answers"], 4);
    assert_eq!(r["ranking"]["queries"], 3);
    // Three clear paraphrases of a four-answer library: all found first.
    assert_eq!(r["ranking"]["r1"], 1.0, "{r}");
    assert_eq!(r["handoff"]["oos_queries"], 1);
    assert_eq!(r["sweep"].as_array().unwrap().len(), 28);
    // By default the two shipping questions load as one answer.
    let text = kefu_ok(&[
        "eval",
        "--corpus",
        &c,
        "--queries",
        &q,
        "--retrieval",
        "lexical",
    ]);
    assert!(
        text.contains(
            "4 entries -> 3 answers (entries sharing a group loaded as variants of one answer)"
        ),
        "{text}"
    );
    assert!(text.contains("mode Lexical"), "{text}");
}

#[test]
fn model_bench_refuses_bad_texts_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    std::fs::write(path("not-json.json"), "queries: none").unwrap();
    std::fs::write(
        path("few.json"),
        r#"{"queries": ["退货运费谁出", "where is my parcel"], "answers": ["七天无理由退货。"]}"#,
    )
    .unwrap();
    std::fs::write(
        path("blank.json"),
        r#"{"queries": ["退货运费谁出", "  "], "answers": ["七天无理由退货。", "Free returns."]}"#,
    )
    .unwrap();
    let cases = [
        ("missing.json", "reading the texts file"),
        (
            "not-json.json",
            r#"is not {"queries": [...], "answers": [...]}"#,
        ),
        (
            "few.json",
            "answers has 1 texts, fewer than the batch size 2",
        ),
        ("blank.json", "query 2 is empty or only whitespace"),
    ];
    for (name, expected) in cases {
        let texts = path(name);
        let out = kefu(&["model", "bench", "--texts", &texts, "--batch", "2"], b"");
        assert!(!out.status.success(), "{name} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    for flag in ["--repetitions", "--single-repetitions", "--batch"] {
        let out = kefu(
            &["model", "bench", "--texts", &path("few.json"), flag, "0"],
            b"",
        );
        assert!(!out.status.success(), "{flag} 0 accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--repetitions, --single-repetitions and --batch must be at least 1"),
            "{flag}: {err}"
        );
    }
}

/// A small labelled set in the format of `kefu eval sentiment`, with one
/// deliberately wrong label ("wrong-1": a thank-you labelled an angry threat).
fn sentiment_set() -> String {
    let rows = [
        ("z1", "怎么投诉？", "zh", "neutral", false),
        ("z2", "我要去12315投诉你们！", "zh", "negative", true),
        ("z3", "谢谢，问题解决了", "zh", "positive", false),
        ("e1", "Thank you so much!", "en", "positive", false),
        ("e2", "I will sue you", "en", "negative", true),
        ("e3", "where is my refund", "en", "neutral", false),
        (
            "wrong-1",
            "Thanks a lot, great service",
            "en",
            "negative",
            true,
        ),
        ("m1", "refund还没到账，我要投诉", "mixed", "negative", true),
    ];
    rows.iter()
        .map(|(id, text, lang, label, esc)| {
            serde_json::json!({"id": id, "text": text, "lang": lang, "label": label, "escalate": esc})
                .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn eval_sentiment_measures_a_labelled_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.jsonl");
    std::fs::write(&path, sentiment_set()).unwrap();
    let out = kefu(
        &[
            "eval",
            "sentiment",
            "--input",
            path.to_str().unwrap(),
            "--json",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(r["messages"], 8);
    // Escalate: z2, e2, m1 found; wrong-1 "missed"; four true negatives.
    let e = &r["escalate"];
    assert_eq!(
        (&e["tp"], &e["fp"], &e["fn"], &e["tn"]),
        (&3.into(), &0.into(), &1.into(), &4.into())
    );
    assert_eq!(e["precision"], 1.0);
    assert_eq!(e["recall"], 0.75);
    assert!((e["f1"].as_f64().unwrap() - 6.0 / 7.0).abs() < 1e-9, "{e}");
    let l = &r["labels"];
    assert_eq!(l["accuracy"], 0.875);
    // Rows: labelled negative, neutral, positive; columns: predicted.
    assert_eq!(
        l["confusion"],
        serde_json::json!([[3, 0, 1], [0, 2, 0], [0, 0, 2]])
    );
    let neg = &l["per_label"][0];
    assert_eq!(
        (&neg["label"], &neg["support"], &neg["predicted"]),
        (&"negative".into(), &4.into(), &3.into())
    );
    assert_eq!(
        (&neg["precision"], &neg["recall"]),
        (&1.0.into(), &0.75.into())
    );
    let langs: Vec<(&str, u64)> = r["by_language"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["lang"].as_str().unwrap(), g["messages"].as_u64().unwrap()))
        .collect();
    assert_eq!(langs, [("en", 4), ("mixed", 1), ("zh", 3)]);
    let missed = r["misclassified"].as_array().unwrap();
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0]["id"], "wrong-1");
    assert_eq!(missed[0]["predicted_label"], "positive");
    let cues = missed[0]["cues"].as_array().unwrap();
    assert!(
        cues.iter().any(|c| c.as_str().unwrap().starts_with("pos:")),
        "{cues:?}"
    );
    assert!(r["micros_per_message"].as_f64().unwrap() > 0.0);

    // The text report, from standard input.
    let out = kefu(
        &["eval", "sentiment", "--input", "-"],
        sentiment_set().as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "sentiment: 8 messages (en 4, mixed 1, zh 3)",
        "precision 1.000  recall 0.750  F1 0.857",
        "accuracy 0.875",
        "confusion (rows: labelled, columns: predicted)",
        "by language",
        "misclassified: 1",
        "wrong-1 [en] negative -> positive; escalate true -> false",
        "cues: pos:",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn eval_sentiment_rejects_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ok = r#"{"id": "a", "text": "谢谢", "lang": "zh", "label": "positive", "escalate": false}"#;
    let cases = [
        (format!("{ok}\n{{\"id\": \"b\", \"text\": \"x\", \"label\": \"angry\", \"escalate\": true}}\n"), "line 2: label must be negative, neutral or positive"),
        (format!("{ok}\nnot json\n"), "line 2"),
        (format!("{ok}\n{{\"id\": \"c\", \"text\": \"x\", \"label\": \"neutral\", \"escalate\": \"yes\"}}\n"), "line 2"),
        ("".to_string(), "no labelled messages"),
    ];
    for (i, (content, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&path, content).unwrap();
        let out = kefu(
            &["eval", "sentiment", "--input", path.to_str().unwrap()],
            b"",
        );
        assert!(!out.status.success(), "case {i} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "case {i}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = kefu(
        &["eval", "sentiment", "--input", "/nonexistent/set.jsonl"],
        b"",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/set.jsonl"), "{err}");
    let out = kefu(&["eval", "sentiment", "--input", "-"], b"\xff\xfe\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid UTF-8"));
}
