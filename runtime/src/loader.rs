//! Loading a compiled module (a shared library) at run time.
//!
//! [`Module::load`] opens the library, finds `<prefix>_describe`/`_run`/`_arena_size`, checks the
//! magic and ABI version, maps the external weights file if the module has one (checking its size
//! and fingerprint), and allocates the arena once. [`Module::run`] validates inputs against the
//! description (through [`crate::call`], the path the JIT takes too) before calling into generated
//! code, which checks them again.
//!
//! A stateful module (a decoder: `<prefix>_state_size`, `_context` and the steps `_prefill`,
//! `_decode`, each with its `_describe`) has no `run`; [`Module::decoder_session`] runs it.

use crate::abi::{self, OdcModuleDesc, OdcTensorDesc};
use crate::call::{Arena, EntryFn, EntryPoint, RunError, RunFn, StepFn, TensorInfo};
use crate::session::{DecoderEntries, DecoderSession};
use crate::pool::ThreadPool;
use core::ffi::{c_char, CStr};
use libloading::Library;
use std::fmt;
use std::path::{Path, PathBuf};

type DescribeFn = unsafe extern "C" fn() -> *const OdcModuleDesc;
type SizeFn = unsafe extern "C" fn() -> u64;

/// The steps a stateful module may export, in the order [`ModuleInfo::steps`] lists them.
pub const STEP_NAMES: [&str; 2] = ["prefill", "decode"];

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
    /// The module's descriptors contradict each other.
    Inconsistent { path: PathBuf, reason: String },
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
            LoadError::Inconsistent { path, reason } => write!(f, "{} is not a consistent odc module: {reason}", path.display()),
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
    /// A stateful module's steps (empty for a module with `run`; `inputs`/`outputs` are then
    /// empty and `arena_size` is the largest step's).
    pub steps: Vec<StepInfo>,
    /// Bytes of state the steps share (`None` without state).
    pub state_size: Option<usize>,
    /// Positions the state holds (a decoder's KV cache capacity).
    pub context: Option<usize>,
}

/// One stateful entry point of a module.
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub name: String,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub arena_size: usize,
}

/// The descriptor at `p`, once its magic and ABI version are checked.
unsafe fn check_desc<'a>(path: &Path, p: *const OdcModuleDesc) -> Result<&'a OdcModuleDesc, LoadError> {
    if p.is_null() {
        return Err(LoadError::BadMagic { path: path.to_path_buf() });
    }
    // SAFETY: descriptors are static data of the module (the caller keeps it loaded).
    let desc = unsafe { &*p };
    if desc.magic != abi::MAGIC {
        return Err(LoadError::BadMagic { path: path.to_path_buf() });
    }
    if desc.abi_version != abi::ABI_VERSION {
        return Err(LoadError::AbiVersion { path: path.to_path_buf(), found: desc.abi_version, expected: abi::ABI_VERSION });
    }
    Ok(desc)
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
    /// `run`, or for a stateful module its steps in [`ModuleInfo::steps`] order.
    entries: Vec<EntryPoint>,
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
        // SAFETY: `describe` returns a pointer to static data that lives as long as `lib`.
        let desc = unsafe { check_desc(&path, describe())? };
        let state_size = unsafe { lib.get::<SizeFn>(sym("state_size").as_bytes()).ok().map(|f| f() as usize) };
        let mut info = unsafe {
            ModuleInfo {
                name: cstr(desc.name),
                abi_version: desc.abi_version,
                inputs: tensor_infos(desc.inputs, desc.num_inputs),
                outputs: tensor_infos(desc.outputs, desc.num_outputs),
                arena_size: desc.arena_size as usize,
                weights_file: if desc.weights_file.is_null() { None } else { Some(cstr(desc.weights_file)) },
                steps: vec![],
                state_size,
                context: None,
            }
        };
        let mut entries = vec![];
        match state_size {
            None => {
                // SAFETY: the symbol type is the module ABI's.
                let run_fn: RunFn = unsafe {
                    *lib.get::<RunFn>(sym("run").as_bytes()).map_err(|_| LoadError::MissingSymbol { path: path.clone(), symbol: sym("run") })?
                };
                // SAFETY: `run_fn` is the module's `run`, described by `info`, and lives as long
                // as `lib`, which the module keeps.
                entries.push(unsafe { EntryPoint::new(run_fn, info.inputs.clone(), info.outputs.clone(), info.arena_size) });
            }
            Some(state_size) => {
                let context = unsafe { lib.get::<SizeFn>(sym("context").as_bytes()).ok().map(|f| f() as usize) };
                info.context = Some(context.ok_or_else(|| LoadError::MissingSymbol { path: path.clone(), symbol: sym("context") })?);
                for name in STEP_NAMES {
                    // SAFETY: the symbol types are the module ABI's.
                    let Ok(step) = (unsafe { lib.get::<StepFn>(sym(name).as_bytes()) }) else { continue };
                    let step: StepFn = *step;
                    let describe: DescribeFn = unsafe {
                        *lib.get::<DescribeFn>(sym(&format!("{name}_describe")).as_bytes())
                            .map_err(|_| LoadError::MissingSymbol { path: path.clone(), symbol: sym(&format!("{name}_describe")) })?
                    };
                    // SAFETY: as for the module's descriptor.
                    let d = unsafe { check_desc(&path, describe())? };
                    let s = unsafe {
                        StepInfo {
                            name: name.to_string(),
                            inputs: tensor_infos(d.inputs, d.num_inputs),
                            outputs: tensor_infos(d.outputs, d.num_outputs),
                            arena_size: d.arena_size as usize,
                        }
                    };
                    if s.arena_size > info.arena_size {
                        return Err(LoadError::Inconsistent { path, reason: format!("step '{name}' needs more arena than the module reports") });
                    }
                    // SAFETY: `step` is the module's step `name`, described by `s`, compiled for
                    // `state_size`, and lives as long as `lib`.
                    entries.push(unsafe { EntryPoint::with_fn(EntryFn::Step { f: step, state_size }, s.inputs.clone(), s.outputs.clone(), s.arena_size) });
                    info.steps.push(s);
                }
                if entries.is_empty() {
                    return Err(LoadError::MissingSymbol { path: path.clone(), symbol: sym("prefill") });
                }
            }
        }
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
        Ok(Module { _lib: lib, arena: Arena::new(info.arena_size), entries, info, weights, pool: None })
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
        if self.info.state_size.is_some() {
            return Err(RunError::Arguments("this module is a decoder with a KV cache and has no `run`: use its prefill/decode steps (odc_runtime::Module::decoder_session)".into()));
        }
        let weights = self.weights_ptr();
        self.entries[0].call(inputs, outputs, &mut self.arena, weights, self.pool.as_deref())
    }

    fn weights_ptr(&self) -> *const u8 {
        self.weights.as_ref().map_or(std::ptr::null(), |m| m.as_ptr())
    }

    /// A step of a stateful module by name (`prefill`, `decode`).
    pub fn step(&self, name: &str) -> Option<&EntryPoint> {
        let i = self.info.steps.iter().position(|s| s.name == name)?;
        Some(&self.entries[i])
    }

    /// Run step `name` of a stateful module once, reading and updating `state` (see
    /// [`Module::new_state`]).
    pub fn run_step(&mut self, name: &str, inputs: &[&[u8]], outputs: &mut [&mut [u8]], state: &mut crate::call::State) -> Result<(), RunError> {
        let Some(i) = self.info.steps.iter().position(|s| s.name == name) else {
            let names: Vec<&str> = self.info.steps.iter().map(|s| s.name.as_str()).collect();
            return Err(RunError::Arguments(format!("module '{}' has no step '{name}' (steps: {})", self.info.name, names.join(", "))));
        };
        let weights = self.weights_ptr();
        self.entries[i].call_step(inputs, outputs, &mut self.arena, state, weights, self.pool.as_deref())
    }

    /// A zeroed state for a stateful module's steps (`None` without state).
    pub fn new_state(&self) -> Option<crate::call::State> {
        self.info.state_size.map(crate::call::State::new)
    }

    /// A text-generation session over a decoder module's `prefill` and `decode` steps, with a
    /// fresh (zeroed) KV cache.
    pub fn decoder_session(&self) -> Result<DecoderSession<'_>, RunError> {
        let (Some(prefill), Some(decode), Some(context)) = (self.step("prefill"), self.step("decode"), self.info.context) else {
            return Err(RunError::Arguments(format!("module '{}' is not a decoder: it has no prefill and decode steps", self.info.name)));
        };
        DecoderSession::new(DecoderEntries { prefill, decode, context, weights: self.weights_ptr(), pool: self.pool.as_deref() })
    }
}
