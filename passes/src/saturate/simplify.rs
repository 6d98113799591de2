//! Algebraic simplification: identities, constant folding, view cancellation, and
//! reassociation confined to chains of constants (`(y + c1) + c2 → y + (c1 + c2)`), which keeps
//! the e-graph from growing with every permutation of a long sum.
//!
//! Every rewrite here is exact for IEEE floats except where noted; none changes a value's type.

use super::consts;
use super::lang::{ONode, OGraph};
use super::rule::{const_of, find_prim, ty_of, Context, NodeRule, Term, TermNode};
use egg::Id;
use odc_ir::{BinaryOp, Graph, Op, UnaryOp};

/// `x + 0`, `x - 0`, `x * 1`, `x / 1`, casts to the same type, and views that change nothing
/// (identity transpose, reshape/expand to the same shape, full slice, zero pad) become `x`.
pub struct Identities;

impl NodeRule for Identities {
    fn name(&self) -> &'static str {
        "identities"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        let out = ty_of(eg, class);
        let same = |x: Id| ty_of(eg, x) == out;
        let splat = |c: Id, v: f64| const_of(eg, c).is_some_and(|t| consts::is_splat_of(t, v));
        let x = match (eg.analysis.op(*op), args.as_slice()) {
            (Op::Binary(BinaryOp::Add), &[a, b]) if splat(b, 0.0) && same(a) => Some(a),
            (Op::Binary(BinaryOp::Add), &[a, b]) if splat(a, 0.0) && same(b) => Some(b),
            (Op::Binary(BinaryOp::Sub), &[a, b]) if splat(b, 0.0) && same(a) => Some(a),
            (Op::Binary(BinaryOp::Mul), &[a, b]) if splat(b, 1.0) && same(a) => Some(a),
            (Op::Binary(BinaryOp::Mul), &[a, b]) if splat(a, 1.0) && same(b) => Some(b),
            (Op::Binary(BinaryOp::Div), &[a, b]) if splat(b, 1.0) && same(a) => Some(a),
            (Op::Cast { .. } | Op::Reshape { .. } | Op::Expand { .. }, &[a]) if same(a) => Some(a),
            (Op::Transpose { perm }, &[a]) if perm.iter().enumerate().all(|(i, &p)| i == p) => Some(a),
            (Op::Slice { starts, steps, sizes }, &[a])
                if starts.iter().all(|&s| s == 0) && steps.iter().all(|&s| s == 1) && sizes == &ty_of(eg, a).shape =>
            {
                Some(a)
            }
            (Op::Pad { low, high, interior, .. }, &[a])
                if low.iter().chain(high).all(|&p| p == 0) && interior.iter().all(|&p| p == 0) =>
            {
                Some(a)
            }
            _ => None,
        };
        x.map(Term::just).into_iter().collect()
    }
}

/// `neg(neg(x)) → x`, `not(not(x)) → x`, `bitnot(bitnot(x)) → x`.
pub struct Involutions;

impl NodeRule for Involutions {
    fn name(&self) -> &'static str {
        "involutions"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, _class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        let Op::Unary(u @ (UnaryOp::Neg | UnaryOp::Not | UnaryOp::BitNot)) = eg.analysis.op(*op) else { return vec![] };
        find_prim(eg, args[0], |o| matches!(o, Op::Unary(v) if v == u))
            .map(|(_, inner)| Term::just(inner[0]))
            .into_iter()
            .collect()
    }
}

/// `transpose(transpose(x, p), q) → transpose(x, p∘q)` and `reshape(reshape(x)) → reshape(x)`.
pub struct ViewCancellation;

impl NodeRule for ViewCancellation {
    fn name(&self) -> &'static str {
        "view-cancellation"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, _class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        let mut t = Term::default();
        match eg.analysis.op(*op) {
            Op::Transpose { perm: q } => {
                let Some((Op::Transpose { perm: p }, inner)) = find_prim(eg, args[0], |o| matches!(o, Op::Transpose { .. })) else {
                    return vec![];
                };
                // out[i] = mid[i permuted by q], mid[j] = x[j permuted by p]: output axis k is x's axis p[q[k]].
                let perm: Vec<usize> = q.iter().map(|&k| p[k]).collect();
                let x = t.class(inner[0]);
                t.prim(Op::Transpose { perm }, vec![x]);
            }
            Op::Reshape { shape } => {
                let Some((_, inner)) = find_prim(eg, args[0], |o| matches!(o, Op::Reshape { .. })) else { return vec![] };
                let x = t.class(inner[0]);
                t.prim(Op::Reshape { shape: shape.clone() }, vec![x]);
            }
            _ => return vec![],
        }
        vec![t]
    }
}

/// Largest constant (in elements) the folding rules create.
const MAX_FOLDED_ELEMENTS: usize = 1 << 16;

/// An op whose operands are all constants becomes a constant, computed by the evaluator (the
/// same generated code inference would run).
pub struct ConstantFolding;

impl NodeRule for ConstantFolding {
    fn name(&self) -> &'static str {
        "constant-folding"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        let Some(eval) = eg.analysis.eval else { return vec![] };
        if eg[class].data.konst.is_some() || args.is_empty() || ty_of(eg, class).num_elements() > MAX_FOLDED_ELEMENTS {
            return vec![];
        }
        let Some(inputs) = args.iter().map(|&a| const_of(eg, a)).collect::<Option<Vec<_>>>() else { return vec![] };
        let mut g = Graph::new();
        let ids: Vec<_> = inputs.iter().map(|t| g.constant((*t).clone(), "c")).collect();
        let Ok(n) = g.add(eg.analysis.op(*op).clone(), &ids, "fold") else { return vec![] };
        match eval.evaluate(&g, &[n]) {
            Ok(mut v) if v.len() == 1 => vec![Term { nodes: vec![TermNode::Const(v.remove(0))] }],
            _ => vec![],
        }
    }
}

/// `(y + c1) + c2 → y + (c1 + c2)`, `(y * c1) * c2 → y * (c1 * c2)` for f32 constants whose
/// combination does not broadcast `y`. Reassociating constants changes rounding by at most one
/// ulp per merged step.
pub struct ReassociateConstants;

impl NodeRule for ReassociateConstants {
    fn name(&self) -> &'static str {
        "reassociate-constants"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        let Op::Binary(b @ (BinaryOp::Add | BinaryOp::Mul)) = *eg.analysis.op(*op) else { return vec![] };
        let (inner_class, c2) = match (const_of(eg, args[0]), const_of(eg, args[1])) {
            (None, Some(c)) => (args[0], c),
            (Some(c), None) => (args[1], c),
            _ => return vec![],
        };
        let mut out = vec![];
        for n in &eg[inner_class].nodes {
            let ONode::Prim(iop, iargs) = n else { continue };
            if !matches!(eg.analysis.op(*iop), Op::Binary(x) if *x == b) {
                continue;
            }
            let (y, c1) = match (const_of(eg, iargs[0]), const_of(eg, iargs[1])) {
                (None, Some(c)) => (iargs[0], c),
                (Some(c), None) => (iargs[1], c),
                _ => continue,
            };
            let identity = if b == BinaryOp::Add { 0.0 } else { 1.0 };
            if eg.find(y) == eg.find(class) || consts::is_splat_of(c1, identity) || consts::is_splat_of(c2, identity) {
                continue;
            }
            let Some(c) = consts::binary_f32(b, c1, c2) else { continue };
            if odc_ir::broadcast_shapes(&[&ty_of(eg, y).shape, &c.shape]).ok().as_ref() != Some(&ty_of(eg, class).shape) {
                continue;
            }
            let mut t = Term::default();
            let (yi, ci) = (t.class(y), t.push(TermNode::Const(c)));
            t.prim(Op::Binary(b), vec![yi, ci]);
            out.push(t);
        }
        out
    }
}

/// `y - c → y + (-c)` for an f32 constant (exact), so constant chains meet one operator.
pub struct SubtractConstant;

impl NodeRule for SubtractConstant {
    fn name(&self) -> &'static str {
        "subtract-constant"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, _class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        if !matches!(eg.analysis.op(*op), Op::Binary(BinaryOp::Sub)) || const_of(eg, args[0]).is_some() {
            return vec![];
        }
        let Some(neg) = const_of(eg, args[1]).and_then(consts::neg_f32) else { return vec![] };
        let mut t = Term::default();
        let (y, c) = (t.class(args[0]), t.push(TermNode::Const(neg)));
        t.prim(Op::Binary(BinaryOp::Add), vec![y, c]);
        vec![t]
    }
}
