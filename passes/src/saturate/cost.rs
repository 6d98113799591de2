//! The cost model: estimated nanoseconds per kernel, from bytes moved and arithmetic by kernel
//! family. A fused kernel pays one launch, reads each argument buffer once, writes its result
//! once, and pays for every op in its template per element (recomputation included: an op
//! inlined into two kernels is paid twice). Views cost nothing except transposes, whose strided
//! reads are charged per byte.
//!
//! The default constants: the GEMM rate is measured (`odc bench MODEL --fuse saturate` prints
//! each GEMM kernel's GFLOP/s; on light_resnet50 and the BERT encoder they run at 40-48 GFLOP/s
//! on one x86_64 core). The others are estimates in the same units, not fitted: a direct
//! contraction loop ~3 GFLOP/s, ~12 GB/s of memory traffic for elementwise kernels, a
//! transcendental ~10 simple ops, ~300 ns per kernel call.

use super::lang::{GemmOp, ONode, OGraph, TNode, TyId};
use crate::kernel_choice::{self, KernelKind};
use egg::Id;
use odc_ir::{BinaryOp, Op, OpFamily, UnaryOp};

#[derive(Clone, Copy, Debug)]
pub struct CostModel {
    /// Fixed cost of one kernel (call, loop setup, thread dispatch).
    pub kernel_ns: f64,
    /// Memory traffic per byte read or written.
    pub byte_ns: f64,
    /// Extra per byte read through a transpose.
    pub strided_byte_ns: f64,
    /// One simple elementwise op on one element.
    pub op_ns: f64,
    /// One multiply-add pair (2 FLOPs) in the GEMM microkernel.
    pub gemm_flop_ns: f64,
    /// One FLOP in a direct contraction loop.
    pub direct_flop_ns: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel { kernel_ns: 300.0, byte_ns: 0.08, strided_byte_ns: 0.15, op_ns: 0.12, gemm_flop_ns: 0.025, direct_flop_ns: 0.33 }
    }
}

/// Relative cost of one elementwise op per element (simple arithmetic = 1).
pub fn op_weight(op: &Op) -> f64 {
    match op {
        Op::Unary(u) => match u {
            UnaryOp::Sqrt | UnaryOp::Recip => 4.0,
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Not | UnaryOp::BitNot | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => 1.0,
            UnaryOp::IsNan | UnaryOp::IsPosInf | UnaryOp::IsNegInf => 1.0,
            _ => 10.0,
        },
        Op::Binary(BinaryOp::Div | BinaryOp::Rem) => 4.0,
        Op::Binary(BinaryOp::Pow) => 20.0,
        o if o.is_view() => 0.0,
        _ => 1.0,
    }
}

impl CostModel {
    fn bytes(&self, eg: &OGraph, ty: TyId) -> f64 {
        let t = eg.analysis.ty(ty);
        t.byte_len() as f64
    }

    fn arg_bytes(&self, eg: &OGraph, c: Id) -> f64 {
        let t = eg.analysis.ty(eg[c].data.ty);
        if t.num_elements() <= 1 && eg[c].data.konst.is_some() {
            0.0
        } else {
            t.byte_len() as f64
        }
    }

    fn flops(eg: &OGraph, op: &Op, out: TyId, operand_tys: &[TyId]) -> f64 {
        let out_elems = eg.analysis.ty(out).num_elements() as f64;
        match op {
            Op::MatMul => {
                let a = &eg.analysis.ty(operand_tys[0]).shape;
                2.0 * out_elems * *a.last().unwrap_or(&1) as f64
            }
            Op::Conv(_) => {
                let w = &eg.analysis.ty(operand_tys[1]).shape;
                2.0 * out_elems * w[1..].iter().product::<usize>() as f64
            }
            _ => 0.0,
        }
    }

    /// Arithmetic cost of op `op` producing `out` from operands of types `operand_tys`.
    fn compute(&self, eg: &OGraph, op: &Op, out: TyId, operand_tys: &[TyId]) -> f64 {
        let out_elems = eg.analysis.ty(out).num_elements() as f64;
        match op {
            Op::Reduce { .. } => eg.analysis.ty(operand_tys[0]).num_elements() as f64 * self.op_ns,
            Op::MatMul | Op::Conv(_) => Self::flops(eg, op, out, operand_tys) * self.direct_flop_ns,
            Op::Transpose { .. } => self.bytes(eg, out) * self.strided_byte_ns,
            o if o.is_view() => 0.0,
            o if o.family() == OpFamily::Indexing => out_elems * self.op_ns * 2.0,
            o => out_elems * op_weight(o) * self.op_ns,
        }
    }

    /// Arithmetic (and, for Winograd, transform) cost of a contraction on GEMM-family kind
    /// `gop.kind`, beyond reading its operands and writing its result once.
    fn gemm_compute(&self, eg: &OGraph, gop: GemmOp, out: TyId, operand_tys: &[TyId]) -> f64 {
        let op = eg.analysis.op(gop.op);
        let flops = Self::flops(eg, op, out, operand_tys);
        match gop.kind {
            // Not calibrated separately: priced like the f32 GEMM (it only competes with the
            // direct loop).
            KernelKind::GemmF32 | KernelKind::Int8Dot | KernelKind::Direct => flops * self.gemm_flop_ns,
            KernelKind::Winograd => {
                // F(4x4,3x3): 36 products per 4x4 tile and channel pair instead of 144, two more
                // kernels (input and output transforms) that write and read the 36 transformed
                // matrices, and weights stored 4x larger (36 per pair, not 9). With few tiles the
                // batched GEMM is bound by streaming those weights, not by its products (inception
                // 6x6 maps, 320x160 channels: 0.42 ms for 7.4 MB, `odc bench --top`), so it
                // costs the larger of the two; the operands' bytes, already counted once by the
                // caller, are not paid twice.
                let w = eg.analysis.ty(operand_tys[1]);
                let (co, ci) = (w.shape[0] as f64, w.shape[1] as f64);
                let tiles = kernel_choice::winograd_tiles(&eg.analysis.ty(out).shape) as f64;
                let products = 2.0 * 36.0 * co * ci * tiles * self.gemm_flop_ns;
                let weights = 36.0 * co * ci * 4.0 * self.byte_ns;
                let transforms = 2.0 * 36.0 * tiles * (ci + co) * 4.0 * self.byte_ns;
                let weights_read_by_caller = w.byte_len() as f64 * self.byte_ns;
                2.0 * self.kernel_ns + transforms + products.max(weights) - weights_read_by_caller.min(weights)
            }
        }
    }

    /// Estimated cost of e-node `node` of class `class`, excluding its operands' own costs.
    pub fn node_cost(&self, eg: &OGraph, class: Id, node: &ONode) -> f64 {
        let out = eg[class].data.ty;
        match node {
            ONode::Input(_) | ONode::Const(_) => 0.0,
            ONode::Prim(op, args) => {
                let op = eg.analysis.op(*op);
                let tys: Vec<TyId> = args.iter().map(|&a| eg[a].data.ty).collect();
                if op.is_view() {
                    return self.compute(eg, op, out, &tys);
                }
                let io: f64 = dedup(eg, args).iter().map(|&a| self.arg_bytes(eg, a)).sum::<f64>() + self.bytes(eg, out);
                self.kernel_ns + io * self.byte_ns + self.compute(eg, op, out, &tys)
            }
            ONode::Gemm(gop, args) => {
                let tys: Vec<TyId> = args.iter().map(|&a| eg[a].data.ty).collect();
                let io: f64 = args.iter().map(|&a| self.arg_bytes(eg, a)).sum::<f64>() + self.bytes(eg, out);
                self.kernel_ns + io * self.byte_ns + self.gemm_compute(eg, *gop, out, &tys)
            }
            ONode::Kernel(t, args) => {
                let t = &eg.analysis.tpls[t.0 as usize];
                let io: f64 = args.iter().map(|&a| self.arg_bytes(eg, a)).sum::<f64>() + self.bytes(eg, out);
                let mut cost = self.kernel_ns + io * self.byte_ns;
                for (i, n) in t.nodes.iter().enumerate() {
                    match n {
                        TNode::Hole(_) => {}
                        TNode::Prim(op, a) => {
                            let tys: Vec<TyId> = a.iter().map(|&x| t.tys[x as usize]).collect();
                            cost += self.compute(eg, eg.analysis.op(*op), t.tys[i], &tys);
                        }
                        TNode::Gemm(gop, a) => {
                            let tys: Vec<TyId> = a.iter().map(|&x| t.tys[x as usize]).collect();
                            cost += self.gemm_compute(eg, *gop, t.tys[i], &tys);
                        }
                    }
                }
                cost
            }
        }
    }
}

fn dedup(eg: &OGraph, args: &[Id]) -> Vec<Id> {
    let mut v: Vec<Id> = args.iter().map(|&a| eg.find(a)).collect();
    v.sort_unstable();
    v.dedup();
    v
}
