//! Constant tensors (weights and folded values).
//!
//! The bytes are either owned or a window into a memory-mapped file, so a large model's weights are
//! never copied on load. Element layout is dense row-major, little-endian; sub-byte types are packed
//! low bits first, as in ONNX.

use crate::dtype::DType;
use crate::IrError;
use memmap2::Mmap;
use std::fmt;
use std::sync::Arc;

/// Immutable, cheaply clonable bytes: owned or memory-mapped.
#[derive(Clone)]
pub struct Bytes(Repr);

#[derive(Clone)]
enum Repr {
    // Vecs rather than `Arc<[u8]>`, so adopting a decoded buffer or computed f32 weights copies
    // nothing.
    Owned(Arc<Vec<u8>>),
    /// f32 values viewed as their bytes (little-endian hosts only).
    F32(Arc<Vec<f32>>),
    Mapped { map: Arc<Mmap>, offset: usize, len: usize },
}

impl Bytes {
    pub fn from_vec(v: Vec<u8>) -> Self {
        Bytes(Repr::Owned(Arc::new(v)))
    }

    /// Owned bytes copied from `v`.
    pub fn from_slice(v: &[u8]) -> Self {
        Self::from_vec(v.to_vec())
    }

    /// The little-endian bytes of plain-old-data values: a single copy on little-endian hosts.
    fn from_le<T: bytemuck::Pod, const N: usize>(v: &[T], to_le: impl Fn(&T) -> [u8; N]) -> Self {
        if cfg!(target_endian = "little") {
            Self::from_slice(bytemuck::cast_slice(v))
        } else {
            Self::from_vec(v.iter().flat_map(to_le).collect())
        }
    }

    /// The little-endian bytes of `v`, without a copy on little-endian hosts.
    pub fn from_f32_vec(v: Vec<f32>) -> Self {
        if cfg!(target_endian = "little") {
            Bytes(Repr::F32(Arc::new(v)))
        } else {
            Self::from_le(&v, |x| x.to_le_bytes())
        }
    }

    /// A window of a mapped file. Fails when the window does not lie inside the mapping.
    pub fn mapped(map: Arc<Mmap>, offset: usize, len: usize) -> Result<Self, IrError> {
        let end = offset.checked_add(len).ok_or_else(|| IrError::new("mapped window overflows"))?;
        if end > map.len() {
            return Err(IrError::new(format!(
                "mapped window {offset}..{end} lies outside the {}-byte file",
                map.len()
            )));
        }
        Ok(Bytes(Repr::Mapped { map, offset, len }))
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::F32(v) => bytemuck::cast_slice(v),
            Repr::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes{})", self.len(), if self.is_mapped() { ", mapped" } else { "" })
    }
}

/// A constant tensor.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

impl Tensor {
    /// Build a tensor from raw bytes, checking the byte count.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Self, IrError> {
        let n: usize = shape.iter().product();
        let want = dtype.byte_len(n);
        if data.len() != want {
            return Err(IrError::new(format!(
                "tensor of {dtype} {shape:?} needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// An f32 tensor owning `v` (no copy on little-endian hosts).
    pub fn from_f32_vec(shape: Vec<usize>, v: Vec<f32>) -> Self {
        Tensor::new(DType::F32, shape, Bytes::from_f32_vec(v)).expect("length matches shape")
    }

    pub fn from_f32(shape: Vec<usize>, v: &[f32]) -> Self {
        Tensor::new(DType::F32, shape, Bytes::from_le(v, |x| x.to_le_bytes())).expect("length matches shape")
    }

    /// The elements of an f32 tensor.
    pub fn f32_values(&self) -> Result<Vec<f32>, IrError> {
        if self.dtype != DType::F32 {
            return Err(IrError::new(format!("expected an f32 tensor, got {}", self.dtype)));
        }
        let b = self.bytes();
        match bytemuck::try_cast_slice::<u8, f32>(b) {
            Ok(v) if cfg!(target_endian = "little") => Ok(v.to_vec()),
            _ => Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        }
    }

    pub fn from_i64(shape: Vec<usize>, v: &[i64]) -> Self {
        Tensor::new(DType::I64, shape, Bytes::from_le(v, |x| x.to_le_bytes())).expect("length matches shape")
    }

    /// A tensor of `dtype` holding `values` (given as f64, converted with `as`-cast semantics;
    /// floats round to nearest). Only for compute-width types and f16/bf16/bool.
    pub fn from_f64_as(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Result<Self, IrError> {
        let mut out = Vec::with_capacity(dtype.byte_len(values.len()));
        for &v in values {
            match dtype {
                DType::Bool => out.push((v != 0.0) as u8),
                DType::I8 => out.push(v as i8 as u8),
                DType::U8 => out.push(v as u8),
                DType::I16 => out.extend((v as i16).to_le_bytes()),
                DType::U16 => out.extend((v as u16).to_le_bytes()),
                DType::I32 => out.extend((v as i32).to_le_bytes()),
                DType::U32 => out.extend((v as u32).to_le_bytes()),
                DType::I64 => out.extend((v as i64).to_le_bytes()),
                DType::U64 => out.extend((v as u64).to_le_bytes()),
                DType::F16 => out.extend(half::f16::from_f64(v).to_le_bytes()),
                DType::BF16 => out.extend(half::bf16::from_f64(v).to_le_bytes()),
                DType::F32 => out.extend((v as f32).to_le_bytes()),
                DType::F64 => out.extend(v.to_le_bytes()),
                other => return Err(IrError::new(format!("cannot build a {other} constant from numbers"))),
            }
        }
        Tensor::new(dtype, shape, Bytes::from_vec(out))
    }

    /// A scalar (rank-0) tensor.
    pub fn scalar(dtype: DType, v: f64) -> Result<Self, IrError> {
        Tensor::from_f64_as(dtype, vec![], &[v])
    }

    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// Element `i` as f64. Works for every non-packed type except the float8 formats.
    pub fn get_f64(&self, i: usize) -> Result<f64, IrError> {
        let b = self.bytes();
        let w = self.dtype.bits() / 8;
        if self.dtype.is_packed() {
            return Err(IrError::new(format!("cannot read {} elements at compile time", self.dtype)));
        }
        let s = b.get(i * w..i * w + w).ok_or_else(|| IrError::new("element index out of range"))?;
        Ok(match self.dtype {
            DType::Bool => (s[0] != 0) as u8 as f64,
            DType::I8 => s[0] as i8 as f64,
            DType::U8 => s[0] as f64,
            DType::I16 => i16::from_le_bytes([s[0], s[1]]) as f64,
            DType::U16 => u16::from_le_bytes([s[0], s[1]]) as f64,
            DType::I32 => i32::from_le_bytes(s.try_into().unwrap()) as f64,
            DType::U32 => u32::from_le_bytes(s.try_into().unwrap()) as f64,
            DType::I64 => i64::from_le_bytes(s.try_into().unwrap()) as f64,
            DType::U64 => u64::from_le_bytes(s.try_into().unwrap()) as f64,
            DType::F16 => half::f16::from_le_bytes([s[0], s[1]]).to_f64(),
            DType::BF16 => half::bf16::from_le_bytes([s[0], s[1]]).to_f64(),
            DType::F32 => f32::from_le_bytes(s.try_into().unwrap()) as f64,
            DType::F64 => f64::from_le_bytes(s.try_into().unwrap()),
            other => return Err(IrError::new(format!("cannot read {other} elements at compile time"))),
        })
    }

    /// Every element as f64, for every dtype: the float8/float4 formats decoded per their
    /// definitions (NaN encodings → NaN, e5m2 infinities), packed integers unpacked low bits
    /// first. For comparing and printing values; compile-time folding uses [`Tensor::get_f64`].
    pub fn decoded_f64(&self) -> Vec<f64> {
        let b = self.bytes();
        let nib = |i: usize, bits: usize| -> u32 {
            let per = 8 / bits;
            ((b[i / per] >> ((i % per) * bits)) & ((1 << bits) - 1) as u8) as u32
        };
        (0..self.num_elements())
            .map(|i| match self.dtype {
                DType::F8E4M3FN => {
                    let x = b[i] as u32;
                    if x & 0x7f == 0x7f {
                        f64::NAN
                    } else {
                        small_float(x, 4, 3, 7)
                    }
                }
                DType::F8E4M3FNUZ => {
                    let x = b[i] as u32;
                    if x == 0x80 {
                        f64::NAN
                    } else {
                        small_float(x, 4, 3, 8)
                    }
                }
                DType::F8E5M2 => {
                    let x = b[i] as u32;
                    if (x >> 2) & 0x1f == 0x1f {
                        match (x & 3, x & 0x80 != 0) {
                            (0, true) => f64::NEG_INFINITY,
                            (0, false) => f64::INFINITY,
                            _ => f64::NAN,
                        }
                    } else {
                        small_float(x, 5, 2, 15)
                    }
                }
                DType::F8E5M2FNUZ => {
                    let x = b[i] as u32;
                    if x == 0x80 {
                        f64::NAN
                    } else {
                        small_float(x, 5, 2, 16)
                    }
                }
                DType::F8E8M0 => {
                    if b[i] == 0xff {
                        f64::NAN
                    } else {
                        2f64.powi(b[i] as i32 - 127)
                    }
                }
                DType::F4E2M1 => small_float(nib(i, 4), 2, 1, 1),
                DType::I4 => ((nib(i, 4) as i32) << 28 >> 28) as f64,
                DType::U4 => nib(i, 4) as f64,
                DType::I2 => ((nib(i, 2) as i32) << 30 >> 30) as f64,
                DType::U2 => nib(i, 2) as f64,
                _ => self.get_f64(i).unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// Element `i` as i64 (exact for integer types; floats truncate).
    pub fn get_i64(&self, i: usize) -> Result<i64, IrError> {
        let b = self.bytes();
        Ok(match self.dtype {
            DType::I64 => i64::from_le_bytes(
                b.get(i * 8..i * 8 + 8).ok_or_else(|| IrError::new("element index out of range"))?.try_into().unwrap(),
            ),
            DType::U64 => u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8).ok_or_else(|| IrError::new("element index out of range"))?.try_into().unwrap(),
            ) as i64,
            _ => self.get_f64(i)? as i64,
        })
    }

    /// All elements as i64, for shape-like tensors.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, IrError> {
        (0..self.num_elements()).map(|i| self.get_i64(i)).collect()
    }

    /// All elements as f64.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>, IrError> {
        (0..self.num_elements()).map(|i| self.get_f64(i)).collect()
    }

    /// Same data, new shape (element count must match).
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor, IrError> {
        Tensor::new(self.dtype, shape, self.data.clone())
    }

    /// True when every element has the same bytes (used to spot splat constants).
    pub fn is_splat(&self) -> bool {
        if self.dtype.is_packed() {
            return false;
        }
        let w = self.dtype.bits() / 8;
        let b = self.bytes();
        b.len() <= w || b.chunks_exact(w).all(|c| c == &b[..w])
    }
}

/// A sign/exponent/mantissa float of `e_bits`+`m_bits` bits with `bias`, subnormals included.
fn small_float(bits: u32, e_bits: u32, m_bits: u32, bias: i32) -> f64 {
    let sign = if bits >> (e_bits + m_bits) & 1 == 1 { -1.0 } else { 1.0 };
    let e = (bits >> m_bits) & ((1 << e_bits) - 1);
    let m = bits & ((1 << m_bits) - 1);
    let v = if e == 0 {
        m as f64 * 2f64.powi(1 - bias - m_bits as i32)
    } else {
        (1.0 + m as f64 / (1u32 << m_bits) as f64) * 2f64.powi(e as i32 - bias)
    };
    sign * v
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    fn t(dtype: DType, n: usize, bytes: &[u8]) -> Tensor {
        Tensor::new(dtype, vec![n], Bytes::from_vec(bytes.to_vec())).unwrap()
    }

    #[test]
    fn narrow_floats_and_packed_ints_decode_per_their_definitions() {
        let e4 = t(DType::F8E4M3FN, 4, &[0x38, 0xb8, 0x7f, 0x01]).decoded_f64();
        assert_eq!(&e4[..2], &[1.0, -1.0]);
        assert!(e4[2].is_nan());
        assert_eq!(e4[3], 2f64.powi(-9), "smallest e4m3fn subnormal");
        let e5 = t(DType::F8E5M2, 3, &[0x3c, 0x7c, 0xfc]).decoded_f64();
        assert_eq!(e5, vec![1.0, f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!(t(DType::F4E2M1, 2, &[0x72]).decoded_f64(), vec![1.0, 6.0]);
        assert_eq!(t(DType::I4, 2, &[0xf7]).decoded_f64(), vec![7.0, -1.0]);
        assert_eq!(t(DType::U2, 4, &[0b11_10_01_00]).decoded_f64(), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(t(DType::F32, 1, &1.5f32.to_le_bytes()).decoded_f64(), vec![1.5]);
    }
}
