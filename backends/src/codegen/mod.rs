//! Kernel IR → Cranelift IR.
//!
//! Each kernel becomes `fn(args: *const *mut u8, lo: i64, hi: i64) -> i32`: `args` holds the buffer
//! base pointers in slot order, `lo..hi` is the range of the outermost loop (so a caller can split
//! it across threads) and the result is a status (0 = ok, 1 = an index was out of range).
//!
//! Placement: every expression node is emitted in the innermost loop among its free variables,
//! so invariant work is hoisted out of loops by construction. `Reduce` nodes open their own loop.
//!
//! The kernel's [`crate::schedule::Schedule`] says which loops to vectorise, unroll and split;
//! this module follows it.
//!
//! Vectorisation: when the schedule asks for it (f32 outputs), the innermost output loop runs 4 lanes at a time
//! with a scalar tail. Within it each node is *uniform* (does not depend on the lane variable), a
//! *vector* (f32x4/i32x4, or an i32x4 mask for bools) or *lanes* (four scalars, the general
//! fallback: gathers, f64 and i64 arithmetic). Contiguous loads become vector loads.
//!
//! This file owns the kernel function's frame (entry block, buffer bases, status) and the state
//! the emitters share; node placement is in `placement.rs`, loop nests and memory access in
//! `loops.rs`, scalar and vector expressions in `scalar.rs` and `vector.rs`, GEMM microkernels
//! in `gemm.rs`. Nothing here chooses a schedule.

mod gemm;
mod loops;
mod placement;
mod scalar;
mod vector;

use crate::kernel::{Body, KBinary, Kernel, Var, E};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{self, types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use odc_ir::DType;
use placement::{analyse, Analysis};
use std::collections::HashMap;

/// Target facts the generator needs.
#[derive(Clone, Copy, Debug)]
pub struct CodegenOptions {
    /// Emit f32x4 code for f32 kernels.
    pub vectorize: bool,
    /// The target has a fused multiply-add (otherwise `Fma` is a multiply and an add).
    pub has_fma: bool,
    /// The target rounds floats to integers natively (x86_64 needs SSE4.1). Without it rounding
    /// is built from adds of 2^23 / 2^52, so no libcall is ever emitted.
    pub native_rounding: bool,
    /// GEMM microkernels accumulate with `fma` (otherwise a multiply and an add), wherever the
    /// target has one. Cranelift's x86_64 `fma` overwrites a multiplicand (`vfmadd213`/`132`),
    /// but the microkernel broadcasts A from memory per use (see `gemm_shared_broadcast_rows`),
    /// so the overwritten register is a fresh broadcast and only the shared row costs a copy.
    /// The `vmulps`+`vaddps` pair needs twice the FP uops: it keeps pace with `fma` only where
    /// adds have pipes of their own (AMD Zen); on Intel's Golden Cove cores multiplies and adds
    /// share port 1, and `fma` measured 7-12% faster (`gemm_bench`, Xeon with AVX-512,
    /// 2026-12-02: 24x32x128 33.8 vs 31.5 GFLOP/s, 256x196x1152 34.9 vs 31.1, best of 8).
    pub gemm_fma: bool,
    /// Rows of a GEMM tile whose A broadcast is loaded once per k step and shared by the row's
    /// vectors; the other rows broadcast from memory once per use. On x86_64 a shared broadcast
    /// is a load plus a shuffle on an FP pipe and a per-use one a load-port uop, so the split
    /// balances two load ports against four FP pipes: for the 6x8 tile, one shared row gives
    /// 13 loads and 25 FP ops per k step instead of 14 and 24 (83% -> 87% of FMA peak,
    /// `backends/examples/gemm_bench.rs`, `vmulps`+`vaddps` on an AMD EPYC). With `fma` the
    /// shared row also costs a register copy (`vfmadd213` overwrites it); sharing no row
    /// measured within noise of one on an Intel Xeon. aarch64's `ld1r` is a plain load, so all
    /// rows share.
    pub gemm_shared_broadcast_rows: usize,
    /// The target's f32x4 `fmin`/`fmax` (NaN-propagating) is one instruction (aarch64). On
    /// x86_64 Cranelift expands it to eight; the generator then builds it from `minps`/`maxps`
    /// (one instruction against a constant such as ReLU's 0, three otherwise).
    pub native_fminmax: bool,
    /// In a mixed-sign 8-bit dot product, the unsigned operand comes first: the operand order
    /// of the pattern Cranelift folds into one instruction (aarch64 `usdot`; x86_64's
    /// `vpdpbusd` pattern takes the signed one first).
    pub dot_unsigned_first: bool,
}

const LANES: usize = 4;

/// The Cranelift type holding a compute type.
pub fn clif_type(t: DType) -> Type {
    match t {
        DType::Bool | DType::I8 | DType::U8 => types::I8,
        DType::I16 | DType::U16 => types::I16,
        DType::I32 | DType::U32 => types::I32,
        DType::I64 | DType::U64 => types::I64,
        DType::F32 => types::F32,
        DType::F64 => types::F64,
        other => panic!("{other} is not a kernel compute type"),
    }
}

/// The integer condition code of a comparison.
pub(super) fn int_cc(op: KBinary, signed: bool) -> IntCC {
    match (op, signed) {
        (KBinary::Eq, _) => IntCC::Equal,
        (KBinary::Ne, _) => IntCC::NotEqual,
        (KBinary::Lt, true) => IntCC::SignedLessThan,
        (KBinary::Le, true) => IntCC::SignedLessThanOrEqual,
        (KBinary::Gt, true) => IntCC::SignedGreaterThan,
        (KBinary::Ge, true) => IntCC::SignedGreaterThanOrEqual,
        (KBinary::Lt, false) => IntCC::UnsignedLessThan,
        (KBinary::Le, false) => IntCC::UnsignedLessThanOrEqual,
        (KBinary::Gt, false) => IntCC::UnsignedGreaterThan,
        (KBinary::Ge, false) => IntCC::UnsignedGreaterThanOrEqual,
        (other, _) => unreachable!("{other:?} is not a comparison"),
    }
}

pub(crate) fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags for vector bitcasts (only an explicit byte order is allowed).
pub(crate) fn bflags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

pub(crate) fn vflags() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_endianness(Endianness::Little)
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum VVal {
    /// A vector register (f32x4 / i32x4; bools as i32x4 masks).
    V(Value),
    /// Four scalars.
    L([Value; LANES]),
}

#[derive(Clone, Default)]
pub(crate) struct Memo {
    pub(crate) scalar: HashMap<E, Value>,
    pub(crate) vector: HashMap<E, VVal>,
    pub(crate) lanes: HashMap<(E, usize), Value>,
}

pub(crate) struct Cg<'k, 'f> {
    pub(crate) k: &'k Kernel,
    pub(crate) an: Analysis,
    pub(crate) b: FunctionBuilder<'f>,
    pub(crate) ptr: Type,
    pub(crate) opts: CodegenOptions,
    pub(crate) bases: Vec<Value>,
    pub(crate) status: Variable,
    pub(crate) loopvar: HashMap<Var, Value>,
    pub(crate) memo: Memo,
    /// The lane variable of the current vector loop.
    pub(crate) vv: Option<Var>,
}

/// Fill `func` (whose signature is `(ptr, i64, i64) -> i32`) with the code of `k`.
pub fn build_kernel(
    k: &Kernel,
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    frontend: cranelift_codegen::isa::TargetFrontendConfig,
    opts: CodegenOptions,
) {
    let ptr = frontend.pointer_type();
    let b = FunctionBuilder::new(func, fctx);
    let an = analyse(k);
    let mut cg = Cg {
        k,
        an,
        b,
        ptr,
        opts,
        bases: vec![],
        status: Variable::from_u32(0),
        loopvar: HashMap::new(),
        memo: Memo::default(),
        vv: None,
    };
    cg.run();
    cg.b.seal_all_blocks();
    cg.b.finalize(frontend);
}

impl<'k, 'f> Cg<'k, 'f> {
    fn run(&mut self) {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (args, lo, hi) = (params[0], params[1], params[2]);
        self.status = self.b.declare_var(types::I32);
        let zero = self.b.ins().iconst(types::I32, 0);
        self.b.def_var(self.status, zero);
        for slot in 0..self.k.bufs.len() {
            let p = self.b.ins().load(self.ptr, flags(), args, (slot * self.ptr.bytes() as usize) as i32);
            self.bases.push(p);
        }
        // A GEMM's microkernel needs every vector register: its epilogue's invariants (ReLU's 0,
        // ...) are rematerialised at each use rather than hoisted here and kept live across the
        // k loops, where they cost an accumulator spill (measured: +35% on a 2048x49x512 conv
        // with ReLU).
        if !matches!(self.k.body, Body::Gemm(_)) {
            self.emit_scope(None);
        }
        match &self.k.body {
            Body::Map { .. } if self.k.flattened_outer_loops() > 1 => self.emit_flattened_outer(self.k.flattened_outer_loops(), lo, hi),
            Body::Map { .. } => self.emit_output_level(0, lo, hi),
            Body::Scatter { .. } => self.emit_scatter_level(0, lo, hi),
            Body::Gemm(g) => self.emit_gemm(g, lo, hi),
        }
        let st = self.b.use_var(self.status);
        self.b.ins().return_(&[st]);
    }
}

/// The signature every kernel function has.
pub fn kernel_signature(call_conv: cranelift_codegen::isa::CallConv, ptr: Type) -> ir::Signature {
    let mut sig = ir::Signature::new(call_conv);
    sig.params.push(ir::AbiParam::new(ptr));
    sig.params.push(ir::AbiParam::new(types::I64));
    sig.params.push(ir::AbiParam::new(types::I64));
    sig.returns.push(ir::AbiParam::new(types::I32));
    sig
}

