//! The `ai.onnx.preview.training` optimisers: Adagrad, Adam, Momentum (one update step).

use super::R;
use crate::onnx::{Importer, NodeCtx, Value};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, UnaryOp};
use odc_passes::Builder;

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

/// `r` and `t` as scalars of `dt`.
fn scalars(b: &mut Builder, r: NodeId, t: NodeId, dt: DType) -> Result<(NodeId, NodeId), FrontendError> {
    let r = b.reshape(r, &[])?;
    let r = b.cast(r, dt)?;
    let t = b.reshape(t, &[])?;
    let t = b.cast(t, dt)?;
    Ok((r, t))
}

fn groups(n: &NodeCtx, per: usize) -> Result<usize, FrontendError> {
    let k = n.num_inputs().saturating_sub(2);
    if k == 0 || k % per != 0 {
        return Err(inval(format!("{} expects R, T and groups of {per} tensors", n.op())));
    }
    Ok(k / per)
}

pub fn adagrad(imp: &mut Importer, n: &NodeCtx) -> R {
    let g = groups(n, 3)?;
    let decay = n.attr_f("decay_factor", 0.0) as f64;
    let eps = n.attr_f("epsilon", 0.0) as f64;
    let norm = n.attr_f("norm_coefficient", 0.0) as f64;
    let (mut xs, mut hs) = (vec![], vec![]);
    for i in 0..g {
        let (x, grad, h) = (n.input(2 + i)?, n.input(2 + g + i)?, n.input(2 + 2 * g + i)?);
        let b = &mut imp.b;
        let dt = b.dtype(x);
        let (r, t) = scalars(b, n.input(0)?, n.input(1)?, dt)?;
        // r / (1 + t * decay)
        let td = b.binary_c(BinaryOp::Mul, t, decay)?;
        let den = b.binary_c(BinaryOp::Add, td, 1.0)?;
        let r_ = b.div(r, den)?;
        let nx = b.binary_c(BinaryOp::Mul, x, norm)?;
        let gr = b.add2(nx, grad)?;
        let g2 = b.mul(gr, gr)?;
        let h_new = b.add2(h, g2)?;
        let hs_ = b.unary(UnaryOp::Sqrt, h_new)?;
        let hs_ = b.binary_c(BinaryOp::Add, hs_, eps)?;
        let step = b.mul(r_, gr)?;
        let step = b.div(step, hs_)?;
        xs.push(b.sub(x, step)?);
        hs.push(h_new);
    }
    Ok(xs.into_iter().chain(hs).map(Value::Tensor).collect())
}

pub fn adam(imp: &mut Importer, n: &NodeCtx) -> R {
    let g = groups(n, 4)?;
    let alpha = n.attr_f("alpha", 0.9) as f64;
    let beta = n.attr_f("beta", 0.999) as f64;
    let eps = n.attr_f("epsilon", 0.0) as f64;
    let norm = n.attr_f("norm_coefficient", 0.0) as f64;
    let post = n.attr_f("norm_coefficient_post", 0.0) as f64;
    let (mut xs, mut vs, mut hs) = (vec![], vec![], vec![]);
    for i in 0..g {
        let (x, grad) = (n.input(2 + i)?, n.input(2 + g + i)?);
        let (v, h) = (n.input(2 + 2 * g + i)?, n.input(2 + 3 * g + i)?);
        let b = &mut imp.b;
        let dt = b.dtype(x);
        let (r, t) = scalars(b, n.input(0)?, n.input(1)?, dt)?;
        let nx = b.binary_c(BinaryOp::Mul, x, norm)?;
        let gr = b.add2(nx, grad)?;
        let av = b.binary_c(BinaryOp::Mul, v, alpha)?;
        let ag = b.binary_c(BinaryOp::Mul, gr, 1.0 - alpha)?;
        let v_new = b.add2(av, ag)?;
        let bh = b.binary_c(BinaryOp::Mul, h, beta)?;
        let g2 = b.mul(gr, gr)?;
        let bg = b.binary_c(BinaryOp::Mul, g2, 1.0 - beta)?;
        let h_new = b.add2(bh, bg)?;
        let hsq = b.unary(UnaryOp::Sqrt, h_new)?;
        let hsq = b.binary_c(BinaryOp::Add, hsq, eps)?;
        // r * sqrt(1 - beta^t) / (1 - alpha^t) when t > 0, else r
        let be = b.scalar(dt, beta)?;
        let al = b.scalar(dt, alpha)?;
        let bt = b.binary(BinaryOp::Pow, be, t)?;
        let at = b.binary(BinaryOp::Pow, al, t)?;
        let one = b.scalar(dt, 1.0)?;
        let nb = b.sub(one, bt)?;
        let sb = b.unary(UnaryOp::Sqrt, nb)?;
        let na = b.sub(one, at)?;
        let ra = b.mul(r, sb)?;
        let ra = b.div(ra, na)?;
        let zero = b.scalar(dt, 0.0)?;
        let pos = b.binary(BinaryOp::Gt, t, zero)?;
        let r_adj = b.select(pos, ra, r)?;
        let q = b.div(v_new, hsq)?;
        let step = b.mul(r_adj, q)?;
        let x_new = b.sub(x, step)?;
        xs.push(b.binary_c(BinaryOp::Mul, x_new, 1.0 - post)?);
        vs.push(v_new);
        hs.push(h_new);
    }
    Ok(xs.into_iter().chain(vs).chain(hs).map(Value::Tensor).collect())
}

pub fn momentum(imp: &mut Importer, n: &NodeCtx) -> R {
    let g = groups(n, 3)?;
    let alpha = n.attr_f("alpha", 0.0) as f64;
    let beta = n.attr_f("beta", 0.0) as f64;
    let norm = n.attr_f("norm_coefficient", 0.0) as f64;
    let nesterov = match n.attr_s("mode", "standard").as_str() {
        "standard" => false,
        "nesterov" => true,
        m => return Err(inval(format!("Momentum mode must be standard or nesterov, got '{m}'"))),
    };
    let (mut xs, mut vs) = (vec![], vec![]);
    for i in 0..g {
        let (x, grad, v) = (n.input(2 + i)?, n.input(2 + g + i)?, n.input(2 + 2 * g + i)?);
        let b = &mut imp.b;
        let dt = b.dtype(x);
        let (r, t) = scalars(b, n.input(0)?, n.input(1)?, dt)?;
        let nx = b.binary_c(BinaryOp::Mul, x, norm)?;
        let gr = b.add2(nx, grad)?;
        let zero = b.scalar(dt, 0.0)?;
        let pos = b.binary(BinaryOp::Gt, t, zero)?;
        let bc = b.scalar(dt, beta)?;
        let one = b.scalar(dt, 1.0)?;
        let badj = b.select(pos, bc, one)?;
        let av = b.binary_c(BinaryOp::Mul, v, alpha)?;
        let bg = b.mul(badj, gr)?;
        let v_new = b.add2(av, bg)?;
        let dir = if nesterov {
            let av2 = b.binary_c(BinaryOp::Mul, v_new, alpha)?;
            b.add2(gr, av2)?
        } else {
            v_new
        };
        let step = b.mul(r, dir)?;
        xs.push(b.sub(x, step)?);
        vs.push(v_new);
    }
    Ok(xs.into_iter().chain(vs).map(Value::Tensor).collect())
}
