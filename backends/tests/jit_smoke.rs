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
    let prog = lower(g, &odc_backends::FusionPlan::none(), &odc_backends::LowerOptions::default()).unwrap();
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
