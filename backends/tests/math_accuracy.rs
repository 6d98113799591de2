//! The generated math library against Rust's libm, over dense input ranges, for f32 (vector
//! and scalar paths) and f64. Errors are measured relative to the true value, with an absolute
//! floor for results near zero.

use odc_backends::{lower, JitProgram, OptLevel};
use odc_ir::{DType, Graph, Op, TensorType, UnaryOp};

fn run_unary(op: UnaryOp, dtype: DType, xs: &[f64]) -> Vec<f64> {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(dtype, vec![xs.len()]));
    let y = g.add(Op::Unary(op), &[x], "y").unwrap();
    g.set_output("y", y);
    run_graph(&g, dtype, xs)
}

/// Compile `g` (one input `x`, one output, both of `dtype`) and run it on `xs`.
fn run_graph(g: &Graph, dtype: DType, xs: &[f64]) -> Vec<f64> {
    let prog = lower(g, &odc_backends::FusionPlan::none(g), &odc_backends::LowerOptions::default()).unwrap();
    let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
    let bytes: Vec<u8> = match dtype {
        DType::F32 => xs.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        _ => xs.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    };
    let out = jit.run(&[&bytes]).unwrap().remove(0);
    match dtype {
        DType::F32 => out.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        _ => out.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
    }
}

fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect()
}

fn logspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    linspace(lo.ln(), hi.ln(), n).into_iter().map(f64::exp).collect()
}

/// Worst relative error of `op` over `xs` (absolute below `floor`).
fn worst(op: UnaryOp, dtype: DType, xs: &[f64], reference: fn(f64) -> f64, floor: f64) -> (f64, f64) {
    // Odd length keeps a vector body and a scalar tail in every f32 run.
    let got = run_unary(op, dtype, xs);
    let mut w = (0.0, 0.0);
    for (&x, &g) in xs.iter().zip(&got) {
        let x = if dtype == DType::F32 { x as f32 as f64 } else { x };
        let r = reference(x);
        let r = if dtype == DType::F32 { r as f32 as f64 } else { r };
        let err = if r.is_nan() {
            if g.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else if r.is_infinite() {
            if g == r {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (g - r).abs() / r.abs().max(floor)
        };
        if err > w.1 {
            w = (x, err);
        }
    }
    w
}

fn erf(x: f64) -> f64 {
    // Reference erf by a high-order series / continued fraction in f64 (std has no erf).
    if x.abs() < 3.0 {
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-30 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        let a = x.abs();
        let mut cf = 0.0;
        for k in (1..=200).rev() {
            cf = (k as f64 / 2.0) / (a + cf);
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + cf);
        (1.0 - erfc).copysign(x)
    }
}

struct Case {
    op: UnaryOp,
    xs: Vec<f64>,
    reference: fn(f64) -> f64,
    f32_tol: f64,
    f64_tol: f64,
}

fn cases() -> Vec<Case> {
    let sym = |v: Vec<f64>| -> Vec<f64> { v.iter().map(|x| -x).chain(v.iter().copied()).collect() };
    vec![
        Case { op: UnaryOp::Exp, xs: linspace(-103.0, 88.7, 20001), reference: f64::exp, f32_tol: 3e-7, f64_tol: 1e-15 },
        Case { op: UnaryOp::Log, xs: logspace(1e-37, 1e37, 20001), reference: f64::ln, f32_tol: 3e-7, f64_tol: 1e-15 },
        Case { op: UnaryOp::Sin, xs: linspace(-100.0, 100.0, 20001), reference: f64::sin, f32_tol: 2e-6, f64_tol: 1e-14 },
        Case { op: UnaryOp::Cos, xs: linspace(-100.0, 100.0, 20001), reference: f64::cos, f32_tol: 2e-6, f64_tol: 1e-14 },
        Case { op: UnaryOp::Tan, xs: linspace(-1.5, 1.5, 20001), reference: f64::tan, f32_tol: 1e-6, f64_tol: 1e-14 },
        Case { op: UnaryOp::Atan, xs: sym(logspace(1e-6, 1e6, 10001)), reference: f64::atan, f32_tol: 3e-7, f64_tol: 1e-15 },
        Case { op: UnaryOp::Asin, xs: linspace(-1.0, 1.0, 20001), reference: f64::asin, f32_tol: 1e-6, f64_tol: 1e-14 },
        Case { op: UnaryOp::Acos, xs: linspace(-1.0, 1.0, 20001), reference: f64::acos, f32_tol: 1e-6, f64_tol: 1e-14 },
        Case { op: UnaryOp::Tanh, xs: linspace(-20.0, 20.0, 20001), reference: f64::tanh, f32_tol: 3e-7, f64_tol: 1e-15 },
        Case { op: UnaryOp::Sinh, xs: linspace(-80.0, 80.0, 20001), reference: f64::sinh, f32_tol: 5e-7, f64_tol: 1e-14 },
        Case { op: UnaryOp::Cosh, xs: linspace(-80.0, 80.0, 20001), reference: f64::cosh, f32_tol: 5e-7, f64_tol: 1e-14 },
        Case { op: UnaryOp::Asinh, xs: sym(logspace(1e-6, 1e6, 10001)), reference: f64::asinh, f32_tol: 5e-7, f64_tol: 1e-14 },
        Case { op: UnaryOp::Acosh, xs: logspace(1.0, 1e6, 20001), reference: f64::acosh, f32_tol: 5e-7, f64_tol: 1e-14 },
        Case { op: UnaryOp::Atanh, xs: linspace(-0.999, 0.999, 20001), reference: f64::atanh, f32_tol: 5e-7, f64_tol: 5e-14 },
        Case { op: UnaryOp::Erf, xs: linspace(-6.0, 6.0, 20001), reference: erf, f32_tol: 3e-7, f64_tol: 1e-13 },
        Case { op: UnaryOp::Sqrt, xs: logspace(1e-30, 1e30, 2001), reference: f64::sqrt, f32_tol: 0.0, f64_tol: 0.0 },
    ]
}

#[test]
fn f32_transcendentals_are_accurate() {
    let mut report = vec![];
    for c in cases() {
        let (x, e) = worst(c.op, DType::F32, &c.xs, c.reference, 1e-30);
        report.push(format!("{:?}: worst {e:.2e} at {x}", c.op));
        assert!(e <= c.f32_tol, "f32 {:?}: relative error {e:.3e} at x = {x} exceeds {:.1e}", c.op, c.f32_tol);
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn f64_transcendentals_are_accurate() {
    let mut report = vec![];
    for c in cases() {
        let (x, e) = worst(c.op, DType::F64, &c.xs, c.reference, 1e-300);
        report.push(format!("{:?}: worst {e:.2e} at {x}", c.op));
        assert!(e <= c.f64_tol, "f64 {:?}: relative error {e:.3e} at x = {x} exceeds {:.1e}", c.op, c.f64_tol);
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn special_values() {
    let xs = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0];
    for dtype in [DType::F32, DType::F64] {
        let e = run_unary(UnaryOp::Exp, dtype, &xs);
        assert!(e[0].is_nan() && e[1] == f64::INFINITY && e[2] == 0.0 && e[3] == 1.0 && e[4] == 1.0, "{dtype} exp {e:?}");
        let l = run_unary(UnaryOp::Log, dtype, &xs);
        assert!(l[0].is_nan() && l[1] == f64::INFINITY && l[2].is_nan() && l[3] == f64::NEG_INFINITY, "{dtype} log {l:?}");
        let t = run_unary(UnaryOp::Tanh, dtype, &xs);
        assert!(t[0].is_nan() && t[1] == 1.0 && t[2] == -1.0 && t[3] == 0.0, "{dtype} tanh {t:?}");
        let s = run_unary(UnaryOp::Sin, dtype, &xs);
        assert!(s[0].is_nan() && s[1].is_nan() && s[2].is_nan() && s[3] == 0.0, "{dtype} sin {s:?}");
        let r = run_unary(UnaryOp::Erf, dtype, &xs);
        assert!(r[0].is_nan() && r[1] == 1.0 && r[2] == -1.0 && r[3] == 0.0, "{dtype} erf {r:?}");
    }
}

/// `x ** y` for a constant scalar `y` (the kernel sees it as a constant and may expand it).
fn run_pow_const(dtype: DType, xs: &[f64], y: f64) -> Vec<f64> {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(dtype, vec![xs.len()]));
    let yt = match dtype {
        DType::F32 => odc_ir::Tensor::from_f32(vec![], &[y as f32]),
        _ => odc_ir::Tensor::from_f64_as(DType::F64, vec![], &[y]).unwrap(),
    };
    let yc = g.constant(yt, "y");
    let p = g.add(Op::Binary(odc_ir::BinaryOp::Pow), &[x, yc], "p").unwrap();
    g.set_output("p", p);
    run_graph(&g, dtype, xs)
}

/// Constant exponents that are multiples of 1/4 take the multiply/sqrt expansion; the others
/// the general exp/log path. Both agree with libm's `powf` and keep its special values.
#[test]
fn pow_by_a_constant_is_accurate() {
    let xs: Vec<f64> = logspace(1e-6, 1e6, 4001);
    for y in [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.75, 3.0, 5.0, -0.5, -0.75, -2.0, 0.3, 2.5e1] {
        for dtype in [DType::F32, DType::F64] {
            let got = run_pow_const(dtype, &xs, y);
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
            for (&x, &g) in xs.iter().zip(&got) {
                let x = if dtype == DType::F32 { x as f32 as f64 } else { x };
                let r = x.powf(y);
                let r = if dtype == DType::F32 { r as f32 as f64 } else { r };
                if r.is_finite() && r.abs() > 1e-30 && r.abs() < 1e30 {
                    let err = (g - r).abs() / r.abs();
                    assert!(err <= tol, "{dtype} {x} ** {y}: {g} vs {r} (rel err {err:.2e})");
                }
            }
        }
    }
    let special = [f64::NAN, f64::INFINITY, 0.0, -0.0, -2.0, 1.0, 4.0];
    for y in [0.75, -0.75, 0.5, 1.5, 2.0, 3.0, -1.0, 0.0] {
        for dtype in [DType::F32, DType::F64] {
            let got = run_pow_const(dtype, &special, y);
            for (&x, &g) in special.iter().zip(&got) {
                let r = x.powf(y);
                let r = if dtype == DType::F32 { r as f32 as f64 } else { r };
                let same = if r.is_nan() || r == 0.0 || r.is_infinite() {
                    (r.is_nan() && g.is_nan()) || (r == g && r.is_sign_negative() == g.is_sign_negative())
                } else {
                    (g - r).abs() <= 1e-6 * r.abs()
                };
                assert!(same, "{dtype} {x} ** {y}: {g} vs {r}");
            }
        }
    }
}
