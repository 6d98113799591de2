//! Folding per-channel affine maps into contraction weights (BatchNorm folding).
//!
//! A convolution or matrix product with constant weights, followed by a chain of adds, subs,
//! muls and divs by constants that vary only along its output channel (what a decomposed
//! `BatchNormalization`, a `Mul` by a per-channel scale or a bias add look like), computes
//! `a[c] * contraction + b[c]`. The scale `a` is multiplied into the weights at compile time and
//! the chain becomes one bias add, which the GEMM epilogue absorbs.

use odc_ir::{BinaryOp, DType, Graph, IrError, NodeId, Op, Tensor};

/// Fold every such chain in `g`. Returns the number of chains folded.
pub fn fold_channel_affine(g: &mut Graph) -> Result<usize, IrError> {
    let mut folded = 0;
    for n in g.topo_order() {
        if !g.contains(n) {
            continue;
        }
        if let Some(chain) = affine_chain(g, n) {
            rewrite(g, n, chain)?;
            folded += 1;
        }
    }
    if folded > 0 {
        g.remove_dead();
    }
    Ok(folded)
}

/// The affine map `a * x + b` per output channel that a chain of readers applies to contraction
/// `n`, and the chain's last node.
struct Chain {
    end: NodeId,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// The output-channel axis of a contraction whose weights are a constant f32 tensor.
fn channel_axis(g: &Graph, n: NodeId) -> Option<usize> {
    let node = g.node(n);
    if node.ty.dtype != DType::F32 || !matches!(node.op, Op::Conv(_) | Op::MatMul) {
        return None;
    }
    let w = g.operands(n)[1];
    let Op::Constant(t) = &g.node(w).op else { return None };
    if t.dtype != DType::F32 {
        return None;
    }
    match node.op {
        Op::Conv(_) => Some(1),
        Op::MatMul if node.ty.rank() >= 1 => Some(node.ty.rank() - 1),
        _ => None,
    }
}

/// Per-channel values of constant tensor `t` when, broadcast against a tensor of `shape`, it
/// varies at most along `axis` (one value per channel, a scalar repeated).
pub fn channel_values(t: &Tensor, shape: &[usize], axis: usize) -> Option<Vec<f32>> {
    let ks = &t.shape;
    if t.dtype != DType::F32 || ks.len() > shape.len() {
        return None;
    }
    let off = shape.len() - ks.len();
    let c = shape[axis];
    for (i, &d) in ks.iter().enumerate() {
        if d != 1 && !(i + off == axis && d == c) {
            return None;
        }
    }
    let v = t.f32_values().ok()?;
    Some(if v.len() == 1 { vec![v[0]; c] } else { v })
}

/// Contraction weights with output channel `c` multiplied by `scale[c]`: conv weights
/// `[Cout, Cin/groups, k..]` scale per leading block, matmul weights `[.., K, N]` per column.
pub fn scale_weights(w: &Tensor, scale: &[f32], is_conv: bool) -> Result<Tensor, IrError> {
    let mut wv = w.f32_values()?;
    let c = scale.len().max(1);
    if is_conv {
        let block = (wv.len() / c).max(1);
        for (co, blk) in wv.chunks_mut(block).enumerate() {
            blk.iter_mut().for_each(|v| *v *= scale[co]);
        }
    } else {
        wv.iter_mut().enumerate().for_each(|(i, v)| *v *= scale[i % c]);
    }
    Ok(Tensor::from_f32_vec(w.shape.clone(), wv))
}

fn affine_chain(g: &Graph, n: NodeId) -> Option<Chain> {
    let axis = channel_axis(g, n)?;
    let shape = g.ty(n).shape.clone();
    let c = shape[axis];
    let (mut scale, mut shift) = (vec![1f32; c], vec![0f32; c]);
    let (mut cur, mut steps, mut scaled) = (n, 0, false);
    loop {
        if g.use_count(cur) != 1 || g.is_output(cur) {
            break;
        }
        let r = g.users(cur)[0];
        let Op::Binary(op) = g.node(r).op else { break };
        if g.ty(r).shape != shape || g.ty(r).dtype != DType::F32 {
            break;
        }
        let ops = g.operands(r);
        let (lhs, other) = if ops[0] == cur { (true, ops[1]) } else { (false, ops[0]) };
        if other == cur {
            break;
        }
        let Op::Constant(kt) = &g.node(other).op else { break };
        let Some(k) = channel_values(kt, &shape, axis) else { break };
        match (op, lhs) {
            (BinaryOp::Add, _) => shift.iter_mut().zip(&k).for_each(|(b, k)| *b += k),
            (BinaryOp::Sub, true) => shift.iter_mut().zip(&k).for_each(|(b, k)| *b -= k),
            (BinaryOp::Sub, false) => {
                scale.iter_mut().for_each(|a| *a = -*a);
                shift.iter_mut().zip(&k).for_each(|(b, k)| *b = k - *b);
            }
            (BinaryOp::Mul, _) => {
                scale.iter_mut().zip(&k).for_each(|(a, k)| *a *= k);
                shift.iter_mut().zip(&k).for_each(|(b, k)| *b *= k);
                scaled = true;
            }
            (BinaryOp::Div, true) if k.iter().all(|&k| k != 0.0 && k.is_finite()) => {
                scale.iter_mut().zip(&k).for_each(|(a, k)| *a /= k);
                shift.iter_mut().zip(&k).for_each(|(b, k)| *b /= k);
                scaled = true;
            }
            _ => break,
        }
        cur = r;
        steps += 1;
    }
    // Only worth it when weights absorb a scale or several adds merge into one.
    (scaled || steps > 1).then_some(Chain { end: cur, scale, shift })
}

fn rewrite(g: &mut Graph, n: NodeId, chain: Chain) -> Result<(), IrError> {
    let ops = g.operands(n);
    let (x, w) = (ops[0], ops[1]);
    let Op::Constant(wt) = g.node(w).op.clone() else { unreachable!("checked by channel_axis") };
    let is_conv = matches!(g.node(n).op, Op::Conv(_));
    let c = chain.scale.len();
    let name = g.node(n).name.clone();
    let w2 = g.constant(scale_weights(&wt, &chain.scale, is_conv)?, &format!("{}_folded", g.node(w).name));
    let op = g.node(n).op.clone();
    let mut out = g.add(op, &[x, w2], &name)?;
    if chain.shift.iter().any(|&b| b != 0.0) {
        let rank = g.ty(n).rank();
        let bias_shape = if is_conv { std::iter::once(c).chain(std::iter::repeat_n(1, rank - 2)).collect() } else { vec![c] };
        let bias = g.constant(Tensor::from_f32(bias_shape, &chain.shift), &format!("{name}_bias"));
        out = g.add(Op::Binary(BinaryOp::Add), &[out, bias], &g.node(chain.end).name.clone())?;
    }
    g.replace_uses(chain.end, out);
    Ok(())
}
