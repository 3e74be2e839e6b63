//! A small driver of the embedded store, for the crash test and for benchmarks.
//!
//!   store-tool write DIR DIM BATCH   upsert batches forever, printing "acked N" after each
//!   store-tool bench DIR N           upsert N random cases in batches of 128, then time searches
//!
//! Output of `bench` is TSV: `bench\tmetric\tvalue\tunit`.

use std::io::Write;
use std::path::Path;
use std::time::Instant;
use triage_core::{CaseFilter, CaseStore};
use triage_store::testsuite::{case, vector};
use triage_store::EdgeStore;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => write(Path::new(&args[2]), args[3].parse().unwrap(), args[4].parse().unwrap()),
        Some("bench") => bench(Path::new(&args[2]), args[3].parse().unwrap()),
        _ => {
            eprintln!("usage: store-tool write DIR DIM BATCH | store-tool bench DIR N");
            std::process::exit(2);
        }
    }
}

fn open(dir: &Path, dim: usize) -> EdgeStore {
    EdgeStore::open(dir, dim).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    })
}

fn write(dir: &Path, dim: usize, batch: usize) {
    let store = open(dir, dim);
    let mut stdout = std::io::stdout();
    for round in 0u32.. {
        let cases: Vec<_> = (0..batch as u32)
            .map(|i| {
                let n = round * batch as u32 + i;
                (case(&format!("case-{n}"), Some("交通运输"), None, None), vector(dim, n))
            })
            .collect();
        store.upsert(&cases).unwrap();
        writeln!(stdout, "acked {}", (round + 1) as usize * batch).unwrap();
        stdout.flush().unwrap();
    }
}

fn bench(dir: &Path, n: usize) {
    const DIM: usize = 384;
    let store = open(dir, DIM);
    let started = Instant::now();
    for start in (0..n).step_by(128) {
        let cases: Vec<_> = (start..(start + 128).min(n))
            .map(|i| (case(&format!("b{i}"), Some(["a", "b", "c"][i % 3]), None, Some(i as i64)), vector(DIM, i as u32)))
            .collect();
        store.upsert(&cases).unwrap();
    }
    let upsert_s = started.elapsed().as_secs_f64();
    println!("store\tupsert_rate_batch128_flushed\t{:.0}\tcases/s", n as f64 / upsert_s);
    let started = Instant::now();
    store.optimize().unwrap();
    println!("store\toptimize\t{:.2}\ts", started.elapsed().as_secs_f64());
    for (name, filter) in [("none", CaseFilter::default()), ("category", CaseFilter { category: Some("b".into()), ..Default::default() })] {
        let mut times: Vec<f64> = (0..200u32)
            .map(|q| {
                let v = vector(DIM, 1_000_000 + q);
                let t = Instant::now();
                store.search(&v, 10, &filter).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("store\tsearch_p50_filter_{name}_n{n}\t{:.2}\tms", times[100]);
        println!("store\tsearch_p99_filter_{name}_n{n}\t{:.2}\tms", times[197]);
    }
}
