//! The recommend path on the built-in demo library, in process, with the real
//! model: the search alone (an embedded question: HNSW, BM25, exact
//! re-scoring, fusion, confidence) in dense-only and hybrid mode side by
//! side, and the whole call (embedding included).
//! Run: `cargo bench --bench recommend` (needs `scripts/fetch-model.sh` first;
//! the setup imports and embeds the demo library, about 30 s).

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use kefu::embedding::{resolve_model, CandleBert, EmbedOptions, Embedder, TextKind};
use kefu::recommend::rank::{Fusion, Mode};
use kefu::recommend::{Engine, Query, ReindexMode, Settings};
use kefu::store::AnswerDraft;

const QUESTIONS: [&str; 8] = [
    "亲，你们家耳机是真货吗",
    "退货的运费谁出啊",
    "how do I get a refund",
    "能开增值税专用发票吗",
    "快递到哪了，三天了还没动",
    "can I change my delivery address",
    "优惠券为什么用不了",
    "我的order还没发货",
];

fn engine(dir: &Path, model: Arc<CandleBert>, mode: Mode) -> Arc<Engine> {
    let settings = Settings {
        fusion: Fusion {
            mode,
            ..Fusion::default()
        },
        ..Settings::default()
    };
    Engine::open(dir, model, settings).expect("engine opens").0
}

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = resolve_model("multilingual-e5-small", &root.join("models"))
        .expect("run scripts/fetch-model.sh first");
    let model = Arc::new(CandleBert::load(&files, EmbedOptions::default()).expect("model loads"));
    let dir = tempfile::tempdir().unwrap();
    {
        let e = engine(dir.path(), model.clone(), Mode::Hybrid);
        let inputs: Vec<_> = kefu::demo::ANSWERS
            .lines()
            .map(|l| {
                let d: AnswerDraft = serde_json::from_str(l).unwrap();
                d.validate(None).unwrap()
            })
            .collect();
        e.upsert(&inputs).unwrap();
        e.reindex_now(ReindexMode::Incremental, &|_, _| {}).unwrap();
    }
    let vectors: Vec<Vec<f32>> = model
        .embed(&QUESTIONS, TextKind::Query)
        .unwrap()
        .into_iter()
        .map(|e| e.vector)
        .collect();

    let mut g = c.benchmark_group("recommend");
    for (name, mode) in [("dense", Mode::Dense), ("hybrid", Mode::Hybrid)] {
        let e = engine(dir.path(), model.clone(), mode);
        let mut i = 0;
        g.bench_function(format!("search_only/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % QUESTIONS.len();
                e.recommend_vector(&vectors[i], &Query::new(QUESTIONS[i], 5))
            })
        });
        drop(e);
    }
    let e = engine(dir.path(), model.clone(), Mode::Hybrid);
    let mut i = 0;
    g.bench_function("end_to_end/hybrid", |b| {
        b.iter(|| {
            i = (i + 1) % QUESTIONS.len();
            e.recommend(&Query::new(QUESTIONS[i], 5)).unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
