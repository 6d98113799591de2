//! Scaled-dot-product attention over `[B, H, S, D]` heads: additive masks, causal and padding
//! masks built from indices, grouped-query attention (each key/value head serves a group of
//! query heads, read once rather than repeated), softcapping, softmax precision and the handling
//! of fully masked rows.

use crate::build::{Builder, Result};
use odc_ir::{BinaryOp, DType, IrError, NodeId, ReduceOp, UnaryOp};

/// What a row of scores that every key masks out (all `-inf`) turns into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FullyMaskedRows {
    /// Plain softmax: the row becomes NaN. Right when a row can never be fully masked (a causal
    /// mask always lets a query see itself) and cheapest.
    #[default]
    Propagate,
    /// The row's probabilities become zeros, so its output is zero (the ONNX `Attention` rule).
    Zero,
}

/// How [`Builder::attention`] combines its operands.
#[derive(Clone, Debug)]
pub struct AttentionOptions {
    /// Multiplies `q k^T`; usually `1 / sqrt(head_dim)`.
    pub scale: f64,
    /// Added to the scaled (and softcapped) scores; broadcast to `[B, H, S_q, S_kv]`.
    pub bias: Option<NodeId>,
    /// `c * tanh(scores / c)` before the bias when set and positive.
    pub softcap: Option<f64>,
    /// The dtype the softmax is computed in (the scores' dtype when `None`).
    pub softmax_dtype: Option<DType>,
    pub fully_masked_rows: FullyMaskedRows,
}

impl AttentionOptions {
    /// Scale `1 / sqrt(head_dim)`, no bias.
    pub fn for_head_dim(head_dim: usize) -> Self {
        AttentionOptions { scale: 1.0 / (head_dim as f64).sqrt(), bias: None, softcap: None, softmax_dtype: None, fully_masked_rows: FullyMaskedRows::Propagate }
    }

    pub fn with_bias(mut self, bias: NodeId) -> Self {
        self.bias = Some(bias);
        self
    }
}

/// The attention output and its intermediates (ONNX exposes them as optional outputs).
pub struct AttentionOutputs {
    /// `probs v`: `[B, H, S_q, D_v]`.
    pub output: NodeId,
    /// `q k^T * scale` (softcapped when asked): `[B, H, S_q, S_kv]`.
    pub scores: NodeId,
    /// The scores with the bias added.
    pub biased_scores: NodeId,
    /// The softmax of the biased scores, in the dtype of `v`.
    pub probs: NodeId,
}

impl Builder<'_> {
    /// `[B, S, H*D] → [B, H, S, D]`.
    pub fn split_heads(&mut self, x: NodeId, heads: usize) -> Result<NodeId> {
        let s = self.shape(x);
        if s.len() != 3 || heads == 0 || s[2] % heads != 0 {
            return Err(IrError::new(format!("cannot split {s:?} into {heads} heads: the hidden size must be divisible by the head count")));
        }
        let r = self.reshape(x, &[s[0], s[1], heads, s[2] / heads])?;
        self.transpose(r, &[0, 2, 1, 3])
    }

    /// `[B, H, S, D] → [B, S, H*D]`.
    pub fn merge_heads(&mut self, x: NodeId) -> Result<NodeId> {
        let s = self.shape(x);
        if s.len() != 4 {
            return Err(IrError::new(format!("merge_heads needs [B, H, S, D], got {s:?}")));
        }
        let t = self.transpose(x, &[0, 2, 1, 3])?;
        self.reshape(t, &[s[0], s[2], s[1] * s[3]])
    }

    /// Repeat each head `reps` times along axis 1 (`np.repeat`): key/value heads for the query
    /// heads they serve, where a consumer needs them materialised (linear attention's state).
    pub fn repeat_heads(&mut self, x: NodeId, reps: usize) -> Result<NodeId> {
        if reps == 1 {
            return Ok(x);
        }
        let s = self.shape(x);
        let u = self.reshape(x, &[s[0], s[1], 1, s[2], s[3]])?;
        let e = self.expand(u, &[s[0], s[1], reps, s[2], s[3]])?;
        self.reshape(e, &[s[0], s[1] * reps, s[2], s[3]])
    }

    /// An additive mask from a boolean one: 0 where `allowed`, `-inf` elsewhere, in `dt`.
    pub fn bias_from_mask(&mut self, allowed: NodeId, dt: DType) -> Result<NodeId> {
        let z = self.scalar(dt, 0.0)?;
        let ninf = self.scalar(dt, f64::NEG_INFINITY)?;
        self.select(allowed, z, ninf)
    }

    /// The causal rule as a boolean `[S_q, S_kv]` (or broadcast against `offset`'s shape): key `j`
    /// is visible to query `i` when `j <= i + offset`. `offset` is the number of keys before the
    /// first query: a constant (`past`) or a tensor (per-batch cache lengths).
    pub fn causal_allowed(&mut self, q_len: usize, kv_len: usize, offset: CausalOffset) -> Result<NodeId> {
        let i = self.iota(DType::I64, &[q_len, kv_len], 0)?;
        let j = self.iota(DType::I64, &[q_len, kv_len], 1)?;
        let frontier = match offset {
            CausalOffset::Fixed(0) => i,
            CausalOffset::Fixed(p) => self.binary_c(BinaryOp::Add, i, p as f64)?,
            CausalOffset::Tensor(o) => self.add2(i, o)?,
        };
        self.binary(BinaryOp::Le, j, frontier)
    }

    /// Scaled-dot-product attention of `q: [B, H, S_q, D]` against `k: [B, KV, S_kv, D]` and
    /// `v: [B, KV, S_kv, D_v]`, with `KV` dividing `H` (grouped-query attention: query head `h` reads
    /// key/value head `h / (H / KV)`).
    pub fn attention(&mut self, q: NodeId, k: NodeId, v: NodeId, o: &AttentionOptions) -> Result<AttentionOutputs> {
        let (qs, ks, vs) = (self.shape(q), self.shape(k), self.shape(v));
        if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
            return Err(IrError::new(format!("attention needs 4-D [B, H, S, D] operands, got {qs:?}, {ks:?}, {vs:?}")));
        }
        let (batch, heads, q_len, d) = (qs[0], qs[1], qs[2], qs[3]);
        let (kv_heads, kv_len) = (ks[1], ks[2]);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(IrError::new(format!("{heads} query heads are not a multiple of {kv_heads} key/value heads")));
        }
        if ks[3] != d || vs[1] != kv_heads || vs[2] != kv_len {
            return Err(IrError::new(format!("attention operands disagree: q {qs:?}, k {ks:?}, v {vs:?}")));
        }
        let group = heads / kv_heads;
        // Queries grouped under their K/V head: [B, KV, G*S_q, D] against [B, KV, S_kv, D].
        let qg = self.reshape(q, &[batch, kv_heads, group * q_len, d])?;
        let kt = self.transpose(k, &[0, 1, 3, 2])?;
        let raw = self.matmul(qg, kt)?;
        let raw = self.binary_c(BinaryOp::Mul, raw, o.scale)?;
        let mut scores = self.reshape(raw, &[batch, heads, q_len, kv_len])?;
        if let Some(c) = o.softcap.filter(|&c| c > 0.0) {
            let t = self.binary_c(BinaryOp::Div, scores, c)?;
            let t = self.unary(UnaryOp::Tanh, t)?;
            scores = self.binary_c(BinaryOp::Mul, t, c)?;
        }
        let biased = match o.bias {
            Some(bias) => self.add2(scores, bias)?,
            None => scores,
        };
        let sm_in = match o.softmax_dtype {
            Some(t) => self.cast(biased, t)?,
            None => biased,
        };
        let probs = match o.fully_masked_rows {
            FullyMaskedRows::Propagate => self.softmax(sm_in, &[3])?,
            FullyMaskedRows::Zero => self.softmax_zeroing_masked_rows(sm_in, o.bias)?,
        };
        let probs = self.cast(probs, self.dtype(v))?;
        let pg = self.reshape(probs, &[batch, kv_heads, group * q_len, kv_len])?;
        let out = self.matmul(pg, v)?;
        let output = self.reshape(out, &[batch, heads, q_len, vs[3]])?;
        Ok(AttentionOutputs { output, scores, biased_scores: biased, probs })
    }

    /// Softmax over the last axis where a row whose maximum is `-inf` (or, when `bias` is given,
    /// whose bias row is all `-inf`) gives zeros instead of NaN.
    fn softmax_zeroing_masked_rows(&mut self, x: NodeId, bias: Option<NodeId>) -> Result<NodeId> {
        let dt = self.dtype(x);
        let last = self.rank(x) - 1;
        let m = self.reduce(ReduceOp::Max, x, &[last], true)?;
        let masked = self.unary(UnaryOp::IsNegInf, m)?;
        let z = self.scalar(dt, 0.0)?;
        let safe = self.select(masked, z, m)?;
        let d = self.sub(x, safe)?;
        let e = self.unary(UnaryOp::Exp, d)?;
        let s = self.reduce(ReduceOp::Sum, e, &[last], true)?;
        let s0 = self.binary(BinaryOp::Eq, s, z)?;
        let one = self.scalar(dt, 1.0)?;
        let s = self.select(s0, one, s)?;
        let probs = self.div(e, s)?;
        let Some(bias) = bias else { return Ok(probs) };
        let br = self.rank(bias);
        let bias_max = self.reduce(ReduceOp::Max, bias, &[br - 1], true)?;
        let row_masked = self.unary(UnaryOp::IsNegInf, bias_max)?;
        self.select(row_masked, z, probs)
    }
}

/// Where the causal frontier of [`Builder::causal_allowed`] starts.
#[derive(Clone, Copy, Debug)]
pub enum CausalOffset {
    /// A compile-time number of earlier keys.
    Fixed(usize),
    /// A run-time `i64` tensor broadcastable against `[S_q, S_kv]`.
    Tensor(NodeId),
}
