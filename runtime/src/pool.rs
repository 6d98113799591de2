//! A small persistent thread pool that backs the modules' `parallel_for` callback.
//!
//! One job at a time: the caller publishes a kernel, its argument table and a range; every
//! worker and the caller take chunks from a shared counter until none are left; the caller
//! waits for all of them before returning (so the argument table outlives the job).

use crate::abi::KernelFn;
use core::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Copy)]
struct Job {
    kernel: KernelFn,
    args: usize,
    n: i64,
    chunks: i64,
}

struct Ctl {
    generation: u64,
    job: Option<Job>,
    busy: usize,
    shutdown: bool,
}

struct Shared {
    ctl: Mutex<Ctl>,
    work: Condvar,
    done: Condvar,
    next: AtomicI64,
    status: AtomicI32,
}

/// A fixed set of worker threads (plus the calling thread).
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time.
    gate: Mutex<()>,
}

fn run_chunks(s: &Shared, job: Job) {
    loop {
        let c = s.next.fetch_add(1, Ordering::Relaxed);
        if c >= job.chunks {
            break;
        }
        let lo = job.n * c / job.chunks;
        let hi = job.n * (c + 1) / job.chunks;
        // SAFETY: the caller of `parallel_for` guarantees the kernel and arguments are valid
        // for the whole range and waits until every chunk has finished.
        let st = unsafe { (job.kernel)(job.args as *const *mut u8, lo, hi) };
        if st != 0 {
            let _ = s.status.compare_exchange(0, st, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

impl ThreadPool {
    /// A pool where `threads` threads (including the caller) share each loop.
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Ctl { generation: 0, job: None, busy: 0, shutdown: false }),
            work: Condvar::new(),
            done: Condvar::new(),
            next: AtomicI64::new(0),
            status: AtomicI32::new(0),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("odc-worker-{i}"))
                    .spawn(move || {
                        let mut seen = 0u64;
                        loop {
                            let job = {
                                let mut c = s.ctl.lock().expect("pool lock");
                                while c.generation == seen && !c.shutdown {
                                    c = s.work.wait(c).expect("pool wait");
                                }
                                if c.shutdown {
                                    return;
                                }
                                seen = c.generation;
                                c.job.expect("published job")
                            };
                            run_chunks(&s, job);
                            let mut c = s.ctl.lock().expect("pool lock");
                            c.busy -= 1;
                            if c.busy == 0 {
                                s.done.notify_all();
                            }
                        }
                    })
                    .expect("spawn worker")
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
        let chunks = n.min(self.threads() as i64 * 4);
        let job = Job { kernel, args: args as usize, n, chunks };
        s.next.store(0, Ordering::Relaxed);
        s.status.store(0, Ordering::Relaxed);
        {
            let mut c = s.ctl.lock().expect("pool lock");
            c.generation += 1;
            c.job = Some(job);
            c.busy = self.workers.len();
            s.work.notify_all();
        }
        run_chunks(s, job);
        let mut c = s.ctl.lock().expect("pool lock");
        while c.busy > 0 {
            c = s.done.wait(c).expect("pool wait");
        }
        s.status.load(Ordering::Relaxed)
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.ctl.lock().expect("pool lock").shutdown = true;
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
