//! [`Builder`]: constructs graph IR with shape checks, numpy-style conveniences and on-demand
//! constant evaluation. Frontends build through it; NN compounds in [`crate::nn`] extend it.

use odc_ir::{
    BinaryOp, DType, Evaluator, Graph, IrError, NodeId, Op, ReduceOp, Scalar, Tensor, TensorType, UnaryOp,
};
use std::collections::HashMap;

pub type Result<T> = std::result::Result<T, IrError>;

/// Normalise a possibly negative axis.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(IrError::new(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Graph construction with constant evaluation.
pub struct Builder<'e> {
    pub g: Graph,
    eval: &'e dyn Evaluator,
    folded: HashMap<NodeId, Tensor>,
    /// Values of graph inputs that may be frozen into constants when a compile-time value is needed.
    freezable: HashMap<NodeId, Tensor>,
    /// Name given to nodes created next (the source operator's name).
    pub origin: String,
}

impl<'e> Builder<'e> {
    pub fn new(eval: &'e dyn Evaluator) -> Self {
        Builder { g: Graph::new(), eval, folded: HashMap::new(), freezable: HashMap::new(), origin: String::new() }
    }

    pub fn finish(self) -> Graph {
        self.g
    }

    pub fn evaluator(&self) -> &'e dyn Evaluator {
        self.eval
    }

    pub fn ty(&self, n: NodeId) -> &TensorType {
        self.g.ty(n)
    }

    pub fn shape(&self, n: NodeId) -> Vec<usize> {
        self.g.ty(n).shape.clone()
    }

    pub fn dtype(&self, n: NodeId) -> DType {
        self.g.ty(n).dtype
    }

    pub fn rank(&self, n: NodeId) -> usize {
        self.g.ty(n).shape.len()
    }

    pub fn add(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId> {
        let name = self.origin.clone();
        self.g.add(op, operands, &name)
    }

    pub fn constant(&mut self, t: Tensor) -> NodeId {
        let name = self.origin.clone();
        self.g.constant(t, &name)
    }

    /// A rank-0 constant of `dtype`.
    pub fn scalar(&mut self, dtype: DType, v: f64) -> Result<NodeId> {
        Ok(self.constant(Tensor::scalar(dtype, v)?))
    }

    pub fn const_i64(&mut self, shape: Vec<usize>, v: &[i64]) -> NodeId {
        self.constant(Tensor::from_i64(shape, v))
    }

    /// Allow input `n` to be specialised to `value` if a compile-time value ever depends on it.
    pub fn set_freezable(&mut self, n: NodeId, value: Tensor) {
        self.freezable.insert(n, value);
    }

    /// Inputs that were specialised to their values.
    pub fn frozen_inputs(&self) -> impl Iterator<Item = &str> {
        self.g.node_ids().into_iter().filter(|n| self.freezable.contains_key(n)).filter_map(|n| {
            matches!(self.g.node(n).op, Op::Constant(_)).then(|| self.g.node(n).name.as_str())
        })
    }

    /// The value of `n` if it can be computed at compile time (constants and their functions,
    /// freezing inputs whose values were provided).
    pub fn const_value(&mut self, n: NodeId) -> Result<Option<Tensor>> {
        if let Op::Constant(t) = &self.g.node(n).op {
            return Ok(Some(t.clone()));
        }
        if let Some(t) = self.folded.get(&n) {
            return Ok(Some(t.clone()));
        }
        let Some(inputs) = self.input_ancestors(n) else {
            return Ok(None);
        };
        for i in inputs {
            let v = self.freezable[&i].clone();
            self.g.freeze_input(i, v)?;
        }
        if let Op::Constant(t) = &self.g.node(n).op {
            return Ok(Some(t.clone()));
        }
        let t = self.eval.evaluate(&self.g, &[n])?.pop().ok_or_else(|| IrError::new("evaluator returned nothing"))?;
        self.folded.insert(n, t.clone());
        Ok(Some(t))
    }

    /// The value of `n` if it is computable from constants alone (never freezes an input).
    pub fn const_value_no_freeze(&mut self, n: NodeId) -> Result<Option<Tensor>> {
        if self.input_ancestors(n).is_some_and(|i| i.is_empty()) {
            self.const_value(n)
        } else {
            Ok(None)
        }
    }

    /// The graph inputs `n` depends on, if all of them may be frozen (`None` otherwise).
    fn input_ancestors(&self, n: NodeId) -> Option<Vec<NodeId>> {
        let mut stack = vec![n];
        let mut seen = std::collections::HashSet::new();
        let mut inputs = vec![];
        while let Some(m) = stack.pop() {
            if !seen.insert(m) {
                continue;
            }
            if let Op::Input { .. } = self.g.node(m).op {
                if !self.freezable.contains_key(&m) {
                    return None;
                }
                inputs.push(m);
                continue;
            }
            if self.folded.contains_key(&m) {
                continue;
            }
            stack.extend(self.g.operands(m));
        }
        Some(inputs)
    }

    /// True when `n` depends on no (unfreezable) graph input.
    pub fn is_constant(&self, n: NodeId) -> bool {
        self.input_ancestors(n).is_some_and(|i| i.is_empty())
    }

    /// Integer values of a compile-time tensor, or an error naming `what`.
    pub fn const_ints(&mut self, n: NodeId, what: &str) -> Result<Vec<i64>> {
        match self.const_value(n)? {
            Some(t) => t.to_i64_vec(),
            None => Err(IrError::new(format!("{what} must be a compile-time constant (it depends on a model input)"))),
        }
    }

    pub fn const_floats(&mut self, n: NodeId, what: &str) -> Result<Vec<f64>> {
        match self.const_value(n)? {
            Some(t) => t.to_f64_vec(),
            None => Err(IrError::new(format!("{what} must be a compile-time constant (it depends on a model input)"))),
        }
    }

    // ---------------------------------------------------------------- elementwise

    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.add(Op::Unary(op), &[x])
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add(Op::Binary(op), &[a, b])
    }

    pub fn add2(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Add, a, b)
    }
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Div, a, b)
    }
    pub fn max(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Max, a, b)
    }
    pub fn min(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Min, a, b)
    }

    /// `x op c` for a scalar constant `c` of `x`'s dtype.
    pub fn binary_c(&mut self, op: BinaryOp, x: NodeId, c: f64) -> Result<NodeId> {
        let s = self.scalar(self.dtype(x), c)?;
        self.binary(op, x, s)
    }

    pub fn select(&mut self, c: NodeId, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add(Op::Select, &[c, a, b])
    }

    pub fn cast(&mut self, x: NodeId, to: DType) -> Result<NodeId> {
        if self.dtype(x) == to {
            return Ok(x);
        }
        self.add(Op::Cast { to, saturate: true }, &[x])
    }

    pub fn not(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Not, x)
    }

    // ---------------------------------------------------------------- shape

    pub fn reshape(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.add(Op::Reshape { shape: shape.to_vec() }, &[x])
    }

    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.add(Op::Transpose { perm: perm.to_vec() }, &[x])
    }

    /// numpy broadcast of `x` to `shape` (which must be the broadcast result).
    pub fn expand(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.add(Op::Expand { shape: shape.to_vec() }, &[x])
    }

    /// Insert size-1 axes so that they sit at `axes` of the result.
    pub fn unsqueeze(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId> {
        let mut shape = self.shape(x);
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        for a in sorted {
            if a > shape.len() {
                return Err(IrError::new(format!("unsqueeze axis {a} out of range")));
            }
            shape.insert(a, 1);
        }
        self.reshape(x, &shape)
    }

    /// Remove the listed size-1 axes.
    pub fn squeeze(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId> {
        let shape = self.shape(x);
        let mut out = vec![];
        for (i, &d) in shape.iter().enumerate() {
            if axes.contains(&i) {
                if d != 1 {
                    return Err(IrError::new(format!("cannot squeeze axis {i} of extent {d}")));
                }
            } else {
                out.push(d);
            }
        }
        self.reshape(x, &out)
    }

    /// Slice along one axis: `[start, start + size*step)` by `step`.
    pub fn slice_axis(&mut self, x: NodeId, axis: usize, start: i64, step: i64, size: usize) -> Result<NodeId> {
        let shape = self.shape(x);
        if start == 0 && step == 1 && size == shape[axis] {
            return Ok(x);
        }
        let mut starts = vec![0; shape.len()];
        let mut steps = vec![1; shape.len()];
        let mut sizes = shape.clone();
        starts[axis] = start;
        steps[axis] = step;
        sizes[axis] = size;
        self.add(Op::Slice { starts, steps, sizes }, &[x])
    }

    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId> {
        if xs.len() == 1 {
            return Ok(xs[0]);
        }
        self.add(Op::Concat { axis }, xs)
    }

    /// An iota of `dtype` with `shape`, counting along `axis`.
    pub fn iota(&mut self, dtype: DType, shape: &[usize], axis: usize) -> Result<NodeId> {
        self.add(Op::Iota { axis, dtype, shape: shape.to_vec() }, &[])
    }

    /// A tensor of `shape` filled with `v` (a broadcast scalar, never stored).
    pub fn full(&mut self, dtype: DType, shape: &[usize], v: f64) -> Result<NodeId> {
        let s = self.scalar(dtype, v)?;
        self.expand(s, shape)
    }

    /// Pad with a constant.
    pub fn pad_const(&mut self, x: NodeId, low: &[i64], high: &[i64], value: Scalar) -> Result<NodeId> {
        if low.iter().chain(high).all(|&p| p == 0) {
            return Ok(x);
        }
        let r = self.rank(x);
        self.add(Op::Pad { low: low.to_vec(), high: high.to_vec(), interior: vec![0; r], mode: odc_ir::PadMode::Constant(value) }, &[x])
    }

    // ---------------------------------------------------------------- reductions

    /// Reduce `axes`; drops them unless `keepdims`.
    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axes: &[usize], keepdims: bool) -> Result<NodeId> {
        let mut axes = axes.to_vec();
        axes.sort_unstable();
        axes.dedup();
        let r = if axes.is_empty() { x } else { self.add(Op::Reduce { op, axes: axes.clone() }, &[x])? };
        if keepdims {
            Ok(r)
        } else {
            let shape: Vec<usize> =
                self.shape(r).iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
            self.reshape(r, &shape)
        }
    }

    /// Mean over `axes` (keepdims).
    pub fn mean(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId> {
        let shape = self.shape(x);
        let n: usize = axes.iter().map(|&a| shape[a]).product();
        let s = self.reduce(ReduceOp::Sum, x, axes, true)?;
        self.binary_c(BinaryOp::Div, s, n as f64)
    }

    // ---------------------------------------------------------------- contraction

    /// numpy `matmul` (1-D operands are promoted and the added axis removed).
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let (ra, rb) = (self.rank(a), self.rank(b));
        let a2 = if ra == 1 { self.unsqueeze(a, &[0])? } else { a };
        let b2 = if rb == 1 { self.unsqueeze(b, &[1])? } else { b };
        let m = self.add(Op::MatMul, &[a2, b2])?;
        let mut shape = self.shape(m);
        let r = shape.len();
        if rb == 1 {
            shape.remove(r - 1);
        }
        if ra == 1 {
            shape.remove(shape.len() - if rb == 1 { 1 } else { 2 });
        }
        self.reshape(m, &shape)
    }
}
