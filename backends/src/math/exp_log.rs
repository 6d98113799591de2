//! e^x (reduction by ln 2, a polynomial, scaling by 2^n) and ln(x) (a mantissa in
//! [sqrt(1/2), sqrt(2)) and its exponent), with `log1p` for the functions built on them.
//! No other function family.

use crate::kernel::{KBinary, KernelBuilder, E};
use odc_ir::DType;
use super::shorthand::F;

/// e^x.
pub fn exp(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    let mut f = F::new(kb, t);
    let (hi_lim, lo_lim, ln2_hi, ln2_lo, coeffs): (f64, f64, f64, f64, &[f64]) = if t == DType::F32 {
        (
            88.722_839_355_468_75,
            -103.972_084,
            0.693_359_375,
            -2.121_944_400_546_905_8e-4,
            &[1.987_569_150_0e-4, 1.398_199_950_7e-3, 8.333_451_907_3e-3, 4.166_579_589_4e-2, 1.666_666_545_9e-1, 5.000_000_120_1e-1],
        )
    } else {
        (
            709.782_712_893_384,
            -745.133_219_101_941_1,
            6.931_471_803_691_238_164_9e-1,
            1.908_214_929_270_587_700_02e-10,
            &[
                1.0 / 6_227_020_800.0,
                1.0 / 479_001_600.0,
                1.0 / 39_916_800.0,
                1.0 / 3_628_800.0,
                1.0 / 362_880.0,
                1.0 / 40_320.0,
                1.0 / 5_040.0,
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
            ],
        )
    };
    // Clamp so the exponent construction below stays in range; overflow/underflow fixed after.
    let lo = f.c(lo_lim - 1.0);
    let hi = f.c(hi_lim + 1.0);
    let xc = f.max(x, lo);
    let xc = f.min(xc, hi);
    let l2e = f.mulc(xc, std::f64::consts::LOG2_E);
    let n = f.nearest(l2e);
    let a = f.mulc(n, ln2_hi);
    let r = f.sub(xc, a);
    let b = f.mulc(n, ln2_lo);
    let r = f.sub(r, b);
    let p = f.poly(r, coeffs);
    let r2 = f.mul(r, r);
    let one = f.c(1.0);
    let p = if t == DType::F32 {
        // 1 + r + r^2 * P(r)
        let q = f.mul(r2, p);
        let s = f.add(q, r);
        f.add(s, one)
    } else {
        // Taylor: 1 + r + r^2 * (1/2 + r/6 + ...)
        let q = f.mul(r2, p);
        let s = f.add(q, r);
        f.add(s, one)
    };
    // Scale by 2^n in two halves so subnormal results come out right.
    let half = f.mulc(n, 0.5);
    let n1 = f.floor(half);
    let n2 = f.sub(n, n1);
    let s1 = f.exp2_int(n1);
    let s2 = f.exp2_int(n2);
    let y = f.mul(p, s1);
    let y = f.mul(y, s2);
    let over = f.cmpc(KBinary::Gt, x, hi_lim);
    let under = f.cmpc(KBinary::Lt, x, lo_lim);
    let inf = f.c(f64::INFINITY);
    let zero = f.c(0.0);
    let y = f.sel(over, inf, y);
    let y = f.sel(under, zero, y);
    let nan = f.is_nan(x);
    f.sel(nan, x, y)
}

/// Split a positive finite float into `(m, e)` with `x = m * 2^e`, `m` in `[sqrt(1/2), sqrt(2))`.
fn frexp_sqrt2(kb: &mut KernelBuilder, x: E) -> (E, E) {
    let t = kb.ty(x);
    let (it, mant_bits, bias, mant_mask, one_bits, tiny, scale_exp): (DType, i64, i64, i64, i64, f64, i64) = if t == DType::F32 {
        (DType::I32, 23, 127, 0x7f_ffff, 0x3f80_0000, f32::MIN_POSITIVE as f64, 25)
    } else {
        (DType::I64, 52, 1023, 0x000f_ffff_ffff_ffff, 0x3ff0_0000_0000_0000, f64::MIN_POSITIVE, 54)
    };
    let mut f = F::new(kb, t);
    // Scale subnormals up first.
    let small = f.cmpc(KBinary::Lt, x, tiny);
    let scaled = f.mulc(x, (2f64).powi(scale_exp as i32));
    let xs = f.sel(small, scaled, x);
    let bits = kb.bitcast(it, xs);
    let sh = kb.iconst(it, mant_bits);
    let ebits = kb.binary(KBinary::Shr, bits, sh);
    let emask = kb.iconst(it, if t == DType::F32 { 0xff } else { 0x7ff });
    let ebits = kb.binary(KBinary::And, ebits, emask);
    let b = kb.iconst(it, bias);
    let e = kb.binary(KBinary::Sub, ebits, b);
    let mm = kb.iconst(it, mant_mask);
    let m = kb.binary(KBinary::And, bits, mm);
    let ob = kb.iconst(it, one_bits);
    let m = kb.binary(KBinary::Or, m, ob);
    let m = kb.bitcast(t, m);
    let mut f = F::new(kb, t);
    let e = f.kb.convert(t, e);
    let corr = f.c(scale_exp as f64);
    let e_sub = f.sub(e, corr);
    let e = f.sel(small, e_sub, e);
    let big = f.cmpc(KBinary::Gt, m, std::f64::consts::SQRT_2);
    let mh = f.mulc(m, 0.5);
    let m = f.sel(big, mh, m);
    let e1 = f.addc(e, 1.0);
    let e = f.sel(big, e1, e);
    (m, e)
}

/// Natural logarithm.
pub fn log(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    let (m, e) = frexp_sqrt2(kb, x);
    let mut f = F::new(kb, t);
    let fm = f.addc(m, -1.0);
    let r = if t == DType::F32 {
        let z = f.mul(fm, fm);
        let p = f.poly(
            fm,
            &[
                7.037_683_629_2e-2,
                -1.151_461_031_0e-1,
                1.167_699_874_0e-1,
                -1.242_014_084_6e-1,
                1.424_932_278_7e-1,
                -1.666_805_766_5e-1,
                2.000_071_476_5e-1,
                -2.499_999_399_3e-1,
                3.333_333_117_4e-1,
            ],
        );
        let y = f.mul(p, fm);
        let y = f.mul(y, z);
        let c1 = f.mulc(e, -2.121_944_40e-4);
        let y = f.add(y, c1);
        let hz = f.mulc(z, 0.5);
        let y = f.sub(y, hz);
        let s = f.add(fm, y);
        let c2 = f.mulc(e, 0.693_359_375);
        f.add(s, c2)
    } else {
        // log(m) = 2 atanh(s), s = (m-1)/(m+1)
        let d = f.addc(m, 1.0);
        let s = f.div(fm, d);
        let s2 = f.mul(s, s);
        let coeffs: Vec<f64> = (0..11).rev().map(|k| 1.0 / (2 * k + 1) as f64).collect();
        let p = f.poly(s2, &coeffs);
        let two_s = f.mulc(s, 2.0);
        let lm = f.mul(two_s, p);
        let a = f.mulc(e, 6.931_471_803_691_238_164_9e-1);
        let b = f.mulc(e, 1.908_214_929_270_587_700_02e-10);
        let lb = f.add(lm, b);
        f.add(a, lb)
    };
    // Special values: log(0) = -inf, log(neg) = NaN, log(inf) = inf, NaN stays NaN.
    let zero = f.cmpc(KBinary::Eq, x, 0.0);
    let neg = f.cmpc(KBinary::Lt, x, 0.0);
    let inf = f.cmpc(KBinary::Eq, x, f64::INFINITY);
    let ninf = f.c(f64::NEG_INFINITY);
    let pinf = f.c(f64::INFINITY);
    let nan = f.c(f64::NAN);
    let r = f.sel(zero, ninf, r);
    let r = f.sel(inf, pinf, r);
    let isnan = f.is_nan(x);
    let bad = f.kb.binary(KBinary::Or, neg, isnan);
    f.sel(bad, nan, r)
}

/// log(1 + u), accurate for small `u` (the `(1+u)-1` correction trick).
pub(super) fn log1p(kb: &mut KernelBuilder, u: E) -> E {
    let t = kb.ty(u);
    let mut f = F::new(kb, t);
    let w = f.addc(u, 1.0);
    let wm1 = f.addc(w, -1.0);
    let lw = log(f.kb, w);
    let mut f = F::new(kb, t);
    let q = f.div(u, wm1);
    let corrected = f.mul(lw, q);
    let exact = f.cmpc(KBinary::Eq, wm1, 0.0);
    let r = f.sel(exact, u, corrected);
    let inf = f.cmpc(KBinary::Eq, u, f64::INFINITY);
    f.sel(inf, u, r)
}
