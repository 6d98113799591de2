//! The float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0) and float4 (e2m1) formats: their
//! parameters and bit-level decode to / encode from f32 with round-to-nearest-even and each
//! format's saturation and NaN rules. Called by `storage.rs` only.

use crate::kernel::{KBinary, KUnary, KernelBuilder, E};
use odc_ir::DType;
use super::shorthand::{and_c, shl_c, shr_c};
use super::storage::max_finite;

/// Parameters of the small float formats: (exponent bits, mantissa bits, bias, kind).
#[derive(Clone, Copy, PartialEq)]
enum SmallKind {
    /// IEEE-like with inf (e5m2).
    Ieee,
    /// Finite, NaN = all ones (e4m3fn).
    FiniteNanAllOnes,
    /// Finite, NaN = 0x80, no negative zero (fnuz).
    Fnuz,
    /// Finite, no NaN (e2m1).
    FiniteNoNan,
}

fn small_params(t: DType) -> (i64, i64, i64, SmallKind, i64) {
    match t {
        DType::F8E4M3FN => (4, 3, 7, SmallKind::FiniteNanAllOnes, 8),
        DType::F8E4M3FNUZ => (4, 3, 8, SmallKind::Fnuz, 8),
        DType::F8E5M2 => (5, 2, 15, SmallKind::Ieee, 8),
        DType::F8E5M2FNUZ => (5, 2, 16, SmallKind::Fnuz, 8),
        DType::F4E2M1 => (2, 1, 1, SmallKind::FiniteNoNan, 4),
        _ => unreachable!(),
    }
}

pub(super) fn decode_small_float(kb: &mut KernelBuilder, raw: E, t: DType) -> E {
    let (eb, mb, bias, kind, width) = small_params(t);
    let r = kb.convert(DType::I32, raw);
    let sign_bit = width - 1;
    let sign = shr_c(kb, r, sign_bit);
    let sign = and_c(kb, sign, 1);
    let sign = shl_c(kb, sign, 31);
    let e = shr_c(kb, r, mb);
    let e = and_c(kb, e, (1 << eb) - 1);
    let m = and_c(kb, r, (1 << mb) - 1);
    // normal: f32 bits = (e - bias + 127) << 23 | m << (23 - mb)
    let eb32 = kb.add_c(e, 127 - bias);
    let eb32 = shl_c(kb, eb32, 23);
    let mb32 = shl_c(kb, m, 23 - mb);
    let normal = kb.binary(KBinary::Or, eb32, mb32);
    let normal = kb.bitcast(DType::F32, normal);
    // subnormal: m * 2^(1 - bias - mb)
    let mf = kb.convert(DType::F32, m);
    let scale = kb.f32c((2f32).powi((1 - bias - mb) as i32));
    let sub = kb.binary(KBinary::Mul, mf, scale);
    let zero = kb.iconst(DType::I32, 0);
    let is_sub = kb.binary(KBinary::Eq, e, zero);
    let mag = kb.select(is_sub, sub, normal);
    let magb = kb.bitcast(DType::I32, mag);
    let bits = kb.binary(KBinary::Or, magb, sign);
    let val = kb.bitcast(DType::F32, bits);
    let nan = kb.f32c(f32::NAN);
    match kind {
        SmallKind::Ieee => {
            let emax = kb.iconst(DType::I32, (1 << eb) - 1);
            let top = kb.binary(KBinary::Eq, e, emax);
            let mzero = kb.binary(KBinary::Eq, m, zero);
            let inf = kb.f32c(f32::INFINITY);
            let ninf = kb.f32c(f32::NEG_INFINITY);
            let sgn_neg = kb.binary(KBinary::Ne, sign, zero);
            let infv = kb.select(sgn_neg, ninf, inf);
            let special = kb.select(mzero, infv, nan);
            kb.select(top, special, val)
        }
        SmallKind::FiniteNanAllOnes => {
            let low = and_c(kb, r, 0x7f);
            let all = kb.iconst(DType::I32, 0x7f);
            let is_nan = kb.binary(KBinary::Eq, low, all);
            kb.select(is_nan, nan, val)
        }
        SmallKind::Fnuz => {
            let c80 = kb.iconst(DType::I32, 0x80);
            let is_nan = kb.binary(KBinary::Eq, r, c80);
            kb.select(is_nan, nan, val)
        }
        SmallKind::FiniteNoNan => val,
    }
}

pub(super) fn encode_small_float(kb: &mut KernelBuilder, v: E, t: DType) -> E {
    let (eb, mb, bias, kind, width) = small_params(t);
    let maxv = max_finite(t);
    let emin = 1 - bias;
    let bits = kb.bitcast(DType::I32, v);
    let sign = shr_c(kb, bits, 31);
    let sign = and_c(kb, sign, 1);
    let abs_bits = and_c(kb, bits, 0x7fff_ffff);
    let a = kb.bitcast(DType::F32, abs_bits);
    // Normal range: round the f32 mantissa to mb bits (ties to even).
    let shift = 23 - mb;
    let lsb = shr_c(kb, abs_bits, shift);
    let lsb = and_c(kb, lsb, 1);
    let rnd = kb.add_c(abs_bits, (1 << (shift - 1)) - 1);
    let rnd = kb.binary(KBinary::Add, rnd, lsb);
    let rnd = and_c(kb, rnd, !((1i64 << shift) - 1));
    let fe = shr_c(kb, rnd, 23);
    let te = kb.add_c(fe, bias - 127);
    let tm = shr_c(kb, rnd, shift);
    let tm = and_c(kb, tm, (1 << mb) - 1);
    let code_n = shl_c(kb, te, mb);
    let code_n = kb.binary(KBinary::Or, code_n, tm);
    let rounded_n = kb.bitcast(DType::F32, rnd);
    // Subnormal range: a multiple of 2^(emin - mb).
    let q = kb.f32c((2f32).powi((mb - emin) as i32));
    let aq = kb.binary(KBinary::Mul, a, q);
    let qn = kb.unary(KUnary::Nearest, aq);
    let code_s = kb.convert(DType::I32, qn);
    let min_normal = kb.f32c((2f32).powi(emin as i32));
    let is_sub = kb.binary(KBinary::Lt, a, min_normal);
    // A subnormal that rounds up to the smallest normal encodes correctly as code_s (q = 2^mb).
    let code = kb.select(is_sub, code_s, code_n);
    let rounded_big = kb.select(is_sub, min_normal, rounded_n);
    let maxc = kb.f32c(maxv as f32);
    let overflow = kb.binary(KBinary::Gt, rounded_big, maxc);
    let is_nan = kb.binary(KBinary::Ne, v, v);
    let sign_shift = width - 1;
    let sgn = shl_c(kb, sign, sign_shift);
    let nan_code = match kind {
        SmallKind::Ieee => kb.iconst(DType::I32, 0x7f),
        SmallKind::FiniteNanAllOnes => kb.iconst(DType::I32, 0x7f),
        SmallKind::Fnuz => kb.iconst(DType::I32, 0x80),
        // float4 has no NaN: NaN encodes as negative zero (ml_dtypes' convention).
        SmallKind::FiniteNoNan => kb.iconst(DType::I32, 0x8),
    };
    let over_code = match kind {
        SmallKind::Ieee => kb.iconst(DType::I32, ((1 << eb) - 1) << mb),
        SmallKind::FiniteNoNan => kb.iconst(DType::I32, (1 << (width - 1)) - 1),
        _ => nan_code,
    };
    let with_sign = kb.binary(KBinary::Or, code, sgn);
    let over_signed = match kind {
        SmallKind::Ieee | SmallKind::FiniteNoNan | SmallKind::FiniteNanAllOnes => kb.binary(KBinary::Or, over_code, sgn),
        SmallKind::Fnuz => over_code,
    };
    let r = kb.select(overflow, over_signed, with_sign);
    let r = if kind == SmallKind::Fnuz {
        // No negative zero: -0 encodes as 0.
        let zero = kb.iconst(DType::I32, 0);
        let is_zero = kb.binary(KBinary::Eq, code, zero);
        let not_over = kb.unary(KUnary::Not, overflow);
        let z = kb.binary(KBinary::And, is_zero, not_over);
        kb.select(z, zero, r)
    } else {
        r
    };
    let nan_signed = match kind {
        SmallKind::FiniteNanAllOnes => kb.binary(KBinary::Or, nan_code, sgn),
        _ => nan_code,
    };
    let r = kb.select(is_nan, nan_signed, r);
    kb.convert(DType::U8, r)
}
