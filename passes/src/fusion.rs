//! Which nodes get their own kernel: the fusion plan.
//!
//! A plan lists the compute nodes that are *inlined* into their readers, the generator of each
//! contraction ([`KernelKind`], decided in [`crate::kernel_choice`]) and, for GEMM kernels,
//! which contraction a kernel root carries as its matrix product. [`greedy`] is the fixed
//! policy `--fuse greedy` compares equality saturation with: an elementwise node with a single
//! reader is inlined; a contraction whose single reader starts a chain of same-shape elementwise
//! nodes becomes the GEMM of that chain's last node, so bias, batch-norm affine, activations and
//! residual adds run in the GEMM's epilogue; each contraction takes its preferred kind.

use crate::kernel_choice::{preferred, ByteOperand, Contraction, KernelKind};
use odc_ir::{DType, Graph, NodeId, Op, OpFamily};
use std::collections::{HashMap, HashSet};

/// The fusion and kernel-kind decisions the lowering follows.
#[derive(Clone, Debug, Default)]
pub struct FusionPlan {
    /// Compute nodes inlined into their readers (no buffer, no kernel of their own).
    pub fused: HashSet<NodeId>,
    /// Kernel root → the contraction it computes on a GEMM-family microkernel (the root's value
    /// is its epilogue).
    pub gemm_root: HashMap<NodeId, NodeId>,
    /// The generator of each contraction; a contraction not listed runs as a direct loop nest.
    pub kinds: HashMap<NodeId, KernelKind>,
}

impl FusionPlan {
    /// No fusion at all: every compute node is its own kernel, each contraction on its
    /// [`preferred`] generator.
    pub fn none(g: &Graph) -> Self {
        FusionPlan { kinds: preferred_kinds(g), ..Self::default() }
    }

    pub fn is_fused(&self, n: NodeId) -> bool {
        self.fused.contains(&n)
    }

    /// The generator that computes contraction `n`.
    pub fn kind_of(&self, n: NodeId) -> KernelKind {
        self.kinds.get(&n).copied().unwrap_or(KernelKind::Direct)
    }
}

/// Every contraction of `g` with the kind a policy without a cost model takes.
fn preferred_kinds(g: &Graph) -> HashMap<NodeId, KernelKind> {
    g.node_ids()
        .into_iter()
        .filter_map(|n| contraction(g, n).map(|c| (n, preferred(&c))))
        .filter(|(_, k)| *k != KernelKind::Direct)
        .collect()
}

/// The kernel-choice facts of node `n`, if it is a contraction.
pub fn contraction(g: &Graph, n: NodeId) -> Option<Contraction<'_>> {
    let node = g.node(n);
    if node.op.family() != OpFamily::Contraction {
        return None;
    }
    let ops = g.operands(n);
    let byte = |o: NodeId| byte_source(g, o).map(|(src, signed)| ByteOperand { signed, constant: matches!(g.node(src).op, Op::Constant(_)) });
    Some(Contraction {
        op: &node.op,
        dtype: node.ty.dtype,
        out_shape: &node.ty.shape,
        operand_shapes: [&g.ty(ops[0]).shape, &g.ty(ops[1]).shape],
        const_f32_weights: matches!(&g.node(ops[1]).op, Op::Constant(t) if t.dtype == DType::F32),
        bytes: [byte(ops[0]), byte(ops[1])],
    })
}

/// Where an operand of an i32 product holding 8-bit values reads its bytes: the source of a
/// cast to i32 from u8/i8, or an i32 constant whose values all fit a byte; with signedness.
pub fn byte_source(g: &Graph, n: NodeId) -> Option<(NodeId, bool)> {
    match &g.node(n).op {
        Op::Cast { to: DType::I32, .. } => {
            let src = g.operands(n)[0];
            match g.ty(src).dtype {
                DType::I8 => Some((src, true)),
                DType::U8 => Some((src, false)),
                _ => None,
            }
        }
        Op::Constant(t) if t.dtype == DType::I32 => {
            let v: Vec<i32> = t.bytes().chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if v.iter().all(|x| (-128..=127).contains(x)) {
                Some((n, true))
            } else if v.iter().all(|x| (0..=255).contains(x)) {
                Some((n, false))
            } else {
                None
            }
        }
        _ => None,
    }
}

pub fn is_elementwise(op: &Op) -> bool {
    op.family() == OpFamily::Elementwise
}

/// True when reader `r` evaluates each element of its operand `n` at most once, so inlining `n`
/// recomputes nothing: not windows (overlapping reads), broadcasts, gathers or contractions.
pub fn reads_each_element_once(g: &Graph, r: NodeId, n: NodeId) -> bool {
    match &g.node(r).op {
        Op::Window { .. } | Op::Expand { .. } | Op::Gather { .. } | Op::GatherElements { .. } | Op::GatherNd { .. } => false,
        op if op.family() == OpFamily::Contraction => false,
        op if op.family() == OpFamily::Elementwise => g.ty(n).shape == g.ty(r).shape,
        _ => true,
    }
}

/// The only reader of `n`, if it has exactly one use and is not a graph output.
fn single_reader(g: &Graph, n: NodeId) -> Option<NodeId> {
    if g.use_count(n) != 1 || g.is_output(n) {
        return None;
    }
    g.users(n).first().copied()
}

/// The default greedy plan.
pub fn greedy(g: &Graph) -> FusionPlan {
    let mut plan = FusionPlan { kinds: preferred_kinds(g), ..FusionPlan::default() };
    let order = g.topo_order();
    // 1. Elementwise nodes with one reader are inlined into it, when that reader evaluates
    //    each element once (never into a contraction, whose operands must be buffers).
    for &n in &order {
        let node = g.node(n);
        if !is_elementwise(&node.op) {
            continue;
        }
        if let Some(r) = single_reader(g, n) {
            if reads_each_element_once(g, r, n) {
                plan.fused.insert(n);
            }
        }
    }
    // 2. A contraction on a GEMM-family kernel whose reader chain is same-shape elementwise
    //    nodes is computed inside the chain's last (materialised) node.
    for &n in &order {
        if !plan.kind_of(n).is_gemm() {
            continue;
        }
        let shape = &g.ty(n).shape;
        let mut cur = n;
        let root = loop {
            match single_reader(g, cur) {
                Some(r) if is_elementwise(&g.node(r).op) && &g.ty(r).shape == shape => {
                    if plan.fused.contains(&r) {
                        cur = r;
                    } else {
                        break Some(r);
                    }
                }
                _ => break None,
            }
        };
        if let Some(root) = root {
            if !plan.gemm_root.contains_key(&root) {
                plan.gemm_root.insert(root, n);
                plan.fused.insert(n);
            }
        }
    }
    plan
}
