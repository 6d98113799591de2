//! Rotary position embeddings: the rotation itself (rotate-half or interleaved pairs, full or
//! partial head width) and the cos/sin tables for given inverse frequencies.

use crate::build::{Builder, Result};
use odc_ir::{IrError, NodeId, Tensor};

/// Which features [`Builder::rotary_embedding`] rotates, and how they pair up.
#[derive(Clone, Copy, Debug, Default)]
pub struct RopeOptions {
    /// Pairs are adjacent features `(2i, 2i+1)`; otherwise `(i, i + rot/2)` (rotate-half, the
    /// Hugging Face convention).
    pub interleaved: bool,
    /// How many leading features rotate (all of them when `None`); the rest pass through.
    pub rotary_dim: Option<usize>,
}

impl Builder<'_> {
    /// Rotate the last axis of `x` by the angles whose `cos`/`sin` are given: `[.., rot/2]`
    /// tensors broadcastable against `x` without its last axis (one angle per pair). Pair
    /// `(a, b)` becomes `(a cos - b sin, a sin + b cos)`.
    pub fn rotary_embedding(&mut self, x: NodeId, cos: NodeId, sin: NodeId, o: &RopeOptions) -> Result<NodeId> {
        let shape = self.shape(x);
        let last = shape.len().checked_sub(1).ok_or_else(|| IrError::new("rotary embedding of a scalar"))?;
        let head = shape[last];
        let rot = o.rotary_dim.unwrap_or(head);
        if rot % 2 != 0 || rot > head || rot == 0 {
            return Err(IrError::new(format!("rotary dimension {rot} must be even, positive and at most the head size {head}")));
        }
        let half = rot / 2;
        if self.shape(cos).last() != Some(&half) || self.shape(sin).last() != Some(&half) {
            return Err(IrError::new(format!("cos/sin tables must end in rotary_dim / 2 = {half}, got {:?} and {:?}", self.shape(cos), self.shape(sin))));
        }
        let xr = if rot < head { self.slice_axis(x, last, 0, 1, rot)? } else { x };
        let (x1, x2) = if o.interleaved {
            (self.slice_axis(xr, last, 0, 2, half)?, self.slice_axis(xr, last, 1, 2, half)?)
        } else {
            (self.slice_axis(xr, last, 0, 1, half)?, self.slice_axis(xr, last, half as i64, 1, half)?)
        };
        let a = self.mul(cos, x1)?;
        let c = self.mul(sin, x2)?;
        let real = self.sub(a, c)?;
        let d = self.mul(sin, x1)?;
        let e = self.mul(cos, x2)?;
        let imag = self.add2(d, e)?;
        let rotated = if o.interleaved {
            let mut paired = self.shape(real);
            paired.push(1);
            let r1 = self.reshape(real, &paired)?;
            let i1 = self.reshape(imag, &paired)?;
            let c = self.concat(&[r1, i1], last + 1)?;
            let mut out = shape.clone();
            out[last] = rot;
            self.reshape(c, &out)?
        } else {
            self.concat(&[real, imag], last)?
        };
        if rot < head {
            let rest = self.slice_axis(x, last, rot as i64, 1, head - rot)?;
            self.concat(&[rotated, rest], last)
        } else {
            Ok(rotated)
        }
    }

    /// Constant cos and sin tables `[positions, inv_freq.len()]` for positions `0..positions`:
    /// the angle `p * f` is rounded to f32 first, as PyTorch reference implementations compute it.
    pub fn rope_tables(&mut self, positions: usize, inv_freq: &[f64]) -> (NodeId, NodeId) {
        let half = inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(positions * half), Vec::with_capacity(positions * half));
        for p in 0..positions {
            for &f in inv_freq {
                let angle = (p as f32 * f as f32) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let shape = vec![positions, half];
        (self.constant(Tensor::from_f32_vec(shape.clone(), cos)), self.constant(Tensor::from_f32_vec(shape, sin)))
    }
}
