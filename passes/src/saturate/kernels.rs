//! Kernel choice: which generator computes a contraction. A `MatMul`/`Conv` the packed-GEMM
//! microkernel handles gets a `Gemm` alternative beside its direct loop nest; the cost model
//! picks. Independent of epilogue fusion ([`super::fuse`]), which works on whichever is chosen.

use super::lang::{ONode, OGraph};
use super::rule::{const_of, ty_of, Context, NodeRule, Term, TermNode};
use egg::Id;
use odc_ir::{DType, Op};

/// Offer the GEMM microkernel for eligible contractions: f32 `MatMul`, f32 `Conv` that is not
/// depthwise (one channel per group is better served by the direct loop), and i32 `MatMul` of
/// 8-bit operands with constant weights (the int8 dot-product GEMM).
pub struct GemmChoice;

impl NodeRule for GemmChoice {
    fn name(&self) -> &'static str {
        "gemm-choice"
    }
    fn rewrite(&self, eg: &OGraph, _: &Context, class: Id, node: &ONode) -> Vec<Term> {
        let ONode::Prim(op, args) = node else { return vec![] };
        if !gemm_eligible(eg, eg.analysis.op(*op), class, args) {
            return vec![];
        }
        let mut t = Term::default();
        let a: Vec<usize> = args.iter().map(|&c| t.class(c)).collect();
        t.push(TermNode::Gemm(*op, a));
        vec![t]
    }
}

pub(super) fn gemm_eligible(eg: &OGraph, op: &Op, class: Id, args: &[Id]) -> bool {
    let dtype = ty_of(eg, class).dtype;
    match op {
        Op::MatMul if dtype == DType::F32 => true,
        Op::MatMul if dtype == DType::I32 => int8_matmul(eg, args),
        Op::Conv(c) if dtype == DType::F32 => {
            let w = &ty_of(eg, args[1]).shape;
            !(w[1] == 1 && w[0] == c.groups && c.groups > 1)
        }
        _ => false,
    }
}

/// `Some(signed)` when class `c` holds 8-bit values as i32: a cast from i8/u8 or an i32
/// constant in byte range. Also says whether the bytes are constant.
fn int8_operand(eg: &OGraph, c: Id) -> Option<(bool, bool)> {
    for n in &eg[c].nodes {
        match n {
            ONode::Prim(o, a) if matches!(eg.analysis.op(*o), Op::Cast { to: DType::I32, .. }) => {
                let constant = const_of(eg, a[0]).is_some();
                match ty_of(eg, a[0]).dtype {
                    DType::I8 => return Some((true, constant)),
                    DType::U8 => return Some((false, constant)),
                    _ => {}
                }
            }
            ONode::Const(k) => {
                let t = &eg.analysis.consts[*k as usize];
                let v = t.to_i64_vec().ok()?;
                if v.iter().all(|x| (-128..=127).contains(x)) {
                    return Some((true, true));
                }
                if v.iter().all(|x| (0..=255).contains(x)) {
                    return Some((false, true));
                }
            }
            _ => {}
        }
    }
    None
}

fn int8_matmul(eg: &OGraph, args: &[Id]) -> bool {
    match (int8_operand(eg, args[0]), int8_operand(eg, args[1])) {
        (Some((sa, _)), Some((sb, b_const))) => {
            b_const && (sa || sb) && ty_of(eg, args[0]).rank() >= 2 && ty_of(eg, args[1]).rank() >= 2
        }
        _ => false,
    }
}
