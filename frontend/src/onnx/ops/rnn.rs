//! RNN, GRU and LSTM, unrolled over the (static) sequence length into primitives.

use super::{many, R};
use crate::onnx::{Importer, NodeCtx};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, UnaryOp};
use odc_passes::Builder;

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rnn,
    Gru,
    Lstm,
}

/// One activation function with its optional alpha/beta.
#[derive(Clone)]
struct Act {
    name: String,
    alpha: Option<f64>,
    beta: Option<f64>,
}

fn apply(b: &mut Builder, f: &Act, x: NodeId) -> Result<NodeId, FrontendError> {
    Ok(match f.name.to_ascii_lowercase().as_str() {
        "tanh" => b.unary(UnaryOp::Tanh, x)?,
        "sigmoid" => b.sigmoid(x)?,
        "relu" => b.relu(x)?,
        "affine" => {
            let a = b.binary_c(BinaryOp::Mul, x, f.alpha.unwrap_or(1.0))?;
            b.binary_c(BinaryOp::Add, a, f.beta.unwrap_or(0.0))?
        }
        "leakyrelu" => b.leaky_relu(x, f.alpha.unwrap_or(0.01))?,
        "thresholdedrelu" => b.thresholded_relu(x, f.alpha.unwrap_or(1.0))?,
        "scaledtanh" => {
            let bx = b.binary_c(BinaryOp::Mul, x, f.beta.unwrap_or(1.0))?;
            let t = b.unary(UnaryOp::Tanh, bx)?;
            b.binary_c(BinaryOp::Mul, t, f.alpha.unwrap_or(1.0))?
        }
        "hardsigmoid" => b.hard_sigmoid(x, f.alpha.unwrap_or(0.2), f.beta.unwrap_or(0.5))?,
        "elu" => b.elu(x, f.alpha.unwrap_or(1.0), 1.0, false)?,
        "softsign" => b.softsign(x)?,
        "softplus" => b.softplus(x)?,
        other => return Err(FrontendError::Unsupported(format!("recurrent activation '{other}'"))),
    })
}

pub fn recurrent(imp: &mut Importer, n: &NodeCtx) -> R {
    let kind = match n.op() {
        "RNN" => Kind::Rnn,
        "GRU" => Kind::Gru,
        _ => Kind::Lstm,
    };
    let gates = match kind {
        Kind::Rnn => 1,
        Kind::Gru => 3,
        Kind::Lstm => 4,
    };
    let (x, w, r) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let bias = n.opt_input(3);
    let seq_lens = n.opt_input(4);
    let h0 = n.opt_input(5);
    let c0 = if kind == Kind::Lstm { n.opt_input(6) } else { None };
    let peep = if kind == Kind::Lstm { n.opt_input(7) } else { None };
    let b = &mut imp.b;
    let layout = n.attr_i("layout", 0);
    let x = if layout == 1 { b.transpose(x, &[1, 0, 2])? } else { x };
    let (xs, ws) = (b.shape(x), b.shape(w));
    if xs.len() != 3 || ws.len() != 3 || b.shape(r).len() != 3 {
        return Err(inval(format!("X, W and R must have rank 3, got {xs:?}, {ws:?} and {:?}", b.shape(r))));
    }
    let (seq, batch, input) = (xs[0], xs[1], xs[2]);
    let dirs = ws[0];
    let hidden = n.attr_i("hidden_size", (ws[1] / gates) as i64);
    let hidden = usize::try_from(hidden).ok().filter(|&h| h > 0).ok_or_else(|| inval(format!("hidden_size must be positive, got {hidden}")))?;
    if ws[1] != gates * hidden || ws[2] != input {
        return Err(inval(format!("W {ws:?} does not match {gates} gates of hidden size {hidden} and input {input}")));
    }
    let direction = n.attr_s("direction", "forward");
    let expected_dirs = if direction == "bidirectional" { 2 } else { 1 };
    if dirs != expected_dirs {
        return Err(inval(format!("direction {direction} needs {expected_dirs} weight sets, W has {dirs}")));
    }
    let clip = if n.has_attr("clip") { Some(n.attr_f("clip", 0.0) as f64) } else { None };
    let dt = b.dtype(x);
    // Activations: per direction, gates use f (and g, h).
    let per_dir = match kind {
        Kind::Rnn => 1,
        Kind::Gru => 2,
        Kind::Lstm => 3,
    };
    let defaults: Vec<&str> = match kind {
        Kind::Rnn => vec!["Tanh"],
        Kind::Gru => vec!["Sigmoid", "Tanh"],
        Kind::Lstm => vec!["Sigmoid", "Tanh", "Tanh"],
    };
    let names: Vec<String> = match n.attr(&"activations".to_string()) {
        Some(a) if !a.strings.is_empty() => a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect(),
        _ => (0..dirs).flat_map(|_| defaults.iter().map(|s| s.to_string())).collect(),
    };
    let alphas = n.attr_floats("activation_alpha").unwrap_or_default();
    let betas = n.attr_floats("activation_beta").unwrap_or_default();
    let acts: Vec<Act> = names
        .iter()
        .enumerate()
        .map(|(i, s)| Act { name: s.clone(), alpha: alphas.get(i).map(|&v| v as f64), beta: betas.get(i).map(|&v| v as f64) })
        .collect();
    if acts.len() < per_dir * dirs {
        return Err(inval("not enough activation functions for the directions"));
    }
    let linear_before_reset = n.attr_i("linear_before_reset", 0) != 0;
    let input_forget = n.attr_i("input_forget", 0) != 0;
    // Sequence-length mask: [seq, batch, 1] true where t < len[b].
    let mask = match seq_lens {
        Some(l) => {
            let t = b.iota(DType::I64, &[seq, batch, 1], 0)?;
            let l = b.cast(l, DType::I64)?;
            let l = b.reshape(l, &[1, batch, 1])?;
            Some(b.binary(BinaryOp::Lt, t, l)?)
        }
        None => None,
    };
    let x2 = b.reshape(x, &[seq * batch, input])?;
    let mut ys = vec![];
    let mut yhs = vec![];
    let mut ycs = vec![];
    for d in 0..dirs {
        let reverse = direction == "reverse" || d == 1;
        let wd = b.slice_axis(w, 0, d as i64, 1, 1)?;
        let wd = b.reshape(wd, &[gates * hidden, input])?;
        let rd = b.slice_axis(r, 0, d as i64, 1, 1)?;
        let rd = b.reshape(rd, &[gates * hidden, hidden])?;
        let wt = b.transpose(wd, &[1, 0])?;
        let xw = b.matmul(x2, wt)?;
        let mut xw = b.reshape(xw, &[seq, batch, gates * hidden])?;
        let (wb, rb) = match bias {
            Some(bb) => {
                let bd = b.slice_axis(bb, 0, d as i64, 1, 1)?;
                let bd = b.reshape(bd, &[2 * gates * hidden])?;
                (Some(b.slice_axis(bd, 0, 0, 1, gates * hidden)?), Some(b.slice_axis(bd, 0, (gates * hidden) as i64, 1, gates * hidden)?))
            }
            None => (None, None),
        };
        if let Some(wb) = wb {
            xw = b.add2(xw, wb)?;
        }
        let init = |b: &mut Builder, s: Option<NodeId>| -> Result<NodeId, FrontendError> {
            Ok(match s {
                Some(s) => {
                    let s = if layout == 1 { b.transpose(s, &[1, 0, 2])? } else { s };
                    let sd = b.slice_axis(s, 0, d as i64, 1, 1)?;
                    b.reshape(sd, &[batch, hidden])?
                }
                None => b.full(dt, &[batch, hidden], 0.0)?,
            })
        };
        let mut h = init(b, h0)?;
        let mut c = init(b, c0)?;
        let rt = b.transpose(rd, &[1, 0])?;
        let peeps = match peep {
            Some(p) => {
                let pd = b.slice_axis(p, 0, d as i64, 1, 1)?;
                let pd = b.reshape(pd, &[3 * hidden])?;
                Some((b.slice_axis(pd, 0, 0, 1, hidden)?, b.slice_axis(pd, 0, hidden as i64, 1, hidden)?, b.slice_axis(pd, 0, 2 * hidden as i64, 1, hidden)?))
            }
            None => None,
        };
        let a = &acts[d * per_dir..(d + 1) * per_dir];
        let clipf = |b: &mut Builder, v: NodeId| -> Result<NodeId, FrontendError> {
            Ok(match clip {
                Some(cl) => {
                    let lo = b.scalar(dt, -cl)?;
                    let hi = b.scalar(dt, cl)?;
                    let v = b.max(v, lo)?;
                    b.min(v, hi)?
                }
                None => v,
            })
        };
        let mut outs = vec![None; seq];
        let steps: Vec<usize> = if reverse { (0..seq).rev().collect() } else { (0..seq).collect() };
        for t in steps {
            let xt = b.slice_axis(xw, 0, t as i64, 1, 1)?;
            let xt = b.reshape(xt, &[batch, gates * hidden])?;
            let gate = |b: &mut Builder, src: NodeId, k: usize| -> Result<NodeId, FrontendError> {
                Ok(b.slice_axis(src, 1, (k * hidden) as i64, 1, hidden)?)
            };
            let (h_new, c_new) = match kind {
                Kind::Rnn => {
                    let hr = b.matmul(h, rt)?;
                    let mut s = b.add2(xt, hr)?;
                    if let Some(rb) = rb {
                        s = b.add2(s, rb)?;
                    }
                    let s = clipf(b, s)?;
                    (apply(b, &a[0], s)?, c)
                }
                Kind::Gru => {
                    // gate order z, r, h
                    let hr = b.matmul(h, rt)?;
                    let hr = match rb {
                        Some(rb) => b.add2(hr, rb)?,
                        None => hr,
                    };
                    let zx = gate(b, xt, 0)?;
                    let rx = gate(b, xt, 1)?;
                    let hx = gate(b, xt, 2)?;
                    let zh = gate(b, hr, 0)?;
                    let rh = gate(b, hr, 1)?;
                    let z = b.add2(zx, zh)?;
                    let z = clipf(b, z)?;
                    let z = apply(b, &a[0], z)?;
                    let rg = b.add2(rx, rh)?;
                    let rg = clipf(b, rg)?;
                    let rg = apply(b, &a[0], rg)?;
                    let hh = if linear_before_reset {
                        let hh = gate(b, hr, 2)?;
                        let m = b.mul(rg, hh)?;
                        b.add2(hx, m)?
                    } else {
                        let rhp = b.mul(rg, h)?;
                        let rh_slice = b.slice_axis(rt, 1, (2 * hidden) as i64, 1, hidden)?;
                        let m = b.matmul(rhp, rh_slice)?;
                        let m = match rb {
                            Some(rb) => {
                                let rbh = b.slice_axis(rb, 0, (2 * hidden) as i64, 1, hidden)?;
                                b.add2(m, rbh)?
                            }
                            None => m,
                        };
                        b.add2(hx, m)?
                    };
                    let hh = clipf(b, hh)?;
                    let hh = apply(b, &a[1], hh)?;
                    // H = (1 - z) * hh + z * H
                    let one_m = b.scalar(dt, 1.0)?;
                    let omz = b.sub(one_m, z)?;
                    let p1 = b.mul(omz, hh)?;
                    let p2 = b.mul(z, h)?;
                    (b.add2(p1, p2)?, c)
                }
                Kind::Lstm => {
                    // gate order i, o, f, c
                    let hr = b.matmul(h, rt)?;
                    let mut s = b.add2(xt, hr)?;
                    if let Some(rb) = rb {
                        s = b.add2(s, rb)?;
                    }
                    let mut gi = gate(b, s, 0)?;
                    let mut go = gate(b, s, 1)?;
                    let mut gf = gate(b, s, 2)?;
                    let gc = gate(b, s, 3)?;
                    if let Some((pi, _, pf)) = peeps {
                        let pic = b.mul(pi, c)?;
                        gi = b.add2(gi, pic)?;
                        let pfc = b.mul(pf, c)?;
                        gf = b.add2(gf, pfc)?;
                    }
                    let gi = clipf(b, gi)?;
                    let i = apply(b, &a[0], gi)?;
                    let f = if input_forget {
                        let one_m = b.scalar(dt, 1.0)?;
                        b.sub(one_m, i)?
                    } else {
                        let gf = clipf(b, gf)?;
                        apply(b, &a[0], gf)?
                    };
                    let gc = clipf(b, gc)?;
                    let cc = apply(b, &a[1], gc)?;
                    let fc = b.mul(f, c)?;
                    let ic = b.mul(i, cc)?;
                    let c_new = b.add2(fc, ic)?;
                    if let Some((_, po, _)) = peeps {
                        let poc = b.mul(po, c_new)?;
                        go = b.add2(go, poc)?;
                    }
                    let go = clipf(b, go)?;
                    let o = apply(b, &a[0], go)?;
                    let hc = apply(b, &a[2], c_new)?;
                    (b.mul(o, hc)?, c_new)
                }
            };
            // Past a sequence's length the state holds and the output is zero.
            let (h_next, c_next, y_t) = match mask {
                Some(m) => {
                    let mt = b.slice_axis(m, 0, t as i64, 1, 1)?;
                    let mt = b.reshape(mt, &[batch, 1])?;
                    let hn = b.select(mt, h_new, h)?;
                    let cn = b.select(mt, c_new, c)?;
                    let z = b.scalar(dt, 0.0)?;
                    let yt = b.select(mt, h_new, z)?;
                    (hn, cn, yt)
                }
                None => (h_new, c_new, h_new),
            };
            h = h_next;
            c = c_next;
            outs[t] = Some(y_t);
        }
        // Every time step was visited once, in one order or the other.
        let stacked: Vec<NodeId> = outs.into_iter().flatten().map(|o| b.reshape(o, &[1, 1, batch, hidden])).collect::<Result<_, _>>()?;
        ys.push(b.concat(&stacked, 0)?);
        yhs.push(b.reshape(h, &[1, batch, hidden])?);
        ycs.push(b.reshape(c, &[1, batch, hidden])?);
    }
    let mut y = b.concat(&ys, 1)?;
    let mut yh = b.concat(&yhs, 0)?;
    let mut yc = b.concat(&ycs, 0)?;
    if layout == 1 {
        y = b.transpose(y, &[2, 0, 1, 3])?;
        yh = b.transpose(yh, &[1, 0, 2])?;
        yc = b.transpose(yc, &[1, 0, 2])?;
    }
    let mut res = vec![y, yh];
    if kind == Kind::Lstm {
        res.push(yc);
    }
    many(res)
}
