//! Layout and weight rewrites: transposes sink below elementwise ops (where they meet and cancel,
//! or end up read once by a contraction), and per-channel affine maps fold into contraction
//! weights. A decomposed BatchNormalization after a convolution, `((conv - mean) * s) + beta`,
//! becomes `conv' + beta'` in three steps: [`simplify::SubtractConstant`](super::simplify),
//! [`ScaleOverBias`] and [`ScaleIntoWeights`]; the remaining bias add is a GEMM epilogue.

use super::consts;
use super::lang::{ONode, OGraph};
use super::rule::{const_of, find_prim, ty_of, Context, NodeRule, Term, TermNode};
use egg::Id;
use odc_ir::{BinaryOp, DType, Op, Tensor};

fn is_op(op: &Op, b: BinaryOp) -> bool {
    matches!(op, Op::Binary(x) if *x == b)
}

/// `f(transpose(x, p)) → transpose(f(x), p)` for unary ops and casts, and
/// `g(transpose(x, p), transpose(y, p)) → transpose(g(x, y), p)` for binary ops on equal shapes
/// (or with a scalar constant operand).
pub struct TransposeSinking;

impl NodeRule for TransposeSinking {
    fn name(&self) -> &'static str {
        "transpose-sinking"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, _class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        let op = eg.analysis.op(*op).clone();
        let transposed = |c: Id| find_prim(eg, c, |o| matches!(o, Op::Transpose { .. })).map(|(o, a)| (o.clone(), a[0]));
        let scalar = |c: Id| const_of(eg, c).is_some_and(|t| t.num_elements() == 1);
        let mut t = Term::default();
        let perm = match (&op, args.as_slice()) {
            (Op::Unary(_) | Op::Cast { .. }, &[a]) => {
                let Some((Op::Transpose { perm }, x)) = transposed(a) else { return vec![] };
                let x = t.class(x);
                t.prim(op.clone(), vec![x]);
                perm
            }
            (Op::Binary(_), &[a, b]) => match (transposed(a), transposed(b)) {
                (Some((Op::Transpose { perm: p }, x)), Some((Op::Transpose { perm: q }, y))) if p == q && ty_of(eg, x).shape == ty_of(eg, y).shape => {
                    let (x, y) = (t.class(x), t.class(y));
                    t.prim(op.clone(), vec![x, y]);
                    p
                }
                (Some((Op::Transpose { perm }, x)), None) if scalar(b) && ty_of(eg, b).rank() == 0 => {
                    let (x, y) = (t.class(x), t.class(b));
                    t.prim(op.clone(), vec![x, y]);
                    perm
                }
                (None, Some((Op::Transpose { perm }, y))) if scalar(a) && ty_of(eg, a).rank() == 0 => {
                    let (x, y) = (t.class(a), t.class(y));
                    t.prim(op.clone(), vec![x, y]);
                    perm
                }
                _ => return vec![],
            },
            _ => return vec![],
        };
        let inner = t.nodes.len() - 1;
        t.prim(Op::Transpose { perm }, vec![inner]);
        vec![t]
    }
}

/// The output-channel axis of a contraction class node with f32 constant weights.
fn weight_channel_axis(eg: &OGraph, op: &Op, args: &[Id], out_rank: usize) -> Option<usize> {
    let w = const_of(eg, args[1])?;
    if w.dtype != DType::F32 {
        return None;
    }
    match op {
        Op::Conv(_) => Some(1),
        Op::MatMul if w.shape.len() == 2 && out_rank >= 2 => Some(out_rank - 1),
        _ => None,
    }
}

/// Per-channel values of constant class `k` (see [`crate::affine::channel_values`]).
fn channel_values(eg: &OGraph, k: Id, shape: &[usize], axis: usize) -> Option<Vec<f32>> {
    crate::affine::channel_values(const_of(eg, k)?, shape, axis)
}

/// `contraction(x, W) * s → contraction(x, W * s)` when `s` is constant per output channel.
/// Each contraction is scaled at most once: the chains that reach it are all equal, and every
/// new copy of the weights costs compile time and memory.
#[derive(Default)]
pub struct ScaleIntoWeights {
    scaled: std::sync::Mutex<std::collections::HashSet<Id>>,
}

impl NodeRule for ScaleIntoWeights {
    fn name(&self) -> &'static str {
        "scale-into-weights"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        if !is_op(eg.analysis.op(*op), BinaryOp::Mul) {
            return vec![];
        }
        let shape = &ty_of(eg, class).shape;
        let mut out = vec![];
        for (y, s) in [(args[0], args[1]), (args[1], args[0])] {
            if &ty_of(eg, y).shape != shape {
                continue;
            }
            let Some((cop, cargs)) = find_prim(eg, y, |o| matches!(o, Op::Conv(_) | Op::MatMul)) else { continue };
            let Some(axis) = weight_channel_axis(eg, cop, cargs, shape.len()) else { continue };
            let Some(scale) = channel_values(eg, s, shape, axis) else { continue };
            if !self.scaled.lock().expect("rule state").insert(eg.find(y)) {
                continue;
            }
            let w = const_of(eg, cargs[1]).expect("checked by weight_channel_axis");
            let Ok(w2) = crate::affine::scale_weights(w, &scale, matches!(cop, Op::Conv(_))) else { continue };
            let mut t = Term::default();
            let x = t.class(cargs[0]);
            let w2 = t.push(TermNode::Const(w2));
            t.prim(cop.clone(), vec![x, w2]);
            out.push(t);
            break;
        }
        out
    }
}

/// `(y + b) * s → y * s + b * s` for f32 constants `b`, `s` that do not broadcast `y`, so a
/// scale after a bias reaches the contraction below it.
pub struct ScaleOverBias;

impl NodeRule for ScaleOverBias {
    fn name(&self) -> &'static str {
        "scale-over-bias"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        if !is_op(eg.analysis.op(*op), BinaryOp::Mul) {
            return vec![];
        }
        let shape = ty_of(eg, class).shape.clone();
        let (sum, s) = match (const_of(eg, args[0]), const_of(eg, args[1])) {
            (None, Some(s)) => (args[0], s),
            (Some(s), None) => (args[1], s),
            _ => return vec![],
        };
        if ty_of(eg, sum).shape != shape {
            return vec![];
        }
        let Some((_, a)) = find_prim(eg, sum, |o| is_op(o, BinaryOp::Add)) else { return vec![] };
        let (y, b) = match (const_of(eg, a[0]), const_of(eg, a[1])) {
            (None, Some(b)) => (a[0], b),
            (Some(b), None) => (a[1], b),
            _ => return vec![],
        };
        if ty_of(eg, y).shape != shape {
            return vec![];
        }
        let Some(bs) = consts::binary_f32(BinaryOp::Mul, b, s) else { return vec![] };
        let mut t = Term::default();
        let (yi, si) = (t.class(y), t.push(TermNode::Const(s.clone())));
        let ys = t.prim(Op::Binary(BinaryOp::Mul), vec![yi, si]);
        let bi = t.push(TermNode::Const(bs));
        t.prim(Op::Binary(BinaryOp::Add), vec![ys, bi]);
        vec![t]
    }
}

/// `y / c → y * (1 / c)` for an f32 constant with finite non-zero elements, so divisions by a
/// per-channel constant fold like scales. Not exact: the reciprocal is rounded once (≤ 1 ulp).
pub struct DivideByConstant;

impl NodeRule for DivideByConstant {
    fn name(&self) -> &'static str {
        "divide-by-constant"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, _class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        if !is_op(eg.analysis.op(*op), BinaryOp::Div) || const_of(eg, args[0]).is_some() {
            return vec![];
        }
        let Some(c) = const_of(eg, args[1]) else { return vec![] };
        if c.dtype != DType::F32 || !c.f32_values().is_ok_and(|v| v.iter().all(|x| x.is_finite() && *x != 0.0)) {
            return vec![];
        }
        let one = Tensor::from_f32(vec![], &[1.0]);
        let Some(r) = consts::binary_f32(BinaryOp::Div, &one, c) else { return vec![] };
        let mut t = Term::default();
        let (y, ri) = (t.class(args[0]), t.push(TermNode::Const(r)));
        t.prim(Op::Binary(BinaryOp::Mul), vec![y, ri]);
        vec![t]
    }
}
