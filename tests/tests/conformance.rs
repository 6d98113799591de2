//! Every test listed in `tests/conformance/passing.txt` must keep passing.
//!
//! The list is produced by `odc-conformance --write-passing`; add to it when more tests pass.

use odc_conformance::{default_data_dir, run_case, Outcome};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[test]
fn listed_node_tests_still_pass() {
    let dir = default_data_dir().expect(
        "ONNX node tests not found: set ODC_NODE_TESTS or run scripts/prepare-node-tests.sh (scripts/test.sh does both)",
    );
    let list = include_str!("../conformance/passing.txt");
    let names: Vec<&str> = list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(names.len() >= 1200, "the passing list shrank to {}", names.len());
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let case = dir.join(name);
                let o = if case.join("model.onnx").exists() { run_case(&case) } else { Outcome::Fail("test case missing".into()) };
                if o != Outcome::Pass {
                    failures.lock().unwrap().push(format!("{name}: {o:?}"));
                }
            });
        }
    });
    let mut f = failures.into_inner().unwrap();
    f.sort();
    assert!(f.is_empty(), "{} listed tests no longer pass:\n{}", f.len(), f.join("\n"));
}
