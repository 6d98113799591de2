//! ONNX `TensorProto` → [`Tensor`]: every dtype, raw and typed fields, external data.

use crate::FrontendError;
use memmap2::Mmap;
use odc_ir::{Bytes, DType, Tensor};
use onnx_protobuf::TensorProto;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// ONNX `TensorProto.DataType` code → dtype (`Err` carries the ONNX name of an unsupported type).
/// The module ABI uses ONNX's numbering, so its dtype table answers the supported codes.
pub fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    if let Some(d) = u32::try_from(code).ok().and_then(DType::from_abi_code) {
        return Ok(d);
    }
    Err(match code {
        8 => "string".into(),
        14 => "complex64".into(),
        15 => "complex128".into(),
        27 => "float6e2m3".into(),
        28 => "float6e3m2".into(),
        0 => "undefined".into(),
        other => format!("unknown data type {other}"),
    })
}

/// Resolves external-data locations relative to the model file and keeps files mapped.
#[derive(Default)]
pub struct ExternalData {
    base: Option<PathBuf>,
    maps: Mutex<HashMap<PathBuf, Arc<Mmap>>>,
}

impl ExternalData {
    pub fn new(base: Option<&Path>) -> Self {
        ExternalData { base: base.map(|p| p.to_path_buf()), maps: Mutex::new(HashMap::new()) }
    }

    fn map(&self, location: &str) -> Result<Arc<Mmap>, FrontendError> {
        let base = self.base.as_ref().ok_or_else(|| {
            FrontendError::Invalid(format!("tensor data is in external file '{location}' but the model was not loaded from a file"))
        })?;
        let rel = Path::new(location);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(FrontendError::Invalid(format!("external data location '{location}' must be relative and inside the model directory")));
        }
        let path = base.join(rel);
        let mut maps = self.maps.lock().expect("external data lock");
        if let Some(m) = maps.get(&path) {
            return Ok(m.clone());
        }
        let file = std::fs::File::open(&path)
            .map_err(|e| FrontendError::Invalid(format!("cannot open external data file {}: {e}", path.display())))?;
        // SAFETY: the file is opened read-only; odc never writes to mapped weights.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| FrontendError::Invalid(format!("cannot map external data file {}: {e}", path.display())))?;
        let map = Arc::new(map);
        maps.insert(path, map.clone());
        Ok(map)
    }
}

fn invalid(name: &str, msg: impl std::fmt::Display) -> FrontendError {
    FrontendError::Invalid(format!("tensor '{name}': {msg}"))
}

/// Decode a tensor proto.
pub fn tensor_from_proto(t: &TensorProto, ext: &ExternalData) -> Result<Tensor, FrontendError> {
    tensor_from_proto_with(t, ext, None)
}

/// Decode a tensor proto whose `raw_data` was moved out into `raw` (so it is not copied).
pub fn tensor_from_proto_with(t: &TensorProto, ext: &ExternalData, raw: Option<Vec<u8>>) -> Result<Tensor, FrontendError> {
    let name = t.name.as_str();
    let dtype = dtype_from_onnx(t.data_type)
        .map_err(|d| FrontendError::Unsupported(format!("tensor '{name}' has unsupported data type {d}")))?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(invalid(name, format!("negative dimension {d}")));
        }
        shape.push(d as usize);
    }
    let n: usize = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| invalid(name, "too many elements"))?;
    let want = dtype.byte_len(n);
    let is_external = t.data_location.value() == 1 || !t.external_data.is_empty();
    let data = if is_external {
        let mut location = None;
        let mut offset = 0usize;
        let mut length = None;
        for kv in &t.external_data {
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => offset = kv.value.parse().map_err(|_| invalid(name, "bad external data offset"))?,
                "length" => length = Some(kv.value.parse::<usize>().map_err(|_| invalid(name, "bad external data length"))?),
                _ => {}
            }
        }
        let location = location.ok_or_else(|| invalid(name, "external data without a location"))?;
        let len = length.unwrap_or(want);
        if len != want {
            return Err(invalid(name, format!("external data length {len} does not match {want} bytes for {dtype} {shape:?}")));
        }
        let map = ext.map(&location)?;
        if offset.checked_add(len).is_none_or(|end| end > map.len()) {
            return Err(invalid(
                name,
                format!("external data file '{location}' is truncated: needs bytes {offset}..{} but has {}", offset + len, map.len()),
            ));
        }
        Bytes::mapped(map, offset, len).map_err(|e| invalid(name, e))?
    } else if let Some(raw) = raw.filter(|r| !r.is_empty()) {
        if raw.len() != want {
            return Err(invalid(name, format!("raw data has {} bytes, {dtype} {shape:?} needs {want}", raw.len())));
        }
        Bytes::from_vec(raw)
    } else if !t.raw_data.is_empty() || n == 0 {
        if t.raw_data.len() != want {
            return Err(invalid(name, format!("raw data has {} bytes, {dtype} {shape:?} needs {want}", t.raw_data.len())));
        }
        Bytes::from_vec(t.raw_data.clone())
    } else {
        Bytes::from_vec(typed_field_bytes(t, dtype, n).map_err(|e| invalid(name, e))?)
    };
    Tensor::new(dtype, shape, data).map_err(|e| invalid(name, e))
}

/// Little-endian bytes from the typed value fields.
fn typed_field_bytes(t: &TensorProto, dtype: DType, n: usize) -> Result<Vec<u8>, String> {
    use DType::*;
    let count = |have: usize, want: usize, field: &str| {
        if have == want {
            Ok(())
        } else {
            Err(format!("{field} has {have} values, expected {want}"))
        }
    };
    // Check the value count before allocating: a corrupt header must not trigger a huge allocation.
    let have = match dtype {
        F32 => t.float_data.len(),
        F64 => t.double_data.len(),
        I64 => t.int64_data.len(),
        U64 | U32 => t.uint64_data.len(),
        _ => t.int32_data.len(),
    };
    let want = if dtype.is_packed() { dtype.byte_len(n) } else { n };
    if have != want {
        return Err(format!("has {have} typed values, {dtype} needs {want}"));
    }
    let mut out = Vec::with_capacity(dtype.byte_len(n));
    match dtype {
        F32 => {
            count(t.float_data.len(), n, "float_data")?;
            t.float_data.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
        F64 => {
            count(t.double_data.len(), n, "double_data")?;
            t.double_data.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
        I64 => {
            count(t.int64_data.len(), n, "int64_data")?;
            t.int64_data.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
        U64 => {
            count(t.uint64_data.len(), n, "uint64_data")?;
            t.uint64_data.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
        U32 => {
            count(t.uint64_data.len(), n, "uint64_data")?;
            t.uint64_data.iter().for_each(|v| out.extend((*v as u32).to_le_bytes()));
        }
        I32 => {
            count(t.int32_data.len(), n, "int32_data")?;
            t.int32_data.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
        I16 | U16 | F16 | BF16 => {
            count(t.int32_data.len(), n, "int32_data")?;
            t.int32_data.iter().for_each(|v| out.extend((*v as u16).to_le_bytes()));
        }
        Bool | I8 | U8 | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F8E8M0 => {
            count(t.int32_data.len(), n, "int32_data")?;
            t.int32_data.iter().for_each(|v| out.push(*v as u8));
        }
        I4 | U4 | F4E2M1 | I2 | U2 => {
            // int32_data holds one packed byte per entry.
            count(t.int32_data.len(), dtype.byte_len(n), "int32_data")?;
            t.int32_data.iter().for_each(|v| out.push(*v as u8));
        }
    }
    Ok(out)
}
