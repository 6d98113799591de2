//! x^y: integer powers by square-and-multiply, constant multiples of 1/4 from products and
//! square roots, and otherwise exp(y ln|x|) in f64 with the sign of odd integer powers.
//! No other function family.

use crate::kernel::{KBinary, KernelBuilder, E};
use odc_ir::DType;
use super::exp_log::{exp, log};
use super::shorthand::F;

/// x^y for a compute type `ct`.
pub(super) fn pow(kb: &mut KernelBuilder, x: E, y: E, ct: DType) -> E {
    if !ct.is_float() {
        return int_pow(kb, x, y, ct);
    }
    if let Some(r) = kb.as_float_const(y).and_then(|yv| pow_quarters(kb, x, yv, ct)) {
        return r;
    }
    // Work in f64 for f32 inputs: y*log|x| needs the extra precision.
    let (xd, yd) = (kb.convert(DType::F64, x), kb.convert(DType::F64, y));
    let mut f = F::new(kb, DType::F64);
    let ax = f.abs(xd);
    let l = log(f.kb, ax);
    let mut f = F::new(kb, DType::F64);
    let yl = f.mul(yd, l);
    let m = exp(f.kb, yl);
    let mut f = F::new(kb, DType::F64);
    let fy = f.floor(yd);
    let is_int = f.cmp(KBinary::Eq, fy, yd);
    let half = f.mulc(yd, 0.5);
    let fh = f.floor(half);
    let odd = f.cmp(KBinary::Ne, fh, half);
    let odd = f.kb.binary(KBinary::And, odd, is_int);
    let neg = f.cmpc(KBinary::Lt, xd, 0.0);
    let nm = f.neg(m);
    let signed = f.sel(odd, nm, m);
    let nan = f.c(f64::NAN);
    let neg_result = f.sel(is_int, signed, nan);
    let r = f.sel(neg, neg_result, m);
    let one = f.c(1.0);
    let y0 = f.cmpc(KBinary::Eq, yd, 0.0);
    let x1 = f.cmpc(KBinary::Eq, xd, 1.0);
    let trivially_one = f.kb.binary(KBinary::Or, y0, x1);
    let r = f.sel(trivially_one, one, r);
    kb.convert(ct, r)
}

/// Largest |y| [`pow_quarters`] expands.
const POW_QUARTERS_MAX: f64 = 16.0;

/// x^y for a constant y that is a multiple of 1/4 with |y| <= 16, from multiplications and
/// square roots in the compute type: x^(w + r/4) = x^w (square-and-multiply) times sqrt(sqrt(x)),
/// sqrt(x) or both, and a reciprocal when y < 0. A few roundings instead of the f64 exp/log
/// path, at a small fraction of its cost (LRN's x^0.75, variance's x^2, tanh-GELU's x^3).
/// Special values follow `pow`: a negative x with a fractional y is NaN (from sqrt), and -0 is
/// turned into +0 first when y is fractional, where the result's zero or infinity is positive.
fn pow_quarters(kb: &mut KernelBuilder, x: E, y: f64, ct: DType) -> Option<E> {
    let quarters = y * 4.0;
    if quarters.fract() != 0.0 || y.abs() > POW_QUARTERS_MAX {
        return None;
    }
    let n = quarters.abs() as u64;
    let (whole, frac) = (n / 4, n % 4);
    let mut f = F::new(kb, ct);
    let x = if frac != 0 { f.addc(x, 0.0) } else { x };
    let mut acc: Option<E> = None;
    let (mut base, mut w) = (x, whole);
    while w > 0 {
        if w & 1 == 1 {
            acc = Some(match acc {
                None => base,
                Some(a) => f.mul(a, base),
            });
        }
        w >>= 1;
        if w > 0 {
            base = f.mul(base, base);
        }
    }
    if frac != 0 {
        let root2 = f.sqrt(x);
        let part = match frac {
            2 => root2,
            1 => f.sqrt(root2),
            _ => {
                let root4 = f.sqrt(root2);
                f.mul(root2, root4)
            }
        };
        acc = Some(match acc {
            None => part,
            Some(a) => f.mul(a, part),
        });
    }
    let r = acc.unwrap_or_else(|| f.c(1.0));
    Some(if y < 0.0 {
        let one = f.c(1.0);
        f.div(one, r)
    } else {
        r
    })
}

/// Integer x^y by square-and-multiply over the low 32 bits of `y` (y < 0 gives 0 unless |x| = 1).
fn int_pow(kb: &mut KernelBuilder, x: E, y: E, ct: DType) -> E {
    let mut result = kb.constant(ct, 1.0);
    let mut base = x;
    let y64 = kb.convert(DType::I64, y);
    for bit in 0..32 {
        let sh = kb.i64c(bit);
        let b = kb.binary(KBinary::Shr, y64, sh);
        let one = kb.i64c(1);
        let b = kb.binary(KBinary::And, b, one);
        let z = kb.i64c(0);
        let set = kb.binary(KBinary::Ne, b, z);
        let prod = kb.binary(KBinary::Mul, result, base);
        result = kb.select(set, prod, result);
        base = kb.binary(KBinary::Mul, base, base);
    }
    if ct.is_signed_int() {
        let zero = kb.i64c(0);
        let neg = kb.binary(KBinary::Lt, y64, zero);
        let one = kb.constant(ct, 1.0);
        let m1 = kb.constant(ct, -1.0);
        let zc = kb.constant(ct, 0.0);
        let is1 = kb.binary(KBinary::Eq, x, one);
        let ism1 = kb.binary(KBinary::Eq, x, m1);
        let one64 = kb.i64c(1);
        let odd = kb.binary(KBinary::And, y64, one64);
        let odd = kb.binary(KBinary::Ne, odd, zero);
        let m1r = kb.select(odd, m1, one);
        let negr = kb.select(ism1, m1r, zc);
        let negr = kb.select(is1, one, negr);
        kb.select(neg, negr, result)
    } else {
        result
    }
}
