//! The call-taker page in a real headless Chromium, driven over WebDriver (Debian's
//! `chromium-driver`): type a complaint, see a category and a streamed draft appear, accept it,
//! and find the feedback stored as a case. Saves a screenshot of the filled page.

use super::demo;
use super::service::{http, start, try_http};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// W3C WebDriver's key for element references in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
    "--lang=zh-CN",
];

struct Driver {
    process: Child,
    addr: String,
    session: String,
    /// Chromium's profile, removed with the driver (chromedriver would leave one in /tmp).
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = try_http(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Driver {
    /// A browser whose navigation waits for the page's load event.
    fn start() -> Driver {
        Driver::start_with("normal")
    }

    /// `page_load` is WebDriver's pageLoadStrategy: "none" returns from navigation at once, for a page
    /// that opens a dialog while it loads (a dialog can hold up the load event, and the navigation with it).
    fn start_with(page_load: &str) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian: apt-get install chromium chromium-driver)");
        // Built before the session exists so that a failure below still stops chromedriver.
        let mut driver = Driver {
            process,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
            _profile: tempfile::tempdir().unwrap(),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(&driver.addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            driver._profile.path().display()
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": page_load,
            "goog:chromeOptions": {"binary": chromium(), "args": args},
        }}});
        let (status, body) = http(&driver.addr, "POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "new session: {body}");
        driver.session = parse(&body)["value"]["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        driver
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, text) = http(&self.addr, method, &path, body.as_ref());
        assert_eq!(status, 200, "{method} {path}: {text}");
        parse(&text)["value"].take()
    }

    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().unwrap().to_string()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Runs a script in the page and returns its result.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Polls a script until it returns a non-empty string (or `true`), failing after `limit`.
    fn wait_for(&self, what: &str, script: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(script);
            let ready = match &value {
                Value::String(s) => !s.is_empty(),
                Value::Bool(b) => *b,
                _ => false,
            };
            if ready {
                return value;
            }
            let status = self.eval("return document.getElementById('status').textContent");
            assert!(
                started.elapsed() < limit,
                "waited {limit:?} for {what}; page status: {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None);
        decode_base64(encoded.as_str().unwrap())
    }
}

fn chromium() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromium")
        .to_string()
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Standard base64 (WebDriver screenshots); the tests need nothing more.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | (d as u32) << (18 - 6 * i));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(chunk.len() - 1)
        })
        .collect()
}

#[test]
fn base64_decodes_known_strings() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}

#[test]
fn call_taker_page_in_headless_chromium() {
    let demo = demo();
    let _guard = demo.lock();
    let server = start(demo.dir.path(), &[]);
    let driver = Driver::start();
    driver.call(
        "POST",
        "/url",
        Some(json!({ "url": format!("http://{}/", server.addr) })),
    );
    // The correction list is filled from /v1/taxonomy once the page has loaded.
    driver.wait_for(
        "the taxonomy",
        "return document.querySelectorAll('#correction option').length > 0",
        Duration::from_secs(20),
    );

    // The hotspot panel shows what /v1/hotspots and /v1/alerts answer for the same query.
    driver.wait_for(
        "the hotspot panel",
        "return document.getElementById('insights').dataset.loaded === '1'",
        Duration::from_secs(60),
    );
    let query = driver.eval("return document.getElementById('hotspots').dataset.query");
    let query = query.as_str().unwrap();
    assert!(query.starts_with("/v1/hotspots?top=5"), "{query}");
    let hotspots = parse(&http(&server.addr, "GET", query, None).1);
    let alerts = parse(&http(&server.addr, "GET", "/v1/alerts?limit=5", None).1);
    for (css, answer) in [
        ("#hotspots .hotspot", &hotspots["hotspots"]),
        ("#alerts .alert", &alerts["alerts"]),
    ] {
        let shown = driver.eval(&format!(
            "return Array.from(document.querySelectorAll('{css} b')).map((b) => b.textContent)"
        ));
        let expected: Vec<Value> = answer
            .as_array()
            .unwrap_or_else(|| panic!("{css}: {answer}"))
            .iter()
            .map(|x| match x["place"].as_str() {
                Some(p) if !p.is_empty() => json!(p),
                _ => x["title"].clone(),
            })
            .collect();
        assert_eq!(shown, Value::Array(expected), "{css}");
    }

    let complaint = "A市A2区某小区门口的路灯坏了一个多月，晚上很黑，老人出行不安全，希望尽快维修。";
    driver.type_into("#complaint", complaint);
    driver.click("#suggest");
    let top = driver.wait_for(
        "a suggested category",
        "const c = document.querySelector('#categories .cat span'); return c ? c.textContent : ''",
        Duration::from_secs(60),
    );
    let taxonomy: Vec<(String, String)> = parse(&http(&server.addr, "GET", "/v1/taxonomy", None).1)
        ["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().into(),
                c["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        taxonomy.iter().any(|(_, name)| top == name.as_str()),
        "{top} is a category of the taxonomy"
    );
    let draft = driver.wait_for(
        "the streamed draft",
        "return document.getElementById('status').textContent === '完成' ? document.getElementById('draft').value : ''",
        Duration::from_secs(120),
    );
    assert!(
        draft.as_str().unwrap().chars().count() > 10,
        "a draft: {draft}"
    );
    let units = driver.eval("return document.querySelectorAll('#units .unit').length");
    assert!(units.as_u64().unwrap() > 0, "units are suggested");
    // Each suggested unit says why, in the call-taker's language, and follows the language switch.
    let evidence = |lang: &str| {
        let script = format!(
            "const s = document.getElementById('lang'); s.value = '{lang}'; s.dispatchEvent(new Event('change'));\
             return [...document.querySelectorAll('#units .evidence li')].map((e) => e.textContent).join('|')"
        );
        driver.eval(&script).as_str().unwrap().to_string()
    };
    let english = evidence("en");
    assert!(
        ["handles ", "handled ", "the complaint names "]
            .iter()
            .any(|w| english.contains(w)),
        "evidence in English: {english}"
    );
    let chinese = evidence("zh");
    assert!(
        ["负责", "处理过", "投诉地点在"]
            .iter()
            .any(|w| chinese.contains(w)),
        "evidence in Chinese: {chinese}"
    );
    assert!(
        chinese.contains("负责A2区的城乡建设") || chinese.contains("相似案件"),
        "the rule or the similar cases of the street-light complaint: {chinese}"
    );

    // The work order is pre-filled from the call, in fields the call-taker can edit.
    let order = driver.eval(
        "return ['wo-title','wo-location','wo-request'].map((id) => { const e = document.getElementById(id); return [e.value, e.readOnly || e.disabled]; })",
    );
    let title = order[0][0].as_str().unwrap();
    assert!(
        !title.is_empty() && title.chars().count() <= 30,
        "a title: {order}"
    );
    assert!(
        order[1][0].as_str().unwrap().contains("A2区"),
        "the location: {order}"
    );
    assert!(
        order.as_array().unwrap().iter().all(|f| f[1] == false),
        "editable: {order}"
    );
    let flags = driver.eval("return document.querySelectorAll('#wo-flags .flag').length");
    assert!(flags.as_u64().unwrap() > 0, "老人 and 不安全 raise flags");
    // The draft's slots are highlighted, and its citations (if any) link to their case.
    let slots = driver.eval(
        "return [...document.querySelectorAll('#draft-view mark.slot')].map((m) => m.textContent)",
    );
    assert!(
        slots
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "【核实情况与处理结果】"),
        "highlighted slots: {slots}"
    );
    let links = driver.eval(
        "return [...document.querySelectorAll('#draft-view .cite a')].map((a) => a.getAttribute('href'))",
    );
    let cited = draft.as_str().unwrap().matches('「').count();
    assert_eq!(
        links.as_array().unwrap().len(),
        cited,
        "{links} for {draft}"
    );
    for link in links.as_array().unwrap() {
        let (status, _) = http(&server.addr, "GET", link.as_str().unwrap(), None);
        assert_eq!(status, 200, "the cited case {link} exists");
    }

    let png = driver.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("call-taker.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {}", shot.display());

    // A citation typed or pasted into the draft is shown with its link too.
    driver.type_into("#draft", "参考：「依照规定办理」(case-7)");
    let link = driver.eval(
        "return [...document.querySelectorAll('#draft-view .cite a')].map((a) => a.getAttribute('href')).pop() || ''",
    );
    assert_eq!(link, "/v1/cases/case-7");

    driver.click("#accept");
    let saved = driver.wait_for(
        "the feedback to be stored",
        "const s = document.getElementById('status').textContent; return s.startsWith('已保存反馈') ? s : ''",
        Duration::from_secs(30),
    );
    let id = saved
        .as_str()
        .unwrap()
        .trim_start_matches("已保存反馈，案件编号 ")
        .trim();
    let (status, body) = http(&server.addr, "GET", &format!("/v1/cases/{id}"), None);
    assert_eq!(status, 200, "the feedback case {id} is stored: {body}");
    let case = parse(&body);
    assert_eq!(case["extra"]["source"], "feedback", "{case}");
    assert_eq!(
        case["extra"]["accepted"], true,
        "accepting keeps the suggestion: {case}"
    );
    let label = case["label"].as_str().unwrap();
    let shown = taxonomy
        .iter()
        .find(|(id, _)| id == label)
        .map(|(_, name)| name.as_str());
    assert_eq!(
        shown,
        top.as_str(),
        "the stored label is the category shown"
    );
    let (status, _) = http(&server.addr, "DELETE", &format!("/v1/cases/{id}"), None);
    assert_eq!(status, 204);

    // The units the sample's replies name are learned by `triage train` and listed with their
    // source and history.
    let listed = parse(&http(&server.addr, "GET", "/v1/units", None).1);
    let learned: Vec<&Value> = listed["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["source"] == "learned")
        .collect();
    assert!(!learned.is_empty(), "units learned from replies: {listed}");
    assert!(
        learned.iter().all(|u| u["cases"].as_u64().unwrap() > 0),
        "a learned unit handled past cases: {listed}"
    );
    assert!(
        learned
            .iter()
            .any(|u| matches!(u["kind"].as_str(), Some("street" | "town"))),
        "a learned street or town: {listed}"
    );
}

#[test]
fn the_page_asks_for_an_api_key_when_the_service_needs_one() {
    let demo = demo();
    let _guard = demo.lock();
    let key = "call-taker-key-for-the-browser";
    let keys = format!("call-taker:{key}");
    let server = start(demo.dir.path(), &["--no-draft", "--api-keys", &keys]);
    // The key prompt opens while the page loads: do not wait for the load event.
    let driver = Driver::start_with("none");
    driver.call(
        "POST",
        "/url",
        Some(json!({ "url": format!("http://{}/", server.addr) })),
    );
    // The taxonomy request gets 401, so the page prompts for the key.
    let started = Instant::now();
    let prompt = loop {
        let path = format!("/session/{}/alert/text", driver.session);
        let (status, body) = http(&driver.addr, "GET", &path, None);
        if status == 200 {
            break parse(&body)["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no prompt: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(prompt, "请输入 API 密钥");
    driver.call("POST", "/alert/text", Some(json!({ "text": key })));
    driver.call("POST", "/alert/accept", Some(json!({})));
    driver.wait_for(
        "the taxonomy, fetched with the key",
        "return document.querySelectorAll('#correction option').length > 0",
        Duration::from_secs(20),
    );
}
