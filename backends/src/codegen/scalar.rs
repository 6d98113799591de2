//! Scalar expression emission: one Cranelift value per node, with reductions as loops, integer
//! division that never traps, checked indices, conversions and software rounding. The vector
//! path (`vector.rs`) falls back to it per lane; it must not emit loops of the output nest.

use crate::kernel::{Expr, KBinary, KUnary, Var, E};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use odc_ir::{DType, ReduceOp};
use super::{bflags, clif_type, int_cc, Cg};

impl<'k, 'f> Cg<'k, 'f> {

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

    pub(super) fn reduce_init(&mut self, op: ReduceOp, ty: DType) -> Value {
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

    pub(super) fn reduce_combine(&mut self, op: ReduceOp, ty: DType, acc: Value, x: Value) -> Value {
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
    pub(super) fn reduce_loop<F>(&mut self, var: Var, init: &[Value], mut step: F) -> Vec<Value>
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
    pub(super) fn scalar_op(&mut self, e: E, node: &Expr, ty: DType, a: &[Value]) -> Value {
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
    pub(super) fn round_soft(&mut self, op: KUnary, ty: DType, x: Value) -> Value {
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
}
