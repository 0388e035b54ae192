//! Missing or corrupt model folders give clear errors, never a panic.

use std::path::Path;

use kefu::embedding::{resolve_model, CandleBert, EmbedError, EmbedOptions};

use crate::common::model_dir;

/// A folder with the real model's files linked in, ready to be spoiled.
fn model_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "kefu.json",
    ] {
        std::os::unix::fs::symlink(model_dir().join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

fn replace(dir: &Path, file: &str, contents: &[u8]) {
    std::fs::remove_file(dir.join(file)).unwrap();
    std::fs::write(dir.join(file), contents).unwrap();
}

fn load_error(dir: &Path) -> EmbedError {
    let files = resolve_model(dir.to_str().unwrap(), Path::new("models")).unwrap();
    match CandleBert::load(&files, EmbedOptions::default()) {
        Ok(_) => panic!("a spoiled model at {} loaded", dir.display()),
        Err(e) => e,
    }
}

fn assert_invalid(err: EmbedError, needle: &str) {
    let msg = err.to_string();
    assert!(matches!(err, EmbedError::InvalidModel { .. }), "{msg}");
    assert!(msg.contains(needle), "'{msg}' should mention '{needle}'");
}

#[test]
fn missing_files_are_named() {
    let dir = model_copy();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = resolve_model(dir.path().to_str().unwrap(), Path::new("models")).unwrap_err();
    assert_invalid(err, "missing tokenizer.json");
}

#[test]
fn truncated_weights() {
    let dir = model_copy();
    let mut head = vec![0u8; 4 << 20];
    use std::io::Read;
    std::fs::File::open(model_dir().join("model.safetensors"))
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    replace(dir.path(), "model.safetensors", &head);
    assert_invalid(load_error(dir.path()), "weights do not load");
    replace(dir.path(), "model.safetensors", b"");
    assert_invalid(load_error(dir.path()), "truncated");
}

#[test]
fn tokenizer_that_does_not_parse() {
    let dir = model_copy();
    replace(
        dir.path(),
        "tokenizer.json",
        b"{\"version\": \"1.0\", \"model\": ",
    );
    assert_invalid(load_error(dir.path()), "tokenizer.json does not load");
}

#[test]
fn config_of_another_architecture() {
    let dir = model_copy();
    let config = std::fs::read_to_string(model_dir().join("config.json")).unwrap();
    let other = config.replace("\"bert\"", "\"xlm-roberta\"");
    assert_ne!(config, other);
    replace(dir.path(), "config.json", other.as_bytes());
    assert_invalid(load_error(dir.path()), "'xlm-roberta'");
    replace(dir.path(), "config.json", b"not json");
    assert_invalid(load_error(dir.path()), "config.json does not parse");
}

#[test]
fn config_that_does_not_fit_the_weights() {
    let dir = model_copy();
    let config = std::fs::read_to_string(model_dir().join("config.json")).unwrap();
    let other = config.replace("\"intermediate_size\": 1536", "\"intermediate_size\": 1024");
    assert_ne!(config, other);
    replace(dir.path(), "config.json", other.as_bytes());
    assert_invalid(load_error(dir.path()), "weights do not fit config.json");
}

#[test]
fn corrupt_kefu_json() {
    let dir = model_copy();
    replace(dir.path(), "kefu.json", b"[1, 2");
    let err = resolve_model(dir.path().to_str().unwrap(), Path::new("models")).unwrap_err();
    assert_invalid(err, "kefu.json does not parse");
}
