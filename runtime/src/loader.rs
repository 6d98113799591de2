//! Loading a compiled module (a shared library) at run time.
//!
//! [`Module::load`] opens the library, finds `<prefix>_describe`/`_run`/`_arena_size`, checks the
//! magic and ABI version, maps the external weights file if the module has one (checking its size
//! and fingerprint), and allocates the arena once. [`Module::run`] validates inputs against the
//! description (through [`crate::call`], the path the JIT takes too) before calling into generated
//! code, which checks them again.

use crate::abi::{self, OdcModuleDesc, OdcTensorDesc};
use crate::call::{Arena, EntryPoint, RunError, RunFn, TensorInfo};
use crate::pool::ThreadPool;
use core::ffi::{c_char, CStr};
use libloading::Library;
use std::fmt;
use std::path::{Path, PathBuf};

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
            TensorInfo::new(unsafe { cstr(d.name) }, d.dtype, shape)
        })
        .collect()
}

/// A loaded module, ready to run.
pub struct Module {
    _lib: Library,
    entry: EntryPoint,
    info: ModuleInfo,
    arena: Arena,
    weights: Option<memmap2::Mmap>,
    pool: Option<Box<ThreadPool>>,
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
        // SAFETY: `run_fn` is the module's `run`, described by `info`, and lives as long as `lib`,
        // which the module keeps.
        let entry = unsafe { EntryPoint::new(run_fn, info.inputs.clone(), info.outputs.clone(), info.arena_size) };
        Ok(Module { _lib: lib, arena: entry.arena(), entry, info, weights, pool: None })
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
        let weights = self.weights.as_ref().map_or(std::ptr::null(), |m| m.as_ptr());
        self.entry.call(inputs, outputs, &mut self.arena, weights, self.pool.as_deref())
    }
}
