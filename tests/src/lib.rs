//! Conformance against the ONNX backend node-test suite: load each case, compile it through the
//! JIT, run every test-data set and compare outputs with per-dtype tolerances.

pub mod model_builder;

use odc::{CompileOptions, Timings};
use odc_frontend::onnx::{self, ExternalData};
use odc_frontend::FrontendError;
use odc_ir::{DType, Tensor};
use std::path::{Path, PathBuf};
use onnx::type_proto as onnx_protobuf_type;

/// The outcome of one test case.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Unsupported(String),
}

/// Per-dtype comparison tolerance: |got - want| <= atol + rtol * |want|.
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-3, 1e-6),
        DType::F64 => (1e-6, 1e-9),
        DType::F16 => (1e-2, 1e-3),
        DType::BF16 => (2e-2, 1e-2),
        // integers, bools, float8/float4 and packed types compare exactly
        _ => (0.0, 0.0),
    }
}

/// Compare an output with its expected value.
pub fn compare(name: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype != want.dtype {
        return Err(format!("output '{name}': dtype {} but expected {}", got.dtype, want.dtype));
    }
    if got.shape != want.shape {
        return Err(format!("output '{name}': shape {:?} but expected {:?}", got.shape, want.shape));
    }
    // 64-bit integers compare exactly, without a round trip through f64.
    if matches!(want.dtype, DType::I64 | DType::U64) {
        for i in 0..want.num_elements() {
            let (g, w) = (got.get_i64(i).unwrap(), want.get_i64(i).unwrap());
            if g != w {
                return Err(format!("output '{name}'[{i}]: {g} but expected {w}"));
            }
        }
        return Ok(());
    }
    let (rtol, atol) = tolerance(want.dtype);
    let (g, w) = (got.decoded_f64(), want.decoded_f64());
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0;
    for i in 0..w.len() {
        let (a, e) = (g[i], w[i]);
        let ok = if e.is_nan() {
            a.is_nan()
        } else if e.is_infinite() {
            a == e
        } else {
            (a - e).abs() <= atol + rtol * e.abs()
        };
        if !ok {
            bad += 1;
            let err = if a.is_nan() { f64::INFINITY } else { (a - e).abs() };
            if worst.is_none_or(|(_, w)| err > w) {
                worst = Some((i, err));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "output '{name}': {bad} of {} elements differ; worst [{i}] = {} but expected {} (rtol {rtol}, atol {atol})",
            w.len(),
            g[i],
            w[i]
        )),
    }
}

fn read_tensor(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    onnx::parse_tensor(&bytes, &ExternalData::new(path.parent())).map_err(|e| format!("{}: {e}", path.display()))
}

fn data_sets(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..).map(|i| dir.join(format!("{prefix}_{i}.pb"))).take_while(|p| p.exists()).collect()
}

/// How a case is executed.
#[derive(Clone, Debug)]
pub enum Engine {
    /// In-process JIT.
    Jit,
    /// Compiled ahead of time for a target, linked with the C harness and run natively or under
    /// qemu-user.
    Aot(AotTarget),
}

/// A target for [`Engine::Aot`].
#[derive(Clone, Debug)]
pub struct AotTarget {
    /// Short form: x86_64, aarch64 or riscv64.
    pub arch: String,
    pub cpu: Option<String>,
    /// Scratch directory for objects and executables.
    pub work: PathBuf,
}

impl AotTarget {
    fn cc(&self) -> String {
        if self.arch == "x86_64" { "cc".into() } else { format!("{}-linux-gnu-gcc", self.arch) }
    }
}

/// Run one node-test case directory through the JIT.
pub fn run_case(dir: &Path) -> Outcome {
    run_case_with(dir, &Engine::Jit)
}

/// Run one node-test case directory with `engine`.
pub fn run_case_with(dir: &Path, engine: &Engine) -> Outcome {
    match std::panic::catch_unwind(|| run_case_inner(dir, engine)) {
        Ok(o) => o,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Outcome::Fail(format!("panic: {}", msg.unwrap_or_default()))
        }
    }
}

fn run_case_inner(dir: &Path, engine: &Engine) -> Outcome {
    let model = match onnx::load_model(&dir.join("model.onnx")) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let declared = onnx::declared_inputs(&model.proto);
    for d in &declared {
        if let Err(what) = &d.dtype {
            return Outcome::Unsupported(format!("input '{}' is a {what}", d.name));
        }
    }
    for o in &model.proto.graph.output {
        let is_tensor = matches!(
            o.type_.as_ref().and_then(|t| t.value.as_ref()),
            Some(onnx_protobuf_type::Value::TensorType(_))
        );
        if !is_tensor {
            return Outcome::Unsupported(format!("output '{}' is not a tensor", o.name));
        }
    }
    let sets = data_sets(dir);
    if sets.is_empty() {
        return Outcome::Fail("no test data sets".into());
    }
    let model = odc_frontend::ModelSource::from_onnx(dir.join("model.onnx"), model);
    for set in sets {
        let in_files = numbered(&set, "input");
        let out_files = numbered(&set, "output");
        // Inputs that are omitted in the data (optional inputs) are not fed.
        let mut opts = CompileOptions::default();
        let mut inputs = vec![];
        for (k, f) in in_files.iter().enumerate() {
            let Some(d) = declared.get(k) else { return Outcome::Fail("more input files than inputs".into()) };
            let t = match read_tensor(f) {
                Ok(t) => t,
                Err(e) if e.contains("unsupported") => return Outcome::Unsupported(e),
                Err(e) => return Outcome::Fail(e),
            };
            opts.input_shapes.insert(d.name.clone(), t.shape.clone());
            opts.input_values.insert(d.name.clone(), t.clone());
            inputs.push((d.name.clone(), t));
        }
        let mut expected = vec![];
        for f in &out_files {
            match read_tensor(f) {
                Ok(t) => expected.push(t),
                Err(e) => return Outcome::Unsupported(format!("expected output: {e}")),
            }
        }
        let mut timings = Timings::default();
        let g = match odc::import_model(&model, &opts, &mut timings) {
            Ok(g) => g,
            Err(e) => {
                return match e {
                    odc::Error::Frontend(FrontendError::UnsupportedList(_)) | odc::Error::Frontend(FrontendError::Unsupported(_)) => {
                        Outcome::Unsupported(e.to_string().replace('\n', " "))
                    }
                    other => Outcome::Fail(other.to_string()),
                }
            }
        };
        let outs = match engine {
            Engine::Jit => run_jit(&g, &opts, &inputs, dir),
            Engine::Aot(t) => run_aot(&g, &inputs, t, dir),
        };
        let outs = match outs {
            Ok(o) => o,
            Err(o) => return o,
        };
        if outs.len() != expected.len() {
            return Outcome::Fail(format!("{} outputs, expected {}", outs.len(), expected.len()));
        }
        for ((spec, bytes), want) in outs.into_iter().zip(&expected) {
            let got = match Tensor::new(spec.dtype, spec.shape.clone(), odc_ir::Bytes::from_vec(bytes)) {
                Ok(t) => t,
                Err(e) => return Outcome::Fail(e.to_string()),
            };
            if let Err(e) = compare(&spec.name, &got, want) {
                return Outcome::Fail(e);
            }
        }
    }
    Outcome::Pass
}

type Outputs = Vec<(odc_backends::IoSpec, Vec<u8>)>;

fn feed<'a>(specs: &[odc_backends::IoSpec], inputs: &'a [(String, Tensor)]) -> Result<Vec<&'a [u8]>, Outcome> {
    // Inputs specialised at compile time are no longer part of the signature.
    specs
        .iter()
        .map(|spec| match inputs.iter().find(|(n, _)| *n == spec.name) {
            Some((_, t)) => Ok(t.bytes()),
            None => Err(Outcome::Fail(format!("no test data for input '{}'", spec.name))),
        })
        .collect()
}

fn run_jit(g: &odc_ir::Graph, opts: &CompileOptions, inputs: &[(String, Tensor)], dir: &Path) -> Result<Outputs, Outcome> {
    let mut timings = Timings::default();
    let jit = odc::compile_jit(g, opts, &mut timings).map_err(|e| Outcome::Fail(e.to_string()))?;
    if std::env::var_os("ODC_REPORT_FROZEN").is_some() && jit.inputs().len() < inputs.len() {
        eprintln!("FROZEN {} {}/{}", dir.display(), inputs.len() - jit.inputs().len(), inputs.len());
    }
    let bufs = feed(jit.inputs(), inputs)?;
    let outs = jit.run(&bufs).map_err(|e| Outcome::Fail(format!("run: {e}")))?;
    Ok(jit.outputs().iter().cloned().zip(outs).collect())
}

fn run_aot(g: &odc_ir::Graph, inputs: &[(String, Tensor)], t: &AotTarget, dir: &Path) -> Result<Outputs, Outcome> {
    use odc_backends::aot::{compile_object, AotOptions, WeightsPlacement};
    use std::process::Command;
    let fail = |m: String| Outcome::Fail(m);
    let spec = odc_backends::target::TargetSpec { triple: Some(t.arch.clone()), cpu: t.cpu.clone(), features: vec![] };
    let target = odc_backends::Target::for_module(&spec, odc_backends::OptLevel::Speed).map_err(|e| fail(e.to_string()))?;
    let prog = odc::plan(g, &CompileOptions::default(), &target, &mut Timings::default()).map_err(|e| fail(e.to_string()))?;
    let opts = AotOptions { prefix: "model".into(), weights: WeightsPlacement::Embedded };
    let module = compile_object(&prog, &target, &opts).map_err(|e| fail(e.to_string()))?;
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let w = t.work.join(&name);
    std::fs::create_dir_all(&w).map_err(|e| fail(e.to_string()))?;
    std::fs::write(w.join("model.o"), &module.object).map_err(|e| fail(e.to_string()))?;
    std::fs::write(w.join("model.h"), odc_backends::bindings::c_header(&prog, "model", &name)).map_err(|e| fail(e.to_string()))?;
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/odc_harness.c");
    let exe = w.join("harness");
    let mut link = Command::new(t.cc());
    link.args(["-O1", "-DODC_PREFIX=model", "-include"]).arg(w.join("model.h")).arg(&harness).arg(w.join("model.o")).arg("-o").arg(&exe);
    if t.arch != "x86_64" {
        link.arg("-static");
    }
    let out = link.output().map_err(|e| fail(format!("cannot run {}: {e}", t.cc())))?;
    if !out.status.success() {
        return Err(fail(format!("link failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let mut args = vec![];
    for (k, b) in feed(&prog.inputs, inputs)?.into_iter().enumerate() {
        let p = w.join(format!("in{k}.bin"));
        std::fs::write(&p, b).map_err(|e| fail(e.to_string()))?;
        args.push(p);
    }
    let outs: Vec<PathBuf> = (0..prog.outputs.len()).map(|k| w.join(format!("out{k}.bin"))).collect();
    args.extend(outs.iter().cloned());
    let mut run = if t.arch == "x86_64" { Command::new(&exe) } else { Command::new(format!("qemu-{}-static", t.arch)) };
    if t.arch != "x86_64" {
        run.arg(&exe);
    }
    let r = run.args(&args).output().map_err(|e| fail(format!("cannot run: {e}")))?;
    if !r.status.success() {
        return Err(fail(format!("run: {}{}", String::from_utf8_lossy(&r.stdout).trim(), String::from_utf8_lossy(&r.stderr).trim())));
    }
    let res = prog.outputs.iter().cloned().zip(outs.iter().map(|p| std::fs::read(p).unwrap_or_default())).collect();
    let _ = std::fs::remove_dir_all(&w);
    Ok(res)
}

/// Test-case directories under `root`, sorted.
pub fn cases(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("model.onnx").exists()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Where the node-test data is: `$ODC_NODE_TESTS`, the shared copy beside the checkout, or the
/// copy `scripts/prepare-node-tests.sh` generates under `build/`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ODC_NODE_TESTS") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    [root.join("../shared/onnx-node-tests"), root.join("build/onnx-node-tests")].into_iter().find(|p| p.is_dir())
}

/// The tests listed in the committed manifest (`tests/conformance/passing.txt`).
pub fn manifest() -> Vec<&'static str> {
    include_str!("../conformance/passing.txt").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

/// Run the manifest's cases under `dir` with `engine` on every core; returns the failures as
/// `name: outcome` lines, sorted.
pub fn failing_manifest_cases(dir: &Path, engine: &Engine) -> Vec<String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let names = manifest();
    let next = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let case = dir.join(name);
                let o = if case.join("model.onnx").exists() { run_case_with(&case, engine) } else { Outcome::Fail("test case missing".into()) };
                if o != Outcome::Pass {
                    failures.lock().expect("failure list").push(format!("{name}: {o:?}"));
                }
            });
        }
    });
    let mut f = failures.into_inner().expect("failure list");
    f.sort();
    f
}
