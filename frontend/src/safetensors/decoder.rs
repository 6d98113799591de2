//! The llama-family decoder (llama 2/3, SmolLM, TinyLlama, qwen2) as graph IR, from its config and
//! Hugging Face weight names: token embedding, per layer RMSNorm → grouped-query attention with
//! rotate-half RoPE → residual → RMSNorm → SwiGLU MLP → residual, final RMSNorm, LM head (tied to
//! the embedding when the config says so). Output: logits `[batch, sequence, vocab]` in f32.

use super::config::{DecoderConfig, RopeScaling};
use super::weights::CheckpointWeights;
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, Tensor, TensorType};
use odc_passes::Builder;

/// A linear layer `x @ W^T (+ b)` with the checkpoint's `[out, in]` weight, computed in f32.
pub(super) fn linear(b: &mut Builder, w: &CheckpointWeights, x: NodeId, name: &str, out: usize, inp: usize, bias: bool) -> Result<NodeId, FrontendError> {
    let wm = weight(b, w, &format!("{name}.weight"), &[out, inp])?;
    let wt = b.transpose(wm, &[1, 0])?;
    let y = b.matmul(x, wt)?;
    if bias {
        let bv = weight(b, w, &format!("{name}.bias"), &[out])?;
        return Ok(b.add2(y, bv)?);
    }
    Ok(y)
}

/// A checkpoint tensor of the expected shape as an f32 constant (bf16/f16 weights are widened
/// by constant folding, once, at compile time).
pub(super) fn weight(b: &mut Builder, w: &CheckpointWeights, name: &str, shape: &[usize]) -> Result<NodeId, FrontendError> {
    let t = w.get_shaped(name, shape)?;
    if !t.dtype.is_float() {
        return Err(FrontendError::Invalid(format!("tensor '{name}' is {}, a float weight was expected", t.dtype)));
    }
    let c = b.constant(t);
    Ok(if b.dtype(c) == DType::F32 { c } else { b.cast(c, DType::F32)? })
}

/// The RoPE inverse frequencies `1 / theta^(2j/d)`, rescaled for llama 3.
pub fn rope_inv_freq(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2).map(|j| 1.0 / theta.powf((2 * j) as f64 / head_dim as f64)).collect();
    match *scaling {
        RopeScaling::None => base,
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => base
            .into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / factor
                } else {
                    let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect(),
    }
}

/// cos and sin tables `[positions, head_dim]` in the rotate-half layout (each frequency twice).
fn rope_tables(b: &mut Builder, positions: usize, inv_freq: &[f64]) -> (NodeId, NodeId) {
    let half = inv_freq.len();
    let (mut cos, mut sin) = (Vec::with_capacity(positions * 2 * half), Vec::with_capacity(positions * 2 * half));
    for p in 0..positions {
        for _ in 0..2 {
            for &f in inv_freq {
                // HF computes the angle in f32.
                let angle = (p as f32 * f as f32) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
    }
    let shape = vec![positions, 2 * half];
    (b.constant(Tensor::from_f32_vec(shape.clone(), cos)), b.constant(Tensor::from_f32_vec(shape, sin)))
}

/// `x * cos + rotate_half(x) * sin` for `x: [B, H, S, D]`, `cos/sin: [S, D]`.
fn apply_rope(b: &mut Builder, x: NodeId, cos: NodeId, sin: NodeId) -> Result<NodeId, FrontendError> {
    let d = *b.shape(x).last().unwrap_or(&0);
    let lo = b.slice_axis(x, 3, 0, 1, d / 2)?;
    let hi = b.slice_axis(x, 3, (d / 2) as i64, 1, d / 2)?;
    let neg_hi = b.unary(odc_ir::UnaryOp::Neg, hi)?;
    let rotated = b.concat(&[neg_hi, lo], 3)?;
    let a = b.mul(x, cos)?;
    let r = b.mul(rotated, sin)?;
    Ok(b.add2(a, r)?)
}

/// [B, S, H*D] → [B, H, S, D]
pub(super) fn split_heads(b: &mut Builder, x: NodeId, heads: usize, head_dim: usize) -> Result<NodeId, FrontendError> {
    let s = b.shape(x);
    let r = b.reshape(x, &[s[0], s[1], heads, head_dim])?;
    Ok(b.transpose(r, &[0, 2, 1, 3])?)
}

/// [B, H, S, D] → [B, S, H*D]
pub(super) fn merge_heads(b: &mut Builder, x: NodeId) -> Result<NodeId, FrontendError> {
    let s = b.shape(x);
    let t = b.transpose(x, &[0, 2, 1, 3])?;
    Ok(b.reshape(t, &[s[0], s[2], s[1] * s[3]])?)
}

/// Softmax attention `softmax(q k^T * scale + bias) v` over `[B, H, S, D]` operands, with
/// `kv_heads` dividing `H` (grouped-query attention: each K/V head serves `H / kv_heads` query
/// heads) and an additive `bias` broadcastable to `[B, H, S_q, S_kv]`.
pub(super) fn attention(b: &mut Builder, q: NodeId, k: NodeId, v: NodeId, bias: Option<NodeId>, scale: f64) -> Result<NodeId, FrontendError> {
    let (qs, ks) = (b.shape(q), b.shape(k));
    let (batch, heads, q_len, d) = (qs[0], qs[1], qs[2], qs[3]);
    let (kv_heads, kv_len) = (ks[1], ks[2]);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(FrontendError::Invalid(format!("{heads} query heads are not a multiple of {kv_heads} key/value heads")));
    }
    let group = heads / kv_heads;
    // Queries grouped under their K/V head: [B, KV, G*S, D] against K/V [B, KV, S_kv, D], so the
    // K/V heads are read once, not repeated.
    let qg = b.reshape(q, &[batch, kv_heads, group * q_len, d])?;
    let kt = b.transpose(k, &[0, 1, 3, 2])?;
    let scores = b.matmul(qg, kt)?;
    let scores = b.binary_c(BinaryOp::Mul, scores, scale)?;
    let scores = b.reshape(scores, &[batch, heads, q_len, kv_len])?;
    let scores = match bias {
        Some(bias) => b.add2(scores, bias)?,
        None => scores,
    };
    let probs = b.softmax(scores, &[3])?;
    let probs = b.reshape(probs, &[batch, kv_heads, group * q_len, kv_len])?;
    let out = b.matmul(probs, v)?;
    Ok(b.reshape(out, &[batch, heads, q_len, d])?)
}

/// The additive causal mask `[S, S]`: 0 where key ≤ query, -inf after.
fn causal_bias(b: &mut Builder, len: usize) -> Result<NodeId, FrontendError> {
    let i = b.iota(DType::I64, &[len, len], 0)?;
    let j = b.iota(DType::I64, &[len, len], 1)?;
    let allowed = b.binary(BinaryOp::Le, j, i)?;
    let zero = b.scalar(DType::F32, 0.0)?;
    let ninf = b.scalar(DType::F32, f64::NEG_INFINITY)?;
    Ok(b.select(allowed, zero, ninf)?)
}

/// Build the decoder over `input_ids: [batch, seq]`; returns the logits node.
pub fn build(b: &mut Builder, c: &DecoderConfig, w: &CheckpointWeights, batch: usize, seq: usize) -> Result<NodeId, FrontendError> {
    let (hidden, hd) = (c.hidden_size, c.head_dim);
    let ids = b.g.add_input("input_ids", TensorType::new(DType::I64, vec![batch, seq]));
    let embed = weight(b, w, "model.embed_tokens.weight", &[c.vocab_size, hidden])?;
    let mut x = b.add(Op::Gather { axis: 0 }, &[embed, ids])?;
    let (cos, sin) = rope_tables(b, seq, &rope_inv_freq(hd, c.rope_theta, &c.rope_scaling));
    let mask = causal_bias(b, seq)?;
    let scale = 1.0 / (hd as f64).sqrt();
    for l in 0..c.num_layers {
        let p = format!("model.layers.{l}");
        b.origin = p.clone();
        let norm_w = weight(b, w, &format!("{p}.input_layernorm.weight"), &[hidden])?;
        let h = b.rms_norm(x, Some(norm_w), &[2], c.rms_norm_eps)?;
        let q = linear(b, w, h, &format!("{p}.self_attn.q_proj"), c.num_heads * hd, hidden, c.qkv_bias)?;
        let k = linear(b, w, h, &format!("{p}.self_attn.k_proj"), c.num_kv_heads * hd, hidden, c.qkv_bias)?;
        let v = linear(b, w, h, &format!("{p}.self_attn.v_proj"), c.num_kv_heads * hd, hidden, c.qkv_bias)?;
        let q = split_heads(b, q, c.num_heads, hd)?;
        let k = split_heads(b, k, c.num_kv_heads, hd)?;
        let v = split_heads(b, v, c.num_kv_heads, hd)?;
        let q = apply_rope(b, q, cos, sin)?;
        let k = apply_rope(b, k, cos, sin)?;
        let a = attention(b, q, k, v, Some(mask), scale)?;
        let a = merge_heads(b, a)?;
        let o = linear(b, w, a, &format!("{p}.self_attn.o_proj"), hidden, c.num_heads * hd, c.o_bias)?;
        x = b.add2(x, o)?;
        let norm_w = weight(b, w, &format!("{p}.post_attention_layernorm.weight"), &[hidden])?;
        let h = b.rms_norm(x, Some(norm_w), &[2], c.rms_norm_eps)?;
        let gate = linear(b, w, h, &format!("{p}.mlp.gate_proj"), c.intermediate_size, hidden, c.mlp_bias)?;
        let up = linear(b, w, h, &format!("{p}.mlp.up_proj"), c.intermediate_size, hidden, c.mlp_bias)?;
        let g = b.swish(gate, 1.0)?;
        let gu = b.mul(g, up)?;
        let down = linear(b, w, gu, &format!("{p}.mlp.down_proj"), hidden, c.intermediate_size, c.mlp_bias)?;
        x = b.add2(x, down)?;
    }
    b.origin = "model.norm".into();
    let norm_w = weight(b, w, "model.norm.weight", &[hidden])?;
    let x = b.rms_norm(x, Some(norm_w), &[2], c.rms_norm_eps)?;
    b.origin = "lm_head".into();
    let head = if c.tie_word_embeddings && !w.contains("lm_head.weight") { "model.embed_tokens" } else { "lm_head" };
    linear(b, w, x, head, c.vocab_size, hidden, false)
}
