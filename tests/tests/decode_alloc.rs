//! A decode step allocates nothing: the session's prefill and decode calls, at 1 and 2 threads,
//! counted by a global allocator that tallies the allocations of the calling thread.

use odc::{CompileOptions, Timings};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(|c| c.get())
}

fn models() -> PathBuf {
    let dir = std::env::var("ODC_HF_MODELS").map(PathBuf::from).unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("build/hf-models")
    });
    assert!(dir.join("llama/config.json").is_file(), "{} has no reference checkpoints: run scripts/test.sh", dir.display());
    dir
}

#[test]
fn prefill_and_decode_steps_do_not_allocate() {
    let cache = odc::decoder::CacheOptions { context: Some(40), max_prefill: Some(4), min_window: Some(8) };
    let mut d = odc::decoder::DecoderJit::compile(&models().join("llama"), &cache, &CompileOptions::default(), &mut Timings::default()).unwrap();
    // The counter sees this thread's allocations.
    let before = allocations();
    let probe = std::hint::black_box(vec![0u8; 64]);
    assert_eq!(allocations() - before, 1);
    drop(probe);
    for threads in [1, 2] {
        d.set_threads(threads);
        let mut s = d.session().unwrap();
        let before = allocations();
        s.prefill(&[1, 2, 3, 4, 5, 6]).unwrap();
        let mut next = 7;
        for _ in 0..20 {
            let l = s.decode(next).unwrap();
            next = (l.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0) as i64;
        }
        assert_eq!(allocations() - before, 0, "allocations during 1 prefill and 20 decode steps at {threads} thread(s)");
    }
}
