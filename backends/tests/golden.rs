//! Golden-text tests of the pipeline (Cranelift's filetests are the model): small graphs whose
//! fusion plan (kernel kinds, fused ops), lowered kernels, schedules and step dependencies are
//! printed and compared with `tests/golden/<case>.txt`. A change in a decision shows up as a
//! diff in review. After an intended change, rewrite the files with
//!
//! ```sh
//! ODC_BLESS=1 cargo test --release -p odc-backends --test golden
//! ```
//!
//! The lowering uses the default (x86_64 with FMA) machine, not the host's, so the files are the
//! same on every machine.

use odc_backends::{lower, JitEvaluator, LowerOptions, Program};
use odc_ir::{BinaryOp, Conv, DType, Graph, NodeId, Op, ReduceOp, Tensor, TensorType, UnaryOp};
use odc_passes::saturate::{optimize, SaturateOptions};
use std::fmt::Write;
use std::path::PathBuf;

fn konst(g: &mut Graph, shape: &[usize], v: impl Fn(usize) -> f32) -> NodeId {
    let n: usize = shape.iter().product();
    let vals: Vec<f32> = (0..n).map(v).collect();
    g.constant(Tensor::from_f32(shape.to_vec(), &vals), "w")
}
fn bin(g: &mut Graph, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
    g.add(Op::Binary(op), &[a, b], op.name()).unwrap()
}
fn conv(g: &mut Graph, x: NodeId, w: NodeId, groups: usize) -> NodeId {
    g.add(Op::Conv(Conv { strides: vec![1, 1], dilations: vec![1, 1], groups }), &[x, w], "conv").unwrap()
}
fn pad1(g: &mut Graph, x: NodeId) -> NodeId {
    let mode = odc_ir::PadMode::Constant(odc_ir::Scalar::F64(0.0));
    g.add(Op::Pad { low: vec![0, 0, 1, 1], high: vec![0, 0, 1, 1], interior: vec![0; 4], mode }, &[x], "pad").unwrap()
}
fn weight(i: usize) -> f32 {
    ((i * 7919) % 97) as f32 / 97.0 - 0.5
}

/// The printed decisions for `g`: fusion report, kernels with schedules, steps with deps.
fn render(g: &Graph) -> String {
    g.verify().unwrap();
    let s = optimize(g, Some(&JitEvaluator), &SaturateOptions::default()).unwrap();
    let prog = lower(&s.graph, &s.plan, &LowerOptions::default()).unwrap();
    let mut out = String::new();
    writeln!(out, "fusion:").unwrap();
    for k in &s.report.kernels {
        writeln!(out, "  {} {}: {}", k.kind, k.name, k.ops.join(" ")).unwrap();
    }
    write_program(&mut out, &prog);
    out
}

fn write_program(out: &mut String, prog: &Program) {
    writeln!(out, "kernels:").unwrap();
    for k in &prog.kernels {
        let gemm = k.gemm_shape().map(|(m, n, kk, b)| format!("; gemm {b}x {m}x{n}x{kk}")).unwrap_or_default();
        writeln!(out, "  {}: {}{gemm}", k.name, k.schedule).unwrap();
    }
    writeln!(out, "steps:").unwrap();
    for (i, st) in prog.steps.iter().enumerate() {
        writeln!(out, "  {i}: {} {:?} after {:?}", prog.kernels[st.kernel].name, st.device, st.deps).unwrap();
    }
    writeln!(out, "arena: {} bytes", prog.arena_size).unwrap();
}

fn check(case: &str, got: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{case}.txt"));
    if std::env::var_os("ODC_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (bless with ODC_BLESS=1)", path.display()));
    if want != got {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(8)
            .map(|(i, (a, b))| format!("line {}:\n  - {a}\n  + {b}", i + 1))
            .collect();
        panic!(
            "{case}: the pipeline's decisions changed ({} vs {} lines); first differences:\n{}\nbless with ODC_BLESS=1 if intended",
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn conv3x3_bias_relu_on_winograd() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 16, 8, 8]));
    let p = pad1(&mut g, x);
    let w = konst(&mut g, &[32, 16, 3, 3], weight);
    let c = conv(&mut g, p, w, 1);
    let b = konst(&mut g, &[1, 32, 1, 1], |i| i as f32 * 0.01);
    let a = bin(&mut g, BinaryOp::Add, c, b);
    let z = konst(&mut g, &[], |_| 0.0);
    let r = bin(&mut g, BinaryOp::Max, a, z);
    g.set_output("y", r);
    check("conv3x3_bias_relu", render(&g));
}

#[test]
fn wide_conv3x3_on_a_small_map_stays_on_winograd() {
    // inception_v1's 6x6 maps with 160 -> 320 channels: the batched GEMM streams 7.4 MB of
    // transformed weights, still cheaper than the f32 GEMM's products (measured 0.52 vs 1.13 ms).
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 160, 6, 6]));
    let p = pad1(&mut g, x);
    let w = konst(&mut g, &[320, 160, 3, 3], weight);
    let c = conv(&mut g, p, w, 1);
    g.set_output("y", c);
    check("wide_conv3x3_small_map", render(&g));
}

#[test]
fn depthwise_conv_runs_direct_with_its_epilogue() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 8, 10, 10]));
    let p = pad1(&mut g, x);
    let w = konst(&mut g, &[8, 1, 3, 3], weight);
    let c = conv(&mut g, p, w, 8);
    let b = konst(&mut g, &[1, 8, 1, 1], |i| i as f32 * 0.1);
    let a = bin(&mut g, BinaryOp::Add, c, b);
    let (lo, hi) = (konst(&mut g, &[], |_| 0.0), konst(&mut g, &[], |_| 6.0));
    let r = bin(&mut g, BinaryOp::Max, a, lo);
    let r = bin(&mut g, BinaryOp::Min, r, hi);
    g.set_output("y", r);
    check("depthwise_conv_relu6", render(&g));
}

#[test]
fn matmul_bias_tanh_on_the_gemm() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![8, 64]));
    let w = konst(&mut g, &[64, 32], weight);
    let m = g.add(Op::MatMul, &[x, w], "matmul").unwrap();
    let b = konst(&mut g, &[32], |i| i as f32 * 0.02);
    let a = bin(&mut g, BinaryOp::Add, m, b);
    let t = g.add(Op::Unary(UnaryOp::Tanh), &[a], "tanh").unwrap();
    g.set_output("y", t);
    check("matmul_bias_tanh", render(&g));
}

#[test]
fn int8_matmul_on_the_dot_product() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::I8, vec![4, 32]));
    let xi = g.add(Op::Cast { to: DType::I32, saturate: false }, &[x], "cast").unwrap();
    let vals: Vec<u8> = (0..32 * 16).map(|i| ((i * 37) % 255) as u8).collect();
    let w8 = g.constant(Tensor::new(DType::I8, vec![32, 16], odc_ir::Bytes::from_vec(vals)).unwrap(), "w8");
    let wi = g.add(Op::Cast { to: DType::I32, saturate: false }, &[w8], "wcast").unwrap();
    let m = g.add(Op::MatMul, &[xi, wi], "matmul").unwrap();
    g.set_output("y", m);
    check("int8_matmul", render(&g));
}

#[test]
fn softmax_fuses_into_two_reductions() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![4, 128]));
    let mx = g.add(Op::Reduce { op: ReduceOp::Max, axes: vec![1] }, &[x], "max").unwrap();
    let d = bin(&mut g, BinaryOp::Sub, x, mx);
    let e = g.add(Op::Unary(UnaryOp::Exp), &[d], "exp").unwrap();
    let s = g.add(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[e], "sum").unwrap();
    let y = bin(&mut g, BinaryOp::Div, e, s);
    g.set_output("y", y);
    check("softmax", render(&g));
}
