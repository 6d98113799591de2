//! Contractions (MatMul, Gemm, Conv, ConvTranspose, Einsum), pooling and resampling.

use super::{many, one, R};
use crate::onnx::{Importer, NodeCtx};
use crate::FrontendError;
use odc_ir::{BinaryOp, Conv, DType, NodeId, Op, PadMode, ReduceOp, Scalar, Tensor, UnaryOp};
use odc_passes::Builder;
use odc_passes::nn::{AutoPad, ConvGeometry};
use std::collections::HashMap;

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

pub fn matmul(imp: &mut Importer, n: &NodeCtx) -> R {
    let (a, b) = (n.input(0)?, n.input(1)?);
    one(imp.b.matmul(a, b)?)
}

pub fn gemm(imp: &mut Importer, n: &NodeCtx) -> R {
    let (a, bb) = (n.input(0)?, n.input(1)?);
    let c = n.opt_input(2);
    let alpha = n.attr_f("alpha", 1.0) as f64;
    let beta = n.attr_f("beta", 1.0) as f64;
    let b = &mut imp.b;
    let a = if n.attr_i("transA", 0) != 0 { b.transpose(a, &[1, 0])? } else { a };
    let bm = if n.attr_i("transB", 0) != 0 { b.transpose(bb, &[1, 0])? } else { bb };
    let mut y = b.add(Op::MatMul, &[a, bm])?;
    if alpha != 1.0 {
        y = b.binary_c(BinaryOp::Mul, y, alpha)?;
    }
    if let Some(c) = c {
        let c = if beta != 1.0 { b.binary_c(BinaryOp::Mul, c, beta)? } else { c };
        y = b.add2(y, c)?;
    }
    one(y)
}

/// The spatial attributes shared by Conv, ConvTranspose and the pools.
fn spatial_attrs(n: &NodeCtx, kernel: Vec<usize>) -> Result<ConvGeometry, FrontendError> {
    let sp = kernel.len();
    let ints = |name: &str, default: usize| -> Result<Vec<usize>, FrontendError> {
        match n.attr_ints(name) {
            Some(v) if v.len() == sp && v.iter().all(|&x| x > 0) => Ok(v.iter().map(|&x| x as usize).collect()),
            Some(v) if v.is_empty() => Ok(vec![default; sp]),
            Some(v) => Err(inval(format!("{name} {v:?} must have {sp} positive entries"))),
            None => Ok(vec![default; sp]),
        }
    };
    let strides = ints("strides", 1)?;
    let dilations = ints("dilations", 1)?;
    let pads = n.attr_ints("pads").unwrap_or_else(|| vec![0; 2 * sp]);
    if pads.len() != 2 * sp {
        return Err(inval(format!("pads {pads:?} must have {} entries", 2 * sp)));
    }
    Ok(ConvGeometry {
        kernel,
        strides,
        dilations,
        pads_begin: pads[..sp].to_vec(),
        pads_end: pads[sp..].to_vec(),
        auto_pad: AutoPad::parse(&n.attr_s("auto_pad", "NOTSET"))?,
    })
}

/// A convolution with explicit (possibly SAME-resolved) padding.
pub(crate) fn conv_node(b: &mut Builder, n: &NodeCtx, x: NodeId, w: NodeId) -> Result<NodeId, FrontendError> {
    let xs = b.shape(x);
    let ws = b.shape(w);
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(inval(format!("Conv needs X [N,C,...] and W of the same rank, got {xs:?} and {ws:?}")));
    }
    let kernel = ws[2..].to_vec();
    if let Some(k) = n.attr_ints("kernel_shape") {
        if k.iter().map(|&v| v as usize).collect::<Vec<_>>() != kernel {
            return Err(inval(format!("kernel_shape {k:?} disagrees with W {ws:?}")));
        }
    }
    let geometry = spatial_attrs(n, kernel)?;
    let group = n.attr_i("group", 1).max(1) as usize;
    Ok(b.conv(x, w, &geometry, group)?)
}

pub fn conv(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, w) = (n.input(0)?, n.input(1)?);
    let y = conv_node(&mut imp.b, n, x, w)?;
    one(imp.b.channel_bias(y, n.opt_input(2))?)
}

pub fn conv_transpose(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, w) = (n.input(0)?, n.input(1)?);
    let b = &mut imp.b;
    let xs = b.shape(x);
    let ws = b.shape(w);
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(inval("ConvTranspose needs X [N,C,...] and W of the same rank"));
    }
    let sp = xs.len() - 2;
    let group = n.attr_i("group", 1).max(1) as usize;
    let (c, mg) = (ws[0], ws[1]);
    if xs[1] != c || c % group != 0 {
        return Err(inval(format!("ConvTranspose channels do not match: X {xs:?}, W {ws:?}, group {group}")));
    }
    let mut s = spatial_attrs(n, ws[2..].to_vec())?;
    let out_pad: Vec<i64> = n.attr_ints("output_padding").unwrap_or_else(|| vec![0; sp]);
    if out_pad.len() != sp {
        return Err(inval("output_padding needs one entry per spatial axis"));
    }
    let spans: Vec<i64> = (0..sp).map(|i| ((s.kernel[i] - 1) * s.dilations[i] + 1) as i64).collect();
    let full: Vec<i64> = (0..sp).map(|i| s.strides[i] as i64 * (xs[2 + i] as i64 - 1) + out_pad[i] + spans[i]).collect();
    if let Some(os) = n.attr_ints("output_shape") {
        let os = if os.len() == sp + 2 { os[2..].to_vec() } else { os };
        if os.len() != sp {
            return Err(inval("output_shape needs one entry per spatial axis"));
        }
        for i in 0..sp {
            let total = full[i] - os[i];
            let half = total / 2;
            let (pb, pe) = if s.auto_pad == AutoPad::SameLower { (total - half, half) } else { (half, total - half) };
            s.pads_begin[i] = pb;
            s.pads_end[i] = pe;
        }
    } else if s.auto_pad.is_same() {
        for i in 0..sp {
            let target = xs[2 + i] as i64 * s.strides[i] as i64;
            let total = (full[i] - target).max(0);
            let half = total / 2;
            let (pb, pe) = if s.auto_pad == AutoPad::SameUpper { (half, total - half) } else { (total - half, half) };
            s.pads_begin[i] = pb;
            s.pads_end[i] = pe;
        }
    } else if s.auto_pad == AutoPad::Valid {
        s.pads_begin.iter_mut().for_each(|p| *p = 0);
        s.pads_end.iter_mut().for_each(|p| *p = 0);
    }
    // Transposed conv = conv of the stride-dilated input with the flipped, transposed kernel.
    let mut low = vec![0i64, 0];
    let mut high = vec![0i64, 0];
    let mut interior = vec![0usize, 0];
    for i in 0..sp {
        low.push(spans[i] - 1 - s.pads_begin[i]);
        high.push(spans[i] - 1 - s.pads_end[i] + out_pad[i]);
        interior.push(s.strides[i] - 1);
    }
    let zero = if b.dtype(x).is_float() { Scalar::F64(0.0) } else { Scalar::I64(0) };
    let xp = b.add(Op::Pad { low, high, interior, mode: PadMode::Constant(zero) }, &[x])?;
    let cg = c / group;
    let k: Vec<usize> = ws[2..].to_vec();
    let mut gshape = vec![group, cg, mg];
    gshape.extend(&k);
    let wg = b.reshape(w, &gshape)?;
    let mut perm = vec![0, 2, 1];
    perm.extend(3..3 + sp);
    let wt = b.transpose(wg, &perm)?;
    let mut wshape = vec![group * mg, cg];
    wshape.extend(&k);
    let wt = b.reshape(wt, &wshape)?;
    let mut starts = vec![0i64, 0];
    let mut steps = vec![1i64, 1];
    for &kk in &k {
        starts.push(kk as i64 - 1);
        steps.push(-1);
    }
    let wf = b.add(Op::Slice { starts, steps, sizes: wshape.clone() }, &[wt])?;
    let y = b.add(Op::Conv(Conv { strides: vec![1; sp], dilations: s.dilations.clone(), groups: group }), &[xp, wf])?;
    one(b.channel_bias(y, n.opt_input(2))?)
}

pub fn pool(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let xs = b.shape(x);
    if xs.len() < 3 {
        return Err(inval("pooling needs [N, C, spatial...]"));
    }
    let sp = xs.len() - 2;
    let kernel: Vec<usize> = n
        .attr_ints("kernel_shape")
        .ok_or_else(|| inval("pooling needs kernel_shape"))?
        .iter()
        .map(|&k| k as usize)
        .collect();
    if kernel.len() != sp || kernel.contains(&0) {
        return Err(inval("kernel_shape needs one positive entry per spatial axis"));
    }
    let mut s = spatial_attrs(n, kernel.clone())?;
    s.resolve_auto_pad(&xs[2..]);
    let ceil = n.attr_i("ceil_mode", 0) != 0;
    let mut out = vec![];
    let mut extra = vec![];
    for i in 0..sp {
        let padded = xs[2 + i] as i64 + s.pads_begin[i] + s.pads_end[i];
        let span = ((kernel[i] - 1) * s.dilations[i] + 1) as i64;
        let st = s.strides[i] as i64;
        if padded < span {
            return Err(inval(format!("pooling window {kernel:?} does not fit the padded input")));
        }
        let mut o = if ceil { (padded - span + st - 1) / st + 1 } else { (padded - span) / st + 1 };
        if ceil && (o - 1) * st >= xs[2 + i] as i64 + s.pads_begin[i] {
            o -= 1;
        }
        extra.push(((o - 1) * st + span - padded).max(0));
        out.push(o as usize);
    }
    let dt = b.dtype(x);
    let kind = n.op();
    let fill = if kind == "MaxPool" {
        if dt.is_float() {
            Scalar::F64(f64::NEG_INFINITY)
        } else {
            let (lo, _) = int_min(dt);
            Scalar::I64(lo)
        }
    } else {
        Scalar::F64(0.0)
    };
    let ends: Vec<i64> = (0..sp).map(|i| s.pads_end[i] + extra[i]).collect();
    let xp = b.pad_spatial(x, &s.pads_begin, &ends, fill)?;
    let win = Op::Window { kernel: kernel.clone(), strides: s.strides.clone(), dilations: s.dilations.clone() };
    let w = b.add(win.clone(), &[xp])?;
    let waxes: Vec<usize> = (2 + sp..2 + 2 * sp).collect();
    match kind {
        "MaxPool" => {
            let y = b.reduce(ReduceOp::Max, w, &waxes, false)?;
            if n.node.output.len() > 1 && !n.node.output[1].is_empty() {
                let idx = max_pool_indices(b, n, w, &xs, &s, &out, &kernel)?;
                return many(vec![y, idx]);
            }
            one(y)
        }
        "AveragePool" => {
            let include = n.attr_i("count_include_pad", 0) != 0;
            let sum = b.reduce(ReduceOp::Sum, w, &waxes, false)?;
            // Divisor: how many real (or explicitly padded, if counted) elements each window covers.
            let ones = b.full(dt, &xs[2..], 1.0)?;
            let inner = if include {
                let mut low = vec![];
                let mut high = vec![];
                for i in 0..sp {
                    low.push(s.pads_begin[i]);
                    high.push(s.pads_end[i]);
                }
                let p = b.pad_const(ones, &low, &high, Scalar::F64(1.0))?;
                let zl = vec![0i64; sp];
                b.pad_const(p, &zl, &extra, Scalar::F64(0.0))?
            } else {
                b.pad_const(ones, &s.pads_begin, &ends, Scalar::F64(0.0))?
            };
            let cw = b.add(win, &[inner])?;
            let caxes: Vec<usize> = (sp..2 * sp).collect();
            let count = b.reduce(ReduceOp::Sum, cw, &caxes, false)?;
            one(b.div(sum, count)?)
        }
        "LpPool" => {
            let p = n.attr_i("p", 2);
            let a = b.unary(UnaryOp::Abs, w)?;
            let e = b.scalar(dt, p as f64)?;
            let pw = if p == 2 { b.mul(a, a)? } else { b.binary(BinaryOp::Pow, a, e)? };
            let sum = b.reduce(ReduceOp::Sum, pw, &waxes, false)?;
            let inv = b.scalar(dt, 1.0 / p as f64)?;
            one(if p == 2 { b.unary(UnaryOp::Sqrt, sum)? } else { b.binary(BinaryOp::Pow, sum, inv)? })
        }
        other => n.unsupported(format!("pooling {other}")),
    }
}

fn int_min(dt: DType) -> (i64, i64) {
    match dt {
        DType::I8 => (i8::MIN as i64, 0),
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => (0, 0),
        DType::I16 => (i16::MIN as i64, 0),
        DType::I32 => (i32::MIN as i64, 0),
        _ => (i64::MIN, 0),
    }
}

/// MaxPool's flat indices into the (unpadded) input.
#[allow(clippy::too_many_arguments)]
fn max_pool_indices(
    b: &mut Builder,
    n: &NodeCtx,
    w: NodeId,
    xs: &[usize],
    s: &ConvGeometry,
    out: &[usize],
    kernel: &[usize],
) -> Result<NodeId, FrontendError> {
    let sp = kernel.len();
    let wshape = b.shape(w);
    let waxes: Vec<usize> = (2 + sp..2 + 2 * sp).collect();
    let m = b.reduce(ReduceOp::Max, w, &waxes, true)?;
    let eq = b.binary(BinaryOp::Eq, w, m)?;
    // Linear position within the window, first match wins.
    let mut lin = b.scalar(DType::I64, 0.0)?;
    for (i, &k) in kernel.iter().enumerate() {
        let io = b.iota(DType::I64, &wshape, 2 + sp + i)?;
        lin = b.binary_c(BinaryOp::Mul, lin, k as f64)?;
        lin = b.add2(lin, io)?;
    }
    let big = b.scalar(DType::I64, kernel.iter().product::<usize>() as f64)?;
    let cand = b.select(eq, lin, big)?;
    let first = b.reduce(ReduceOp::Min, cand, &waxes, false)?;
    // Window position → input coordinates → flat index.
    let mut oshape = vec![xs[0], xs[1]];
    oshape.extend_from_slice(out);
    let column_major = n.attr_i("storage_order", 0) != 0;
    let mut rem = first;
    let mut coords = vec![];
    for i in (0..sp).rev() {
        let k = b.scalar(DType::I64, kernel[i] as f64)?;
        let ki = b.binary(BinaryOp::Rem, rem, k)?;
        rem = b.binary(BinaryOp::Div, rem, k)?;
        let o = b.iota(DType::I64, &oshape, 2 + i)?;
        let os = b.binary_c(BinaryOp::Mul, o, s.strides[i] as f64)?;
        let kd = b.binary_c(BinaryOp::Mul, ki, s.dilations[i] as f64)?;
        let c = b.add2(os, kd)?;
        coords.push(b.binary_c(BinaryOp::Sub, c, s.pads_begin[i] as f64)?);
    }
    coords.reverse();
    let nn = b.iota(DType::I64, &oshape, 0)?;
    let cc = b.iota(DType::I64, &oshape, 1)?;
    let spatial: usize = xs[2..].iter().product();
    let nc = b.binary_c(BinaryOp::Mul, nn, xs[1] as f64)?;
    let nc = b.add2(nc, cc)?;
    let mut idx = b.binary_c(BinaryOp::Mul, nc, spatial as f64)?;
    let order: Vec<usize> = if column_major { (0..sp).rev().collect() } else { (0..sp).collect() };
    let mut inner = b.scalar(DType::I64, 0.0)?;
    for &i in &order {
        inner = b.binary_c(BinaryOp::Mul, inner, xs[2 + i] as f64)?;
        inner = b.add2(inner, coords[i])?;
    }
    idx = b.add2(idx, inner)?;
    Ok(idx)
}

pub fn global_pool(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let r = b.rank(x);
    let axes: Vec<usize> = (2..r).collect();
    let y = match n.op() {
        "GlobalAveragePool" => b.mean(x, &axes)?,
        "GlobalMaxPool" => b.reduce(ReduceOp::Max, x, &axes, true)?,
        _ => {
            let p = n.attr_i("p", 2);
            let a = b.unary(UnaryOp::Abs, x)?;
            let e = b.scalar(b.dtype(x), p as f64)?;
            let pw = b.binary(BinaryOp::Pow, a, e)?;
            let s = b.reduce(ReduceOp::Sum, pw, &axes, true)?;
            let inv = b.scalar(b.dtype(x), 1.0 / p as f64)?;
            b.binary(BinaryOp::Pow, s, inv)?
        }
    };
    one(y)
}

/// Take the diagonal of axes `p < q` (same extent): the result has the diagonal at `p`, `q` removed.
fn diagonal(b: &mut Builder, x: NodeId, p: usize, q: usize) -> Result<NodeId, FrontendError> {
    let shape = b.shape(x);
    let r = shape.len();
    let mut perm: Vec<usize> = (0..r).filter(|&a| a != p && a != q).collect();
    perm.extend([p, q]);
    let t = b.transpose(x, &perm)?;
    let d = shape[p];
    let mut flat: Vec<usize> = perm[..r - 2].iter().map(|&a| shape[a]).collect();
    flat.push(d * d);
    let f = b.reshape(t, &flat)?;
    let last = flat.len() - 1;
    let diag = b.slice_axis(f, last, 0, d as i64 + 1, d)?;
    // Move the diagonal axis back to position p.
    let rr = flat.len();
    let mut back: Vec<usize> = (0..rr - 1).collect();
    back.insert(p, rr - 1);
    Ok(b.transpose(diag, &back)?)
}

pub fn einsum(imp: &mut Importer, n: &NodeCtx) -> R {
    let eq = n.attr_s("equation", "").replace(' ', "");
    let xs: Vec<NodeId> = (0..n.num_inputs()).map(|i| n.input(i)).collect::<Result<_, _>>()?;
    let b = &mut imp.b;
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != xs.len() {
        return Err(inval(format!("Einsum equation '{eq}' names {} inputs, got {}", terms.len(), xs.len())));
    }
    // Labels: letters, plus '0'..'9' standing for ellipsis dimensions (right-aligned).
    let ell_rank = terms
        .iter()
        .zip(&xs)
        .map(|(t, &x)| if t.contains("...") { b.rank(x) + 3 - t.len() } else { 0 })
        .max()
        .unwrap_or(0);
    let expand_term = |t: &str, rank: usize| -> Result<Vec<char>, FrontendError> {
        if let Some((pre, post)) = t.split_once("...") {
            let k = rank - pre.len() - post.len();
            let mut v: Vec<char> = pre.chars().collect();
            v.extend((ell_rank - k..ell_rank).map(|i| char::from(b'0' + i as u8)));
            v.extend(post.chars());
            Ok(v)
        } else if t.len() == rank {
            Ok(t.chars().collect())
        } else {
            Err(inval(format!("Einsum term '{t}' does not match an input of rank {rank}")))
        }
    };
    let mut inputs: Vec<(NodeId, Vec<char>)> = vec![];
    let mut sizes: HashMap<char, usize> = HashMap::new();
    for (t, &x) in terms.iter().zip(&xs) {
        let mut labels = expand_term(t, b.rank(x))?;
        let mut x = x;
        // Repeated labels within a term: take diagonals.
        loop {
            let dup = labels.iter().enumerate().find_map(|(i, c)| labels[i + 1..].iter().position(|d| d == c).map(|j| (i, i + 1 + j)));
            let Some((p, q)) = dup else { break };
            x = diagonal(b, x, p, q)?;
            labels.remove(q);
        }
        for (i, &c) in labels.iter().enumerate() {
            let d = b.shape(x)[i];
            let e = sizes.entry(c).or_insert(d);
            if *e == 1 {
                *e = d;
            } else if d != 1 && *e != d {
                return Err(inval(format!("Einsum label '{c}' has extents {e} and {d}")));
            }
        }
        inputs.push((x, labels));
    }
    let out: Vec<char> = match rhs {
        Some(r) => {
            let r = if r.contains("...") {
                let (pre, post) = r.split_once("...").unwrap();
                let mut v: Vec<char> = pre.chars().collect();
                v.extend((0..ell_rank).map(|i| char::from(b'0' + i as u8)));
                v.extend(post.chars());
                v
            } else {
                r.chars().collect()
            };
            r
        }
        None => {
            let mut counts: HashMap<char, usize> = HashMap::new();
            for (_, l) in &inputs {
                for &c in l {
                    *counts.entry(c).or_default() += 1;
                }
            }
            let mut v: Vec<char> = (0..ell_rank).map(|i| char::from(b'0' + i as u8)).collect();
            let mut letters: Vec<char> = counts.iter().filter(|(c, &k)| k == 1 && c.is_alphabetic()).map(|(&c, _)| c).collect();
            letters.sort_unstable();
            v.extend(letters);
            v
        }
    };
    let mut all = out.clone();
    let mut contracted = vec![];
    for (_, l) in &inputs {
        for &c in l {
            if !all.contains(&c) {
                all.push(c);
                contracted.push(c);
            }
        }
    }
    // Align every input to `all` (transpose + unit axes), multiply, reduce the contracted labels.
    let mut prod: Option<NodeId> = None;
    for (x, labels) in inputs {
        let perm: Vec<usize> = all.iter().filter_map(|c| labels.iter().position(|d| d == c)).collect();
        let t = b.transpose(x, &perm)?;
        let tshape = b.shape(t);
        let mut k = 0;
        let mut shape = vec![];
        for c in &all {
            if labels.contains(c) {
                shape.push(tshape[k]);
                k += 1;
            } else {
                shape.push(1);
            }
        }
        let aligned = b.reshape(t, &shape)?;
        prod = Some(match prod {
            None => aligned,
            Some(p) => b.mul(p, aligned)?,
        });
    }
    let prod = prod.ok_or_else(|| inval("Einsum without inputs"))?;
    let full: Vec<usize> = all.iter().map(|c| sizes[c]).collect();
    let prod = b.expand(prod, &odc_ir::broadcast_shapes(&[&b.shape(prod), &full])?)?;
    let axes: Vec<usize> = (out.len()..all.len()).collect();
    one(b.reduce(ReduceOp::Sum, prod, &axes, false)?)
}

/// Interpolation taps of one resized axis: for each output position, `(input index, weight)` per
/// tap, plus which outputs are extrapolated.
struct AxisTaps {
    idx: Vec<Vec<i64>>,
    w: Vec<Vec<f64>>,
    extrapolated: Option<Vec<bool>>,
}

#[derive(Clone, Copy)]
enum Interp {
    Nearest,
    Linear,
    Cubic(f64),
}

struct ResizeAttrs {
    interp: Interp,
    coord: String,
    nearest_mode: String,
    exclude_outside: bool,
    antialias: bool,
}

fn nearest_coeffs(ratio: f64, mode: &str) -> Vec<f64> {
    if ratio.fract() == 0.0 {
        return vec![0.0, 1.0];
    }
    let (a, b) = match mode {
        "round_prefer_ceil" => (ratio < 0.5, ratio >= 0.5),
        "floor" => (true, false),
        "ceil" => (false, true),
        _ => (ratio <= 0.5, ratio > 0.5),
    };
    vec![a as u8 as f64, b as u8 as f64]
}

fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0
    } else if x < 2.0 {
        a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

fn coeffs(at: &ResizeAttrs, ratio: f64, scale: f64) -> Vec<f64> {
    match at.interp {
        Interp::Nearest => nearest_coeffs(ratio, &at.nearest_mode),
        Interp::Linear if at.antialias => {
            let sc = scale.min(1.0);
            let start = (-1.0 / sc).floor() as i64 + 1;
            let foot = 2 - 2 * start;
            let c: Vec<f64> = (start..start + foot).map(|i| (1.0 - ((i as f64 - ratio) * sc).abs()).clamp(0.0, 1.0)).collect();
            let s: f64 = c.iter().sum();
            c.iter().map(|v| v / s).collect()
        }
        Interp::Linear => vec![1.0 - ratio, ratio],
        Interp::Cubic(a) if at.antialias => {
            let sc = scale.min(1.0);
            let start = (-2.0 / sc).floor() as i64 + 1;
            let end = 2 - start;
            let c: Vec<f64> = (start..end).map(|i| cubic_kernel(sc * (i as f64 - ratio), a)).collect();
            let s: f64 = c.iter().sum();
            c.iter().map(|v| v / s).collect()
        }
        Interp::Cubic(a) => vec![
            ((a * (ratio + 1.0) - 5.0 * a) * (ratio + 1.0) + 8.0 * a) * (ratio + 1.0) - 4.0 * a,
            ((a + 2.0) * ratio - (a + 3.0)) * ratio * ratio + 1.0,
            ((a + 2.0) * (1.0 - ratio) - (a + 3.0)) * (1.0 - ratio) * (1.0 - ratio) + 1.0,
            ((a * ((1.0 - ratio) + 1.0) - 5.0 * a) * ((1.0 - ratio) + 1.0) + 8.0 * a) * ((1.0 - ratio) + 1.0) - 4.0 * a,
        ],
    }
}

/// The ONNX reference's 1-D resampling plan for one axis.
fn axis_taps(at: &ResizeAttrs, input: usize, output: usize, scale: f64, roi: Option<(f64, f64)>) -> Result<AxisTaps, FrontendError> {
    let inw = input as f64;
    let outw = scale * inw;
    let mut idx = vec![];
    let mut w = vec![];
    let mut extrap = vec![];
    for o in 0..output {
        let y = o as f64;
        let x = match at.coord.as_str() {
            "align_corners" => {
                if outw == 1.0 {
                    0.0
                } else {
                    y * (inw - 1.0) / (outw - 1.0)
                }
            }
            "asymmetric" => y / scale,
            "tf_crop_and_resize" => {
                let (r0, r1) = roi.ok_or_else(|| inval("tf_crop_and_resize needs roi"))?;
                let base = if outw == 1.0 { (r1 - r0) * (inw - 1.0) / 2.0 } else { y * (r1 - r0) * (inw - 1.0) / (outw - 1.0) };
                base + r0 * (inw - 1.0)
            }
            "pytorch_half_pixel" => {
                if outw == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            "half_pixel" => (y + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let adj = output as f64 / outw;
                let center = inw / 2.0;
                center * (1.0 - adj) + (y + 0.5) / scale - 0.5
            }
            other => return Err(FrontendError::Unsupported(format!("Resize coordinate_transformation_mode '{other}'"))),
        };
        extrap.push(at.coord == "tf_crop_and_resize" && (x < 0.0 || x > inw - 1.0));
        let xf = x.floor();
        let ratio = if x == xf { 1.0 } else { x - xf };
        let mut c = coeffs(at, ratio, scale);
        let nt = c.len() as i64;
        let pad = (nt + 1) / 2;
        let xp = x + pad as f64;
        let p = xp.floor();
        let frac = xp - p;
        let off = if nt % 2 == 0 {
            if frac == 0.0 {
                -(nt / 2)
            } else {
                -(nt / 2) + 1
            }
        } else {
            let base = -((nt - 1) / 2);
            if frac <= 0.5 {
                base
            } else {
                base + 1
            }
        };
        let start = p as i64 + off;
        let taps: Vec<i64> = (0..nt).map(|t| start + t - pad).collect();
        if at.exclude_outside {
            for (t, &i) in taps.iter().enumerate() {
                if i < 0 || i >= input as i64 {
                    c[t] = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            c.iter_mut().for_each(|v| *v /= s);
        }
        idx.push(taps.iter().map(|&i| i.clamp(0, input as i64 - 1)).collect());
        w.push(c);
    }
    Ok(AxisTaps { idx, w, extrapolated: if extrap.iter().any(|&e| e) { Some(extrap) } else { None } })
}

pub fn resize(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let shape = b.shape(x);
    let r = shape.len();
    let dt = b.dtype(x);
    let upsample = n.op() == "Upsample";
    let mode = n.attr_s("mode", "nearest");
    let interp = match mode.as_str() {
        "nearest" => Interp::Nearest,
        "linear" | "bilinear" | "trilinear" => Interp::Linear,
        "cubic" => Interp::Cubic(n.attr_f("cubic_coeff_a", -0.75) as f64),
        m => return n.unsupported(format!("Resize mode '{m}'")),
    };
    let legacy = upsample || n.opset < 11;
    let at = ResizeAttrs {
        interp,
        coord: if legacy { "asymmetric".into() } else { n.attr_s("coordinate_transformation_mode", "half_pixel") },
        nearest_mode: if legacy { "floor".into() } else { n.attr_s("nearest_mode", "round_prefer_floor") },
        exclude_outside: n.attr_i("exclude_outside", 0) != 0,
        antialias: n.attr_i("antialias", 0) != 0,
    };
    if at.antialias && matches!(interp, Interp::Nearest) {
        return Err(inval("antialias is not defined for nearest mode"));
    }
    let extrapolation = n.attr_f("extrapolation_value", 0.0) as f64;
    // Scales / sizes / roi, per axis.
    let (scales_in, sizes_in, roi_in) = if upsample && n.opset < 9 {
        (n.attr_floats("scales").map(|v| v.iter().map(|&f| f as f64).collect::<Vec<_>>()), None, None)
    } else if legacy {
        (Some(b.const_floats(n.input(1)?, "Resize scales")?), None, None)
    } else {
        let roi = match n.opt_input(1) {
            Some(ri) => Some(b.const_floats(ri, "Resize roi")?),
            None => None,
        };
        let scales = match n.opt_input(2) {
            Some(s) => Some(b.const_floats(s, "Resize scales")?).filter(|v| !v.is_empty()),
            None => None,
        };
        let sizes = match n.opt_input(3) {
            Some(s) => Some(b.const_ints(s, "Resize sizes")?).filter(|v| !v.is_empty()),
            None => None,
        };
        (scales, sizes, roi.filter(|v| !v.is_empty()))
    };
    let axes: Vec<usize> = match n.attr_ints("axes") {
        Some(a) => super::shape::axes_of(&a, r)?,
        None => (0..r).collect(),
    };
    let mut scale = vec![1.0f64; r];
    let mut out = shape.clone();
    let mut roi = vec![None; r];
    if let Some(rv) = &roi_in {
        let k = axes.len();
        if rv.len() != 2 * k {
            return Err(inval("Resize roi needs 2 entries per axis"));
        }
        for (i, &a) in axes.iter().enumerate() {
            roi[a] = Some((rv[i], rv[k + i]));
        }
    }
    match (&scales_in, &sizes_in) {
        (Some(s), None) => {
            if s.len() != axes.len() {
                return Err(inval("Resize scales need one entry per axis"));
            }
            for (i, &a) in axes.iter().enumerate() {
                scale[a] = s[i];
                out[a] = (s[i] * shape[a] as f64) as usize;
            }
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() {
                return Err(inval("Resize sizes need one entry per axis"));
            }
            let mut sc: Vec<f64> = axes.iter().enumerate().map(|(i, &a)| sz[i] as f64 / shape[a] as f64).collect();
            match n.attr_s("keep_aspect_ratio_policy", "stretch").as_str() {
                "stretch" => {
                    for (i, &a) in axes.iter().enumerate() {
                        out[a] = sz[i] as usize;
                    }
                }
                p @ ("not_larger" | "not_smaller") => {
                    let s = if p == "not_larger" {
                        sc.iter().cloned().fold(f64::INFINITY, f64::min)
                    } else {
                        sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                    };
                    sc.iter_mut().for_each(|v| *v = s);
                    for &a in &axes {
                        out[a] = (s * shape[a] as f64 + 0.5) as usize;
                    }
                }
                p => return Err(inval(format!("unknown keep_aspect_ratio_policy '{p}'"))),
            }
            for (i, &a) in axes.iter().enumerate() {
                scale[a] = sc[i];
            }
        }
        _ => return Err(inval("Resize needs exactly one of scales and sizes")),
    }
    let work = if dt == DType::F64 { DType::F64 } else { DType::F32 };
    let mut y = b.cast(x, work)?;
    for a in 0..r {
        let identity = (scale[a] - 1.0).abs() < 1e-12
            && out[a] == shape[a]
            && roi[a].is_none_or(|(r0, r1)| r0.abs() < 1e-12 && (r1 - 1.0).abs() < 1e-12);
        if identity {
            continue;
        }
        let taps = axis_taps(&at, shape[a], out[a], scale[a], roi[a])?;
        let ntaps = taps.w.first().map(|v| v.len()).unwrap_or(0);
        let cur = b.shape(y);
        let mut acc: Option<NodeId> = None;
        // One-hot coefficient rows (nearest) collapse to a single gather.
        let one_hot = taps.w.iter().all(|row| row.iter().filter(|&&c| c != 0.0).count() == 1 && row.iter().any(|&c| c == 1.0));
        if one_hot {
            let sel: Vec<i64> = taps.idx.iter().zip(&taps.w).map(|(i, w)| i[w.iter().position(|&c| c == 1.0).unwrap()]).collect();
            let ic = b.const_i64(vec![out[a]], &sel);
            acc = Some(b.add(Op::Gather { axis: a }, &[y, ic])?);
        } else {
            for t in 0..ntaps {
                let iv: Vec<i64> = taps.idx.iter().map(|row| row[t]).collect();
                let wv: Vec<f64> = taps.w.iter().map(|row| row[t]).collect();
                if wv.iter().all(|&c| c == 0.0) {
                    continue;
                }
                let ic = b.const_i64(vec![out[a]], &iv);
                let g = b.add(Op::Gather { axis: a }, &[y, ic])?;
                let mut wshape = vec![1usize; cur.len()];
                wshape[a] = out[a];
                let wc = b.constant(Tensor::from_f64_as(work, wshape, &wv)?);
                let term = b.mul(g, wc)?;
                acc = Some(match acc {
                    None => term,
                    Some(s) => b.add2(s, term)?,
                });
            }
        }
        let mut v = match acc {
            Some(v) => v,
            None => {
                let mut s = cur.clone();
                s[a] = out[a];
                b.full(work, &s, 0.0)?
            }
        };
        if let Some(ex) = taps.extrapolated {
            let mut mshape = vec![1usize; cur.len()];
            mshape[a] = out[a];
            let mv: Vec<f64> = ex.iter().map(|&e| e as u8 as f64).collect();
            let mask = b.constant(Tensor::from_f64_as(DType::Bool, mshape, &mv)?);
            let e = b.scalar(work, extrapolation)?;
            v = b.select(mask, e, v)?;
        }
        y = v;
    }
    // Back to the input type (integers round and saturate, as the reference does).
    if !dt.is_float() {
        y = b.unary(UnaryOp::Round, y)?;
    }
    one(b.cast(y, dt)?)
}
