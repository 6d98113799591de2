//! Shape manipulation, data movement, constants and indexing.

use super::{many, one, R};
use crate::onnx::{tensor::tensor_from_proto, Importer, NodeCtx};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, PadMode, Scalar, ScatterReduction, Tensor};
use odc_passes::{norm_axis, Builder};

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

/// Normalise a list of possibly negative axes for `rank`.
pub(crate) fn axes_of(v: &[i64], rank: usize) -> Result<Vec<usize>, FrontendError> {
    v.iter().map(|&a| norm_axis(a, rank).map_err(FrontendError::from)).collect()
}

pub fn reshape(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let spec = if n.opset < 5 {
        n.attr_ints("shape").ok_or_else(|| inval("Reshape needs a shape"))?
    } else {
        let s = n.input(1)?;
        imp.b.const_ints(s, "Reshape's shape")?
    };
    let allowzero = n.attr_i("allowzero", 0) != 0;
    let in_shape = imp.b.shape(x);
    let shape = resolve_reshape(&in_shape, &spec, allowzero)?;
    one(imp.b.reshape(x, &shape)?)
}

/// ONNX reshape rules: 0 copies the input extent (unless allowzero), one -1 is inferred.
pub(crate) fn resolve_reshape(in_shape: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, FrontendError> {
    let total: usize = in_shape.iter().product();
    let mut out = vec![0usize; spec.len()];
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => infer = Some(i),
            -1 => return Err(inval("Reshape shape has more than one -1")),
            0 if !allowzero => {
                out[i] = *in_shape.get(i).ok_or_else(|| inval(format!("Reshape copies dimension {i} that the input lacks")))?
            }
            d if d < 0 => return Err(inval(format!("Reshape dimension {d} is invalid"))),
            d => out[i] = d as usize,
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, &d)| d).product();
        if known == 0 || total % known != 0 {
            return Err(inval(format!("cannot reshape {in_shape:?} to {spec:?}")));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(inval(format!("cannot reshape {in_shape:?} ({total} elements) to {out:?}")));
    }
    Ok(out)
}

pub fn flatten(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let shape = imp.b.shape(x);
    let r = shape.len() as i64;
    let mut axis = n.attr_i("axis", 1);
    if axis < 0 {
        axis += r;
    }
    if axis < 0 || axis > r {
        return Err(inval(format!("Flatten axis {axis} out of range")));
    }
    let a = axis as usize;
    let outer: usize = shape[..a].iter().product();
    let inner: usize = shape[a..].iter().product();
    one(imp.b.reshape(x, &[outer, inner])?)
}

fn axes_input_or_attr(imp: &mut Importer, n: &NodeCtx, input: usize, version: i64) -> Result<Option<Vec<i64>>, FrontendError> {
    if n.opset >= version {
        match n.opt_input(input) {
            Some(a) => Ok(Some(imp.b.const_ints(a, &format!("{}'s axes", n.op()))?)),
            None => Ok(None),
        }
    } else {
        Ok(n.attr_ints("axes"))
    }
}

pub fn squeeze(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let shape = imp.b.shape(x);
    let axes = match axes_input_or_attr(imp, n, 1, 13)? {
        Some(a) => axes_of(&a, shape.len())?,
        None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
    };
    one(imp.b.squeeze(x, &axes)?)
}

pub fn unsqueeze(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let axes = axes_input_or_attr(imp, n, 1, 13)?.ok_or_else(|| inval("Unsqueeze needs axes"))?;
    let out_rank = imp.b.rank(x) + axes.len();
    let axes = axes_of(&axes, out_rank)?;
    one(imp.b.unsqueeze(x, &axes)?)
}

pub fn transpose(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let r = imp.b.rank(x);
    let perm: Vec<usize> = match n.attr_ints("perm") {
        Some(p) => axes_of(&p, r)?,
        None => (0..r).rev().collect(),
    };
    one(imp.b.transpose(x, &perm)?)
}

pub fn concat(imp: &mut Importer, n: &NodeCtx) -> R {
    let xs: Vec<NodeId> = (0..n.num_inputs()).filter_map(|i| n.opt_input(i)).collect();
    if xs.is_empty() {
        return Err(inval("Concat needs inputs"));
    }
    let r = imp.b.rank(xs[0]);
    let axis = norm_axis(n.attr_i("axis", if n.opset < 4 { 1 } else { 0 }), r)?;
    let xs: Vec<NodeId> = xs.into_iter().filter(|&x| imp.b.shape(x).get(axis) != Some(&0) || imp.b.rank(x) != r).collect();
    if xs.is_empty() {
        // All inputs empty along the axis: an empty result of the first input's type.
        let x = n.input(0)?;
        return one(x);
    }
    one(imp.b.concat(&xs, axis)?)
}

pub fn split(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let shape = imp.b.shape(x);
    let axis = norm_axis(n.attr_i("axis", 0), shape.len())?;
    let d = shape[axis];
    let outputs = n.node.output.len();
    let sizes: Vec<usize> = {
        let given = if n.opset >= 13 {
            match n.opt_input(1) {
                Some(s) => Some(imp.b.const_ints(s, "Split sizes")?),
                None => None,
            }
        } else {
            n.attr_ints("split")
        };
        match given {
            Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
            None => {
                let parts = if n.has_attr("num_outputs") { n.attr_i("num_outputs", 1) as usize } else { outputs };
                if parts == 0 {
                    return Err(inval("Split into zero parts"));
                }
                let chunk = d.div_ceil(parts);
                (0..parts).map(|i| chunk.min(d.saturating_sub(i * chunk))).collect()
            }
        }
    };
    if sizes.iter().sum::<usize>() != d {
        return Err(inval(format!("Split sizes {sizes:?} do not add up to {d}")));
    }
    let mut outs = vec![];
    let mut start = 0;
    for s in sizes {
        outs.push(imp.b.slice_axis(x, axis, start as i64, 1, s)?);
        start += s;
    }
    many(outs)
}

/// ONNX slice clamping for one axis; returns (start, step, count).
pub(crate) fn slice_params(dim: usize, start: i64, end: i64, step: i64) -> Result<(i64, i64, usize), FrontendError> {
    if step == 0 {
        return Err(inval("Slice step cannot be 0"));
    }
    let d = dim as i64;
    let mut s = if start < 0 { start.saturating_add(d) } else { start };
    let mut e = if end < 0 { end.saturating_add(d) } else { end };
    let count = if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        if e > s {
            ((e - s) + step - 1) / step
        } else {
            0
        }
    } else {
        s = s.clamp(0, (d - 1).max(0));
        e = e.clamp(-1, d - 1);
        if s > e && d > 0 {
            ((s - e) + (-step) - 1) / (-step)
        } else {
            0
        }
    };
    Ok((if count == 0 { 0 } else { s }, step, count as usize))
}

pub fn slice(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let shape = imp.b.shape(x);
    let r = shape.len();
    let (starts, ends, axes, steps) = if n.opset < 10 {
        let starts = n.attr_ints("starts").ok_or_else(|| inval("Slice needs starts"))?;
        let ends = n.attr_ints("ends").ok_or_else(|| inval("Slice needs ends"))?;
        let axes = n.attr_ints("axes");
        (starts, ends, axes, None)
    } else {
        let starts = imp.b.const_ints(n.input(1)?, "Slice starts")?;
        let ends = imp.b.const_ints(n.input(2)?, "Slice ends")?;
        let axes = match n.opt_input(3) {
            Some(a) => Some(imp.b.const_ints(a, "Slice axes")?),
            None => None,
        };
        let steps = match n.opt_input(4) {
            Some(s) => Some(imp.b.const_ints(s, "Slice steps")?),
            None => None,
        };
        (starts, ends, axes, steps)
    };
    let axes = match axes {
        Some(a) => axes_of(&a, r)?,
        None => (0..starts.len()).collect(),
    };
    if starts.len() != axes.len() || ends.len() != axes.len() {
        return Err(inval("Slice starts, ends and axes differ in length"));
    }
    let mut st = vec![0i64; r];
    let mut sp = vec![1i64; r];
    let mut sz = shape.clone();
    for (i, &a) in axes.iter().enumerate() {
        let step = steps.as_ref().map(|s| s[i]).unwrap_or(1);
        let (s, p, c) = slice_params(shape[a], starts[i], ends[i], step)?;
        st[a] = s;
        sp[a] = p;
        sz[a] = c;
    }
    if sz == shape && st.iter().all(|&s| s == 0) && sp.iter().all(|&s| s == 1) {
        return one(x);
    }
    one(imp.b.add(Op::Slice { starts: st, steps: sp, sizes: sz }, &[x])?)
}

pub fn expand(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let spec = imp.b.const_ints(n.input(1)?, "Expand's shape")?;
    let spec: Vec<usize> = spec.iter().map(|&d| d.max(0) as usize).collect();
    let shape = odc_ir::broadcast_shapes(&[&imp.b.shape(x), &spec])?;
    one(imp.b.expand(x, &shape)?)
}

/// Repeat `x` `reps[i]` times along each axis (a broadcast view plus reshapes).
pub(crate) fn tile_node(b: &mut Builder, x: NodeId, reps: &[usize]) -> Result<NodeId, FrontendError> {
    let shape = b.shape(x);
    let mut inter = vec![];
    let mut expanded = vec![];
    let mut out = vec![];
    for (i, &d) in shape.iter().enumerate() {
        inter.extend([1, d]);
        expanded.extend([reps[i], d]);
        out.push(reps[i] * d);
    }
    let r = b.reshape(x, &inter)?;
    let e = b.expand(r, &expanded)?;
    Ok(b.reshape(e, &out)?)
}

pub fn tile(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let reps = imp.b.const_ints(n.input(1)?, "Tile repeats")?;
    if reps.len() != imp.b.rank(x) || reps.iter().any(|&r| r < 0) {
        return Err(inval("Tile repeats must be non-negative, one per axis"));
    }
    let reps: Vec<usize> = reps.iter().map(|&r| r as usize).collect();
    one(tile_node(&mut imp.b, x, &reps)?)
}

fn scalar_of(t: &Tensor) -> Result<Scalar, FrontendError> {
    Ok(if t.dtype.is_float() {
        Scalar::F64(t.get_f64(0)?)
    } else if t.dtype == DType::U64 {
        Scalar::U64(t.get_i64(0)? as u64)
    } else {
        Scalar::I64(t.get_i64(0)?)
    })
}

pub fn pad(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let r = imp.b.rank(x);
    let mode = n.attr_s("mode", "constant");
    let (pads, value, axes) = if n.opset < 11 {
        let pads = n.attr_ints(if n.opset < 2 { "paddings" } else { "pads" }).ok_or_else(|| inval("Pad needs pads"))?;
        (pads, Scalar::F64(n.attr_f("value", 0.0) as f64), None)
    } else {
        let pads = imp.b.const_ints(n.input(1)?, "Pad's pads")?;
        let value = match n.opt_input(2) {
            Some(v) => match imp.b.const_value(v)? {
                Some(t) if t.num_elements() >= 1 => scalar_of(&t)?,
                Some(_) => Scalar::F64(0.0),
                None => return n.unsupported("Pad with a run-time constant_value"),
            },
            None => Scalar::F64(0.0),
        };
        let axes = match n.opt_input(3) {
            Some(a) => Some(axes_of(&imp.b.const_ints(a, "Pad's axes")?, r)?),
            None => None,
        };
        (pads, value, axes)
    };
    let axes = axes.unwrap_or_else(|| (0..r).collect());
    if pads.len() != 2 * axes.len() {
        return Err(inval(format!("Pad expects {} pad values, got {}", 2 * axes.len(), pads.len())));
    }
    let mut low = vec![0i64; r];
    let mut high = vec![0i64; r];
    for (i, &a) in axes.iter().enumerate() {
        low[a] = pads[i];
        high[a] = pads[i + axes.len()];
    }
    let pm = match mode.as_str() {
        "constant" => PadMode::Constant(value),
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => return n.unsupported(format!("Pad mode '{m}'")),
    };
    let b = &mut imp.b;
    let mut x = x;
    if !matches!(pm, PadMode::Constant(_)) && low.iter().chain(&high).any(|&p| p < 0) {
        // Crop first, then pad.
        let shape = b.shape(x);
        for a in 0..r {
            let (lo, hi) = (low[a].min(0), high[a].min(0));
            if lo < 0 || hi < 0 {
                let size = (shape[a] as i64 + lo + hi).max(0) as usize;
                x = b.slice_axis(x, a, -lo, 1, size)?;
            }
        }
        low.iter_mut().for_each(|p| *p = (*p).max(0));
        high.iter_mut().for_each(|p| *p = (*p).max(0));
    }
    if low.iter().chain(&high).all(|&p| p == 0) {
        return one(x);
    }
    one(b.add(Op::Pad { low, high, interior: vec![0; r], mode: pm }, &[x])?)
}

pub fn shape(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let s: Vec<i64> = imp.b.shape(x).iter().map(|&d| d as i64).collect();
    let r = s.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(n.attr_i("start", 0));
    let end = clamp(n.attr_i("end", r));
    let v: Vec<i64> = if start < end { s[start..end].to_vec() } else { vec![] };
    one(imp.b.const_i64(vec![v.len()], &v))
}

pub fn size(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let s = imp.b.ty(x).num_elements() as i64;
    one(imp.b.const_i64(vec![], &[s]))
}

pub fn constant(imp: &mut Importer, n: &NodeCtx) -> R {
    let t = if let Some(t) = n.attr_tensor("value") {
        tensor_from_proto(t, imp.ext())?
    } else if n.has_attr("value_float") {
        Tensor::from_f32(vec![], &[n.attr_f("value_float", 0.0)])
    } else if let Some(v) = n.attr_floats("value_floats") {
        Tensor::from_f32(vec![v.len()], &v)
    } else if n.has_attr("value_int") {
        Tensor::from_i64(vec![], &[n.attr_i("value_int", 0)])
    } else if let Some(v) = n.attr_ints("value_ints") {
        Tensor::from_i64(vec![v.len()], &v)
    } else if n.has_attr("value_string") || n.has_attr("value_strings") {
        return n.unsupported("string constants");
    } else if n.has_attr("sparse_value") {
        return n.unsupported("sparse constants");
    } else {
        return Err(inval("Constant without a value"));
    };
    one(imp.b.constant(t))
}

pub fn constant_of_shape(imp: &mut Importer, n: &NodeCtx) -> R {
    let shape = imp.b.const_ints(n.input(0)?, "ConstantOfShape's shape")?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let v = match n.attr_tensor("value") {
        Some(t) => tensor_from_proto(t, imp.ext())?,
        None => Tensor::from_f32(vec![1], &[0.0]),
    };
    let flat = v.reshaped(vec![])?;
    let s = imp.b.constant(flat);
    one(imp.b.expand(s, &shape)?)
}

pub fn range(imp: &mut Importer, n: &NodeCtx) -> R {
    let (s, l, d) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let dt = imp.b.dtype(s);
    let b = &mut imp.b;
    let (Some(st), Some(lt), Some(dtt)) = (b.const_value(s)?, b.const_value(l)?, b.const_value(d)?) else {
        return n.unsupported("Range with run-time bounds (the output shape would depend on input values)");
    };
    let (start, limit, delta) = (st.get_f64(0)?, lt.get_f64(0)?, dtt.get_f64(0)?);
    if delta == 0.0 {
        return Err(inval("Range delta is 0"));
    }
    let count = ((limit - start) / delta).ceil().max(0.0) as usize;
    let iota = b.iota(dt, &[count], 0)?;
    let dv = b.reshape(d, &[])?;
    let sv = b.reshape(s, &[])?;
    let m = b.mul(iota, dv)?;
    one(b.add2(m, sv)?)
}

pub fn gather(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let i = n.input(1)?;
    let axis = norm_axis(n.attr_i("axis", 0), imp.b.rank(x))?;
    one(imp.b.add(Op::Gather { axis }, &[x, i])?)
}

pub fn gather_elements(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let i = n.input(1)?;
    let axis = norm_axis(n.attr_i("axis", 0), imp.b.rank(x))?;
    one(imp.b.add(Op::GatherElements { axis }, &[x, i])?)
}

pub fn gather_nd(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let i = n.input(1)?;
    let batch_dims = n.attr_i("batch_dims", 0).max(0) as usize;
    one(imp.b.add(Op::GatherNd { batch_dims }, &[x, i])?)
}

fn reduction(n: &NodeCtx) -> Result<ScatterReduction, FrontendError> {
    Ok(match n.attr_s("reduction", "none").as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        r => return n.unsupported(format!("scatter reduction '{r}'")),
    })
}

pub fn scatter_elements(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, i, u) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let axis = norm_axis(n.attr_i("axis", 0), imp.b.rank(x))?;
    let reduction = reduction(n)?;
    one(imp.b.add(Op::ScatterElements { axis, reduction }, &[x, i, u])?)
}

pub fn scatter_nd(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, i, u) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let reduction = reduction(n)?;
    one(imp.b.add(Op::ScatterNd { reduction }, &[x, i, u])?)
}

pub fn one_hot(imp: &mut Importer, n: &NodeCtx) -> R {
    let (ind, depth, values) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let b = &mut imp.b;
    let depth = b.const_floats(depth, "OneHot depth")?[0] as i64;
    if depth < 0 {
        return Err(inval("OneHot depth must be non-negative"));
    }
    let ishape = b.shape(ind);
    let r = ishape.len() + 1;
    let axis = norm_axis(n.attr_i("axis", -1), r)?;
    let mut oshape = ishape.clone();
    oshape.insert(axis, depth as usize);
    let idx = b.cast(ind, DType::I64)?;
    let zero = b.scalar(DType::I64, 0.0)?;
    let neg = b.binary(BinaryOp::Lt, idx, zero)?;
    let wrapped = b.binary_c(BinaryOp::Add, idx, depth as f64)?;
    let idx = b.select(neg, wrapped, idx)?;
    let idx = b.unsqueeze(idx, &[axis])?;
    let iota = b.iota(DType::I64, &oshape, axis)?;
    let hit = b.binary(BinaryOp::Eq, iota, idx)?;
    let dt = b.dtype(values);
    let off = b.slice_axis(values, 0, 0, 1, 1)?;
    let on = b.slice_axis(values, 0, 1, 1, 1)?;
    let off = b.reshape(off, &[])?;
    let on = b.reshape(on, &[])?;
    let _ = dt;
    one(b.select(hit, on, off)?)
}

/// Mask of `j - i  (cmp) k` over the last two axes of `shape`.
fn diag_mask(b: &mut Builder, shape: &[usize], k: i64, upper: bool) -> Result<NodeId, FrontendError> {
    let r = shape.len();
    let rows = b.iota(DType::I64, &shape[r - 2..], 0)?;
    let cols = b.iota(DType::I64, &shape[r - 2..], 1)?;
    let d = b.sub(cols, rows)?;
    let kc = b.scalar(DType::I64, k as f64)?;
    Ok(b.binary(if upper { BinaryOp::Ge } else { BinaryOp::Le }, d, kc)?)
}

pub fn trilu(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let k = match n.opt_input(1) {
        Some(k) => imp.b.const_ints(k, "Trilu k")?[0],
        None => 0,
    };
    let upper = n.attr_i("upper", 1) != 0;
    let b = &mut imp.b;
    let shape = b.shape(x);
    if shape.len() < 2 {
        return Err(inval("Trilu needs rank >= 2"));
    }
    let mask = diag_mask(b, &shape, k, upper)?;
    let z = b.scalar(b.dtype(x), 0.0)?;
    one(b.select(mask, x, z)?)
}

pub fn eye_like(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let shape = b.shape(x);
    if shape.len() != 2 {
        return Err(inval("EyeLike needs a 2-D input"));
    }
    let dt = if n.has_attr("dtype") {
        crate::onnx::tensor::dtype_from_onnx(n.attr_i("dtype", 1) as i32).map_err(|d| FrontendError::Unsupported(format!("EyeLike to {d}")))?
    } else {
        b.dtype(x)
    };
    let k = n.attr_i("k", 0);
    let rows = b.iota(DType::I64, &shape, 0)?;
    let cols = b.iota(DType::I64, &shape, 1)?;
    let d = b.sub(cols, rows)?;
    let kc = b.scalar(DType::I64, k as f64)?;
    let m = b.binary(BinaryOp::Eq, d, kc)?;
    one(b.cast(m, dt)?)
}

pub fn depth_to_space(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let bs = n.attr_i("blocksize", 0) as usize;
    let b = &mut imp.b;
    let s = b.shape(x);
    if s.len() != 4 || bs == 0 || s[1] % (bs * bs) != 0 {
        return Err(inval("DepthToSpace needs [N,C,H,W] with C divisible by blocksize^2"));
    }
    let (nn, c, h, w) = (s[0], s[1], s[2], s[3]);
    let c2 = c / (bs * bs);
    let y = if n.attr_s("mode", "DCR") == "CRD" {
        let r = b.reshape(x, &[nn, c2, bs, bs, h, w])?;
        b.transpose(r, &[0, 1, 4, 2, 5, 3])?
    } else {
        let r = b.reshape(x, &[nn, bs, bs, c2, h, w])?;
        b.transpose(r, &[0, 3, 4, 1, 5, 2])?
    };
    one(b.reshape(y, &[nn, c2, h * bs, w * bs])?)
}

pub fn space_to_depth(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let bs = n.attr_i("blocksize", 0) as usize;
    let b = &mut imp.b;
    let s = b.shape(x);
    if s.len() != 4 || bs == 0 || s[2] % bs != 0 || s[3] % bs != 0 {
        return Err(inval("SpaceToDepth needs [N,C,H,W] with H and W divisible by blocksize"));
    }
    let (nn, c, h, w) = (s[0], s[1], s[2], s[3]);
    let r = b.reshape(x, &[nn, c, h / bs, bs, w / bs, bs])?;
    let t = if n.attr_s("mode", "DCR") == "CRD" {
        b.transpose(r, &[0, 1, 3, 5, 2, 4])?
    } else {
        b.transpose(r, &[0, 3, 5, 1, 2, 4])?
    };
    one(b.reshape(t, &[nn, c * bs * bs, h / bs, w / bs])?)
}

pub fn center_crop_pad(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let target = imp.b.const_ints(n.input(1)?, "CenterCropPad shape")?;
    let r = imp.b.rank(x);
    let axes = match n.attr_ints("axes") {
        Some(a) => axes_of(&a, r)?,
        None => (0..r).collect(),
    };
    if target.len() != axes.len() {
        return Err(inval("CenterCropPad shape and axes differ in length"));
    }
    let b = &mut imp.b;
    let mut y = x;
    let mut low = vec![0i64; r];
    let mut high = vec![0i64; r];
    for (i, &a) in axes.iter().enumerate() {
        let d = b.shape(y)[a] as i64;
        let t = target[i];
        if t < d {
            let start = (d - t) / 2;
            y = b.slice_axis(y, a, start, 1, t as usize)?;
        } else if t > d {
            low[a] = (t - d) / 2;
            high[a] = t - d - low[a];
        }
    }
    one(b.pad_const(y, &low, &high, Scalar::F64(0.0))?)
}

pub fn reverse_sequence(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let lens = n.input(1)?;
    let b = &mut imp.b;
    let shape = b.shape(x);
    let batch_axis = n.attr_i("batch_axis", 1) as usize;
    let time_axis = n.attr_i("time_axis", 0) as usize;
    if shape.len() < 2 || batch_axis > 1 || time_axis > 1 || batch_axis == time_axis {
        return Err(inval("ReverseSequence needs batch_axis and time_axis in {0, 1}, distinct"));
    }
    // index[t, b, ...] = t < len[b] ? len[b] - 1 - t : t
    let t = b.iota(DType::I64, &shape, time_axis)?;
    let mut lshape = vec![1usize; shape.len()];
    lshape[batch_axis] = shape[batch_axis];
    let l = b.cast(lens, DType::I64)?;
    let l = b.reshape(l, &lshape)?;
    let inside = b.binary(BinaryOp::Lt, t, l)?;
    let lm1 = b.binary_c(BinaryOp::Sub, l, 1.0)?;
    let rev = b.sub(lm1, t)?;
    let idx = b.select(inside, rev, t)?;
    one(b.add(Op::GatherElements { axis: time_axis }, &[x, idx])?)
}
