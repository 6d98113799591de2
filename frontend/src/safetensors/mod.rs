//! Hugging Face checkpoints: a directory with `config.json` and `model.safetensors` (or shards
//! listed in `model.safetensors.index.json`).
//!
//! Owns: reading the config ([`config`]: the architecture and every value odc honours, unsupported
//! ones collected by key) and the weights ([`weights`]: mapped, validated, zero-copy tensors).
//! Must not: copy NN building blocks — the graph builders use `odc_passes::nn` like the ONNX
//! importer does.

pub mod bert;
pub mod config;
pub mod decoder;
pub mod weights;

pub use config::{BertConfig, DecoderConfig, ModelConfig, RopeScaling};
pub use weights::CheckpointWeights;

use crate::source::{Checkpoint, DeclaredInput, ImportOptions};
use crate::FrontendError;
use decoder::DecoderGraph;
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

/// `[batch, sequence]` of the token inputs: `--shape input_ids=BxS`, or `--dim batch=B`
/// (default 1) and `--dim sequence=S` (required).
fn token_shape(opts: &ImportOptions, max_positions: usize) -> Result<(usize, usize), FrontendError> {
    let (batch, seq) = match opts.input_shapes.get("input_ids") {
        Some(s) if s.len() == 2 => (s[0], s[1]),
        Some(s) => return Err(FrontendError::Shape(format!("input 'input_ids' is [batch, sequence]; --shape gave {s:?}"))),
        None => {
            let seq = opts.dims.get("sequence").copied().ok_or_else(|| {
                FrontendError::Shape(
                    "input shapes are not fully known: 'input_ids' has symbolic dimension 'sequence'; pass --dim sequence=N (and --dim batch=B, default 1) or --shape input_ids=BxN".into(),
                )
            })?;
            (opts.dims.get("batch").copied().unwrap_or(1), seq)
        }
    };
    if batch == 0 || seq == 0 {
        return Err(FrontendError::Shape(format!("input_ids shape [{batch}, {seq}] is empty")));
    }
    if seq > max_positions {
        return Err(FrontendError::Shape(format!("sequence {seq} is longer than the model's max_position_embeddings {max_positions}")));
    }
    Ok((batch, seq))
}

/// Build the graph of a checkpoint.
pub fn import(c: &Checkpoint, opts: &ImportOptions, eval: &dyn Evaluator) -> Result<Graph, FrontendError> {
    let mut b = odc_passes::Builder::new(eval);
    let outputs = match (&c.config, opts.step) {
        (ModelConfig::Decoder(d), Some(step)) => {
            let cache = step.cache;
            if cache.context == 0 || cache.max_prefill == 0 || step.chunk == 0 || step.chunk > cache.max_prefill {
                return Err(FrontendError::Shape(format!(
                    "a decoder step needs context >= 1 and 1 <= chunk <= max-prefill, got context {}, chunk {}, max-prefill {}",
                    cache.context, step.chunk, cache.max_prefill
                )));
            }
            if cache.context > d.max_position_embeddings {
                return Err(FrontendError::Shape(format!(
                    "context {} is longer than the model's max_position_embeddings {}",
                    cache.context, d.max_position_embeddings
                )));
            }
            let window = step.window.unwrap_or(cache.slots());
            vec![("logits", decoder::build(&mut b, d, &c.weights, DecoderGraph::Step { chunk: step.chunk, cache, window })?)]
        }
        (ModelConfig::Decoder(d), None) => {
            let (batch, seq) = token_shape(opts, d.max_position_embeddings)?;
            vec![("logits", decoder::build(&mut b, d, &c.weights, DecoderGraph::Sequence { batch, seq })?)]
        }
        (ModelConfig::Bert(_), Some(_)) => {
            return Err(FrontendError::Invalid("a BERT encoder has no KV cache: prefill/decode steps are for decoders".into()))
        }
        (ModelConfig::Bert(cfg), None) => {
            let (batch, seq) = token_shape(opts, cfg.max_position_embeddings)?;
            let (hidden, pooled) = bert::build(&mut b, cfg, &c.weights, batch, seq)?;
            let mut outs = vec![("last_hidden_state", hidden)];
            outs.extend(pooled.map(|p| ("pooler_output", p)));
            outs
        }
    };
    let mut g = b.finish();
    for (name, n) in outputs {
        g.set_output(name, n);
    }
    g.remove_dead();
    g.verify()?;
    Ok(g)
}
