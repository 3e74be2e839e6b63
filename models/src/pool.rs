//! The generator's threads: the caller and `threads - 1` workers share the chunks of one job,
//! and the caller never waits for a worker that has not started.
//!
//! candle's barrier pool (and rayon's) hand every job to every worker and wait until each has
//! checked in. A decode step is ~75 small jobs (a few hundred microseconds each); on a busy
//! 2-core machine a worker is often off the CPU, and then every job waited a scheduler slice
//! for it: decode ran 4× slower on two threads than on one (TRIAGE_PROFILE, load average 9).
//! Here workers claim chunks from a shared counter as they wake; the caller claims too, and
//! waits only for chunks a worker has claimed and not finished. Which thread computes a chunk
//! never changes its result.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// How long an idle worker looks for the next job before it sleeps (spin iterations).
const SPINS: usize = 2_000;

struct Shared {
    /// `generation << 32 | next unclaimed item` of the current job.
    claim: AtomicU64,
    /// Items of the current job, written before its generation is published.
    items: AtomicUsize,
    chunk: AtomicUsize,
    /// Items finished in the current job.
    done: AtomicUsize,
    /// The current job's function (a `&dyn Fn` with its lifetime erased), valid while the job
    /// runs: written before the generation is published, read only after claiming a chunk.
    job: Mutex<Option<JobRef>>,
    /// The published generation, for workers that sleep.
    published: Mutex<u64>,
    wake: Condvar,
}

#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn(Range<usize>) + Sync));
// SAFETY: the pointee is Sync and outlives every use (the caller waits for all claimed chunks).
unsafe impl Send for JobRef {}

struct Pool {
    shared: &'static Shared,
    /// One job at a time.
    calls: Mutex<()>,
}

/// Threads the generator uses: `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the cores.
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"]
            .iter()
            .find_map(|v| {
                std::env::var(v)
                    .ok()?
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
            })
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            claim: AtomicU64::new(0),
            items: AtomicUsize::new(0),
            chunk: AtomicUsize::new(1),
            done: AtomicUsize::new(0),
            job: Mutex::new(None),
            published: Mutex::new(0),
            wake: Condvar::new(),
        }));
        for i in 1..threads() {
            std::thread::Builder::new()
                .name(format!("triage-gen-{i}"))
                .spawn(move || worker(shared))
                .expect("starting a generator thread");
        }
        Pool {
            shared,
            calls: Mutex::new(()),
        }
    })
}

/// Runs `f` over `0..items` in chunks of `chunk`, on the caller and the workers that are free.
pub(crate) fn for_each_chunk(items: usize, chunk: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    let chunk = chunk.max(1);
    if items <= chunk || threads() == 1 {
        f(0..items);
        return;
    }
    let pool = pool();
    let s = pool.shared;
    let _one_at_a_time = pool.calls.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY (lifetime): `f` outlives this call, and the call returns only when every claimed
    // chunk is done; no worker reads the job before claiming a chunk of it.
    let job: *const (dyn Fn(Range<usize>) + Sync) = f;
    let job: *const (dyn Fn(Range<usize>) + Sync + 'static) = unsafe { std::mem::transmute(job) };
    *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobRef(job));
    s.items.store(items, Ordering::Relaxed);
    s.chunk.store(chunk, Ordering::Relaxed);
    s.done.store(0, Ordering::Relaxed);
    let generation = (s.claim.load(Ordering::Relaxed) >> 32) + 1;
    s.claim.store(generation << 32, Ordering::Release);
    {
        let mut published = s.published.lock().unwrap_or_else(|e| e.into_inner());
        *published = generation;
    }
    s.wake.notify_all();
    while let Some(range) = claim(s, generation) {
        let len = range.len();
        f(range);
        s.done.fetch_add(len, Ordering::Release);
    }
    // Chunks a worker claimed: wait for them only.
    let mut spins = 0u32;
    while s.done.load(Ordering::Acquire) < items {
        spins += 1;
        if spins < 1_000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The next chunk of job `generation`, if any is left.
fn claim(s: &Shared, generation: u64) -> Option<Range<usize>> {
    loop {
        let state = s.claim.load(Ordering::Acquire);
        if state >> 32 != generation {
            return None;
        }
        let next = (state & 0xFFFF_FFFF) as usize;
        // While chunks of this generation are unclaimed its job is running, so these are its.
        let (items, chunk) = (
            s.items.load(Ordering::Relaxed),
            s.chunk.load(Ordering::Relaxed),
        );
        if next >= items {
            return None;
        }
        let end = (next + chunk).min(items);
        if s.claim
            .compare_exchange_weak(
                state,
                generation << 32 | end as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            return Some(next..end);
        }
    }
}

fn worker(s: &'static Shared) {
    let mut seen = 0u64;
    loop {
        // Spin briefly for the next job, then sleep until one is published.
        let mut spins = 0;
        let generation = loop {
            let generation = s.claim.load(Ordering::Acquire) >> 32;
            if generation != seen {
                break generation;
            }
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
                continue;
            }
            let published = s.published.lock().unwrap_or_else(|e| e.into_inner());
            let published = s
                .wake
                .wait_while(published, |p| *p == seen)
                .unwrap_or_else(|e| e.into_inner());
            break *published;
        };
        seen = generation;
        while let Some(range) = claim(s, generation) {
            let job = s
                .job
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expect("a published job");
            let len = range.len();
            // SAFETY: a chunk of this job is claimed, so the caller is still waiting and `f`
            // is alive.
            unsafe { (*job.0)(range) };
            s.done.fetch_add(len, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every item runs exactly once, job after job (the workers join in when they wake).
    #[test]
    fn every_item_runs_once() {
        for items in [1, 7, 64, 1000] {
            for chunk in [1, 3, 16] {
                let counts: Vec<AtomicU32> = (0..items).map(|_| AtomicU32::new(0)).collect();
                for_each_chunk(items, chunk, &|range| {
                    for i in range {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            }
        }
    }
}
