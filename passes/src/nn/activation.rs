//! Activations and softmax.

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

    /// `alpha * x` where `x < 0`, else `x`.
    pub fn leaky_relu(&mut self, x: NodeId, alpha: f64) -> Result<NodeId> {
        let ax = self.binary_c(BinaryOp::Mul, x, alpha)?;
        let z = self.scalar(self.dtype(x), 0.0)?;
        let pos = self.binary(BinaryOp::Ge, x, z)?;
        self.select(pos, x, ax)
    }

    /// `x * slope` where `x < 0`, else `x` (`slope` broadcasts against `x`).
    pub fn prelu(&mut self, x: NodeId, slope: NodeId) -> Result<NodeId> {
        let ax = self.mul(x, slope)?;
        let z = self.scalar(self.dtype(x), 0.0)?;
        let pos = self.binary(BinaryOp::Ge, x, z)?;
        self.select(pos, x, ax)
    }

    /// The exponential-linear family: `gamma * (x > 0 ? x : alpha * (exp(x / k) - 1))` with
    /// `k = alpha` for CELU (`continuous`) and 1 otherwise; ELU has `gamma = 1`, SELU its constants.
    pub fn elu(&mut self, x: NodeId, alpha: f64, gamma: f64, continuous: bool) -> Result<NodeId> {
        let xs = if continuous { self.binary_c(BinaryOp::Div, x, alpha)? } else { x };
        let e = self.unary(UnaryOp::Exp, xs)?;
        let em1 = self.binary_c(BinaryOp::Sub, e, 1.0)?;
        let neg = self.binary_c(BinaryOp::Mul, em1, alpha)?;
        let z = self.scalar(self.dtype(x), 0.0)?;
        let pos = self.binary(BinaryOp::Gt, x, z)?;
        let y = self.select(pos, x, neg)?;
        if gamma != 1.0 {
            self.binary_c(BinaryOp::Mul, y, gamma)
        } else {
            Ok(y)
        }
    }

    /// `clamp(alpha * x + beta, 0, 1)`.
    pub fn hard_sigmoid(&mut self, x: NodeId, alpha: f64, beta: f64) -> Result<NodeId> {
        let ax = self.binary_c(BinaryOp::Mul, x, alpha)?;
        let axb = self.binary_c(BinaryOp::Add, ax, beta)?;
        let z = self.scalar(self.dtype(x), 0.0)?;
        let o = self.scalar(self.dtype(x), 1.0)?;
        let lo = self.max(axb, z)?;
        self.min(lo, o)
    }

    /// `x * hard_sigmoid(x)` with alpha 1/6, beta 1/2.
    pub fn hard_swish(&mut self, x: NodeId) -> Result<NodeId> {
        let hs = self.hard_sigmoid(x, 1.0 / 6.0, 0.5)?;
        self.mul(x, hs)
    }

    /// `log(1 + exp(x))`, computed as `max(x, 0) + log(1 + exp(-|x|))` so it cannot overflow.
    pub fn softplus(&mut self, x: NodeId) -> Result<NodeId> {
        let a = self.unary(UnaryOp::Abs, x)?;
        let na = self.unary(UnaryOp::Neg, a)?;
        let e = self.unary(UnaryOp::Exp, na)?;
        let e1 = self.binary_c(BinaryOp::Add, e, 1.0)?;
        let l = self.unary(UnaryOp::Log, e1)?;
        let r = self.relu(x)?;
        self.add2(r, l)
    }

    /// `x / (1 + |x|)`.
    pub fn softsign(&mut self, x: NodeId) -> Result<NodeId> {
        let a = self.unary(UnaryOp::Abs, x)?;
        let d = self.binary_c(BinaryOp::Add, a, 1.0)?;
        self.div(x, d)
    }

    /// `x * tanh(softplus(x))`.
    pub fn mish(&mut self, x: NodeId) -> Result<NodeId> {
        let sp = self.softplus(x)?;
        let t = self.unary(UnaryOp::Tanh, sp)?;
        self.mul(x, t)
    }

    /// `x` where `x > alpha`, else 0.
    pub fn thresholded_relu(&mut self, x: NodeId, alpha: f64) -> Result<NodeId> {
        let a = self.scalar(self.dtype(x), alpha)?;
        let gt = self.binary(BinaryOp::Gt, x, a)?;
        let z = self.scalar(self.dtype(x), 0.0)?;
        self.select(gt, x, z)
    }

    /// Soft shrinkage: `x + bias` below `-lambd`, `x - bias` above `lambd`, 0 between.
    pub fn shrink(&mut self, x: NodeId, lambd: f64, bias: f64) -> Result<NodeId> {
        let dt = self.dtype(x);
        let lo = self.scalar(dt, -lambd)?;
        let hi = self.scalar(dt, lambd)?;
        let below = self.binary(BinaryOp::Lt, x, lo)?;
        let above = self.binary(BinaryOp::Gt, x, hi)?;
        let xp = self.binary_c(BinaryOp::Add, x, bias)?;
        let xm = self.binary_c(BinaryOp::Sub, x, bias)?;
        let z = self.scalar(dt, 0.0)?;
        let r = self.select(above, xm, z)?;
        self.select(below, xp, r)
    }

    /// The gated linear unit of SwiGLU MLPs: `swish(gate, alpha) * up`.
    pub fn swiglu(&mut self, gate: NodeId, up: NodeId, alpha: f64) -> Result<NodeId> {
        let s = self.swish(gate, alpha)?;
        self.mul(s, up)
    }
}
