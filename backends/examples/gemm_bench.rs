//! GEMM efficiency against the machine's 128-bit FMA peak.
//!
//! `cargo run --release -p odc-backends --example gemm_bench [-- --threads 2] [--mr 6 --nr 8] [--shapes MxNxK,...]
//! [--microkernel-opt none|speed]`
//!
//! 1. Peak: a generated loop of 12 independent f32x4 FMA chains (the same instruction the GEMM
//!    microkernel uses), timed over many iterations.
//! 2. The GEMM microkernel on L1-resident data (24x32x128, A and packed B ~28 KB).
//! 3. A 1024x1024x1024 GEMM, single-threaded and on N threads.
//! Prints GFLOP/s and the fraction of peak for each; medians of repeated runs.

use cranelift_codegen::ir::{types, AbiParam, BlockArg, InstBuilder};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use odc_backends::{lower, FusionPlan, JitProgram, OptLevel};
use odc_ir::{DType, Graph, Op, Tensor, TensorType};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// GFLOP/s of a loop of `chains` independent f32x4 FMAs, `iters` iterations.
fn fma_peak(chains: usize, iters: i64) -> f64 {
    let isa = odc_backends::host_isa(OptLevel::Speed).unwrap();
    let mut m = JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()));
    let mut sig = m.make_signature();
    sig.params.push(AbiParam::new(types::I64));
    sig.returns.push(AbiParam::new(types::F32));
    let id = m.declare_function("peak", Linkage::Local, &sig).unwrap();
    let mut ctx = m.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let n = b.block_params(entry)[0];
        let one = b.ins().f32const(1.0);
        let x = b.ins().splat(types::F32X4, one);
        let half = b.ins().f32const(0.999);
        let y = b.ins().splat(types::F32X4, half);
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        let iv = b.append_block_param(header, types::I64);
        let accs: Vec<_> = (0..chains).map(|_| b.append_block_param(header, types::F32X4)).collect();
        let ex_acc = b.append_block_param(exit, types::F32X4);
        let zero = b.ins().iconst(types::I64, 0);
        let mut args = vec![BlockArg::Value(zero)];
        args.extend((0..chains).map(|_| BlockArg::Value(x)));
        b.ins().jump(header, &args);
        b.switch_to_block(header);
        let c = b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::SignedLessThan, iv, n);
        b.ins().brif(c, body, &[], exit, &[BlockArg::Value(accs[0])]);
        b.switch_to_block(body);
        let next: Vec<_> = accs.iter().map(|&a| b.ins().fma(a, y, x)).collect();
        let iv2 = b.ins().iadd_imm_s(iv, 1);
        let mut back = vec![BlockArg::Value(iv2)];
        back.extend(next.iter().map(|&v| BlockArg::Value(v)));
        b.ins().jump(header, &back);
        b.switch_to_block(exit);
        let r = b.ins().extractlane(ex_acc, 0);
        b.ins().return_(&[r]);
        b.seal_all_blocks();
        b.finalize(m.isa().frontend_config());
    }
    m.define_function(id, &mut ctx).unwrap();
    m.finalize_definitions().unwrap();
    let f: extern "C" fn(i64) -> f32 = unsafe { std::mem::transmute(m.get_finalized_function(id)) };
    let mut times = vec![];
    for _ in 0..7 {
        let t = Instant::now();
        std::hint::black_box(f(iters));
        times.push(t.elapsed().as_secs_f64());
    }
    (chains as f64 * 4.0 * 2.0 * iters as f64) / median(times) / 1e9
}

/// GFLOP/s of `out = a[m,k] @ w[k,n]` (w constant, so packed at compile time).
fn gemm(m: usize, n: usize, k: usize, threads: usize, tile: &odc_backends::LowerOptions, reps: usize) -> f64 {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::new(DType::F32, vec![m, k]));
    let wv: Vec<f32> = (0..k * n).map(|i| ((i * 7919) % 13) as f32 * 0.01 - 0.06).collect();
    let w = g.constant(Tensor::from_f32(vec![k, n], &wv), "w");
    let y = g.add(Op::MatMul, &[a, w], "y").unwrap();
    g.set_output("y", y);
    let prog = lower(&g, &FusionPlan::none(&g), tile).unwrap();
    let mut jit = JitProgram::compile_with(prog, OptLevel::Speed, micro_opt()).unwrap();
    jit.set_threads(threads);
    let av: Vec<u8> = (0..m * k).flat_map(|i| (((i % 17) as f32) * 0.1).to_le_bytes()).collect();
    let mut bufs = jit.buffers();
    jit.run_into(&[&av], &mut bufs).unwrap();
    let mut times = vec![];
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..reps {
            jit.run_into(&[&av], &mut bufs).unwrap();
        }
        times.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    2.0 * (m * n * k) as f64 / median(times) / 1e9
}

/// `--microkernel-opt speed` compiles the microkernels at `opt_level=speed` instead of `none`.
fn micro_opt() -> OptLevel {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--microkernel-opt").and_then(|i| args.get(i + 1)).map(String::as_str) {
        Some("speed") => OptLevel::Speed,
        _ => OptLevel::None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let threads: usize = arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    let mut tile = odc_backends::Target::host_jit(OptLevel::Speed, OptLevel::None).unwrap().lower_options();
    let (mr, nr) = odc_backends::schedule::register_tile(&tile.machine);
    let mr = arg("--mr").and_then(|v| v.parse().ok()).unwrap_or(mr);
    let nr = arg("--nr").and_then(|v| v.parse().ok()).unwrap_or(nr);
    tile.gemm_tile = Some((mr, nr));
    println!("register tile {mr}x{nr}");
    let peak = fma_peak(12, 20_000_000);
    println!("fma peak (12 chains of f32x4 fma): {peak:.1} GFLOP/s");
    if let Some(shapes) = arg("--shapes") {
        for sh in shapes.split(',') {
            let d: Vec<usize> = sh.split('x').filter_map(|v| v.parse().ok()).collect();
            assert!(d.len() == 3, "--shapes takes MxNxK[,MxNxK...]");
            let r = gemm(d[0], d[1], d[2], 1, &tile, (1 << 26) / (d[0] * d[1] * d[2]).max(1) + 1);
            println!("gemm {sh}, 1 thread: {r:.1} GFLOP/s = {:.0}% of peak", 100.0 * r / peak);
        }
        return;
    }
    let l1 = gemm(24, 32, 128, 1, &tile, 2000);
    println!("gemm 24x32x128 (L1-resident), 1 thread: {l1:.1} GFLOP/s = {:.0}% of peak", 100.0 * l1 / peak);
    let big1 = gemm(1024, 1024, 1024, 1, &tile, 2);
    println!("gemm 1024^3, 1 thread: {big1:.1} GFLOP/s = {:.0}% of peak", 100.0 * big1 / peak);
    let bign = gemm(1024, 1024, 1024, threads, &tile, 2);
    println!("gemm 1024^3, {threads} threads: {bign:.1} GFLOP/s = {:.2}x one thread", bign / big1);
}
