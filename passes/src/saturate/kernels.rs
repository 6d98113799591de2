//! Kernel choice: which generator computes a contraction. Every GEMM-family generator that
//! [`kernel_choice::alternatives`] allows for a `MatMul`/`Conv` (f32 GEMM, int8 dot product,
//! Winograd) becomes a `Gemm` alternative in the contraction's class beside its direct loop
//! nest (the `Prim` itself); the cost model prices each and extraction picks. Independent of
//! epilogue fusion ([`super::fuse`]), which works on whichever is chosen.

use super::lang::{GemmOp, ONode, OGraph};
use super::rule::{const_of, ty_of, Context, NodeRule, Term, TermNode};
use crate::kernel_choice::{self, ByteOperand, Contraction, KernelKind};
use egg::Id;
use odc_ir::{DType, Op, OpFamily};

/// Offer each GEMM-family generator that can take a contraction.
pub struct GemmChoice;

impl NodeRule for GemmChoice {
    fn name(&self) -> &'static str {
        "gemm-choice"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        gemm_alternatives(eg, eg.analysis.op(*op), class, args)
            .into_iter()
            .map(|kind| {
                let mut t = Term::default();
                let a: Vec<usize> = args.iter().map(|&c| t.class(c)).collect();
                t.push(TermNode::Gemm(GemmOp { kind, op: *op }, a));
                t
            })
            .collect()
    }
}

/// The GEMM-family kinds that can compute `op(args)` in `class` (empty for anything but a
/// contraction the GEMM generators take).
pub(super) fn gemm_alternatives(eg: &OGraph, op: &Op, class: Id, args: &[Id]) -> Vec<KernelKind> {
    if op.family() != OpFamily::Contraction || args.len() < 2 {
        return vec![];
    }
    let weights_f32 = const_of(eg, args[1]).is_some_and(|t| t.dtype == DType::F32);
    let facts = Contraction {
        op,
        dtype: ty_of(eg, class).dtype,
        out_shape: &ty_of(eg, class).shape,
        operand_shapes: [&ty_of(eg, args[0]).shape, &ty_of(eg, args[1]).shape],
        const_f32_weights: weights_f32,
        bytes: [byte_operand(eg, args[0]), byte_operand(eg, args[1])],
    };
    kernel_choice::alternatives(&facts)
}

/// Class `c` holds 8-bit values as i32: a cast from i8/u8 or an i32 constant in byte range.
fn byte_operand(eg: &OGraph, c: Id) -> Option<ByteOperand> {
    if ty_of(eg, c).dtype != DType::I32 {
        return None;
    }
    for n in &eg[c].nodes {
        match n {
            ONode::Prim(o, a) if matches!(eg.analysis.op(*o), Op::Cast { to: DType::I32, .. }) => {
                let constant = const_of(eg, a[0]).is_some();
                match ty_of(eg, a[0]).dtype {
                    DType::I8 => return Some(ByteOperand { signed: true, constant }),
                    DType::U8 => return Some(ByteOperand { signed: false, constant }),
                    _ => {}
                }
            }
            ONode::Const(k) => {
                let t = &eg.analysis.consts[*k as usize];
                let v = t.to_i64_vec().ok()?;
                if v.iter().all(|x| (-128..=127).contains(x)) {
                    return Some(ByteOperand { signed: true, constant: true });
                }
                if v.iter().all(|x| (0..=255).contains(x)) {
                    return Some(ByteOperand { signed: false, constant: true });
                }
            }
            _ => {}
        }
    }
    None
}
