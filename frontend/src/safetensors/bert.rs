//! BERT encoders as graph IR: word + position + token-type embeddings and LayerNorm, then per
//! layer self-attention (padding mask from `attention_mask`) → residual → LayerNorm → GELU MLP →
//! residual → LayerNorm (post-LN), and the tanh pooler over the first token when the checkpoint
//! has one. Outputs: `last_hidden_state [batch, sequence, hidden]`, `pooler_output [batch, hidden]`.

use super::config::BertConfig;
use super::decoder::{linear, weight};
use super::weights::CheckpointWeights;
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, TensorType, UnaryOp};
use odc_passes::nn::AttentionOptions;
use odc_passes::Builder;

fn layer_norm(b: &mut Builder, w: &CheckpointWeights, x: NodeId, name: &str, hidden: usize, eps: f64) -> Result<NodeId, FrontendError> {
    let g = weight(b, w, &format!("{name}.weight"), &[hidden])?;
    let beta = weight(b, w, &format!("{name}.bias"), &[hidden])?;
    let axis = b.rank(x) - 1;
    Ok(b.layer_norm(x, Some(g), Some(beta), axis, eps)?)
}

/// Build the encoder; returns the last hidden state and, if the checkpoint has a pooler, its output.
pub fn build(b: &mut Builder, c: &BertConfig, w: &CheckpointWeights, batch: usize, seq: usize) -> Result<(NodeId, Option<NodeId>), FrontendError> {
    // BertModel checkpoints name tensors `embeddings.*`; BertFor* heads nest them under `bert.`.
    let p = if w.contains("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
    let h = c.hidden_size;
    let head_dim = h / c.num_heads;
    let ty = TensorType::new(DType::I64, vec![batch, seq]);
    let ids = b.g.add_input("input_ids", ty.clone());
    let types = b.g.add_input("token_type_ids", ty.clone());
    let mask = b.g.add_input("attention_mask", ty);
    b.origin = "embeddings".into();
    let word = weight(b, w, &format!("{p}embeddings.word_embeddings.weight"), &[c.vocab_size, h])?;
    let pos = weight(b, w, &format!("{p}embeddings.position_embeddings.weight"), &[c.max_position_embeddings, h])?;
    let tok = weight(b, w, &format!("{p}embeddings.token_type_embeddings.weight"), &[c.type_vocab_size, h])?;
    let we = b.add(Op::Gather { axis: 0 }, &[word, ids])?;
    let te = b.add(Op::Gather { axis: 0 }, &[tok, types])?;
    let pe = b.slice_axis(pos, 0, 0, 1, seq)?;
    let x = b.add2(we, te)?;
    let x = b.add2(x, pe)?;
    let mut x = layer_norm(b, w, x, &format!("{p}embeddings.LayerNorm"), h, c.layer_norm_eps)?;
    // Masked keys get the most negative f32 added (as transformers does), so a fully padded row
    // stays finite.
    let m = b.cast(mask, DType::F32)?;
    let keep = b.binary_c(BinaryOp::Sub, m, 1.0)?;
    let bias = b.binary_c(BinaryOp::Mul, keep, -(f32::MIN as f64))?;
    let bias = b.reshape(bias, &[batch, 1, 1, seq])?;
    let attention = AttentionOptions::for_head_dim(head_dim).with_bias(bias);
    for l in 0..c.num_layers {
        let lp = format!("{p}encoder.layer.{l}");
        b.origin = lp.clone();
        let q = linear(b, w, x, &format!("{lp}.attention.self.query"), h, h, true)?;
        let k = linear(b, w, x, &format!("{lp}.attention.self.key"), h, h, true)?;
        let v = linear(b, w, x, &format!("{lp}.attention.self.value"), h, h, true)?;
        let q = b.split_heads(q, c.num_heads)?;
        let k = b.split_heads(k, c.num_heads)?;
        let v = b.split_heads(v, c.num_heads)?;
        let a = b.attention(q, k, v, &attention)?.output;
        let a = b.merge_heads(a)?;
        let a = linear(b, w, a, &format!("{lp}.attention.output.dense"), h, h, true)?;
        let a = b.add2(a, x)?;
        let a = layer_norm(b, w, a, &format!("{lp}.attention.output.LayerNorm"), h, c.layer_norm_eps)?;
        let i = linear(b, w, a, &format!("{lp}.intermediate.dense"), c.intermediate_size, h, true)?;
        let i = b.gelu(i, c.gelu_tanh)?;
        let o = linear(b, w, i, &format!("{lp}.output.dense"), h, c.intermediate_size, true)?;
        let o = b.add2(o, a)?;
        x = layer_norm(b, w, o, &format!("{lp}.output.LayerNorm"), h, c.layer_norm_eps)?;
    }
    let pooled = if w.contains(&format!("{p}pooler.dense.weight")) {
        b.origin = "pooler".into();
        let first = b.slice_axis(x, 1, 0, 1, 1)?;
        let first = b.reshape(first, &[batch, h])?;
        let d = linear(b, w, first, &format!("{p}pooler.dense"), h, h, true)?;
        Some(b.unary(UnaryOp::Tanh, d)?)
    } else {
        None
    };
    Ok((x, pooled))
}
