//! Every test listed in `tests/conformance/passing.txt` must keep passing.
//!
//! The list is produced by `odc-conformance --write-passing`; add to it when more tests pass.

use odc_conformance::{default_data_dir, failing_manifest_cases, manifest, Engine};

#[test]
fn listed_node_tests_still_pass() {
    let dir = default_data_dir().expect(
        "ONNX node tests not found: set ODC_NODE_TESTS or run scripts/prepare-node-tests.sh (scripts/test.sh does both)",
    );
    assert!(manifest().len() >= 1200, "the passing list shrank to {}", manifest().len());
    let f = failing_manifest_cases(&dir, &Engine::Jit);
    assert!(f.is_empty(), "{} listed tests no longer pass:\n{}", f.len(), f.join("\n"));
}
