//! `cargo run --release -p odc-conformance -- DIR [--filter S] [--jobs N] [--write-passing FILE]
//! [--target x86_64|aarch64|riscv64 [--cpu C]] [--quiet]`
//!
//! Prints `PASS`/`FAIL`/`UNSUPPORTED` per test and ends with
//! `conformance: P passed, F failed, U unsupported (of N)`. With `--target`, each case is
//! compiled ahead of time, linked into a C harness (Debian's cross gcc for foreign targets) and
//! run natively or under qemu-user instead of through the JIT.

use odc_conformance::{cases, default_data_dir, run_case_with, AotTarget, Engine, Outcome};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let mut filter: Option<String> = None;
    let mut jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut write_passing: Option<PathBuf> = None;
    let mut quiet = false;
    let mut target: Option<String> = None;
    let mut cpu: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--filter" => filter = args.next(),
            "--jobs" | "-j" => jobs = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--write-passing" => write_passing = args.next().map(PathBuf::from),
            "--quiet" | "-q" => quiet = true,
            "--target" => target = args.next(),
            "--cpu" => cpu = args.next(),
            "-h" | "--help" => {
                println!("usage: odc-conformance [DIR] [--filter SUBSTRING] [--jobs N] [--write-passing FILE] [--target ARCH [--cpu C]] [--quiet]");
                return;
            }
            other => dir = Some(PathBuf::from(other)),
        }
    }
    let Some(dir) = dir.or_else(default_data_dir) else {
        eprintln!("error: no node-test directory given and none found; run scripts/prepare-node-tests.sh");
        std::process::exit(2);
    };
    let all: Vec<PathBuf> = cases(&dir)
        .into_iter()
        .filter(|p| filter.as_ref().is_none_or(|f| p.file_name().unwrap().to_string_lossy().contains(f.as_str())))
        .collect();
    if all.is_empty() {
        eprintln!("error: no test cases in {}", dir.display());
        std::process::exit(2);
    }
    let engine = match target {
        None => Engine::Jit,
        Some(arch) => Engine::Aot(AotTarget {
            arch,
            cpu,
            work: std::env::temp_dir().join(format!("odc-conformance-{}", std::process::id())),
        }),
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, Outcome)>> = Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = all.get(i) else { break };
                let name = case.file_name().unwrap().to_string_lossy().into_owned();
                let o = run_case_with(case, &engine);
                if !quiet {
                    match &o {
                        Outcome::Pass => println!("PASS {name}"),
                        Outcome::Fail(r) => println!("FAIL {name}: {r}"),
                        Outcome::Unsupported(r) => println!("UNSUPPORTED {name}: {r}"),
                    }
                }
                results.lock().unwrap().push((name, o));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let pass = results.iter().filter(|r| r.1 == Outcome::Pass).count();
    let fail = results.iter().filter(|r| matches!(r.1, Outcome::Fail(_))).count();
    let unsup = results.len() - pass - fail;
    if let Some(f) = write_passing {
        let list: Vec<&str> = results.iter().filter(|r| r.1 == Outcome::Pass).map(|r| r.0.as_str()).collect();
        std::fs::write(&f, list.join("\n") + "\n").expect("write passing list");
    }
    println!("conformance: {pass} passed, {fail} failed, {unsup} unsupported (of {})", results.len());
}
