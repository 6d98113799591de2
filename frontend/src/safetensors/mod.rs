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
