//! `odc` driver: the compile pipeline as a flat list of named passes, shared by the CLI, the
//! conformance runner and the build-script integration.
//!
//! ```text
//! load (ModelSource: ONNX | checkpoint) ─► import (→ primitives) ─► fold_constants ─► verify ─► lower ─► codegen (JIT | object)
//! ```
//!
//! Set `ODC_DUMP_IR=1` to print the graph after each graph pass.
//!
//! Must not: contain operator semantics or code generation; those live in the library crates.

pub mod decoder;
pub mod generate;
pub mod npy;

use odc_backends::aot::{self, AotOptions, WeightsPlacement};
use odc_backends::target::TargetSpec;
use odc_passes::fusion::{self, FusionPlan};
use odc_backends::{bindings, lower, CodegenError, JitEvaluator, JitProgram, OptLevel, Program, Target, TargetError};
use std::path::PathBuf;
use odc_frontend::{DecoderStep, FrontendError, ImportOptions};
use odc_ir::{Graph, IrError};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub use odc_backends::RunError;
pub use odc_frontend::{ModelSource, SourceFormat, Unsupported};

/// Any failure of the pipeline. Wrapped errors are transparent: printing the chain (`{:#}`)
/// shows each message once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The unsupported features, when that is why compilation failed.
    pub fn unsupported(&self) -> Option<&[Unsupported]> {
        match self {
            Error::Frontend(FrontendError::UnsupportedList(l)) => Some(l),
            _ => None,
        }
    }
}

/// Options that change what is compiled.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Full input shapes by input name (`--shape x=1x3x224x224`).
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Values of named symbolic dimensions.
    pub dims: HashMap<String, usize>,
    /// Known input values, used only where a compile-time value is required (see
    /// [`ImportOptions::input_values`]).
    pub input_values: HashMap<String, odc_ir::Tensor>,
    pub opt_level: OptLevel,
    /// How kernels are chosen and fused.
    pub fusion: FusionMode,
    /// Build a decoder step over its KV cache instead of `run` (see [`DecoderStep`]).
    pub step: Option<DecoderStep>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            input_shapes: HashMap::new(),
            dims: HashMap::new(),
            input_values: HashMap::new(),
            opt_level: OptLevel::Speed,
            fusion: FusionMode::Saturate,
            step: None,
        }
    }
}

/// How the graph is grouped into kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusionMode {
    /// Equality saturation with a cost model (the default).
    Saturate,
    /// The greedy policy: elementwise single-reader chains and GEMM epilogues, after affine folding.
    Greedy,
    /// One kernel per primitive op.
    Off,
}

impl FusionMode {
    pub fn parse(s: &str) -> Result<FusionMode, Error> {
        match s {
            "saturate" | "egg" | "on" => Ok(FusionMode::Saturate),
            "greedy" => Ok(FusionMode::Greedy),
            "off" | "none" => Ok(FusionMode::Off),
            other => Err(Error::Usage(format!("unknown fusion mode '{other}'; use saturate, greedy or off"))),
        }
    }
}

/// Wall time per pipeline stage.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub stages: Vec<(&'static str, Duration)>,
}

impl Timings {
    fn record<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.stages.push((name, t.elapsed()));
        r
    }
}

fn dump(stage: &str, g: &Graph) {
    if std::env::var_os("ODC_DUMP_IR").is_some() {
        eprintln!("=== after {stage} ({} nodes) ===\n{g}", g.node_count());
    }
}

/// Parse `NAME=D1xD2x...` (an empty right side means a scalar).
pub fn parse_shape_arg(s: &str) -> Result<(String, Vec<usize>), Error> {
    let (name, dims) = s.split_once('=').ok_or_else(|| Error::Usage(format!("expected NAME=D1xD2..., got '{s}'")))?;
    let dims = if dims.is_empty() {
        vec![]
    } else {
        dims.split(['x', 'X', ','])
            .map(|d| d.trim().parse::<usize>().map_err(|_| Error::Usage(format!("bad dimension '{d}' in '{s}'"))))
            .collect::<Result<_, _>>()?
    };
    Ok((name.to_string(), dims))
}

/// Open a model of any format (an ONNX file, a checkpoint directory).
pub fn open_model(path: &Path, timings: &mut Timings) -> Result<ModelSource, Error> {
    Ok(timings.record("load", || ModelSource::open(path))?)
}

/// Open a model and import it into graph IR (constants folded, verified).
pub fn import_path(path: &Path, opts: &CompileOptions, timings: &mut Timings) -> Result<Graph, Error> {
    let source = open_model(path, timings)?;
    import_model_owned(source, opts, timings)
}

/// Import an opened model.
pub fn import_model(source: &ModelSource, opts: &CompileOptions, timings: &mut Timings) -> Result<Graph, Error> {
    let g = timings.record("import", || source.import(&import_options(opts), &JitEvaluator))?;
    simplify(g, opts, timings)
}

/// [`import_model`], consuming the model so its weights move into the graph without a copy.
pub fn import_model_owned(source: ModelSource, opts: &CompileOptions, timings: &mut Timings) -> Result<Graph, Error> {
    let g = timings.record("import", || source.import_owned(&import_options(opts), &JitEvaluator))?;
    simplify(g, opts, timings)
}

fn import_options(opts: &CompileOptions) -> ImportOptions {
    ImportOptions { input_shapes: opts.input_shapes.clone(), dims: opts.dims.clone(), input_values: opts.input_values.clone(), step: opts.step }
}

/// The graph passes after import: constant folding, affine folding, verification.
fn simplify(mut g: Graph, opts: &CompileOptions, timings: &mut Timings) -> Result<Graph, Error> {
    let eval = JitEvaluator;
    dump("import", &g);
    timings.record("fold_constants", || odc_passes::fold::fold_constants(&mut g, &eval))?;
    dump("fold_constants", &g);
    if opts.fusion == FusionMode::Greedy {
        timings.record("fold_affine", || odc_passes::affine::fold_channel_affine(&mut g))?;
        dump("fold_affine", &g);
    }
    timings.record("verify", || g.verify())?;
    Ok(g)
}

/// Graph → kernels, buffers and the static memory plan, for `target`.
pub fn plan(g: &Graph, opts: &CompileOptions, target: &Target, timings: &mut Timings) -> Result<Program, Error> {
    let target = &target.lower_options();
    match opts.fusion {
        FusionMode::Saturate => {
            let s = saturate(g, timings)?;
            Ok(timings.record("lower", || lower(&s.graph, &s.plan, target))?)
        }
        FusionMode::Greedy => {
            let plan = timings.record("fusion", || fusion::greedy(g));
            Ok(timings.record("lower", || lower(g, &plan, target))?)
        }
        FusionMode::Off => Ok(timings.record("lower", || lower(g, &FusionPlan::none(g), target))?),
    }
}

/// Equality saturation: the optimized graph, its fusion plan and the report. Saturation and
/// extraction times are recorded as separate stages.
pub fn saturate(g: &Graph, timings: &mut Timings) -> Result<odc_passes::saturate::Saturated, Error> {
    let s = odc_passes::saturate::optimize(g, Some(&JitEvaluator), &odc_passes::saturate::SaturateOptions::default())?;
    let r = &s.report;
    if r.time_limited {
        eprintln!(
            "warning: equality saturation stopped at its {} s safety time limit ({}); the compiled program may differ between runs",
            odc_passes::saturate::SaturateOptions::default().time_limit.as_secs(),
            r.stop_reason
        );
    }
    timings.stages.push(("saturation", Duration::from_secs_f64(r.saturation_ms / 1e3)));
    timings.stages.push(("extraction", Duration::from_secs_f64(r.extraction_ms / 1e3)));
    dump("saturate", &s.graph);
    Ok(s)
}

/// The host, for in-process execution at `opts.opt_level`.
pub fn host_target(opts: &CompileOptions) -> Result<Target, Error> {
    Ok(Target::host_jit(opts.opt_level, OptLevel::None)?)
}

/// Compile for in-process execution.
pub fn compile_jit(g: &Graph, opts: &CompileOptions, timings: &mut Timings) -> Result<JitProgram, Error> {
    let target = host_target(opts)?;
    let prog = plan(g, opts, &target, timings)?;
    Ok(timings.record("codegen", || JitProgram::compile_for(prog, &target))?)
}

/// [`compile_jit`], dropping the graph (and its copy of the weights) once the program holds
/// the packed weights, before code generation.
pub fn compile_jit_owned(g: Graph, opts: &CompileOptions, timings: &mut Timings) -> Result<JitProgram, Error> {
    let target = host_target(opts)?;
    let prog = plan(&g, opts, &target, timings)?;
    drop(g);
    Ok(timings.record("codegen", || JitProgram::compile_for(prog, &target))?)
}

/// An artifact `odc compile` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Obj,
    StaticLib,
    SharedLib,
    Header,
    Rust,
}

impl Emit {
    pub fn parse_list(s: &str) -> Result<Vec<Emit>, Error> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| match x.trim() {
                "obj" => Ok(Emit::Obj),
                "staticlib" => Ok(Emit::StaticLib),
                "sharedlib" => Ok(Emit::SharedLib),
                "header" => Ok(Emit::Header),
                "rust" => Ok(Emit::Rust),
                other => Err(Error::Usage(format!("unknown --emit kind '{other}'; use obj, staticlib, sharedlib, header, rust"))),
            })
            .collect()
    }
}

/// An ahead-of-time build request.
#[derive(Clone, Debug)]
pub struct AotRequest {
    pub target: TargetSpec,
    /// Symbol prefix; defaults to the model file's stem.
    pub prefix: Option<String>,
    pub emit: Vec<Emit>,
    pub weights: WeightsPlacement,
    pub linker: Option<String>,
    /// A decoder checkpoint's KV cache. A decoder compiled without a sequence shape (no
    /// `input_ids` shape, no `sequence` dim) becomes a stateful module with `prefill` and
    /// `decode` steps over this cache (`None`: the defaults of [`decoder::CacheOptions`]); with
    /// a sequence shape it compiles to `run` over that sequence, and a cache is an error.
    pub decoder: Option<decoder::CacheOptions>,
    /// `dir/name.o`, `dir/name` or a directory: artifacts are `name.o`, `libname.a`, `libname.so`,
    /// `name.h`, `name.rs` (and `<prefix>.weights`) in that directory.
    pub output: PathBuf,
}

/// The default symbol prefix for a model file or checkpoint directory.
pub fn default_prefix(model: &Path) -> String {
    let name = if model.is_dir() {
        model.canonicalize().ok().and_then(|c| c.file_name().map(|s| s.to_string_lossy().into_owned()))
    } else {
        model.file_stem().map(|s| s.to_string_lossy().into_owned())
    };
    bindings::ident(&name.filter(|s| !s.is_empty()).unwrap_or_else(|| "model".into()))
}

/// Compile a model ahead of time; returns the files written.
pub fn compile_aot(model: &Path, opts: &CompileOptions, req: &AotRequest, timings: &mut Timings) -> Result<Vec<PathBuf>, Error> {
    let prefix = req.prefix.clone().unwrap_or_else(|| default_prefix(model));
    let (dir, stem) = if req.output.is_dir() || req.output.as_os_str().to_string_lossy().ends_with('/') {
        (req.output.clone(), prefix.clone())
    } else {
        let stem = req.output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| prefix.clone());
        let dir = req.output.parent().map(|p| p.to_path_buf()).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| PathBuf::from("."));
        (dir, stem)
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let source = open_model(model, timings)?;
    let target = Target::for_module(&req.target, opts.opt_level)?;
    let aot_opts = AotOptions { prefix: prefix.clone(), weights: req.weights };
    let built = match decoder::module_cache(&source, opts, req.decoder.as_ref())? {
        None => {
            let g = import_model_owned(source, opts, timings)?;
            let prog = plan(&g, opts, &target, timings)?;
            let module = timings.record("codegen", || aot::compile_object(&prog, &target, &aot_opts))?;
            let model_name = model.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let header = bindings::c_header(&prog, &prefix, &model_name);
            let rust = bindings::rust_binding(&prog, &prefix, &model_name, module.weights_file.is_some());
            (module, header, rust, false)
        }
        Some(cache) => {
            drop(source);
            let min_window = req.decoder.and_then(|d| d.min_window).unwrap_or(decoder::DEFAULT_MIN_WINDOW);
            let steps = decoder::decoder_steps(model, cache, min_window, opts, &target, timings)?;
            let entries: Vec<odc_backends::module::StepEntry> = steps
                .iter()
                .map(|(name, vs)| odc_backends::module::StepEntry { name, variants: vs.iter().map(|(p, b)| (p, *b)).collect() })
                .collect();
            let module = timings.record("codegen", || aot::compile_stateful_object(&entries, cache.context, &target, &aot_opts))?;
            let model_name = model.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let header = bindings::c_header_stateful(&entries, cache.context, &prefix, &model_name);
            let rust = bindings::rust_binding_stateful(&entries, cache.context, &prefix, &model_name, module.weights_file.is_some());
            (module, header, rust, true)
        }
    };
    let (module, header, rust, side_files) = built;
    let mut written = vec![];
    let write = |path: PathBuf, bytes: &[u8], written: &mut Vec<PathBuf>| -> Result<(), Error> {
        std::fs::write(&path, bytes).map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
        Ok(())
    };
    let obj_path = dir.join(format!("{stem}.o"));
    let wants = |e: Emit| req.emit.contains(&e);
    if wants(Emit::Obj) || wants(Emit::SharedLib) {
        write(obj_path.clone(), &module.object, &mut written)?;
    }
    if wants(Emit::StaticLib) {
        let a = aot::static_library(&module.object, &format!("{stem}.o"))?;
        write(dir.join(format!("lib{stem}.a")), &a, &mut written)?;
    }
    if wants(Emit::SharedLib) {
        let so = dir.join(format!("lib{stem}.so"));
        timings.record("link", || aot::link_shared(&obj_path, &so, &module.triple, req.linker.as_deref()))?;
        written.push(so);
        if !wants(Emit::Obj) {
            let _ = std::fs::remove_file(&obj_path);
            written.retain(|p| p != &obj_path);
        }
    }
    if wants(Emit::Header) {
        write(dir.join(format!("{stem}.h")), header.as_bytes(), &mut written)?;
    }
    if wants(Emit::Rust) {
        write(dir.join(format!("{stem}.rs")), rust.as_bytes(), &mut written)?;
    }
    if let Some((name, blob)) = &module.weights_file {
        let path = dir.join(name);
        timings.record("write_weights", || {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            blob.write_to(&mut f)?;
            std::io::Write::flush(&mut f)
        })
        .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    // A decoder module generates text with the checkpoint's tokenizer and stop tokens: they go
    // beside it, where `odc generate` looks.
    if side_files && wants(Emit::SharedLib) {
        for name in decoder::SIDE_FILES {
            let (from, to) = (model.join(name), dir.join(name));
            if from.is_file() && from.canonicalize().ok() != to.canonicalize().ok() {
                std::fs::copy(&from, &to).map_err(|e| Error::Usage(format!("cannot copy {} to {}: {e}", from.display(), to.display())))?;
                written.push(to);
            }
        }
    }
    Ok(written)
}
