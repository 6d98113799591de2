//! [`KernelBuilder`]: declares buffers and loop variables, hash-conses nodes with their types
//! and value ranges, folds constants in leaves, unary ops, selects and conversions, and
//! substitutes variables. Integer binary simplification is in `simplify.rs`; this file must not
//! grow index-arithmetic rules.

use super::int_bits::{canonical_bits, int_limits, int_value, mask};
use super::{raw_type, Body, BufDecl, Expr, KBinary, KUnary, Kernel, Schedule, Var, E};
use odc_ir::{DType, ReduceOp};
use std::collections::HashMap;

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

    pub(super) fn intern(&mut self, e: Expr, ty: DType, range: Option<(i64, i64)>) -> E {
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
}

impl KernelBuilder {
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

