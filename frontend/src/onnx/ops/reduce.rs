//! Reductions, arg-reductions, softmax, cumulative ops, top-k and normalisations.

use super::shape::axes_of;
use super::{many, one, R};
use crate::onnx::{Importer, NodeCtx, Value};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, ReduceOp, UnaryOp};
use odc_passes::{norm_axis, Builder};

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

/// The axes a Reduce* node reduces, or `None` for "no-op".
fn reduce_axes(imp: &mut Importer, n: &NodeCtx, rank: usize) -> Result<Option<Vec<usize>>, FrontendError> {
    let input_version = if n.op() == "ReduceSum" { 13 } else { 18 };
    let given = if n.opset >= input_version {
        match n.opt_input(1) {
            Some(a) => Some(imp.b.const_ints(a, "reduction axes")?),
            None => None,
        }
    } else {
        n.attr_ints("axes")
    };
    let noop = n.attr_i("noop_with_empty_axes", 0) != 0;
    match given {
        Some(a) if !a.is_empty() => Ok(Some(axes_of(&a, rank)?)),
        _ if noop => Ok(None),
        _ => Ok(Some((0..rank).collect())),
    }
}

pub fn reduce(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let keep = n.attr_i("keepdims", 1) != 0;
    let rank = imp.b.rank(x);
    let Some(axes) = reduce_axes(imp, n, rank)? else {
        return one(x);
    };
    let b = &mut imp.b;
    let dt = b.dtype(x);
    // Ops that need a float domain compute in f64 for integer inputs and cast back.
    let needs_float = matches!(n.op(), "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMean");
    let xin = if needs_float && !dt.is_float() { b.cast(x, DType::F64)? } else { x };
    let y = match n.op() {
        "ReduceSum" => b.reduce(ReduceOp::Sum, xin, &axes, keep)?,
        "ReduceMax" => b.reduce(ReduceOp::Max, xin, &axes, keep)?,
        "ReduceMin" => b.reduce(ReduceOp::Min, xin, &axes, keep)?,
        "ReduceProd" => b.reduce(ReduceOp::Prod, xin, &axes, keep)?,
        "ReduceMean" => {
            let shape = b.shape(xin);
            let count: usize = axes.iter().map(|&a| shape[a]).product();
            let s = b.reduce(ReduceOp::Sum, xin, &axes, keep)?;
            b.binary_c(BinaryOp::Div, s, count as f64)?
        }
        "ReduceL1" => {
            let a = b.unary(UnaryOp::Abs, xin)?;
            b.reduce(ReduceOp::Sum, a, &axes, keep)?
        }
        "ReduceL2" => {
            let sq = b.mul(xin, xin)?;
            let s = b.reduce(ReduceOp::Sum, sq, &axes, keep)?;
            b.unary(UnaryOp::Sqrt, s)?
        }
        "ReduceSumSquare" => {
            let sq = b.mul(xin, xin)?;
            b.reduce(ReduceOp::Sum, sq, &axes, keep)?
        }
        "ReduceLogSum" => {
            let s = b.reduce(ReduceOp::Sum, xin, &axes, keep)?;
            b.unary(UnaryOp::Log, s)?
        }
        "ReduceLogSumExp" => {
            let m = b.reduce(ReduceOp::Max, xin, &axes, true)?;
            // Guard infinite maxima so x - m stays finite.
            let fin = b.unary(UnaryOp::IsPosInf, m)?;
            let fin2 = b.unary(UnaryOp::IsNegInf, m)?;
            let inf = b.binary(BinaryOp::Or, fin, fin2)?;
            let z = b.scalar(b.dtype(m), 0.0)?;
            let m = b.select(inf, z, m)?;
            let d = b.sub(xin, m)?;
            let e = b.unary(UnaryOp::Exp, d)?;
            let s = b.reduce(ReduceOp::Sum, e, &axes, true)?;
            let l = b.unary(UnaryOp::Log, s)?;
            let r = b.add2(l, m)?;
            b.reduce(ReduceOp::Sum, r, &[], true)?;
            if keep {
                r
            } else {
                b.squeeze(r, &axes)?
            }
        }
        other => return n.unsupported(format!("reduction {other}")),
    };
    one(if b.dtype(y) != dt { b.cast(y, dt)? } else { y })
}

/// Index of the first (or last) maximum/minimum along `axis`, keepdims.
fn arg_extreme(b: &mut Builder, x: NodeId, axis: usize, max: bool, last: bool) -> Result<NodeId, FrontendError> {
    let shape = b.shape(x);
    let m = b.reduce(if max { ReduceOp::Max } else { ReduceOp::Min }, x, &[axis], true)?;
    let eq = b.binary(BinaryOp::Eq, x, m)?;
    let iota = b.iota(DType::I64, &shape, axis)?;
    let fill = b.scalar(DType::I64, if last { -1.0 } else { shape[axis] as f64 })?;
    let cand = b.select(eq, iota, fill)?;
    Ok(b.reduce(if last { ReduceOp::Max } else { ReduceOp::Min }, cand, &[axis], true)?)
}

pub fn arg_reduce(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let axis = norm_axis(n.attr_i("axis", 0), b.rank(x))?;
    let keep = n.attr_i("keepdims", 1) != 0;
    let last = n.attr_i("select_last_index", 0) != 0;
    let r = arg_extreme(b, x, axis, n.op() == "ArgMax", last)?;
    one(if keep { r } else { b.squeeze(r, &[axis])? })
}

pub fn softmax_family(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let shape = b.shape(x);
    let r = shape.len();
    let legacy = n.opset < 13;
    let axis = norm_axis(n.attr_i("axis", if legacy { 1 } else { -1 }), r)?;
    // Before opset 13 the input is coerced to 2-D at `axis` and the op works on the trailing block.
    let axes: Vec<usize> = if legacy { (axis..r).collect() } else { vec![axis] };
    let y = match n.op() {
        "Softmax" => b.softmax(x, &axes)?,
        "LogSoftmax" => b.log_softmax(x, &axes)?,
        _ => {
            // Hardmax: one-hot of the first maximum.
            let (xf, flat_axis) = if legacy {
                let outer: usize = shape[..axis].iter().product();
                let inner: usize = shape[axis..].iter().product();
                (b.reshape(x, &[outer, inner])?, 1)
            } else {
                (x, axis)
            };
            let idx = arg_extreme(b, xf, flat_axis, true, false)?;
            let iota = b.iota(DType::I64, &b.shape(xf), flat_axis)?;
            let hit = b.binary(BinaryOp::Eq, iota, idx)?;
            let h = b.cast(hit, b.dtype(x))?;
            b.reshape(h, &shape)?
        }
    };
    one(y)
}

pub fn cumulative(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let shape = b.shape(x);
    let axis = norm_axis(b.const_ints(n.input(1)?, "cumulative axis")?[0], shape.len())?;
    let exclusive = n.attr_i("exclusive", 0) != 0;
    let reverse = n.attr_i("reverse", 0) != 0;
    let prod = n.op() == "CumProd";
    let len = shape[axis];
    // T[.., i, j, ..] = x[.., j, ..] if j is summed into i, else the identity; reduce over j.
    let xe = b.unsqueeze(x, &[axis])?;
    let mut big = shape.clone();
    big.insert(axis, len);
    let xe = b.expand(xe, &big)?;
    let mut ij = vec![1usize; big.len()];
    ij[axis] = len;
    ij[axis + 1] = len;
    let i = b.iota(DType::I64, &ij, axis)?;
    let j = b.iota(DType::I64, &ij, axis + 1)?;
    let op = match (reverse, exclusive) {
        (false, false) => BinaryOp::Le,
        (false, true) => BinaryOp::Lt,
        (true, false) => BinaryOp::Ge,
        (true, true) => BinaryOp::Gt,
    };
    let mask = b.binary(op, j, i)?;
    let id = b.scalar(b.dtype(x), if prod { 1.0 } else { 0.0 })?;
    let t = b.select(mask, xe, id)?;
    one(b.reduce(if prod { ReduceOp::Prod } else { ReduceOp::Sum }, t, &[axis + 1], false)?)
}

pub fn top_k(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let shape = b.shape(x);
    let axis = norm_axis(n.attr_i("axis", -1), shape.len())?;
    let k = if n.opset < 10 { n.attr_i("k", 0) } else { b.const_ints(n.input(1)?, "TopK k")?[0] };
    let len = shape[axis];
    if k < 0 || k as usize > len {
        return Err(inval(format!("TopK k={k} exceeds the axis length {len}")));
    }
    let k = k as usize;
    let largest = n.attr_i("largest", 1) != 0;
    // rank[i] = #{j : x[j] beats x[i]}, ties broken by index (stable).
    let xi = b.unsqueeze(x, &[axis + 1])?;
    let xj = b.unsqueeze(x, &[axis])?;
    let mut big = shape.clone();
    big.insert(axis, len);
    let xi = b.expand(xi, &big)?;
    let xj = b.expand(xj, &big)?;
    let beats = b.binary(if largest { BinaryOp::Gt } else { BinaryOp::Lt }, xj, xi)?;
    let eq = b.binary(BinaryOp::Eq, xj, xi)?;
    let mut ij = vec![1usize; big.len()];
    ij[axis] = len;
    ij[axis + 1] = len;
    let ii = b.iota(DType::I64, &ij, axis)?;
    let jj = b.iota(DType::I64, &ij, axis + 1)?;
    let earlier = b.binary(BinaryOp::Lt, jj, ii)?;
    let tie = b.binary(BinaryOp::And, eq, earlier)?;
    let before = b.binary(BinaryOp::Or, beats, tie)?;
    let before = b.cast(before, DType::I64)?;
    let rank = b.reduce(ReduceOp::Sum, before, &[axis + 1], false)?;
    // index[o] = the i whose rank is o.
    let re = b.unsqueeze(rank, &[axis])?;
    let mut ok = shape.clone();
    ok.insert(axis, k);
    let re = b.expand(re, &ok)?;
    let mut oi = vec![1usize; ok.len()];
    oi[axis] = k;
    oi[axis + 1] = len;
    let o = b.iota(DType::I64, &oi, axis)?;
    let i = b.iota(DType::I64, &oi, axis + 1)?;
    let hit = b.binary(BinaryOp::Eq, re, o)?;
    let zero = b.scalar(DType::I64, 0.0)?;
    let pick = b.select(hit, i, zero)?;
    let idx = b.reduce(ReduceOp::Sum, pick, &[axis + 1], false)?;
    let vals = b.add(Op::GatherElements { axis }, &[x, idx])?;
    many(vec![vals, idx])
}

pub fn lp_normalization(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let axis = norm_axis(n.attr_i("axis", -1), b.rank(x))?;
    let p = n.attr_i("p", 2);
    let norm = match p {
        1 => {
            let a = b.unary(UnaryOp::Abs, x)?;
            b.reduce(ReduceOp::Sum, a, &[axis], true)?
        }
        2 => {
            let sq = b.mul(x, x)?;
            let s = b.reduce(ReduceOp::Sum, sq, &[axis], true)?;
            b.unary(UnaryOp::Sqrt, s)?
        }
        _ => return n.unsupported(format!("LpNormalization with p={p}")),
    };
    // A zero norm gives zeros, not NaN.
    let z = b.scalar(b.dtype(x), 0.0)?;
    let is0 = b.binary(BinaryOp::Eq, norm, z)?;
    let o = b.scalar(b.dtype(x), 1.0)?;
    let safe = b.select(is0, o, norm)?;
    let q = b.div(x, safe)?;
    one(b.select(is0, z, q)?)
}

pub fn mean_variance_normalization(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let r = b.rank(x);
    let axes = axes_of(&n.attr_ints("axes").unwrap_or_else(|| vec![0, 2, 3]), r)?;
    // (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9), as the ONNX function defines it.
    let m = b.mean(x, &axes)?;
    let m2 = b.mul(m, m)?;
    let sq = b.mul(x, x)?;
    let ms = b.mean(sq, &axes)?;
    let var = b.sub(ms, m2)?;
    let sd = b.unary(UnaryOp::Sqrt, var)?;
    let sde = b.binary_c(BinaryOp::Add, sd, 1e-9)?;
    let d = b.sub(x, m)?;
    one(b.div(d, sde)?)
}

fn stash_cast(b: &mut Builder, n: &NodeCtx, x: NodeId) -> Result<NodeId, FrontendError> {
    let stash = n.attr_i("stash_type", 1);
    let dt = b.dtype(x);
    Ok(if stash == 1 && dt != DType::F32 && dt != DType::F64 { b.cast(x, DType::F32)? } else { x })
}

pub fn layer_normalization(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let scale = n.input(1)?;
    let bias = n.opt_input(2);
    let b = &mut imp.b;
    let dt = b.dtype(x);
    let r = b.rank(x);
    let axis = norm_axis(n.attr_i("axis", -1), r)?;
    let eps = n.attr_f("epsilon", 1e-5) as f64;
    let axes: Vec<usize> = (axis..r).collect();
    let xs = stash_cast(b, n, x)?;
    let (norm, mean, inv) = b.normalize_with_stats(xs, &axes, eps)?;
    let norm = b.cast(norm, dt)?;
    let mut y = b.mul(norm, scale)?;
    if let Some(bb) = bias {
        y = b.add2(y, bb)?;
    }
    Ok(vec![Value::Tensor(y), Value::Tensor(mean), Value::Tensor(inv)])
}

pub fn rms_normalization(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let scale = n.input(1)?;
    let b = &mut imp.b;
    let dt = b.dtype(x);
    let r = b.rank(x);
    let axis = norm_axis(n.attr_i("axis", -1), r)?;
    let eps = n.attr_f("epsilon", 1e-5) as f64;
    let axes: Vec<usize> = (axis..r).collect();
    let xs = stash_cast(b, n, x)?;
    let y = b.rms_norm(xs, None, &axes, eps)?;
    let y = b.cast(y, dt)?;
    one(b.mul(y, scale)?)
}

pub fn group_normalization(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let (scale, bias) = (n.input(1)?, n.input(2)?);
    let b = &mut imp.b;
    let shape = b.shape(x);
    let dt = b.dtype(x);
    let g = n.attr_i("num_groups", 0) as usize;
    let eps = n.attr_f("epsilon", 1e-5) as f64;
    let c = shape[1];
    if g == 0 || c % g != 0 {
        return Err(inval("GroupNormalization num_groups must divide the channels"));
    }
    let xs = stash_cast(b, n, x)?;
    let y = b.group_norm(xs, g, eps)?;
    let y = b.cast(y, dt)?;
    // Opset 18 takes one scale/bias per group, later opsets one per channel.
    let expand_group = |b: &mut Builder, p: NodeId| -> Result<NodeId, FrontendError> {
        if b.ty(p).num_elements() == g && g != c {
            let r = b.reshape(p, &[g, 1])?;
            let e = b.expand(r, &[g, c / g])?;
            Ok(b.reshape(e, &[c])?)
        } else {
            Ok(p)
        }
    };
    let s = expand_group(b, scale)?;
    let bb = expand_group(b, bias)?;
    one(b.channel_affine(y, s, bb)?)
}

pub fn instance_normalization(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let (scale, bias) = (n.input(1)?, n.input(2)?);
    let eps = n.attr_f("epsilon", 1e-5) as f64;
    one(imp.b.instance_norm(x, scale, bias, eps)?)
}

pub fn batch_normalization(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let (scale, bias, mean, var) = (n.input(1)?, n.input(2)?, n.input(3)?, n.input(4)?);
    let eps = n.attr_f("epsilon", 1e-5) as f64;
    let momentum = n.attr_f("momentum", 0.9) as f64;
    let training = n.opset >= 14 && n.attr_i("training_mode", 0) != 0;
    if n.opset < 9 && n.attr_i("spatial", 1) == 0 {
        return n.unsupported("BatchNormalization with spatial=0");
    }
    let b = &mut imp.b;
    let r = b.rank(x);
    let dt = b.dtype(x);
    let cast_to = |b: &mut Builder, p: NodeId| -> Result<NodeId, FrontendError> { Ok(b.cast(p, dt)?) };
    let (scale, bias) = (cast_to(b, scale)?, cast_to(b, bias)?);
    let (m, v, outs) = if training {
        let axes: Vec<usize> = (0..r).filter(|&a| a != 1).collect();
        let bm = b.mean(x, &axes)?;
        let d = b.sub(x, bm)?;
        let sq = b.mul(d, d)?;
        let bv = b.mean(sq, &axes)?;
        let c = b.shape(mean);
        let bm_c = b.reshape(bm, &c)?;
        let bv_c = b.reshape(bv, &c)?;
        let bm_c = b.cast(bm_c, b.dtype(mean))?;
        let bv_c = b.cast(bv_c, b.dtype(var))?;
        let rm1 = b.binary_c(BinaryOp::Mul, mean, momentum)?;
        let rm2 = b.binary_c(BinaryOp::Mul, bm_c, 1.0 - momentum)?;
        let running_mean = b.add2(rm1, rm2)?;
        let rv1 = b.binary_c(BinaryOp::Mul, var, momentum)?;
        let rv2 = b.binary_c(BinaryOp::Mul, bv_c, 1.0 - momentum)?;
        let running_var = b.add2(rv1, rv2)?;
        (bm, bv, vec![running_mean, running_var])
    } else {
        let m = cast_to(b, mean)?;
        let v = cast_to(b, var)?;
        (b.per_channel(m, r)?, b.per_channel(v, r)?, vec![])
    };
    let y = b.batch_norm(x, scale, bias, m, v, eps)?;
    let mut res = vec![y];
    res.extend(outs);
    many(res)
}

pub fn lrn(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let alpha = n.attr_f("alpha", 1e-4) as f64;
    let beta = n.attr_f("beta", 0.75) as f64;
    let bias = n.attr_f("bias", 1.0) as f64;
    let size = n.attr_i("size", 0) as usize;
    if size == 0 {
        return Err(inval("LRN needs size"));
    }
    let b = &mut imp.b;
    let r = b.rank(x);
    // Move channels last, sum squares over a window of `size` channels, move back.
    let mut perm: Vec<usize> = (0..r).filter(|&a| a != 1).collect();
    perm.push(1);
    let mut inv = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let sq = b.mul(x, x)?;
    let t = b.transpose(sq, &perm)?;
    let mut low = vec![0i64; r];
    let mut high = vec![0i64; r];
    low[r - 1] = ((size - 1) / 2) as i64;
    high[r - 1] = (size - 1).div_ceil(2) as i64;
    let p = b.pad_const(t, &low, &high, odc_ir::Scalar::F64(0.0))?;
    let w = b.add(Op::Window { kernel: vec![size], strides: vec![1], dilations: vec![1] }, &[p])?;
    let s = b.reduce(ReduceOp::Sum, w, &[r], false)?;
    let s = b.transpose(s, &inv)?;
    let k = b.binary_c(BinaryOp::Mul, s, alpha / size as f64)?;
    let k = b.binary_c(BinaryOp::Add, k, bias)?;
    let e = b.scalar(b.dtype(x), beta)?;
    let d = b.binary(BinaryOp::Pow, k, e)?;
    one(b.div(x, d)?)
}
