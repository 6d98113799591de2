//! The tensors of a checkpoint: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`, memory-mapped and validated once (header, offsets that tile the
//! data exactly, dtype × shape = bytes), then handed out as zero-copy [`Tensor`]s over the map.

use crate::FrontendError;
use memmap2::Mmap;
use odc_ir::{Bytes, DType, Tensor};
use ::safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where one tensor lives.
struct Entry {
    file: Arc<Mapped>,
    dtype: DType,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

struct Mapped {
    path: PathBuf,
    map: Arc<Mmap>,
}

/// Every tensor of a checkpoint, by name.
pub struct CheckpointWeights {
    tensors: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for CheckpointWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWeights").field("tensors", &self.tensors.len()).finish()
    }
}

/// The single-file checkpoint name and the sharded checkpoint's index.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

fn malformed(path: &Path, what: impl std::fmt::Display) -> FrontendError {
    FrontendError::Malformed(format!("{}: {what}", path.display()))
}

/// The odc dtype of a safetensors dtype (`Err`: its name, unsupported).
fn dtype_of(d: Dtype) -> Result<DType, String> {
    Ok(match d {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        Dtype::I16 => DType::I16,
        Dtype::U16 => DType::U16,
        Dtype::I32 => DType::I32,
        Dtype::U32 => DType::U32,
        Dtype::I64 => DType::I64,
        Dtype::U64 => DType::U64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F8_E4M3 => DType::F8E4M3FN,
        Dtype::F8_E5M2 => DType::F8E5M2,
        Dtype::F8_E8M0 => DType::F8E8M0,
        Dtype::F4 => DType::F4E2M1,
        other => return Err(format!("{other:?}")),
    })
}

impl CheckpointWeights {
    /// Open the weights of the checkpoint directory `dir`.
    pub fn open(dir: &Path) -> Result<CheckpointWeights, FrontendError> {
        let index = dir.join(INDEX_FILE);
        let (files, placement) = if index.is_file() {
            shard_files(dir, &index)?
        } else if dir.join(WEIGHTS_FILE).is_file() {
            (vec![dir.join(WEIGHTS_FILE)], vec![])
        } else {
            return Err(FrontendError::Io(format!(
                "{}: no {WEIGHTS_FILE} or {INDEX_FILE} in the checkpoint directory",
                dir.display()
            )));
        };
        let mut tensors = BTreeMap::new();
        for path in files {
            let f = std::fs::File::open(&path).map_err(|e| FrontendError::Io(format!("cannot read {}: {e}", path.display())))?;
            // SAFETY: mapped read-only; a file changed underneath us is outside what odc guards.
            let map = unsafe { Mmap::map(&f) }.map_err(|e| FrontendError::Io(format!("cannot map {}: {e}", path.display())))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| malformed(&path, e))?;
            let data_start = 8 + header_len;
            let file = Arc::new(Mapped { path: path.clone(), map: Arc::new(map) });
            for (name, info) in metadata.tensors() {
                let dtype = dtype_of(info.dtype)
                    .map_err(|d| FrontendError::Unsupported(format!("tensor '{name}' in {} has dtype {d}", path.display())))?;
                let (start, end) = info.data_offsets;
                let entry = Entry { file: file.clone(), dtype, shape: info.shape.clone(), offset: data_start + start, len: end - start };
                if let Some(prev) = tensors.insert(name.clone(), entry) {
                    return Err(malformed(&path, format!("tensor '{name}' is also in {}", prev.file.path.display())));
                }
            }
        }
        for (name, file) in placement {
            match tensors.get(&name) {
                Some(e) if e.file.path == file => {}
                Some(e) => {
                    return Err(malformed(&index, format!("tensor '{name}' is listed in {} but stored in {}", file.display(), e.file.path.display())))
                }
                None => return Err(malformed(&index, format!("tensor '{name}' is listed in {} but not stored there", file.display()))),
            }
        }
        Ok(CheckpointWeights { tensors })
    }

    /// The safetensors files the tensors come from, each once, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.tensors.values().map(|e| e.file.path.clone()).collect();
        files.sort();
        files.dedup();
        files
    }

    /// Tensor names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The stored dtype and shape of `name`.
    pub fn info(&self, name: &str) -> Option<(DType, &[usize])> {
        self.tensors.get(name).map(|e| (e.dtype, e.shape.as_slice()))
    }

    /// The tensor `name` as stored, over the mapped file (no copy).
    pub fn get(&self, name: &str) -> Result<Tensor, FrontendError> {
        let e = self.tensors.get(name).ok_or_else(|| FrontendError::Invalid(format!("the checkpoint has no tensor '{name}'")))?;
        let bytes = Bytes::mapped(e.file.map.clone(), e.offset, e.len).map_err(|err| malformed(&e.file.path, err))?;
        Tensor::new(e.dtype, e.shape.clone(), bytes).map_err(|err| malformed(&e.file.path, format!("tensor '{name}': {err}")))
    }

    /// [`CheckpointWeights::get`], checking the shape the architecture expects.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor, FrontendError> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(FrontendError::Invalid(format!(
                "tensor '{name}' has shape {:?}, the config implies {shape:?}",
                t.shape
            )));
        }
        Ok(t)
    }
}

/// The shard files an index names (each once, inside `dir`) and which tensor it puts where.
type Shards = (Vec<PathBuf>, Vec<(String, PathBuf)>);

fn shard_files(dir: &Path, index: &Path) -> Result<Shards, FrontendError> {
    let text = std::fs::read_to_string(index).map_err(|e| FrontendError::Io(format!("cannot read {}: {e}", index.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| malformed(index, e))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| malformed(index, "no \"weight_map\" object"))?;
    let mut files: Vec<String> = vec![];
    let mut placement = vec![];
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| malformed(index, format!("weight_map[\"{tensor}\"] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(malformed(index, format!("shard '{file}' is outside the checkpoint directory")));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
        placement.push((tensor.clone(), dir.join(file)));
    }
    files.sort();
    Ok((files.into_iter().map(|f| dir.join(f)).collect(), placement))
}
