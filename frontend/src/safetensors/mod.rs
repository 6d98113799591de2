//! Hugging Face checkpoints: a directory with `config.json` and `model.safetensors` (or shards
//! listed in `model.safetensors.index.json`).
//!
//! Owns: reading the config ([`config`]: the architecture and every value odc honours, unsupported
//! ones collected by key) and the weights ([`weights`]: mapped, validated, zero-copy tensors).
//! Must not: copy NN building blocks — the graph builders use `odc_passes::nn` like the ONNX
//! importer does.

pub mod config;
pub mod weights;

pub use config::{BertConfig, DecoderConfig, ModelConfig, RopeScaling};
pub use weights::CheckpointWeights;

use crate::source::{Checkpoint, DeclaredInput, ImportOptions};
use crate::{FrontendError, Unsupported};
use odc_ir::{DType, Evaluator, Graph, SymDim};

/// The inputs a checkpoint's graph takes: token ids `[batch, sequence]` (and BERT's token types
/// and attention mask), with symbolic dimensions bound by `--dim`/`--shape`.
pub fn declared_inputs(config: &ModelConfig) -> Vec<DeclaredInput> {
    let ids = |name: &str| DeclaredInput {
        name: name.into(),
        dtype: Ok(DType::I64),
        shape: Some(vec![SymDim::Named("batch".into()), SymDim::Named("sequence".into())]),
    };
    match config {
        ModelConfig::Decoder(_) => vec![ids("input_ids")],
        ModelConfig::Bert(_) => vec![ids("input_ids"), ids("token_type_ids"), ids("attention_mask")],
    }
}

/// Build the graph of a checkpoint.
pub fn import(c: &Checkpoint, _opts: &ImportOptions, _eval: &dyn Evaluator) -> Result<Graph, FrontendError> {
    let model_type = match &c.config {
        ModelConfig::Decoder(d) => d.model_type.clone(),
        ModelConfig::Bert(_) => "bert".into(),
    };
    Err(FrontendError::UnsupportedList(vec![Unsupported {
        node: "config.json".into(),
        op: model_type.clone(),
        reason: format!("building the graph of a '{model_type}' checkpoint is not implemented yet"),
    }]))
}
