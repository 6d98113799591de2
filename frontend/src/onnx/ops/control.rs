//! Control flow: `If` (constant condition, or both branches and a select), `Loop` and `Scan`
//! unrolled at compile time.

use super::R;
use crate::onnx::{Importer, NodeCtx, Value};
use crate::FrontendError;
use odc_ir::{DType, NodeId, Tensor};

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

/// Most iterations a loop is unrolled to.
const MAX_UNROLL: usize = 4096;

pub fn if_(imp: &mut Importer, n: &NodeCtx) -> R {
    let cond = n.input(0)?;
    let then_g = n.attr_graph("then_branch").ok_or_else(|| inval("If needs then_branch"))?;
    let else_g = n.attr_graph("else_branch").ok_or_else(|| inval("If needs else_branch"))?;
    if let Some(c) = imp.b.const_value_no_freeze(cond)? {
        let taken = c.get_f64(0)? != 0.0;
        return imp.import_subgraph(if taken { then_g } else { else_g }, &[]);
    }
    // Run-time condition: evaluate both branches and select, when their outputs line up.
    let t = imp.import_subgraph(then_g, &[])?;
    let e = imp.import_subgraph(else_g, &[])?;
    let b = &mut imp.b;
    let compatible = t.len() == e.len()
        && t.iter().zip(&e).all(|(tv, ev)| matches!((tv, ev), (Value::Tensor(a), Value::Tensor(c)) if b.ty(*a) == b.ty(*c)));
    if compatible {
        let c = b.reshape(cond, &[])?;
        let mut out = vec![];
        for (tv, ev) in t.iter().zip(&e) {
            if let (Value::Tensor(a), Value::Tensor(bb)) = (tv, ev) {
                out.push(Value::Tensor(b.select(c, *a, *bb)?));
            }
        }
        return Ok(out);
    }
    // Branches that differ in shape need the condition at compile time.
    match b.const_value(cond)? {
        Some(c) => {
            let taken = c.get_f64(0)? != 0.0;
            Ok(if taken { t } else { e })
        }
        None => n.unsupported("If with a run-time condition whose branches produce different types or shapes"),
    }
}

pub fn loop_(imp: &mut Importer, n: &NodeCtx) -> R {
    let body = n.attr_graph("body").ok_or_else(|| inval("Loop needs a body"))?;
    let trip = match n.opt_input(0) {
        Some(m) => match imp.b.const_value(m)? {
            Some(t) => Some(t.get_i64(0)?),
            None => return n.unsupported("Loop with a run-time trip count"),
        },
        None => None,
    };
    let mut cond = match n.opt_input(1) {
        Some(c) => match imp.b.const_value(c)? {
            Some(t) => t.get_f64(0)? != 0.0,
            None => return n.unsupported("Loop with a run-time initial condition"),
        },
        None => true,
    };
    let mut carried: Vec<Value> = (2..n.num_inputs()).map(|i| n.value(i).cloned().unwrap_or(Value::Optional(None))).collect();
    let n_carried = carried.len();
    let mut scans: Vec<Vec<NodeId>> = vec![];
    let mut i = 0i64;
    while cond && trip.is_none_or(|m| i < m) {
        if i as usize >= MAX_UNROLL {
            return n.unsupported(format!("Loop with more than {MAX_UNROLL} iterations"));
        }
        let it = imp.b.constant(Tensor::from_i64(vec![], &[i]));
        let c = imp.b.constant(Tensor::from_f64_as(DType::Bool, vec![], &[1.0])?);
        let mut args = vec![Value::Tensor(it), Value::Tensor(c)];
        args.extend(carried.iter().cloned());
        let outs = imp.import_subgraph(body, &args)?;
        if outs.len() < 1 + n_carried {
            return Err(inval("Loop body returns too few values"));
        }
        cond = match &outs[0] {
            Value::Tensor(c) => match imp.b.const_value(*c)? {
                Some(t) => t.get_f64(0)? != 0.0,
                None => return n.unsupported("Loop whose condition depends on run-time values"),
            },
            _ => return Err(inval("Loop condition must be a tensor")),
        };
        carried = outs[1..1 + n_carried].to_vec();
        for (k, v) in outs[1 + n_carried..].iter().enumerate() {
            let Value::Tensor(t) = v else { return n.unsupported("Loop scan outputs that are not tensors") };
            if scans.len() <= k {
                scans.push(vec![]);
            }
            scans[k].push(*t);
        }
        i += 1;
    }
    let mut res = carried;
    for s in scans {
        let b = &mut imp.b;
        let parts: Vec<NodeId> = s.iter().map(|&t| b.unsqueeze(t, &[0])).collect::<Result<_, _>>()?;
        res.push(Value::Tensor(b.concat(&parts, 0)?));
    }
    Ok(res)
}

pub fn scan(imp: &mut Importer, n: &NodeCtx) -> R {
    if n.opset < 9 {
        return n.unsupported("Scan before opset 9 (batched form)");
    }
    let body = n.attr_graph("body").ok_or_else(|| inval("Scan needs a body"))?;
    let m = n.attr_i("num_scan_inputs", 0) as usize;
    let total = n.num_inputs();
    if m > total {
        return Err(inval("num_scan_inputs exceeds the inputs"));
    }
    let n_state = total - m;
    let mut state: Vec<Value> = (0..n_state).map(|i| n.value(i).cloned().unwrap_or(Value::Optional(None))).collect();
    let scan_inputs: Vec<NodeId> = (n_state..total).map(|i| n.input(i)).collect::<Result<_, _>>()?;
    let in_axes = n.attr_ints("scan_input_axes").unwrap_or_else(|| vec![0; m]);
    let in_dirs = n.attr_ints("scan_input_directions").unwrap_or_else(|| vec![0; m]);
    let b = &mut imp.b;
    let mut axes = vec![];
    let mut len = None;
    for (k, &x) in scan_inputs.iter().enumerate() {
        let a = odc_passes::norm_axis(in_axes.get(k).copied().unwrap_or(0), b.rank(x))?;
        let l = b.shape(x)[a];
        if len.is_some_and(|v| v != l) {
            return Err(inval("Scan inputs differ in sequence length"));
        }
        len = Some(l);
        axes.push(a);
    }
    let len = len.unwrap_or(0);
    if len > MAX_UNROLL {
        return n.unsupported(format!("Scan over more than {MAX_UNROLL} steps"));
    }
    let n_outputs_scan = n.node.output.len() - n_state;
    let mut scans: Vec<Vec<NodeId>> = vec![vec![]; n_outputs_scan];
    for t in 0..len {
        let mut args = state.clone();
        for (k, &x) in scan_inputs.iter().enumerate() {
            let b = &mut imp.b;
            let pos = if in_dirs.get(k).copied().unwrap_or(0) != 0 { len - 1 - t } else { t };
            let s = b.slice_axis(x, axes[k], pos as i64, 1, 1)?;
            let s = b.squeeze(s, &[axes[k]])?;
            args.push(Value::Tensor(s));
        }
        let outs = imp.import_subgraph(body, &args)?;
        if outs.len() != n_state + n_outputs_scan {
            return Err(inval("Scan body returns the wrong number of values"));
        }
        state = outs[..n_state].to_vec();
        for (k, v) in outs[n_state..].iter().enumerate() {
            let Value::Tensor(x) = v else { return n.unsupported("Scan outputs that are not tensors") };
            scans[k].push(*x);
        }
    }
    let out_axes = n.attr_ints("scan_output_axes").unwrap_or_else(|| vec![0; n_outputs_scan]);
    let out_dirs = n.attr_ints("scan_output_directions").unwrap_or_else(|| vec![0; n_outputs_scan]);
    let mut res = state;
    for (k, mut parts) in scans.into_iter().enumerate() {
        if parts.is_empty() {
            return n.unsupported("Scan with zero iterations");
        }
        let b = &mut imp.b;
        if out_dirs.get(k).copied().unwrap_or(0) != 0 {
            parts.reverse();
        }
        let r = b.rank(parts[0]) + 1;
        let a = odc_passes::norm_axis(out_axes.get(k).copied().unwrap_or(0), r)?;
        let ps: Vec<NodeId> = parts.iter().map(|&p| b.unsqueeze(p, &[a])).collect::<Result<_, _>>()?;
        res.push(Value::Tensor(b.concat(&ps, a)?));
    }
    Ok(res)
}
