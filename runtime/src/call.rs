//! Calling a module's `run`: the one path every host in this repository takes (the loader's
//! [`crate::Module`] and the compiler's JIT), so argument checks, the context and the status
//! mapping cannot drift apart.
//!
//! Owns: [`EntryPoint`] (a `run` function with the description of its tensors), [`Arena`] (the
//! aligned scratch memory) and [`RunError`]. Must not: know how the code was produced or loaded.

use crate::abi::{self, OdcContext, OdcTensor, Status};
use crate::pool::{parallel_for_callback, ThreadPool};
use core::ffi::c_void;
use std::fmt;

/// The ABI signature of `<prefix>_run`.
pub type RunFn = unsafe extern "C" fn(*const OdcContext, *const OdcTensor, u32, *mut OdcTensor, u32, *mut c_void, u64) -> i32;

/// The ABI signature of a stateful entry point (`<prefix>_prefill`, `<prefix>_decode`): `run`'s
/// parameters followed by the state buffer and its size.
pub type StepFn =
    unsafe extern "C" fn(*const OdcContext, *const OdcTensor, u32, *mut OdcTensor, u32, *mut c_void, u64, *mut c_void, u64) -> i32;

/// The code behind an [`EntryPoint`].
#[derive(Clone, Copy)]
pub enum EntryFn {
    /// `run`: inputs to outputs.
    Run(RunFn),
    /// A step that also reads and updates a state buffer of `state_size` bytes.
    Step { f: StepFn, state_size: usize },
}

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

impl RunError {
    /// The error for a status code returned by generated code (`None` for success).
    pub fn from_status(code: i32) -> Option<RunError> {
        match Status::from_code(code) {
            Some(Status::Ok) => None,
            Some(s) => Some(RunError::Status(s)),
            None => Some(RunError::Unknown(code)),
        }
    }
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
    /// ABI dtype code (see [`abi::DTYPE_CODES`]).
    pub dtype: u32,
    pub shape: Vec<usize>,
    /// Bytes of a dense buffer of this tensor.
    pub byte_len: usize,
}

impl TensorInfo {
    /// A description with its byte length computed from the dtype table (0 for an unknown code,
    /// which then matches no buffer but the empty one).
    pub fn new(name: String, dtype: u32, shape: Vec<usize>) -> TensorInfo {
        let bits = abi::dtype_code(dtype).map_or(0, |d| d.bits as usize);
        let byte_len = (shape.iter().product::<usize>() * bits).div_ceil(8);
        TensorInfo { name, dtype, shape, byte_len }
    }

    fn describe(&self) -> String {
        match abi::dtype_code(self.dtype) {
            Some(d) => format!("'{}' ({} {:?})", self.name, d.name, self.shape),
            None => format!("'{}' (dtype code {} {:?})", self.name, self.dtype, self.shape),
        }
    }
}

/// Scratch memory for one run at a time, aligned to [`abi::ARENA_ALIGN`].
pub struct Arena {
    words: Vec<u64>,
    size: usize,
}

impl Arena {
    pub fn new(size: usize) -> Arena {
        Arena { words: vec![0u64; (size + abi::ARENA_ALIGN as usize).div_ceil(8)], size }
    }

    /// Usable bytes (the module's arena size).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The aligned start.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        let base = self.words.as_mut_ptr() as *mut u8;
        // SAFETY: `words` holds ARENA_ALIGN spare bytes for the alignment offset.
        unsafe { base.add(base.align_offset(abi::ARENA_ALIGN as usize)) }
    }
}

/// The state a stateful module keeps between calls (a decoder's KV cache), zeroed when made
/// and by [`State::reset`].
pub struct State {
    mem: Arena,
}

impl State {
    pub fn new(size: usize) -> State {
        State { mem: Arena::new(size) }
    }

    pub fn size(&self) -> usize {
        self.mem.size()
    }

    /// Forget everything (zero the buffer).
    pub fn reset(&mut self) {
        self.mem.words.iter_mut().for_each(|w| *w = 0);
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.mem.as_mut_ptr()
    }
}

/// A module's `run` function (or a stateful step) together with the description it was
/// compiled for.
pub struct EntryPoint {
    run: EntryFn,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    arena_size: usize,
    shapes: Vec<Vec<i64>>,
}

impl EntryPoint {
    /// # Safety
    /// `run` must be generated code with the ABI signature, compiled for exactly these inputs,
    /// outputs and arena size, and must stay callable as long as the returned value lives.
    pub unsafe fn new(run: RunFn, inputs: Vec<TensorInfo>, outputs: Vec<TensorInfo>, arena_size: usize) -> EntryPoint {
        // SAFETY: forwarded (the caller's contract).
        unsafe { Self::with_fn(EntryFn::Run(run), inputs, outputs, arena_size) }
    }

    /// [`EntryPoint::new`] for a `run` or a stateful step.
    ///
    /// # Safety
    /// As for [`EntryPoint::new`]; a step must have been compiled for exactly `state_size`.
    pub unsafe fn with_fn(run: EntryFn, inputs: Vec<TensorInfo>, outputs: Vec<TensorInfo>, arena_size: usize) -> EntryPoint {
        let shapes = inputs.iter().chain(&outputs).map(|t| t.shape.iter().map(|&d| d as i64).collect()).collect();
        EntryPoint { run, inputs, outputs, arena_size, shapes }
    }

    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    pub fn arena_size(&self) -> usize {
        self.arena_size
    }

    /// Bytes of state a stateful step reads and updates (`None` for `run`).
    pub fn state_size(&self) -> Option<usize> {
        match self.run {
            EntryFn::Run(_) => None,
            EntryFn::Step { state_size, .. } => Some(state_size),
        }
    }

    /// An arena of the size this entry point needs.
    pub fn arena(&self) -> Arena {
        Arena::new(self.arena_size)
    }

    /// Check `inputs` and `outputs` against the description (count, then byte length of each).
    pub fn check(&self, inputs: &[&[u8]], outputs: &[&mut [u8]]) -> Result<(), RunError> {
        check_buffers("input", &self.inputs, inputs.iter().map(|b| b.len()))?;
        check_buffers("output", &self.outputs, outputs.iter().map(|b| b.len()))
    }

    /// Run once on dense little-endian buffers, one per input and output in declaration order.
    /// `weights` is the base of the external weights (null when they are embedded); `pool`
    /// shares parallel loops (`None`: single-threaded).
    pub fn call(
        &self,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        arena: &mut Arena,
        weights: *const u8,
        pool: Option<&ThreadPool>,
    ) -> Result<(), RunError> {
        if self.state_size().is_some() {
            return Err(RunError::Arguments("this entry point is a stateful step: call it with its state".into()));
        }
        self.call_inner(inputs, outputs, arena, None, weights, pool)
    }

    /// Run a stateful step once: [`EntryPoint::call`] plus the `state` it reads and updates.
    pub fn call_step(
        &self,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        arena: &mut Arena,
        state: &mut State,
        weights: *const u8,
        pool: Option<&ThreadPool>,
    ) -> Result<(), RunError> {
        let Some(need) = self.state_size() else {
            return Err(RunError::Arguments("this entry point is `run`, which has no state".into()));
        };
        if state.size() < need {
            return Err(RunError::Arguments(format!("the state has {} bytes, the module needs {need}", state.size())));
        }
        self.call_inner(inputs, outputs, arena, Some(state), weights, pool)
    }

    fn call_inner(
        &self,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        arena: &mut Arena,
        state: Option<&mut State>,
        weights: *const u8,
        pool: Option<&ThreadPool>,
    ) -> Result<(), RunError> {
        self.check(inputs, outputs)?;
        if arena.size() < self.arena_size {
            return Err(RunError::Arguments(format!("the arena has {} bytes, the module needs {}", arena.size(), self.arena_size)));
        }
        let ni = inputs.len();
        let tensor = |i: usize, t: &TensorInfo, data: *mut u8, len: usize| OdcTensor {
            data: data as *mut c_void,
            shape: self.shapes[i].as_ptr(),
            size_bytes: len as u64,
            rank: t.shape.len() as u32,
            dtype: t.dtype,
        };
        // The tensor arrays live on the stack for up to INLINE tensors: a call (a decode step)
        // allocates nothing.
        let (mut ins_inline, mut outs_inline) = ([NO_TENSOR; INLINE], [NO_TENSOR; INLINE]);
        let (mut ins_heap, mut outs_heap) = (Vec::new(), Vec::new());
        let ins = tensor_array(&mut ins_inline, &mut ins_heap, inputs.len());
        for (i, (b, t)) in inputs.iter().zip(&self.inputs).enumerate() {
            ins[i] = tensor(i, t, b.as_ptr() as *mut u8, b.len());
        }
        let outs = tensor_array(&mut outs_inline, &mut outs_heap, outputs.len());
        for (i, (b, t)) in outputs.iter_mut().zip(&self.outputs).enumerate() {
            outs[i] = tensor(ni + i, t, b.as_mut_ptr(), b.len());
        }
        let ctx = OdcContext {
            abi_version: abi::ABI_VERSION,
            num_threads: pool.map_or(1, |p| p.threads() as u32),
            weights: weights as *const c_void,
            parallel_for: pool.map(|_| parallel_for_callback as abi::ParallelForFn),
            parallel_user: pool.map_or(std::ptr::null_mut(), |p| p as *const ThreadPool as *mut c_void),
        };
        // SAFETY: every pointer refers to a live buffer of the size the description gives, and
        // `run` was compiled for that description (the contract of `new`).
        let (ip, ni, op, no) = (ins.as_ptr(), ins.len() as u32, outs.as_mut_ptr(), outs.len() as u32);
        let (ap, an) = (arena.as_mut_ptr() as *mut c_void, self.arena_size as u64);
        let st = match (self.run, state) {
            (EntryFn::Run(f), _) => unsafe { f(&ctx, ip, ni, op, no, ap, an) },
            // SAFETY: as above; the state holds at least `state_size` bytes (checked by `call_step`).
            (EntryFn::Step { f, .. }, Some(s)) => unsafe { f(&ctx, ip, ni, op, no, ap, an, s.as_mut_ptr() as *mut c_void, s.size() as u64) },
            (EntryFn::Step { .. }, None) => return Err(RunError::Arguments("a stateful step needs its state".into())),
        };
        RunError::from_status(st).map_or(Ok(()), Err)
    }
}

/// Tensors a call passes without allocating.
const INLINE: usize = 8;

const NO_TENSOR: OdcTensor = OdcTensor { data: std::ptr::null_mut(), shape: std::ptr::null(), size_bytes: 0, rank: 0, dtype: 0 };

/// `n` tensors: the first `n` of `inline`, or `heap` grown to `n` when more are needed.
fn tensor_array<'a>(inline: &'a mut [OdcTensor; INLINE], heap: &'a mut Vec<OdcTensor>, n: usize) -> &'a mut [OdcTensor] {
    if n <= INLINE {
        &mut inline[..n]
    } else {
        heap.resize(n, NO_TENSOR);
        heap
    }
}

fn check_buffers(what: &str, infos: &[TensorInfo], lens: impl ExactSizeIterator<Item = usize>) -> Result<(), RunError> {
    if lens.len() != infos.len() {
        return Err(RunError::Arguments(format!("the module takes {} {what}s, got {}", infos.len(), lens.len())));
    }
    for (t, l) in infos.iter().zip(lens) {
        if l != t.byte_len {
            return Err(RunError::Arguments(format!("{what} {} needs {} bytes, got {l}", t.describe(), t.byte_len)));
        }
    }
    Ok(())
}
