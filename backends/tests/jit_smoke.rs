use odc_backends::{lower, JitProgram, OptLevel};
use odc_ir::{BinaryOp, DType, Graph, Op, ReduceOp, TensorType, UnaryOp};

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}
fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn run(g: &Graph, inputs: &[Vec<f32>]) -> Vec<Vec<f32>> {
    g.verify().unwrap();
    let prog = lower(g, &odc_backends::FusionPlan::none(g), &odc_backends::LowerOptions::default()).unwrap();
    let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
    let ins: Vec<Vec<u8>> = inputs.iter().map(|v| bytes(v)).collect();
    let refs: Vec<&[u8]> = ins.iter().map(|v| v.as_slice()).collect();
    jit.run(&refs).unwrap().iter().map(|o| f32s(o)).collect()
}

#[test]
fn add_broadcast_and_exp() {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::new(DType::F32, vec![2, 5]));
    let b = g.add_input("b", TensorType::new(DType::F32, vec![5]));
    let s = g.add(Op::Binary(BinaryOp::Add), &[a, b], "add").unwrap();
    let e = g.add(Op::Unary(UnaryOp::Exp), &[s], "exp").unwrap();
    g.set_output("y", e);
    let av: Vec<f32> = (0..10).map(|i| i as f32 * 0.1 - 0.5).collect();
    let bv: Vec<f32> = (0..5).map(|i| i as f32 * 0.3).collect();
    let out = run(&g, &[av.clone(), bv.clone()]);
    for i in 0..10 {
        let want = (av[i] + bv[i % 5]).exp();
        assert!((out[0][i] - want).abs() <= 1e-6 * want.abs(), "{i}: {} vs {want}", out[0][i]);
    }
}

#[test]
fn matmul_and_reduce() {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::new(DType::F32, vec![3, 4]));
    let b = g.add_input("b", TensorType::new(DType::F32, vec![4, 6]));
    let m = g.add(Op::MatMul, &[a, b], "mm").unwrap();
    let r = g.add(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[m], "sum").unwrap();
    g.set_output("m", m);
    g.set_output("r", r);
    let av: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let bv: Vec<f32> = (0..24).map(|i| (i % 7) as f32 - 3.0).collect();
    let out = run(&g, &[av.clone(), bv.clone()]);
    for i in 0..3 {
        let mut rs = 0.0;
        for j in 0..6 {
            let want: f32 = (0..4).map(|k| av[i * 4 + k] * bv[k * 6 + j]).sum();
            assert_eq!(out[0][i * 6 + j], want);
            rs += want;
        }
        assert_eq!(out[1][i], rs);
    }
}

/// Max/Min propagate NaN from either operand (vector lanes and the scalar tail), including
/// against a constant (ReLU) and in a max-reduction, whatever instruction sequence implements them.
#[test]
fn min_max_propagate_nan() {
    let n = 11; // two vectors of four plus a scalar tail
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::new(DType::F32, vec![n]));
    let b = g.add_input("b", TensorType::new(DType::F32, vec![n]));
    let zero = g.constant(odc_ir::Tensor::from_f32(vec![], &[0.0]), "zero");
    let zx = g.add(Op::Expand { shape: vec![n] }, &[zero], "zx").unwrap();
    let mx = g.add(Op::Binary(BinaryOp::Max), &[a, b], "max").unwrap();
    let mn = g.add(Op::Binary(BinaryOp::Min), &[a, b], "min").unwrap();
    let relu = g.add(Op::Binary(BinaryOp::Max), &[a, zx], "relu").unwrap();
    let red = g.add(Op::Reduce { op: ReduceOp::Max, axes: vec![0] }, &[a], "rmax").unwrap();
    // Rows of c reduced along axis 1: the vectorised reduction (one output per lane).
    let c = g.add_input("c", TensorType::new(DType::F32, vec![n, 3]));
    let rows = g.add(Op::Reduce { op: ReduceOp::Max, axes: vec![1] }, &[c], "rows").unwrap();
    for (name, node) in [("max", mx), ("min", mn), ("relu", relu), ("rmax", red), ("rows", rows)] {
        g.set_output(name, node);
    }
    let nan = f32::NAN;
    let av = vec![1.0, nan, 3.0, -1.0, nan, 2.0, -5.0, 0.5, 7.0, nan, -2.0];
    let bv = vec![nan, 2.0, 1.0, -2.0, nan, 4.0, -6.0, nan, 8.0, 1.0, nan];
    let cv: Vec<f32> = (0..n * 3).map(|i| if i % 7 == 3 { nan } else { (i as f32 * 0.37).sin() }).collect();
    let out = run(&g, &[av.clone(), bv.clone(), cv.clone()]);
    for i in 0..n {
        let row = &cv[i * 3..i * 3 + 3];
        if row.iter().any(|v| v.is_nan()) {
            assert!(out[4][i].is_nan(), "row {i} holds a NaN");
        } else {
            assert_eq!(out[4][i], row.iter().copied().fold(f32::NEG_INFINITY, f32::max), "row {i}");
        }
        let (x, y) = (av[i], bv[i]);
        let (want_max, want_min) = if x.is_nan() || y.is_nan() { (nan, nan) } else { (x.max(y), x.min(y)) };
        assert_eq!(out[0][i].is_nan(), want_max.is_nan(), "max lane {i}");
        assert_eq!(out[1][i].is_nan(), want_min.is_nan(), "min lane {i}");
        if !want_max.is_nan() {
            assert_eq!((out[0][i], out[1][i]), (want_max, want_min), "lane {i}");
        }
        let want_relu = if x.is_nan() { nan } else { x.max(0.0) };
        assert_eq!(out[2][i].is_nan(), want_relu.is_nan(), "relu lane {i}");
        if !want_relu.is_nan() {
            assert_eq!(out[2][i], want_relu);
        }
    }
    assert!(out[3][0].is_nan(), "max-reduction over a NaN");
}

/// A chain of elementwise kernels (no fusion) runs in place: each map writes over the input
/// that dies at it, so the two temporaries share one arena slot, and the results stay right.
#[test]
fn elementwise_chain_runs_in_place() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![3, 50]));
    let e = g.add(Op::Unary(UnaryOp::Exp), &[x], "exp").unwrap();
    let n = g.add(Op::Unary(UnaryOp::Neg), &[e], "neg").unwrap();
    let a = g.add(Op::Unary(UnaryOp::Abs), &[n], "abs").unwrap();
    g.set_output("y", a);
    let prog = lower(&g, &odc_backends::FusionPlan::none(&g), &odc_backends::LowerOptions::default()).unwrap();
    let temps: Vec<usize> = prog
        .buffers
        .iter()
        .filter_map(|b| match b.kind {
            odc_backends::BufferKind::Temp { offset } => Some(offset),
            _ => None,
        })
        .collect();
    assert_eq!(temps.len(), 2, "exp and neg are temporaries");
    assert_eq!(temps[0], temps[1], "neg overwrites exp in place");
    assert_eq!(prog.arena_size, (3 * 50 * 4usize).next_multiple_of(64), "one slot");
    let xv: Vec<f32> = (0..150).map(|i| i as f32 * 0.01 - 0.7).collect();
    let out = run(&g, &[xv.clone()]);
    for i in 0..150 {
        assert!((out[0][i] - xv[i].exp()).abs() <= 1e-6 * xv[i].exp(), "{i}");
    }
}

/// The profiler runs the whole program kernel by kernel in the caller's buffers: one time per
/// step, and the outputs a normal run writes.
#[test]
fn profile_runs_every_step_in_the_callers_buffers() {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::new(DType::F32, vec![3, 4]));
    let b = g.add_input("b", TensorType::new(DType::F32, vec![4, 6]));
    let m = g.add(Op::MatMul, &[a, b], "mm").unwrap();
    let e = g.add(Op::Unary(UnaryOp::Exp), &[m], "exp").unwrap();
    let r = g.add(Op::Reduce { op: ReduceOp::Max, axes: vec![1] }, &[e], "max").unwrap();
    g.set_output("r", r);
    let prog = lower(&g, &odc_backends::FusionPlan::none(&g), &odc_backends::LowerOptions::default()).unwrap();
    let steps = prog.steps.len();
    assert!(steps >= 3, "{steps} steps");
    let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
    let ins = [bytes(&(0..12).map(|i| i as f32 * 0.1).collect::<Vec<_>>()), bytes(&(0..24).map(|i| (i % 5) as f32 * 0.2 - 0.4).collect::<Vec<_>>())];
    let refs: Vec<&[u8]> = ins.iter().map(|v| v.as_slice()).collect();
    let want = jit.run(&refs).unwrap();
    let mut bufs = jit.buffers();
    let times = jit.profile(&refs, &mut bufs).unwrap();
    assert_eq!(times.len(), steps);
    assert!(times.iter().all(|&t| t >= 0.0));
    assert_eq!(bufs.outputs, want);
}

/// `concat(x1 @ w1, x2 @ w2) @ w3`, concatenated on axis 1 of batch `b`: the value, and whether
/// the concatenation was a copy kernel or its operands were written into their slices of it.
fn concat_then_matmul(b: usize) -> (Vec<f32>, Vec<f32>, bool, odc_backends::Program) {
    let (r1, r2, k, n, p) = (4, 2, 8, 6, 3);
    let mut g = Graph::new();
    let x1 = g.add_input("x1", TensorType::new(DType::F32, vec![b, r1, k]));
    let x2 = g.add_input("x2", TensorType::new(DType::F32, vec![b, r2, k]));
    let wv = |len: usize, s: usize| (0..len).map(|i| ((i * s) % 11) as f32 * 0.1 - 0.5).collect::<Vec<f32>>();
    let (w1v, w2v, w3v) = (wv(k * n, 7), wv(k * n, 5), wv(n * p, 3));
    let w1 = g.constant(odc_ir::Tensor::from_f32(vec![k, n], &w1v), "w1");
    let w2 = g.constant(odc_ir::Tensor::from_f32(vec![k, n], &w2v), "w2");
    let w3 = g.constant(odc_ir::Tensor::from_f32(vec![n, p], &w3v), "w3");
    let m1 = g.add(Op::MatMul, &[x1, w1], "m1").unwrap();
    let m2 = g.add(Op::MatMul, &[x2, w2], "m2").unwrap();
    let c = g.add(Op::Concat { axis: 1 }, &[m1, m2], "cat").unwrap();
    let y = g.add(Op::MatMul, &[c, w3], "y").unwrap();
    g.set_output("y", y);
    g.verify().unwrap();
    let x1v = wv(b * r1 * k, 13);
    let x2v = wv(b * r2 * k, 17);
    // Reference in f64.
    let mm = |a: &[f32], w: &[f32], rows: usize, k: usize, n: usize| -> Vec<f64> {
        (0..rows * n).map(|e| (0..k).map(|q| a[e / n * k + q] as f64 * w[q * n + e % n] as f64).sum()).collect()
    };
    let mut want = vec![];
    for bi in 0..b {
        let mut cat = mm(&x1v[bi * r1 * k..(bi + 1) * r1 * k], &w1v, r1, k, n);
        cat.extend(mm(&x2v[bi * r2 * k..(bi + 1) * r2 * k], &w2v, r2, k, n));
        let cat32: Vec<f32> = cat.iter().map(|&v| v as f32).collect();
        want.extend(mm(&cat32, &w3v, r1 + r2, n, p).iter().map(|&v| v as f32));
    }
    let prog = lower(&g, &odc_backends::FusionPlan::none(&g), &odc_backends::LowerOptions::default()).unwrap();
    let copied = prog.kernels.iter().any(|k| k.name.contains("cat"));
    let jit = JitProgram::compile(prog.clone(), OptLevel::Speed).unwrap();
    let got = f32s(&jit.run(&[&bytes(&x1v), &bytes(&x2v)]).unwrap()[0]);
    (got, want, copied, prog)
}

/// A batch-1 concatenation is not copied: both products are written into their slices of one
/// arena buffer (adjacent, in operand order) and the result is the concatenation's.
#[test]
fn contiguous_concat_is_written_in_place() {
    let (got, want, copied, prog) = concat_then_matmul(1);
    assert!(!copied, "{:?}", prog.kernels.iter().map(|k| &k.name).collect::<Vec<_>>());
    let offset = |name: &str| match &prog.buffers.iter().find(|b| b.name == name).unwrap().kind {
        odc_backends::BufferKind::Temp { offset } => *offset,
        k => panic!("{name}: {k:?}"),
    };
    assert_eq!(offset("m2"), offset("m1") + 4 * 6 * 4);
    assert_eq!(offset("cat"), offset("m1"));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
    }
}

/// With batch 2 a slice is not contiguous: the concatenation is copied, with the same result.
#[test]
fn strided_concat_is_copied() {
    let (got, want, copied, _) = concat_then_matmul(2);
    assert!(copied);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
    }
}
