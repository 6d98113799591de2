//! Convolution and pooling geometry: kernel, strides, dilations, explicit or `auto_pad`
//! padding, and the convolution with its padding and channel bias.

use crate::build::{Builder, Result};
use odc_ir::{Conv, IrError, NodeId, Op, Scalar};

/// How padding is derived from the input extent (ONNX `auto_pad`, TensorFlow's `SAME`/`VALID`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoPad {
    /// The explicit pads are used.
    #[default]
    NotSet,
    /// Output extent `ceil(input / stride)`, the odd pixel of padding at the end.
    SameUpper,
    /// As `SameUpper` with the odd pixel at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    /// Parse the ONNX spelling (`NOTSET`, `SAME_UPPER`, `SAME_LOWER`, `VALID`; empty is `NOTSET`).
    pub fn parse(s: &str) -> Result<AutoPad> {
        Ok(match s {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => return Err(IrError::new(format!("unknown auto_pad '{other}'"))),
        })
    }

    pub fn is_same(self) -> bool {
        matches!(self, AutoPad::SameUpper | AutoPad::SameLower)
    }
}

/// The spatial geometry of a convolution or pooling window, one entry per spatial axis.
#[derive(Clone, Debug)]
pub struct ConvGeometry {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<i64>,
    pub pads_end: Vec<i64>,
    pub auto_pad: AutoPad,
}

impl ConvGeometry {
    /// Unit strides and dilations, no padding.
    pub fn new(kernel: Vec<usize>) -> Self {
        let sp = kernel.len();
        ConvGeometry { kernel, strides: vec![1; sp], dilations: vec![1; sp], pads_begin: vec![0; sp], pads_end: vec![0; sp], auto_pad: AutoPad::NotSet }
    }

    /// The window's extent on axis `i`: `(kernel - 1) * dilation + 1`.
    pub fn span(&self, i: usize) -> usize {
        (self.kernel[i] - 1) * self.dilations[i] + 1
    }

    /// Turn `auto_pad` into explicit pads for spatial extents `input`.
    pub fn resolve_auto_pad(&mut self, input: &[usize]) {
        match self.auto_pad {
            AutoPad::NotSet => {}
            AutoPad::Valid => {
                self.pads_begin.iter_mut().for_each(|p| *p = 0);
                self.pads_end.iter_mut().for_each(|p| *p = 0);
            }
            AutoPad::SameUpper | AutoPad::SameLower => {
                for (i, &extent) in input.iter().enumerate() {
                    let out = extent.div_ceil(self.strides[i]);
                    let total = ((out - 1) * self.strides[i] + self.span(i)).saturating_sub(extent) as i64;
                    let small = total / 2;
                    let (b, e) = if self.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
                    self.pads_begin[i] = b;
                    self.pads_end[i] = e;
                }
            }
        }
    }
}

impl Builder<'_> {
    /// Pad the spatial axes of `x: [N, C, spatial..]` with `value`.
    pub fn pad_spatial(&mut self, x: NodeId, begin: &[i64], end: &[i64], value: Scalar) -> Result<NodeId> {
        let mut low = vec![0, 0];
        low.extend_from_slice(begin);
        let mut high = vec![0, 0];
        high.extend_from_slice(end);
        self.pad_const(x, &low, &high, value)
    }

    /// `y + bias` with a per-channel `[C]` bias against `y: [N, C, spatial..]`.
    pub fn channel_bias(&mut self, y: NodeId, bias: Option<NodeId>) -> Result<NodeId> {
        let Some(bias) = bias else { return Ok(y) };
        let b = self.per_channel(bias, self.rank(y))?;
        self.add2(y, b)
    }

    /// Convolution of `x: [N, C, spatial..]` with `w: [M, C / groups, kernel..]` under `geometry`
    /// (auto_pad resolved here), zero padding materialised as a pad the lowering reads inline.
    pub fn conv(&mut self, x: NodeId, w: NodeId, geometry: &ConvGeometry, groups: usize) -> Result<NodeId> {
        let (xs, ws) = (self.shape(x), self.shape(w));
        if xs.len() < 3 || ws.len() != xs.len() || ws[2..] != geometry.kernel[..] {
            return Err(IrError::new(format!("convolution needs X [N, C, ...] and W [M, C/groups, kernel...] of the same rank, got {xs:?} and {ws:?}")));
        }
        let mut g = geometry.clone();
        g.resolve_auto_pad(&xs[2..]);
        let zero = if self.dtype(x).is_float() { Scalar::F64(0.0) } else { Scalar::I64(0) };
        let xp = self.pad_spatial(x, &g.pads_begin, &g.pads_end, zero)?;
        self.add(Op::Conv(Conv { strides: g.strides, dilations: g.dilations, groups }), &[xp, w])
    }
}
