//! Kernel IR: one loop nest that writes one buffer, described as index expressions.
//!
//! A kernel is `out[v0, .., vn] = value(v0, .., vn)` (a *map*) or, for scatters,
//! `out[index(v)] = value(v)` over an update domain. `value` is a DAG of scalar [`Expr`] nodes:
//! constants, loop variables, loads through index expressions, arithmetic, and `Reduce` nodes that
//! bind a variable of their own. Fusion is substitution of one expression into another; the code
//! generator decides where each node is computed (the innermost loop among its free variables), so
//! loop-invariant work is hoisted by construction.
//!
//! The [`KernelBuilder`] hash-conses nodes and simplifies integer index arithmetic with interval
//! and linear-form reasoning, so that views (reshape, slice, pad, ...) composed by substitution cost
//! no division or bounds check when they provably need none.

use crate::schedule::{GemmTile, Parallel, Schedule};
use odc_ir::{DType, ReduceOp};
use std::collections::HashMap;
use std::fmt;

/// An expression node handle (index into the kernel's node arena).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E(pub u32);

/// A loop variable (output axis or reduction axis), ranging over `0..extent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// Unary machine-level operations (transcendentals are expanded by [`crate::math`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KUnary {
    Neg,
    Abs,
    Sqrt,
    Floor,
    Ceil,
    Trunc,
    /// Round half to even.
    Nearest,
    /// Bitwise not (logical not on bool).
    Not,
}

/// Binary machine-level operations. Integer `Div`/`Rem` never trap (see the code generator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KBinary {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl KBinary {
    pub fn is_compare(self) -> bool {
        matches!(self, KBinary::Eq | KBinary::Ne | KBinary::Lt | KBinary::Le | KBinary::Gt | KBinary::Ge)
    }
}

/// One expression node. Types are kept beside the node in the arena.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// A constant of a compute type; the payload is the value's bits (ints sign/zero-extended).
    Const(DType, u64),
    /// A loop variable (i64).
    Var(Var),
    /// Element `index` of kernel buffer `buf`, as its raw load type (see [`raw_type`]).
    Load { buf: u32, index: E },
    Unary(KUnary, E),
    Binary(KBinary, E, E),
    /// `cond ? a : b`.
    Select(E, E, E),
    /// Fused multiply-add `a * b + c` (one rounding where the target has FMA).
    Fma(E, E, E),
    /// Value conversion between compute types (float→int truncates and saturates, NaN→0).
    Convert(DType, E),
    /// Bit reinterpretation between same-width compute types.
    Bitcast(DType, E),
    /// `op` over `var` in `0..extent` of `body`.
    Reduce { op: ReduceOp, var: Var, body: E },
    /// `index` if `0 <= index < len`; otherwise 0 and the kernel reports an out-of-range index.
    CheckIndex { index: E, len: i64 },
    /// The contraction result of a [`Gemm`] kernel at the current (i, j); only in its epilogue.
    Acc,
}

/// The type a load of `storage` yields: compute types load as themselves, narrow floats as their
/// raw bits (u16 or u8), packed integers as one unpacked i8/u8 per element.
pub fn raw_type(storage: DType) -> DType {
    use DType::*;
    match storage {
        F16 | BF16 => U16,
        F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F8E8M0 | F4E2M1 => U8,
        I4 | I2 => I8,
        U4 | U2 => U8,
        other => other,
    }
}

/// A buffer a kernel reads or writes.
#[derive(Clone, Debug, PartialEq)]
pub struct BufDecl {
    pub dtype: DType,
    /// Number of elements.
    pub len: usize,
}

/// What the kernel does for each point of its domain.
#[derive(Clone, Debug)]
pub enum Body {
    /// `buf0[index] = value` for each store of each domain point; an index defaults to the
    /// row-major index of the domain point. Given indices must be injective over the domain and
    /// the stores (so the outer loop can still be split across threads): the interior of a
    /// padded buffer, the several outputs of a Winograd tile.
    Map { stores: Vec<Store> },
    /// `buf0[index] = value`; `index` is a checked flat element index. Runs sequentially.
    Scatter { index: E, value: E },
    /// A register-tiled matrix product with an epilogue (see [`Gemm`]).
    Gemm(Gemm),
}

/// One store of a [`Body::Map`].
#[derive(Clone, Copy, Debug)]
pub struct Store {
    pub index: Option<E>,
    pub value: E,
}

impl Body {
    /// `out[domain point] = value`.
    pub fn map(value: E) -> Body {
        Body::Map { stores: vec![Store { index: None, value }] }
    }

    /// `out[index] = value` (`index` injective over the domain).
    pub fn map_at(value: E, index: E) -> Body {
        Body::Map { stores: vec![Store { index: Some(index), value }] }
    }

    /// Every expression the body reads directly.
    pub fn roots(&self) -> Vec<E> {
        match self {
            Body::Map { stores } => stores.iter().flat_map(|s| std::iter::once(s.value).chain(s.index)).collect(),
            Body::Scatter { index, value } => vec![*index, *value],
            Body::Gemm(g) => vec![g.epilogue, g.a.base, g.b.base],
        }
    }
}

/// An f32 operand of a [`Gemm`]: element (r, c) of the current batch is at
/// `base + r * row_stride + c * col_stride`, or, when `panel` is set, in panels of `width` rows
/// (A) or columns (B): (r, c) → `base + (r / w) * panel + c * w + r % w` for A and
/// `base + (c / w) * panel + r * w + c % w` for B.
#[derive(Clone, Debug)]
pub struct GemmOperand {
    pub buf: u32,
    /// Element offset of the current batch (an i64 expression of the batch variables).
    pub base: E,
    pub row_stride: i64,
    pub col_stride: i64,
    /// Panel stride in elements, when packed.
    pub panel: Option<i64>,
    /// Columns past `n` up to a multiple of the tile width exist and hold zeros (packed
    /// panels, padded im2col rows), so the column tail can run as full vectors.
    pub padded_cols: bool,
}

/// `out[b.., i, j] = epilogue(sum_k A[b.., i, k] * B[b.., k, j], b.., i, j)` for f32.
///
/// The domain is `batch.., i (m), j (n)`; `epilogue` is an expression over those variables and
/// [`Expr::Acc`]. The kernel's schedule holds the register tile (`mr x nr` accumulators kept in
/// registers over the `k` loop) and the cache blocks (`kc`, `mc`); packed operands are laid out
/// for that tile. Partial sums of the earlier `k` blocks are kept in the output; the epilogue
/// runs after the last.
#[derive(Clone, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: GemmOperand,
    pub b: GemmOperand,
    pub elem: GemmElem,
    pub epilogue: E,
}

/// What a [`Gemm`] multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmElem {
    /// f32 operands and accumulators.
    F32,
    /// 8-bit integer operands (signed or not) with i32 accumulators, four `k` at a time by a
    /// dot product (`vpdpbusd` with AVX-VNNI, `sdot`/`usdot` on aarch64). A is row-major bytes
    /// with `k` padded to a multiple of 4; B is packed in panels of `nr` columns by groups of
    /// four `k`: byte `(c / nr) * panel + (r / 4) * 4 * nr + (c % nr) * 4 + r % 4`.
    Int8 { a_signed: bool, b_signed: bool },
}

/// A complete kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    /// Buffer 0 is the output; the rest are inputs.
    pub bufs: Vec<BufDecl>,
    /// The output (or update) loop nest, outermost first.
    pub domain: Vec<Var>,
    pub body: Body,
    pub nodes: Vec<Expr>,
    pub types: Vec<DType>,
    pub var_extents: Vec<i64>,
    /// How the loop nest runs (see [`crate::schedule`]).
    pub schedule: Schedule,
}

impl Kernel {
    pub fn node(&self, e: E) -> &Expr {
        &self.nodes[e.0 as usize]
    }
    pub fn ty(&self, e: E) -> DType {
        self.types[e.0 as usize]
    }
    pub fn extent(&self, v: Var) -> i64 {
        self.var_extents[v.0 as usize]
    }
    /// Number of points in the domain.
    pub fn domain_size(&self) -> i64 {
        self.domain.iter().map(|&v| self.extent(v)).product()
    }

    /// Iterations of the loop split across threads (the range `lo..hi` the kernel function
    /// takes): a GEMM's batch points times column blocks, else the schedule's flattened outer
    /// loops (the outermost loop alone when sequential).
    pub fn outer_extent(&self) -> i64 {
        match &self.body {
            Body::Gemm(_) => self.gemm_column_blocks(),
            _ => self.domain[..self.flattened_outer_loops()].iter().map(|&v| self.extent(v)).product(),
        }
    }

    /// A GEMM's batch points times its column blocks of the tile's width.
    pub fn gemm_column_blocks(&self) -> i64 {
        let Body::Gemm(g) = &self.body else { return 0 };
        let batch: i64 = self.domain[..self.domain.len() - 2].iter().map(|&v| self.extent(v)).product();
        batch * g.n.div_ceil(self.gemm_tile().nr) as i64
    }

    /// Outer loops flattened into the first loop of the kernel function.
    pub fn flattened_outer_loops(&self) -> usize {
        match self.schedule.parallel {
            Parallel::Outer { loops, .. } => loops,
            _ => 1,
        }
    }

    /// The tile of a GEMM kernel (chosen at lowering, see [`crate::schedule::gemm_tile`]).
    pub fn gemm_tile(&self) -> GemmTile {
        self.schedule.tile.expect("GEMM kernels are lowered with a tile")
    }
    /// Operands of a node.
    pub fn operands(&self, e: E) -> Vec<E> {
        operands(self.node(e))
    }
    /// `e` as `sum(coef * var) + constant` when it is built from vars, integer constants, adds,
    /// subtracts and constant multiples.
    fn linear_form(&self, e: E) -> Option<(std::collections::BTreeMap<u32, i64>, i64)> {
        match *self.node(e) {
            Expr::Var(v) => Some((std::iter::once((v.0, 1)).collect(), 0)),
            Expr::Const(t, bits) if !t.is_float() && t != DType::Bool => Some((Default::default(), int_value(t, bits))),
            Expr::Binary(op @ (KBinary::Add | KBinary::Sub), a, b) => {
                let (mut la, ka) = self.linear_form(a)?;
                let (lb, kb) = self.linear_form(b)?;
                let s = if op == KBinary::Add { 1 } else { -1 };
                for (v, c) in lb {
                    *la.entry(v).or_insert(0) += s * c;
                }
                la.retain(|_, c| *c != 0);
                Some((la, ka + s * kb))
            }
            Expr::Binary(KBinary::Mul, a, b) => {
                let (la, ka) = self.linear_form(a)?;
                let (lb, kb) = self.linear_form(b)?;
                let (l, k, c) = if la.is_empty() { (lb, kb, ka) } else if lb.is_empty() { (la, ka, kb) } else { return None };
                Some((l.into_iter().map(|(v, x)| (v, x * c)).filter(|(_, x)| *x != 0).collect(), k * c))
            }
            _ => None,
        }
    }

    /// True when this is a plain map (one store at the row-major index of the domain point) that
    /// reads buffer `slot` only at that same index: its output may then overwrite `slot` in
    /// place (each element is read before it is written, by the same lane).
    pub fn reads_only_at_store_index(&self, slot: u32) -> bool {
        let Body::Map { stores } = &self.body else { return false };
        if stores.len() != 1 || stores[0].index.is_some() {
            return false;
        }
        let mut want = std::collections::BTreeMap::new();
        let mut stride = 1i64;
        for &v in self.domain.iter().rev() {
            if self.extent(v) > 1 {
                want.insert(v.0, stride);
            }
            stride *= self.extent(v);
        }
        let mut live = vec![false; self.nodes.len()];
        let mut stack = self.body.roots();
        let mut any = false;
        while let Some(e) = stack.pop() {
            if std::mem::replace(&mut live[e.0 as usize], true) {
                continue;
            }
            if let Expr::Load { buf, index } = *self.node(e) {
                if buf == slot {
                    any = true;
                    match self.linear_form(index) {
                        Some((l, 0)) if l == want => {}
                        _ => return false,
                    }
                }
            }
            stack.extend(self.operands(e));
        }
        any
    }

    /// `(m, n, k, batch)` of a GEMM kernel.
    pub fn gemm_shape(&self) -> Option<(usize, usize, usize, usize)> {
        let Body::Gemm(g) = &self.body else { return None };
        let batch: i64 = self.domain[..self.domain.len() - 2].iter().map(|&v| self.extent(v)).product();
        Some((g.m, g.n, g.k, batch as usize))
    }

    /// True when the outermost loop may be split across threads.
    pub fn parallel_safe(&self) -> bool {
        matches!(self.body, Body::Map { .. } | Body::Gemm(_)) && !self.bufs[0].dtype.is_packed()
    }

    /// A rough single-thread run time in nanoseconds: GEMM flops at ~40 GFLOP/s; otherwise
    /// domain points times live expression nodes times the reduction extents, at ~4 per ns.
    pub fn estimated_ns(&self) -> f64 {
        if let Some((m, n, k, b)) = self.gemm_shape() {
            return 2.0 * (m * n * k * b) as f64 / 40.0;
        }
        let mut live = vec![false; self.nodes.len()];
        let mut stack = self.body.roots();
        while let Some(e) = stack.pop() {
            if !std::mem::replace(&mut live[e.0 as usize], true) {
                stack.extend(self.operands(e));
            }
        }
        let nodes = live.iter().filter(|&&l| l).count() as f64;
        let reduce: f64 = self
            .nodes
            .iter()
            .zip(&live)
            .filter_map(|(n, &l)| match n {
                Expr::Reduce { var, .. } if l => Some(self.extent(*var) as f64),
                _ => None,
            })
            .product();
        self.domain_size() as f64 * nodes * reduce / 4.0
    }

    /// Split across the thread pool (decided by the schedule).
    pub fn is_parallel(&self) -> bool {
        self.schedule.parallel != Parallel::Sequential
    }
}

pub fn operands(e: &Expr) -> Vec<E> {
    match *e {
        Expr::Const(..) | Expr::Var(_) => vec![],
        Expr::Load { index, .. } => vec![index],
        Expr::Unary(_, a) | Expr::Convert(_, a) | Expr::Bitcast(_, a) => vec![a],
        Expr::Binary(_, a, b) => vec![a, b],
        Expr::Select(a, b, c) | Expr::Fma(a, b, c) => vec![a, b, c],
        Expr::Reduce { body, .. } => vec![body],
        Expr::CheckIndex { index, .. } => vec![index],
        Expr::Acc => vec![],
    }
}

/// Builds kernels: hash-conses nodes and simplifies as it goes.
#[derive(Default)]
pub struct KernelBuilder {
    nodes: Vec<Expr>,
    types: Vec<DType>,
    ranges: Vec<Option<(i64, i64)>>,
    memo: HashMap<Expr, E>,
    var_extents: Vec<i64>,
    bufs: Vec<BufDecl>,
    /// Values produced by decoding raw storage bits: `decoded -> (raw, storage)`, so that
    /// re-encoding to the same storage returns the original bits.
    decoded_from: HashMap<E, (E, DType)>,
}

fn sat_mul(a: i64, b: i64) -> i64 {
    a.saturating_mul(b)
}

impl KernelBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare a buffer and return its slot. Slot 0 must be the output.
    pub fn buf(&mut self, dtype: DType, len: usize) -> u32 {
        self.bufs.push(BufDecl { dtype, len });
        (self.bufs.len() - 1) as u32
    }

    pub fn buf_decl(&self, slot: u32) -> &BufDecl {
        &self.bufs[slot as usize]
    }

    pub fn var(&mut self, extent: i64) -> Var {
        self.var_extents.push(extent);
        Var((self.var_extents.len() - 1) as u32)
    }

    pub fn ty(&self, e: E) -> DType {
        self.types[e.0 as usize]
    }

    pub fn node(&self, e: E) -> &Expr {
        &self.nodes[e.0 as usize]
    }

    /// Remember that `value` is `raw` decoded from `storage`.
    pub fn note_decoded(&mut self, value: E, raw: E, storage: DType) {
        self.decoded_from.entry(value).or_insert((raw, storage));
    }

    /// The raw bits `value` was decoded from, if it was decoded from `storage`.
    pub fn raw_of(&self, value: E, storage: DType) -> Option<E> {
        self.decoded_from.get(&value).filter(|(_, s)| *s == storage).map(|(r, _)| *r)
    }

    /// The known value range of an integer expression.
    pub fn range(&self, e: E) -> Option<(i64, i64)> {
        self.ranges[e.0 as usize]
    }

    pub fn finish(self, name: String, domain: Vec<Var>, body: Body) -> Kernel {
        Kernel {
            name,
            bufs: self.bufs,
            domain,
            body,
            nodes: self.nodes,
            types: self.types,
            var_extents: self.var_extents,
            schedule: Schedule::default(),
        }
    }

    fn intern(&mut self, e: Expr, ty: DType, range: Option<(i64, i64)>) -> E {
        if let Some(&id) = self.memo.get(&e) {
            return id;
        }
        let id = E(self.nodes.len() as u32);
        self.nodes.push(e.clone());
        self.types.push(ty);
        self.ranges.push(range);
        self.memo.insert(e, id);
        id
    }

    // ---- leaves ----

    pub fn const_bits(&mut self, ty: DType, bits: u64) -> E {
        let range = if ty.is_float() {
            None
        } else {
            Some(int_value(ty, bits)).map(|v| (v, v))
        };
        self.intern(Expr::Const(ty, bits), ty, range)
    }

    pub fn i64c(&mut self, v: i64) -> E {
        self.const_bits(DType::I64, v as u64)
    }

    pub fn f32c(&mut self, v: f32) -> E {
        self.const_bits(DType::F32, v.to_bits() as u64)
    }

    pub fn f64c(&mut self, v: f64) -> E {
        self.const_bits(DType::F64, v.to_bits())
    }

    pub fn boolc(&mut self, v: bool) -> E {
        self.const_bits(DType::Bool, v as u64)
    }

    /// A constant of any compute type from an f64 value (as-cast semantics).
    pub fn constant(&mut self, ty: DType, v: f64) -> E {
        let bits = match ty {
            DType::F32 => (v as f32).to_bits() as u64,
            DType::F64 => v.to_bits(),
            DType::Bool => (v != 0.0) as u64,
            DType::U64 => v as u64,
            t if t.is_unsigned_int() => (v as i64 as u64) & mask(t),
            _ => v as i64 as u64,
        };
        self.const_bits(ty, canonical_bits(ty, bits))
    }

    /// A float constant of type `ty` (f32 or f64).
    pub fn fconst(&mut self, ty: DType, v: f64) -> E {
        self.constant(ty, v)
    }

    /// An integer constant of type `ty`.
    pub fn iconst(&mut self, ty: DType, v: i64) -> E {
        self.const_bits(ty, canonical_bits(ty, v as u64))
    }

    /// The GEMM accumulator placeholder (f32).
    pub fn acc(&mut self) -> E {
        self.acc_of(DType::F32)
    }

    /// The GEMM accumulator placeholder of an integer (i32) or float (f32) GEMM.
    pub fn acc_of(&mut self, ty: DType) -> E {
        self.intern(Expr::Acc, ty, None)
    }

    pub fn var_expr(&mut self, v: Var) -> E {
        let ext = self.var_extents[v.0 as usize];
        self.intern(Expr::Var(v), DType::I64, Some((0, (ext - 1).max(0))))
    }

    pub fn load(&mut self, buf: u32, index: E) -> E {
        let ty = raw_type(self.bufs[buf as usize].dtype);
        let range = match ty {
            DType::Bool => Some((0, 1)),
            DType::U8 => Some((0, 255)),
            DType::I8 => Some((-128, 127)),
            DType::U16 => Some((0, 65535)),
            _ => None,
        };
        self.intern(Expr::Load { buf, index }, ty, range)
    }

    /// The value if it is a constant.
    pub fn as_const(&self, e: E) -> Option<(DType, u64)> {
        match self.node(e) {
            Expr::Const(t, b) => Some((*t, *b)),
            _ => None,
        }
    }

    pub fn as_int_const(&self, e: E) -> Option<i64> {
        match self.node(e) {
            Expr::Const(t, b) if !t.is_float() => Some(int_value(*t, *b)),
            _ => None,
        }
    }

    pub fn as_float_const(&self, e: E) -> Option<f64> {
        match self.node(e) {
            Expr::Const(DType::F32, b) => Some(f32::from_bits(*b as u32) as f64),
            Expr::Const(DType::F64, b) => Some(f64::from_bits(*b)),
            _ => None,
        }
    }

    // ---- operations ----

    pub fn unary(&mut self, op: KUnary, a: E) -> E {
        let ty = self.ty(a);
        if let Some(c) = self.as_float_const(a) {
            let v = match op {
                KUnary::Neg => Some(-c),
                KUnary::Abs => Some(c.abs()),
                KUnary::Floor => Some(c.floor()),
                KUnary::Ceil => Some(c.ceil()),
                KUnary::Trunc => Some(c.trunc()),
                _ => None,
            };
            if let Some(v) = v {
                return self.fconst(ty, v);
            }
        }
        if let Some(c) = self.as_int_const(a) {
            let v = match op {
                KUnary::Neg => Some(c.wrapping_neg()),
                KUnary::Abs if ty.is_signed_int() => Some(c.wrapping_abs()),
                KUnary::Not if ty == DType::Bool => Some((c == 0) as i64),
                KUnary::Not => Some(!c),
                _ => None,
            };
            if let Some(v) = v {
                return self.iconst(ty, v);
            }
        }
        if matches!(op, KUnary::Floor | KUnary::Ceil | KUnary::Trunc | KUnary::Nearest) && !ty.is_float() {
            return a;
        }
        if op == KUnary::Abs && ty.is_unsigned_int() {
            return a;
        }
        let range = match (op, self.range(a)) {
            (KUnary::Neg, Some((lo, hi))) if lo > i64::MIN => Some((-hi, -lo)),
            (KUnary::Not, _) if ty == DType::Bool => Some((0, 1)),
            _ => None,
        };
        self.intern(Expr::Unary(op, a), ty, range)
    }

    pub fn binary(&mut self, op: KBinary, a: E, b: E) -> E {
        let ta = self.ty(a);
        debug_assert_eq!(ta, self.ty(b), "binary {op:?} operand types differ");
        let out_ty = if op.is_compare() { DType::Bool } else { ta };
        if let Some(e) = self.simplify_binary(op, a, b, ta) {
            return e;
        }
        let range = self.binary_range(op, a, b, ta);
        self.intern(Expr::Binary(op, a, b), out_ty, range)
    }

    fn simplify_binary(&mut self, op: KBinary, a: E, b: E, ty: DType) -> Option<E> {
        use KBinary::*;
        // Integer constant folding.
        if let (Some(x), Some(y)) = (self.as_int_const(a), self.as_int_const(b)) {
            if ty == DType::I64 || ty == DType::I32 || ty == DType::Bool {
                let v = match op {
                    Add => Some(x.wrapping_add(y)),
                    Sub => Some(x.wrapping_sub(y)),
                    Mul => Some(x.wrapping_mul(y)),
                    Div if y != 0 && !(y == -1 && x == i64::MIN) => Some(x / y),
                    Rem if y != 0 && !(y == -1 && x == i64::MIN) => Some(x % y),
                    Min => Some(x.min(y)),
                    Max => Some(x.max(y)),
                    And => Some(x & y),
                    Or => Some(x | y),
                    Xor => Some(x ^ y),
                    Eq => return Some(self.boolc(x == y)),
                    Ne => return Some(self.boolc(x != y)),
                    Lt => return Some(self.boolc(x < y)),
                    Le => return Some(self.boolc(x <= y)),
                    Gt => return Some(self.boolc(x > y)),
                    Ge => return Some(self.boolc(x >= y)),
                    _ => None,
                };
                if let Some(v) = v {
                    return Some(self.iconst(ty, v));
                }
            }
        }
        // Float constant folding of the exact IEEE operations.
        if let (Some(x), Some(y)) = (self.as_float_const(a), self.as_float_const(b)) {
            let v = if ty == DType::F32 {
                let (x, y) = (x as f32, y as f32);
                match op {
                    Add => Some((x + y) as f64),
                    Sub => Some((x - y) as f64),
                    Mul => Some((x * y) as f64),
                    Div => Some((x / y) as f64),
                    _ => None,
                }
            } else {
                match op {
                    Add => Some(x + y),
                    Sub => Some(x - y),
                    Mul => Some(x * y),
                    Div => Some(x / y),
                    _ => None,
                }
            };
            if let Some(v) = v {
                return Some(self.fconst(ty, v));
            }
        }
        let is_int = !ty.is_float() && ty != DType::Bool;
        let ca = self.as_int_const(a);
        let cb = self.as_int_const(b);
        match op {
            Add if is_int && cb == Some(0) => return Some(a),
            Add if is_int && ca == Some(0) => return Some(b),
            Sub if is_int && cb == Some(0) => return Some(a),
            Sub if is_int && a == b => return Some(self.iconst(ty, 0)),
            Mul if is_int && cb == Some(1) => return Some(a),
            Mul if is_int && ca == Some(1) => return Some(b),
            Mul if is_int && (ca == Some(0) || cb == Some(0)) => return Some(self.iconst(ty, 0)),
            Div if is_int && cb == Some(1) => return Some(a),
            Rem if is_int && cb == Some(1) => return Some(self.iconst(ty, 0)),
            And if ty == DType::Bool => {
                if ca == Some(1) {
                    return Some(b);
                }
                if cb == Some(1) {
                    return Some(a);
                }
                if ca == Some(0) || cb == Some(0) {
                    return Some(self.boolc(false));
                }
            }
            Or if ty == DType::Bool => {
                if ca == Some(0) {
                    return Some(b);
                }
                if cb == Some(0) {
                    return Some(a);
                }
                if ca == Some(1) || cb == Some(1) {
                    return Some(self.boolc(true));
                }
            }
            _ => {}
        }
        // Interval reasoning on signed integers.
        if ty == DType::I64 || ty == DType::I32 {
            if let (Some((alo, ahi)), Some((blo, bhi))) = (self.range(a), self.range(b)) {
                let decided = match op {
                    Lt if ahi < blo => Some(true),
                    Lt if alo >= bhi => Some(false),
                    Le if ahi <= blo => Some(true),
                    Le if alo > bhi => Some(false),
                    Gt if alo > bhi => Some(true),
                    Gt if ahi <= blo => Some(false),
                    Ge if alo >= bhi => Some(true),
                    Ge if ahi < blo => Some(false),
                    Eq if ahi < blo || alo > bhi => Some(false),
                    Ne if ahi < blo || alo > bhi => Some(true),
                    _ => None,
                };
                if let Some(v) = decided {
                    return Some(self.boolc(v));
                }
                match op {
                    Min if ahi <= blo => return Some(a),
                    Min if bhi <= alo => return Some(b),
                    Max if alo >= bhi => return Some(a),
                    Max if blo >= ahi => return Some(b),
                    _ => {}
                }
                if matches!(op, Div | Rem) && blo == bhi && blo > 0 && alo >= 0 {
                    return self.simplify_divrem(op, a, blo, ty);
                }
            }
            if matches!(op, Add | Sub) {
                return self.merge_divrem(op, a, b, ty);
            }
        }
        None
    }

    /// `(x / c) * c * s + (x % c) * s == x * s` for `x >= 0`, `c > 0`: an unflattened index
    /// flattened again (a fused reader of a reshaped value) folds back to the original index.
    fn merge_divrem(&mut self, op: KBinary, a: E, b: E, ty: DType) -> Option<E> {
        let (mut terms, mut k) = self.linear(a)?;
        let (tb, kb) = self.linear(b)?;
        let sign = if op == KBinary::Sub { -1 } else { 1 };
        if terms.len() + tb.len() > 12 || !terms.iter().chain(&tb).any(|t| matches!(self.node(t.0), Expr::Binary(KBinary::Rem, ..))) {
            return None;
        }
        for (atom, coef) in tb {
            let coef = coef.checked_mul(sign)?;
            match terms.iter_mut().find(|t| t.0 == atom) {
                Some(t) => t.1 = t.1.checked_add(coef)?,
                None => terms.push((atom, coef)),
            }
        }
        k = k.checked_add(kb.checked_mul(sign)?)?;
        let mut merged = false;
        let mut i = 0;
        while i < terms.len() {
            let (atom, coef) = terms[i];
            if let Expr::Binary(KBinary::Rem, x, c) = *self.node(atom) {
                let c = self.as_int_const(c).filter(|&c| c > 0);
                let div = c.and_then(|c| {
                    terms.iter().position(|t| {
                        matches!(*self.node(t.0), Expr::Binary(KBinary::Div, x2, c2) if x2 == x && self.as_int_const(c2) == Some(c))
                            && coef.checked_mul(c) == Some(t.1)
                    })
                });
                if let (Some(j), true) = (div, self.range(x).is_some_and(|r| r.0 >= 0)) {
                    terms[i] = (x, coef);
                    terms.remove(j);
                    merged = true;
                    i = 0;
                    continue;
                }
            }
            i += 1;
        }
        if !merged {
            return None;
        }
        terms.retain(|t| t.1 != 0);
        Some(self.from_linear(&terms, k, ty))
    }

    /// `a / c` and `a % c` for `a >= 0`, `c > 0`: split `a` into multiples of `c` plus a rest.
    fn simplify_divrem(&mut self, op: KBinary, a: E, c: i64, ty: DType) -> Option<E> {
        let (alo, ahi) = self.range(a)?;
        if ahi < c {
            return Some(if op == KBinary::Div { self.iconst(ty, 0) } else { a });
        }
        // (x / p) / q == x / (p*q) for x >= 0.
        if op == KBinary::Div {
            if let Expr::Binary(KBinary::Div, x, p) = *self.node(a) {
                if let Some(p) = self.as_int_const(p) {
                    if p > 0 && self.range(x).is_some_and(|r| r.0 >= 0) {
                        let pq = self.iconst(ty, p.checked_mul(c)?);
                        return Some(self.binary(KBinary::Div, x, pq));
                    }
                }
            }
        }
        let _ = alo;
        let (terms, k) = self.linear(a)?;
        let mut q_terms = vec![];
        let mut r_terms = vec![];
        for (atom, coef) in terms {
            if coef % c == 0 {
                q_terms.push((atom, coef / c));
            } else {
                r_terms.push((atom, coef));
            }
        }
        let (kq, kr) = (k.div_euclid(c), k.rem_euclid(c));
        if q_terms.is_empty() && kq == 0 {
            return self.divrem_by_factor(op, a, c, ty);
        }
        let rest = self.from_linear(&r_terms, kr, ty);
        let (rlo, rhi) = self.range(rest)?;
        if rlo < 0 {
            return None;
        }
        if op == KBinary::Rem {
            return Some(if rhi < c {
                rest
            } else {
                self.divrem_by_factor(KBinary::Rem, rest, c, ty).unwrap_or_else(|| self.binary_raw(KBinary::Rem, rest, c, ty))
            });
        }
        let q = self.from_linear(&q_terms, kq, ty);
        if rhi < c {
            Some(q)
        } else {
            let r = self.divrem_by_factor(KBinary::Div, rest, c, ty).unwrap_or_else(|| self.binary_raw(KBinary::Div, rest, c, ty));
            Some(self.binary(KBinary::Add, q, r))
        }
    }

    /// `a = d * hi + lo` with `0 <= lo < d` and `d | c` (a row-major index whose low digits
    /// stay below `d`): `a / c = hi / (c / d)` and `a % c = (hi % (c / d)) * d + lo`. Turns the
    /// index arithmetic of reshapes and transposes back into per-axis indices.
    fn divrem_by_factor(&mut self, op: KBinary, a: E, c: i64, ty: DType) -> Option<E> {
        let (terms, k) = self.linear(a)?;
        let mut factors: Vec<i64> = terms.iter().map(|t| t.1).filter(|&d| d > 1 && d < c && c % d == 0).collect();
        factors.sort_unstable_by(|x, y| y.cmp(x));
        factors.dedup();
        for d in factors {
            let (hi, lo): (Vec<(E, i64)>, Vec<(E, i64)>) = terms.iter().partition(|t| t.1 % d == 0);
            let (kq, kr) = (k.div_euclid(d), k.rem_euclid(d));
            let lo_e = self.from_linear(&lo, kr, ty);
            match self.range(lo_e) {
                Some((l, h)) if l >= 0 && h < d => {}
                _ => continue,
            }
            let hi_terms: Vec<(E, i64)> = hi.iter().map(|t| (t.0, t.1 / d)).collect();
            let hi_e = self.from_linear(&hi_terms, kq, ty);
            if !self.range(hi_e).is_some_and(|r| r.0 >= 0) {
                continue;
            }
            let cd = self.iconst(ty, c / d);
            return Some(if op == KBinary::Div {
                self.binary(KBinary::Div, hi_e, cd)
            } else {
                let r = self.binary(KBinary::Rem, hi_e, cd);
                let dd = self.iconst(ty, d);
                let r = self.binary(KBinary::Mul, r, dd);
                self.binary(KBinary::Add, r, lo_e)
            });
        }
        None
    }

    fn binary_raw(&mut self, op: KBinary, a: E, c: i64, ty: DType) -> E {
        let cc = self.iconst(ty, c);
        let range = self.binary_range(op, a, cc, ty);
        self.intern(Expr::Binary(op, a, cc), ty, range)
    }

    /// `a` as `sum(coef * atom) + k` when it is built from adds, subs and constant multiples.
    fn linear(&self, a: E) -> Option<(Vec<(E, i64)>, i64)> {
        let mut terms: Vec<(E, i64)> = vec![];
        let mut k = 0i64;
        self.linear_into(a, 1, &mut terms, &mut k)?;
        terms.retain(|t| t.1 != 0);
        Some((terms, k))
    }

    fn linear_into(&self, a: E, scale: i64, terms: &mut Vec<(E, i64)>, k: &mut i64) -> Option<()> {
        match *self.node(a) {
            Expr::Const(..) => *k = k.checked_add(self.as_int_const(a)?.checked_mul(scale)?)?,
            Expr::Binary(KBinary::Add, x, y) => {
                self.linear_into(x, scale, terms, k)?;
                self.linear_into(y, scale, terms, k)?;
            }
            Expr::Binary(KBinary::Sub, x, y) => {
                self.linear_into(x, scale, terms, k)?;
                self.linear_into(y, scale.checked_neg()?, terms, k)?;
            }
            Expr::Binary(KBinary::Mul, x, y) if self.as_int_const(y).is_some() => {
                self.linear_into(x, scale.checked_mul(self.as_int_const(y)?)?, terms, k)?;
            }
            Expr::Binary(KBinary::Mul, x, y) if self.as_int_const(x).is_some() => {
                self.linear_into(y, scale.checked_mul(self.as_int_const(x)?)?, terms, k)?;
            }
            _ => {
                if let Some(t) = terms.iter_mut().find(|t| t.0 == a) {
                    t.1 = t.1.checked_add(scale)?;
                } else {
                    terms.push((a, scale));
                }
            }
        }
        Some(())
    }

    fn from_linear(&mut self, terms: &[(E, i64)], k: i64, ty: DType) -> E {
        let mut acc = self.iconst(ty, k);
        for &(atom, coef) in terms {
            let c = self.iconst(ty, coef);
            let t = self.binary(KBinary::Mul, atom, c);
            acc = self.binary(KBinary::Add, acc, t);
        }
        acc
    }

    fn binary_range(&self, op: KBinary, a: E, b: E, ty: DType) -> Option<(i64, i64)> {
        use KBinary::*;
        if op.is_compare() {
            return Some((0, 1));
        }
        if ty == DType::Bool {
            return Some((0, 1));
        }
        if !(ty == DType::I64 || ty == DType::I32) {
            return None;
        }
        let (alo, ahi) = self.range(a)?;
        let (blo, bhi) = self.range(b)?;
        let r = match op {
            Add => (alo.checked_add(blo)?, ahi.checked_add(bhi)?),
            Sub => (alo.checked_sub(bhi)?, ahi.checked_sub(blo)?),
            Mul => {
                let p = [sat_mul(alo, blo), sat_mul(alo, bhi), sat_mul(ahi, blo), sat_mul(ahi, bhi)];
                let (lo, hi) = (*p.iter().min()?, *p.iter().max()?);
                if lo == i64::MIN || hi == i64::MAX {
                    return None;
                }
                (lo, hi)
            }
            Div if blo == bhi && blo > 0 && alo >= 0 => (alo / blo, ahi / blo),
            Rem if blo == bhi && blo > 0 && alo >= 0 => (0, ahi.min(blo - 1)),
            Min => (alo.min(blo), ahi.min(bhi)),
            Max => (alo.max(blo), ahi.max(bhi)),
            _ => return None,
        };
        let r = clamp_range(ty, r)?;
        Some(r)
    }

    pub fn select(&mut self, c: E, a: E, b: E) -> E {
        if let Some(v) = self.as_int_const(c) {
            return if v != 0 { a } else { b };
        }
        if a == b {
            return a;
        }
        let ty = self.ty(a);
        let range = match (self.range(a), self.range(b)) {
            (Some(x), Some(y)) => Some((x.0.min(y.0), x.1.max(y.1))),
            _ => None,
        };
        self.intern(Expr::Select(c, a, b), ty, range)
    }

    pub fn fma(&mut self, a: E, b: E, c: E) -> E {
        let ty = self.ty(a);
        self.intern(Expr::Fma(a, b, c), ty, None)
    }

    /// Numeric conversion between compute types.
    pub fn convert(&mut self, to: DType, a: E) -> E {
        let from = self.ty(a);
        if from == to {
            return a;
        }
        if let Some(v) = self.as_int_const(a) {
            if to.is_float() {
                let f = if from.is_unsigned_int() && v < 0 { v as u64 as f64 } else { v as f64 };
                return self.fconst(to, f);
            }
            if to == DType::Bool {
                return self.boolc(v != 0);
            }
            return self.iconst(to, v);
        }
        let range = match self.range(a) {
            Some(r) if !to.is_float() && to != DType::Bool => {
                let (lo, hi) = int_limits(to);
                if r.0 >= lo && r.1 <= hi {
                    Some(r)
                } else {
                    None
                }
            }
            _ if to == DType::Bool => Some((0, 1)),
            _ => None,
        };
        self.intern(Expr::Convert(to, a), to, range)
    }

    pub fn bitcast(&mut self, to: DType, a: E) -> E {
        if self.ty(a) == to {
            return a;
        }
        if let Expr::Bitcast(_, inner) = *self.node(a) {
            if self.ty(inner) == to {
                return inner;
            }
        }
        self.intern(Expr::Bitcast(to, a), to, None)
    }

    pub fn reduce(&mut self, op: ReduceOp, var: Var, body: E) -> E {
        let ty = self.ty(body);
        if self.var_extents[var.0 as usize] == 1 {
            // A single iteration: substitute var = 0.
            let zero = self.i64c(0);
            return self.substitute(body, var, zero);
        }
        self.intern(Expr::Reduce { op, var, body }, ty, None)
    }

    /// Replace `var` by `with` throughout `e`.
    pub fn substitute(&mut self, e: E, var: Var, with: E) -> E {
        let mut memo = HashMap::new();
        self.subst_rec(e, var, with, &mut memo)
    }

    fn subst_rec(&mut self, e: E, var: Var, with: E, memo: &mut HashMap<E, E>) -> E {
        if let Some(&r) = memo.get(&e) {
            return r;
        }
        let r = match self.node(e).clone() {
            Expr::Var(v) if v == var => with,
            Expr::Const(..) | Expr::Var(_) => e,
            Expr::Load { buf, index } => {
                let i = self.subst_rec(index, var, with, memo);
                self.load(buf, i)
            }
            Expr::Unary(op, a) => {
                let a = self.subst_rec(a, var, with, memo);
                self.unary(op, a)
            }
            Expr::Binary(op, a, b) => {
                let a = self.subst_rec(a, var, with, memo);
                let b = self.subst_rec(b, var, with, memo);
                self.binary(op, a, b)
            }
            Expr::Select(c, a, b) => {
                let c = self.subst_rec(c, var, with, memo);
                let a = self.subst_rec(a, var, with, memo);
                let b = self.subst_rec(b, var, with, memo);
                self.select(c, a, b)
            }
            Expr::Fma(a, b, c) => {
                let a = self.subst_rec(a, var, with, memo);
                let b = self.subst_rec(b, var, with, memo);
                let c = self.subst_rec(c, var, with, memo);
                self.fma(a, b, c)
            }
            Expr::Convert(t, a) => {
                let a = self.subst_rec(a, var, with, memo);
                self.convert(t, a)
            }
            Expr::Bitcast(t, a) => {
                let a = self.subst_rec(a, var, with, memo);
                self.bitcast(t, a)
            }
            Expr::Reduce { op, var: v, body } => {
                let b = self.subst_rec(body, var, with, memo);
                self.reduce(op, v, b)
            }
            Expr::CheckIndex { index, len } => {
                let i = self.subst_rec(index, var, with, memo);
                self.check_index(i, len)
            }
            Expr::Acc => e,
        };
        memo.insert(e, r);
        r
    }

    /// Guard a data-dependent index into an axis of length `len`.
    pub fn check_index(&mut self, index: E, len: i64) -> E {
        if let Some((lo, hi)) = self.range(index) {
            if lo >= 0 && hi < len {
                return index;
            }
        }
        self.intern(Expr::CheckIndex { index, len }, self.ty(index), Some((0, (len - 1).max(0))))
    }

    // ---- conveniences ----

    pub fn add(&mut self, a: E, b: E) -> E {
        self.binary(KBinary::Add, a, b)
    }
    pub fn sub(&mut self, a: E, b: E) -> E {
        self.binary(KBinary::Sub, a, b)
    }
    pub fn mul(&mut self, a: E, b: E) -> E {
        self.binary(KBinary::Mul, a, b)
    }
    pub fn div(&mut self, a: E, b: E) -> E {
        self.binary(KBinary::Div, a, b)
    }
    pub fn lt(&mut self, a: E, b: E) -> E {
        self.binary(KBinary::Lt, a, b)
    }
    pub fn and(&mut self, a: E, b: E) -> E {
        self.binary(KBinary::And, a, b)
    }
    /// `a * c` for an i64 constant `c`.
    pub fn mul_c(&mut self, a: E, c: i64) -> E {
        let c = self.iconst(self.ty(a), c);
        self.mul(a, c)
    }
    /// `a + c` for an integer constant `c`.
    pub fn add_c(&mut self, a: E, c: i64) -> E {
        let c = self.iconst(self.ty(a), c);
        self.add(a, c)
    }
    /// Row-major flat index of `idx` in `shape`.
    pub fn flat_index(&mut self, idx: &[E], shape: &[usize]) -> E {
        let mut acc = self.i64c(0);
        let mut stride = 1i64;
        for (i, &d) in idx.iter().zip(shape).rev() {
            let t = self.mul_c(*i, stride);
            acc = self.add(acc, t);
            stride *= d as i64;
        }
        acc
    }
    /// Row-major multi-index of a flat index.
    pub fn unflatten(&mut self, flat: E, shape: &[usize]) -> Vec<E> {
        let mut out = vec![];
        let mut stride: i64 = shape.iter().map(|&d| d as i64).product();
        for &d in shape {
            stride /= (d as i64).max(1);
            let s = self.i64c(stride.max(1));
            let q = self.binary(KBinary::Div, flat, s);
            let dd = self.i64c(d as i64);
            out.push(if d == 1 { self.i64c(0) } else { self.binary(KBinary::Rem, q, dd) });
        }
        out
    }
}

/// The integer value of constant bits of type `ty`.
pub fn int_value(ty: DType, bits: u64) -> i64 {
    match ty {
        DType::Bool => (bits & 1) as i64,
        DType::I8 => bits as u8 as i8 as i64,
        DType::I16 => bits as u16 as i16 as i64,
        DType::I32 => bits as u32 as i32 as i64,
        DType::U8 => (bits & 0xff) as i64,
        DType::U16 => (bits & 0xffff) as i64,
        DType::U32 => (bits & 0xffff_ffff) as i64,
        _ => bits as i64,
    }
}

fn mask(ty: DType) -> u64 {
    match ty.bits() {
        64 => u64::MAX,
        b => (1u64 << b) - 1,
    }
}

/// Normalise constant bits: signed ints sign-extended, unsigned zero-extended.
fn canonical_bits(ty: DType, bits: u64) -> u64 {
    if ty.is_float() || ty.bits() == 64 {
        return bits;
    }
    if ty == DType::Bool {
        return (bits != 0) as u64;
    }
    if ty.is_signed_int() {
        int_value(ty, bits) as u64
    } else {
        bits & mask(ty)
    }
}

/// The representable range of an integer compute type (u64 capped at i64::MAX).
pub fn int_limits(ty: DType) -> (i64, i64) {
    match ty {
        DType::Bool => (0, 1),
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::I16 => (i16::MIN as i64, i16::MAX as i64),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::U8 => (0, u8::MAX as i64),
        DType::U16 => (0, u16::MAX as i64),
        DType::U32 => (0, u32::MAX as i64),
        DType::U64 => (0, i64::MAX),
        _ => (i64::MIN, i64::MAX),
    }
}

fn clamp_range(ty: DType, r: (i64, i64)) -> Option<(i64, i64)> {
    let (lo, hi) = int_limits(ty);
    if r.0 < lo || r.1 > hi {
        None
    } else {
        Some(r)
    }
}

impl fmt::Display for Kernel {
    /// A readable dump: buffers, domain, then one line per reachable node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {}", self.name)?;
        for (i, b) in self.bufs.iter().enumerate() {
            writeln!(f, "  buf{i}: {}[{}]", b.dtype, b.len)?;
        }
        let dom: Vec<String> = self.domain.iter().map(|v| format!("v{}<{}", v.0, self.extent(*v))).collect();
        writeln!(f, "  domain: {}", dom.join(", "))?;
        writeln!(f, "  schedule: {}; {} outer iterations", self.schedule, self.outer_extent())?;
        let roots = self.body.roots();
        let mut live = vec![false; self.nodes.len()];
        let mut stack = roots.clone();
        while let Some(e) = stack.pop() {
            if !live[e.0 as usize] {
                live[e.0 as usize] = true;
                stack.extend(self.operands(e));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if live[i] {
                writeln!(f, "  e{i}: {} = {n:?}", self.types[i])?;
            }
        }
        match &self.body {
            Body::Map { stores } => stores.iter().try_for_each(|s| match s.index {
                None => writeln!(f, "  out[domain] = e{}", s.value.0),
                Some(i) => writeln!(f, "  out[e{}] = e{}", i.0, s.value.0),
            }),
            Body::Scatter { index, value } => writeln!(f, "  out[e{}] = e{}", index.0, value.0),
            Body::Gemm(g) => writeln!(
                f,
                "  gemm m={} n={} k={}: A buf{} (base e{}, strides {}x{}, panel {:?}), B buf{} (base e{}, strides {}x{}, panel {:?}); out = e{}",
                g.m, g.n, g.k, g.a.buf, g.a.base.0, g.a.row_stride, g.a.col_stride, g.a.panel, g.b.buf, g.b.base.0,
                g.b.row_stride, g.b.col_stride, g.b.panel, g.epilogue.0
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_index_arithmetic_folds_to_axis_indices() {
        let mut kb = KernelBuilder::new();
        let (c, y, x) = (kb.var(112), kb.var(56), kb.var(56));
        let (c, y, x) = (kb.var_expr(c), kb.var_expr(y), kb.var_expr(x));
        let flat = kb.flat_index(&[c, y, x], &[112, 56, 56]);
        let big = kb.i64c(12544);
        let four = kb.i64c(4);
        let q = kb.div(flat, big);
        let c4 = kb.div(c, four);
        assert_eq!(q, c4);
        // (c / 4) * 4 + c % 4 == c
        let r = kb.binary(KBinary::Rem, c, four);
        let back = kb.mul_c(c4, 4);
        let back = kb.add(back, r);
        assert_eq!(back, c);
    }
}
