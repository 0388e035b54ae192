//! kill -9 during an import or a reindex loses no committed answer, and the
//! next start serves a consistent index.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::api::{expect, get_json, post_json, wait_job};
use crate::common::{kefu_bin, model_dir};
use crate::server::{client, demo_data_dir, kefu, Server};
use serde_json::json;

const IMPORT_BATCH: usize = 500;

/// `n` answers with unique texts (so each needs embedding).
fn unique_answers(n: usize, tag: &str) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("bulk.{tag}.{i:05}"),
                "question": format!("第{i}号商品（批次{tag}）的保修期是多久？"),
                "variants": [format!("编号{i}的{tag}货品坏了能修吗")],
                "answer": format!("编号{i}的商品（{tag}）享受{}个月免费保修，凭订单号联系客服即可。", i % 24 + 1),
                "category": "warranty",
                "locale": "zh-CN",
            })
        })
        .collect()
}

fn count_answers(data_dir: &std::path::Path) -> usize {
    let out = kefu(&["export", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).expect("every exported answer is whole");
        assert!(v["answer"].as_str().is_some_and(|a| !a.is_empty()));
    }
    text.lines().count()
}

#[test]
fn kill_during_import_keeps_whole_batches_and_restarts_consistent() {
    let data = demo_data_dir();
    let before = count_answers(data.path());
    let file = data.path().join("bulk.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    let bulk = unique_answers(2_400, "imp");
    for a in &bulk {
        writeln!(f, "{a}").unwrap();
    }
    drop(f);

    let mut child = Command::new(kefu_bin())
        .args([
            "import",
            file.to_str().unwrap(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ])
        .env("KEFU_MODEL", model_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while it is embedding the new texts (storing takes well under
    // a second; embedding ~7,000 new texts takes minutes).
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        child.try_wait().unwrap().is_none(),
        "import finished before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let added = count_answers(data.path()) - before;
    assert!(
        added.is_multiple_of(IMPORT_BATCH) || added == bulk.len(),
        "{added} answers stored: not whole batches"
    );

    // The next start serves the index committed before the kill; the new
    // answers are there, pending a reindex, and recommend works.
    let server = Server::start(data.path(), &[]);
    let c = client();
    let index: serde_json::Value = c
        .get(server.url("/v1/index"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(index["answers"].as_u64().unwrap() as usize, before + added);
    assert_eq!(index["pending_reindex"].as_u64().unwrap() as usize, added);
    let r: serde_json::Value = c
        .post(server.url("/v1/recommend"))
        .json(&serde_json::json!({"question": "退货运费谁出"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(!r["results"].as_array().unwrap().is_empty());
}

#[test]
fn kill_during_reindex_keeps_the_previous_index() {
    let data = demo_data_dir();
    let mut server = Server::start(data.path(), &[]);
    let c = client();
    let bulk = unique_answers(600, "rx");
    let r = c
        .post(server.url("/v1/answers"))
        .json(&serde_json::json!({"answers": bulk}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let index: serde_json::Value = c
        .get(server.url("/v1/index"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let version = index["index_version"].as_u64().unwrap();
    let answers = index["answers"].as_u64().unwrap();

    let job: serde_json::Value = c
        .post(server.url("/v1/reindex"))
        .json(&serde_json::json!({"mode": "full"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let job_url = server.url(&format!("/v1/reindex/{}", job["job_id"].as_str().unwrap()));
    let started = Instant::now();
    loop {
        let j: serde_json::Value = c.get(&job_url).send().unwrap().json().unwrap();
        if j["status"] == "running" && j["done"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "reindex never ran: {j}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill9();

    let server = Server::start(data.path(), &[]);
    let index: serde_json::Value = c
        .get(server.url("/v1/index"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(index["index_version"].as_u64().unwrap(), version, "{index}");
    assert_eq!(index["answers"].as_u64().unwrap(), answers);
    let r: serde_json::Value = c
        .post(server.url("/v1/recommend"))
        .json(&serde_json::json!({"question": "发票怎么开", "top_k": 3}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["index_version"].as_u64().unwrap(), version);
    assert!(!r["results"].as_array().unwrap().is_empty());
    // No partial version folder survives the restart.
    let leftovers: Vec<_> = std::fs::read_dir(data.path().join("vectors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec![format!("v{version}")]);
}

#[test]
fn a_second_writer_is_refused_while_the_server_runs() {
    let data = demo_data_dir();
    let dir = data.path().to_str().unwrap();
    let mut server = Server::start(data.path(), &[]);
    // `kefu import` beside a running server would change the database
    // behind the server's catalog: it is refused, and nothing is stored.
    let file = data.path().join("one.jsonl");
    std::fs::write(&file, format!("{}\n", unique_answers(1, "lock")[0])).unwrap();
    let out = kefu(&["import", file.to_str().unwrap(), "--data-dir", dir]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another kefu process"), "{err}");
    // Reading is fine while it runs.
    let before = count_answers(data.path());
    assert!(server.stop(), "graceful stop");
    // Once the server is gone the import goes through.
    let out = kefu(&[
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        dir,
        "--no-index",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count_answers(data.path()), before + 1);
}

/// The lexical index is rebuilt by a reindex and reloaded from disk on
/// restart, like the vectors: a made-up model number only BM25 can tie to
/// its answer is matched before and after a restart.
#[test]
fn lexical_index_follows_reindex_and_survives_restart() {
    let data = demo_data_dir();
    let mut server = Server::start(data.path(), &[]);
    let ask = |s: &Server| {
        expect(
            post_json(
                &s.base,
                "/v1/recommend",
                &json!({"question": "QX7Z3 保修多久", "top_k": 3}),
            ),
            200,
        )
    };
    let before = get_json(&server.base, "/v1/index");
    expect(
        post_json(
            &server.base,
            "/v1/answers",
            &json!({
                "id": "warranty.qx7z3",
                "question": "QX7Z3 型号扫地机的保修期是多久？",
                "answer": "QX7Z3 扫地机整机保修两年，电池保修一年。",
                "category": "售后服务",
                "locale": "zh-CN",
            }),
        ),
        200,
    );
    let job = expect(
        post_json(&server.base, "/v1/reindex", &json!({"mode": "incremental"})),
        202,
    );
    wait_job(&server.base, job["job_id"].as_str().unwrap());
    let after = get_json(&server.base, "/v1/index");
    assert!(
        after["lexical_terms"].as_u64().unwrap() > before["lexical_terms"].as_u64().unwrap(),
        "the new answer's words are indexed: {before} -> {after}"
    );
    let hit = ask(&server);
    assert_eq!(hit["results"][0]["answer_id"], "warranty.qx7z3", "{hit}");
    let lexical = hit["results"][0]["signals"]["lexical"].as_f64().unwrap();
    assert!(lexical > 0.3, "{hit}");
    let version = after["index_version"].as_u64().unwrap();
    assert!(data
        .path()
        .join(format!("vectors/v{version}/lexical.bin"))
        .is_file());

    assert!(server.stop());
    let server = Server::start(data.path(), &[]);
    let reloaded = get_json(&server.base, "/v1/index");
    assert_eq!(reloaded["lexical_terms"], after["lexical_terms"]);
    assert_eq!(reloaded["index_version"], after["index_version"]);
    let again = ask(&server);
    assert_eq!(again["results"][0]["answer_id"], "warranty.qx7z3");
    assert_eq!(again["results"][0]["signals"], hit["results"][0]["signals"]);
}
