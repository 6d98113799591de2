//! Normalisations: standardisation over axes, layer/RMS/group/instance/batch norm and the
//! per-channel affine map they share.

use crate::build::{Builder, Result};
use odc_ir::{BinaryOp, IrError, NodeId, UnaryOp};

impl Builder<'_> {
    /// `(x - mean) / sqrt(var + eps)` over `axes` (population variance).
    pub fn normalize(&mut self, x: NodeId, axes: &[usize], eps: f64) -> Result<NodeId> {
        let mean = self.mean(x, axes)?;
        let d = self.sub(x, mean)?;
        let sq = self.mul(d, d)?;
        let var = self.mean(sq, axes)?;
        let ve = self.binary_c(BinaryOp::Add, var, eps)?;
        let sd = self.unary(UnaryOp::Sqrt, ve)?;
        self.div(d, sd)
    }

    /// Layer normalisation over the trailing axes from `axis`, with optional affine parameters
    /// broadcast against the normalised shape.
    pub fn layer_norm(&mut self, x: NodeId, scale: Option<NodeId>, bias: Option<NodeId>, axis: usize, eps: f64) -> Result<NodeId> {
        let axes: Vec<usize> = (axis..self.rank(x)).collect();
        let mut y = self.normalize(x, &axes, eps)?;
        if let Some(s) = scale {
            y = self.mul(y, s)?;
        }
        if let Some(b) = bias {
            y = self.add2(y, b)?;
        }
        Ok(y)
    }

    /// `x / sqrt(mean(x^2) + eps) * scale` over `axes`.
    pub fn rms_norm(&mut self, x: NodeId, scale: Option<NodeId>, axes: &[usize], eps: f64) -> Result<NodeId> {
        let sq = self.mul(x, x)?;
        let ms = self.mean(sq, axes)?;
        let ve = self.binary_c(BinaryOp::Add, ms, eps)?;
        let r = self.unary(UnaryOp::Sqrt, ve)?;
        let y = self.div(x, r)?;
        match scale {
            Some(s) => self.mul(y, s),
            None => Ok(y),
        }
    }

    /// [`Builder::normalize`] that also returns the statistics: `(y, mean, 1 / sqrt(var + eps))`,
    /// computed with a reciprocal (the form ONNX LayerNormalization's extra outputs expose).
    pub fn normalize_with_stats(&mut self, x: NodeId, axes: &[usize], eps: f64) -> Result<(NodeId, NodeId, NodeId)> {
        let mean = self.mean(x, axes)?;
        let d = self.sub(x, mean)?;
        let sq = self.mul(d, d)?;
        let var = self.mean(sq, axes)?;
        let ve = self.binary_c(BinaryOp::Add, var, eps)?;
        let sd = self.unary(UnaryOp::Sqrt, ve)?;
        let inv = self.unary(UnaryOp::Recip, sd)?;
        let y = self.mul(d, inv)?;
        Ok((y, mean, inv))
    }

    /// Reshape a per-channel parameter `[C]` to broadcast against `[N, C, spatial..]` of `rank`.
    pub fn per_channel(&mut self, p: NodeId, rank: usize) -> Result<NodeId> {
        let c = self.ty(p).num_elements();
        let mut shape = vec![c];
        shape.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
        self.reshape(p, &shape)
    }

    /// `x * scale + bias` with per-channel `[C]` parameters against `x: [N, C, spatial..]`.
    pub fn channel_affine(&mut self, x: NodeId, scale: NodeId, bias: NodeId) -> Result<NodeId> {
        let r = self.rank(x);
        let s = self.per_channel(scale, r)?;
        let b = self.per_channel(bias, r)?;
        let y = self.mul(x, s)?;
        self.add2(y, b)
    }

    /// Group normalisation without the affine map: `x: [N, C, spatial..]` standardised over each of
    /// `groups` groups of `C / groups` channels and all spatial positions.
    pub fn group_norm(&mut self, x: NodeId, groups: usize, eps: f64) -> Result<NodeId> {
        let shape = self.shape(x);
        if shape.len() < 2 || groups == 0 || shape[1] % groups != 0 {
            return Err(IrError::new(format!("group normalisation: {groups} groups do not divide the channels of {shape:?}")));
        }
        let rest: usize = shape[2..].iter().product::<usize>() * (shape[1] / groups);
        let xg = self.reshape(x, &[shape[0], groups, rest])?;
        let y = self.normalize(xg, &[2], eps)?;
        self.reshape(y, &shape)
    }

    /// Instance normalisation: each channel of each sample standardised over its spatial axes,
    /// then the per-channel affine map.
    pub fn instance_norm(&mut self, x: NodeId, scale: NodeId, bias: NodeId, eps: f64) -> Result<NodeId> {
        let axes: Vec<usize> = (2..self.rank(x)).collect();
        let y = self.normalize(x, &axes, eps)?;
        self.channel_affine(y, scale, bias)
    }

    /// Batch normalisation with given statistics: `(x - mean) / sqrt(var + eps) * scale + bias`;
    /// `mean` and `var` broadcast against `x` (see [`Builder::per_channel`]), `scale` and `bias`
    /// are `[C]`.
    pub fn batch_norm(&mut self, x: NodeId, scale: NodeId, bias: NodeId, mean: NodeId, var: NodeId, eps: f64) -> Result<NodeId> {
        let ve = self.binary_c(BinaryOp::Add, var, eps)?;
        let sd = self.unary(UnaryOp::Sqrt, ve)?;
        let d = self.sub(x, mean)?;
        let y = self.div(d, sd)?;
        self.channel_affine(y, scale, bias)
    }
}
