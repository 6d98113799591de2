//! Schedules chosen for lowered kernels, and kernels run under them on one and two threads.

use odc_backends::schedule::{GemmTile, Machine, Parallel};
use odc_backends::{lower, FusionPlan, JitProgram, LowerOptions, OptLevel};
use odc_ir::{BinaryOp, DType, Graph, Op, Tensor, TensorType};

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// `x * 3 + 1` over `shape`, one kernel.
fn affine_graph(shape: &[usize]) -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, shape.to_vec()));
    let three = g.constant(Tensor::from_f32(vec![], &[3.0]), "three");
    let one = g.constant(Tensor::from_f32(vec![], &[1.0]), "one");
    let t = g.add(Op::Binary(BinaryOp::Mul), &[x, three], "mul").unwrap();
    let y = g.add(Op::Binary(BinaryOp::Add), &[t, one], "add").unwrap();
    g.set_output("y", y);
    g
}

#[test]
fn short_outer_loops_are_flattened_into_the_parallel_loop() {
    let shape = [3, 300, 300];
    let g = affine_graph(&shape);
    let prog = lower(&g, &odc_passes::fusion::greedy(&g), &LowerOptions::default()).unwrap();
    assert_eq!(prog.kernels.len(), 1);
    let s = prog.kernels[0].schedule;
    assert_eq!(s.parallel, Parallel::Outer { loops: 2 }, "3 channels alone would idle a thread");
    assert_eq!(prog.kernels[0].outer_extent(), 900);
    assert_eq!(s.vector_lanes, 4);
    let x: Vec<f32> = (0..3 * 300 * 300).map(|i| (i % 1000) as f32 * 0.5).collect();
    for threads in [1, 2] {
        let mut jit = JitProgram::compile(prog.clone(), OptLevel::Speed).unwrap();
        jit.set_threads(threads);
        let out = floats(&jit.run(&[&bytes(&x)]).unwrap()[0]);
        for (i, (&o, &xi)) in out.iter().zip(&x).enumerate() {
            assert_eq!(o, xi * 3.0 + 1.0, "element {i} on {threads} threads");
        }
    }
}

#[test]
fn tiny_and_non_float_kernels_stay_sequential_and_scalar() {
    let g = affine_graph(&[8]);
    let prog = lower(&g, &FusionPlan::none(&g), &LowerOptions::default()).unwrap();
    assert!(prog.kernels.iter().all(|k| k.schedule.parallel == Parallel::Sequential));
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::I32, vec![64, 64]));
    let y = g.add(Op::Binary(BinaryOp::Add), &[x, x], "add").unwrap();
    g.set_output("y", y);
    let prog = lower(&g, &FusionPlan::none(&g), &LowerOptions::default()).unwrap();
    assert!(prog.kernels.iter().all(|k| k.schedule.vector_lanes == 1), "f32x4 vectors are for f32 outputs");
}

/// One f32 GEMM `[m, k] x const[k, n]`, lowered for `machine`.
fn gemm_schedule(m: usize, k: usize, n: usize, machine: Machine) -> (GemmTile, Parallel, i64) {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::new(DType::F32, vec![m, k]));
    let w = g.constant(Tensor::from_f32(vec![k, n], &vec![0.5; k * n]), "w");
    let y = g.add(Op::MatMul, &[a, w], "y").unwrap();
    g.set_output("y", y);
    let prog = lower(&g, &odc_passes::fusion::greedy(&g), &LowerOptions { machine, gemm_tile: None }).unwrap();
    let k = prog.kernels.iter().find(|k| k.schedule.tile.is_some()).expect("a GEMM kernel");
    (k.gemm_tile(), k.schedule.parallel, k.outer_extent())
}

#[test]
fn gemm_tiles_follow_the_register_file_and_the_shape() {
    let (t, p, blocks) = gemm_schedule(256, 1024, 256, Machine::X86_64);
    assert_eq!((t.mr, t.nr), (6, 8));
    assert_eq!(t.kc, 256, "k = 1024 is split into four blocks of 256");
    assert_eq!((p, blocks), (Parallel::ColumnBlocks, 32));
    let (t, ..) = gemm_schedule(256, 1024, 256, Machine::AARCH64);
    assert_eq!((t.mr, t.nr), (8, 12));
    let (t, p, _) = gemm_schedule(4, 16, 8, Machine::X86_64);
    assert_eq!((t.kc, t.mc), (16, 4), "small problems are not blocked");
    assert_eq!(p, Parallel::Sequential, "too little work to wake a thread");
}
