//! The primitive op set.
//!
//! Every frontend lowers to these ~25 ops; every backend implements them. Anything else (ONNX's
//! ~200 operators, a checkpoint's layers) is a composition of them. Groups:
//!
//! * **sources** — `Input`, `Constant`, `Iota`: values that come from outside or cost nothing.
//! * **elementwise** — `Unary`, `Binary`, `Select`, `Cast`, `Bitcast`: numpy broadcasting, no
//!   cross-element dependence, so fusion is substitution.
//! * **reduce** — `Reduce`: one associative op over some axes, rank preserved (reduced axes become 1).
//! * **contraction** — `MatMul`, `Conv`: the FLOP-heavy family that gets microkernels.
//! * **views** — `Reshape`, `Transpose`, `Slice`, `Expand`, `Pad`, `Window`, `Concat`: pure index
//!   maps; a consumer reads through them and no copy is made.
//! * **indexing** — `Gather*`, `Scatter*`: data-dependent addresses.

use crate::dtype::{DType, Scalar};
use crate::tensor::Tensor;
use std::fmt;

/// Elementwise functions of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    // arithmetic
    Neg,
    Abs,
    Sign,
    Sqrt,
    Recip,
    // rounding
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    // transcendental (expanded into polynomials by the backend's math library)
    Exp,
    Log,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    // logic and bits
    Not,
    BitNot,
    // classification (bool results)
    IsNan,
    IsPosInf,
    IsNegInf,
}

impl UnaryOp {
    /// True when the result is bool whatever the argument type.
    pub fn returns_bool(self) -> bool {
        matches!(self, UnaryOp::IsNan | UnaryOp::IsPosInf | UnaryOp::IsNegInf)
    }
    /// True when the op is only defined for floating-point arguments.
    pub fn float_only(self) -> bool {
        use UnaryOp::*;
        matches!(
            self,
            Sqrt | Floor
                | Ceil
                | Round
                | Exp
                | Log
                | Sin
                | Cos
                | Tan
                | Asin
                | Acos
                | Atan
                | Sinh
                | Cosh
                | Tanh
                | Asinh
                | Acosh
                | Atanh
                | Erf
                | IsNan
                | IsPosInf
                | IsNegInf
        )
    }
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Abs => "abs",
            Sign => "sign",
            Sqrt => "sqrt",
            Recip => "recip",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            Exp => "exp",
            Log => "log",
            Sin => "sin",
            Cos => "cos",
            Tan => "tan",
            Asin => "asin",
            Acos => "acos",
            Atan => "atan",
            Sinh => "sinh",
            Cosh => "cosh",
            Tanh => "tanh",
            Asinh => "asinh",
            Acosh => "acosh",
            Atanh => "atanh",
            Erf => "erf",
            Not => "not",
            BitNot => "bitnot",
            IsNan => "isnan",
            IsPosInf => "isposinf",
            IsNegInf => "isneginf",
        }
    }
}

/// Elementwise functions of two arguments (numpy broadcasting, both operands of one dtype except
/// for shifts, whose amount may be any integer type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Integer division truncates toward zero; division by zero yields 0 (never traps).
    Div,
    /// Remainder with the sign of the dividend (C `fmod`/`%`); remainder by zero yields 0 for ints.
    Rem,
    Pow,
    Max,
    Min,
    // logic on bool
    And,
    Or,
    Xor,
    // bits on integers
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    /// Logical shift for unsigned, arithmetic for signed types.
    Shr,
    // comparisons (bool results)
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinaryOp {
    pub fn returns_bool(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
    }
    pub fn is_commutative(self) -> bool {
        use BinaryOp::*;
        matches!(self, Add | Mul | Max | Min | And | Or | Xor | BitAnd | BitOr | BitXor | Eq)
    }
    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Rem => "rem",
            Pow => "pow",
            Max => "max",
            Min => "min",
            And => "and",
            Or => "or",
            Xor => "xor",
            BitAnd => "bitand",
            BitOr => "bitor",
            BitXor => "bitxor",
            Shl => "shl",
            Shr => "shr",
            Eq => "eq",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
        }
    }
}

/// Associative reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// How scattered updates combine with the existing value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterReduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

/// What `Pad` puts outside the source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    Constant(Scalar),
    /// Repeat the border element.
    Edge,
    /// Mirror without repeating the border element.
    Reflect,
    /// Wrap around (periodic).
    Wrap,
}

/// A direct convolution over the trailing spatial axes. Padding is a separate `Pad` view.
///
/// `x: [N, C, S..]`, `w: [M, C/groups, K..]` → `[N, M, O..]` with
/// `O = (S - dilation*(K-1) - 1) / stride + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conv {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub groups: usize,
}

/// A primitive operation. Node types (dtype and shape) are stored on the node; ops only carry what
/// the type does not already say.
#[derive(Clone, Debug)]
pub enum Op {
    /// The `index`-th graph input.
    Input { index: usize },
    Constant(Tensor),
    /// The index along `axis`, converted to `dtype` (a generator, never stored).
    Iota { axis: usize, dtype: DType, shape: Vec<usize> },

    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `cond ? a : b` with broadcasting; `cond` is bool.
    Select,
    /// Value conversion. `saturate` clamps to the target range for the float8 formats.
    Cast { to: DType, saturate: bool },
    /// Reinterpret the bits of each element as another type of the same width.
    Bitcast { to: DType },

    /// Reduce the listed axes to size 1.
    Reduce { op: ReduceOp, axes: Vec<usize> },

    /// `[.., M, K] x [.., K, N] -> [.., M, N]` with broadcast batch axes; both ranks ≥ 2.
    MatMul,
    Conv(Conv),

    /// Same elements, new shape.
    Reshape { shape: Vec<usize> },
    /// `out[i] = in[i permuted]`: output axis `k` is input axis `perm[k]`.
    Transpose { perm: Vec<usize> },
    /// `out[i] = in[start + i * step]` per axis (negative steps walk backwards), `sizes` elements.
    Slice { starts: Vec<i64>, steps: Vec<i64>, sizes: Vec<usize> },
    /// numpy broadcast to `shape`.
    Expand { shape: Vec<usize> },
    /// Pad each axis with `low` elements before, `high` after and `interior` between neighbours.
    /// Negative `low`/`high` crop.
    Pad { low: Vec<i64>, high: Vec<i64>, interior: Vec<usize>, mode: PadMode },
    /// Sliding windows over the trailing `kernel.len()` axes: `[.., S..] -> [.., O.., K..]`.
    Window { kernel: Vec<usize>, strides: Vec<usize>, dilations: Vec<usize> },
    /// Join inputs along `axis`.
    Concat { axis: usize },

    /// ONNX `Gather`: `out[a.., j.., b..] = data[a.., idx[j..], b..]` (negative indices wrap).
    Gather { axis: usize },
    /// ONNX `GatherElements`: `out[i] = data[i with i[axis] = idx[i]]`.
    GatherElements { axis: usize },
    /// ONNX `GatherND`.
    GatherNd { batch_dims: usize },
    /// ONNX `ScatterElements`: `(data, indices, updates) -> data'`.
    ScatterElements { axis: usize, reduction: ScatterReduction },
    /// ONNX `ScatterND`: `(data, indices, updates) -> data'`.
    ScatterNd { reduction: ScatterReduction },
}

/// The op families, for passes that treat a whole family alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpFamily {
    Source,
    Elementwise,
    Reduce,
    Contraction,
    View,
    Indexing,
}

impl Op {
    pub fn family(&self) -> OpFamily {
        use Op::*;
        match self {
            Input { .. } | Constant(_) | Iota { .. } => OpFamily::Source,
            Unary(_) | Binary(_) | Select | Cast { .. } | Bitcast { .. } => OpFamily::Elementwise,
            Reduce { .. } => OpFamily::Reduce,
            MatMul | Conv(_) => OpFamily::Contraction,
            Reshape { .. } | Transpose { .. } | Slice { .. } | Expand { .. } | Pad { .. } | Window { .. }
            | Concat { .. } => OpFamily::View,
            Gather { .. } | GatherElements { .. } | GatherNd { .. } | ScatterElements { .. } | ScatterNd { .. } => {
                OpFamily::Indexing
            }
        }
    }

    pub fn is_view(&self) -> bool {
        self.family() == OpFamily::View
    }

    /// Short name for the printer and reports.
    pub fn name(&self) -> String {
        use Op::*;
        match self {
            Input { .. } => "input".into(),
            Constant(_) => "const".into(),
            Iota { .. } => "iota".into(),
            Unary(u) => u.name().into(),
            Binary(b) => b.name().into(),
            Select => "select".into(),
            Cast { .. } => "cast".into(),
            Bitcast { .. } => "bitcast".into(),
            Reduce { op, .. } => format!("reduce_{}", op.name()),
            MatMul => "matmul".into(),
            Conv(_) => "conv".into(),
            Reshape { .. } => "reshape".into(),
            Transpose { .. } => "transpose".into(),
            Slice { .. } => "slice".into(),
            Expand { .. } => "expand".into(),
            Pad { .. } => "pad".into(),
            Window { .. } => "window".into(),
            Concat { .. } => "concat".into(),
            Gather { .. } => "gather".into(),
            GatherElements { .. } => "gather_elements".into(),
            GatherNd { .. } => "gather_nd".into(),
            ScatterElements { .. } => "scatter_elements".into(),
            ScatterNd { .. } => "scatter_nd".into(),
        }
    }

    /// Attributes in printer syntax (empty when there are none).
    pub fn attrs(&self) -> String {
        use Op::*;
        match self {
            Input { index } => format!("index={index}"),
            Constant(t) => {
                if t.num_elements() <= 8 && !t.dtype.is_packed() {
                    match t.to_f64_vec() {
                        Ok(v) => format!("{v:?}"),
                        Err(_) => String::new(),
                    }
                } else {
                    format!("<{} bytes>", t.data.len())
                }
            }
            Iota { axis, .. } => format!("axis={axis}"),
            Cast { to, saturate } => format!("to={to}{}", if *saturate { " saturate" } else { "" }),
            Bitcast { to } => format!("to={to}"),
            Reduce { axes, .. } => format!("axes={axes:?}"),
            Conv(c) => format!("strides={:?} dilations={:?} groups={}", c.strides, c.dilations, c.groups),
            Reshape { shape } => format!("shape={shape:?}"),
            Transpose { perm } => format!("perm={perm:?}"),
            Slice { starts, steps, .. } => format!("starts={starts:?} steps={steps:?}"),
            Expand { shape } => format!("shape={shape:?}"),
            Pad { low, high, interior, mode } => {
                format!("low={low:?} high={high:?} interior={interior:?} mode={mode:?}")
            }
            Window { kernel, strides, dilations } => {
                format!("kernel={kernel:?} strides={strides:?} dilations={dilations:?}")
            }
            Concat { axis } | Gather { axis } | GatherElements { axis } => format!("axis={axis}"),
            GatherNd { batch_dims } => format!("batch_dims={batch_dims}"),
            ScatterElements { axis, reduction } => format!("axis={axis} reduction={reduction:?}"),
            ScatterNd { reduction } => format!("reduction={reduction:?}"),
            Unary(_) | Binary(_) | Select | MatMul => String::new(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.attrs();
        if a.is_empty() {
            write!(f, "{}", self.name())
        } else {
            write!(f, "{}[{a}]", self.name())
        }
    }
}
