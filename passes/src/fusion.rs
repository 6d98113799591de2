//! Which nodes get their own kernel: the fusion plan.
//!
//! A plan lists the compute nodes that are *inlined* into their readers and, for GEMM kernels,
//! which contraction a kernel root carries as its matrix product. [`greedy`] is the default
//! policy: an elementwise node with a single reader is inlined; a contraction whose single
//! reader starts a chain of same-shape elementwise nodes becomes the GEMM of that chain's last
//! node, so bias, batch-norm affine, activations and residual adds run in the GEMM's epilogue.

use odc_ir::{DType, Graph, NodeId, Op, OpFamily};
use std::collections::{HashMap, HashSet};

/// The fusion decisions the lowering follows.
#[derive(Clone, Debug, Default)]
pub struct FusionPlan {
    /// Compute nodes inlined into their readers (no buffer, no kernel of their own).
    pub fused: HashSet<NodeId>,
    /// Kernel root → the contraction it computes as a GEMM (the root's value is its epilogue).
    pub gemm_root: HashMap<NodeId, NodeId>,
    /// GEMM-eligible contractions that run as a direct loop nest instead (a kernel choice).
    pub direct: HashSet<NodeId>,
}

impl FusionPlan {
    /// No fusion at all: every compute node is its own kernel.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_fused(&self, n: NodeId) -> bool {
        self.fused.contains(&n)
    }

    /// True when contraction `n` runs as a GEMM microkernel.
    pub fn uses_gemm(&self, g: &Graph, n: NodeId) -> bool {
        gemm_eligible(g, n) && !self.direct.contains(&n)
    }
}

/// An operand of an i32 product that holds 8-bit values: a cast to i32 from u8/i8 (the node
/// read for the bytes, signed?), or an i32 constant whose values all fit a byte.
pub fn int8_operand(g: &Graph, n: NodeId) -> Option<(NodeId, bool)> {
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

/// The 8-bit operands of an i32 MatMul that runs as an int8 dot-product GEMM: B constant (packed
/// at compile time) and at least one operand signed (an unsigned x unsigned byte product
/// overflows the dot product's 16-bit intermediate).
pub fn int8_matmul(g: &Graph, n: NodeId) -> Option<((NodeId, bool), (NodeId, bool))> {
    if !matches!(g.node(n).op, Op::MatMul) || g.ty(n).dtype != DType::I32 {
        return None;
    }
    let ops = g.operands(n);
    let (a, b) = (int8_operand(g, ops[0])?, int8_operand(g, ops[1])?);
    let b_const = matches!(g.node(b.0).op, Op::Constant(_));
    (g.ty(ops[0]).rank() >= 2 && g.ty(ops[1]).rank() >= 2 && b_const && (a.1 || b.1)).then_some((a, b))
}

/// True for contractions the GEMM code generator handles: f32 MatMul, int8 MatMul (see
/// [`int8_matmul`]), and f32 Conv that is not depthwise (one input and one output channel per
/// group is better served by the direct loop).
pub fn gemm_eligible(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if int8_matmul(g, n).is_some() {
        return true;
    }
    if node.ty.dtype != DType::F32 {
        return false;
    }
    match &node.op {
        Op::MatMul => true,
        Op::Conv(c) => {
            let ops = g.operands(n);
            let w = &g.ty(ops[1]).shape;
            !(w[1] == 1 && w[0] == c.groups && c.groups > 1)
        }
        _ => false,
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
    let mut plan = FusionPlan::default();
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
    // 2. A GEMM-eligible contraction whose reader chain is same-shape elementwise nodes is
    //    computed inside the chain's last (materialised) node.
    for &n in &order {
        if !gemm_eligible(g, n) {
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
