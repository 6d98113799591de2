//! In-process execution: a [`Program`] compiled with `cranelift-jit` for the host.
//!
//! Also implements [`odc_ir::Evaluator`], so constant folding runs exactly the code inference
//! would run.

use crate::lower::{lower, IoSpec, Program, ARENA_ALIGN};
use crate::module::{define_program, ModuleSpec, WeightsMode};
use core::ffi::c_void;
use odc_runtime::abi::{self, KernelFn, OdcContext, OdcTensor};
use odc_runtime::ThreadPool;
use crate::error::CodegenError;
pub use crate::target::OptLevel;
use crate::target::Target;
use cranelift_jit::{JITBuilder, JITModule};
use odc_ir::{Bytes, Evaluator, Graph, IrError, NodeId, Tensor};

type AbiRunFn = unsafe extern "C" fn(*const OdcContext, *const OdcTensor, u32, *mut OdcTensor, u32, *mut c_void, u64) -> i32;

/// A compiled program ready to run in this process, through the same ABI entry point as an
/// AOT module.
pub struct JitProgram {
    module: Option<JITModule>,
    run: AbiRunFn,
    prog: Program,
    shapes: Vec<Vec<i64>>,
    pool: Option<ThreadPool>,
    kernels: Vec<KernelFn>,
}

// The JIT code and weights are immutable after compilation; running uses caller-owned buffers.
unsafe impl Send for JitProgram {}
unsafe impl Sync for JitProgram {}

/// Reusable output buffers and arena for [`JitProgram::run_into`].
pub struct RunBuffers {
    pub outputs: Vec<Vec<u8>>,
    arena: Vec<u8>,
}

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
    /// Compile `prog` (lowered for [`Target::host_jit`]) for this process.
    pub fn compile(prog: Program, opt: OptLevel) -> Result<Self, CodegenError> {
        Self::compile_for(prog, &Target::host_jit(opt, OptLevel::None)?)
    }

    /// [`JitProgram::compile`] with the GEMM microkernels at `microkernel_opt` (see
    /// [`ModuleSpec::target`] for why the default is `none`).
    pub fn compile_with(prog: Program, opt: OptLevel, microkernel_opt: OptLevel) -> Result<Self, CodegenError> {
        Self::compile_for(prog, &Target::host_jit(opt, microkernel_opt)?)
    }

    /// Compile `prog` for `target`, a host target without PIC ([`Target::host_jit`]).
    pub fn compile_for(prog: Program, target: &Target) -> Result<Self, CodegenError> {
        let builder = JITBuilder::with_isa(target.isa.clone(), cranelift_module::default_libcall_names());
        let mut module = JITModule::new(builder);
        let addrs = prog.weights.iter().map(|w| w.bytes().as_ptr() as u64).collect();
        let spec = ModuleSpec { prefix: "odc".into(), weights: WeightsMode::Absolute(addrs), target: target.clone() };
        let emitted = define_program(&mut module, &prog, &spec)?;
        module.finalize_definitions().map_err(|e| CodegenError::Cranelift(format!("JIT finalisation failed: {e}")))?;
        let code = module.get_finalized_function(emitted.run);
        // SAFETY: `run` was defined with exactly the ABI signature by `define_program`.
        let run: AbiRunFn = unsafe { std::mem::transmute::<*const u8, AbiRunFn>(code) };
        let shapes = prog.inputs.iter().chain(&prog.outputs).map(|t| t.shape.iter().map(|&d| d as i64).collect()).collect();
        let kernels = emitted
            .kernels
            .iter()
            // SAFETY: every kernel was defined with the kernel signature.
            .map(|&k| unsafe { std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(k)) })
            .collect();
        Ok(JitProgram { module: Some(module), run, prog, shapes, pool: None, kernels })
    }

    /// Run once kernel by kernel in `bufs`, timing each (for `odc bench`). Returns seconds per
    /// step. The buffers are the caller's so that they are warm: in freshly allocated ones every
    /// kernel writing a large buffer also paid its page faults (a stem convolution's 3 MB output
    /// showed 1.9 ms instead of 1.0).
    pub fn profile(&self, inputs: &[&[u8]], bufs: &mut RunBuffers) -> Result<Vec<f64>, RunError> {
        use crate::lower::BufferKind;
        let outputs = &mut bufs.outputs;
        let pad = bufs.arena.as_ptr().align_offset(ARENA_ALIGN);
        // SAFETY: `arena` has ARENA_ALIGN spare bytes.
        let arena_ptr = unsafe { bufs.arena.as_mut_ptr().add(pad) };
        let mut times = vec![];
        for step in self.prog.steps_in_order() {
            let args: Vec<*mut u8> = step
                .args
                .iter()
                .map(|&b| match self.prog.buffers[b].kind {
                    BufferKind::Input(j) => inputs[j].as_ptr() as *mut u8,
                    BufferKind::Output(j) => outputs[j].as_mut_ptr(),
                    BufferKind::Weight(w) => self.prog.weights[w].bytes().as_ptr() as *mut u8,
                    // SAFETY: offsets lie inside the arena by construction.
                    BufferKind::Temp { offset } => unsafe { arena_ptr.add(offset) },
                })
                .collect();
            let k = &self.prog.kernels[step.kernel];
            let n = k.outer_extent();
            let f = self.kernels[step.kernel];
            let t = std::time::Instant::now();
            // SAFETY: the argument table matches the kernel's buffers.
            let st = unsafe {
                match (&self.pool, k.is_parallel()) {
                    (Some(p), true) => p.parallel_for(f, args.as_ptr(), n),
                    _ => f(args.as_ptr(), 0, n),
                }
            };
            times.push(t.elapsed().as_secs_f64());
            if st != 0 {
                return Err(RunError(format!("kernel {} returned status {st}", k.name)));
            }
        }
        Ok(times)
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

    /// Share parallel loops among `threads` threads (1 = single-threaded).
    pub fn set_threads(&mut self, threads: usize) {
        self.pool = if threads > 1 { Some(ThreadPool::new(threads)) } else { None };
    }

    /// Output buffers and an arena sized for this program (reusable across runs).
    pub fn buffers(&self) -> RunBuffers {
        RunBuffers {
            outputs: self.prog.outputs.iter().map(|o| vec![0u8; o.dtype.byte_len(o.shape.iter().product())]).collect(),
            arena: vec![0u8; self.prog.arena_size + ARENA_ALIGN],
        }
    }

    /// Run on raw little-endian input bytes; returns one byte vector per output.
    pub fn run(&self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, RunError> {
        let mut bufs = self.buffers();
        self.run_into(inputs, &mut bufs)?;
        Ok(bufs.outputs)
    }

    /// Run into preallocated buffers (no allocation).
    pub fn run_into(&self, inputs: &[&[u8]], bufs: &mut RunBuffers) -> Result<(), RunError> {
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
        let pad = bufs.arena.as_ptr().align_offset(ARENA_ALIGN);
        // SAFETY: `arena` has ARENA_ALIGN spare bytes.
        let arena_ptr = unsafe { bufs.arena.as_mut_ptr().add(pad) };
        let ni = inputs.len();
        let tensor = |i: usize, spec: &IoSpec, data: *mut u8, len: usize| OdcTensor {
            data: data as *mut c_void,
            shape: self.shapes[i].as_ptr(),
            size_bytes: len as u64,
            rank: spec.shape.len() as u32,
            dtype: spec.dtype.abi_code(),
        };
        let ins: Vec<OdcTensor> =
            inputs.iter().zip(&self.prog.inputs).enumerate().map(|(i, (d, s))| tensor(i, s, d.as_ptr() as *mut u8, d.len())).collect();
        let mut outs: Vec<OdcTensor> = bufs
            .outputs
            .iter_mut()
            .zip(&self.prog.outputs)
            .enumerate()
            .map(|(i, (d, s))| tensor(ni + i, s, d.as_mut_ptr(), d.len()))
            .collect();
        let ctx = self.pool.as_ref().map(|p| OdcContext {
            abi_version: abi::ABI_VERSION,
            num_threads: p.threads() as u32,
            weights: std::ptr::null(),
            parallel_for: Some(odc_runtime::pool::parallel_for_callback),
            parallel_user: p as *const ThreadPool as *mut c_void,
        });
        let ctx_ptr = ctx.as_ref().map(|c| c as *const OdcContext).unwrap_or(std::ptr::null());
        // SAFETY: every pointer refers to a buffer of the size the program was compiled for.
        let status = unsafe {
            (self.run)(ctx_ptr, ins.as_ptr(), ins.len() as u32, outs.as_mut_ptr(), outs.len() as u32, arena_ptr as *mut c_void, self.prog.arena_size as u64)
        };
        match abi::Status::from_code(status) {
            Some(abi::Status::Ok) => Ok(()),
            Some(s) => Err(RunError(s.message().to_string())),
            None => Err(RunError(format!("generated code returned status {status}"))),
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

/// Folds constants by JIT-compiling and running the sub-graph, with the greedy fusion plan:
/// elementwise chains become one kernel each (resnet50's BatchNorm arithmetic is 590 nodes, and
/// compiling one kernel per node was most of its constant folding time).
#[derive(Default)]
pub struct JitEvaluator;

impl Evaluator for JitEvaluator {
    fn evaluate(&self, graph: &Graph, nodes: &[NodeId]) -> Result<Vec<Tensor>, IrError> {
        let sub = graph.extract(nodes)?;
        let target = Target::host_jit(OptLevel::None, OptLevel::None).map_err(|e| IrError::new(e.to_string()))?;
        let prog = lower(&sub, &odc_passes::fusion::greedy(&sub), &target.lower_options())?;
        let jit = JitProgram::compile_for(prog, &target)?;
        let outs = jit.run(&[]).map_err(|e| IrError::new(format!("constant folding: {e}")))?;
        outs.into_iter()
            .zip(jit.outputs())
            .map(|(bytes, spec)| Tensor::new(spec.dtype, spec.shape.clone(), Bytes::from_vec(bytes)))
            .collect()
    }
}
