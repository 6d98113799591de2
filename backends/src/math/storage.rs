//! Casts between storage dtypes and the decode/encode of narrow storage formats (f16, bf16,
//! packed ints; float8/float4 via `small_float.rs`) to and from their compute types, with
//! round-to-storage. Integer bit manipulation only; no transcendentals.

use crate::kernel::{KBinary, KUnary, KernelBuilder, E};
use odc_ir::DType;
use super::shorthand::{and_c, or_c, shl_c, F};
use super::small_float::{decode_small_float, encode_small_float};

/// Cast a value of storage dtype `from` to storage dtype `to`, returning `to`'s compute type.
pub fn cast(kb: &mut KernelBuilder, x: E, from: DType, to: DType, saturate: bool) -> E {
    let (cf, ctt) = (from.compute_type(), to.compute_type());
    if from == to {
        return x;
    }
    if is_narrow_float(to) {
        // Narrow floats round from f32 (f64 sources round to f32 first).
        let v = kb.convert(DType::F32, x);
        let v = if saturate && is_float8(to) {
            let m = max_finite(to);
            let mut f = F::new(kb, DType::F32);
            let hi = f.c(m);
            let lo = f.c(-m);
            let c = f.min(v, hi);
            let c = f.max(c, lo);
            let nan = f.is_nan(v);
            f.sel(nan, v, c)
        } else {
            v
        };
        return round_to_storage(kb, v, to);
    }
    // Everything else (including float -> int4/int2) truncates and wraps, as numpy's astype does.
    let _ = cf;
    let v = kb.convert(ctt, x);
    round_to_storage(kb, v, to)
}

/// Reinterpret bits of storage dtype `from` as `to` (same width).
pub fn bitcast(kb: &mut KernelBuilder, x: E, from: DType, to: DType) -> E {
    let raw = encode(kb, x, from);
    let rt = crate::kernel::raw_type(to);
    let r = if kb.ty(raw).is_float() || rt.is_float() { kb.bitcast(rt, raw) } else { kb.convert(rt, raw) };
    decode(kb, r, to)
}

fn is_float8(t: DType) -> bool {
    matches!(t, DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ)
}

fn is_narrow_float(t: DType) -> bool {
    t.is_float() && t.compute_type() == DType::F32 && t != DType::F32
}

pub(super) fn max_finite(t: DType) -> f64 {
    match t {
        DType::F8E4M3FN => 448.0,
        DType::F8E4M3FNUZ => 240.0,
        DType::F8E5M2 => 57344.0,
        DType::F8E5M2FNUZ => 57344.0,
        DType::F4E2M1 => 6.0,
        DType::F16 => 65504.0,
        DType::BF16 => 3.389_531_389_251_535_5e38,
        _ => f64::MAX,
    }
}

/// Round a compute-type value to what `storage` can represent (identity for compute types).
pub fn round_to_storage(kb: &mut KernelBuilder, v: E, storage: DType) -> E {
    if storage.is_compute_type() {
        return v;
    }
    let raw = encode(kb, v, storage);
    decode(kb, raw, storage)
}

/// Raw loaded bits of `storage` → the compute-type value.
pub fn decode(kb: &mut KernelBuilder, raw: E, storage: DType) -> E {
    let v = decode_bits(kb, raw, storage);
    if !storage.is_compute_type() {
        kb.note_decoded(v, raw, storage);
    }
    v
}

fn decode_bits(kb: &mut KernelBuilder, raw: E, storage: DType) -> E {
    use DType::*;
    match storage {
        F16 => {
            let h = kb.convert(I32, raw);
            let sign = and_c(kb, h, 0x8000);
            let sign = shl_c(kb, sign, 16);
            let em = and_c(kb, h, 0x7fff);
            let shifted = shl_c(kb, em, 13);
            let fl = kb.bitcast(F32, shifted);
            let magic = kb.f32c(f32::from_bits(0x7780_0000));
            let normal = kb.binary(KBinary::Mul, fl, magic);
            let normal = kb.bitcast(I32, normal);
            let special_bits = or_c(kb, shifted, 0x7f80_0000);
            let lim = kb.iconst(I32, 0x7c00);
            let is_special = kb.binary(KBinary::Ge, em, lim);
            let bits = kb.select(is_special, special_bits, normal);
            let bits = kb.binary(KBinary::Or, bits, sign);
            kb.bitcast(F32, bits)
        }
        BF16 => {
            let h = kb.convert(I32, raw);
            let bits = shl_c(kb, h, 16);
            kb.bitcast(F32, bits)
        }
        F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F4E2M1 => decode_small_float(kb, raw, storage),
        F8E8M0 => {
            let r = kb.convert(I32, raw);
            let normal = shl_c(kb, r, 23);
            let zero = kb.iconst(I32, 0);
            let is0 = kb.binary(KBinary::Eq, r, zero);
            let sub = kb.iconst(I32, 0x0040_0000);
            let bits = kb.select(is0, sub, normal);
            let ff = kb.iconst(I32, 0xff);
            let isnan = kb.binary(KBinary::Eq, r, ff);
            let nan = kb.iconst(I32, 0x7fc0_0000);
            let bits = kb.select(isnan, nan, bits);
            kb.bitcast(F32, bits)
        }
        I4 | I2 | U4 | U2 => {
            // Loads already unpack; re-normalise for values built in registers.
            let bits = storage.bits() as i64;
            let up = 8 - bits;
            let t = kb.ty(raw);
            let s = kb.iconst(t, up);
            let v = kb.binary(KBinary::Shl, raw, s);
            if storage.is_signed_int() {
                kb.binary(KBinary::Shr, v, s)
            } else {
                let m = kb.iconst(t, (1 << bits) - 1);
                kb.binary(KBinary::And, raw, m)
            }
        }
        _ => raw,
    }
}

/// A compute-type value → the raw bits stored for `storage`.
pub fn encode(kb: &mut KernelBuilder, v: E, storage: DType) -> E {
    use DType::*;
    if let Some(raw) = kb.raw_of(v, storage) {
        return raw;
    }
    match storage {
        F16 => {
            // Round to nearest even (after F. Giesen's float_to_half).
            let bits = kb.bitcast(I32, v);
            let sign = kb.iconst(I32, 16);
            let sign = kb.binary(KBinary::Shr, bits, sign);
            let sign = and_c(kb, sign, 0x8000);
            let abs = and_c(kb, bits, 0x7fff_ffff);
            let f16max = kb.iconst(I32, (127 + 16) << 23);
            let too_big = kb.binary(KBinary::Ge, abs, f16max);
            let infbits = kb.iconst(I32, 0x7f80_0000);
            let is_nan = kb.binary(KBinary::Gt, abs, infbits);
            let nanv = kb.iconst(I32, 0x7e00);
            let infv = kb.iconst(I32, 0x7c00);
            let big_v = kb.select(is_nan, nanv, infv);
            // subnormal: add a magic float, take the low bits
            let denorm_magic = ((127 - 15) + (23 - 10) + 1) << 23;
            let absf = kb.bitcast(F32, abs);
            let magic = kb.f32c(f32::from_bits(denorm_magic as u32));
            let sum = kb.binary(KBinary::Add, absf, magic);
            let sumb = kb.bitcast(I32, sum);
            let dm = kb.iconst(I32, denorm_magic);
            let sub_v = kb.binary(KBinary::Sub, sumb, dm);
            // normal: rebias and round
            let thirteen = kb.iconst(I32, 13);
            let odd = kb.binary(KBinary::Shr, abs, thirteen);
            let odd = and_c(kb, odd, 1);
            let rebias = kb.iconst(I32, (((15 - 127) << 23) as i64) + 0xfff);
            let n = kb.binary(KBinary::Add, abs, rebias);
            let n = kb.binary(KBinary::Add, n, odd);
            let norm_v = kb.binary(KBinary::Shr, n, thirteen);
            let small_lim = kb.iconst(I32, 113 << 23);
            let is_sub = kb.binary(KBinary::Lt, abs, small_lim);
            let r = kb.select(is_sub, sub_v, norm_v);
            let r = kb.select(too_big, big_v, r);
            let r = kb.binary(KBinary::Or, r, sign);
            kb.convert(U16, r)
        }
        BF16 => {
            let bits = kb.bitcast(I32, v);
            let sixteen = kb.iconst(I32, 16);
            let lsb = kb.binary(KBinary::Shr, bits, sixteen);
            let lsb = and_c(kb, lsb, 1);
            let r = kb.add_c(bits, 0x7fff);
            let r = kb.binary(KBinary::Add, r, lsb);
            let r = kb.binary(KBinary::Shr, r, sixteen);
            let r = and_c(kb, r, 0xffff);
            let hi = kb.binary(KBinary::Shr, bits, sixteen);
            let nan = or_c(kb, hi, 0x0040);
            let nan = and_c(kb, nan, 0xffff);
            let is_nan = kb.binary(KBinary::Ne, v, v);
            let r = kb.select(is_nan, nan, r);
            kb.convert(U16, r)
        }
        F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F4E2M1 => encode_small_float(kb, v, storage),
        F8E8M0 => {
            // Round up to the next power of two (ONNX default round_mode="up"), saturating.
            let bits = kb.bitcast(I32, v);
            let twenty3 = kb.iconst(I32, 23);
            let e = kb.binary(KBinary::Shr, bits, twenty3);
            let e = and_c(kb, e, 0xff);
            let frac = and_c(kb, bits, 0x7f_ffff);
            let zero = kb.iconst(I32, 0);
            let has_frac = kb.binary(KBinary::Ne, frac, zero);
            let ff = kb.iconst(I32, 0xff);
            let fe = kb.iconst(I32, 0xfe);
            let special = kb.binary(KBinary::Eq, e, ff);
            let at_max = kb.binary(KBinary::Eq, e, fe);
            let not_max = kb.unary(KUnary::Not, at_max);
            let up = kb.binary(KBinary::And, has_frac, not_max);
            let inc = kb.convert(I32, up);
            let r = kb.binary(KBinary::Add, e, inc);
            let r = kb.select(special, ff, r);
            kb.convert(U8, r)
        }
        I4 | U4 | I2 | U2 => {
            let t = kb.ty(v);
            let m = kb.iconst(t, (1 << storage.bits()) - 1);
            kb.binary(KBinary::And, v, m)
        }
        _ => v,
    }
}
