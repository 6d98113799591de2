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

use crate::kernel::{raw_type, Body, Expr, KBinary, KUnary, Kernel, Var, E};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{self, types, BlockArg, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use odc_ir::{DType, ReduceOp};
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

fn vec_type(t: DType) -> Option<Type> {
    match t {
        DType::F32 => Some(types::F32X4),
        DType::I32 | DType::Bool => Some(types::I32X4),
        _ => None,
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

/// Free variables, homes and loop depths of a kernel's nodes.
pub(crate) struct Analysis {
    free: Vec<Vec<Var>>,
    by_home: HashMap<Option<Var>, Vec<E>>,
}

fn analyse(k: &Kernel) -> Analysis {
    let n = k.nodes.len();
    let mut live = vec![false; n];
    let roots = k.body.roots();
    let mut stack = roots;
    while let Some(e) = stack.pop() {
        if !live[e.0 as usize] {
            live[e.0 as usize] = true;
            stack.extend(k.operands(e));
        }
    }
    // Free variables, bottom-up (operands precede users in the arena).
    let mut free: Vec<Vec<Var>> = vec![vec![]; n];
    for i in 0..n {
        if !live[i] {
            continue;
        }
        let e = E(i as u32);
        let mut f: Vec<Var> = match k.node(e) {
            Expr::Var(v) => vec![*v],
            // The accumulator varies with the GEMM's (i, j): the last two domain variables.
            Expr::Acc => k.domain[k.domain.len().saturating_sub(2)..].to_vec(),
            _ => k.operands(e).iter().flat_map(|o| free[o.0 as usize].iter().copied()).collect(),
        };
        if let Expr::Reduce { var, .. } = k.node(e) {
            f.retain(|v| v != var);
        }
        f.sort_unstable();
        f.dedup();
        free[i] = f;
    }
    // Loop depths: output vars by position, reduce vars one below the reduce's home (users first).
    let mut depth: HashMap<Var, u32> = HashMap::new();
    for (i, v) in k.domain.iter().enumerate() {
        depth.insert(*v, i as u32 + 1);
    }
    for i in (0..n).rev() {
        if !live[i] {
            continue;
        }
        if let Expr::Reduce { var, .. } = k.nodes[i] {
            let d = free[i].iter().map(|v| depth[v]).max().unwrap_or(0);
            depth.insert(var, d + 1);
        }
    }
    let mut by_home: HashMap<Option<Var>, Vec<E>> = HashMap::new();
    for i in 0..n {
        if !live[i] {
            continue;
        }
        let h = free[i].iter().copied().max_by_key(|v| depth[v]);
        by_home.entry(h).or_default().push(E(i as u32));
    }
    Analysis { free, by_home }
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

    // ---------------- structure ----------------

    fn depends_on(&self, e: E, v: Var) -> bool {
        self.an.free[e.0 as usize].contains(&v)
    }

    /// Emit every live node whose home is `scope`.
    pub(crate) fn emit_scope(&mut self, scope: Option<Var>) {
        let nodes = self.an.by_home.get(&scope).cloned().unwrap_or_default();
        for e in nodes {
            match self.vv {
                Some(vv) if self.depends_on(e, vv) => {
                    self.emit_vec(e);
                }
                _ => {
                    self.emit_s(e);
                }
            }
        }
    }

    /// A counted loop `for iv in start..end step` carrying `init`; returns the final iv and values.
    pub(crate) fn build_loop<F>(&mut self, start: Value, end: Value, step: i64, init: &[Value], body: F) -> (Value, Vec<Value>)
    where
        F: FnOnce(&mut Self, Value, Vec<Value>) -> Vec<Value>,
    {
        let header = self.b.create_block();
        let body_blk = self.b.create_block();
        let exit = self.b.create_block();
        let iv = self.b.append_block_param(header, types::I64);
        let mut carried = vec![];
        for &v in init {
            let t = self.b.func.dfg.value_type(v);
            carried.push(self.b.append_block_param(header, t));
        }
        let exit_iv = self.b.append_block_param(exit, types::I64);
        let mut exit_vals = vec![];
        for &v in init {
            let t = self.b.func.dfg.value_type(v);
            exit_vals.push(self.b.append_block_param(exit, t));
        }
        let mut args: Vec<BlockArg> = vec![BlockArg::Value(start)];
        args.extend(init.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);

        self.b.switch_to_block(header);
        let cond = if step == 1 {
            self.b.ins().icmp(IntCC::SignedLessThan, iv, end)
        } else {
            let next = self.b.ins().iadd_imm_s(iv, step);
            self.b.ins().icmp(IntCC::SignedLessThanOrEqual, next, end)
        };
        let mut exit_args: Vec<BlockArg> = vec![BlockArg::Value(iv)];
        exit_args.extend(carried.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().brif(cond, body_blk, &[], exit, &exit_args);

        self.b.switch_to_block(body_blk);
        let saved = self.memo.clone();
        let results = body(self, iv, carried);
        self.memo = saved;
        let next = self.b.ins().iadd_imm_s(iv, step);
        let mut back: Vec<BlockArg> = vec![BlockArg::Value(next)];
        back.extend(results.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &back);

        self.b.switch_to_block(exit);
        (exit_iv, exit_vals)
    }

    pub(crate) fn iconst64(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    fn level_bounds(&mut self, level: usize, lo: Value, hi: Value) -> (Value, Value) {
        if level == 0 {
            (lo, hi)
        } else {
            let v = self.k.domain[level];
            let ext = self.k.extent(v);
            (self.iconst64(0), self.iconst64(ext))
        }
    }

    fn emit_output_level(&mut self, level: usize, lo: Value, hi: Value) {
        let n = self.k.domain.len();
        let var = self.k.domain[level];
        let (start, end) = self.level_bounds(level, lo, hi);
        let innermost = level + 1 == n;
        // The schedule asks for vectors only on f32 outputs; the target must have them.
        let vectorize = innermost && self.opts.vectorize && self.k.schedule.vector_lanes == LANES && self.k.extent(var) >= LANES as i64;
        let mut tail_start = start;
        if vectorize {
            let (iv_end, _) = self.build_loop(start, end, LANES as i64, &[], |cg, iv, _| {
                cg.loopvar.insert(var, iv);
                cg.vv = Some(var);
                cg.emit_scope(Some(var));
                cg.store_map_vector();
                cg.vv = None;
                vec![]
            });
            tail_start = iv_end;
        }
        self.build_loop(tail_start, end, 1, &[], |cg, iv, _| {
            cg.loopvar.insert(var, iv);
            cg.emit_scope(Some(var));
            if innermost {
                cg.store_map_scalar();
            } else {
                cg.emit_output_level(level + 1, lo, hi);
            }
            vec![]
        });
    }

    /// The first `loops` output loops as one loop over `lo..hi` of their flattened index (the
    /// schedule's parallel loop), then the remaining levels.
    fn emit_flattened_outer(&mut self, loops: usize, lo: Value, hi: Value) {
        let vars = self.k.domain[..loops].to_vec();
        self.build_loop(lo, hi, 1, &[], |cg, t, _| {
            let mut rem = t;
            for &v in vars.iter().rev() {
                let e = cg.k.extent(v);
                let i = cg.b.ins().urem_imm_s(rem, e);
                rem = cg.b.ins().udiv_imm_s(rem, e);
                cg.loopvar.insert(v, i);
            }
            for &v in &vars {
                cg.emit_scope(Some(v));
            }
            cg.emit_output_level(loops, lo, hi);
            vec![]
        });
    }

    fn emit_scatter_level(&mut self, level: usize, lo: Value, hi: Value) {
        let n = self.k.domain.len();
        let var = self.k.domain[level];
        let (start, end) = self.level_bounds(level, lo, hi);
        self.build_loop(start, end, 1, &[], |cg, iv, _| {
            cg.loopvar.insert(var, iv);
            cg.emit_scope(Some(var));
            if level + 1 == n {
                let Body::Scatter { index, value } = cg.k.body.clone() else { unreachable!() };
                let idx = cg.emit_s(index);
                let val = cg.emit_s(value);
                cg.store_elem(idx, val);
            } else {
                cg.emit_scatter_level(level + 1, lo, hi);
            }
            vec![]
        });
    }

    /// Row-major flat index of the current domain point (with the lane variable at lane 0).
    fn domain_flat_index(&mut self) -> Value {
        let mut acc = self.iconst64(0);
        let mut stride = 1i64;
        for &v in self.k.domain.clone().iter().rev() {
            let iv = self.loopvar[&v];
            let t = self.b.ins().imul_imm_s(iv, stride);
            acc = self.b.ins().iadd(acc, t);
            stride *= self.k.extent(v);
        }
        acc
    }

    fn store_map_scalar(&mut self) {
        let Body::Map { stores } = self.k.body.clone() else { unreachable!() };
        for s in stores {
            let v = self.emit_s(s.value);
            let idx = match s.index {
                Some(i) => self.emit_s(i),
                None => self.domain_flat_index(),
            };
            self.store_elem(idx, v);
        }
    }

    /// The stores of four lanes: a vector store where the index advances by one element per
    /// lane, else the vector's lanes stored one by one.
    fn store_map_vector(&mut self) {
        let Body::Map { stores } = self.k.body.clone() else { unreachable!() };
        let vv = self.vv.expect("vector loop");
        for s in stores {
            let v = self.as_vector(s.value, DType::F32);
            let contiguous = s.index.is_none_or(|i| self.lane_coef(i, vv) == Some(1));
            if contiguous {
                let idx = match s.index {
                    Some(i) => self.emit_lane(i, 0),
                    None => self.domain_flat_index(),
                };
                let addr = self.elem_addr(0, idx, 4);
                self.b.ins().store(vflags(), v, addr, 0);
            } else {
                let i = s.index.expect("the row-major index is contiguous");
                for l in 0..LANES {
                    let idx = self.emit_lane(i, l);
                    let x = self.b.ins().extractlane(v, l as u8);
                    let addr = self.elem_addr(0, idx, 4);
                    self.b.ins().store(flags(), x, addr, 0);
                }
            }
        }
    }

    pub(crate) fn elem_addr(&mut self, buf: usize, idx: Value, size: i64) -> Value {
        let off = if size == 1 { idx } else { self.b.ins().imul_imm_s(idx, size) };
        let off = if self.ptr == types::I64 { off } else { self.b.ins().ireduce(self.ptr, off) };
        self.b.ins().iadd(self.bases[buf], off)
    }

    /// Store a raw value into element `idx` of buffer 0.
    pub(crate) fn store_elem(&mut self, idx: Value, v: Value) {
        let storage = self.k.bufs[0].dtype;
        if storage.is_packed() {
            let bits = storage.bits() as i64;
            let per_byte = 8 / bits;
            let byte_idx = self.b.ins().udiv_imm_s(idx, per_byte);
            let addr = self.elem_addr(0, byte_idx, 1);
            let old = self.b.ins().load(types::I8, flags(), addr, 0);
            let lane = self.b.ins().urem_imm_s(idx, per_byte);
            let shift = self.b.ins().imul_imm_s(lane, bits);
            let shift8 = self.b.ins().ireduce(types::I8, shift);
            let m = self.b.ins().iconst(types::I8, (1i64 << bits) - 1);
            let val = self.b.ins().band(v, m);
            let val = self.b.ins().ishl(val, shift8);
            let hole = self.b.ins().ishl(m, shift8);
            let hole = self.b.ins().bnot(hole);
            let kept = self.b.ins().band(old, hole);
            let new = self.b.ins().bor(kept, val);
            self.b.ins().store(flags(), new, addr, 0);
        } else {
            let size = (storage.bits() / 8) as i64;
            let addr = self.elem_addr(0, idx, size);
            self.b.ins().store(flags(), v, addr, 0);
        }
    }

    fn load_elem(&mut self, buf: usize, idx: Value) -> Value {
        let storage = self.k.bufs[buf].dtype;
        let raw = raw_type(storage);
        if storage.is_packed() {
            let bits = storage.bits() as i64;
            let per_byte = 8 / bits;
            let byte_idx = self.b.ins().udiv_imm_s(idx, per_byte);
            let addr = self.elem_addr(buf, byte_idx, 1);
            let byte = self.b.ins().load(types::I8, flags(), addr, 0);
            let lane = self.b.ins().urem_imm_s(idx, per_byte);
            let shift = self.b.ins().imul_imm_s(lane, bits);
            let shift8 = self.b.ins().ireduce(types::I8, shift);
            let v = self.b.ins().ushr(byte, shift8);
            let up = 8 - bits;
            let v = self.b.ins().ishl_imm_s(v, up);
            if raw.is_signed_int() {
                self.b.ins().sshr_imm_s(v, up)
            } else {
                self.b.ins().ushr_imm_s(v, up)
            }
        } else {
            let size = (storage.bits() / 8) as i64;
            let addr = self.elem_addr(buf, idx, size);
            self.b.ins().load(clif_type(raw), flags(), addr, 0)
        }
    }

    // ---------------- scalar emission ----------------

    pub(crate) fn emit_s(&mut self, e: E) -> Value {
        if let Some(&v) = self.memo.scalar.get(&e) {
            return v;
        }
        let node = self.k.node(e).clone();
        let ty = self.k.ty(e);
        let v = match node {
            Expr::Reduce { op, var, body } => self.emit_reduce_scalar(op, var, body, ty),
            Expr::Var(v) => self.loopvar[&v],
            _ => {
                let args: Vec<Value> = self.k.operands(e).into_iter().map(|o| self.emit_s(o)).collect();
                self.scalar_op(e, &node, ty, &args)
            }
        };
        self.memo.scalar.insert(e, v);
        v
    }

    fn reduce_init(&mut self, op: ReduceOp, ty: DType) -> Value {
        let t = clif_type(ty);
        match (op, ty) {
            (ReduceOp::Sum, DType::F32) => self.b.ins().f32const(0.0),
            (ReduceOp::Sum, DType::F64) => self.b.ins().f64const(0.0),
            (ReduceOp::Prod, DType::F32) => self.b.ins().f32const(1.0),
            (ReduceOp::Prod, DType::F64) => self.b.ins().f64const(1.0),
            (ReduceOp::Max, DType::F32) => self.b.ins().f32const(f32::NEG_INFINITY),
            (ReduceOp::Max, DType::F64) => self.b.ins().f64const(f64::NEG_INFINITY),
            (ReduceOp::Min, DType::F32) => self.b.ins().f32const(f32::INFINITY),
            (ReduceOp::Min, DType::F64) => self.b.ins().f64const(f64::INFINITY),
            (ReduceOp::Sum, _) => self.b.ins().iconst(t, 0),
            (ReduceOp::Prod, _) => self.b.ins().iconst(t, 1),
            (ReduceOp::Max, _) => {
                let (lo, _) = crate::kernel::int_limits(ty);
                let lo = if ty == DType::U64 { 0 } else { lo };
                self.b.ins().iconst(t, lo)
            }
            (ReduceOp::Min, _) => {
                let (_, hi) = crate::kernel::int_limits(ty);
                let hi = if ty == DType::U64 { -1 } else { hi };
                self.b.ins().iconst(t, hi)
            }
        }
    }

    fn reduce_combine(&mut self, op: ReduceOp, ty: DType, acc: Value, x: Value) -> Value {
        let ins = self.b.ins();
        match (op, ty.is_float()) {
            (ReduceOp::Sum, true) => ins.fadd(acc, x),
            (ReduceOp::Prod, true) => ins.fmul(acc, x),
            (ReduceOp::Max, true) => ins.fmax(acc, x),
            (ReduceOp::Min, true) => ins.fmin(acc, x),
            (ReduceOp::Sum, false) => ins.iadd(acc, x),
            (ReduceOp::Prod, false) => ins.imul(acc, x),
            (ReduceOp::Max, false) if ty.is_signed_int() => ins.smax(acc, x),
            (ReduceOp::Min, false) if ty.is_signed_int() => ins.smin(acc, x),
            (ReduceOp::Max, false) => ins.umax(acc, x),
            (ReduceOp::Min, false) => ins.umin(acc, x),
        }
    }

    fn emit_reduce_scalar(&mut self, op: ReduceOp, var: Var, body: E, ty: DType) -> Value {
        let init = self.reduce_init(op, ty);
        let out = self.reduce_loop(var, &[init], |cg, acc| {
            let x = cg.emit_s(body);
            vec![cg.reduce_combine(op, ty, acc[0], x)]
        });
        out[0]
    }

    /// The loop of a reduction over `var` carrying `init`: fully unrolled when the extent is at
    /// most the schedule's `unroll_reduce` (convolution and pooling windows), so indices become constants
    /// and the loop overhead goes away; else a counted loop.
    fn reduce_loop<F>(&mut self, var: Var, init: &[Value], mut step: F) -> Vec<Value>
    where
        F: FnMut(&mut Self, Vec<Value>) -> Vec<Value>,
    {
        let extent = self.k.extent(var);
        if extent <= self.k.schedule.unroll_reduce {
            let mut acc = init.to_vec();
            for i in 0..extent {
                let saved = self.memo.clone();
                let iv = self.iconst64(i);
                self.loopvar.insert(var, iv);
                self.emit_scope(Some(var));
                acc = step(self, acc);
                self.memo = saved;
            }
            return acc;
        }
        let start = self.iconst64(0);
        let end = self.iconst64(extent);
        let (_, out) = self.build_loop(start, end, 1, init, |cg, iv, acc| {
            cg.loopvar.insert(var, iv);
            cg.emit_scope(Some(var));
            step(cg, acc)
        });
        out
    }

    /// One scalar operation on already-computed operand values.
    fn scalar_op(&mut self, e: E, node: &Expr, ty: DType, a: &[Value]) -> Value {
        match *node {
            Expr::Const(t, bits) => match t {
                DType::F32 => self.b.ins().f32const(f32::from_bits(bits as u32)),
                DType::F64 => self.b.ins().f64const(f64::from_bits(bits)),
                _ => self.b.ins().iconst(clif_type(t), crate::kernel::int_value(t, bits)),
            },
            Expr::Var(v) => self.loopvar[&v],
            Expr::Load { buf, .. } => self.load_elem(buf as usize, a[0]),
            Expr::Unary(op, _) => self.unary_s(op, ty, a[0]),
            Expr::Binary(op, x, _) => {
                let in_ty = self.k.ty(x);
                self.binary_s(op, in_ty, a[0], a[1])
            }
            Expr::Select(..) => self.b.ins().select(a[0], a[1], a[2]),
            Expr::Fma(..) => {
                if self.opts.has_fma {
                    self.b.ins().fma(a[0], a[1], a[2])
                } else {
                    let m = self.b.ins().fmul(a[0], a[1]);
                    self.b.ins().fadd(m, a[2])
                }
            }
            Expr::Convert(to, x) => {
                let from = self.k.ty(x);
                self.convert_s(from, to, a[0])
            }
            Expr::Bitcast(to, x) if clif_type(to) == clif_type(self.k.ty(x)) => a[0],
            Expr::Bitcast(to, _) => self.b.ins().bitcast(clif_type(to), MemFlagsData::new(), a[0]),
            Expr::CheckIndex { len, .. } => self.check_index(a[0], len),
            Expr::Reduce { .. } => unreachable!("reduce {e:?} handled by the caller"),
            Expr::Acc => unreachable!("the GEMM accumulator is bound before its epilogue is emitted"),
        }
    }

    fn check_index(&mut self, idx: Value, len: i64) -> Value {
        let ok = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, idx, len);
        let zero = self.b.ins().iconst(types::I64, 0);
        let safe = self.b.ins().select(ok, idx, zero);
        let bad = self.b.ins().bxor_imm_s(ok, 1);
        let bad = self.b.ins().uextend(types::I32, bad);
        let st = self.b.use_var(self.status);
        let st = self.b.ins().bor(st, bad);
        self.b.def_var(self.status, st);
        safe
    }

    fn unary_s(&mut self, op: KUnary, ty: DType, x: Value) -> Value {
        if !self.opts.native_rounding && matches!(op, KUnary::Floor | KUnary::Ceil | KUnary::Trunc | KUnary::Nearest) {
            return self.round_soft(op, ty, x);
        }
        let ins = self.b.ins();
        let f = ty.is_float();
        match op {
            KUnary::Neg if f => ins.fneg(x),
            KUnary::Neg => ins.ineg(x),
            KUnary::Abs if f => ins.fabs(x),
            KUnary::Abs => ins.iabs(x),
            KUnary::Sqrt => ins.sqrt(x),
            KUnary::Floor => ins.floor(x),
            KUnary::Ceil => ins.ceil(x),
            KUnary::Trunc => ins.trunc(x),
            KUnary::Nearest => ins.nearest(x),
            KUnary::Not if ty == DType::Bool => ins.bxor_imm_s(x, 1),
            KUnary::Not => ins.bnot(x),
        }
    }

    fn binary_s(&mut self, op: KBinary, ty: DType, x: Value, y: Value) -> Value {
        let f = ty.is_float();
        let signed = ty.is_signed_int();
        let t = clif_type(ty);
        match op {
            KBinary::Add if f => self.b.ins().fadd(x, y),
            KBinary::Sub if f => self.b.ins().fsub(x, y),
            KBinary::Mul if f => self.b.ins().fmul(x, y),
            KBinary::Div if f => self.b.ins().fdiv(x, y),
            KBinary::Rem if f => {
                // fmod: x - trunc(x / y) * y
                let q = self.b.ins().fdiv(x, y);
                let q = if self.opts.native_rounding { self.b.ins().trunc(q) } else { self.round_soft(KUnary::Trunc, ty, q) };
                let p = self.b.ins().fmul(q, y);
                let r = self.b.ins().fsub(x, p);
                // Keep the dividend's sign on a zero result (fmod(-4, 2) == -0).
                let r = self.b.ins().fcopysign(r, x);
                // fmod(x, ±inf) == x
                let ay = self.b.ins().fabs(y);
                let inf = if ty == DType::F32 { self.b.ins().f32const(f32::INFINITY) } else { self.b.ins().f64const(f64::INFINITY) };
                let yinf = self.b.ins().fcmp(FloatCC::Equal, ay, inf);
                self.b.ins().select(yinf, x, r)
            }
            KBinary::Min if f => self.b.ins().fmin(x, y),
            KBinary::Max if f => self.b.ins().fmax(x, y),
            KBinary::Add => self.b.ins().iadd(x, y),
            KBinary::Sub => self.b.ins().isub(x, y),
            KBinary::Mul => self.b.ins().imul(x, y),
            KBinary::Div | KBinary::Rem => {
                // Integer division never traps: x/0 = 0, x%0 = 0, MIN/-1 wraps, MIN%-1 = 0.
                let zero = self.b.ins().iconst(t, 0);
                let one = self.b.ins().iconst(t, 1);
                let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                if signed {
                    let is_m1 = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                    let bad = self.b.ins().bor(is_zero, is_m1);
                    let safe = self.b.ins().select(bad, one, y);
                    let q = if op == KBinary::Div { self.b.ins().sdiv(x, safe) } else { self.b.ins().srem(x, safe) };
                    let m1_result = if op == KBinary::Div { self.b.ins().ineg(x) } else { zero };
                    let q = self.b.ins().select(is_m1, m1_result, q);
                    self.b.ins().select(is_zero, zero, q)
                } else {
                    let safe = self.b.ins().select(is_zero, one, y);
                    let q = if op == KBinary::Div { self.b.ins().udiv(x, safe) } else { self.b.ins().urem(x, safe) };
                    self.b.ins().select(is_zero, zero, q)
                }
            }
            KBinary::Min if signed => self.b.ins().smin(x, y),
            KBinary::Max if signed => self.b.ins().smax(x, y),
            KBinary::Min => self.b.ins().umin(x, y),
            KBinary::Max => self.b.ins().umax(x, y),
            KBinary::And => self.b.ins().band(x, y),
            KBinary::Or => self.b.ins().bor(x, y),
            KBinary::Xor => self.b.ins().bxor(x, y),
            KBinary::Shl | KBinary::Shr => {
                let bits = t.bits() as i64;
                let big = self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, y, bits);
                let shifted = match (op, signed) {
                    (KBinary::Shl, _) => self.b.ins().ishl(x, y),
                    (_, true) => self.b.ins().sshr(x, y),
                    _ => self.b.ins().ushr(x, y),
                };
                let fill = if op == KBinary::Shr && signed {
                    self.b.ins().sshr_imm_s(x, bits - 1)
                } else {
                    self.b.ins().iconst(t, 0)
                };
                self.b.ins().select(big, fill, shifted)
            }
            cmp => {
                if f {
                    let cc = match cmp {
                        KBinary::Eq => FloatCC::Equal,
                        KBinary::Ne => FloatCC::NotEqual,
                        KBinary::Lt => FloatCC::LessThan,
                        KBinary::Le => FloatCC::LessThanOrEqual,
                        KBinary::Gt => FloatCC::GreaterThan,
                        KBinary::Ge => FloatCC::GreaterThanOrEqual,
                        _ => unreachable!(),
                    };
                    self.b.ins().fcmp(cc, x, y)
                } else {
                    let cc = int_cc(cmp, signed);
                    self.b.ins().icmp(cc, x, y)
                }
            }
        }
    }

    fn convert_s(&mut self, from: DType, to: DType, x: Value) -> Value {
        let tt = clif_type(to);
        let ft = clif_type(from);
        if to == DType::Bool {
            return if from.is_float() {
                let z = if from == DType::F32 { self.b.ins().f32const(0.0) } else { self.b.ins().f64const(0.0) };
                self.b.ins().fcmp(FloatCC::NotEqual, x, z)
            } else {
                self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
            };
        }
        if from.is_float() && to.is_float() {
            return if to == DType::F64 { self.b.ins().fpromote(tt, x) } else { self.b.ins().fdemote(tt, x) };
        }
        if from.is_float() {
            // Truncate toward zero, saturating; NaN becomes 0.
            return match to {
                DType::U64 => self.b.ins().fcvt_to_uint_sat(types::I64, x),
                DType::I64 => self.b.ins().fcvt_to_sint_sat(types::I64, x),
                _ => {
                    let w = self.b.ins().fcvt_to_sint_sat(types::I64, x);
                    self.b.ins().ireduce(tt, w)
                }
            };
        }
        // From an integer (bool is an unsigned 0/1).
        let signed = from.is_signed_int();
        if to.is_float() {
            let w = if ft.bits() < 32 {
                if signed {
                    self.b.ins().sextend(types::I32, x)
                } else {
                    self.b.ins().uextend(types::I32, x)
                }
            } else {
                x
            };
            return if signed { self.b.ins().fcvt_from_sint(tt, w) } else { self.b.ins().fcvt_from_uint(tt, w) };
        }
        match tt.bits().cmp(&ft.bits()) {
            std::cmp::Ordering::Equal => x,
            std::cmp::Ordering::Less => self.b.ins().ireduce(tt, x),
            std::cmp::Ordering::Greater => {
                if signed {
                    self.b.ins().sextend(tt, x)
                } else {
                    self.b.ins().uextend(tt, x)
                }
            }
        }
    }

    /// `copysign(x, s)` with bit masks (works for scalars and vectors on every target).
    fn copysign_bits(&mut self, x: Value, s: Value, ty: DType) -> Value {
        let vt = self.b.func.dfg.value_type(x);
        let (it, sign) = match (ty, vt.is_vector()) {
            (DType::F64, false) => (types::I64, i64::MIN),
            (_, false) => (types::I32, i32::MIN as i64),
            (DType::F64, true) => (types::I64X2, i64::MIN),
            (_, true) => (types::I32X4, i32::MIN as i64),
        };
        let fl = if vt.is_vector() { bflags() } else { MemFlagsData::new() };
        let xb = self.b.ins().bitcast(it, fl, x);
        let sb = self.b.ins().bitcast(it, fl, s);
        let lane = it.lane_type();
        let m = self.b.ins().iconst(lane, sign);
        let m = if vt.is_vector() { self.b.ins().splat(it, m) } else { m };
        let mag = self.b.ins().band_not(xb, m);
        let sg = self.b.ins().band(sb, m);
        let r = self.b.ins().bor(mag, sg);
        self.b.ins().bitcast(vt, fl, r)
    }

    /// Floor/ceil/trunc/nearest without rounding instructions: adding and subtracting 2^23
    /// (2^52 for f64) rounds to nearest-even; floor and ceil correct that by one; trunc is the
    /// floor of the magnitude. Works on scalars and vectors.
    fn round_soft(&mut self, op: KUnary, ty: DType, x: Value) -> Value {
        let vt = self.b.func.dfg.value_type(x);
        let f64_ = ty == DType::F64;
        let scalar_const = |b: &mut FunctionBuilder, v: f64| if f64_ { b.ins().f64const(v) } else { b.ins().f32const(v as f32) };
        let c = |b: &mut FunctionBuilder, v: f64| {
            let s = scalar_const(b, v);
            if vt.is_vector() {
                b.ins().splat(vt, s)
            } else {
                s
            }
        };
        let cmp = |b: &mut FunctionBuilder, cc: FloatCC, a: Value, bb: Value| {
            let m = b.ins().fcmp(cc, a, bb);
            if vt.is_vector() {
                b.ins().bitcast(vt, bflags(), m)
            } else {
                m
            }
        };
        let sel = |b: &mut FunctionBuilder, m: Value, a: Value, bb: Value| {
            if vt.is_vector() {
                b.ins().bitselect(m, a, bb)
            } else {
                b.ins().select(m, a, bb)
            }
        };
        let magic = if f64_ { 4_503_599_627_370_496.0 } else { 8_388_608.0 };
        let src = if op == KUnary::Trunc { self.b.ins().fabs(x) } else { x };
        let big = c(&mut self.b, magic);
        let m = self.copysign_bits(big, src, ty);
        let t = self.b.ins().fadd(src, m);
        let r = self.b.ins().fsub(t, m);
        let r = self.copysign_bits(r, src, ty);
        let ax = self.b.ins().fabs(src);
        let integral = cmp(&mut self.b, FloatCC::GreaterThanOrEqual, ax, big);
        let nearest = sel(&mut self.b, integral, src, r);
        let one = c(&mut self.b, 1.0);
        match op {
            KUnary::Nearest => nearest,
            KUnary::Floor | KUnary::Trunc => {
                let above = cmp(&mut self.b, FloatCC::GreaterThan, nearest, src);
                let down = self.b.ins().fsub(nearest, one);
                let fl = sel(&mut self.b, above, down, nearest);
                if op == KUnary::Trunc {
                    self.copysign_bits(fl, x, ty)
                } else {
                    fl
                }
            }
            _ => {
                let below = cmp(&mut self.b, FloatCC::LessThan, nearest, src);
                let up = self.b.ins().fadd(nearest, one);
                sel(&mut self.b, below, up, nearest)
            }
        }
    }

    // ---------------- vector emission ----------------

    /// The lane-`l` scalar of a node that depends on the lane variable.
    fn emit_lane(&mut self, e: E, l: usize) -> Value {
        let vv = self.vv.expect("lane emission outside a vector loop");
        if !self.depends_on(e, vv) {
            return self.emit_s(e);
        }
        if let Some(&v) = self.memo.lanes.get(&(e, l)) {
            return v;
        }
        if let Some(&vv_val) = self.memo.vector.get(&e) {
            let v = match vv_val {
                VVal::L(ls) => ls[l],
                VVal::V(v) => {
                    let x = self.b.ins().extractlane(v, l as u8);
                    if self.k.ty(e) == DType::Bool {
                        self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
                    } else {
                        x
                    }
                }
            };
            self.memo.lanes.insert((e, l), v);
            return v;
        }
        let node = self.k.node(e).clone();
        let ty = self.k.ty(e);
        let v = match node {
            Expr::Var(v) if v == vv => {
                let base = self.loopvar[&v];
                self.b.ins().iadd_imm_s(base, l as i64)
            }
            Expr::Reduce { .. } => {
                self.emit_vec(e);
                return self.emit_lane(e, l);
            }
            _ => {
                let args: Vec<Value> = self.k.operands(e).into_iter().map(|o| self.emit_lane(o, l)).collect();
                self.scalar_op(e, &node, ty, &args)
            }
        };
        self.memo.lanes.insert((e, l), v);
        v
    }

    /// Coefficient of the lane variable in an integer index expression, if it is affine in it.
    fn lane_coef(&self, e: E, vv: Var) -> Option<i64> {
        if !self.depends_on(e, vv) {
            return Some(0);
        }
        match *self.k.node(e) {
            Expr::Var(v) if v == vv => Some(1),
            Expr::Binary(KBinary::Add, a, b) => Some(self.lane_coef(a, vv)? + self.lane_coef(b, vv)?),
            Expr::Binary(KBinary::Sub, a, b) => Some(self.lane_coef(a, vv)? - self.lane_coef(b, vv)?),
            Expr::Binary(KBinary::Mul, a, b) => {
                let (ca, cb) = (self.const_int(a), self.const_int(b));
                match (ca, cb) {
                    (_, Some(c)) => Some(self.lane_coef(a, vv)?.checked_mul(c)?),
                    (Some(c), _) => Some(self.lane_coef(b, vv)?.checked_mul(c)?),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn const_int(&self, e: E) -> Option<i64> {
        match *self.k.node(e) {
            Expr::Const(t, b) if !t.is_float() => Some(crate::kernel::int_value(t, b)),
            _ => None,
        }
    }

    /// True when `e` (which depends on the lane variable) can be computed in one vector register.
    fn vectorizable(&self, e: E, vv: Var) -> bool {
        let ty = self.k.ty(e);
        if vec_type(ty).is_none() {
            return false;
        }
        let opty = |o: E| self.k.ty(o);
        match *self.k.node(e) {
            Expr::Load { buf, index } => {
                let raw = raw_type(self.k.bufs[buf as usize].dtype);
                matches!(raw, DType::F32 | DType::I32) && matches!(self.lane_coef(index, vv), Some(1..=3))
            }
            Expr::Unary(op, a) => match ty {
                DType::F32 => true,
                DType::I32 => matches!(op, KUnary::Neg | KUnary::Abs | KUnary::Not),
                DType::Bool => op == KUnary::Not && vec_type(opty(a)).is_some(),
                _ => false,
            },
            Expr::Binary(op, a, b) => {
                let it = opty(a);
                match it {
                    DType::F32 => true,
                    DType::I32 => match op {
                        KBinary::Div | KBinary::Rem => false,
                        KBinary::Shl | KBinary::Shr => !self.depends_on(b, vv),
                        _ => true,
                    },
                    DType::Bool => matches!(op, KBinary::And | KBinary::Or | KBinary::Xor | KBinary::Eq | KBinary::Ne),
                    _ => false,
                }
            }
            Expr::Select(c, a, _) => vec_type(opty(a)).is_some() && (opty(c) == DType::Bool) && ty != DType::Bool,
            Expr::Fma(..) => ty == DType::F32,
            Expr::Convert(to, a) => matches!((opty(a), to), (DType::I32, DType::F32) | (DType::F32, DType::I32)),
            Expr::Bitcast(to, a) => matches!((opty(a), to), (DType::I32, DType::F32) | (DType::F32, DType::I32)),
            Expr::Reduce { .. } => ty != DType::Bool,
            Expr::Var(_) | Expr::Const(..) | Expr::CheckIndex { .. } | Expr::Acc => false,
        }
    }

    /// Make a vector of `ty` from any value of node `e`.
    pub(crate) fn as_vector(&mut self, e: E, ty: DType) -> Value {
        let vt = vec_type(ty).expect("vector type");
        let vv = self.vv.expect("vector loop");
        if !self.depends_on(e, vv) {
            let s = self.emit_s(e);
            let s = if ty == DType::Bool { self.bool_to_mask_lane(s) } else { s };
            return self.b.ins().splat(vt, s);
        }
        match self.emit_vec(e) {
            VVal::V(v) => v,
            VVal::L(ls) => {
                let lanes: Vec<Value> =
                    ls.iter().map(|&s| if ty == DType::Bool { self.bool_to_mask_lane(s) } else { s }).collect();
                let mut v = self.b.ins().splat(vt, lanes[0]);
                for (i, &s) in lanes.iter().enumerate().skip(1) {
                    v = self.b.ins().insertlane(v, s, i as u8);
                }
                v
            }
        }
    }

    fn bool_to_mask_lane(&mut self, b: Value) -> Value {
        let w = self.b.ins().uextend(types::I32, b);
        self.b.ins().ineg(w)
    }

    pub(crate) fn emit_vec(&mut self, e: E) -> VVal {
        if let Some(&v) = self.memo.vector.get(&e) {
            return v;
        }
        let vv = self.vv.expect("vector loop");
        let ty = self.k.ty(e);
        let node = self.k.node(e).clone();
        let result = if let Expr::Reduce { op, var, body } = node {
            self.emit_reduce_vec(op, var, body, ty, vv)
        } else if self.vectorizable(e, vv) {
            VVal::V(self.vector_op(e, &node, ty))
        } else {
            let mut ls = [Value::from_u32(0); LANES];
            for (l, slot) in ls.iter_mut().enumerate() {
                *slot = self.emit_lane(e, l);
            }
            VVal::L(ls)
        };
        self.memo.vector.insert(e, result);
        result
    }

    fn emit_reduce_vec(&mut self, op: ReduceOp, var: Var, body: E, ty: DType, vv: Var) -> VVal {
        let as_vec = vec_type(ty).is_some() && ty != DType::Bool;
        let init = self.reduce_init(op, ty);
        let inits: Vec<Value> = if as_vec {
            vec![self.b.ins().splat(vec_type(ty).unwrap(), init)]
        } else {
            vec![init; LANES]
        };
        let out = self.reduce_loop(var, &inits, |cg, acc| {
            if as_vec {
                let x = cg.as_vector(body, ty);
                vec![cg.reduce_combine_vec(op, ty, acc[0], x)]
            } else {
                (0..LANES)
                    .map(|l| {
                        let x = cg.emit_lane(body, l);
                        cg.reduce_combine(op, ty, acc[l], x)
                    })
                    .collect()
            }
        });
        let _ = vv;
        if as_vec {
            VVal::V(out[0])
        } else {
            VVal::L([out[0], out[1], out[2], out[3]])
        }
    }

    fn reduce_combine_vec(&mut self, op: ReduceOp, ty: DType, acc: Value, x: Value) -> Value {
        let ins = self.b.ins();
        match (op, ty) {
            (ReduceOp::Sum, DType::F32) => ins.fadd(acc, x),
            (ReduceOp::Prod, DType::F32) => ins.fmul(acc, x),
            (ReduceOp::Max, DType::F32) => self.fminmax_v(true, x, acc, false, false),
            (ReduceOp::Min, DType::F32) => self.fminmax_v(false, x, acc, false, false),
            (ReduceOp::Sum, _) => ins.iadd(acc, x),
            (ReduceOp::Prod, _) => ins.imul(acc, x),
            (ReduceOp::Max, _) => ins.smax(acc, x),
            (ReduceOp::Min, _) => ins.smin(acc, x),
        }
    }

    fn vector_op(&mut self, e: E, node: &Expr, ty: DType) -> Value {
        match *node {
            Expr::Load { buf, index } => {
                let i0 = self.emit_lane(index, 0);
                let addr = self.elem_addr(buf as usize, i0, 4);
                let vt = vec_type(ty).unwrap();
                match self.lane_coef(index, self.vv.expect("vector loop")) {
                    Some(s @ 2..=3) => self.strided_load(vt, addr, s),
                    _ => self.b.ins().load(vt, vflags(), addr, 0),
                }
            }
            Expr::Unary(op, a) => {
                let at = self.k.ty(a);
                let x = self.as_vector(a, at);
                if ty == DType::F32 && !self.opts.native_rounding && matches!(op, KUnary::Floor | KUnary::Ceil | KUnary::Trunc | KUnary::Nearest) {
                    return self.round_soft(op, ty, x);
                }
                let ins = self.b.ins();
                match (op, ty) {
                    (KUnary::Neg, DType::F32) => ins.fneg(x),
                    (KUnary::Abs, DType::F32) => ins.fabs(x),
                    (KUnary::Sqrt, _) => ins.sqrt(x),
                    (KUnary::Floor, _) => ins.floor(x),
                    (KUnary::Ceil, _) => ins.ceil(x),
                    (KUnary::Trunc, _) => ins.trunc(x),
                    (KUnary::Nearest, _) => ins.nearest(x),
                    (KUnary::Neg, _) => ins.ineg(x),
                    (KUnary::Abs, _) => ins.iabs(x),
                    (KUnary::Not, _) => ins.bnot(x),
                }
            }
            Expr::Binary(op, a, b) => {
                let it = self.k.ty(a);
                let x = self.as_vector(a, it);
                if matches!(op, KBinary::Shl | KBinary::Shr) {
                    let amt = self.emit_s(b);
                    return if op == KBinary::Shl { self.b.ins().ishl(x, amt) } else { self.b.ins().sshr(x, amt) };
                }
                let y = self.as_vector(b, it);
                if it == DType::F32 && matches!(op, KBinary::Min | KBinary::Max) {
                    let is_num = |cg: &Self, e: E| matches!(*cg.k.node(e), Expr::Const(DType::F32, bits) if !f32::from_bits(bits as u32).is_nan());
                    let (xc, yc) = (is_num(self, a), is_num(self, b));
                    return self.fminmax_v(op == KBinary::Max, x, y, xc, yc);
                }
                self.binary_v(op, it, x, y)
            }
            Expr::Select(c, a, b) => {
                let mask = self.as_vector(c, DType::Bool);
                let x = self.as_vector(a, ty);
                let y = self.as_vector(b, ty);
                let vt = vec_type(ty).unwrap();
                let mask = if vt == types::I32X4 { mask } else { self.b.ins().bitcast(vt, bflags(), mask) };
                self.b.ins().bitselect(mask, x, y)
            }
            Expr::Fma(a, b, c) => {
                let x = self.as_vector(a, ty);
                let y = self.as_vector(b, ty);
                let z = self.as_vector(c, ty);
                if self.opts.has_fma {
                    self.b.ins().fma(x, y, z)
                } else {
                    let m = self.b.ins().fmul(x, y);
                    self.b.ins().fadd(m, z)
                }
            }
            Expr::Convert(to, a) => {
                let x = self.as_vector(a, self.k.ty(a));
                if to == DType::F32 {
                    self.b.ins().fcvt_from_sint(types::F32X4, x)
                } else {
                    self.b.ins().fcvt_to_sint_sat(types::I32X4, x)
                }
            }
            Expr::Bitcast(to, a) => {
                let x = self.as_vector(a, self.k.ty(a));
                self.b.ins().bitcast(vec_type(to).unwrap(), bflags(), x)
            }
            _ => unreachable!("node {e:?} is not vectorizable"),
        }
    }

    /// NaN-propagating f32x4 max (or min) of `x` and `y`; `xc`/`yc` say an operand is a
    /// constant number. Without a native instruction: `sel(a, b)` = `a > b ? a : b` is one
    /// `maxps a, b`, which yields `b` when either is NaN, so a constant goes first and, in general,
    /// a NaN `x` is selected afterwards. (Equal zeros of opposite sign may give either zero.)
    fn fminmax_v(&mut self, max: bool, x: Value, y: Value, xc: bool, yc: bool) -> Value {
        if self.opts.native_fminmax {
            return if max { self.b.ins().fmax(x, y) } else { self.b.ins().fmin(x, y) };
        }
        let sel = |cg: &mut Self, a: Value, b: Value| {
            // The patterns Cranelift lowers to `maxps a, b` / `minps a, b`.
            let c = if max { cg.b.ins().fcmp(FloatCC::LessThan, b, a) } else { cg.b.ins().fcmp(FloatCC::LessThan, a, b) };
            let m = cg.b.ins().bitcast(types::F32X4, bflags(), c);
            cg.b.ins().bitselect(m, a, b)
        };
        if xc {
            return sel(self, x, y);
        }
        if yc {
            return sel(self, y, x);
        }
        let m = sel(self, x, y);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let nan = self.b.ins().bitcast(types::F32X4, bflags(), nan);
        self.b.ins().bitselect(nan, x, m)
    }

    /// Elements `0, s, 2s, 3s` (s = 2 or 3) from `addr`: two vector loads that end at the last
    /// element used (never past it) and one two-source shuffle (`shufps` on x86_64).
    fn strided_load(&mut self, vt: Type, addr: Value, s: i64) -> Value {
        let v0 = self.b.ins().load(vt, vflags(), addr, 0);
        let v1 = self.b.ins().load(vt, vflags(), addr, ((3 * s - 3) * 4) as i32);
        // v0 holds elements 0 and s; v1 (from element 3s-3) holds 2s and 3s at lanes 3-s and 3.
        let lanes = [0, s as u8, 4 + (3 - s) as u8, 7];
        let mask: Vec<u8> = lanes.iter().flat_map(|&l| (0..4).map(move |b| l * 4 + b)).collect();
        let mask = self.b.func.dfg.immediates.push(ir::ConstantData::from(mask));
        let a = self.b.ins().bitcast(types::I8X16, bflags(), v0);
        let b = self.b.ins().bitcast(types::I8X16, bflags(), v1);
        let r = self.b.ins().shuffle(a, b, mask);
        self.b.ins().bitcast(vt, bflags(), r)
    }

    fn binary_v(&mut self, op: KBinary, ty: DType, x: Value, y: Value) -> Value {
        let ins = self.b.ins();
        if ty == DType::F32 {
            return match op {
                KBinary::Add => ins.fadd(x, y),
                KBinary::Sub => ins.fsub(x, y),
                KBinary::Mul => ins.fmul(x, y),
                KBinary::Div => ins.fdiv(x, y),
                KBinary::Min => ins.fmin(x, y),
                KBinary::Max => ins.fmax(x, y),
                KBinary::Rem => {
                    let q = ins.fdiv(x, y);
                    let q = if self.opts.native_rounding { self.b.ins().trunc(q) } else { self.round_soft(KUnary::Trunc, ty, q) };
                    let p = self.b.ins().fmul(q, y);
                    let r = self.b.ins().fsub(x, p);
                    // copysign(r, x) with bit masks (no vector fcopysign on every target)
                    let rb = self.b.ins().bitcast(types::I32X4, bflags(), r);
                    let xb = self.b.ins().bitcast(types::I32X4, bflags(), x);
                    let m = self.b.ins().iconst(types::I32, 0x7fff_ffff);
                    let m = self.b.ins().splat(types::I32X4, m);
                    let mag = self.b.ins().band(rb, m);
                    let sign = self.b.ins().band_not(xb, m);
                    let out = self.b.ins().bor(mag, sign);
                    let r = self.b.ins().bitcast(types::F32X4, bflags(), out);
                    // fmod(x, ±inf) == x
                    let ay = self.b.ins().fabs(y);
                    let inf = self.b.ins().f32const(f32::INFINITY);
                    let inf = self.b.ins().splat(types::F32X4, inf);
                    let yinf = self.b.ins().fcmp(FloatCC::Equal, ay, inf);
                    let yinf = self.b.ins().bitcast(types::F32X4, bflags(), yinf);
                    self.b.ins().bitselect(yinf, x, r)
                }
                cmp => {
                    let cc = match cmp {
                        KBinary::Eq => FloatCC::Equal,
                        KBinary::Ne => FloatCC::NotEqual,
                        KBinary::Lt => FloatCC::LessThan,
                        KBinary::Le => FloatCC::LessThanOrEqual,
                        KBinary::Gt => FloatCC::GreaterThan,
                        KBinary::Ge => FloatCC::GreaterThanOrEqual,
                        other => unreachable!("{other:?} on f32x4"),
                    };
                    let m = self.b.ins().fcmp(cc, x, y);
                    self.b.ins().bitcast(types::I32X4, bflags(), m)
                }
            };
        }
        // i32x4 values and i32x4 bool masks.
        match op {
            KBinary::Add => ins.iadd(x, y),
            KBinary::Sub => ins.isub(x, y),
            KBinary::Mul => ins.imul(x, y),
            KBinary::Min => ins.smin(x, y),
            KBinary::Max => ins.smax(x, y),
            KBinary::And => ins.band(x, y),
            KBinary::Or => ins.bor(x, y),
            KBinary::Xor => ins.bxor(x, y),
            cmp => {
                let cc = int_cc(cmp, true);
                ins.icmp(cc, x, y)
            }
        }
    }
}

fn int_cc(op: KBinary, signed: bool) -> IntCC {
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

/// The signature every kernel function has.
pub fn kernel_signature(call_conv: cranelift_codegen::isa::CallConv, ptr: Type) -> ir::Signature {
    let mut sig = ir::Signature::new(call_conv);
    sig.params.push(ir::AbiParam::new(ptr));
    sig.params.push(ir::AbiParam::new(types::I64));
    sig.params.push(ir::AbiParam::new(types::I64));
    sig.returns.push(ir::AbiParam::new(types::I32));
    sig
}

