//! `.npy` files ↔ raw little-endian tensor bytes (via `npyz`).

use crate::Error;
use npyz::{NpyFile, TypeChar, WriterBuilder};
use odc_ir::DType;
use std::path::Path;

/// A tensor read from or written to a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{}: {msg}", path.display()))
}

fn bytes_of<T: Copy>(v: Vec<T>, to_le: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.into_iter().flat_map(to_le).collect()
}

pub fn read(path: &Path) -> Result<NpyTensor, Error> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let npy = NpyFile::new(&bytes[..]).map_err(|e| bad(path, format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad(path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let npyz::DType::Plain(ts) = npy.dtype() else {
        return Err(bad(path, "structured dtypes are not supported"));
    };
    let err = |e: std::io::Error| bad(path, format!("cannot decode data: {e}"));
    let (dtype, data) = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => (DType::F32, bytes_of(npy.into_vec::<f32>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Float, 8) => (DType::F64, bytes_of(npy.into_vec::<f64>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Float, 2) => (DType::F16, bytes_of(npy.into_vec::<half::f16>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Int, 1) => (DType::I8, bytes_of(npy.into_vec::<i8>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Int, 2) => (DType::I16, bytes_of(npy.into_vec::<i16>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Int, 4) => (DType::I32, bytes_of(npy.into_vec::<i32>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Int, 8) => (DType::I64, bytes_of(npy.into_vec::<i64>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Uint, 1) => (DType::U8, npy.into_vec::<u8>().map_err(err)?),
        (TypeChar::Uint, 2) => (DType::U16, bytes_of(npy.into_vec::<u16>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Uint, 4) => (DType::U32, bytes_of(npy.into_vec::<u32>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Uint, 8) => (DType::U64, bytes_of(npy.into_vec::<u64>().map_err(err)?, |x| x.to_le_bytes().to_vec())),
        (TypeChar::Bool, 1) => (DType::Bool, bytes_of(npy.into_vec::<bool>().map_err(err)?, |x| vec![x as u8])),
        _ => return Err(bad(path, format!("unsupported .npy dtype {ts}"))),
    };
    Ok(NpyTensor { dtype, shape, data })
}

fn write_typed<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], values: Vec<T>) -> Result<(), Error> {
    let file = std::fs::File::create(path).map_err(|e| bad(path, format!("cannot create: {e}")))?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .map_err(|e| bad(path, e))?;
    w.extend(values).map_err(|e| bad(path, e))?;
    w.finish().map_err(|e| bad(path, e))
}

fn chunks<const N: usize>(d: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    d.chunks_exact(N).map(|c| c.try_into().expect("chunk size"))
}

/// Write raw tensor bytes as `.npy`. Narrow types numpy lacks (bf16, float8, packed ints) are
/// widened to float32 / int8.
pub fn write(path: &Path, dtype: DType, shape: &[usize], data: &[u8]) -> Result<(), Error> {
    match dtype {
        DType::F32 => write_typed(path, shape, chunks::<4>(data).map(f32::from_le_bytes).collect()),
        DType::F64 => write_typed(path, shape, chunks::<8>(data).map(f64::from_le_bytes).collect()),
        DType::F16 => write_typed(path, shape, chunks::<2>(data).map(half::f16::from_le_bytes).collect()),
        DType::BF16 => write_typed(path, shape, chunks::<2>(data).map(|b| half::bf16::from_le_bytes(b).to_f32()).collect()),
        DType::I8 => write_typed(path, shape, data.iter().map(|&b| b as i8).collect()),
        DType::U8 => write_typed(path, shape, data.to_vec()),
        DType::I16 => write_typed(path, shape, chunks::<2>(data).map(i16::from_le_bytes).collect()),
        DType::U16 => write_typed(path, shape, chunks::<2>(data).map(u16::from_le_bytes).collect()),
        DType::I32 => write_typed(path, shape, chunks::<4>(data).map(i32::from_le_bytes).collect()),
        DType::U32 => write_typed(path, shape, chunks::<4>(data).map(u32::from_le_bytes).collect()),
        DType::I64 => write_typed(path, shape, chunks::<8>(data).map(i64::from_le_bytes).collect()),
        DType::U64 => write_typed(path, shape, chunks::<8>(data).map(u64::from_le_bytes).collect()),
        DType::Bool => write_typed(path, shape, data.iter().map(|&b| b != 0).collect::<Vec<bool>>()),
        other => Err(Error::Usage(format!("writing {other} outputs to .npy is not supported"))),
    }
}
