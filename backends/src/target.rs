//! Targets: a [`Target`] is built once from a triple (via `target-lexicon`), a CPU preset and
//! feature flags, and carries everything below the graph that depends on the machine: the
//! Cranelift ISAs, the code generator's options ([`CodegenOptions`]) and the core the schedules
//! are chosen for ([`Machine`]). Lowering, scheduling and code generation read the target from
//! it and nowhere else.
//!
//! Short forms `x86_64`, `aarch64` and `riscv64` mean the `*-unknown-linux-gnu` triples. Cross
//! targets default to a conservative baseline (x86-64-v2; ARMv8.0-A with NEON; RV64GC), the host
//! to its detected features. `--features +fma,-avx` toggles Cranelift's `has_*` flags.

use crate::codegen::CodegenOptions;
use crate::lower::LowerOptions;
use crate::schedule::Machine;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use std::str::FromStr;
use target_lexicon::{Architecture, Triple};

/// Cranelift optimisation level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptLevel {
    None,
    Speed,
}

/// Why a target could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown target '{spec}' ({reason}); supported: {} (or x86_64, aarch64, riscv64)", SUPPORTED.join(", "))]
    UnknownTriple { spec: String, reason: String },
    #[error("target '{spec}' is not supported; supported: {} (or x86_64, aarch64, riscv64)", SUPPORTED.join(", "))]
    UnsupportedArchitecture { spec: String },
    #[error("{0}")]
    UnknownCpu(String),
    #[error("unknown feature '{feature}' for {triple}; available: {available}")]
    UnknownFeature { feature: String, triple: String, available: String },
    #[error("odc modules need a 64-bit target, not {0}")]
    Not64Bit(String),
    /// Cranelift refused a setting or the ISA (a bug or an unsupported host).
    #[error("{0}")]
    Cranelift(String),
}

/// A compilation target, built once.
#[derive(Clone)]
pub struct Target {
    pub triple: Triple,
    /// Kernels and the driver, at the requested optimisation level.
    pub isa: OwnedTargetIsa,
    /// GEMM microkernels, at `opt_level=none` (see `module::ModuleSpec::microkernel_isa`).
    pub microkernel_isa: OwnedTargetIsa,
    pub codegen: CodegenOptions,
    pub machine: Machine,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("triple", &self.triple.to_string()).field("codegen", &self.codegen).field("machine", &self.machine).finish()
    }
}

impl Target {
    /// The target of an object or shared library (position-independent code).
    pub fn for_module(spec: &TargetSpec, opt: OptLevel) -> Result<Target, TargetError> {
        let (triple, isa) = build_isa(spec, true, opt == OptLevel::Speed)?;
        let (_, microkernel_isa) = build_isa(spec, true, false)?;
        Target::from_isas(triple, isa, microkernel_isa)
    }

    /// The host with its own features, for code run in this process (`cranelift-jit` needs
    /// non-PIC code); GEMM microkernels at `microkernel_opt`.
    pub fn host_jit(opt: OptLevel, microkernel_opt: OptLevel) -> Result<Target, TargetError> {
        Target::from_isas(Triple::host(), host_isa(opt)?, host_isa(microkernel_opt)?)
    }

    fn from_isas(triple: Triple, isa: OwnedTargetIsa, microkernel_isa: OwnedTargetIsa) -> Result<Target, TargetError> {
        if isa.pointer_bits() != 64 {
            return Err(TargetError::Not64Bit(triple.to_string()));
        }
        let codegen = codegen_options(&*isa);
        let machine = machine(&*isa, &codegen);
        Ok(Target { triple, isa, microkernel_isa, codegen, machine })
    }

    /// The target as lowering and scheduling see it.
    pub fn lower_options(&self) -> LowerOptions {
        LowerOptions { machine: self.machine, gemm_tile: None }
    }
}

/// The host ISA with odc's settings, non-PIC as `cranelift-jit` requires.
pub fn host_isa(opt: OptLevel) -> Result<OwnedTargetIsa, TargetError> {
    let mut fb = settings::builder();
    set(&mut fb, "opt_level", if opt == OptLevel::Speed { "speed" } else { "none" })?;
    set(&mut fb, "is_pic", "false")?;
    set(&mut fb, "use_colocated_libcalls", "false")?;
    let isa_builder = cranelift_native::builder().map_err(|e| TargetError::Cranelift(format!("host not supported: {e}")))?;
    isa_builder.finish(settings::Flags::new(fb)).map_err(|e| TargetError::Cranelift(format!("cannot build the host ISA: {e}")))
}

/// Code generation options derived from the ISA's architecture and flags.
fn codegen_options(isa: &dyn TargetIsa) -> CodegenOptions {
    let flag = |name: &str| isa.isa_flags().iter().any(|f| f.name == name && f.as_bool() == Some(true));
    let (has_fma, vectorize, native_rounding) = match isa.triple().architecture {
        Architecture::X86_64 => (flag("has_fma"), true, flag("has_sse41")),
        Architecture::Aarch64(_) => (true, true, true),
        // Cranelift's riscv64 SIMD needs the V extension; scalar rounding is native.
        Architecture::Riscv64(_) => (true, flag("has_v"), true),
        _ => (false, false, false),
    };
    let x86 = matches!(isa.triple().architecture, Architecture::X86_64);
    let gemm_fma = has_fma;
    let gemm_shared_broadcast_rows = if x86 { 1 } else { usize::MAX };
    let native_fminmax = !x86;
    let dot_unsigned_first = matches!(isa.triple().architecture, Architecture::Aarch64(_));
    CodegenOptions { vectorize, has_fma, native_rounding, gemm_fma, gemm_shared_broadcast_rows, native_fminmax, dot_unsigned_first }
}

/// The core as the scheduler sees it: x86_64 and aarch64 with 128-bit SIMD, anything else
/// (riscv64 without V) scalar.
fn machine(isa: &dyn TargetIsa, opts: &CodegenOptions) -> Machine {
    match isa.triple().architecture {
        _ if !opts.vectorize => Machine::SCALAR,
        Architecture::Aarch64(_) => Machine::AARCH64,
        _ if !opts.gemm_fma => Machine::X86_64_NO_FMA,
        _ => Machine::X86_64,
    }
}

/// What to compile for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetSpec {
    /// A triple or short form; `None` for the host.
    pub triple: Option<String>,
    /// A CPU preset (`x86-64-v3`, `haswell`, ... on x86_64; `native` for the host's).
    pub cpu: Option<String>,
    /// Feature toggles, e.g. `+fma`, `-avx2`.
    pub features: Vec<String>,
}

/// The architectures odc generates code for.
pub const SUPPORTED: &[&str] = &["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", "riscv64gc-unknown-linux-gnu"];

/// Resolve a triple string (or short form).
pub fn parse_triple(s: &str) -> Result<Triple, TargetError> {
    let full = match s {
        "x86_64" | "x86-64" => "x86_64-unknown-linux-gnu",
        "aarch64" | "arm64" => "aarch64-unknown-linux-gnu",
        "riscv64" | "riscv64gc" => "riscv64gc-unknown-linux-gnu",
        "host" | "native" => return Ok(Triple::host()),
        other => other,
    };
    let t = Triple::from_str(full).map_err(|e| TargetError::UnknownTriple { spec: s.into(), reason: e.to_string() })?;
    match t.architecture {
        Architecture::X86_64 | Architecture::Aarch64(_) | Architecture::Riscv64(_) => Ok(t),
        _ => Err(TargetError::UnsupportedArchitecture { spec: s.into() }),
    }
}

/// True when `t` is the machine odc runs on.
pub fn is_host(t: &Triple) -> bool {
    let h = Triple::host();
    std::mem::discriminant(&h.architecture) == std::mem::discriminant(&t.architecture)
        && h.operating_system == t.operating_system
}

fn set(b: &mut dyn Configurable, k: &str, v: &str) -> Result<(), TargetError> {
    b.set(k, v).map_err(|e| TargetError::Cranelift(format!("cranelift setting {k}={v}: {e}")))
}

/// Build the ISA for `spec`. `pic` is needed for shared libraries and objects linked into PIEs.
fn build_isa(spec: &TargetSpec, pic: bool, opt_speed: bool) -> Result<(Triple, OwnedTargetIsa), TargetError> {
    let triple = match &spec.triple {
        Some(s) => parse_triple(s)?,
        None => Triple::host(),
    };
    let mut flags = settings::builder();
    set(&mut flags, "opt_level", if opt_speed { "speed" } else { "none" })?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    let host = is_host(&triple);
    let native = host && spec.cpu.as_deref().is_none_or(|c| c == "native");
    let mut isa_b = if native {
        cranelift_native::builder_with_options(true).map_err(|e| TargetError::Cranelift(format!("host not supported: {e}")))?
    } else {
        cranelift_codegen::isa::lookup(triple.clone()).map_err(|e| TargetError::Cranelift(format!("no code generator for {triple}: {e}")))?
    };
    let arch = triple.architecture;
    if !native {
        match spec.cpu.as_deref() {
            None | Some("generic") | Some("baseline") => match arch {
                // x86-64-v2: SSE4.2 and POPCNT, which every x86_64 machine of the last decade has.
                Architecture::X86_64 => enable(&mut isa_b, "x86-64-v2")?,
                // RV64GC: Cranelift's defaults (M, A, F, D, Zicsr, Zifencei) plus compressed.
                Architecture::Riscv64(_) => enable(&mut isa_b, "has_c")?,
                // ARMv8.0-A with NEON is Cranelift's aarch64 default.
                _ => {}
            },
            Some("native") => {
                return Err(TargetError::UnknownCpu(format!("--cpu native only applies when compiling for the host, not {triple}")))
            }
            Some(cpu) if arch == Architecture::X86_64 => enable(&mut isa_b, cpu).map_err(|_| {
                TargetError::UnknownCpu(format!(
                    "unknown x86_64 CPU '{cpu}'; use a preset such as x86-64-v2, x86-64-v3, x86-64-v4, haswell, skylake, icelake-server, znver3, or native"
                ))
            })?,
            Some(cpu) => return Err(TargetError::UnknownCpu(format!("unknown CPU '{cpu}' for {triple}; use generic or native"))),
        }
    }
    for f in &spec.features {
        let (on, name) = match f.as_bytes().first() {
            Some(b'+') => (true, &f[1..]),
            Some(b'-') => (false, &f[1..]),
            _ => (true, f.as_str()),
        };
        let key = format!("has_{}", name.replace('.', "").replace('-', "_"));
        let ok = isa_b.set(&key, if on { "true" } else { "false" }).is_ok() || (on && isa_b.enable(&key).is_ok());
        if !ok {
            let probe = cranelift_codegen::isa::lookup(triple.clone()).map_err(|e| TargetError::Cranelift(e.to_string()))?;
            let isa = probe.finish(settings::Flags::new(settings::builder())).map_err(|e| TargetError::Cranelift(e.to_string()))?;
            let mut names: Vec<String> =
                isa.isa_flags().iter().filter_map(|v| v.name.strip_prefix("has_").map(|s| format!("+{s}"))).collect();
            names.sort();
            return Err(TargetError::UnknownFeature { feature: f.clone(), triple: triple.to_string(), available: names.join(", ") });
        }
    }
    let isa = isa_b.finish(settings::Flags::new(flags)).map_err(|e| TargetError::Cranelift(format!("cannot build ISA for {triple}: {e}")))?;
    Ok((triple, isa))
}

fn enable(b: &mut cranelift_codegen::isa::Builder, preset: &str) -> Result<(), TargetError> {
    b.enable(preset).map_err(|e| TargetError::Cranelift(format!("{preset}: {e}")))
}
