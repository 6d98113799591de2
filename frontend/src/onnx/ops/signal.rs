//! Signal processing: window functions, DFT (as products with compile-time twiddle matrices)
//! and STFT (sliding windows + DFT).

use super::{one, R};
use crate::onnx::{tensor::dtype_from_onnx, Importer, NodeCtx};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, Scalar, Tensor, UnaryOp};
use odc_passes::{norm_axis, Builder};
use std::f64::consts::PI;

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

pub fn window(imp: &mut Importer, n: &NodeCtx) -> R {
    let b = &mut imp.b;
    let size = b.const_ints(n.input(0)?, &format!("{}'s size", n.op()))?[0];
    if size < 0 {
        return Err(inval("window size must be non-negative"));
    }
    let dt = dtype_from_onnx(n.attr_i("output_datatype", 1) as i32)
        .map_err(|d| FrontendError::Unsupported(format!("window of type {d}")))?;
    let periodic = n.attr_i("periodic", 1) != 0;
    let size = size as usize;
    let n1 = if periodic { size as f64 } else { size as f64 - 1.0 };
    // Computed in f32 from an iota, like the reference's arange in the output type.
    let work = if dt == DType::F64 { DType::F64 } else { DType::F32 };
    let i = b.iota(work, &[size], 0)?;
    let cos_of = |b: &mut Builder, k: f64| -> Result<NodeId, FrontendError> {
        let a = b.binary_c(BinaryOp::Mul, i, k * PI / n1)?;
        Ok(b.unary(UnaryOp::Cos, a)?)
    };
    let y = match n.op() {
        "HannWindow" => {
            let a = b.binary_c(BinaryOp::Mul, i, PI / n1)?;
            let s = b.unary(UnaryOp::Sin, a)?;
            b.mul(s, s)?
        }
        "HammingWindow" => {
            let alpha = 25.0 / 46.0;
            let c = cos_of(b, 2.0)?;
            let c = b.binary_c(BinaryOp::Mul, c, -(1.0 - alpha))?;
            b.binary_c(BinaryOp::Add, c, alpha)?
        }
        _ => {
            let c2 = cos_of(b, 2.0)?;
            let c2 = b.binary_c(BinaryOp::Mul, c2, -0.5)?;
            let c4 = cos_of(b, 4.0)?;
            let c4 = b.binary_c(BinaryOp::Mul, c4, 0.08)?;
            let s = b.add2(c2, c4)?;
            b.binary_c(BinaryOp::Add, s, 0.42)?
        }
    };
    one(b.cast(y, dt)?)
}

/// A constant `[rows, cols]` matrix of `f(r, c)`.
fn matrix(b: &mut Builder, dt: DType, rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Result<NodeId, FrontendError> {
    let v: Vec<f64> = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| f(r, c)).collect();
    Ok(b.constant(Tensor::from_f64_as(dt, vec![rows, cols], &v)?))
}

/// Resize `x` along `axis` to `len` (truncate or zero-pad at the end).
fn fit(b: &mut Builder, x: NodeId, axis: usize, len: usize) -> Result<NodeId, FrontendError> {
    let d = b.shape(x)[axis];
    if d > len {
        return Ok(b.slice_axis(x, axis, 0, 1, len)?);
    }
    if d < len {
        let r = b.rank(x);
        let mut high = vec![0i64; r];
        high[axis] = (len - d) as i64;
        return Ok(b.pad_const(x, &vec![0; r], &high, Scalar::F64(0.0))?);
    }
    Ok(x)
}

/// `x @ m` applied along `axis` of `x`.
fn along(b: &mut Builder, x: NodeId, axis: usize, m: NodeId) -> Result<NodeId, FrontendError> {
    let r = b.rank(x);
    let mut perm: Vec<usize> = (0..r).filter(|&a| a != axis).collect();
    perm.push(axis);
    let t = b.transpose(x, &perm)?;
    let y = b.matmul(t, m)?;
    let mut inv = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    Ok(b.transpose(y, &inv)?)
}

/// DFT of `x` ([..., 1|2], the last axis real/imag) along `axis`; returns [..., 2] (or [..., 1]
/// for an inverse one-sided transform).
pub(crate) fn dft(b: &mut Builder, x: NodeId, axis: usize, len: usize, inverse: bool, onesided: bool) -> Result<NodeId, FrontendError> {
    let dt = b.dtype(x);
    let s = b.shape(x);
    let last = s.len() - 1;
    let (xr, xi) = match s[last] {
        1 => (b.squeeze(x, &[last])?, None),
        2 => {
            let r = b.slice_axis(x, last, 0, 1, 1)?;
            let i = b.slice_axis(x, last, 1, 1, 1)?;
            (b.squeeze(r, &[last])?, Some(b.squeeze(i, &[last])?))
        }
        d => return Err(inval(format!("DFT input's last dimension must be 1 or 2, got {d}"))),
    };
    let nf = len as f64;
    let w = |k: usize, n: usize| 2.0 * PI * ((k * n) % len.max(1)) as f64 / nf;
    if inverse && onesided {
        // irfft: Hermitian spectrum of len/2 + 1 bins to a real signal of `len`.
        let bins = len / 2 + 1;
        let xr = fit(b, xr, axis, bins)?;
        let weight = |k: usize| if k == 0 || (len % 2 == 0 && k == len / 2) { 1.0 } else { 2.0 };
        let c = matrix(b, dt, bins, len, |k, n| weight(k) * w(k, n).cos() / nf)?;
        let mut y = along(b, xr, axis, c)?;
        if let Some(xi) = xi {
            let xi = fit(b, xi, axis, bins)?;
            let sm = matrix(b, dt, bins, len, |k, n| -weight(k) * w(k, n).sin() / nf)?;
            let yi = along(b, xi, axis, sm)?;
            y = b.add2(y, yi)?;
        }
        let r = b.rank(y);
        return Ok(b.unsqueeze(y, &[r])?);
    }
    let xr = fit(b, xr, axis, len)?;
    let xi = match xi {
        Some(i) => Some(fit(b, i, axis, len)?),
        None => None,
    };
    let out_bins = if onesided && !inverse { len / 2 + 1 } else { len };
    let scale = if inverse { 1.0 / nf } else { 1.0 };
    let sign = if inverse { 1.0 } else { -1.0 };
    let c = matrix(b, dt, len, out_bins, |n, k| scale * w(k, n).cos())?;
    let sn = matrix(b, dt, len, out_bins, |n, k| sign * scale * w(k, n).sin())?;
    // (xr + i xi)(cos + i sign sin)
    let rc = along(b, xr, axis, c)?;
    let rs = along(b, xr, axis, sn)?;
    let (re, im) = match xi {
        Some(xi) => {
            let ic = along(b, xi, axis, c)?;
            let is = along(b, xi, axis, sn)?;
            (b.sub(rc, is)?, b.add2(ic, rs)?)
        }
        None => (rc, rs),
    };
    let r = b.rank(re);
    let re = b.unsqueeze(re, &[r])?;
    let im = b.unsqueeze(im, &[r])?;
    Ok(b.concat(&[re, im], r)?)
}

pub fn dft_op(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let r = b.rank(x);
    let axis = if n.opset >= 20 {
        match n.opt_input(2) {
            Some(a) => b.const_ints(a, "DFT axis")?[0],
            None => -2,
        }
    } else {
        n.attr_i("axis", 1)
    };
    let axis = norm_axis(axis, r)?;
    if axis == r - 1 {
        return Err(inval("DFT axis cannot be the real/imaginary axis"));
    }
    let inverse = n.attr_i("inverse", 0) != 0;
    let onesided = n.attr_i("onesided", 0) != 0;
    let d = b.shape(x)[axis];
    let len = match n.opt_input(1) {
        Some(l) => b.const_ints(l, "DFT length")?[0] as usize,
        None if inverse && onesided => 2 * (d - 1),
        None => d,
    };
    one(dft(b, x, axis, len, inverse, onesided)?)
}

pub fn stft(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let step = b.const_ints(n.input(1)?, "STFT frame_step")?[0] as usize;
    let window = n.opt_input(2);
    let s = b.shape(x);
    if s.len() != 3 {
        return Err(inval("STFT signal must be [batch, length, 1|2]"));
    }
    let frame = match n.opt_input(3) {
        Some(f) => b.const_ints(f, "STFT frame_length")?[0] as usize,
        None => match window {
            Some(w) => b.shape(w)[0],
            None => s[1],
        },
    };
    if step == 0 || frame == 0 || frame > s[1] {
        return Err(inval("STFT needs 0 < frame_length <= signal length and a positive step"));
    }
    // [b, L, c] -> [b, c, L] -> windows [b, c, F, frame] -> [b, F, frame, c]
    let t = b.transpose(x, &[0, 2, 1])?;
    let w = b.add(Op::Window { kernel: vec![frame], strides: vec![step], dilations: vec![1] }, &[t])?;
    let mut frames = b.transpose(w, &[0, 2, 3, 1])?;
    if let Some(win) = window {
        let wr = b.reshape(win, &[1, 1, frame, 1])?;
        frames = b.mul(frames, wr)?;
    }
    let onesided = n.attr_i("onesided", 1) != 0;
    one(dft(b, frames, 2, frame, false, onesided)?)
}
