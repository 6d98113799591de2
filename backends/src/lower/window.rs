//! Windowed kernels over a padded input: a direct convolution or a pooling window that reads
//! its constant pad inline, lowered as one kernel per output box (the interior, where the bounds
//! tests fold away, and the border bands that keep them), instead of a padded copy.

use super::emit::KernelLowering;
use super::LowerState;
use crate::kernel::{Body, E};
use crate::math;
use odc_ir::{Graph, IrError, NodeId, Op, OpFamily, PadMode};
use std::collections::HashSet;

/// Pads read by a convolution or a window: copied once into a padded buffer, so the windowed
/// loops (read up to kernel-size times per element) load without bounds tests.
pub(super) fn padded_window_inputs(g: &Graph) -> HashSet<NodeId> {
    g.node_ids()
        .into_iter()
        .filter(|&n| matches!(g.node(n).op, Op::Pad { .. }))
        .filter(|&n| g.users(n).iter().any(|&u| matches!(g.node(u).op, Op::Conv(_) | Op::Window { .. })))
        .collect()
}

impl<'g> LowerState<'g> {
    /// The direct convolution or reduction kernel root `n` computes at each of its output
    /// elements: `n` itself, or the one inlined into `n`'s elementwise chain (a depthwise
    /// convolution under its bias and ReLU), which has `n`'s shape.
    pub(super) fn windowed_node(&self, n: NodeId) -> Option<NodeId> {
        let g = self.g;
        let per_element = |m: NodeId| matches!(g.node(m).op, Op::Conv(_) | Op::Reduce { .. });
        if per_element(n) {
            return Some(n);
        }
        let mut found = vec![];
        let mut stack = vec![n];
        let mut seen = HashSet::new();
        while let Some(m) = stack.pop() {
            if !seen.insert(m) {
                continue;
            }
            for o in g.operands(m) {
                if !self.plan.is_fused(o) || self.buffer_of.contains_key(&o) {
                    continue;
                }
                if per_element(o) {
                    found.push(o);
                } else if g.node(o).op.family() == OpFamily::Elementwise {
                    stack.push(o);
                }
            }
        }
        match found.as_slice() {
            [w] if g.ty(*w).shape == g.ty(n).shape => Some(*w),
            _ => None,
        }
    }

    /// A direct convolution or a window reduction (pooling) `n` reading a zero-or-constant pad
    /// that would be materialised: the pad and, per padded output axis, the range of outputs
    /// whose whole window lies inside the unpadded input.
    pub(super) fn window_over_pad(&self, n: NodeId) -> Option<(NodeId, Vec<(usize, usize, usize)>)> {
        let g = self.g;
        // (padded operand, its first windowed axis, kernel, strides, dilations, root axis of window axis 0)
        let (pad, first, kernel, strides, dilations, root_first) = match &g.node(n).op {
            Op::Conv(cv) => {
                let ops = g.operands(n);
                let ws = &g.ty(ops[1]).shape;
                (ops[0], 2, ws[2..].to_vec(), cv.strides.clone(), cv.dilations.clone(), 2)
            }
            Op::Reduce { axes, .. } => {
                let w = g.operands(n)[0];
                let Op::Window { kernel, strides, dilations } = &g.node(w).op else { return None };
                let p = g.operands(w)[0];
                let first = g.ty(p).shape.len() - kernel.len();
                let window_axes: Vec<usize> = (0..kernel.len()).map(|i| first + kernel.len() + i).collect();
                if *axes != window_axes {
                    return None;
                }
                (p, first, kernel.clone(), strides.clone(), dilations.clone(), first)
            }
            _ => return None,
        };
        if !self.materialized_views.contains(&pad) || self.buffer_of.contains_key(&pad) {
            return None;
        }
        let Op::Pad { low, interior, mode: PadMode::Constant(_), high } = &g.node(pad).op else { return None };
        let unpadded = &g.ty(g.operands(pad)[0]).shape;
        let plain = low.iter().chain(high).all(|&p| p >= 0) && interior.iter().all(|&i| i == 0);
        if !plain || low[..first].iter().chain(&high[..first]).any(|&p| p != 0) {
            return None;
        }
        let out = &g.ty(n).shape;
        let mut ranges = vec![];
        for (i, &k) in kernel.iter().enumerate() {
            let (a, o) = (first + i, out[root_first + i] as i64);
            let (s, d, lo_pad, size) = (strides[i] as i64, dilations[i] as i64, low[a], unpadded[a] as i64);
            // o*s >= low and o*s + (k-1)*d < low + size.
            let lo = (lo_pad + s - 1).div_euclid(s).clamp(0, o);
            let last = lo_pad + size - 1 - (k as i64 - 1) * d;
            // No window fits inside: an empty interior, all border.
            let hi = if last < 0 { lo } else { (last.div_euclid(s) + 1).clamp(lo, o) };
            if lo > 0 || hi < o {
                ranges.push((root_first + i, lo as usize, hi as usize));
            }
        }
        // The innermost axis stays a vector loop: an interior narrower than a vector would run
        // scalar, losing more than the bounds tests cost (measured on kws_cnn's 5-wide maps).
        let (inner, lanes) = (out.len() - 1, self.opts.machine.lanes);
        if ranges.iter().any(|&(a, lo, hi)| a == inner && hi - lo < lanes && out[inner] >= lanes) {
            return None;
        }
        (!ranges.is_empty()).then_some((pad, ranges))
    }

    /// Lower `n` (see [`Self::window_over_pad`]) reading its pad inline, as one kernel per box of
    /// the output: the interior, where every window lies inside the input and the bounds tests
    /// fold away, and the border bands, which keep them. No padded copy is written.
    pub(super) fn lower_window_boxes(&mut self, n: NodeId, out: usize, name: &str, pad: NodeId, ranges: &[(usize, usize, usize)]) -> Result<(), IrError> {
        let shape = self.g.ty(n).shape.clone();
        let dtype = self.g.ty(n).dtype;
        // Bands: along each split axis in turn, the part before and after its safe range
        // (spanning the remaining axes fully), then recurse into the middle.
        let mut boxes: Vec<(Vec<(usize, usize)>, String)> = vec![];
        let mut middle: Vec<(usize, usize)> = shape.iter().map(|&d| (0, d)).collect();
        for &(axis, lo, hi) in ranges {
            for (start, end, side) in [(0, lo, "lo"), (hi, shape[axis], "hi")] {
                if start < end {
                    let mut b = middle.clone();
                    b[axis] = (start, end - start);
                    boxes.push((b, format!("border{axis}{side}")));
                }
            }
            middle[axis] = (lo, hi - lo);
        }
        if middle.iter().all(|&(_, len)| len > 0) {
            boxes.push((middle, "interior".into()));
        }
        for (bx, suffix) in boxes {
            let mut kl = KernelLowering::new(self, Some(n), out);
            kl.inline_pad = Some(pad);
            let lens: Vec<usize> = bx.iter().map(|&(_, len)| len).collect();
            let (vars, local) = kl.domain(&lens);
            let idx: Vec<E> = local.iter().zip(&bx).map(|(&i, &(start, _))| kl.kb.add_c(i, start as i64)).collect();
            let v = kl.emit_node(n, &idx)?;
            let v = math::encode(&mut kl.kb, v, dtype);
            let flat = kl.kb.flat_index(&idx, &shape);
            let (k, args) = kl.finish(format!("{name}_{suffix}"), vars, Body::map_at(v, flat));
            self.push_kernel(k, args);
        }
        Ok(())
    }
}
