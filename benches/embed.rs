//! Embedding throughput with the real multilingual-e5-small model on both
//! encoders side by side (int8, the default, and candle's f32 BertModel):
//! one short query, 32 short queries, 32 FAQ-length answers.
//! Run: `cargo bench --bench embed` (needs `scripts/fetch-model.sh` first);
//! `KEFU_BENCH_BACKENDS=int8` benches one encoder only.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kefu::embedding::{resolve_model, Backend, CandleBert, EmbedOptions, Embedder, TextKind};

const QUERIES: [&str; 8] = [
    "我的订单什么时候发货？",
    "退货运费谁出",
    "how do I get a refund",
    "能开增值税专用发票吗",
    "快递到哪了，三天了还没动",
    "can I change my delivery address",
    "优惠券为什么用不了",
    "这个手机支持5G吗",
];

const ANSWER: &str = "您好，本店商品支持七天无理由退货。请在签收后七天内，在“我的订单”中点击\
“申请售后”，选择退货原因并上传商品照片，审核通过后按页面提示寄回商品。商品需保持完好、配件齐全、\
不影响二次销售。因质量问题退货的运费由我们承担，非质量问题的退货运费由买家承担。我们收到退货并\
验收后，退款会在1到3个工作日内原路退回。If you ordered from outside mainland China, please \
contact customer service before sending the parcel back.";

fn load(backend: Backend) -> CandleBert {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = resolve_model("multilingual-e5-small", &root.join("models"))
        .expect("run scripts/fetch-model.sh first");
    let options = EmbedOptions {
        backend,
        ..EmbedOptions::default()
    };
    CandleBert::load(&files, options).expect("model loads")
}

fn bench(c: &mut Criterion) {
    let backends = std::env::var("KEFU_BENCH_BACKENDS").unwrap_or_else(|_| "int8,f32".into());
    for name in backends.split(',') {
        let backend: Backend = name.parse().expect("KEFU_BENCH_BACKENDS: int8 and/or f32");
        bench_backend(c, backend);
    }
}

fn bench_backend(c: &mut Criterion, backend: Backend) {
    let model = load(backend);
    let queries: Vec<&str> = QUERIES.iter().cycle().take(32).copied().collect();
    let answers: Vec<String> = (0..32).map(|i| format!("{ANSWER} ({i})")).collect();
    let answers: Vec<&str> = answers.iter().map(String::as_str).collect();

    let mut g = c.benchmark_group(format!("embed/{backend}"));
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_short_query", |b| {
        b.iter(|| model.embed(&[QUERIES[0]], TextKind::Query).unwrap())
    });
    g.throughput(Throughput::Elements(32));
    g.bench_function("32_short_queries", |b| {
        b.iter(|| model.embed(&queries, TextKind::Query).unwrap())
    });
    g.sample_size(10);
    g.bench_function("32_faq_answers", |b| {
        b.iter(|| model.embed(&answers, TextKind::Passage).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
