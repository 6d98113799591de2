//! Neural-network operators as compositions of primitives.
//!
//! Framework-neutral: the ONNX importer and the checkpoint builders both call these. Each is the
//! textbook definition written with [`Builder`] primitives; fusion puts them back together.

use crate::build::{Builder, Result};
use odc_ir::{BinaryOp, NodeId, ReduceOp, UnaryOp};

impl Builder<'_> {
    /// Numerically stable softmax over `axes` (usually one axis).
    pub fn softmax(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId> {
        let m = self.reduce(ReduceOp::Max, x, axes, true)?;
        let d = self.sub(x, m)?;
        let e = self.unary(UnaryOp::Exp, d)?;
        let s = self.reduce(ReduceOp::Sum, e, axes, true)?;
        self.div(e, s)
    }

    /// `x - max - log(sum(exp(x - max)))`.
    pub fn log_softmax(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId> {
        let m = self.reduce(ReduceOp::Max, x, axes, true)?;
        let d = self.sub(x, m)?;
        let e = self.unary(UnaryOp::Exp, d)?;
        let s = self.reduce(ReduceOp::Sum, e, axes, true)?;
        let l = self.unary(UnaryOp::Log, s)?;
        self.sub(d, l)
    }

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

    /// `1 / (1 + exp(-x))`.
    pub fn sigmoid(&mut self, x: NodeId) -> Result<NodeId> {
        let n = self.unary(UnaryOp::Neg, x)?;
        let e = self.unary(UnaryOp::Exp, n)?;
        let d = self.binary_c(BinaryOp::Add, e, 1.0)?;
        let one = self.scalar(self.dtype(x), 1.0)?;
        self.div(one, d)
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, x: NodeId) -> Result<NodeId> {
        let z = self.scalar(self.dtype(x), 0.0)?;
        self.max(x, z)
    }

    /// GELU, exact (`erf`) or with the tanh approximation.
    pub fn gelu(&mut self, x: NodeId, tanh_approx: bool) -> Result<NodeId> {
        let inner = if tanh_approx {
            // tanh(sqrt(2/pi) * (x + 0.044715 x^3))
            let x2 = self.mul(x, x)?;
            let x3 = self.mul(x2, x)?;
            let c = self.binary_c(BinaryOp::Mul, x3, 0.044715)?;
            let s = self.add2(x, c)?;
            let k = self.binary_c(BinaryOp::Mul, s, (2.0 / std::f64::consts::PI).sqrt())?;
            self.unary(UnaryOp::Tanh, k)?
        } else {
            let k = self.binary_c(BinaryOp::Mul, x, std::f64::consts::FRAC_1_SQRT_2)?;
            self.unary(UnaryOp::Erf, k)?
        };
        let one_plus = self.binary_c(BinaryOp::Add, inner, 1.0)?;
        let h = self.binary_c(BinaryOp::Mul, x, 0.5)?;
        self.mul(h, one_plus)
    }

    /// `x * sigmoid(alpha * x)`.
    pub fn swish(&mut self, x: NodeId, alpha: f64) -> Result<NodeId> {
        let ax = if alpha == 1.0 { x } else { self.binary_c(BinaryOp::Mul, x, alpha)? };
        let s = self.sigmoid(ax)?;
        self.mul(x, s)
    }
}
