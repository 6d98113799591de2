//! Every saturation rule, checked by running a graph before and after the rewrite on random
//! inputs (through the JIT) and comparing. Each test also asserts that its rule fired, so a rule
//! that silently stops matching fails here.

use odc_backends::{lower, FusionPlan, JitEvaluator, JitProgram, LowerOptions, OptLevel};
use odc_ir::{BinaryOp, Conv, DType, Graph, NodeId, Op, PadMode, ReduceOp, Scalar, Tensor, TensorType, UnaryOp};
use odc_passes::saturate::{optimize, Family, SaturateOptions, Saturated};
use rand::{Rng, SeedableRng};

fn run(g: &Graph, plan: &FusionPlan, inputs: &[Vec<u8>]) -> Vec<Vec<f32>> {
    let prog = lower(g, plan, &LowerOptions::default()).unwrap();
    let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
    let refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
    jit.run(&refs).unwrap().iter().map(|o| o.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()).collect()
}

fn random_inputs(g: &Graph, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    g.inputs()
        .iter()
        .map(|p| (0..g.ty(p.node).num_elements()).flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes()).collect())
        .collect()
}

/// Saturate `g` with only `rules` (plus the extractor), check each fired, and compare outputs
/// on random inputs.
fn check(g: &Graph, rules: &[&str]) -> Saturated {
    check_within(g, rules, 1e-5)
}

/// [`check`] with a relative tolerance of `tol`: folding a BatchNorm into a 3x3 convolution
/// changes the weights a Winograd F(4x4,3x3) transform sees, and its rounding differs by up to
/// ~1e-4 (the tolerance `kernels_prop::winograd_conv3x3` holds against an f64 reference).
fn check_within(g: &Graph, rules: &[&str], tol: f32) -> Saturated {
    g.verify().unwrap();
    let opts = SaturateOptions { only_rules: Some(rules.iter().map(|s| s.to_string()).collect()), ..SaturateOptions::default() };
    let s = optimize(g, Some(&JitEvaluator), &opts).unwrap();
    for r in rules {
        let n = s.report.applied.iter().find(|(name, _)| name == r).map(|x| x.1).unwrap_or(0);
        assert!(n > 0, "rule {r} never applied; applied: {:?}", s.report.applied);
    }
    for seed in 0..3 {
        let inputs = random_inputs(g, seed);
        let want = run(g, &FusionPlan::none(g), &inputs);
        let got = run(&s.graph, &s.plan, &inputs);
        assert_eq!(want.len(), got.len());
        for (w, o) in want.iter().zip(&got) {
            assert_eq!(w.len(), o.len());
            for (i, (a, b)) in w.iter().zip(o).enumerate() {
                assert!((a - b).abs() <= tol * a.abs().max(1.0), "output {i}: before {a}, after {b} (rules {rules:?})");
            }
        }
    }
    s
}

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    g.add_input(name, TensorType::new(DType::F32, shape.to_vec()))
}
fn konst(g: &mut Graph, shape: &[usize], v: impl Fn(usize) -> f32) -> NodeId {
    let n: usize = shape.iter().product();
    let vals: Vec<f32> = (0..n).map(v).collect();
    g.constant(Tensor::from_f32(shape.to_vec(), &vals), "c")
}
fn bin(g: &mut Graph, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
    g.add(Op::Binary(op), &[a, b], op.name()).unwrap()
}
fn un(g: &mut Graph, op: UnaryOp, a: NodeId) -> NodeId {
    g.add(Op::Unary(op), &[a], op.name()).unwrap()
}
fn relu(g: &mut Graph, a: NodeId) -> NodeId {
    let z = konst(g, &[], |_| 0.0);
    bin(g, BinaryOp::Max, a, z)
}
fn kernels(s: &Saturated) -> usize {
    s.report.kernels.len()
}

#[test]
fn identities() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[4, 8]);
    let (zero, one) = (konst(&mut g, &[8], |_| 0.0), konst(&mut g, &[], |_| 1.0));
    let a = bin(&mut g, BinaryOp::Add, x, zero);
    let m = bin(&mut g, BinaryOp::Mul, one, a);
    let d = bin(&mut g, BinaryOp::Div, m, one);
    let r = g.add(Op::Reshape { shape: vec![4, 8] }, &[d], "r").unwrap();
    let e = un(&mut g, UnaryOp::Exp, r);
    g.set_output("y", e);
    let s = check(&g, &["identities"]);
    assert_eq!(kernels(&s), 1, "only the exp is left: {:?}", s.report.kernels);
}

#[test]
fn identities_keep_broadcasting_adds() {
    // x[8] + 0[4,8] broadcasts x: not an identity.
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[8]);
    let zero = konst(&mut g, &[4, 8], |_| 0.0);
    let a = bin(&mut g, BinaryOp::Add, x, zero);
    let e = un(&mut g, UnaryOp::Exp, a);
    g.set_output("y", e);
    let opts = SaturateOptions { only_rules: Some(vec!["identities".into()]), ..SaturateOptions::default() };
    let s = optimize(&g, Some(&JitEvaluator), &opts).unwrap();
    assert!(s.report.applied.is_empty(), "{:?}", s.report.applied);
}

#[test]
fn involutions() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[16]);
    let n1 = un(&mut g, UnaryOp::Neg, x);
    let n2 = un(&mut g, UnaryOp::Neg, n1);
    let e = un(&mut g, UnaryOp::Exp, n2);
    g.set_output("y", e);
    let s = check(&g, &["involutions"]);
    assert_eq!(kernels(&s), 1);
}

#[test]
fn view_cancellation() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2, 3, 4]);
    let t1 = g.add(Op::Transpose { perm: vec![1, 0, 2] }, &[x], "t1").unwrap();
    let t2 = g.add(Op::Transpose { perm: vec![2, 0, 1] }, &[t1], "t2").unwrap();
    let r1 = g.add(Op::Reshape { shape: vec![12, 2] }, &[t2], "r1").unwrap();
    let r2 = g.add(Op::Reshape { shape: vec![4, 6] }, &[r1], "r2").unwrap();
    let e = un(&mut g, UnaryOp::Exp, r2);
    g.set_output("y", e);
    let s = check(&g, &["view-cancellation"]);
    let transposes = s.graph.node_ids().iter().filter(|&&n| matches!(s.graph.node(n).op, Op::Transpose { .. })).count();
    let reshapes = s.graph.node_ids().iter().filter(|&&n| matches!(s.graph.node(n).op, Op::Reshape { .. })).count();
    assert_eq!((transposes, reshapes), (1, 1), "{}", s.graph);
}

#[test]
fn constant_folding() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[8]);
    let (a, b) = (konst(&mut g, &[8], |i| i as f32), konst(&mut g, &[8], |i| 0.5 * i as f32));
    let c = bin(&mut g, BinaryOp::Mul, a, b);
    let e = un(&mut g, UnaryOp::Exp, c);
    let y = bin(&mut g, BinaryOp::Add, x, e);
    g.set_output("y", y);
    let s = check(&g, &["constant-folding"]);
    assert_eq!(kernels(&s), 1, "{:?}", s.report.kernels);
}

#[test]
fn reassociate_constants() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[3, 8]);
    let (c1, c2) = (konst(&mut g, &[8], |i| i as f32 * 0.25), konst(&mut g, &[1, 8], |i| 1.0 - i as f32));
    let a = bin(&mut g, BinaryOp::Add, x, c1);
    let b = bin(&mut g, BinaryOp::Add, c2, a);
    let (m1, m2) = (konst(&mut g, &[8], |i| 1.5 + i as f32), konst(&mut g, &[], |_| -2.0));
    let m = bin(&mut g, BinaryOp::Mul, b, m1);
    let m = bin(&mut g, BinaryOp::Mul, m, m2);
    g.set_output("y", m);
    let s = check(&g, &["reassociate-constants"]);
    let binaries = s.graph.node_ids().iter().filter(|&&n| matches!(s.graph.node(n).op, Op::Binary(_))).count();
    assert_eq!(binaries, 2, "{}", s.graph);
}

#[test]
fn subtract_constant() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[8]);
    let c = konst(&mut g, &[8], |i| i as f32);
    let d = bin(&mut g, BinaryOp::Sub, x, c);
    let c2 = konst(&mut g, &[8], |i| 2.0 * i as f32);
    let a = bin(&mut g, BinaryOp::Add, d, c2);
    g.set_output("y", a);
    let s = check(&g, &["subtract-constant", "reassociate-constants"]);
    let binaries = s.graph.node_ids().iter().filter(|&&n| matches!(s.graph.node(n).op, Op::Binary(_))).count();
    assert_eq!(binaries, 1, "{}", s.graph);
}

#[test]
fn transpose_sinking() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[4, 6]);
    let y = input(&mut g, "y", &[4, 6]);
    let tx = g.add(Op::Transpose { perm: vec![1, 0] }, &[x], "tx").unwrap();
    let ty = g.add(Op::Transpose { perm: vec![1, 0] }, &[y], "ty").unwrap();
    let e = un(&mut g, UnaryOp::Exp, tx);
    let s = bin(&mut g, BinaryOp::Add, e, ty);
    let back = g.add(Op::Transpose { perm: vec![1, 0] }, &[s], "back").unwrap();
    let r = un(&mut g, UnaryOp::Tanh, back);
    g.set_output("z", r);
    let s = check(&g, &["transpose-sinking", "view-cancellation", "identities"]);
    let transposes = s.graph.node_ids().iter().filter(|&&n| matches!(s.graph.node(n).op, Op::Transpose { .. })).count();
    assert_eq!(transposes, 0, "all transposes cancel: {}", s.graph);
}

#[test]
fn scale_into_matmul_weights() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[5, 16]);
    let w = konst(&mut g, &[16, 8], |i| ((i * 7) % 13) as f32 * 0.1 - 0.6);
    let mm = g.add(Op::MatMul, &[x, w], "mm").unwrap();
    let sc = konst(&mut g, &[8], |i| 0.5 + i as f32 * 0.25);
    let y = bin(&mut g, BinaryOp::Mul, mm, sc);
    g.set_output("y", y);
    let s = check(&g, &["scale-into-weights"]);
    assert_eq!(kernels(&s), 1, "{:?}", s.report.kernels);
}

fn conv_bn_relu(g: &mut Graph) -> NodeId {
    let x = input(g, "x", &[1, 16, 10, 10]);
    let w = konst(g, &[32, 16, 3, 3], |i| ((i * 31) % 17) as f32 * 0.02 - 0.16);
    let conv = g.add(Op::Conv(Conv { strides: vec![1, 1], dilations: vec![1, 1], groups: 1 }), &[x, w], "conv").unwrap();
    let mean = konst(g, &[1, 32, 1, 1], |i| i as f32 * 0.01);
    let std = konst(g, &[1, 32, 1, 1], |i| 0.5 + i as f32 * 0.05);
    let gamma = konst(g, &[1, 32, 1, 1], |i| 1.0 - i as f32 * 0.02);
    let beta = konst(g, &[1, 32, 1, 1], |i| i as f32 * 0.03 - 0.4);
    let a = bin(g, BinaryOp::Sub, conv, mean);
    let b = bin(g, BinaryOp::Div, a, std);
    let c = bin(g, BinaryOp::Mul, b, gamma);
    let d = bin(g, BinaryOp::Add, c, beta);
    relu(g, d)
}

#[test]
fn batchnorm_folds_into_conv() {
    let mut g = Graph::new();
    let r = conv_bn_relu(&mut g);
    g.set_output("y", r);
    let s = check_within(
        &g,
        &["subtract-constant", "divide-by-constant", "scale-over-bias", "scale-into-weights", "reassociate-constants", "gemm-choice", "fuse-producers", "fuse-epilogue"],
        1e-4,
    );
    assert_eq!(kernels(&s), 1, "{:?}", s.report.kernels);
    assert_eq!(s.report.kernels[0].kind, "winograd+epilogue");
    assert_eq!(s.report.kernels[0].ops, vec!["conv", "add", "max"], "{:?}", s.report.kernels);
}

#[test]
fn scale_over_bias() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2, 8]);
    let b = konst(&mut g, &[8], |i| i as f32);
    let s = konst(&mut g, &[8], |i| 1.0 + i as f32 * 0.5);
    let a = bin(&mut g, BinaryOp::Add, x, b);
    let m = bin(&mut g, BinaryOp::Mul, a, s);
    g.set_output("y", m);
    check(&g, &["scale-over-bias"]);
}

#[test]
fn divide_by_constant() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2, 8]);
    let c = konst(&mut g, &[8], |i| 0.5 + i as f32);
    let d = bin(&mut g, BinaryOp::Div, x, c);
    g.set_output("y", d);
    check(&g, &["divide-by-constant"]);
}

#[test]
fn gemm_choice() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[16, 32]);
    let w = konst(&mut g, &[32, 24], |i| (i % 11) as f32 * 0.1 - 0.5);
    let mm = g.add(Op::MatMul, &[x, w], "mm").unwrap();
    g.set_output("y", mm);
    let s = check(&g, &["gemm-choice"]);
    assert_eq!(s.report.kernels[0].kind, "gemm");
}

#[test]
fn fuse_elementwise_chain() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[64]);
    let y = input(&mut g, "y", &[64]);
    let e = un(&mut g, UnaryOp::Exp, x);
    let a = bin(&mut g, BinaryOp::Add, e, y);
    let t = un(&mut g, UnaryOp::Tanh, a);
    let r = relu(&mut g, t);
    g.set_output("z", r);
    let s = check(&g, &["fuse-producers"]);
    assert_eq!(kernels(&s), 1, "{:?}", s.report.kernels);
    assert_eq!(s.report.kernels[0].ops, vec!["exp", "add", "tanh", "max"]);
}

#[test]
fn fuse_softmax_prologue_into_reductions() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[8, 16]);
    let m = g.add(Op::Reduce { op: ReduceOp::Max, axes: vec![1] }, &[x], "max").unwrap();
    let d = bin(&mut g, BinaryOp::Sub, x, m);
    let e = un(&mut g, UnaryOp::Exp, d);
    let sum = g.add(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[e], "sum").unwrap();
    let y = bin(&mut g, BinaryOp::Div, e, sum);
    g.set_output("y", y);
    let s = check(&g, &["fuse-producers"]);
    // max, sum(exp(x - max)), exp(x - max) / sum: the exponential is recomputed rather than
    // stored (the cost model's choice for short rows; long rows store it, see saturate_extract).
    assert_eq!(kernels(&s), 3, "{:?}", s.report.kernels);
    let sum_kernel = s.report.kernels.iter().find(|k| k.ops.contains(&"reduce_sum".to_string())).unwrap();
    assert_eq!(sum_kernel.ops, vec!["sub", "exp", "reduce_sum"]);
}

#[test]
fn fuse_epilogue_with_residual() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[32, 64]);
    let res = input(&mut g, "res", &[32, 48]);
    let w = konst(&mut g, &[64, 48], |i| (i % 7) as f32 * 0.05 - 0.15);
    let b = konst(&mut g, &[48], |i| i as f32 * 0.01);
    let mm = g.add(Op::MatMul, &[x, w], "mm").unwrap();
    let a = bin(&mut g, BinaryOp::Add, mm, b);
    let a = bin(&mut g, BinaryOp::Add, a, res);
    let r = relu(&mut g, a);
    g.set_output("y", r);
    let s = check(&g, &["gemm-choice", "fuse-producers", "fuse-epilogue"]);
    assert_eq!(kernels(&s), 1, "{:?}", s.report.kernels);
    assert_eq!(s.report.kernels[0].kind, "gemm+epilogue");
}

#[test]
fn fuse_epilogue_of_a_depthwise_convolution() {
    // The depthwise convolution runs as a direct loop (no GEMM); its bias and ReLU are computed
    // in the same loop nest, at each output element, and its zero padding is still read inline
    // (an interior kernel without bounds tests, border kernels with them).
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[1, 8, 9, 11]);
    let pad = Op::Pad { low: vec![0, 0, 1, 1], high: vec![0, 0, 1, 1], interior: vec![0; 4], mode: PadMode::Constant(Scalar::F64(0.0)) };
    let xp = g.add(pad, &[x], "pad").unwrap();
    let w = konst(&mut g, &[8, 1, 3, 3], |i| ((i * 13) % 11) as f32 * 0.1 - 0.5);
    let conv = g.add(Op::Conv(Conv { strides: vec![1, 1], dilations: vec![1, 1], groups: 8 }), &[xp, w], "dw").unwrap();
    let b = konst(&mut g, &[1, 8, 1, 1], |i| i as f32 * 0.05 - 0.2);
    let a = bin(&mut g, BinaryOp::Add, conv, b);
    let r = relu(&mut g, a);
    g.set_output("y", r);
    let s = check(&g, &["fuse-producers", "fuse-epilogue"]);
    assert_eq!(kernels(&s), 1, "{:?}", s.report.kernels);
    assert_eq!((s.report.kernels[0].kind.as_str(), s.report.kernels[0].ops.clone()), ("contraction+epilogue", vec!["conv".to_string(), "add".into(), "max".into()]));
    let prog = lower(&s.graph, &s.plan, &LowerOptions::default()).unwrap();
    let names: Vec<&str> = prog.kernels.iter().map(|k| k.name.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("_interior")) && !names.iter().any(|n| n.starts_with("pad_")), "{names:?}");
}

#[test]
fn fuse_epilogue_of_a_reduction() {
    // A mean: the sum's scale is applied in the reduction's kernel.
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[6, 40]);
    let sum = g.add(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[x], "sum").unwrap();
    let scale = konst(&mut g, &[], |_| 1.0 / 40.0);
    let m = bin(&mut g, BinaryOp::Mul, sum, scale);
    g.set_output("y", m);
    let s = check(&g, &["fuse-epilogue"]);
    assert_eq!(kernels(&s), 1, "{:?}", s.report.kernels);
    assert_eq!(s.report.kernels[0].ops, vec!["reduce_sum", "mul"], "{:?}", s.report.kernels);
}

#[test]
fn all_families_on_a_small_block() {
    let mut g = Graph::new();
    let r = conv_bn_relu(&mut g);
    let t = g.add(Op::Reshape { shape: vec![1, 32, 64] }, &[r], "flat").unwrap();
    let m = g.add(Op::Reduce { op: ReduceOp::Sum, axes: vec![2] }, &[t], "pool").unwrap();
    g.set_output("y", m);
    let opts = SaturateOptions { families: Family::ALL.to_vec(), ..SaturateOptions::default() };
    let s = optimize(&g, Some(&JitEvaluator), &opts).unwrap();
    let inputs = random_inputs(&g, 7);
    let (want, got) = (run(&g, &FusionPlan::none(&g), &inputs), run(&s.graph, &s.plan, &inputs));
    for (a, b) in want[0].iter().zip(&got[0]) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
    }
    assert_eq!(kernels(&s), 2, "{:?}", s.report.kernels);
}

#[test]
fn attention_block_fuses_into_its_gemms_and_softmax() {
    // softmax(Q K^T * scale) V with Q, K, V computed from x: the scale runs in the first
    // product's epilogue, the softmax's exp(x - max) in the sum's prologue.
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[16, 32]);
    let wq = konst(&mut g, &[32, 32], |i| ((i * 7) % 11) as f32 * 0.02 - 0.1);
    let wk = konst(&mut g, &[32, 32], |i| ((i * 5) % 13) as f32 * 0.02 - 0.12);
    let wv = konst(&mut g, &[32, 32], |i| ((i * 3) % 7) as f32 * 0.03 - 0.09);
    let q = g.add(Op::MatMul, &[x, wq], "q").unwrap();
    let k = g.add(Op::MatMul, &[x, wk], "k").unwrap();
    let v = g.add(Op::MatMul, &[x, wv], "v").unwrap();
    let kt = g.add(Op::Transpose { perm: vec![1, 0] }, &[k], "kt").unwrap();
    let s = g.add(Op::MatMul, &[q, kt], "scores").unwrap();
    let scale = konst(&mut g, &[], |_| 0.176_776_7);
    let s = bin(&mut g, BinaryOp::Mul, s, scale);
    let m = g.add(Op::Reduce { op: ReduceOp::Max, axes: vec![1] }, &[s], "max").unwrap();
    let d = bin(&mut g, BinaryOp::Sub, s, m);
    let e = un(&mut g, UnaryOp::Exp, d);
    let sum = g.add(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[e], "sum").unwrap();
    let p = bin(&mut g, BinaryOp::Div, e, sum);
    let o = g.add(Op::MatMul, &[p, v], "out").unwrap();
    g.set_output("y", o);
    let s = check(&g, &["gemm-choice", "fuse-producers", "fuse-epilogue"]);
    let scores = s.report.kernels.iter().find(|k| k.name == "mul").unwrap_or_else(|| panic!("no scores kernel: {:?}", s.report.kernels));
    assert_eq!((scores.kind.as_str(), scores.ops.clone()), ("gemm+epilogue", vec!["matmul".to_string(), "mul".to_string()]));
    let sum = s.report.kernels.iter().find(|k| k.ops.contains(&"reduce_sum".to_string())).unwrap();
    assert!(sum.ops.contains(&"exp".to_string()), "{:?}", s.report.kernels);
    // q, k, v, scores, max, sum, softmax, output product.
    assert_eq!(kernels(&s), 8, "{:?}", s.report.kernels);
}
