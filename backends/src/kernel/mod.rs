//! Kernel IR: one loop nest that writes one buffer, described as index expressions.
//!
//! A kernel is `out[v0, .., vn] = value(v0, .., vn)` (a *map*) or, for scatters,
//! `out[index(v)] = value(v)` over an update domain. `value` is a DAG of scalar [`Expr`] nodes:
//! constants, loop variables, loads through index expressions, arithmetic, and `Reduce` nodes that
//! bind a variable of their own. Fusion is substitution of one expression into another; the code
//! generator decides where each node is computed (the innermost loop among its free variables), so
//! loop-invariant work is hoisted by construction.
//!
//! The [`KernelBuilder`] hash-conses nodes and simplifies integer index arithmetic with interval
//! and linear-form reasoning, so that views (reshape, slice, pad, ...) composed by substitution cost
//! no division or bounds check when they provably need none.
//!
//! This module owns the IR's data types (nodes, bodies, GEMM operands, the kernel itself); the
//! builder, the simplifier, the kernel's derived queries and its printed form live in the
//! submodules below. Nothing here chooses a schedule ([`crate::schedule`] does).

mod builder;
mod display;
mod int_bits;
mod queries;
mod schedule_types;
mod simplify;

pub use builder::KernelBuilder;
pub use int_bits::{int_limits, int_value};
pub use schedule_types::{GemmTile, LoopOrder, Parallel, Schedule, UNROLL_REDUCE};

use odc_ir::{DType, ReduceOp};

/// An expression node handle (index into the kernel's node arena).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E(pub u32);

/// A loop variable (output axis or reduction axis), ranging over `0..extent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// Unary machine-level operations (transcendentals are expanded by [`crate::math`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KUnary {
    Neg,
    Abs,
    Sqrt,
    Floor,
    Ceil,
    Trunc,
    /// Round half to even.
    Nearest,
    /// Bitwise not (logical not on bool).
    Not,
}

/// Binary machine-level operations. Integer `Div`/`Rem` never trap (see the code generator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KBinary {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl KBinary {
    pub fn is_compare(self) -> bool {
        matches!(self, KBinary::Eq | KBinary::Ne | KBinary::Lt | KBinary::Le | KBinary::Gt | KBinary::Ge)
    }
}

/// One expression node. Types are kept beside the node in the arena.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// A constant of a compute type; the payload is the value's bits (ints sign/zero-extended).
    Const(DType, u64),
    /// A loop variable (i64).
    Var(Var),
    /// Element `index` of kernel buffer `buf`, as its raw load type (see [`raw_type`]).
    Load { buf: u32, index: E },
    Unary(KUnary, E),
    Binary(KBinary, E, E),
    /// `cond ? a : b`.
    Select(E, E, E),
    /// Fused multiply-add `a * b + c` (one rounding where the target has FMA).
    Fma(E, E, E),
    /// Value conversion between compute types (float→int truncates and saturates, NaN→0).
    Convert(DType, E),
    /// Bit reinterpretation between same-width compute types.
    Bitcast(DType, E),
    /// `op` over `var` in `0..extent` of `body`.
    Reduce { op: ReduceOp, var: Var, body: E },
    /// `index` if `0 <= index < len`; otherwise 0 and the kernel reports an out-of-range index.
    CheckIndex { index: E, len: i64 },
    /// The contraction result of a [`Gemm`] kernel at the current (i, j); only in its epilogue.
    Acc,
}

/// The type a load of `storage` yields: compute types load as themselves, narrow floats as their
/// raw bits (u16 or u8), packed integers as one unpacked i8/u8 per element.
pub fn raw_type(storage: DType) -> DType {
    use DType::*;
    match storage {
        F16 | BF16 => U16,
        F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F8E8M0 | F4E2M1 => U8,
        I4 | I2 => I8,
        U4 | U2 => U8,
        other => other,
    }
}

/// A buffer a kernel reads or writes.
#[derive(Clone, Debug, PartialEq)]
pub struct BufDecl {
    pub dtype: DType,
    /// Number of elements.
    pub len: usize,
}

/// What the kernel does for each point of its domain.
#[derive(Clone, Debug)]
pub enum Body {
    /// `buf0[index] = value` for each store of each domain point; an index defaults to the
    /// row-major index of the domain point. Given indices must be injective over the domain and
    /// the stores (so the outer loop can still be split across threads): the interior of a
    /// padded buffer, the several outputs of a Winograd tile.
    Map { stores: Vec<Store> },
    /// `buf0[index] = value`; `index` is a checked flat element index. Runs sequentially.
    Scatter { index: E, value: E },
    /// A register-tiled matrix product with an epilogue (see [`Gemm`]).
    Gemm(Gemm),
}

/// One store of a [`Body::Map`].
#[derive(Clone, Copy, Debug)]
pub struct Store {
    pub index: Option<E>,
    pub value: E,
}

impl Body {
    /// `out[domain point] = value`.
    pub fn map(value: E) -> Body {
        Body::Map { stores: vec![Store { index: None, value }] }
    }

    /// `out[index] = value` (`index` injective over the domain).
    pub fn map_at(value: E, index: E) -> Body {
        Body::Map { stores: vec![Store { index: Some(index), value }] }
    }

    /// Every expression the body reads directly.
    pub fn roots(&self) -> Vec<E> {
        match self {
            Body::Map { stores } => stores.iter().flat_map(|s| std::iter::once(s.value).chain(s.index)).collect(),
            Body::Scatter { index, value } => vec![*index, *value],
            Body::Gemm(g) => vec![g.epilogue, g.a.base, g.b.base],
        }
    }
}

/// An f32 operand of a [`Gemm`]: element (r, c) of the current batch is at
/// `base + r * row_stride + c * col_stride`, or, when `panel` is set, in panels of `width` rows
/// (A) or columns (B): (r, c) → `base + (r / w) * panel + c * w + r % w` for A and
/// `base + (c / w) * panel + r * w + c % w` for B.
#[derive(Clone, Debug)]
pub struct GemmOperand {
    pub buf: u32,
    /// Element offset of the current batch (an i64 expression of the batch variables).
    pub base: E,
    pub row_stride: i64,
    pub col_stride: i64,
    /// Panel stride in elements, when packed.
    pub panel: Option<i64>,
    /// Columns past `n` up to a multiple of the tile width exist and hold zeros (packed
    /// panels, padded im2col rows), so the column tail can run as full vectors.
    pub padded_cols: bool,
}

/// `out[b.., i, j] = epilogue(sum_k A[b.., i, k] * B[b.., k, j], b.., i, j)` for f32.
///
/// The domain is `batch.., i (m), j (n)`; `epilogue` is an expression over those variables and
/// [`Expr::Acc`]. The kernel's schedule holds the register tile (`mr x nr` accumulators kept in
/// registers over the `k` loop) and the cache blocks (`kc`, `mc`); packed operands are laid out
/// for that tile. Partial sums of the earlier `k` blocks are kept in the output; the epilogue
/// runs after the last.
#[derive(Clone, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: GemmOperand,
    pub b: GemmOperand,
    pub elem: GemmElem,
    pub epilogue: E,
}

/// What a [`Gemm`] multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmElem {
    /// f32 operands and accumulators.
    F32,
    /// 8-bit integer operands (signed or not) with i32 accumulators, four `k` at a time by a
    /// dot product (`vpdpbusd` with AVX-VNNI, `sdot`/`usdot` on aarch64). A is row-major bytes
    /// with `k` padded to a multiple of 4; B is packed in panels of `nr` columns by groups of
    /// four `k`: byte `(c / nr) * panel + (r / 4) * 4 * nr + (c % nr) * 4 + r % 4`.
    Int8 { a_signed: bool, b_signed: bool },
}

/// A complete kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    /// Buffer 0 is the output; the rest are inputs.
    pub bufs: Vec<BufDecl>,
    /// The output (or update) loop nest, outermost first.
    pub domain: Vec<Var>,
    pub body: Body,
    pub nodes: Vec<Expr>,
    pub types: Vec<DType>,
    pub var_extents: Vec<i64>,
    /// How the loop nest runs (see [`crate::schedule`]).
    pub schedule: Schedule,
}

pub fn operands(e: &Expr) -> Vec<E> {
    match *e {
        Expr::Const(..) | Expr::Var(_) => vec![],
        Expr::Load { index, .. } => vec![index],
        Expr::Unary(_, a) | Expr::Convert(_, a) | Expr::Bitcast(_, a) => vec![a],
        Expr::Binary(_, a, b) => vec![a, b],
        Expr::Select(a, b, c) | Expr::Fma(a, b, c) => vec![a, b, c],
        Expr::Reduce { body, .. } => vec![body],
        Expr::CheckIndex { index, .. } => vec![index],
        Expr::Acc => vec![],
    }
}

