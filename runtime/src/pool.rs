//! A small persistent thread pool that backs the modules' `parallel_for` callback.
//!
//! One job at a time: the caller publishes a kernel, its argument table and a range split into
//! chunks; the workers and the caller claim chunks until none are left, and the caller returns
//! once every chunk has *finished* (so the argument table outlives the job). Chunk claims carry
//! the job's generation, so a worker that wakes late cannot take a chunk of a later job, and
//! the caller never waits for a worker that claimed nothing: on a busy machine a descheduled
//! worker costs nothing, the caller runs its share.
//!
//! Kernels are short and come back to back, so a worker first polls for the next job (with
//! [`SPIN`] polls, yielding its core now and then) before it blocks on a condition variable.
//! The condition variables are signalled only when someone is blocked on them: a wake-up is a
//! system call, and back to back kernels find their workers and caller still polling.

use crate::abi::KernelFn;
use core::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Polls for a new job before a worker blocks; every [`YIELD_EVERY`]th poll yields the core.
const SPIN: u32 = 4_000;
const YIELD_EVERY: u32 = 64;

#[derive(Clone, Copy)]
struct Job {
    kernel: KernelFn,
    args: usize,
    n: i64,
    chunks: u64,
    generation: u64,
}

struct Ctl {
    job: Option<Job>,
    shutdown: bool,
}

struct Shared {
    ctl: Mutex<Ctl>,
    work: Condvar,
    done: Condvar,
    /// Bumped (under `ctl`) when a job is published or at shutdown.
    generation: AtomicU64,
    /// `generation << 32 | next unclaimed chunk`.
    claim: AtomicU64,
    /// Chunks of the current job that have finished.
    finished: AtomicU64,
    status: AtomicI32,
    /// Workers blocked on `work` (changed only under `ctl`).
    sleepers: AtomicU32,
    /// The caller is blocked on `done` (set under `ctl`).
    caller_blocked: AtomicBool,
}

/// A fixed set of worker threads (plus the calling thread).
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time.
    gate: Mutex<()>,
}

/// Claim and run chunks of `job` until none are left (or a newer job replaced it).
fn run_chunks(s: &Shared, job: Job) {
    loop {
        let cur = s.claim.load(Ordering::Acquire);
        let (generation, c) = (cur >> 32, cur & 0xffff_ffff);
        if generation != job.generation & 0xffff_ffff || c >= job.chunks {
            return;
        }
        if s.claim.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            continue;
        }
        let (n, chunks, c) = (job.n, job.chunks as i64, c as i64);
        let (lo, hi) = (n * c / chunks, n * (c + 1) / chunks);
        // SAFETY: the caller of `parallel_for` guarantees the kernel and arguments are valid
        // for the whole range and waits until every chunk has finished.
        let st = unsafe { (job.kernel)(job.args as *const *mut u8, lo, hi) };
        if st != 0 {
            let _ = s.status.compare_exchange(0, st, Ordering::Relaxed, Ordering::Relaxed);
        }
        // SeqCst pairs with the caller's store of `caller_blocked` and load of `finished`: one
        // of the two sides sees the other's write, so the last chunk's wake-up is not lost.
        if s.finished.fetch_add(1, Ordering::SeqCst) + 1 == job.chunks && s.caller_blocked.load(Ordering::SeqCst) {
            let _c = s.ctl.lock().expect("pool lock");
            s.done.notify_all();
        }
    }
}

/// Poll `ready` up to [`SPIN`] times, yielding the core every [`YIELD_EVERY`] polls.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    for i in 1..=SPIN {
        if ready() {
            return true;
        }
        if i % YIELD_EVERY == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    ready()
}

/// A worker: wait (polling, then blocking) for each new generation and help with its job.
fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        spin_until(|| s.generation.load(Ordering::Acquire) != seen);
        let job = {
            let mut c = s.ctl.lock().expect("pool lock");
            while s.generation.load(Ordering::Acquire) == seen && !c.shutdown {
                s.sleepers.fetch_add(1, Ordering::Relaxed);
                c = s.work.wait(c).expect("pool wait");
                s.sleepers.fetch_sub(1, Ordering::Relaxed);
            }
            if c.shutdown {
                return;
            }
            seen = s.generation.load(Ordering::Acquire);
            c.job
        };
        if let Some(job) = job.filter(|j| j.generation == seen) {
            run_chunks(s, job);
        }
    }
}

impl ThreadPool {
    /// A pool where `threads` threads (including the caller) share each loop.
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Ctl { job: None, shutdown: false }),
            work: Condvar::new(),
            done: Condvar::new(),
            generation: AtomicU64::new(0),
            claim: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            status: AtomicI32::new(0),
            sleepers: AtomicU32::new(0),
            caller_blocked: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("odc-worker-{i}")).spawn(move || worker(&s)).expect("spawn worker")
            })
            .collect();
        ThreadPool { shared, workers, gate: Mutex::new(()) }
    }

    /// Threads that share a loop, including the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `kernel` over `0..n` split across the pool; returns 0 or the first non-zero status.
    ///
    /// # Safety
    /// `kernel` must be safe to call concurrently on disjoint ranges with `args`.
    pub unsafe fn parallel_for(&self, kernel: KernelFn, args: *const *mut u8, n: i64) -> i32 {
        if self.workers.is_empty() || n < 2 {
            // SAFETY: forwarded from the caller.
            return unsafe { kernel(args, 0, n) };
        }
        let _g = self.gate.lock().expect("pool gate");
        let s = &*self.shared;
        let chunks = n.min(self.threads() as i64 * 4) as u64;
        s.status.store(0, Ordering::Relaxed);
        s.finished.store(0, Ordering::Relaxed);
        let job = {
            let mut c = s.ctl.lock().expect("pool lock");
            let generation = s.generation.load(Ordering::Relaxed) + 1;
            let job = Job { kernel, args: args as usize, n, chunks, generation };
            c.job = Some(job);
            s.claim.store((generation & 0xffff_ffff) << 32, Ordering::Release);
            s.generation.store(generation, Ordering::Release);
            if s.sleepers.load(Ordering::Relaxed) > 0 {
                s.work.notify_all();
            }
            job
        };
        run_chunks(s, job);
        let all_done = || s.finished.load(Ordering::Acquire) == chunks;
        if !spin_until(all_done) {
            let mut c = s.ctl.lock().expect("pool lock");
            s.caller_blocked.store(true, Ordering::SeqCst);
            while s.finished.load(Ordering::SeqCst) != chunks {
                c = s.done.wait(c).expect("pool wait");
            }
            s.caller_blocked.store(false, Ordering::Relaxed);
        }
        s.status.load(Ordering::Relaxed)
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let mut c = self.shared.ctl.lock().expect("pool lock");
            c.shutdown = true;
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The C callback for `OdcContext::parallel_for`, with `user` pointing at a [`ThreadPool`].
///
/// # Safety
/// `user` must point at a live `ThreadPool`.
pub unsafe extern "C" fn parallel_for_callback(user: *mut c_void, kernel: KernelFn, args: *const *mut u8, n: i64) -> i32 {
    // SAFETY: per the contract above.
    unsafe { (*(user as *const ThreadPool)).parallel_for(kernel, args, n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    static SUM: AtomicU64 = AtomicU64::new(0);

    unsafe extern "C" fn add_range(_args: *const *mut u8, lo: i64, hi: i64) -> i32 {
        SUM.fetch_add((lo..hi).map(|i| i as u64).sum(), Ordering::Relaxed);
        if lo <= 7 && 7 < hi {
            3
        } else {
            0
        }
    }

    static RUNS: AtomicU64 = AtomicU64::new(0);

    unsafe extern "C" fn count_range(_args: *const *mut u8, lo: i64, hi: i64) -> i32 {
        RUNS.fetch_add((hi - lo) as u64, Ordering::Relaxed);
        0
    }

    /// Many short jobs back to back, more threads than cores: every index of every job runs
    /// exactly once, and no late worker runs a chunk of a finished job.
    #[test]
    fn back_to_back_jobs_with_oversubscription() {
        let pool = ThreadPool::new(4);
        let mut want = 0u64;
        for i in 0..5_000i64 {
            let n = 2 + i % 37;
            want += n as u64;
            let st = unsafe { pool.parallel_for(count_range, std::ptr::null(), n) };
            assert_eq!(st, 0);
            assert_eq!(RUNS.load(Ordering::Relaxed), want, "after job {i}");
        }
    }

    #[test]
    fn every_index_runs_once_and_status_propagates() {
        let pool = ThreadPool::new(3);
        for n in [0i64, 1, 2, 5, 1000] {
            SUM.store(0, Ordering::Relaxed);
            let st = unsafe { pool.parallel_for(add_range, std::ptr::null(), n) };
            assert_eq!(SUM.load(Ordering::Relaxed), (0..n as u64).sum::<u64>());
            assert_eq!(st, if n > 7 { 3 } else { 0 });
        }
    }
}
