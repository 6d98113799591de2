//! A model to compile, whatever its format: the one type every driver command goes through
//! (`check`, `inspect`, `run`, `bench`, `compile`, `odc-build`), so a new format is a variant here,
//! not an edit of each command.

use crate::onnx::{self, OnnxModel};
use crate::safetensors::{CheckpointWeights, ModelConfig};
use crate::{FrontendError, Unsupported};
use odc_ir::{DType, Evaluator, Graph, SymDim};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Knobs for import, the same for every format.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Full shapes for named inputs (replacing the declared shape).
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Values for named symbolic dimensions.
    pub dims: HashMap<String, usize>,
    /// Known input values. An input whose value is needed at compile time (a shape, axes, pads)
    /// is specialised to it and removed from the compiled signature; others stay run-time inputs.
    pub input_values: HashMap<String, odc_ir::Tensor>,
    /// Build one step of a decoder over its KV cache (`chunk` new tokens) instead of `run` over
    /// a whole sequence. Only decoder checkpoints have one.
    pub step: Option<DecoderStep>,
}

/// One step of a decoder: `chunk` new tokens over `cache` (prefill: `chunk = cache.max_prefill`;
/// decode: 1), attending to the first `window` slots (`None`: all; see `KvCache::windows`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderStep {
    pub chunk: usize,
    pub cache: crate::safetensors::decoder::KvCache,
    pub window: Option<usize>,
}

/// A declared model input: name, dtype (or the source's name of an unsupported one) and shape.
#[derive(Clone, Debug)]
pub struct DeclaredInput {
    pub name: String,
    pub dtype: Result<DType, String>,
    pub shape: Option<Vec<SymDim>>,
}

/// The formats odc reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// An ONNX file (`.onnx`, with external data beside it).
    Onnx,
    /// A Hugging Face checkpoint directory (`config.json` + safetensors).
    Checkpoint,
}

/// A Hugging Face checkpoint, read and validated.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: CheckpointWeights,
}

/// A loaded model of any format.
pub enum ModelSource {
    Onnx { path: PathBuf, model: OnnxModel },
    Checkpoint(Checkpoint),
}

impl ModelSource {
    /// Open `path`: a directory with a `config.json` is a checkpoint, anything else an ONNX file.
    pub fn open(path: &Path) -> Result<ModelSource, FrontendError> {
        if path.is_dir() {
            let config_path = path.join("config.json");
            if !config_path.is_file() {
                return Err(FrontendError::Io(format!(
                    "{} is a directory without a config.json: not a checkpoint (pass a .onnx file or a Hugging Face checkpoint directory)",
                    path.display()
                )));
            }
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| FrontendError::Io(format!("cannot read {}: {e}", config_path.display())))?;
            let config = ModelConfig::parse(&text)?;
            let weights = CheckpointWeights::open(path)?;
            return Ok(ModelSource::Checkpoint(Checkpoint { dir: path.to_path_buf(), config, weights }));
        }
        Ok(ModelSource::Onnx { path: path.to_path_buf(), model: onnx::load_model(path)? })
    }

    /// An ONNX model already in memory.
    pub fn from_onnx(path: PathBuf, model: OnnxModel) -> ModelSource {
        ModelSource::Onnx { path, model }
    }

    pub fn format(&self) -> SourceFormat {
        match self {
            ModelSource::Onnx { .. } => SourceFormat::Onnx,
            ModelSource::Checkpoint(_) => SourceFormat::Checkpoint,
        }
    }

    /// The file or directory it was read from.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Onnx { path, .. } => path,
            ModelSource::Checkpoint(c) => &c.dir,
        }
    }

    /// A short name for messages and the default symbol prefix: the file stem or directory name.
    pub fn display_name(&self) -> String {
        let p = self.path();
        let name = match self {
            ModelSource::Onnx { .. } => p.file_stem().map(|s| s.to_string_lossy().into_owned()),
            // A directory may be given as "." or "ckpt/": name it by its canonical last component.
            ModelSource::Checkpoint(_) => {
                p.canonicalize().ok().and_then(|c| c.file_name().map(|s| s.to_string_lossy().into_owned()))
            }
        };
        name.filter(|s| !s.is_empty()).unwrap_or_else(|| "model".into())
    }

    /// Every file the model is read from (model, external data, config, weight shards), for
    /// build caches that must notice a change to any of them.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            ModelSource::Onnx { path, model } => {
                let dir = path.parent().unwrap_or(Path::new("."));
                std::iter::once(path.clone()).chain(onnx::external_data_files(&model.proto).into_iter().map(|f| dir.join(f))).collect()
            }
            ModelSource::Checkpoint(c) => {
                let mut files = vec![c.dir.join("config.json")];
                let index = c.dir.join(crate::safetensors::weights::INDEX_FILE);
                if index.is_file() {
                    files.push(index);
                }
                files.extend(c.weights.files());
                files
            }
        }
    }

    /// The inputs the model declares (before shapes are bound).
    pub fn declared_inputs(&self) -> Vec<DeclaredInput> {
        match self {
            ModelSource::Onnx { model, .. } => onnx::declared_inputs(&model.proto),
            ModelSource::Checkpoint(c) => crate::safetensors::declared_inputs(&c.config),
        }
    }

    /// Operators (or architecture features) odc does not know, found without importing: what
    /// `odc check` can still list when shapes are missing.
    pub fn unknown_operators(&self) -> Vec<Unsupported> {
        match self {
            ModelSource::Onnx { model, .. } => onnx::unknown_operators(&model.proto),
            // The config was checked when the checkpoint was opened.
            ModelSource::Checkpoint(_) => vec![],
        }
    }

    /// Nodes of the source graph (ONNX nodes; a checkpoint has none: `None`).
    pub fn node_count(&self) -> Option<usize> {
        match self {
            ModelSource::Onnx { model, .. } => Some(model.proto.graph.node.len()),
            ModelSource::Checkpoint(_) => None,
        }
    }

    /// Build the graph IR.
    pub fn import(&self, opts: &ImportOptions, eval: &dyn Evaluator) -> Result<Graph, FrontendError> {
        match self {
            ModelSource::Onnx { .. } if opts.step.is_some() => Err(no_onnx_step()),
            ModelSource::Onnx { model, .. } => onnx::import(model, opts, eval),
            ModelSource::Checkpoint(c) => crate::safetensors::import(c, opts, eval),
        }
    }

    /// [`ModelSource::import`], consuming the source so weights move into the graph uncopied.
    pub fn import_owned(self, opts: &ImportOptions, eval: &dyn Evaluator) -> Result<Graph, FrontendError> {
        match self {
            ModelSource::Onnx { .. } if opts.step.is_some() => Err(no_onnx_step()),
            ModelSource::Onnx { model, .. } => onnx::import_owned(model, opts, eval),
            ModelSource::Checkpoint(c) => crate::safetensors::import(&c, opts, eval),
        }
    }
}

fn no_onnx_step() -> FrontendError {
    FrontendError::Invalid("prefill/decode steps over a KV cache are built for decoder checkpoints; an ONNX model compiles to `run`".into())
}
