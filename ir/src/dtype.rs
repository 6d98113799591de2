//! Element types.
//!
//! Storage types are everything a tensor can hold in memory. Arithmetic happens in a smaller set of
//! *compute types* (see [`DType::compute_type`]): the narrow floats (f16, bf16, the float8 and float4
//! formats) compute in f32, the packed sub-byte integers in i8/u8. Backends convert on load and store.

use odc_runtime::abi::{self, DTypeCode};
use std::fmt;

/// An element type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum DType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    BF16,
    F32,
    F64,
    /// float8: 4 exponent bits, 3 mantissa bits, finite only (NaN = 0x7f/0xff).
    F8E4M3FN,
    /// float8 e4m3, finite, no negative zero (NaN = 0x80).
    F8E4M3FNUZ,
    /// float8: 5 exponent bits, 2 mantissa bits, IEEE-like with infinities.
    F8E5M2,
    /// float8 e5m2, finite, no negative zero (NaN = 0x80).
    F8E5M2FNUZ,
    /// float8 exponent-only scale format (2^(x-127)), NaN = 0xff.
    F8E8M0,
    /// float4: 2 exponent bits, 1 mantissa bit; packed two per byte.
    F4E2M1,
    /// Packed signed 4-bit integers, two per byte, low nibble first.
    I4,
    /// Packed unsigned 4-bit integers.
    U4,
    /// Packed signed 2-bit integers, four per byte.
    I2,
    /// Packed unsigned 2-bit integers.
    U2,
}

use DType::*;

impl DType {
    /// Every dtype, for tables and tests.
    pub const ALL: [DType; 23] = [
        Bool, I8, I16, I32, I64, U8, U16, U32, U64, F16, BF16, F32, F64, F8E4M3FN, F8E4M3FNUZ, F8E5M2,
        F8E5M2FNUZ, F8E8M0, F4E2M1, I4, U4, I2, U2,
    ];

    /// Storage size of one element in bits.
    pub fn bits(self) -> usize {
        match self {
            Bool | I8 | U8 | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F8E8M0 => 8,
            I16 | U16 | F16 | BF16 => 16,
            I32 | U32 | F32 => 32,
            I64 | U64 | F64 => 64,
            F4E2M1 | I4 | U4 => 4,
            I2 | U2 => 2,
        }
    }

    /// Bytes needed to store `n` elements (sub-byte types are packed, rounded up).
    pub fn byte_len(self, n: usize) -> usize {
        (n * self.bits()).div_ceil(8)
    }

    /// Elements narrower than a byte share bytes with their neighbours.
    pub fn is_packed(self) -> bool {
        self.bits() < 8
    }

    pub fn is_float(self) -> bool {
        matches!(self, F16 | BF16 | F32 | F64 | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F8E8M0 | F4E2M1)
    }

    pub fn is_int(self) -> bool {
        matches!(self, I8 | I16 | I32 | I64 | U8 | U16 | U32 | U64 | I4 | U4 | I2 | U2)
    }

    pub fn is_signed_int(self) -> bool {
        matches!(self, I8 | I16 | I32 | I64 | I4 | I2)
    }

    pub fn is_unsigned_int(self) -> bool {
        matches!(self, U8 | U16 | U32 | U64 | U4 | U2)
    }

    /// The type arithmetic on this storage type is carried out in.
    pub fn compute_type(self) -> DType {
        match self {
            F16 | BF16 | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F8E8M0 | F4E2M1 => F32,
            I4 | I2 => I8,
            U4 | U2 => U8,
            other => other,
        }
    }

    /// True for types that are their own compute type.
    pub fn is_compute_type(self) -> bool {
        self.compute_type() == self
    }

    /// The lowercase name used in error messages and the printer.
    pub fn name(self) -> &'static str {
        match self {
            Bool => "bool",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            U8 => "u8",
            U16 => "u16",
            U32 => "u32",
            U64 => "u64",
            F16 => "f16",
            BF16 => "bf16",
            F32 => "f32",
            F64 => "f64",
            F8E4M3FN => "f8e4m3fn",
            F8E4M3FNUZ => "f8e4m3fnuz",
            F8E5M2 => "f8e5m2",
            F8E5M2FNUZ => "f8e5m2fnuz",
            F8E8M0 => "f8e8m0",
            F4E2M1 => "f4e2m1",
            I4 => "i4",
            U4 => "u4",
            I2 => "i2",
            U2 => "u2",
        }
    }

    /// Parse a name as printed by [`DType::name`].
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Its entry in the ABI's dtype table ([`odc_runtime::abi::DTYPE_CODES`], the ONNX
    /// `TensorProto.DataType` numbering): code and storage width.
    pub fn abi(self) -> &'static DTypeCode {
        abi::dtype_named(self.name()).expect("every DType has an ABI table entry (tested below)")
    }

    /// The stable numeric code used in the module ABI and by ONNX.
    pub fn abi_code(self) -> u32 {
        self.abi().code
    }

    /// Inverse of [`DType::abi_code`].
    pub fn from_abi_code(code: u32) -> Option<DType> {
        abi::dtype_code(code).and_then(|d| DType::from_name(d.name))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scalar constant, used for attributes such as a pad value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    F64(f64),
    I64(i64),
    U64(u64),
}

impl Scalar {
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::F64(v) => v,
            Scalar::I64(v) => v as f64,
            Scalar::U64(v) => v as f64,
        }
    }
    pub fn as_i64(self) -> i64 {
        match self {
            Scalar::F64(v) => v as i64,
            Scalar::I64(v) => v,
            Scalar::U64(v) => v as i64,
        }
    }
    pub fn is_zero(self) -> bool {
        match self {
            Scalar::F64(v) => v == 0.0,
            Scalar::I64(v) => v == 0,
            Scalar::U64(v) => v == 0,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::F64(v) => write!(f, "{v}"),
            Scalar::I64(v) => write!(f, "{v}"),
            Scalar::U64(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_is_in_the_abi_table_once_with_its_width() {
        for d in DType::ALL {
            assert_eq!(d.abi().bits as usize, d.bits(), "{d}");
            assert_eq!(DType::from_abi_code(d.abi_code()), Some(d));
        }
        assert_eq!(abi::DTYPE_CODES.len(), DType::ALL.len());
        assert_eq!(DType::F32.abi_code(), 1);
        assert_eq!(DType::BF16.abi_code(), 16);
        assert_eq!(DType::from_abi_code(8), None, "8 is ONNX's string type");
    }
}
