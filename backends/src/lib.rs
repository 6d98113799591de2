//! `odc-backends`: from graph IR to machine code.
//!
//! ```text
//! Graph ──lower──► Program (kernels in kernel IR + buffers + steps)
//!                    │  math: transcendentals and storage formats as kernel-IR expressions
//!                    │  schedule: register tile, cache blocks, vector width, unrolling,
//!                    │            loop order and parallel loop of each kernel
//!                    ▼
//!              codegen (one Cranelift function per kernel) + module (driver `run`)
//!                    ▼
//!              jit (in-process)  |  aot: object (ELF for any supported triple), archive,
//!                                   shared library, C header, Rust binding
//! ```
//!
//! Owns: the kernel IR, lowering of primitives (and fused groups) to loop nests, the math
//! library, Cranelift code generation, JIT execution and constant evaluation.
//!
//! Must not: depend on the runtime's internals, or link any math routine not generated here.

pub mod aot;
pub mod bindings;
pub mod codegen;
pub mod error;
pub mod jit;
pub mod kernel;
pub mod lower;
pub mod math;
pub mod module;
pub mod schedule;
pub mod target;

pub use error::{CodegenError, TargetError};
pub use jit::{JitEvaluator, JitProgram, JitSteps, RunBuffers, RunError};
pub use target::{host_isa, OptLevel, Target, TargetSpec};
pub use odc_passes::fusion::FusionPlan;
pub use odc_passes::kernel_choice::KernelKind;
pub use lower::{lower, Buffer, BufferKind, Device, IoSpec, LowerOptions, Program, Step};
