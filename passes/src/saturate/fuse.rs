//! Fusion: which values share a loop nest.
//!
//! A fused kernel is a `Kernel` e-node whose [`Template`] is an expression over argument buffers.
//! Two rule families build them, and compose:
//!
//! * [`FuseProducers`] inlines elementwise ops and views into the kernel that reads them. A
//!   producer read by one kernel only is always inlined (it saves a store and a load); a producer
//!   with several readers is offered as an alternative per reader (recomputing it may be cheaper
//!   than storing it — the DAG-aware extractor decides). This covers elementwise chains,
//!   reductions with their elementwise prologue (softmax's `exp(x - max)` into the sum,
//!   layer-norm's `(x - mean)^2` into the variance), and elementwise ops read through views.
//! * [`FuseEpilogue`] puts a `Gemm` (chosen by [`super::kernels`]) under an elementwise chain of
//!   its own shape: bias, activation and residual add run in the GEMM's epilogue. A direct
//!   contraction or a reduction is put under such a chain the same way (a depthwise
//!   convolution's bias and ReLU, a mean's scale).
//!
//! Legality mirrors what the lowering can do without recomputation inside a kernel: nothing is
//! inlined into a contraction's operands, a window, a broadcast (`Expand`, or an elementwise
//! operand smaller than its result) or a gather.

use super::lang::{GemmOp, ONode, OGraph, OpId, TNode, Template, TyId};
use super::rule::{tyid, Context, NodeRule, Term, TermNode};
use egg::Id;
use odc_ir::{Op, OpFamily};
use std::collections::HashMap;

/// What an argument of a draft is replaced by when inlined: a primitive, or a contraction on a
/// GEMM-family microkernel.
#[derive(Clone, Copy, Debug)]
enum Producer {
    Prim(OpId),
    Gemm(GemmOp),
}

/// At most this many compute nodes in one fused kernel.
pub const MAX_TEMPLATE_OPS: usize = 64;
/// At most this many fused alternatives in one e-class.
pub const MAX_KERNELS_PER_CLASS: usize = 6;

/// A template being edited: a DAG whose leaves are e-classes.
#[derive(Clone, Debug)]
struct Draft {
    nodes: Vec<DNode>,
    root: usize,
}

#[derive(Clone, Debug)]
enum DNode {
    Arg(Id),
    Prim { op: OpId, args: Vec<usize>, ty: TyId, origin: Id },
    Gemm { op: GemmOp, args: Vec<usize>, ty: TyId, origin: Id },
}

impl Draft {
    /// The kernel computing `node` (an e-node of `class`) alone, or its fused template.
    fn of(eg: &OGraph, class: Id, node: &ONode) -> Option<Draft> {
        match node {
            ONode::Prim(op, args) => {
                let o = eg.analysis.op(*op);
                if !(o.family() == OpFamily::Elementwise || matches!(o, Op::Reduce { .. })) {
                    return None;
                }
                let mut nodes: Vec<DNode> = args.iter().map(|&a| DNode::Arg(eg.find(a))).collect();
                nodes.push(DNode::Prim { op: *op, args: (0..args.len()).collect(), ty: tyid(eg, class), origin: class });
                Some(Draft { root: nodes.len() - 1, nodes })
            }
            ONode::Kernel(t, args) => {
                let t = &eg.analysis.tpls[t.0 as usize];
                let nodes = t
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| match n {
                        TNode::Hole(h) => DNode::Arg(eg.find(args[*h as usize])),
                        TNode::Prim(op, a) => DNode::Prim { op: *op, args: a.iter().map(|&x| x as usize).collect(), ty: t.tys[i], origin: t.origin[i] },
                        TNode::Gemm(op, a) => DNode::Gemm { op: *op, args: a.iter().map(|&x| x as usize).collect(), ty: t.tys[i], origin: t.origin[i] },
                    })
                    .collect::<Vec<_>>();
                Some(Draft { root: nodes.len() - 1, nodes })
            }
            _ => None,
        }
    }

    fn operands(&self, i: usize) -> &[usize] {
        match &self.nodes[i] {
            DNode::Arg(_) => &[],
            DNode::Prim { args, .. } | DNode::Gemm { args, .. } => args,
        }
    }

    /// Nodes reachable from the root, each with the nodes reading it.
    fn readers(&self) -> HashMap<usize, Vec<usize>> {
        let mut r: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut stack = vec![self.root];
        let mut seen = vec![false; self.nodes.len()];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            r.entry(i).or_default();
            for &o in self.operands(i) {
                r.entry(o).or_default().push(i);
                stack.push(o);
            }
        }
        r
    }

    fn size(&self) -> usize {
        self.readers().keys().filter(|&&i| !matches!(self.nodes[i], DNode::Arg(_))).count()
    }

    /// True when the template already computes a GEMM, a direct contraction or a reduction:
    /// one such loop nest per kernel.
    fn has_inner_loop(&self, eg: &OGraph) -> bool {
        self.readers().keys().any(|&i| match &self.nodes[i] {
            DNode::Gemm { .. } => true,
            DNode::Prim { op, .. } => computed_per_element(eg.analysis.op(*op)),
            DNode::Arg(_) => false,
        })
    }

    /// Replace argument node `at` by the e-node `op(args)` of class `class`.
    fn inline(&mut self, eg: &OGraph, at: usize, class: Id, op: Producer, args: &[Id]) {
        let first = self.nodes.len();
        self.nodes.extend(args.iter().map(|&a| DNode::Arg(eg.find(a))));
        let args = (first..first + args.len()).collect();
        let (ty, origin) = (tyid(eg, class), class);
        self.nodes[at] = match op {
            Producer::Gemm(op) => DNode::Gemm { op, args, ty, origin },
            Producer::Prim(op) => DNode::Prim { op, args, ty, origin },
        };
    }

    /// The canonical template (post-order, holes numbered by first use, equal arguments
    /// merged) and its argument classes.
    fn finish(&self, eg: &OGraph) -> (Template, Vec<Id>) {
        let mut t = Template { nodes: vec![], tys: vec![], origin: vec![] };
        let mut args: Vec<Id> = vec![];
        let mut memo: HashMap<usize, u16> = HashMap::new();
        let mut hole_of: HashMap<Id, u16> = HashMap::new();
        // Iterative post-order.
        let mut stack = vec![(self.root, false)];
        while let Some((i, expanded)) = stack.pop() {
            if memo.contains_key(&i) {
                continue;
            }
            if !expanded {
                stack.push((i, true));
                for &o in self.operands(i).iter().rev() {
                    stack.push((o, false));
                }
                continue;
            }
            let idx = match &self.nodes[i] {
                DNode::Arg(c) => {
                    let c = eg.find(*c);
                    if let Some(&h) = hole_of.get(&c) {
                        h
                    } else {
                        let h = args.len() as u16;
                        args.push(c);
                        t.nodes.push(TNode::Hole(h));
                        t.tys.push(tyid(eg, c));
                        t.origin.push(c);
                        let at = (t.nodes.len() - 1) as u16;
                        hole_of.insert(c, at);
                        at
                    }
                }
                DNode::Prim { op, args: a, ty, origin } => {
                    let a: Vec<u16> = a.iter().map(|x| memo[x]).collect();
                    t.nodes.push(TNode::Prim(*op, a));
                    t.tys.push(*ty);
                    t.origin.push(*origin);
                    (t.nodes.len() - 1) as u16
                }
                DNode::Gemm { op, args: a, ty, origin } => {
                    let a: Vec<u16> = a.iter().map(|x| memo[x]).collect();
                    t.nodes.push(TNode::Gemm(*op, a));
                    t.tys.push(*ty);
                    t.origin.push(*origin);
                    (t.nodes.len() - 1) as u16
                }
            };
            memo.insert(i, idx);
        }
        (t, args)
    }

    fn term(&self, eg: &OGraph) -> Term {
        let (t, args) = self.finish(eg);
        let mut term = Term::default();
        let a: Vec<usize> = args.iter().map(|&c| term.class(c)).collect();
        term.push(TermNode::Kernel(t, a));
        term
    }
}

/// Ops whose every output element is its own loop (a direct contraction, a reduction), so an
/// elementwise reader of the same shape can compute them inline, once per element.
fn computed_per_element(op: &Op) -> bool {
    op.family() == OpFamily::Contraction || matches!(op, Op::Reduce { .. })
}

/// True when `reader` evaluates each element of its operand `operand` at most once.
fn reads_once(eg: &OGraph, reader: &DNode, operand_ty: TyId) -> bool {
    match reader {
        DNode::Arg(_) | DNode::Gemm { .. } => false,
        DNode::Prim { op, ty, .. } => match eg.analysis.op(*op) {
            Op::Window { .. } | Op::Expand { .. } => false,
            Op::Reduce { .. } => true,
            o if o.is_view() => true,
            o if o.family() == OpFamily::Elementwise => eg.analysis.ty(operand_ty).shape == eg.analysis.ty(*ty).shape,
            _ => false,
        },
    }
}

/// An elementwise op or view of class `c` that a kernel can compute inline: the class's
/// simplest form (so a chain that simplification shortened is inlined shortened).
fn inlinable_producer(eg: &OGraph, ctx: &Context, c: Id) -> Option<(OpId, Vec<Id>)> {
    if eg[c].data.konst.is_some() {
        return None;
    }
    match ctx.simplest(eg, c)? {
        ONode::Prim(op, a) => {
            let o = eg.analysis.op(*op);
            (o.family() == OpFamily::Elementwise || o.is_view()).then(|| (*op, a.clone()))
        }
        _ => None,
    }
}

/// Argument nodes of `d` that may be inlined, with their producers.
fn candidates(eg: &OGraph, ctx: &Context, d: &Draft) -> Vec<(usize, Id, OpId, Vec<Id>)> {
    let readers = d.readers();
    let mut out = vec![];
    let mut ids: Vec<usize> = readers.keys().copied().collect();
    ids.sort_unstable();
    for i in ids {
        let DNode::Arg(c) = d.nodes[i] else { continue };
        let ty = tyid(eg, c);
        if !readers[&i].iter().all(|&r| reads_once(eg, &d.nodes[r], ty)) {
            continue;
        }
        if let Some((op, args)) = inlinable_producer(eg, ctx, c) {
            out.push((i, c, op, args));
        }
    }
    out
}

/// Inline every single-user candidate, transitively.
fn close(eg: &OGraph, ctx: &Context, d: &mut Draft) {
    loop {
        let mut changed = false;
        for (i, c, op, args) in candidates(eg, ctx, d) {
            if ctx.single_user(eg, c) && d.size() < MAX_TEMPLATE_OPS {
                d.inline(eg, i, c, Producer::Prim(op), &args);
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

fn kernel_count(eg: &OGraph, class: Id) -> usize {
    eg[class].nodes.iter().filter(|n| matches!(n, ONode::Kernel(..))).count()
}

/// Inline elementwise producers and views into the kernels that read them.
pub struct FuseProducers;

impl NodeRule for FuseProducers {
    fn name(&self) -> &'static str {
        "fuse-producers"
    }
    fn needs_context(&self) -> bool {
        true
    }
    fn rewrite(&self, eg: &OGraph, ctx: &Context, class: Id, node: &ONode) -> Vec<Term> {
        if kernel_count(eg, class) >= MAX_KERNELS_PER_CLASS {
            return vec![];
        }
        let Some(base) = Draft::of(eg, class, node) else { return vec![] };
        let mut out = vec![];
        let mut closed = base.clone();
        close(eg, ctx, &mut closed);
        if closed.size() > base.size() {
            out.push(closed.term(eg));
        }
        for (i, c, op, args) in candidates(eg, ctx, &closed) {
            if ctx.single_user(eg, c) || closed.size() >= MAX_TEMPLATE_OPS {
                continue;
            }
            let mut d = closed.clone();
            d.inline(eg, i, c, Producer::Prim(op), &args);
            close(eg, ctx, &mut d);
            out.push(d.term(eg));
        }
        out.truncate(MAX_KERNELS_PER_CLASS - kernel_count(eg, class));
        out
    }
}

/// Put a GEMM under the elementwise chain that reads it, as its epilogue; likewise a direct
/// contraction (a depthwise convolution) or a reduction, whose per-element loop then ends in the
/// chain (a depthwise convolution's bias and ReLU, a mean's scale) instead of a store and a
/// second kernel.
pub struct FuseEpilogue;

impl NodeRule for FuseEpilogue {
    fn name(&self) -> &'static str {
        "fuse-epilogue"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, class: Id, node: &ONode) -> Vec<Term> {
        if kernel_count(eg, class) >= MAX_KERNELS_PER_CLASS {
            return vec![];
        }
        let Some(d) = Draft::of(eg, class, node) else { return vec![] };
        if d.has_inner_loop(eg) {
            return vec![];
        }
        let root_shape = &eg.analysis.ty(tyid(eg, class)).shape;
        let readers = d.readers();
        let mut out = vec![];
        let mut args_in_order: Vec<usize> = readers.keys().copied().collect();
        args_in_order.sort_unstable();
        for i in args_in_order {
            let rs = &readers[&i];
            let DNode::Arg(c) = d.nodes[i] else { continue };
            // The class's GEMM-family alternatives, or the direct loop of a contraction no GEMM
            // generator takes (an eligible one gets its `Gemm` nodes from `GemmChoice` later;
            // offering its direct loop first would fill the class's kernel slots) or of a
            // reduction.
            let producers: Vec<(Producer, Vec<Id>)> = eg[c]
                .nodes
                .iter()
                .filter_map(|n| match n {
                    ONode::Gemm(op, a) => Some((Producer::Gemm(*op), a.clone())),
                    ONode::Prim(op, a) => {
                        let o = eg.analysis.op(*op);
                        (computed_per_element(o) && super::kernels::gemm_alternatives(eg, o, c, a).is_empty()).then(|| (Producer::Prim(*op), a.clone()))
                    }
                    _ => None,
                })
                .collect();
            let shape = &eg.analysis.ty(tyid(eg, c)).shape;
            if producers.is_empty() || shape != root_shape || rs.len() != 1 {
                continue;
            }
            // The path to the root: same-shape elementwise nodes, each read once.
            let mut cur = rs[0];
            let ok = loop {
                let DNode::Prim { op, ty, .. } = &d.nodes[cur] else { break false };
                if eg.analysis.op(*op).family() != OpFamily::Elementwise || &eg.analysis.ty(*ty).shape != shape {
                    break false;
                }
                if cur == d.root {
                    break true;
                }
                match readers[&cur].as_slice() {
                    [r] => cur = *r,
                    _ => break false,
                }
            };
            if ok {
                for (op, args) in producers {
                    let mut e = d.clone();
                    e.inline(eg, i, c, op, &args);
                    out.push(e.term(eg));
                }
            }
        }
        out.truncate(MAX_KERNELS_PER_CLASS - kernel_count(eg, class));
        out
    }
}
