//! In-process execution: a [`Program`] compiled with `cranelift-jit` for the host.
//!
//! Also implements [`odc_ir::Evaluator`], so constant folding runs exactly the code inference
//! would run.

use crate::lower::{lower, IoSpec, Program, ARENA_ALIGN};
use crate::module::define_program;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Linkage;
use odc_ir::{Bytes, Evaluator, Graph, IrError, NodeId, Tensor};
use std::collections::HashSet;

type RunFn = unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8, *const *const u8) -> i32;

/// Cranelift optimisation level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptLevel {
    None,
    Speed,
}

/// The host ISA with odc's settings (non-PIC, as `cranelift-jit` requires).
pub fn host_isa(opt: OptLevel) -> Result<OwnedTargetIsa, IrError> {
    let mut fb = settings::builder();
    let set = |fb: &mut settings::Builder, k: &str, v: &str| {
        fb.set(k, v).map_err(|e| IrError::new(format!("cranelift setting {k}={v}: {e}")))
    };
    set(&mut fb, "opt_level", if opt == OptLevel::Speed { "speed" } else { "none" })?;
    set(&mut fb, "is_pic", "false")?;
    set(&mut fb, "use_colocated_libcalls", "false")?;
    let isa_builder = cranelift_native::builder().map_err(|e| IrError::new(format!("host not supported: {e}")))?;
    isa_builder
        .finish(settings::Flags::new(fb))
        .map_err(|e| IrError::new(format!("cannot build the host ISA: {e}")))
}

/// A compiled program ready to run in this process.
pub struct JitProgram {
    module: Option<JITModule>,
    run: RunFn,
    prog: Program,
    weight_ptrs: Vec<*const u8>,
}

// The JIT code and weights are immutable after compilation; running uses caller-owned buffers.
unsafe impl Send for JitProgram {}
unsafe impl Sync for JitProgram {}

/// A run-time error from generated code or bad arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

impl JitProgram {
    pub fn compile(prog: Program, opt: OptLevel) -> Result<Self, IrError> {
        let isa = host_isa(opt)?;
        let builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        let mut module = JITModule::new(builder);
        let emitted = define_program(&mut module, &prog, "odc", Linkage::Local)?;
        module.finalize_definitions().map_err(|e| IrError::new(format!("JIT finalisation failed: {e}")))?;
        let code = module.get_finalized_function(emitted.run);
        // SAFETY: `run` was defined with exactly this signature by `define_program`.
        let run: RunFn = unsafe { std::mem::transmute::<*const u8, RunFn>(code) };
        let weight_ptrs = prog.weights.iter().map(|w| w.bytes().as_ptr()).collect();
        Ok(JitProgram { module: Some(module), run, prog, weight_ptrs })
    }

    pub fn program(&self) -> &Program {
        &self.prog
    }

    pub fn inputs(&self) -> &[IoSpec] {
        &self.prog.inputs
    }

    pub fn outputs(&self) -> &[IoSpec] {
        &self.prog.outputs
    }

    /// Run on raw little-endian input bytes; returns one byte vector per output.
    pub fn run(&self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, RunError> {
        if inputs.len() != self.prog.inputs.len() {
            return Err(RunError(format!("expected {} inputs, got {}", self.prog.inputs.len(), inputs.len())));
        }
        for (spec, data) in self.prog.inputs.iter().zip(inputs) {
            let want = spec.dtype.byte_len(spec.shape.iter().product());
            if data.len() != want {
                return Err(RunError(format!(
                    "input '{}' ({} {:?}) needs {want} bytes, got {}",
                    spec.name,
                    spec.dtype,
                    spec.shape,
                    data.len()
                )));
            }
        }
        let mut outputs: Vec<Vec<u8>> =
            self.prog.outputs.iter().map(|o| vec![0u8; o.dtype.byte_len(o.shape.iter().product())]).collect();
        let mut arena = vec![0u8; self.prog.arena_size + ARENA_ALIGN];
        let pad = arena.as_ptr().align_offset(ARENA_ALIGN);
        let arena_ptr = unsafe { arena.as_mut_ptr().add(pad) };
        let in_ptrs: Vec<*const u8> = inputs.iter().map(|d| d.as_ptr()).collect();
        let out_ptrs: Vec<*mut u8> = outputs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        // SAFETY: every pointer refers to a buffer of the size the program was compiled for.
        let status = unsafe { (self.run)(in_ptrs.as_ptr(), out_ptrs.as_ptr(), arena_ptr, self.weight_ptrs.as_ptr()) };
        match status {
            0 => Ok(outputs),
            1 => Err(RunError("an index input was out of range".into())),
            s => Err(RunError(format!("generated code returned status {s}"))),
        }
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: no function pointer into the module outlives `self`.
            unsafe { m.free_memory() };
        }
    }
}

/// Folds constants by JIT-compiling and running the sub-graph.
#[derive(Default)]
pub struct JitEvaluator;

impl Evaluator for JitEvaluator {
    fn evaluate(&self, graph: &Graph, nodes: &[NodeId]) -> Result<Vec<Tensor>, IrError> {
        let sub = graph.extract(nodes)?;
        let prog = lower(&sub, &HashSet::new())?;
        let jit = JitProgram::compile(prog, OptLevel::None)?;
        let outs = jit.run(&[]).map_err(|e| IrError::new(format!("constant folding: {e}")))?;
        outs.into_iter()
            .zip(jit.outputs())
            .map(|(bytes, spec)| Tensor::new(spec.dtype, spec.shape.clone(), Bytes::from_vec(bytes)))
            .collect()
    }
}
