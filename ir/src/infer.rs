//! Type inference: the output type of every primitive from its operand types.
//!
//! This is also the op set's contract: a node whose operands fail these checks cannot be built,
//! and the verifier re-runs them on every node.

use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::{Op, UnaryOp};
use crate::IrError;

fn err<T>(msg: impl Into<String>) -> Result<T, IrError> {
    Err(IrError::new(msg))
}

/// numpy broadcasting of several shapes.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Result<Vec<usize>, IrError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return err(format!("shapes {:?} do not broadcast", shapes));
            }
        }
    }
    Ok(out)
}

fn arity(op: &Op) -> Option<usize> {
    use Op::*;
    Some(match op {
        Input { .. } | Constant(_) | Iota { .. } => 0,
        Unary(_) | Cast { .. } | Bitcast { .. } | Reduce { .. } | Reshape { .. } | Transpose { .. }
        | Slice { .. } | Expand { .. } | Pad { .. } | Window { .. } => 1,
        Binary(_) | MatMul | Conv(_) | Gather { .. } | GatherElements { .. } | GatherNd { .. } => 2,
        Select | ScatterElements { .. } | ScatterNd { .. } => 3,
        Concat { .. } => return None,
    })
}

fn is_index_type(d: DType) -> bool {
    matches!(d, DType::I32 | DType::I64)
}

/// The output type of `op` applied to operands of types `ins`. Sources (`Input`) are typed by the
/// graph and are rejected here.
pub fn infer(op: &Op, ins: &[&TensorType]) -> Result<TensorType, IrError> {
    use Op::*;
    if let Some(n) = arity(op) {
        if ins.len() != n {
            return err(format!("{} takes {n} operands, got {}", op.name(), ins.len()));
        }
    } else if ins.is_empty() {
        return err(format!("{} needs at least one operand", op.name()));
    }
    let ty = |dtype: DType, shape: Vec<usize>| Ok(TensorType { dtype, shape });
    match op {
        Input { .. } => err("input nodes are typed by the graph"),
        Constant(t) => ty(t.dtype, t.shape.clone()),
        Iota { axis, dtype, shape } => {
            if *axis >= shape.len() {
                return err(format!("iota axis {axis} out of range for rank {}", shape.len()));
            }
            ty(*dtype, shape.clone())
        }
        Unary(u) => {
            let x = ins[0];
            let d = x.dtype;
            match u {
                UnaryOp::Not if d != DType::Bool => return err(format!("not needs bool, got {d}")),
                UnaryOp::BitNot if !d.is_int() => return err(format!("bitnot needs an integer type, got {d}")),
                _ if u.float_only() && !d.is_float() => {
                    return err(format!("{} needs a float type, got {d}", u.name()))
                }
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Recip if d == DType::Bool => {
                    return err(format!("{} is not defined on bool", u.name()))
                }
                _ => {}
            }
            ty(if u.returns_bool() { DType::Bool } else { d }, x.shape.clone())
        }
        Binary(b) => {
            let (a, c) = (ins[0], ins[1]);
            if a.dtype != c.dtype {
                return err(format!("{} operands differ in type: {} vs {}", b.name(), a.dtype, c.dtype));
            }
            use crate::op::BinaryOp::*;
            let d = a.dtype;
            match b {
                And | Or | Xor if d != DType::Bool => return err(format!("{} needs bool, got {d}", b.name())),
                BitAnd | BitOr | BitXor | Shl | Shr if !d.is_int() => {
                    return err(format!("{} needs an integer type, got {d}", b.name()))
                }
                Add | Sub | Mul | Div | Rem | Pow if d == DType::Bool => {
                    return err(format!("{} is not defined on bool", b.name()))
                }
                _ => {}
            }
            let shape = broadcast_shapes(&[&a.shape, &c.shape])?;
            ty(if b.returns_bool() { DType::Bool } else { d }, shape)
        }
        Select => {
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            if c.dtype != DType::Bool {
                return err(format!("select condition must be bool, got {}", c.dtype));
            }
            if a.dtype != b.dtype {
                return err(format!("select branches differ in type: {} vs {}", a.dtype, b.dtype));
            }
            ty(a.dtype, broadcast_shapes(&[&c.shape, &a.shape, &b.shape])?)
        }
        Cast { to, .. } => ty(*to, ins[0].shape.clone()),
        Bitcast { to } => {
            let from = ins[0].dtype;
            if from.bits() != to.bits() || from.is_packed() {
                return err(format!("bitcast from {from} to {to} changes the element width"));
            }
            ty(*to, ins[0].shape.clone())
        }
        Reduce { op: rop, axes } => {
            let x = ins[0];
            check_axes(axes, x.shape.len())?;
            if x.dtype == DType::Bool && matches!(rop, crate::op::ReduceOp::Sum | crate::op::ReduceOp::Prod) {
                return err("sum/prod reductions are not defined on bool");
            }
            let mut shape = x.shape.clone();
            for &a in axes {
                shape[a] = 1;
            }
            ty(x.dtype, shape)
        }
        MatMul => {
            let (a, b) = (ins[0], ins[1]);
            if a.dtype != b.dtype || a.dtype == DType::Bool {
                return err(format!("matmul operands must share a numeric type, got {} and {}", a.dtype, b.dtype));
            }
            let (ra, rb) = (a.shape.len(), b.shape.len());
            if ra < 2 || rb < 2 {
                return err("matmul operands need rank >= 2");
            }
            let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
            let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
            if k != k2 {
                return err(format!("matmul inner dimensions differ: {:?} x {:?}", a.shape, b.shape));
            }
            let mut shape = broadcast_shapes(&[&a.shape[..ra - 2], &b.shape[..rb - 2]])?;
            shape.extend([m, n]);
            ty(a.dtype, shape)
        }
        Conv(c) => {
            let (x, w) = (ins[0], ins[1]);
            if x.dtype != w.dtype || x.dtype == DType::Bool || x.dtype.is_packed() {
                return err(format!("conv operands must share a numeric type, got {} and {}", x.dtype, w.dtype));
            }
            let r = x.shape.len();
            if r < 3 || w.shape.len() != r {
                return err(format!("conv needs x [N,C,spatial..] and w of the same rank, got {:?} and {:?}", x.shape, w.shape));
            }
            let sp = r - 2;
            if c.strides.len() != sp || c.dilations.len() != sp {
                return err("conv strides/dilations must have one entry per spatial axis");
            }
            if c.groups == 0 || x.shape[1] != w.shape[1] * c.groups || w.shape[0] % c.groups != 0 {
                return err(format!(
                    "conv channels do not match: x {:?}, w {:?}, groups {}",
                    x.shape, w.shape, c.groups
                ));
            }
            let mut shape = vec![x.shape[0], w.shape[0]];
            for i in 0..sp {
                let (s, k, st, d) = (x.shape[2 + i], w.shape[2 + i], c.strides[i], c.dilations[i]);
                if st == 0 || d == 0 {
                    return err("conv strides and dilations must be positive");
                }
                let span = d * (k.max(1) - 1) + 1;
                if k == 0 || s < span {
                    return err(format!("conv kernel {:?} (dilated) is larger than the input {:?}", w.shape, x.shape));
                }
                shape.push((s - span) / st + 1);
            }
            ty(x.dtype, shape)
        }
        Reshape { shape } => {
            let n: usize = ins[0].shape.iter().product();
            if shape.iter().product::<usize>() != n {
                return err(format!("cannot reshape {:?} to {:?}", ins[0].shape, shape));
            }
            ty(ins[0].dtype, shape.clone())
        }
        Transpose { perm } => {
            let x = ins[0];
            check_perm(perm, x.shape.len())?;
            ty(x.dtype, perm.iter().map(|&p| x.shape[p]).collect())
        }
        Slice { starts, steps, sizes } => {
            let x = ins[0];
            let r = x.shape.len();
            if starts.len() != r || steps.len() != r || sizes.len() != r {
                return err("slice needs one start, step and size per axis");
            }
            for i in 0..r {
                if sizes[i] == 0 {
                    continue;
                }
                let last = starts[i] + (sizes[i] as i64 - 1) * steps[i];
                let d = x.shape[i] as i64;
                if steps[i] == 0 || starts[i] < 0 || starts[i] >= d || last < 0 || last >= d {
                    return err(format!(
                        "slice axis {i}: start {} step {} size {} leaves the extent {d}",
                        starts[i], steps[i], sizes[i]
                    ));
                }
            }
            ty(x.dtype, sizes.clone())
        }
        Expand { shape } => {
            let x = ins[0];
            let b = broadcast_shapes(&[&x.shape, shape])?;
            if &b != shape {
                return err(format!("cannot expand {:?} to {:?}", x.shape, shape));
            }
            ty(x.dtype, shape.clone())
        }
        Pad { low, high, interior, mode } => {
            let x = ins[0];
            let r = x.shape.len();
            if low.len() != r || high.len() != r || interior.len() != r {
                return err("pad needs one low, high and interior entry per axis");
            }
            let mut shape = Vec::with_capacity(r);
            for i in 0..r {
                let d = x.shape[i] as i64;
                let inner = if d > 0 { d + (d - 1) * interior[i] as i64 } else { 0 };
                let o = low[i] + inner + high[i];
                if o < 0 {
                    return err(format!("pad axis {i} gives negative extent {o}"));
                }
                if !matches!(mode, crate::op::PadMode::Constant(_)) {
                    if interior[i] != 0 || low[i] < 0 || high[i] < 0 {
                        return err("edge/reflect/wrap padding takes no interior or negative padding");
                    }
                    if d == 0 && (low[i] > 0 || high[i] > 0) {
                        return err(format!("cannot {mode:?}-pad an empty axis"));
                    }
                }
                shape.push(o as usize);
            }
            ty(x.dtype, shape)
        }
        Window { kernel, strides, dilations } => {
            let x = ins[0];
            let k = kernel.len();
            if k > x.shape.len() || strides.len() != k || dilations.len() != k {
                return err("window needs kernel, strides and dilations per trailing axis");
            }
            let lead = x.shape.len() - k;
            let mut shape = x.shape[..lead].to_vec();
            for i in 0..k {
                let s = x.shape[lead + i];
                let span = dilations[i] * (kernel[i].max(1) - 1) + 1;
                if strides[i] == 0 || dilations[i] == 0 || kernel[i] == 0 || s < span {
                    return err(format!("window {kernel:?} does not fit the input {:?}", x.shape));
                }
                shape.push((s - span) / strides[i] + 1);
            }
            shape.extend(kernel.iter().copied());
            ty(x.dtype, shape)
        }
        Concat { axis } => {
            let first = ins[0];
            let r = first.shape.len();
            if *axis >= r {
                return err(format!("concat axis {axis} out of range for rank {r}"));
            }
            let mut total = 0;
            for t in ins {
                if t.dtype != first.dtype || t.shape.len() != r {
                    return err("concat operands must share dtype and rank");
                }
                for i in 0..r {
                    if i != *axis && t.shape[i] != first.shape[i] {
                        return err(format!("concat operands differ off the axis: {:?} vs {:?}", first.shape, t.shape));
                    }
                }
                total += t.shape[*axis];
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            ty(first.dtype, shape)
        }
        Gather { axis } => {
            let (d, i) = (ins[0], ins[1]);
            if *axis >= d.shape.len() || !is_index_type(i.dtype) {
                return err(format!("gather needs axis < rank and i32/i64 indices, got axis {axis}, {}", i.dtype));
            }
            let mut shape = d.shape[..*axis].to_vec();
            shape.extend(&i.shape);
            shape.extend(&d.shape[axis + 1..]);
            ty(d.dtype, shape)
        }
        GatherElements { axis } => {
            let (d, i) = (ins[0], ins[1]);
            if *axis >= d.shape.len() || i.shape.len() != d.shape.len() || !is_index_type(i.dtype) {
                return err("gather_elements needs same-rank i32/i64 indices and axis < rank");
            }
            ty(d.dtype, i.shape.clone())
        }
        GatherNd { batch_dims } => {
            let (d, i) = (ins[0], ins[1]);
            let b = *batch_dims;
            let q = i.shape.len();
            if !is_index_type(i.dtype) || q < 1 || b >= q || b >= d.shape.len() {
                return err("gather_nd needs i32/i64 indices of rank > batch_dims");
            }
            let k = i.shape[q - 1];
            if b + k > d.shape.len() || d.shape[..b] != i.shape[..b] {
                return err(format!("gather_nd index depth {k} does not fit data {:?}", d.shape));
            }
            let mut shape = i.shape[..q - 1].to_vec();
            shape.extend(&d.shape[b + k..]);
            ty(d.dtype, shape)
        }
        ScatterElements { axis, .. } => {
            let (d, i, u) = (ins[0], ins[1], ins[2]);
            if *axis >= d.shape.len() || i.shape.len() != d.shape.len() || i.shape != u.shape
                || u.dtype != d.dtype || !is_index_type(i.dtype)
            {
                return err("scatter_elements needs indices and updates of one shape, same rank as data");
            }
            ty(d.dtype, d.shape.clone())
        }
        ScatterNd { .. } => {
            let (d, i, u) = (ins[0], ins[1], ins[2]);
            let q = i.shape.len();
            if q < 1 || !is_index_type(i.dtype) || u.dtype != d.dtype {
                return err("scatter_nd needs i32/i64 indices of rank >= 1 and updates of the data type");
            }
            let k = i.shape[q - 1];
            if k > d.shape.len() {
                return err("scatter_nd index depth exceeds the data rank");
            }
            let mut want = i.shape[..q - 1].to_vec();
            want.extend(&d.shape[k..]);
            if u.shape != want {
                return err(format!("scatter_nd updates must have shape {want:?}, got {:?}", u.shape));
            }
            ty(d.dtype, d.shape.clone())
        }
    }
}

fn check_axes(axes: &[usize], rank: usize) -> Result<(), IrError> {
    let mut seen = vec![false; rank];
    for &a in axes {
        if a >= rank || seen[a] {
            return err(format!("axes {axes:?} invalid for rank {rank}"));
        }
        seen[a] = true;
    }
    Ok(())
}

fn check_perm(perm: &[usize], rank: usize) -> Result<(), IrError> {
    if perm.len() != rank {
        return err(format!("permutation {perm:?} has the wrong length for rank {rank}"));
    }
    check_axes(perm, rank)
}
