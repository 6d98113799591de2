//! NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

use super::{many, one, R};
use crate::onnx::{Importer, NodeCtx};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, ReduceOp, UnaryOp};
use odc_passes::Builder;

/// The NLL of log-probabilities `x` [N, C, d..] for integer `target` [N, d..].
fn nll(b: &mut Builder, n: &NodeCtx, x: NodeId, target: NodeId, weight: Option<NodeId>) -> Result<NodeId, FrontendError> {
    let dt = b.dtype(x);
    let reduction = n.attr_s("reduction", "mean");
    let ignore = if n.has_attr("ignore_index") { Some(n.attr_i("ignore_index", 0)) } else { None };
    let t = b.cast(target, DType::I64)?;
    // Ignored positions gather index 0 (any valid class) and are zeroed afterwards.
    let (tsafe, keep) = match ignore {
        Some(i) => {
            let ic = b.scalar(DType::I64, i as f64)?;
            let is_ign = b.binary(BinaryOp::Eq, t, ic)?;
            let z = b.scalar(DType::I64, 0.0)?;
            (b.select(is_ign, z, t)?, Some(b.not(is_ign)?))
        }
        None => (t, None),
    };
    let tu = b.unsqueeze(tsafe, &[1])?;
    let picked = b.add(Op::GatherElements { axis: 1 }, &[x, tu])?;
    let picked = b.squeeze(picked, &[1])?;
    let mut loss = b.unary(UnaryOp::Neg, picked)?;
    let zero = b.scalar(dt, 0.0)?;
    if let Some(k) = keep {
        loss = b.select(k, loss, zero)?;
    }
    // Per-element weights (the reference uses them for "mean" whenever weights or an ignore index exist).
    let w: Option<NodeId> = match weight {
        Some(wt) => {
            let wg = b.add(Op::Gather { axis: 0 }, &[wt, tsafe])?;
            Some(match keep {
                Some(k) => b.select(k, wg, zero)?,
                None => wg,
            })
        }
        None if ignore.is_some_and(|i| i != -1) => {
            let k = keep.expect("ignore index set");
            Some(b.cast(k, dt)?)
        }
        None => None,
    };
    if let (Some(wv), Some(_)) = (w, weight) {
        loss = b.mul(loss, wv)?;
    }
    let all: Vec<usize> = (0..b.rank(loss)).collect();
    Ok(match reduction.as_str() {
        "none" => loss,
        "sum" => b.reduce(ReduceOp::Sum, loss, &all, false)?,
        "mean" => {
            let s = b.reduce(ReduceOp::Sum, loss, &all, false)?;
            match w {
                Some(wv) => {
                    let ws = b.reduce(ReduceOp::Sum, wv, &all, false)?;
                    b.div(s, ws)?
                }
                None => {
                    let count = b.ty(loss).num_elements();
                    b.binary_c(BinaryOp::Div, s, count as f64)?
                }
            }
        }
        r => return n.unsupported(format!("loss reduction '{r}'")),
    })
}

pub fn negative_log_likelihood_loss(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, t) = (n.input(0)?, n.input(1)?);
    let w = n.opt_input(2);
    one(nll(&mut imp.b, n, x, t, w)?)
}

pub fn softmax_cross_entropy_loss(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, t) = (n.input(0)?, n.input(1)?);
    let w = n.opt_input(2);
    let b = &mut imp.b;
    let lp = b.log_softmax(x, &[1])?;
    let loss = nll(b, n, lp, t, w)?;
    many(vec![loss, lp])
}
