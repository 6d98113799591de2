//! Ahead-of-time emission: a relocatable ELF object for any supported target, a static archive
//! (written in Rust, with a symbol index), a shared library (through a system or cross linker),
//! and the external weights file when weights are not embedded.

use crate::lower::Program;
use crate::module::{define_program, define_stateful_module, ModuleSpec, StepEntry, WeightsLayout, WeightsMode};
use crate::error::CodegenError;
use crate::target::{is_host, Target};
use cranelift_object::{ObjectBuilder, ObjectModule};
use std::path::Path;
use std::process::Command;
use target_lexicon::{Architecture, Triple};

/// Weights at least this large go to a side file unless told otherwise.
pub const DEFAULT_EXTERNAL_THRESHOLD: usize = 128 << 20;

/// Where weights go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsPlacement {
    /// Embedded below [`DEFAULT_EXTERNAL_THRESHOLD`], external above.
    Auto,
    Embedded,
    External,
}

#[derive(Clone, Debug)]
pub struct AotOptions {
    /// Symbol prefix, a C identifier.
    pub prefix: String,
    pub weights: WeightsPlacement,
}

/// The compiled module.
pub struct AotModule {
    pub triple: Triple,
    /// A relocatable ELF object.
    pub object: Vec<u8>,
    /// The external weights file's name and contents, when weights are not embedded.
    pub weights_file: Option<(String, WeightsLayout)>,
}

fn is_c_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_') && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Compile `prog` (lowered for `target`) to an object for `target` (see
/// [`Target::for_module`]).
pub fn compile_object(prog: &Program, target: &Target, opts: &AotOptions) -> Result<AotModule, CodegenError> {
    emit_object(target, opts, WeightsLayout::of(prog).size, |m, spec| define_program(m, prog, spec).map(|e| e.weights_layout))
}

/// Compile a stateful module: one entry point per [`StepEntry`] over one state and one weights
/// blob, the state holding `context` positions (see [`crate::module::define_stateful_module`]).
pub fn compile_stateful_object(entries: &[StepEntry], context: usize, target: &Target, opts: &AotOptions) -> Result<AotModule, CodegenError> {
    let progs: Vec<&Program> = entries.iter().flat_map(|e| e.variants.iter().map(|v| v.0)).collect();
    let size = WeightsLayout::shared(&progs).0.size;
    emit_object(target, opts, size, |m, spec| define_stateful_module(m, entries, context, spec).map(|e| e.weights_layout))
}

/// An object module for `target` with whatever `define` puts in it; `weights_size` decides
/// between embedded and external weights.
fn emit_object(
    target: &Target,
    opts: &AotOptions,
    weights_size: usize,
    define: impl FnOnce(&mut ObjectModule, &ModuleSpec) -> Result<WeightsLayout, CodegenError>,
) -> Result<AotModule, CodegenError> {
    if !is_c_identifier(&opts.prefix) {
        return Err(CodegenError::Invalid(format!("prefix '{}' is not a C identifier (letters, digits, _)", opts.prefix)));
    }
    let triple = target.triple.clone();
    let external = match opts.weights {
        WeightsPlacement::Embedded => false,
        WeightsPlacement::External => weights_size > 0,
        WeightsPlacement::Auto => weights_size >= DEFAULT_EXTERNAL_THRESHOLD,
    };
    let file_name = format!("{}.weights", opts.prefix);
    let weights = if external { WeightsMode::External { file_name: file_name.clone() } } else { WeightsMode::Embedded };
    let builder = ObjectBuilder::new(target.isa.clone(), opts.prefix.as_bytes().to_vec(), cranelift_module::default_libcall_names())
        .map_err(|e| CodegenError::Cranelift(format!("object builder: {e}")))?;
    let mut module = ObjectModule::new(builder);
    let spec = ModuleSpec { prefix: opts.prefix.clone(), weights, target: target.clone() };
    let layout = define(&mut module, &spec)?;
    let product = module.finish();
    let object = product.emit().map_err(|e| CodegenError::Cranelift(format!("object emission failed: {e}")))?;
    Ok(AotModule { triple, object, weights_file: external.then_some((file_name, layout)) })
}

/// A GNU `ar` archive holding the object, with a symbol index so linkers find the entry points.
pub fn static_library(object: &[u8], member_name: &str) -> Result<Vec<u8>, CodegenError> {
    let members = [ar_archive_writer::NewArchiveMember::new(
        object,
        &ar_archive_writer::DEFAULT_OBJECT_READER,
        member_name.to_string(),
    )];
    let mut out = std::io::Cursor::new(Vec::new());
    ar_archive_writer::write_archive_to_stream(&mut out, &members, ar_archive_writer::ArchiveKind::Gnu, false, None)
        .map_err(|e| CodegenError::Archive(e.to_string()))?;
    Ok(out.into_inner())
}

/// The linker odc uses for `triple` when none is given.
pub fn default_linker(triple: &Triple) -> String {
    if is_host(triple) {
        return "cc".into();
    }
    match triple.architecture {
        Architecture::Aarch64(_) => "aarch64-linux-gnu-gcc".into(),
        Architecture::Riscv64(_) => "riscv64-linux-gnu-gcc".into(),
        Architecture::X86_64 => "x86_64-linux-gnu-gcc".into(),
        _ => "cc".into(),
    }
}

/// Link `object` into a shared library at `out`. The module has no undefined symbols, so no
/// C library is linked in.
pub fn link_shared(object: &Path, out: &Path, triple: &Triple, linker: Option<&str>) -> Result<(), CodegenError> {
    let linker = linker.map(str::to_string).unwrap_or_else(|| default_linker(triple));
    let status = Command::new(&linker)
        .args(["-shared", "-nostdlib", "-Wl,-z,noexecstack", "-o"])
        .arg(out)
        .arg(object)
        .output()
        .map_err(|e| CodegenError::LinkerNotFound { linker: linker.clone(), reason: e.to_string() })?;
    if !status.status.success() {
        return Err(CodegenError::LinkFailed { linker, stderr: String::from_utf8_lossy(&status.stderr).trim().to_string() });
    }
    Ok(())
}
