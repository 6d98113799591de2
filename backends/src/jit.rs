//! In-process execution: a [`Program`] compiled with `cranelift-jit` for the host.
//!
//! Also implements [`odc_ir::Evaluator`], so constant folding runs exactly the code inference
//! would run.

use crate::error::CodegenError;
use crate::lower::{lower, IoSpec, Program};
use crate::module::{define_program, ModuleSpec, WeightsMode};
pub use crate::target::OptLevel;
use crate::target::Target;
use cranelift_jit::{JITBuilder, JITModule};
use odc_ir::{Bytes, Evaluator, Graph, IrError, NodeId, Tensor};
use odc_runtime::abi::KernelFn;
use odc_runtime::call::{Arena, EntryFn, EntryPoint, RunFn, State, StepFn, TensorInfo};
pub use odc_runtime::RunError;
use odc_runtime::ThreadPool;

/// A compiled program ready to run in this process, through the same ABI entry point and the
/// same call path ([`odc_runtime::call`]) as a loaded AOT module.
pub struct JitProgram {
    module: Option<JITModule>,
    entry: EntryPoint,
    prog: Program,
    pool: Option<ThreadPool>,
    kernels: Vec<KernelFn>,
}

// The JIT code and weights are immutable after compilation; running uses caller-owned buffers.
unsafe impl Send for JitProgram {}
unsafe impl Sync for JitProgram {}

/// Reusable output buffers and arena for [`JitProgram::run_into`] (and, for a stateful step,
/// a scratch state that [`JitProgram::profile`] runs it on).
pub struct RunBuffers {
    pub outputs: Vec<Vec<u8>>,
    arena: Arena,
    state: Option<State>,
}

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
        let describe = |ios: &[IoSpec]| ios.iter().map(|t| TensorInfo::new(t.name.clone(), t.dtype.abi_code(), t.shape.clone())).collect();
        // SAFETY: `run` (or the stateful step) was defined with exactly the ABI signature by
        // `define_program`, for these inputs, outputs, arena and state, and lives in `module`,
        // which `self` frees last.
        let entry = unsafe {
            let f = if prog.state.is_empty() {
                EntryFn::Run(std::mem::transmute::<*const u8, RunFn>(code))
            } else {
                EntryFn::Step { f: std::mem::transmute::<*const u8, StepFn>(code), state_size: prog.state_size }
            };
            EntryPoint::with_fn(f, describe(&prog.inputs), describe(&prog.outputs), prog.arena_size)
        };
        let kernels = emitted
            .kernels
            .iter()
            // SAFETY: every kernel was defined with the kernel signature.
            .map(|&k| unsafe { std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(k)) })
            .collect();
        Ok(JitProgram { module: Some(module), entry, prog, pool: None, kernels })
    }

    /// Run once kernel by kernel in `bufs`, timing each (for `odc bench`). Returns seconds per
    /// step. The buffers are the caller's so that they are warm: in freshly allocated ones every
    /// kernel writing a large buffer also paid its page faults (a stem convolution's 3 MB output
    /// showed 1.9 ms instead of 1.0).
    pub fn profile(&self, inputs: &[&[u8]], bufs: &mut RunBuffers) -> Result<Vec<f64>, RunError> {
        use crate::lower::BufferKind;
        {
            let outs: Vec<&mut [u8]> = bufs.outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
            self.entry.check(inputs, &outs)?;
        }
        let outputs = &mut bufs.outputs;
        let arena_ptr = bufs.arena.as_mut_ptr();
        let state_ptr = bufs.state.as_mut().map_or(std::ptr::null_mut(), |s| s.as_mut_ptr());
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
                    // SAFETY: likewise inside the state, which `buffers` made for this program.
                    BufferKind::State { offset } => unsafe { state_ptr.add(offset) },
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
            if let Some(e) = RunError::from_status(st) {
                return Err(e);
            }
        }
        Ok(times)
    }

    /// The ABI entry point (for hosts such as [`odc_runtime::DecoderSession`]).
    pub fn entry(&self) -> &EntryPoint {
        &self.entry
    }

    /// The thread pool parallel loops share (`None`: single-threaded).
    pub fn pool(&self) -> Option<&ThreadPool> {
        self.pool.as_ref()
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
            arena: self.entry.arena(),
            state: self.entry.state_size().map(State::new),
        }
    }

    /// Bytes of state this program's step updates (`None` for a stateless `run`).
    pub fn state_size(&self) -> Option<usize> {
        self.entry.state_size()
    }

    /// A zeroed state for this program's step.
    pub fn new_state(&self) -> Option<State> {
        self.entry.state_size().map(State::new)
    }

    /// Run the stateful step once into `bufs`, reading and updating `state`.
    pub fn step_into(&self, inputs: &[&[u8]], bufs: &mut RunBuffers, state: &mut State) -> Result<(), RunError> {
        let mut outs: Vec<&mut [u8]> = bufs.outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
        self.entry.call_step(inputs, &mut outs, &mut bufs.arena, state, std::ptr::null(), self.pool.as_ref())
    }

    /// Run on raw little-endian input bytes; returns one byte vector per output.
    pub fn run(&self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, RunError> {
        let mut bufs = self.buffers();
        self.run_into(inputs, &mut bufs)?;
        Ok(bufs.outputs)
    }

    /// Run into preallocated buffers (no buffer allocation).
    pub fn run_into(&self, inputs: &[&[u8]], bufs: &mut RunBuffers) -> Result<(), RunError> {
        let mut outs: Vec<&mut [u8]> = bufs.outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
        // JIT code addresses its weights absolutely: no weights base.
        self.entry.call(inputs, &mut outs, &mut bufs.arena, std::ptr::null(), self.pool.as_ref())
    }
}

/// A stateful module compiled for this process: named steps (a decoder's `prefill` and
/// `decode`), each possibly several variants, over one state layout (see
/// [`crate::module::define_stateful_module`]).
pub struct JitSteps {
    module: Option<JITModule>,
    steps: Vec<(String, EntryPoint)>,
    /// The programs, kept for their weights (whose addresses the code holds).
    _programs: Vec<Program>,
    pool: Option<ThreadPool>,
}

// As for `JitProgram`: immutable code and weights.
unsafe impl Send for JitSteps {}
unsafe impl Sync for JitSteps {}

impl JitSteps {
    /// Compile `steps`: per step its name and its variants (a program and the bound on its
    /// position input, see [`crate::module::Variant::max_position`]), for `target`
    /// ([`Target::host_jit`]).
    pub fn compile(steps: Vec<(String, Vec<(Program, Option<(usize, i64)>)>)>, context: usize, target: &Target) -> Result<Self, CodegenError> {
        let builder = JITBuilder::with_isa(target.isa.clone(), cranelift_module::default_libcall_names());
        let mut module = JITModule::new(builder);
        let spec = ModuleSpec { prefix: "odc".into(), weights: WeightsMode::Absolute(vec![]), target: target.clone() };
        let entries: Vec<crate::module::StepEntry> = steps
            .iter()
            .map(|(name, vs)| crate::module::StepEntry { name, variants: vs.iter().map(|(p, b)| (p, *b)).collect() })
            .collect();
        let emitted = crate::module::define_stateful_module(&mut module, &entries, context, &spec)?;
        drop(entries);
        module.finalize_definitions().map_err(|e| CodegenError::Cranelift(format!("JIT finalisation failed: {e}")))?;
        let describe = |ios: &[IoSpec]| ios.iter().map(|t| TensorInfo::new(t.name.clone(), t.dtype.abi_code(), t.shape.clone())).collect();
        let mut entry_points = vec![];
        let mut programs = vec![];
        for ((name, variants), &id) in steps.into_iter().zip(&emitted.entries) {
            let code = module.get_finalized_function(id);
            let head = &variants[0].0;
            let arena = variants.iter().map(|v| v.0.arena_size).max().unwrap_or(0);
            // SAFETY: the step was defined with the stateful ABI signature for these tensors,
            // this arena and state, and lives in `module`, which `self` frees last.
            let entry = unsafe {
                let f = EntryFn::Step { f: std::mem::transmute::<*const u8, StepFn>(code), state_size: head.state_size };
                EntryPoint::with_fn(f, describe(&head.inputs), describe(&head.outputs), arena)
            };
            entry_points.push((name, entry));
            programs.extend(variants.into_iter().map(|v| v.0));
        }
        Ok(JitSteps { module: Some(module), steps: entry_points, _programs: programs, pool: None })
    }

    /// The step called `name`.
    pub fn step(&self, name: &str) -> Option<&EntryPoint> {
        self.steps.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    /// Share parallel loops among `threads` threads (1 = single-threaded).
    pub fn set_threads(&mut self, threads: usize) {
        self.pool = if threads > 1 { Some(ThreadPool::new(threads)) } else { None };
    }

    pub fn pool(&self) -> Option<&ThreadPool> {
        self.pool.as_ref()
    }
}

impl Drop for JitSteps {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: no function pointer into the module outlives `self`.
            unsafe { m.free_memory() };
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
