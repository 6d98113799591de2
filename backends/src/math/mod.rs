//! The math library: primitive ops and storage formats expanded into kernel-IR expressions.
//!
//! Cranelift has no `exp`, `log` or `sin`, and the runtime holds no math kernels, so every
//! transcendental is a polynomial built here from adds, multiplies, bit casts and selects. Because
//! the expansion is ordinary kernel IR, it is vectorised, hoisted and fused like anything else.
//! f32 functions use Cephes-style minimax polynomials (a few ulp); f64 functions use longer
//! polynomials or series. Narrow storage formats (f16, bf16, float8, float4, packed ints) are
//! decoded to and encoded from their compute types with integer bit manipulation.
//!
//! This file maps each primitive op to its expansion (`unary`, `binary`); the function families
//! are in the submodules, storage formats in `storage.rs`/`small_float.rs`. Expansions build
//! kernel IR only; they never emit machine code.

mod exp_log;
mod pow;
mod shorthand;
mod sinh_tanh_erf;
mod small_float;
mod storage;
mod trig;

pub use exp_log::{exp, log};
pub use storage::{bitcast, cast, decode, encode, round_to_storage};

use exp_log::log1p;
use pow::pow;
use shorthand::F;
use sinh_tanh_erf::{erf, sinh, tanh};
use trig::{atan, sin_cos};

use crate::kernel::{KBinary, KUnary, KernelBuilder, E};
use odc_ir::{BinaryOp, DType, UnaryOp};

/// `op(x)` where `x` has storage dtype `dt` (and so compute type `dt.compute_type()`).
pub fn unary(kb: &mut KernelBuilder, op: UnaryOp, x: E, dt: DType) -> E {
    let ct = dt.compute_type();
    let r = match op {
        UnaryOp::Neg => kb.unary(KUnary::Neg, x),
        UnaryOp::Abs => kb.unary(KUnary::Abs, x),
        UnaryOp::Sign => {
            let zero = kb.constant(ct, 0.0);
            let one = kb.constant(ct, 1.0);
            let gt = kb.binary(KBinary::Gt, x, zero);
            if ct.is_unsigned_int() {
                kb.select(gt, one, zero)
            } else {
                let m1 = kb.constant(ct, -1.0);
                let lt = kb.binary(KBinary::Lt, x, zero);
                let neg_or_x = kb.select(lt, m1, if ct.is_float() { x } else { zero });
                kb.select(gt, one, neg_or_x)
            }
        }
        UnaryOp::Sqrt => kb.unary(KUnary::Sqrt, x),
        UnaryOp::Recip => {
            let one = kb.constant(ct, 1.0);
            kb.binary(KBinary::Div, one, x)
        }
        UnaryOp::Floor => kb.unary(KUnary::Floor, x),
        UnaryOp::Ceil => kb.unary(KUnary::Ceil, x),
        UnaryOp::Round => kb.unary(KUnary::Nearest, x),
        UnaryOp::Exp => exp(kb, x),
        UnaryOp::Log => log(kb, x),
        UnaryOp::Sin => sin_cos(kb, x, false),
        UnaryOp::Cos => sin_cos(kb, x, true),
        UnaryOp::Tan => {
            let s = sin_cos(kb, x, false);
            let c = sin_cos(kb, x, true);
            kb.binary(KBinary::Div, s, c)
        }
        UnaryOp::Atan => atan(kb, x),
        UnaryOp::Asin => {
            // atan(x / sqrt((1 - x)(1 + x)))
            let mut f = F::new(kb, ct);
            let one = f.c(1.0);
            let a = f.sub(one, x);
            let b = f.add(one, x);
            let p = f.mul(a, b);
            let s = f.sqrt(p);
            let q = f.div(x, s);
            atan(kb, q)
        }
        UnaryOp::Acos => {
            // 2 atan(sqrt((1 - x) / (1 + x)))
            let mut f = F::new(kb, ct);
            let one = f.c(1.0);
            let a = f.sub(one, x);
            let b = f.add(one, x);
            let q = f.div(a, b);
            let s = f.sqrt(q);
            let t = atan(kb, s);
            let mut f = F::new(kb, ct);
            f.mulc(t, 2.0)
        }
        UnaryOp::Sinh => sinh(kb, x),
        UnaryOp::Cosh => {
            let ex = exp(kb, x);
            let mut f = F::new(kb, ct);
            let nx = f.neg(x);
            let emx = exp(f.kb, nx);
            let mut f = F::new(kb, ct);
            let s = f.add(ex, emx);
            f.mulc(s, 0.5)
        }
        UnaryOp::Tanh => tanh(kb, x),
        UnaryOp::Asinh => {
            // sign(x) * log1p(|x| + x^2 / (1 + sqrt(1 + x^2))), or log(2|x|) when x^2 overflows
            let mut f = F::new(kb, ct);
            let a = f.abs(x);
            let x2 = f.mul(a, a);
            let one = f.c(1.0);
            let t = f.add(one, x2);
            let s = f.sqrt(t);
            let d = f.add(one, s);
            let q = f.div(x2, d);
            let u = f.add(a, q);
            let small = log1p(kb, u);
            let mut f = F::new(kb, ct);
            let two_a = f.mulc(a, 2.0);
            let large = log(f.kb, two_a);
            let mut f = F::new(kb, ct);
            let big = f.cmpc(KBinary::Gt, a, if ct == DType::F32 { 1e9 } else { 1e150 });
            let m = f.sel(big, large, small);
            f.with_sign_of(m, x)
        }
        UnaryOp::Acosh => {
            // log1p(t + sqrt(2t + t^2)), t = x - 1
            let mut f = F::new(kb, ct);
            let t = f.addc(x, -1.0);
            let t2 = f.mul(t, t);
            let two_t = f.mulc(t, 2.0);
            let s = f.add(two_t, t2);
            let r = f.sqrt(s);
            let u = f.add(t, r);
            let small = log1p(kb, u);
            let mut f = F::new(kb, ct);
            let two_x = f.mulc(x, 2.0);
            let large = log(f.kb, two_x);
            let mut f = F::new(kb, ct);
            let big = f.cmpc(KBinary::Gt, x, if ct == DType::F32 { 1e9 } else { 1e150 });
            f.sel(big, large, small)
        }
        UnaryOp::Atanh => {
            // 0.5 * (log1p(x) - log1p(-x)): both arguments are exact, unlike 2x / (1 - x)
            let a = log1p(kb, x);
            let nx = kb.unary(KUnary::Neg, x);
            let b = log1p(kb, nx);
            let mut f = F::new(kb, ct);
            let d = f.sub(a, b);
            f.mulc(d, 0.5)
        }
        UnaryOp::Erf => erf(kb, x),
        UnaryOp::Not | UnaryOp::BitNot => kb.unary(KUnary::Not, x),
        UnaryOp::IsNan => kb.binary(KBinary::Ne, x, x),
        UnaryOp::IsPosInf => {
            let inf = kb.constant(ct, f64::INFINITY);
            kb.binary(KBinary::Eq, x, inf)
        }
        UnaryOp::IsNegInf => {
            let inf = kb.constant(ct, f64::NEG_INFINITY);
            kb.binary(KBinary::Eq, x, inf)
        }
    };
    if op.returns_bool() {
        r
    } else {
        round_to_storage(kb, r, dt)
    }
}

/// `op(a, b)` for operands of storage dtype `dt`.
pub fn binary(kb: &mut KernelBuilder, op: BinaryOp, a: E, b: E, dt: DType) -> E {
    let k = match op {
        BinaryOp::Add => KBinary::Add,
        BinaryOp::Sub => KBinary::Sub,
        BinaryOp::Mul => KBinary::Mul,
        BinaryOp::Div => KBinary::Div,
        BinaryOp::Rem => KBinary::Rem,
        BinaryOp::Max => KBinary::Max,
        BinaryOp::Min => KBinary::Min,
        BinaryOp::And | BinaryOp::BitAnd => KBinary::And,
        BinaryOp::Or | BinaryOp::BitOr => KBinary::Or,
        BinaryOp::Xor | BinaryOp::BitXor => KBinary::Xor,
        BinaryOp::Shl => KBinary::Shl,
        BinaryOp::Shr => KBinary::Shr,
        BinaryOp::Eq => KBinary::Eq,
        BinaryOp::Lt => KBinary::Lt,
        BinaryOp::Le => KBinary::Le,
        BinaryOp::Gt => KBinary::Gt,
        BinaryOp::Ge => KBinary::Ge,
        BinaryOp::Pow => {
            let r = pow(kb, a, b, dt.compute_type());
            return round_to_storage(kb, r, dt);
        }
    };
    let r = kb.binary(k, a, b);
    if op.returns_bool() {
        r
    } else {
        round_to_storage(kb, r, dt)
    }
}
