//! The service while its Qdrant node goes away and comes back: the test starts a node of its own
//! from QDRANT_BIN, kills it and restarts it. Ignored by default (no Qdrant binary is in any
//! registry): `scripts/qdrant-tests.sh` runs it with `--ignored`.

use super::demo;
use super::service::{http, start, try_http};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The flags that put a command on `collection` at `url`.
pub fn on_qdrant(url: &str, collection: &str) -> Vec<String> {
    [
        "--store",
        "qdrant",
        "--qdrant-url",
        url,
        "--qdrant-collection",
        collection,
    ]
    .map(String::from)
    .to_vec()
}

/// Polls `check` every 200 ms until it holds; fails after `limit`, saying what was awaited.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Qdrant server of the test's own, plain (not distributed), in a temp dir on free ports.
struct Node {
    bin: PathBuf,
    dir: tempfile::TempDir,
    http: u16,
    grpc: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Node {
    fn start(bin: &str) -> Self {
        let mut node = Node {
            bin: PathBuf::from(bin),
            dir: tempfile::tempdir().unwrap(),
            http: free_port(),
            grpc: free_port(),
            child: None,
        };
        node.restart();
        node
    }

    /// Starts the server on its ports and storage (again, after `stop`) and waits until ready.
    fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("qdrant.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("--disable-telemetry")
            .current_dir(self.dir.path()) // it writes a marker file there
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", self.http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", "storage")
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", "snapshots")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let http = self.http_addr();
        wait_until("qdrant starts", Duration::from_secs(60), || {
            matches!(try_http(&http, "GET", "/readyz", None), Ok((200, _)))
        });
    }

    /// SIGKILL, as a crashed or unplugged node.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A data directory with the demo's classifier and nothing else (the cases are in Qdrant).
fn data_dir_with_a_classifier() -> tempfile::TempDir {
    let demo = demo();
    let _guard = demo.lock();
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let from: &Path = &demo.dir.path().join("classifier").join(name);
        std::fs::create_dir_all(dir.path().join("classifier")).unwrap();
        std::fs::copy(from, dir.path().join("classifier").join(name)).unwrap();
    };
    let current = std::fs::read_to_string(demo.dir.path().join("classifier/current")).unwrap();
    copy("current");
    copy(&format!("{}.bin", current.trim()));
    dir
}

/// The service keeps running while its Qdrant node is down: /health and store-backed routes
/// answer 503, and both recover by themselves once the node is back.
#[test]
#[ignore = "needs QDRANT_BIN, a qdrant binary (scripts/qdrant-tests.sh runs it)"]
fn health_on_a_qdrant_server_follows_a_node_that_stops_and_comes_back() {
    let bin = std::env::var("QDRANT_BIN")
        .expect("QDRANT_BIN is not set: this test starts a Qdrant node of its own from it");
    let mut node = Node::start(&bin);
    let dir = data_dir_with_a_classifier();
    let mut flags = vec!["--no-draft".to_string()];
    flags.extend(on_qdrant(&node.url(), "health"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = start(dir.path(), &flags);
    let search = json!({"text": "路灯坏了", "k": 3});
    assert_eq!(
        http(&server.addr, "POST", "/v1/search", Some(&search)).0,
        200
    );

    node.stop();
    wait_until("/health turns 503", Duration::from_secs(60), || {
        http(&server.addr, "GET", "/health", None).0 == 503
    });
    let (_, body) = http(&server.addr, "GET", "/health", None);
    assert!(body.contains("the case store does not answer"), "{body}");
    let (status, body) = http(&server.addr, "POST", "/v1/search", Some(&search));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");

    node.restart();
    wait_until("/health is 200 again", Duration::from_secs(60), || {
        http(&server.addr, "GET", "/health", None).0 == 200
    });
    assert_eq!(
        http(&server.addr, "POST", "/v1/search", Some(&search)).0,
        200
    );
}
