//! The llama-family decoder (llama 2/3, SmolLM, TinyLlama, qwen2) as graph IR, from its config and
//! Hugging Face weight names: token embedding, per layer RMSNorm → grouped-query attention with
//! rotate-half RoPE → residual → RMSNorm → SwiGLU MLP → residual, final RMSNorm, LM head (tied to
//! the embedding when the config says so). Output: logits `[batch, sequence, vocab]` in f32.

use super::config::{DecoderConfig, RopeScaling};
use super::weights::CheckpointWeights;
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, ScatterReduction, TensorType};
use odc_passes::nn::{AttentionOptions, CausalOffset, RopeOptions};
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

/// What graph to build of a decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderGraph {
    /// `run` over a whole `[batch, seq]` sequence (logits at every position), no cache.
    Sequence { batch: usize, seq: usize },
    /// One step over a KV cache held as graph state (see [`KvCache`]): `chunk` new tokens,
    /// attending to the first `window` slots of the cache only (see [`KvCache::windows`]); the
    /// step refuses (index out of range) a `position` past `window - chunk`.
    Step { chunk: usize, cache: KvCache, window: usize },
}

/// The KV cache a decoder's steps share: up to `context` positions, written by prefill chunks of
/// up to `max_prefill` tokens.
///
/// Layout: per layer `l`, state `cache.{l}.key` and `cache.{l}.value`, each f32
/// `[1, kv_heads, slots, head_dim]` with `slots = context + max_prefill - 1`: a chunk's padding
/// rows (beyond its valid tokens) land in the spare slots after the last valid position and are
/// never attended to (the causal frontier stops at the valid ones) before being overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCache {
    pub context: usize,
    pub max_prefill: usize,
}

impl KvCache {
    pub fn slots(&self) -> usize {
        self.context + self.max_prefill - 1
    }

    /// The cache windows a step of `chunk` tokens is compiled for, smallest first: attention
    /// reads the first `window` slots, so a step at position `p` runs the smallest window with
    /// `p + chunk <= window` and costs at most about twice the valid prefix, not the capacity.
    /// Windows double from `min_window` (at least `chunk`) and the last is all the slots.
    pub fn windows(&self, chunk: usize, min_window: usize) -> Vec<usize> {
        let slots = self.slots();
        let mut w = vec![];
        let mut next = min_window.max(chunk).next_power_of_two();
        while 2 * next <= slots {
            w.push(next);
            next *= 2;
        }
        w.push(slots);
        w
    }
}

/// Where the attention of one layer reads its keys and values, and the positions it rotates by.
struct Positions {
    cos: NodeId,
    sin: NodeId,
    /// The additive causal bias over the keys attended to.
    mask: NodeId,
    /// For a step: the cache slots the chunk's keys go to, `[1, kv_heads, chunk, head_dim]`.
    write_at: Option<NodeId>,
}

/// Build decoder graph `what`; returns the logits node (`[batch, seq, vocab]` for a sequence,
/// `[1, vocab]` at the chunk's last valid token for a step).
///
/// A step's inputs are `input_ids: [1, chunk]` (i64), `position: [1]` (i64, the tokens already in
/// the cache) and, when `chunk > 1`, `n_tokens: [1]` (the valid tokens of the chunk, the rest
/// padding); its state is the cache. Token `i` of the chunk sits at position `position + i`.
pub fn build(b: &mut Builder, c: &DecoderConfig, w: &CheckpointWeights, what: DecoderGraph) -> Result<NodeId, FrontendError> {
    let (hidden, hd) = (c.hidden_size, c.head_dim);
    let (batch, seq) = match what {
        DecoderGraph::Sequence { batch, seq } => (batch, seq),
        DecoderGraph::Step { chunk, cache, window } => {
            if window < chunk || window > cache.slots() {
                return Err(FrontendError::Shape(format!("a step window of {window} slots cannot hold {chunk} tokens in a cache of {}", cache.slots())));
            }
            (1, chunk)
        }
    };
    let ids = b.g.add_input("input_ids", TensorType::new(DType::I64, vec![batch, seq]));
    let inv_freq = rope_inv_freq(hd, c.rope_theta, &c.rope_scaling);
    let (pos, last) = match what {
        DecoderGraph::Sequence { .. } => {
            let (cos, sin) = b.rope_tables(seq, &inv_freq);
            let causal = b.causal_allowed(seq, seq, CausalOffset::Fixed(0))?;
            let mask = b.bias_from_mask(causal, DType::F32)?;
            (Positions { cos, sin, mask, write_at: None }, None)
        }
        DecoderGraph::Step { chunk, cache, window } => {
            let position = b.g.add_input("position", TensorType::new(DType::I64, vec![1]));
            // Every use of the position goes through this lookup, whose index check makes a
            // position the window cannot hold an error instead of a silently short attention.
            let allowed = b.iota(DType::I64, &[window - chunk + 1], 0)?;
            let position = b.add(Op::Gather { axis: 0 }, &[allowed, position])?;
            let last = if chunk > 1 {
                let n = b.g.add_input("n_tokens", TensorType::new(DType::I64, vec![1]));
                Some(b.binary_c(BinaryOp::Sub, n, 1.0)?)
            } else {
                None
            };
            let slots = cache.slots();
            let (table_cos, table_sin) = b.rope_tables(slots, &inv_freq);
            let offsets = b.iota(DType::I64, &[chunk], 0)?;
            let positions = b.add2(offsets, position)?;
            let cos = b.add(Op::Gather { axis: 0 }, &[table_cos, positions])?;
            let sin = b.add(Op::Gather { axis: 0 }, &[table_sin, positions])?;
            let causal = b.causal_allowed(chunk, window, CausalOffset::Tensor(position))?;
            let mask = b.bias_from_mask(causal, DType::F32)?;
            let rows = b.iota(DType::I64, &[1, c.num_kv_heads, chunk, hd], 2)?;
            let at = b.reshape(position, &[1, 1, 1, 1])?;
            let write_at = b.add2(rows, at)?;
            (Positions { cos, sin, mask, write_at: Some(write_at) }, last)
        }
    };
    let embed = weight(b, w, "model.embed_tokens.weight", &[c.vocab_size, hidden])?;
    let mut x = b.add(Op::Gather { axis: 0 }, &[embed, ids])?;
    let attention = AttentionOptions::for_head_dim(hd).with_bias(pos.mask);
    let rope = RopeOptions::default();
    for l in 0..c.num_layers {
        let p = format!("model.layers.{l}");
        b.origin = p.clone();
        let norm_w = weight(b, w, &format!("{p}.input_layernorm.weight"), &[hidden])?;
        let h = b.rms_norm(x, Some(norm_w), &[2], c.rms_norm_eps)?;
        let q = linear(b, w, h, &format!("{p}.self_attn.q_proj"), c.num_heads * hd, hidden, c.qkv_bias)?;
        let k = linear(b, w, h, &format!("{p}.self_attn.k_proj"), c.num_kv_heads * hd, hidden, c.qkv_bias)?;
        let v = linear(b, w, h, &format!("{p}.self_attn.v_proj"), c.num_kv_heads * hd, hidden, c.qkv_bias)?;
        let q = b.split_heads(q, c.num_heads)?;
        let k = b.split_heads(k, c.num_kv_heads)?;
        let v = b.split_heads(v, c.num_kv_heads)?;
        let q = b.rotary_embedding(q, pos.cos, pos.sin, &rope)?;
        let k = b.rotary_embedding(k, pos.cos, pos.sin, &rope)?;
        let (k, v) = match (what, pos.write_at) {
            (DecoderGraph::Step { cache, window, .. }, Some(at)) => {
                let ty = TensorType::new(DType::F32, vec![1, c.num_kv_heads, cache.slots(), hd]);
                let mut updated = vec![];
                for (part, new) in [("key", k), ("value", v)] {
                    let name = format!("cache.{l}.{part}");
                    let old = b.g.add_state(&name, ty.clone());
                    let all = b.add(Op::ScatterElements { axis: 2, reduction: ScatterReduction::None }, &[old, at, new])?;
                    b.g.set_state_output(&name, all);
                    updated.push(if window < cache.slots() { b.slice_axis(all, 2, 0, 1, window)? } else { all });
                }
                (updated[0], updated[1])
            }
            _ => (k, v),
        };
        let a = b.attention(q, k, v, &attention)?.output;
        let a = b.merge_heads(a)?;
        let o = linear(b, w, a, &format!("{p}.self_attn.o_proj"), hidden, c.num_heads * hd, c.o_bias)?;
        x = b.add2(x, o)?;
        let norm_w = weight(b, w, &format!("{p}.post_attention_layernorm.weight"), &[hidden])?;
        let h = b.rms_norm(x, Some(norm_w), &[2], c.rms_norm_eps)?;
        let gate = linear(b, w, h, &format!("{p}.mlp.gate_proj"), c.intermediate_size, hidden, c.mlp_bias)?;
        let up = linear(b, w, h, &format!("{p}.mlp.up_proj"), c.intermediate_size, hidden, c.mlp_bias)?;
        let gu = b.swiglu(gate, up, 1.0)?;
        let down = linear(b, w, gu, &format!("{p}.mlp.down_proj"), hidden, c.intermediate_size, c.mlp_bias)?;
        x = b.add2(x, down)?;
    }
    // A step needs the logits of its last valid token only: the head runs on that row.
    if let Some(last) = last {
        x = b.add(Op::Gather { axis: 1 }, &[x, last])?;
    }
    b.origin = "model.norm".into();
    let norm_w = weight(b, w, "model.norm.weight", &[hidden])?;
    let x = b.rms_norm(x, Some(norm_w), &[2], c.rms_norm_eps)?;
    b.origin = "lm_head".into();
    let head = if c.tie_word_embeddings && !w.contains("lm_head.weight") { "model.embed_tokens" } else { "lm_head" };
    let logits = linear(b, w, x, head, c.vocab_size, hidden, false)?;
    Ok(match what {
        DecoderGraph::Sequence { .. } => logits,
        DecoderGraph::Step { .. } => b.reshape(logits, &[1, c.vocab_size])?,
    })
}
