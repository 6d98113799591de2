//! Vector expression emission for the vector loop: which nodes vectorise, f32x4/i32x4 values,
//! per-lane fallbacks, strided and contiguous vector loads, vector reductions and NaN-aware
//! min/max. It follows the schedule's vector width and never decides it.

use crate::kernel::{raw_type, Expr, KBinary, KUnary, Var, E};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{self, types, InstBuilder, Type, Value};
use odc_ir::{DType, ReduceOp};
use super::{bflags, int_cc, vflags, Cg, VVal, LANES};

fn vec_type(t: DType) -> Option<Type> {
    match t {
        DType::F32 => Some(types::F32X4),
        DType::I32 | DType::Bool => Some(types::I32X4),
        _ => None,
    }
}

impl<'k, 'f> Cg<'k, 'f> {

    /// The lane-`l` scalar of a node that depends on the lane variable.
    pub(super) fn emit_lane(&mut self, e: E, l: usize) -> Value {
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
    pub(super) fn lane_coef(&self, e: E, vv: Var) -> Option<i64> {
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
