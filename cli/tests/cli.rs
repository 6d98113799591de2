//! The `odc` command end to end: outputs, exit codes and messages.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn odc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_odc")).args(args).current_dir(root()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("odc-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn run_prints_the_predicted_digits() {
    let (code, out, err) = odc(&["run", "examples/digits/digits.onnx", "--input", "examples/digits/samples.npy"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("digit: i64 [8] = [2, 8, 2, 6, 6, 7, 1, 9]"), "{out}");
    assert!(out.contains("probabilities: f32 [8, 10] = ["), "{out}");
}

#[test]
fn run_writes_npy_outputs() {
    let d = tmp("outdir");
    let (code, _, err) = odc(&["run", "examples/digits/digits.onnx", "-i", "pixels=examples/digits/samples.npy", "--output-dir", d.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let digits = odc::npy::read(&d.join("digit.npy")).unwrap();
    assert_eq!(digits.dtype, odc_ir::DType::I64);
    let v: Vec<i64> = digits.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(v, vec![2, 8, 2, 6, 6, 7, 1, 9]);
    let probs = odc::npy::read(&d.join("probabilities.npy")).unwrap();
    assert_eq!(probs.shape, vec![8, 10]);
}

#[test]
fn check_accepts_a_supported_model() {
    let (code, out, _) = odc(&["check", "examples/digits/digits.onnx", "--shape", "pixels=1x64"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ok: examples/digits/digits.onnx imports into "), "{out}");
}

#[test]
fn check_lists_every_unsupported_operator_and_fails() {
    let (code, out, _) = odc(&["check", "cli/tests/fixtures/unsupported.onnx"]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "the model uses 2 unsupported feature(s):\n  node 'nms' (NonMaxSuppression): operator NonMaxSuppression is not supported\n  node 'unique' (Unique): operator Unique is not supported\n"
    );
}

#[test]
fn run_fails_with_the_same_list() {
    let d = tmp("unsup-run");
    let x = d.join("x.npy");
    odc::npy::write(&x, odc_ir::DType::F32, &[1, 4, 4], &[0u8; 64]).unwrap();
    let (code, _, err) = odc(&["run", "cli/tests/fixtures/unsupported.onnx", "--input", x.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("node 'nms' (NonMaxSuppression): operator NonMaxSuppression is not supported"), "{err}");
    assert!(err.contains("node 'unique' (Unique): operator Unique is not supported"), "{err}");
}

#[test]
fn check_without_shapes_still_lists_unknown_operators() {
    let (code, out, _) = odc(&["check", "cli/tests/fixtures/dynamic_batch.onnx"]);
    assert_eq!(code, 1);
    assert!(out.contains("(a full check needs shapes: input shapes are not fully known: 'x' has symbolic dimension 'N'"), "{out}");
    let (code, out, _) = odc(&["check", "cli/tests/fixtures/dynamic_batch.onnx", "--dim", "N=2"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn run_rejects_inputs_of_the_wrong_dtype_or_shape() {
    let d = tmp("badinput");
    let wrong_type = d.join("ints.npy");
    odc::npy::write(&wrong_type, odc_ir::DType::I64, &[8, 64], &vec![0u8; 8 * 64 * 8]).unwrap();
    let (code, _, err) = odc(&["run", "examples/digits/digits.onnx", "--input", wrong_type.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("input 'pixels' must be f32, the file holds i64"), "{err}");
    let wrong_shape = d.join("short.npy");
    odc::npy::write(&wrong_shape, odc_ir::DType::F32, &[8, 63], &vec![0u8; 8 * 63 * 4]).unwrap();
    let (code, _, err) = odc(&["run", "examples/digits/digits.onnx", "--input", wrong_shape.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("node 'fc1' (MatMul): matmul inner dimensions differ: [8, 63] x [64, 32]"), "{err}");
}

#[test]
fn run_reports_missing_and_unknown_inputs() {
    let (code, _, err) = odc(&["run", "examples/digits/digits.onnx"]);
    assert_eq!(code, 2);
    assert!(err.contains("missing input(s): pixels"), "{err}");
    let (code, _, err) = odc(&["run", "examples/digits/digits.onnx", "--input", "image=examples/digits/samples.npy"]);
    assert_eq!(code, 2);
    assert!(err.contains("the model has no input 'image' (inputs: pixels)"), "{err}");
}

#[test]
fn bad_npy_files_are_reported() {
    let d = tmp("badnpy");
    let f = d.join("junk.npy");
    std::fs::write(&f, b"not numpy").unwrap();
    let (code, _, err) = odc(&["run", "examples/digits/digits.onnx", "--input", f.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("junk.npy: not a .npy file"), "{err}");
}

#[test]
fn every_command_opens_checkpoint_directories_and_reports_what_they_lack() {
    let empty = tmp("no-config");
    let (code, _, err) = odc(&["check", empty.to_str().unwrap()]);
    assert_eq!(code, 2, "an error, not a failed check");
    assert!(err.contains("is a directory without a config.json: not a checkpoint"), "{err}");
    assert_eq!(err.matches("not a checkpoint").count(), 1, "the message is printed once: {err}");
    let d = tmp("mamba");
    std::fs::write(d.join("config.json"), r#"{"model_type":"mamba","architectures":["MambaForCausalLM"]}"#).unwrap();
    let (code, out, _) = odc(&["check", d.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("node 'config.json' (model_type): architecture 'mamba' (MambaForCausalLM) is not supported"), "{out}");
    let out_dir = tmp("mamba-out");
    for cmd in [vec!["inspect"], vec!["compile", "-o", out_dir.to_str().unwrap()], vec!["bench"], vec!["run"]] {
        let (code, _, err) = odc(&[cmd.as_slice(), &[d.to_str().unwrap()]].concat());
        assert_ne!(code, 0, "{cmd:?}");
        assert!(err.contains("architecture 'mamba'"), "{cmd:?}: {err}");
    }
}
