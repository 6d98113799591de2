//! Loading a compiled module (a shared library) at run time.
//!
//! [`Module::load`] opens the library, finds `<prefix>_describe`/`_run`/`_arena_size`, checks the
//! magic and ABI version, maps the external weights file if the module has one (checking its size
//! and fingerprint), and allocates the arena once. [`Module::run`] validates inputs against the
//! description before calling into generated code, which checks them again.

use crate::abi::{self, OdcContext, OdcModuleDesc, OdcTensor, OdcTensorDesc, Status};
use crate::pool::{parallel_for_callback, ThreadPool};
use core::ffi::{c_char, c_void, CStr};
use libloading::Library;
use std::fmt;
use std::path::{Path, PathBuf};

type RunFn = unsafe extern "C" fn(*const OdcContext, *const OdcTensor, u32, *mut OdcTensor, u32, *mut c_void, u64) -> i32;
type DescribeFn = unsafe extern "C" fn() -> *const OdcModuleDesc;

/// Why a module could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The library could not be opened (missing, corrupt, wrong architecture).
    Open { path: PathBuf, reason: String },
    /// A required symbol is missing (wrong prefix, or not an odc module).
    MissingSymbol { path: PathBuf, symbol: String },
    /// The descriptor's magic number is wrong.
    BadMagic { path: PathBuf },
    /// The module was built for another ABI version.
    AbiVersion { path: PathBuf, found: u32, expected: u32 },
    /// The module's external weights file is missing or unreadable.
    Weights { path: PathBuf, reason: String },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Open { path, reason } => write!(f, "cannot load module {}: {reason}", path.display()),
            LoadError::MissingSymbol { path, symbol } => {
                write!(f, "{} is not an odc module with this prefix: symbol '{symbol}' is missing", path.display())
            }
            LoadError::BadMagic { path } => write!(f, "{} is not an odc module: bad descriptor magic", path.display()),
            LoadError::AbiVersion { path, found, expected } => write!(
                f,
                "{} was compiled for module ABI version {found}, this runtime supports version {expected}; recompile it",
                path.display()
            ),
            LoadError::Weights { path, reason } => write!(f, "weights file {}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for LoadError {}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The arguments do not match the module (with a precise message).
    Arguments(String),
    /// Generated code returned a non-zero status.
    Status(Status),
    /// Generated code returned a status this runtime does not know.
    Unknown(i32),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Arguments(m) => f.write_str(m),
            RunError::Status(s) => f.write_str(s.message()),
            RunError::Unknown(c) => write!(f, "module returned unknown status {c}"),
        }
    }
}

impl std::error::Error for RunError {}

/// A model input or output as described by the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ONNX `TensorProto.DataType` code.
    pub dtype: u32,
    pub shape: Vec<usize>,
    /// Bytes of a dense buffer of this tensor.
    pub byte_len: usize,
}

/// What a module says about itself.
#[derive(Clone, Debug)]
pub struct ModuleInfo {
    pub name: String,
    pub abi_version: u32,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub arena_size: usize,
    pub weights_file: Option<String>,
}

/// Bits per element of an ONNX dtype code (0 if unknown).
pub fn dtype_bits(code: u32) -> usize {
    match code {
        1 | 6 | 12 => 32,
        2 | 3 | 9 | 17 | 18 | 19 | 20 | 24 => 8,
        4 | 5 | 10 | 16 => 16,
        7 | 11 | 13 => 64,
        21 | 22 | 23 => 4,
        25 | 26 => 2,
        _ => 0,
    }
}

unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: descriptor strings are NUL-terminated static data of the module.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

unsafe fn tensor_infos(p: *const OdcTensorDesc, n: u32) -> Vec<TensorInfo> {
    (0..n as usize)
        .map(|i| {
            // SAFETY: the descriptor array has `n` entries.
            let d = unsafe { &*p.add(i) };
            let shape: Vec<usize> = (0..d.rank as usize).map(|k| unsafe { *d.shape.add(k) } as usize).collect();
            let elems: usize = shape.iter().product();
            TensorInfo {
                name: unsafe { cstr(d.name) },
                dtype: d.dtype,
                byte_len: (elems * dtype_bits(d.dtype)).div_ceil(8),
                shape,
            }
        })
        .collect()
}

/// A loaded module, ready to run.
pub struct Module {
    _lib: Library,
    run_fn: RunFn,
    info: ModuleInfo,
    arena: Vec<u64>,
    weights: Option<memmap2::Mmap>,
    pool: Option<Box<ThreadPool>>,
    shapes: Vec<Vec<i64>>,
}

impl Module {
    /// Load `path`; the symbol prefix is the file name without `lib` and extension
    /// (`libdigits.so` → `digits`).
    pub fn load(path: impl AsRef<Path>) -> Result<Module, LoadError> {
        let path = path.as_ref();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let prefix = stem.strip_prefix("lib").unwrap_or(&stem).to_string();
        Module::load_with_prefix(path, &prefix)
    }

    /// Load `path` whose symbols start with `prefix`.
    pub fn load_with_prefix(path: impl AsRef<Path>, prefix: &str) -> Result<Module, LoadError> {
        let path = path.as_ref().to_path_buf();
        // SAFETY: loading runs no initialisers in odc modules (they have none).
        let lib = unsafe { Library::new(&path) }.map_err(|e| LoadError::Open { path: path.clone(), reason: e.to_string() })?;
        let sym = |name: &str| format!("{prefix}_{name}");
        // SAFETY: the symbol types are the module ABI's.
        let describe: DescribeFn = unsafe {
            *lib.get::<DescribeFn>(sym("describe").as_bytes())
                .map_err(|_| LoadError::MissingSymbol { path: path.clone(), symbol: sym("describe") })?
        };
        let run_fn: RunFn = unsafe {
            *lib.get::<RunFn>(sym("run").as_bytes()).map_err(|_| LoadError::MissingSymbol { path: path.clone(), symbol: sym("run") })?
        };
        // SAFETY: `describe` returns a pointer to static data that lives as long as `lib`.
        let desc = unsafe { &*describe() };
        if desc.magic != abi::MAGIC {
            return Err(LoadError::BadMagic { path });
        }
        if desc.abi_version != abi::ABI_VERSION {
            return Err(LoadError::AbiVersion { path, found: desc.abi_version, expected: abi::ABI_VERSION });
        }
        let info = unsafe {
            ModuleInfo {
                name: cstr(desc.name),
                abi_version: desc.abi_version,
                inputs: tensor_infos(desc.inputs, desc.num_inputs),
                outputs: tensor_infos(desc.outputs, desc.num_outputs),
                arena_size: desc.arena_size as usize,
                weights_file: if desc.weights_file.is_null() { None } else { Some(cstr(desc.weights_file)) },
            }
        };
        let weights = match &info.weights_file {
            None => None,
            Some(file) => {
                let wpath = path.parent().unwrap_or(Path::new(".")).join(file);
                let f = std::fs::File::open(&wpath).map_err(|e| LoadError::Weights { path: wpath.clone(), reason: format!("cannot open: {e}") })?;
                // SAFETY: mapped read-only; odc never writes through it.
                let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| LoadError::Weights { path: wpath.clone(), reason: format!("cannot map: {e}") })?;
                if map.len() as u64 != desc.weights_size {
                    return Err(LoadError::Weights {
                        path: wpath,
                        reason: format!("has {} bytes, the module needs {}", map.len(), desc.weights_size),
                    });
                }
                if abi::fingerprint(&map) != desc.weights_fingerprint {
                    return Err(LoadError::Weights { path: wpath, reason: "does not belong to this module (fingerprint mismatch)".into() });
                }
                Some(map)
            }
        };
        let arena = vec![0u64; info.arena_size.div_ceil(8) + 8];
        let shapes = info.inputs.iter().chain(&info.outputs).map(|t| t.shape.iter().map(|&d| d as i64).collect()).collect();
        Ok(Module { _lib: lib, run_fn, info, arena, weights, pool: None, shapes })
    }

    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// Share each parallel loop among `threads` threads (1 = single-threaded).
    pub fn set_threads(&mut self, threads: usize) {
        self.pool = if threads > 1 { Some(Box::new(ThreadPool::new(threads))) } else { None };
    }

    /// Run on dense little-endian buffers, one per input and output, in declaration order.
    pub fn run(&mut self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) -> Result<(), RunError> {
        let check = |what: &str, infos: &[TensorInfo], lens: Vec<usize>| -> Result<(), RunError> {
            if lens.len() != infos.len() {
                return Err(RunError::Arguments(format!("the module takes {} {what}s, got {}", infos.len(), lens.len())));
            }
            for (t, &l) in infos.iter().zip(&lens) {
                if l != t.byte_len {
                    return Err(RunError::Arguments(format!(
                        "{what} '{}' ({:?}, dtype {}) needs {} bytes, got {l}",
                        t.name, t.shape, t.dtype, t.byte_len
                    )));
                }
            }
            Ok(())
        };
        check("input", &self.info.inputs, inputs.iter().map(|b| b.len()).collect())?;
        check("output", &self.info.outputs, outputs.iter().map(|b| b.len()).collect())?;
        let ni = inputs.len();
        let ins: Vec<OdcTensor> = inputs
            .iter()
            .zip(&self.info.inputs)
            .enumerate()
            .map(|(i, (b, t))| OdcTensor {
                data: b.as_ptr() as *mut c_void,
                shape: self.shapes[i].as_ptr(),
                size_bytes: b.len() as u64,
                rank: t.shape.len() as u32,
                dtype: t.dtype,
            })
            .collect();
        let mut outs: Vec<OdcTensor> = outputs
            .iter_mut()
            .zip(&self.info.outputs)
            .enumerate()
            .map(|(i, (b, t))| OdcTensor {
                data: b.as_mut_ptr() as *mut c_void,
                shape: self.shapes[ni + i].as_ptr(),
                size_bytes: b.len() as u64,
                rank: t.shape.len() as u32,
                dtype: t.dtype,
            })
            .collect();
        let base = self.arena.as_mut_ptr() as *mut u8;
        let pad = base.align_offset(abi::ARENA_ALIGN as usize);
        // SAFETY: `arena` has 64 spare bytes for alignment.
        let arena = unsafe { base.add(pad) };
        let ctx = OdcContext {
            abi_version: abi::ABI_VERSION,
            num_threads: self.pool.as_ref().map(|p| p.threads() as u32).unwrap_or(1),
            weights: self.weights.as_ref().map(|m| m.as_ptr() as *const c_void).unwrap_or(std::ptr::null()),
            parallel_for: self.pool.as_ref().map(|_| parallel_for_callback as abi::ParallelForFn),
            parallel_user: self.pool.as_ref().map(|p| &**p as *const ThreadPool as *mut c_void).unwrap_or(std::ptr::null_mut()),
        };
        // SAFETY: every pointer refers to a live buffer of the size the module describes.
        let st = unsafe {
            (self.run_fn)(&ctx, ins.as_ptr(), ins.len() as u32, outs.as_mut_ptr(), outs.len() as u32, arena as *mut c_void, self.info.arena_size as u64)
        };
        match Status::from_code(st) {
            Some(Status::Ok) => Ok(()),
            Some(s) => Err(RunError::Status(s)),
            None => Err(RunError::Unknown(st)),
        }
    }
}
