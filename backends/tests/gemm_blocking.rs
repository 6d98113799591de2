//! GEMM kernels whose shapes trigger cache blocking (k blocks with partial sums kept in the
//! output, row blocks, row and column tails), with and without a fused epilogue, against an
//! f64 reference.

use odc_backends::schedule::cache_blocks;
use odc_backends::{lower, JitProgram, LowerOptions, OptLevel};
use odc_ir::{BinaryOp, DType, Graph, Op, Tensor, TensorType};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn check(m: usize, k: usize, n: usize, const_b: bool, epilogue: bool) {
    let (da, db, bias) = (data(m * k, 1), data(k * n, 2), data(n, 3));
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::new(DType::F32, vec![m, k]));
    let b = if const_b { g.constant(Tensor::from_f32(vec![k, n], &db), "b") } else { g.add_input("b", TensorType::new(DType::F32, vec![k, n])) };
    let mut c = g.add(Op::MatMul, &[a, b], "c").unwrap();
    if epilogue {
        let bv = g.constant(Tensor::from_f32(vec![n], &bias), "bias");
        let s = g.add(Op::Binary(BinaryOp::Add), &[c, bv], "add").unwrap();
        let z = g.constant(Tensor::from_f32(vec![], &[0.0]), "zero");
        let zx = g.add(Op::Expand { shape: vec![m, n] }, &[z], "zx").unwrap();
        c = g.add(Op::Binary(BinaryOp::Max), &[s, zx], "relu").unwrap();
    }
    g.set_output("c", c);
    let plan = odc_passes::fusion::greedy(&g);
    let prog = lower(&g, &plan, &LowerOptions::default()).unwrap();
    assert_eq!(prog.kernels.len(), 1, "one GEMM kernel with its epilogue");
    let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (ba, bb) = (bytes(&da), bytes(&db));
    let inputs: Vec<&[u8]> = if const_b { vec![&ba] } else { vec![&ba, &bb] };
    let out = jit.run(&inputs).unwrap().remove(0);
    let got: Vec<f32> = out.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|p| da[i * k + p] as f64 * db[p * n + j] as f64).sum();
            let want = if epilogue { (dot + bias[j] as f64).max(0.0) } else { dot };
            let tol = 1e-5 * (k as f64).sqrt();
            assert!((got[i * n + j] as f64 - want).abs() <= tol, "{m}x{k}x{n} const_b={const_b} epilogue={epilogue}: ({i},{j}) {} vs {want}", got[i * n + j]);
        }
    }
}

#[test]
fn blocking_heuristic_splits_k_and_rows() {
    assert_eq!(cache_blocks(64, 512, 6), (512, 64), "small problems are not blocked");
    let (kc, mc) = cache_blocks(400, 1100, 6);
    assert!(kc % 4 == 0 && kc < 1100 && 1100_usize.div_ceil(kc) == 5, "kc {kc}");
    assert!(mc % 6 == 0 && mc < 400 && mc * kc * 4 <= 256 * 1024, "mc {mc}");
}

#[test]
fn k_and_row_blocks_with_tails() {
    // 5 k blocks (first, middles, last), row blocks of mc plus a row tail, a column tail.
    for (const_b, epilogue) in [(true, true), (false, false), (true, false), (false, true)] {
        check(400, 1100, 19, const_b, epilogue);
    }
}

#[test]
fn k_blocks_only() {
    // k blocks (3 of 200 and 3 of 260), rows unblocked, vector and scalar column tails.
    check(7, 600, 33, true, true);
    check(13, 777, 4, false, true);
}
