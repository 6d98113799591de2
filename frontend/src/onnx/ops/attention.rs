//! Attention (opset 23+), RotaryEmbedding and SwiGLU, as the ONNX reference defines them.

use super::{one, R};
use crate::onnx::{tensor::dtype_from_onnx, Importer, NodeCtx, Value};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, Scalar, UnaryOp};
use odc_passes::nn::{AttentionOptions, CausalOffset, FullyMaskedRows, RopeOptions};
use odc_passes::Builder;

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

pub fn attention(imp: &mut Importer, n: &NodeCtx) -> R {
    let (q, k, v) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let mask = n.opt_input(3);
    let (past_k, past_v) = (n.opt_input(4), n.opt_input(5));
    let nonpad = n.opt_input(6);
    let b = &mut imp.b;
    let dt = b.dtype(q);
    let rank = b.rank(q);
    if past_k.is_some() != past_v.is_some() {
        return Err(inval("past_key and past_value must be provided together"));
    }
    let (q, k, v) = if rank == 3 {
        let qh = n.attr_i("q_num_heads", 0) as usize;
        let kvh = n.attr_i("kv_num_heads", 0) as usize;
        (b.split_heads(q, qh)?, b.split_heads(k, kvh)?, b.split_heads(v, kvh)?)
    } else if rank == 4 {
        (q, k, v)
    } else {
        return Err(inval("Attention takes 3-D or 4-D Q, K, V"));
    };
    let qs = b.shape(q);
    let (batch, q_len, head) = (qs[0], qs[2], qs[3]);
    let k_all = match past_k {
        Some(p) => b.concat(&[p, k], 2)?,
        None => k,
    };
    let v_all = match past_v {
        Some(p) => b.concat(&[p, v], 2)?,
        None => v,
    };
    let kv_len = b.shape(k_all)[2];
    let past_len = past_k.map(|p| b.shape(p)[2]).unwrap_or(0);
    // Attention bias, built as a broadcastable tensor of dt.
    let mut bias = b.full(dt, &[q_len, kv_len], 0.0)?;
    let mask = match mask {
        Some(m) => {
            let ml = *b.shape(m).last().unwrap();
            if ml < kv_len {
                let r = b.rank(m);
                let mut high = vec![0i64; r];
                high[r - 1] = (kv_len - ml) as i64;
                let fill = if b.dtype(m) == DType::Bool { Scalar::I64(0) } else { Scalar::F64(f64::NEG_INFINITY) };
                Some(b.pad_const(m, &vec![0; r], &high, fill)?)
            } else {
                Some(m)
            }
        }
        None => None,
    };
    let mask_bias = match mask {
        Some(m) if b.dtype(m) == DType::Bool => Some(b.bias_from_mask(m, dt)?),
        Some(m) => Some(b.cast(m, dt)?),
        None => None,
    };
    // The causal/window frontier: per batch from the non-padded lengths (external cache), else
    // after the past keys.
    let offset = match (nonpad, past_k) {
        (Some(np), None) => {
            let l = b.cast(np, DType::I64)?;
            let l = b.binary_c(BinaryOp::Sub, l, q_len as f64)?;
            CausalOffset::Tensor(b.reshape(l, &[batch, 1, 1, 1])?)
        }
        _ => CausalOffset::Fixed(past_len),
    };
    if let Some(mb) = mask_bias {
        bias = b.add2(bias, mb)?;
    }
    if n.attr_i("is_causal", 0) != 0 {
        let allowed = b.causal_allowed(q_len, kv_len, offset)?;
        let c = b.bias_from_mask(allowed, dt)?;
        bias = b.add2(bias, c)?;
    }
    let left = n.attr_i("left_window_size", -1);
    let right = n.attr_i("right_window_size", -1);
    if left >= 0 || right >= 0 {
        let i_idx = b.iota(DType::I64, &[q_len, kv_len], 0)?;
        let j_idx = b.iota(DType::I64, &[q_len, kv_len], 1)?;
        let i_plus = match offset {
            CausalOffset::Tensor(o) => b.add2(i_idx, o)?,
            CausalOffset::Fixed(p) => b.binary_c(BinaryOp::Add, i_idx, p as f64)?,
        };
        let diff = b.sub(i_plus, j_idx)?;
        let mut allowed = b.full(DType::Bool, &b.shape(diff), 1.0)?;
        if left >= 0 {
            let c = b.scalar(DType::I64, left as f64)?;
            let ok = b.binary(BinaryOp::Le, diff, c)?;
            allowed = b.binary(BinaryOp::And, allowed, ok)?;
        }
        if right >= 0 {
            let nd = b.unary(UnaryOp::Neg, diff)?;
            let c = b.scalar(DType::I64, right as f64)?;
            let ok = b.binary(BinaryOp::Le, nd, c)?;
            allowed = b.binary(BinaryOp::And, allowed, ok)?;
        }
        let w = b.bias_from_mask(allowed, dt)?;
        bias = b.add2(bias, w)?;
    }
    if let Some(np) = nonpad {
        let l = b.cast(np, DType::I64)?;
        let l = b.reshape(l, &[batch, 1, 1, 1])?;
        let j = b.iota(DType::I64, &[1, 1, 1, kv_len], 3)?;
        let inside = b.binary(BinaryOp::Lt, j, l)?;
        let p = b.bias_from_mask(inside, dt)?;
        bias = b.add2(bias, p)?;
    }
    let softmax_dtype = match n.attr_i("softmax_precision", 0) {
        0 => None,
        t => Some(dtype_from_onnx(t as i32).map_err(|d| FrontendError::Unsupported(format!("softmax_precision {d}")))?),
    };
    let options = AttentionOptions {
        scale: if n.has_attr("scale") { n.attr_f("scale", 1.0) as f64 } else { 1.0 / (head as f64).sqrt() },
        bias: Some(bias),
        softcap: n.has_attr("softcap").then(|| n.attr_f("softcap", 0.0) as f64),
        softmax_dtype,
        fully_masked_rows: FullyMaskedRows::Zero,
    };
    let a = b.attention(q, k_all, v_all, &options)?;
    let qk_out = match n.attr_i("qk_matmul_output_mode", 0) {
        2 => a.biased_scores,
        3 => a.probs,
        _ => a.scores,
    };
    let qk_out = b.cast(qk_out, dt)?;
    let y = if rank == 3 { b.merge_heads(a.output)? } else { a.output };
    Ok(vec![Value::Tensor(y), Value::Tensor(k_all), Value::Tensor(v_all), Value::Tensor(qk_out)])
}

pub fn rotary_embedding(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let (cos, sin) = (n.input(1)?, n.input(2)?);
    let pos = n.opt_input(3);
    let b = &mut imp.b;
    let orig = b.shape(x);
    // To [B, S, H, D].
    let x4 = if orig.len() == 4 {
        b.transpose(x, &[0, 2, 1, 3])?
    } else {
        let heads = n.attr_i("num_heads", 0) as usize;
        if orig.len() != 3 || heads == 0 || orig[2] % heads != 0 {
            return Err(inval("RotaryEmbedding on 3-D input needs num_heads dividing the hidden size"));
        }
        b.reshape(x, &[orig[0], orig[1], heads, orig[2] / heads])?
    };
    let (cos, sin) = match pos {
        Some(p) => (b.add(Op::Gather { axis: 0 }, &[cos, p])?, b.add(Op::Gather { axis: 0 }, &[sin, p])?),
        None => (cos, sin),
    };
    // [.., S, half] → [.., S, 1, half]: one angle per position, shared by the heads.
    let cs = b.shape(cos);
    if cs.is_empty() {
        return Err(inval("cos_cache must have a last dimension of rotary_embedding_dim / 2"));
    }
    let mut c4 = cs[..cs.len() - 1].to_vec();
    c4.extend([1, cs[cs.len() - 1]]);
    let cos = b.reshape(cos, &c4)?;
    let sin = b.reshape(sin, &c4)?;
    let options = RopeOptions {
        interleaved: n.attr_i("interleaved", 0) != 0,
        rotary_dim: match n.attr_i("rotary_embedding_dim", 0) {
            0 => None,
            d => Some(d as usize),
        },
    };
    let out = b.rotary_embedding(x4, cos, sin, &options)?;
    one(if orig.len() == 3 { b.reshape(out, &orig)? } else { b.transpose(out, &[0, 2, 1, 3])? })
}

pub fn swiglu(imp: &mut Importer, n: &NodeCtx) -> R {
    let (a, c) = (n.input(0)?, n.input(1)?);
    let b = &mut imp.b;
    if b.ty(a) != b.ty(c) {
        return Err(inval("SwiGLU needs inputs of identical shape and type"));
    }
    one(b.swiglu(a, c, n.attr_f("alpha", 1.0) as f64)?)
}

pub fn linear_attention(imp: &mut Importer, n: &NodeCtx) -> R {
    let (q, k, v) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let (past, decay, beta) = (n.opt_input(3), n.opt_input(4), n.opt_input(5));
    let rule = n.attr_s("update_rule", "gated_delta");
    let gating = matches!(rule.as_str(), "gated" | "gated_delta");
    let delta = matches!(rule.as_str(), "delta" | "gated_delta");
    if !matches!(rule.as_str(), "linear" | "gated" | "delta" | "gated_delta") {
        return Err(inval(format!("unknown update_rule '{rule}'")));
    }
    if gating != decay.is_some() || delta != beta.is_some() {
        return Err(inval(format!("update_rule '{rule}' and the decay/beta inputs disagree")));
    }
    let qh = n.attr_i("q_num_heads", 0) as usize;
    let kvh = n.attr_i("kv_num_heads", 0) as usize;
    if qh == 0 || kvh == 0 || qh % kvh != 0 {
        return Err(inval("q_num_heads must be a positive multiple of kv_num_heads"));
    }
    let b = &mut imp.b;
    let out_dt = b.dtype(q);
    let qs = b.shape(q);
    let (bs, t) = (qs[0], qs[1]);
    let dk = qs[2] / qh;
    let dv = b.shape(v)[2] / kvh;
    let f = DType::F32;
    let q4 = b.split_heads(q, qh)?;
    let q4 = b.cast(q4, f)?;
    let k4 = b.split_heads(k, kvh)?;
    let k4 = b.cast(k4, f)?;
    let v4 = b.split_heads(v, kvh)?;
    let v4 = b.cast(v4, f)?;
    let decay4 = match decay {
        Some(d) => {
            let last = *b.shape(d).last().unwrap();
            let d4 = if last == kvh {
                let r = b.reshape(d, &[bs, t, kvh, 1])?;
                b.transpose(r, &[0, 2, 1, 3])?
            } else if last == kvh * dk {
                b.split_heads(d, kvh)?
            } else {
                return Err(inval("decay's last dimension must be kv_num_heads or kv_num_heads * d_k"));
            };
            Some(b.cast(d4, f)?)
        }
        None => None,
    };
    let beta4 = match beta {
        Some(bt) => {
            let last = *b.shape(bt).last().unwrap();
            let r = b.reshape(bt, &[bs, t, last, 1])?;
            let r = b.transpose(r, &[0, 2, 1, 3])?;
            Some(b.cast(r, f)?)
        }
        None => None,
    };
    let state_dt = past.map(|p| b.dtype(p)).unwrap_or(out_dt);
    let mut state = match past {
        Some(p) => b.cast(p, f)?,
        None => b.full(f, &[bs, kvh, dk, dv], 0.0)?,
    };
    let scale = match n.attr_f("scale", 0.0) {
        s if s == 0.0 => 1.0 / (dk as f64).sqrt(),
        s => s as f64,
    };
    let step = |b: &mut Builder, x4: NodeId, i: usize| -> Result<NodeId, FrontendError> {
        let s = b.slice_axis(x4, 2, i as i64, 1, 1)?;
        let sh = b.shape(s);
        Ok(b.reshape(s, &[sh[0], sh[1], sh[3]])?)
    };
    let mut outs = vec![];
    for i in 0..t {
        let qt = step(b, q4, i)?;
        let kt = step(b, k4, i)?;
        let mut vt = step(b, v4, i)?;
        if let Some(d4) = decay4 {
            let g = step(b, d4, i)?;
            let e = b.unary(UnaryOp::Exp, g)?;
            let es = b.shape(e);
            let e = b.reshape(e, &[es[0], es[1], es[2], 1])?;
            state = b.mul(state, e)?;
        }
        if let Some(b4) = beta4 {
            // retrieved[b,h,m] = sum_d state[b,h,d,m] k[b,h,d]
            let ku = b.reshape(kt, &[bs, kvh, 1, dk])?;
            let r = b.matmul(ku, state)?;
            let r = b.reshape(r, &[bs, kvh, dv])?;
            let diff = b.sub(vt, r)?;
            let bt = step(b, b4, i)?;
            vt = b.mul(bt, diff)?;
        }
        let kc = b.reshape(kt, &[bs, kvh, dk, 1])?;
        let vr = b.reshape(vt, &[bs, kvh, 1, dv])?;
        let outer = b.mul(kc, vr)?;
        state = b.add2(state, outer)?;
        let read = b.repeat_heads(state, qh / kvh)?;
        let qu = b.reshape(qt, &[bs, qh, 1, dk])?;
        let o = b.matmul(qu, read)?;
        let o = b.binary_c(BinaryOp::Mul, o, scale)?;
        outs.push(b.reshape(o, &[bs, qh, 1, dv])?);
    }
    let y = b.concat(&outs, 2)?;
    let y = b.transpose(y, &[0, 2, 1, 3])?;
    let y = b.reshape(y, &[bs, t, qh * dv])?;
    let y = b.cast(y, out_dt)?;
    let st = b.cast(state, state_dt)?;
    Ok(vec![Value::Tensor(y), Value::Tensor(st)])
}

pub fn causal_conv_with_state(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, w) = (n.input(0)?, n.input(1)?);
    let (bias, past) = (n.opt_input(2), n.opt_input(3));
    let act = n.attr_s("activation", "none");
    if !matches!(act.as_str(), "none" | "silu" | "swish") {
        return Err(inval(format!("unknown activation '{act}'")));
    }
    let b = &mut imp.b;
    let xs = b.shape(x);
    let ws = b.shape(w);
    if xs.len() != 3 || ws.len() != 3 {
        return Err(inval("CausalConvWithState needs input [B, C, L] and weight [C, 1, K]"));
    }
    let (bs, c, k) = (xs[0], xs[1], ws[2]);
    let pad = match past {
        Some(p) => p,
        None => b.full(b.dtype(x), &[bs, c, k - 1], 0.0)?,
    };
    let padded = b.concat(&[pad, x], 2)?;
    let y = b.add(Op::Conv(odc_ir::Conv { strides: vec![1], dilations: vec![1], groups: c }), &[padded, w])?;
    let y = match bias {
        Some(bb) => {
            let br = b.reshape(bb, &[c, 1])?;
            b.add2(y, br)?
        }
        None => y,
    };
    let y = if act == "none" {
        y
    } else {
        let dt = b.dtype(y);
        let yf = b.cast(y, DType::F32)?;
        let s = b.swish(yf, 1.0)?;
        b.cast(s, dt)?
    };
    let pl = b.shape(padded)[2];
    let state = b.slice_axis(padded, 2, (pl - (k - 1)) as i64, 1, k - 1)?;
    Ok(vec![Value::Tensor(y), Value::Tensor(state)])
}
