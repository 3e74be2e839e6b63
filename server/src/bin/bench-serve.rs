//! Load generator for a running `triage serve` on loopback (see `scripts/bench-serve.sh`):
//! requests/s and latency percentiles of `POST /v1/triage` without draft at several client counts
//! and text lengths, the shedding (429) at overload, and the time to the first draft token.
//!
//! bench-serve --addr 127.0.0.1:8080 --texts dev.jsonl [--seconds 20] [--clients 1,4,16]

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Address of the running server
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// JSONL file of complaints (`text` field); texts are cut to each length measured
    #[arg(long)]
    texts: std::path::PathBuf,
    /// Seconds per measurement
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent clients to measure
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Complaint lengths in characters
    #[arg(long, value_delimiter = ',', default_value = "60,400")]
    chars: Vec<usize>,
    /// Clients for the overload run, beyond the server's queue depth (0 skips it)
    #[arg(long, default_value_t = 64)]
    overload: usize,
    /// Streamed requests for the time to first draft token (0 skips it)
    #[arg(long, default_value_t = 10)]
    ttft: usize,
}

/// One finished request: its status and latency.
struct Sample {
    status: u16,
    seconds: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("| clients | chars | requests/s | p50 ms | p95 ms | p99 ms | 2xx | 429 | other |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &chars in &args.chars {
        let bodies = bodies(&args.texts, chars)?;
        for &clients in &args.clients {
            report(&args, &bodies, clients, chars);
        }
    }
    if args.overload > 0 {
        let bodies = bodies(&args.texts, args.chars[0])?;
        report(&args, &bodies, args.overload, args.chars[0]);
    }
    if args.ttft > 0 {
        time_to_first_token(&args)?;
    }
    Ok(())
}

/// Request bodies from the texts file, each complaint cut to `chars` (only texts that long).
fn bodies(path: &std::path::Path, chars: usize) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let row: serde_json::Value = match serde_json::from_str(&line?) {
            Ok(row) => row,
            Err(_) => continue,
        };
        let text = row["text"].as_str().unwrap_or_default();
        if text.chars().count() >= chars {
            let text: String = text.chars().take(chars).collect();
            out.push(serde_json::json!({"text": text, "draft": false}).to_string());
        }
    }
    if out.is_empty() {
        bail!(
            "no text of {chars} characters or more in {}",
            path.display()
        );
    }
    Ok(out)
}

fn report(args: &Args, bodies: &[String], clients: usize, chars: usize) {
    let (samples, elapsed) = run_clients(args, bodies, clients);
    let mut ok: Vec<f64> = samples
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.seconds * 1e3)
        .collect();
    ok.sort_by(f64::total_cmp);
    let shed = samples.iter().filter(|s| s.status == 429).count();
    let other = samples.len() - ok.len() - shed;
    let pct = |p: f64| {
        ok.get(((ok.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "| {clients} | {chars} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {shed} | {other} |",
        ok.len() as f64 / elapsed,
        pct(0.50),
        pct(0.95),
        pct(0.99),
        ok.len(),
    );
}

/// `clients` threads sending back to back for `args.seconds`.
fn run_clients(args: &Args, bodies: &[String], clients: usize) -> (Vec<Sample>, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let samples = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                let stop = stop.clone();
                scope.spawn(move || {
                    let mut samples = Vec::new();
                    let mut i = client;
                    while !stop.load(Ordering::Relaxed) {
                        let body = &bodies[i % bodies.len()];
                        i += clients;
                        let sent = Instant::now();
                        let status = post(&args.addr, "/v1/triage", body)
                            .map(|(status, _)| status)
                            .unwrap_or(0);
                        samples.push(Sample {
                            status,
                            seconds: sent.elapsed().as_secs_f64(),
                        });
                        if status == 429 {
                            // A real client honours Retry-After; a short pause keeps the load up.
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    samples
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect::<Vec<_>>()
    });
    (samples, started.elapsed().as_secs_f64())
}

/// A plain HTTP/1.1 POST of JSON: status and body.
fn post(addr: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut reader = send(addr, path, body)?;
    let (status, length) = read_head(&mut reader)?;
    let mut raw = vec![0; length.unwrap_or(0)];
    reader.read_exact(&mut raw)?;
    Ok((status, String::from_utf8_lossy(&raw).into_owned()))
}

fn send(addr: &str, path: &str, body: &str) -> std::io::Result<BufReader<TcpStream>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(BufReader::new(stream))
}

/// Status and Content-Length of a response.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Option<usize>)> {
    let mut status = 0;
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            return Ok((status, length));
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("http/") {
            status = lower
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        } else if let Some(n) = lower.strip_prefix("content-length:") {
            length = n.trim().parse().ok();
        }
    }
}

/// Time to the `suggestion` event and to the first `token` event of `/v1/triage/stream`, one
/// request at a time (the draft is what the call-taker waits for).
fn time_to_first_token(args: &Args) -> Result<()> {
    let bodies = bodies(&args.texts, args.chars[0])?;
    let (mut suggestion, mut first_token) = (Vec::new(), Vec::new());
    for body in bodies.iter().take(args.ttft) {
        let body = body.replace("\"draft\":false", "\"draft\":true");
        let sent = Instant::now();
        let mut reader = send(&args.addr, "/v1/triage/stream", &body)?;
        let (status, _) = read_head(&mut reader)?;
        if status != 200 {
            bail!("/v1/triage/stream answered {status}");
        }
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            let event = line.trim_end().strip_prefix("event: ").map(str::to_string);
            line.clear();
            match event.as_deref() {
                Some("suggestion") => suggestion.push(sent.elapsed().as_secs_f64() * 1e3),
                Some("token") => {
                    first_token.push(sent.elapsed().as_secs_f64() * 1e3);
                    break;
                }
                _ => {}
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    println!(
        "\nstream, {} requests one at a time: suggestion event median {:.0} ms; first draft token median {:.0} ms, max {:.0} ms",
        first_token.len(),
        median(suggestion),
        median(first_token.clone()),
        max(&first_token)
    );
    Ok(())
}
