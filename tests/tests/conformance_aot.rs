//! The passing manifest through the AOT path: each case compiled to an object for the target,
//! linked into the C harness (Debian's cross gcc for foreign targets) and run natively or under
//! qemu-user. x86_64 uses the SSE2-only baseline CPU, which also exercises the rounding code
//! that avoids SSE4.1.

use odc_conformance::{default_data_dir, failing_manifest_cases, AotTarget, Engine};

fn manifest_through(arch: &str, cpu: Option<&str>) {
    let dir = default_data_dir().expect("ONNX node tests not found: run scripts/prepare-node-tests.sh (scripts/test.sh does)");
    let engine = Engine::Aot(AotTarget {
        arch: arch.into(),
        cpu: cpu.map(str::to_string),
        work: std::env::temp_dir().join(format!("odc-conf-aot-{arch}-{}", std::process::id())),
    });
    let f = failing_manifest_cases(&dir, &engine);
    assert!(f.is_empty(), "{} listed tests fail on {arch}:\n{}", f.len(), f.join("\n"));
}

#[test]
fn manifest_passes_aot_on_x86_64_baseline() {
    manifest_through("x86_64", Some("x86-64"));
}

#[test]
fn manifest_passes_on_aarch64_under_qemu() {
    manifest_through("aarch64", None);
}

#[test]
fn manifest_passes_on_riscv64_under_qemu() {
    manifest_through("riscv64", None);
}
