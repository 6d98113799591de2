//! Targets: triples (via `target-lexicon`), CPU presets and feature flags → a Cranelift ISA.
//!
//! Short forms `x86_64`, `aarch64` and `riscv64` mean the `*-unknown-linux-gnu` triples. Cross
//! targets default to a conservative baseline (x86-64-v2; ARMv8.0-A with NEON; RV64GC), the host
//! to its detected features. `--features +fma,-avx` toggles Cranelift's `has_*` flags.

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use odc_ir::IrError;
use std::str::FromStr;
use target_lexicon::{Architecture, Triple};

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

fn err(msg: impl Into<String>) -> IrError {
    IrError::new(msg)
}

/// Resolve a triple string (or short form).
pub fn parse_triple(s: &str) -> Result<Triple, IrError> {
    let full = match s {
        "x86_64" | "x86-64" => "x86_64-unknown-linux-gnu",
        "aarch64" | "arm64" => "aarch64-unknown-linux-gnu",
        "riscv64" | "riscv64gc" => "riscv64gc-unknown-linux-gnu",
        "host" | "native" => return Ok(Triple::host()),
        other => other,
    };
    let t = Triple::from_str(full)
        .map_err(|e| err(format!("unknown target '{s}' ({e}); supported: {} (or x86_64, aarch64, riscv64)", SUPPORTED.join(", "))))?;
    match t.architecture {
        Architecture::X86_64 | Architecture::Aarch64(_) | Architecture::Riscv64(_) => Ok(t),
        _ => Err(err(format!("target '{s}' is not supported; supported: {} (or x86_64, aarch64, riscv64)", SUPPORTED.join(", ")))),
    }
}

/// True when `t` is the machine odc runs on.
pub fn is_host(t: &Triple) -> bool {
    let h = Triple::host();
    std::mem::discriminant(&h.architecture) == std::mem::discriminant(&t.architecture)
        && h.operating_system == t.operating_system
}

fn set(b: &mut dyn Configurable, k: &str, v: &str) -> Result<(), IrError> {
    b.set(k, v).map_err(|e| err(format!("cranelift setting {k}={v}: {e}")))
}

/// Build the ISA for `spec`. `pic` is needed for shared libraries and objects linked into PIEs.
pub fn build_isa(spec: &TargetSpec, pic: bool, opt_speed: bool) -> Result<(Triple, OwnedTargetIsa), IrError> {
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
        cranelift_native::builder_with_options(true).map_err(|e| err(format!("host not supported: {e}")))?
    } else {
        cranelift_codegen::isa::lookup(triple.clone()).map_err(|e| err(format!("no code generator for {triple}: {e}")))?
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
                return Err(err(format!("--cpu native only applies when compiling for the host, not {triple}")))
            }
            Some(cpu) if arch == Architecture::X86_64 => enable(&mut isa_b, cpu).map_err(|_| {
                err(format!(
                    "unknown x86_64 CPU '{cpu}'; use a preset such as x86-64-v2, x86-64-v3, x86-64-v4, haswell, skylake, icelake-server, znver3, or native"
                ))
            })?,
            Some(cpu) => return Err(err(format!("unknown CPU '{cpu}' for {triple}; use generic or native"))),
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
            let probe = cranelift_codegen::isa::lookup(triple.clone()).map_err(|e| err(e.to_string()))?;
            let isa = probe.finish(settings::Flags::new(settings::builder())).map_err(|e| err(e.to_string()))?;
            let mut names: Vec<String> =
                isa.isa_flags().iter().filter_map(|v| v.name.strip_prefix("has_").map(|s| format!("+{s}"))).collect();
            names.sort();
            return Err(err(format!("unknown feature '{f}' for {triple}; available: {}", names.join(", "))));
        }
    }
    let isa = isa_b.finish(settings::Flags::new(flags)).map_err(|e| err(format!("cannot build ISA for {triple}: {e}")))?;
    Ok((triple, isa))
}

fn enable(b: &mut cranelift_codegen::isa::Builder, preset: &str) -> Result<(), IrError> {
    b.enable(preset).map_err(|e| err(format!("{preset}: {e}")))
}
