//! `odc-build`: compile an ONNX model ahead of time from `build.rs`.
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     odc_build::Model::new("model.onnx").prefix("net").shape("input", &[1, 3, 224, 224]).compile().unwrap();
//! }
//! // main.rs
//! // include!(concat!(env!("OUT_DIR"), "/net.rs"));   // then net::Model::new().run(&net::Inputs { .. })
//! ```
//!
//! Compiles for Cargo's `TARGET` with exactly the CPU features rustc compiles the crate with
//! (`CARGO_CFG_TARGET_FEATURE`), writes `lib<prefix>.a` and the typed binding `<prefix>.rs` into
//! `OUT_DIR`, prints the link and `rerun-if-changed` directives, and skips the work when the
//! model and options are unchanged (a hash of both is kept beside the outputs).
//!
//! Must not: contain compiler logic; it drives the `odc` library.

use odc_backends::aot::WeightsPlacement;
use odc_backends::target::TargetSpec;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A build-script error.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// What was produced.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The Rust binding to `include!`.
    pub binding: PathBuf,
    pub prefix: String,
    /// True when the outputs of a previous build were reused.
    pub cached: bool,
    /// The external weights file, when weights are not embedded.
    pub weights_file: Option<PathBuf>,
}

/// A model to compile.
#[derive(Clone, Debug)]
pub struct Model {
    path: PathBuf,
    prefix: Option<String>,
    shapes: Vec<(String, Vec<usize>)>,
    dims: Vec<(String, usize)>,
    weights: WeightsPlacement,
}

/// rustc target features Cranelift also knows (the rest, like `sse2`, are baselines).
const CRANELIFT_FEATURES: &[&str] = &[
    "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "fma", "bmi1", "bmi2", "lzcnt", "avx512f", "avx512dq",
    "avx512vl", "avx512bitalg", "avx512vbmi", "lse", "dotprod", "i8mm", "fp16", "v", "zba", "zbb", "zbc", "zbs", "zfa",
];

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| Error(format!("{name} is not set: odc_build::Model::compile must run in a build script")))
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

impl Model {
    pub fn new(path: impl AsRef<Path>) -> Model {
        Model { path: path.as_ref().to_path_buf(), prefix: None, shapes: vec![], dims: vec![], weights: WeightsPlacement::Auto }
    }

    /// Symbol prefix and binding module name (default: the model file's stem).
    pub fn prefix(mut self, p: &str) -> Model {
        self.prefix = Some(p.to_string());
        self
    }

    /// Fix an input's shape.
    pub fn shape(mut self, input: &str, dims: &[usize]) -> Model {
        self.shapes.push((input.to_string(), dims.to_vec()));
        self
    }

    /// Give a symbolic dimension a value.
    pub fn dim(mut self, name: &str, value: usize) -> Model {
        self.dims.push((name.to_string(), value));
        self
    }

    pub fn weights(mut self, w: WeightsPlacement) -> Model {
        self.weights = w;
        self
    }

    /// The target from Cargo's environment.
    fn target() -> Result<TargetSpec, Error> {
        let triple = env("TARGET")?;
        let enabled = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
        let features: Vec<String> =
            enabled.split(',').filter(|f| CRANELIFT_FEATURES.contains(f)).map(|f| format!("+{f}")).collect();
        // x86-64: the plain baseline plus exactly rustc's features (not odc's x86-64-v2 default).
        let cpu = triple.starts_with("x86_64").then(|| "x86-64".to_string());
        Ok(TargetSpec { triple: Some(triple), cpu, features })
    }

    pub fn compile(self) -> Result<Compiled, Error> {
        let out_dir = PathBuf::from(env("OUT_DIR")?);
        let target = Model::target()?;
        let prefix = self.prefix.clone().unwrap_or_else(|| odc::default_prefix(&self.path));
        // Every file the model is read from (an ONNX file and its external data, or a checkpoint's
        // config and shards) is watched and hashed.
        let source = odc::open_model(&self.path, &mut odc::Timings::default()).map_err(|e| Error(e.to_string()))?;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for file in source.files() {
            println!("cargo:rerun-if-changed={}", file.display());
            let bytes = std::fs::read(&file).map_err(|e| Error(format!("cannot read {}: {e}", file.display())))?;
            fnv(&mut h, file.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
            fnv(&mut h, &bytes);
        }
        drop(source);
        let mut opts_text = String::new();
        let _ = write!(opts_text, "{}|{:?}|{:?}|{:?}|{:?}|{:?}", env!("CARGO_PKG_VERSION"), target, prefix, self.shapes, self.dims, self.weights);
        fnv(&mut h, opts_text.as_bytes());
        let stamp = out_dir.join(format!("{prefix}.odc-hash"));
        let binding = out_dir.join(format!("{prefix}.rs"));
        let lib = out_dir.join(format!("lib{prefix}.a"));
        let weights_file = out_dir.join(format!("{prefix}.weights"));
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        println!("cargo:rustc-link-lib=static={prefix}");
        let cached = std::fs::read_to_string(&stamp).ok().as_deref() == Some(&format!("{h:016x}")) && binding.exists() && lib.exists();
        if !cached {
            let mut opts = odc::CompileOptions::default();
            for (n, s) in &self.shapes {
                opts.input_shapes.insert(n.clone(), s.clone());
            }
            for (n, v) in &self.dims {
                opts.dims.insert(n.clone(), *v);
            }
            let req = odc::AotRequest {
                target,
                prefix: Some(prefix.clone()),
                emit: vec![odc::Emit::StaticLib, odc::Emit::Rust],
                weights: self.weights,
                linker: None,
                decoder: None,
                output: out_dir.join(&prefix),
            };
            odc::compile_aot(&self.path, &opts, &req, &mut odc::Timings::default())
                .map_err(|e| Error(format!("odc could not compile {}: {e}", self.path.display())))?;
            std::fs::write(&stamp, format!("{h:016x}")).map_err(|e| Error(format!("cannot write {}: {e}", stamp.display())))?;
        }
        Ok(Compiled { binding, prefix, cached, weights_file: weights_file.exists().then_some(weights_file) })
    }
}
