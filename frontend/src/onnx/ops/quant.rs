//! Quantisation: (De)QuantizeLinear, dynamic quantisation and the integer contractions.

use super::{many, one, R};
use crate::onnx::{tensor::dtype_from_onnx, Importer, NodeCtx};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, ReduceOp, UnaryOp};
use odc_passes::{norm_axis, Builder};

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

/// Broadcast a scale/zero-point against `x`: per tensor, per axis, or per block along `axis`.
fn broadcast_param(b: &mut Builder, p: NodeId, xshape: &[usize], axis: usize, block: usize) -> Result<NodeId, FrontendError> {
    let ps = b.shape(p);
    let n: usize = ps.iter().product();
    if ps.is_empty() || (n == 1 && block == 0) {
        return Ok(b.reshape(p, &[])?);
    }
    if block == 0 {
        if ps.len() != 1 || ps[0] != xshape[axis] {
            return Err(inval(format!("per-axis parameter {ps:?} does not match axis {axis} of {xshape:?}")));
        }
        let mut shape = vec![1usize; xshape.len()];
        shape[axis] = ps[0];
        return Ok(b.reshape(p, &shape)?);
    }
    // Blocked: repeat each entry `block` times along the axis.
    if ps.len() != xshape.len() || ps[axis] != xshape[axis].div_ceil(block) {
        return Err(inval(format!("blocked parameter {ps:?} does not match {xshape:?} with block {block}")));
    }
    let idx: Vec<i64> = (0..xshape[axis]).map(|i| (i / block) as i64).collect();
    let ic = b.const_i64(vec![xshape[axis]], &idx);
    Ok(b.add(Op::Gather { axis }, &[p, ic])?)
}

/// The quantisation axis; only meaningful (and checked) for per-axis or blocked parameters.
fn param_axis(b: &Builder, n: &NodeCtx, scale: NodeId, rank: usize) -> Result<usize, FrontendError> {
    let per_tensor = b.ty(scale).num_elements() == 1 && n.attr_i("block_size", 0) == 0;
    if per_tensor {
        return Ok(0);
    }
    Ok(norm_axis(n.attr_i("axis", 1), rank)?)
}

fn int_range(t: DType) -> Option<(f64, f64)> {
    Some(match t {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        DType::U4 => (0.0, 15.0),
        DType::I4 => (-8.0, 7.0),
        DType::U2 => (0.0, 3.0),
        DType::I2 => (-2.0, 1.0),
        _ => return None,
    })
}

/// round-half-even(v) + zp, saturated to `to`'s range, in f32.
fn saturate_round(b: &mut Builder, v: NodeId, zp: Option<NodeId>, to: DType) -> Result<NodeId, FrontendError> {
    let r = b.unary(UnaryOp::Round, v)?;
    let r = match zp {
        Some(z) => {
            let zf = b.cast(z, b.dtype(r))?;
            b.add2(r, zf)?
        }
        None => r,
    };
    let (lo, hi) = int_range(to).ok_or_else(|| FrontendError::Unsupported(format!("quantising to {to}")))?;
    let lo = b.scalar(b.dtype(r), lo)?;
    let hi = b.scalar(b.dtype(r), hi)?;
    let c = b.max(r, lo)?;
    let c = b.min(c, hi)?;
    Ok(b.cast(c, to)?)
}

pub fn quantize_linear(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let scale = n.input(1)?;
    let zp = n.opt_input(2);
    let b = &mut imp.b;
    let xshape = b.shape(x);
    let axis = param_axis(b, n, scale, xshape.len())?;
    let block = n.attr_i("block_size", 0).max(0) as usize;
    let to = if let Some(z) = zp {
        b.dtype(z)
    } else if n.has_attr("output_dtype") && n.attr_i("output_dtype", 0) != 0 {
        dtype_from_onnx(n.attr_i("output_dtype", 0) as i32).map_err(|d| FrontendError::Unsupported(format!("QuantizeLinear to {d}")))?
    } else {
        DType::U8
    };
    let work = if b.dtype(x) == DType::F64 { DType::F64 } else { DType::F32 };
    let xf = b.cast(x, work)?;
    let s = broadcast_param(b, scale, &xshape, axis, block)?;
    let s = b.cast(s, work)?;
    let q = b.div(xf, s)?;
    if to.is_float() {
        let saturate = n.attr_i("saturate", 1) != 0;
        let q = match zp {
            Some(z) => {
                let zb = broadcast_param(b, z, &xshape, axis, block)?;
                let zf = b.cast(zb, work)?;
                b.add2(q, zf)?
            }
            None => q,
        };
        return one(b.add(Op::Cast { to, saturate }, &[q])?);
    }
    let zb = match zp {
        Some(z) => Some(broadcast_param(b, z, &xshape, axis, block)?),
        None => None,
    };
    one(saturate_round(b, q, zb, to)?)
}

pub fn dequantize_linear(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let scale = n.input(1)?;
    let zp = n.opt_input(2);
    let b = &mut imp.b;
    let xshape = b.shape(x);
    let axis = param_axis(b, n, scale, xshape.len())?;
    let block = n.attr_i("block_size", 0).max(0) as usize;
    let out = if n.has_attr("output_dtype") && n.attr_i("output_dtype", 0) != 0 {
        dtype_from_onnx(n.attr_i("output_dtype", 0) as i32).map_err(|d| FrontendError::Unsupported(format!("DequantizeLinear to {d}")))?
    } else {
        b.dtype(scale)
    };
    let xf = b.cast(x, DType::F32)?;
    let xf = match zp {
        Some(z) => {
            let zb = broadcast_param(b, z, &xshape, axis, block)?;
            let zf = b.cast(zb, DType::F32)?;
            b.sub(xf, zf)?
        }
        None => xf,
    };
    let s = broadcast_param(b, scale, &xshape, axis, block)?;
    let s = b.cast(s, DType::F32)?;
    let y = b.mul(xf, s)?;
    one(b.cast(y, out)?)
}

pub fn dynamic_quantize_linear(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let r = b.rank(x);
    let all: Vec<usize> = (0..r).collect();
    let zero = b.scalar(DType::F32, 0.0)?;
    let mn = b.reduce(ReduceOp::Min, x, &all, false)?;
    let mx = b.reduce(ReduceOp::Max, x, &all, false)?;
    let mn = b.min(mn, zero)?;
    let mx = b.max(mx, zero)?;
    let range = b.sub(mx, mn)?;
    let scale = b.binary_c(BinaryOp::Div, range, 255.0)?;
    let nm = b.div(mn, scale)?;
    let zpf = b.sub(zero, nm)?;
    let zp = saturate_round(b, zpf, None, DType::U8)?;
    let q = b.div(x, scale)?;
    let y = saturate_round(b, q, Some(zp), DType::U8)?;
    many(vec![y, scale, zp])
}

/// `x - zp` in i32 with a zero point broadcast along `axis` of `x` (or scalar).
fn center_i32(b: &mut Builder, x: NodeId, zp: Option<NodeId>, axis: Option<usize>) -> Result<NodeId, FrontendError> {
    let xi = b.cast(x, DType::I32)?;
    let Some(z) = zp else { return Ok(xi) };
    let zi = b.cast(z, DType::I32)?;
    let zs = b.shape(zi);
    let zn: usize = zs.iter().product();
    let zb = if zn == 1 {
        b.reshape(zi, &[])?
    } else {
        let axis = axis.ok_or_else(|| inval("per-axis zero point where only a scalar is allowed"))?;
        let r = b.rank(xi);
        let mut shape = vec![1usize; r];
        shape[axis] = zn;
        b.reshape(zi, &shape)?
    };
    Ok(b.sub(xi, zb)?)
}

/// A zero point as an i32 operand broadcasting against `[.., M, N]`: a scalar, or a vector along
/// the rows (`M`, for A's) or the columns (`N`, for B's).
fn zero_point_i32(b: &mut Builder, z: NodeId, rows: bool) -> Result<NodeId, FrontendError> {
    let zi = b.cast(z, DType::I32)?;
    let n = b.ty(zi).num_elements();
    Ok(if n == 1 {
        b.reshape(zi, &[])?
    } else if rows {
        b.reshape(zi, &[n, 1])?
    } else {
        b.reshape(zi, &[n])?
    })
}

/// `(a - za) @ (b - zb)` in i32, expanded as `a@b - rowsum(a)*zb - za*colsum(b) + k*za*zb` so
/// the product multiplies the 8-bit values themselves (the int8 dot-product GEMM); the
/// corrections are cheap reductions that fuse into its epilogue.
fn matmul_zero_points(b: &mut Builder, a: NodeId, za: Option<NodeId>, bb: NodeId, zb: Option<NodeId>) -> Result<NodeId, FrontendError> {
    let (ai, bi) = (b.cast(a, DType::I32)?, b.cast(bb, DType::I32)?);
    let (ra, rb) = (b.rank(ai), b.rank(bi));
    if ra < 2 || rb < 2 {
        // Vector operands: subtract the zero points first (no GEMM to keep 8-bit).
        let ac = center_i32(b, a, za, Some(ra.saturating_sub(2)))?;
        let bc = center_i32(b, bb, zb, Some(rb.saturating_sub(1)))?;
        return Ok(b.matmul(ac, bc)?);
    }
    let k = b.shape(ai)[ra - 1];
    let mut y = b.matmul(ai, bi)?;
    let za = za.map(|z| zero_point_i32(b, z, true)).transpose()?;
    let zb = zb.map(|z| zero_point_i32(b, z, false)).transpose()?;
    if let Some(zb) = zb {
        let rows = b.reduce(ReduceOp::Sum, ai, &[ra - 1], true)?;
        let t = b.mul(rows, zb)?;
        y = b.sub(y, t)?;
    }
    if let Some(za) = za {
        let cols = b.reduce(ReduceOp::Sum, bi, &[rb - 2], true)?;
        let t = b.mul(za, cols)?;
        y = b.sub(y, t)?;
    }
    if let (Some(za), Some(zb)) = (za, zb) {
        let zz = b.mul(za, zb)?;
        let kk = b.scalar(DType::I32, k as f64)?;
        let t = b.mul(zz, kk)?;
        y = b.add2(y, t)?;
    }
    Ok(y)
}

pub fn matmul_integer(imp: &mut Importer, n: &NodeCtx) -> R {
    let (a, bb) = (n.input(0)?, n.input(1)?);
    one(matmul_zero_points(&mut imp.b, a, n.opt_input(2), bb, n.opt_input(3))?)
}

pub fn qlinear_matmul(imp: &mut Importer, n: &NodeCtx) -> R {
    let (a, a_s, a_z) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let (bb, b_s, b_z) = (n.input(3)?, n.input(4)?, n.input(5)?);
    let (y_s, y_z) = (n.input(6)?, n.input(7)?);
    let b = &mut imp.b;
    let (ra, rb) = (b.rank(a), b.rank(bb));
    let acc = matmul_zero_points(b, a, Some(a_z), bb, Some(b_z))?;
    let accf = b.cast(acc, DType::F32)?;
    let sa = b.cast(a_s, DType::F32)?;
    let sb = b.cast(b_s, DType::F32)?;
    let sy = b.cast(y_s, DType::F32)?;
    let sa = scalar_or_axis(b, sa, ra, ra.saturating_sub(2))?;
    let sb = scalar_or_axis(b, sb, rb, rb - 1)?;
    let m = b.mul(accf, sa)?;
    let m = b.mul(m, sb)?;
    let sy = b.reshape(sy, &[])?;
    let q = b.div(m, sy)?;
    let to = b.dtype(y_z);
    let yz = b.reshape(y_z, &[])?;
    one(saturate_round(b, q, Some(yz), to)?)
}

fn scalar_or_axis(b: &mut Builder, p: NodeId, rank: usize, axis: usize) -> Result<NodeId, FrontendError> {
    let n = b.ty(p).num_elements();
    if n == 1 {
        return Ok(b.reshape(p, &[])?);
    }
    let mut shape = vec![1usize; rank];
    shape[axis] = n;
    Ok(b.reshape(p, &shape)?)
}

pub fn conv_integer(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, w) = (n.input(0)?, n.input(1)?);
    let b = &mut imp.b;
    let xi = center_i32(b, x, n.opt_input(2), Some(1))?;
    let wi = center_i32(b, w, n.opt_input(3), Some(0))?;
    one(super::nn::conv_node(b, n, xi, wi)?)
}

pub fn qlinear_conv(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, x_s, x_z) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let (w, w_s, w_z) = (n.input(3)?, n.input(4)?, n.input(5)?);
    let (y_s, y_z) = (n.input(6)?, n.input(7)?);
    let bias = n.opt_input(8);
    let b = &mut imp.b;
    let xi = center_i32(b, x, Some(x_z), Some(1))?;
    let wi = center_i32(b, w, Some(w_z), Some(0))?;
    let mut acc = super::nn::conv_node(b, n, xi, wi)?;
    let r = b.rank(acc);
    if let Some(bias) = bias {
        let bi = b.cast(bias, DType::I32)?;
        let mut shape = vec![b.ty(bi).num_elements()];
        shape.extend(std::iter::repeat_n(1, r - 2));
        let bi = b.reshape(bi, &shape)?;
        acc = b.add2(acc, bi)?;
    }
    let accf = b.cast(acc, DType::F32)?;
    let sx = b.cast(x_s, DType::F32)?;
    let sx = b.reshape(sx, &[])?;
    let sw = b.cast(w_s, DType::F32)?;
    let sw = scalar_or_axis(b, sw, r, 1)?;
    let sy = b.cast(y_s, DType::F32)?;
    let sy = b.reshape(sy, &[])?;
    let m = b.mul(accf, sx)?;
    let m = b.mul(m, sw)?;
    let q = b.div(m, sy)?;
    let to = b.dtype(y_z);
    let yz = b.reshape(y_z, &[])?;
    one(saturate_round(b, q, Some(yz), to)?)
}
