//! Elementwise operators: arithmetic, logic, comparisons, casts and activations.

use super::{one, R};
use crate::onnx::{tensor::dtype_from_onnx, Importer, NodeCtx, Value};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, UnaryOp};

pub fn unary(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let op = match n.op() {
        "Abs" => UnaryOp::Abs,
        "Neg" => UnaryOp::Neg,
        "Sqrt" => UnaryOp::Sqrt,
        "Exp" => UnaryOp::Exp,
        "Log" => UnaryOp::Log,
        "Sin" => UnaryOp::Sin,
        "Cos" => UnaryOp::Cos,
        "Tan" => UnaryOp::Tan,
        "Asin" => UnaryOp::Asin,
        "Acos" => UnaryOp::Acos,
        "Atan" => UnaryOp::Atan,
        "Sinh" => UnaryOp::Sinh,
        "Cosh" => UnaryOp::Cosh,
        "Tanh" => UnaryOp::Tanh,
        "Asinh" => UnaryOp::Asinh,
        "Acosh" => UnaryOp::Acosh,
        "Atanh" => UnaryOp::Atanh,
        "Erf" => UnaryOp::Erf,
        "Floor" => UnaryOp::Floor,
        "Ceil" => UnaryOp::Ceil,
        "Round" => UnaryOp::Round,
        "Sign" => UnaryOp::Sign,
        "Reciprocal" => UnaryOp::Recip,
        "Not" => UnaryOp::Not,
        "BitwiseNot" => UnaryOp::BitNot,
        "IsNaN" => UnaryOp::IsNan,
        other => return n.unsupported(format!("unary {other}")),
    };
    if op.float_only() && !b.dtype(x).is_float() {
        return n.unsupported(format!("{} on {} inputs", n.op(), b.dtype(x)));
    }
    one(b.unary(op, x)?)
}

pub fn is_inf(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let (pos, neg) = (n.attr_i("detect_positive", 1) != 0, n.attr_i("detect_negative", 1) != 0);
    let b = &mut imp.b;
    let p = b.unary(UnaryOp::IsPosInf, x)?;
    let m = b.unary(UnaryOp::IsNegInf, x)?;
    let r = match (pos, neg) {
        (true, true) => b.binary(BinaryOp::Or, p, m)?,
        (true, false) => p,
        (false, true) => m,
        (false, false) => b.full(DType::Bool, &b.shape(x), 0.0)?,
    };
    one(r)
}

pub fn identity(_imp: &mut Importer, n: &NodeCtx) -> R {
    match n.value(0) {
        Some(v) => Ok(vec![v.clone()]),
        None => Err(FrontendError::Invalid("Identity needs an input".into())),
    }
}

fn binary_op(name: &str) -> Option<BinaryOp> {
    Some(match name {
        "Add" | "Sum" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        "Div" => BinaryOp::Div,
        "And" => BinaryOp::And,
        "Or" => BinaryOp::Or,
        "Xor" => BinaryOp::Xor,
        "BitwiseAnd" => BinaryOp::BitAnd,
        "BitwiseOr" => BinaryOp::BitOr,
        "BitwiseXor" => BinaryOp::BitXor,
        "Equal" => BinaryOp::Eq,
        "Less" => BinaryOp::Lt,
        "Greater" => BinaryOp::Gt,
        "LessOrEqual" => BinaryOp::Le,
        "GreaterOrEqual" => BinaryOp::Ge,
        "Max" => BinaryOp::Max,
        "Min" => BinaryOp::Min,
        _ => return None,
    })
}

/// Legacy (opset < 7) broadcasting: `broadcast=1` with `axis` aligns B's axes at `axis` of A.
fn legacy_broadcast(imp: &mut Importer, n: &NodeCtx, a: NodeId, b: NodeId) -> Result<NodeId, FrontendError> {
    if n.opset >= 7 || n.attr_i("broadcast", 0) == 0 {
        return Ok(b);
    }
    let ra = imp.b.rank(a);
    let rb = imp.b.rank(b);
    let axis = n.attr_i("axis", (ra - rb) as i64);
    let axis = if axis < 0 { axis + ra as i64 } else { axis } as usize;
    let trailing = ra - axis - rb;
    let mut shape = imp.b.shape(b);
    shape.extend(std::iter::repeat_n(1, trailing));
    Ok(imp.b.reshape(b, &shape)?)
}

pub fn binary(imp: &mut Importer, n: &NodeCtx) -> R {
    let a = n.input(0)?;
    let b = n.input(1)?;
    let b = legacy_broadcast(imp, n, a, b)?;
    let op = binary_op(n.op()).expect("registered binary op");
    if imp.b.dtype(a) != imp.b.dtype(b) {
        return Err(FrontendError::Invalid(format!(
            "operand types differ: {} and {}",
            imp.b.dtype(a),
            imp.b.dtype(b)
        )));
    }
    one(imp.b.binary(op, a, b)?)
}

pub fn variadic(imp: &mut Importer, n: &NodeCtx) -> R {
    let xs: Vec<NodeId> = (0..n.num_inputs()).filter_map(|i| n.opt_input(i)).collect();
    if xs.is_empty() {
        return Err(FrontendError::Invalid(format!("{} needs at least one input", n.op())));
    }
    let op = if n.op() == "Mean" { BinaryOp::Add } else { binary_op(n.op()).expect("registered") };
    let b = &mut imp.b;
    let mut acc = xs[0];
    for &x in &xs[1..] {
        acc = b.binary(op, acc, x)?;
    }
    if n.op() == "Mean" {
        acc = b.binary_c(BinaryOp::Div, acc, xs.len() as f64)?;
    }
    if xs.len() == 1 {
        // Identity, but keep a node so the output is distinct.
        return one(acc);
    }
    one(acc)
}

pub fn pow(imp: &mut Importer, n: &NodeCtx) -> R {
    let a = n.input(0)?;
    let e = n.input(1)?;
    let b = &mut imp.b;
    let (ta, te) = (b.dtype(a), b.dtype(e));
    // A constant scalar exponent becomes multiplications or a square root.
    if ta.is_float() {
        if let Some(t) = b.const_value(e)? {
            if t.num_elements() == 1 && b.rank(e) <= b.rank(a) {
                let v = t.get_f64(0)?;
                let r = match v {
                    1.0 => Some(a),
                    2.0 => Some(b.mul(a, a)?),
                    3.0 => {
                        let sq = b.mul(a, a)?;
                        Some(b.mul(sq, a)?)
                    }
                    0.5 => Some(b.unary(UnaryOp::Sqrt, a)?),
                    -1.0 => Some(b.unary(UnaryOp::Recip, a)?),
                    _ => None,
                };
                if let Some(r) = r {
                    let shape = odc_ir::broadcast_shapes(&[&b.shape(a), &b.shape(e)])?;
                    return one(b.expand(r, &shape)?);
                }
            }
        }
    }
    if ta.is_float() || !te.is_float() {
        let e2 = b.cast(e, ta)?;
        return one(b.binary(BinaryOp::Pow, a, e2)?);
    }
    // integer base, float exponent: numpy computes in float64, then casts back.
    let ad = b.cast(a, DType::F64)?;
    let ed = b.cast(e, DType::F64)?;
    let p = b.binary(BinaryOp::Pow, ad, ed)?;
    one(b.cast(p, ta)?)
}

pub fn modulo(imp: &mut Importer, n: &NodeCtx) -> R {
    let a = n.input(0)?;
    let d = n.input(1)?;
    let fmod = n.attr_i("fmod", 0) != 0;
    let b = &mut imp.b;
    let dt = b.dtype(a);
    let r = b.binary(BinaryOp::Rem, a, d)?;
    if fmod || dt.is_unsigned_int() {
        return one(r);
    }
    // Python-style: the result takes the divisor's sign.
    let zero = b.scalar(dt, 0.0)?;
    let r_nz = b.binary(BinaryOp::Eq, r, zero)?;
    let r_nz = b.not(r_nz)?;
    let rneg = b.binary(BinaryOp::Lt, r, zero)?;
    let dneg = b.binary(BinaryOp::Lt, d, zero)?;
    let differ = b.binary(BinaryOp::Xor, rneg, dneg)?;
    let fix = b.binary(BinaryOp::And, r_nz, differ)?;
    let rd = b.add2(r, d)?;
    one(b.select(fix, rd, r)?)
}

pub fn bit_shift(imp: &mut Importer, n: &NodeCtx) -> R {
    let a = n.input(0)?;
    let s = n.input(1)?;
    let op = match n.attr_s("direction", "").as_str() {
        "LEFT" => BinaryOp::Shl,
        "RIGHT" => BinaryOp::Shr,
        d => return Err(FrontendError::Invalid(format!("BitShift direction must be LEFT or RIGHT, got '{d}'"))),
    };
    one(imp.b.binary(op, a, s)?)
}

pub fn where_(imp: &mut Importer, n: &NodeCtx) -> R {
    let c = n.input(0)?;
    let x = n.input(1)?;
    let y = n.input(2)?;
    one(imp.b.select(c, x, y)?)
}

pub fn clip(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let dt = b.dtype(x);
    let (lo, hi) = if n.opset < 11 {
        let lo = if n.has_attr("min") { Some(b.scalar(dt, n.attr_f("min", 0.0) as f64)?) } else { None };
        let hi = if n.has_attr("max") { Some(b.scalar(dt, n.attr_f("max", 0.0) as f64)?) } else { None };
        (lo, hi)
    } else {
        (n.opt_input(1), n.opt_input(2))
    };
    let mut y = x;
    if let Some(l) = lo {
        y = b.max(y, l)?;
    }
    if let Some(h) = hi {
        y = b.min(y, h)?;
    }
    one(y)
}

fn target_dtype(n: &NodeCtx, attr: &str) -> Result<DType, FrontendError> {
    let code = n.attr_i(attr, 0) as i32;
    dtype_from_onnx(code).map_err(|d| FrontendError::Unsupported(format!("{} to {d} is not supported", n.op())))
}

fn round_mode_ok(n: &NodeCtx) -> Result<(), FrontendError> {
    let m = n.attr_s("round_mode", "up");
    if m != "up" {
        return n.unsupported(format!("{} with round_mode={m}", n.op()));
    }
    Ok(())
}

pub fn cast(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let to = target_dtype(n, "to")?;
    round_mode_ok(n)?;
    let saturate = n.attr_i("saturate", 1) != 0;
    if imp.b.dtype(x) == to {
        return one(x);
    }
    one(imp.b.add(Op::Cast { to, saturate }, &[x])?)
}

pub fn cast_like(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let like = n.input(1)?;
    round_mode_ok(n)?;
    let to = imp.b.dtype(like);
    let saturate = n.attr_i("saturate", 1) != 0;
    if imp.b.dtype(x) == to {
        return one(x);
    }
    one(imp.b.add(Op::Cast { to, saturate }, &[x])?)
}

pub fn bitcast(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let to = target_dtype(n, "to")?;
    let from = imp.b.dtype(x);
    if from.bits() != to.bits() {
        return n.unsupported(format!("BitCast between widths ({from} to {to})"));
    }
    if from == to {
        return one(x);
    }
    one(imp.b.add(Op::Bitcast { to }, &[x])?)
}

pub fn activation(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let y = match n.op() {
        "Relu" => b.relu(x)?,
        "LeakyRelu" => b.leaky_relu(x, n.attr_f("alpha", 0.01) as f64)?,
        "PRelu" => {
            let slope = legacy_broadcast_prelu(b, x, n.input(1)?)?;
            b.prelu(x, slope)?
        }
        "Elu" => b.elu(x, n.attr_f("alpha", 1.0) as f64, 1.0, false)?,
        "Celu" => b.elu(x, n.attr_f("alpha", 1.0) as f64, 1.0, true)?,
        "Selu" => b.elu(x, n.attr_f("alpha", 1.673_263_192_176_818_8) as f64, n.attr_f("gamma", 1.050_701_022_148_132_3) as f64, false)?,
        "Sigmoid" => b.sigmoid(x)?,
        "HardSigmoid" => b.hard_sigmoid(x, n.attr_f("alpha", 0.2) as f64, n.attr_f("beta", 0.5) as f64)?,
        "HardSwish" => b.hard_swish(x)?,
        "Softplus" => b.softplus(x)?,
        "Softsign" => b.softsign(x)?,
        "ThresholdedRelu" => b.thresholded_relu(x, n.attr_f("alpha", 1.0) as f64)?,
        "Shrink" => b.shrink(x, n.attr_f("lambd", 0.5) as f64, n.attr_f("bias", 0.0) as f64)?,
        "Gelu" => {
            let tanh = match n.attr_s("approximate", "none").as_str() {
                "none" => false,
                "tanh" => true,
                other => return n.unsupported(format!("Gelu approximate={other}")),
            };
            b.gelu(x, tanh)?
        }
        "Mish" => b.mish(x)?,
        "Swish" => b.swish(x, n.attr_f("alpha", 1.0) as f64)?,
        other => return n.unsupported(format!("activation {other}")),
    };
    one(y)
}

/// PRelu before opset 7 allowed a slope of shape [C] against [N, C, ...].
fn legacy_broadcast_prelu(b: &mut odc_passes::Builder, x: NodeId, slope: NodeId) -> Result<NodeId, FrontendError> {
    let (xs, ss) = (b.shape(x), b.shape(slope));
    if odc_ir::broadcast_shapes(&[&xs, &ss]).is_ok() {
        return Ok(slope);
    }
    if ss.len() == 1 && xs.len() >= 2 && xs[1] == ss[0] {
        let mut shape = vec![ss[0]];
        shape.extend(std::iter::repeat_n(1, xs.len() - 2));
        return Ok(b.reshape(slope, &shape)?);
    }
    Err(FrontendError::Invalid(format!("PRelu slope {ss:?} does not broadcast to {xs:?}")))
}

pub fn dropout(imp: &mut Importer, n: &NodeCtx) -> R {
    let x = n.input(0)?;
    let b = &mut imp.b;
    let training = match n.opt_input(2) {
        Some(t) => match b.const_value(t)? {
            Some(v) => v.get_f64(0)? != 0.0,
            None => return n.unsupported("Dropout with a run-time training_mode"),
        },
        None => false,
    } || (n.opset < 7 && n.attr_i("is_test", 0) == 0 && n.opset < 6);
    if training {
        let ratio = match n.opt_input(1) {
            Some(r) => b.const_floats(r, "Dropout ratio")?[0],
            None => n.attr_f("ratio", 0.5) as f64,
        };
        if ratio != 0.0 {
            return n.unsupported("Dropout in training mode (random masks)");
        }
    }
    let mask = b.full(DType::Bool, &b.shape(x), 1.0)?;
    Ok(vec![Value::Tensor(x), Value::Tensor(mask)])
}
