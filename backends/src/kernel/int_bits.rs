//! Integer constants as bits: the value of constant bits of a type, canonical (sign- or
//! zero-extended) bits, and each integer type's representable range. Pure functions of a
//! `DType`; no kernel nodes.

use odc_ir::DType;

pub(super) fn sat_mul(a: i64, b: i64) -> i64 {
    a.saturating_mul(b)
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

pub(super) fn mask(ty: DType) -> u64 {
    match ty.bits() {
        64 => u64::MAX,
        b => (1u64 << b) - 1,
    }
}

/// Normalise constant bits: signed ints sign-extended, unsigned zero-extended.
pub(super) fn canonical_bits(ty: DType, bits: u64) -> u64 {
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

pub(super) fn clamp_range(ty: DType, r: (i64, i64)) -> Option<(i64, i64)> {
    let (lo, hi) = int_limits(ty);
    if r.0 < lo || r.1 > hi {
        None
    } else {
        Some(r)
    }
}
