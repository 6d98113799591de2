//! Per-op compute definitions: [`KernelLowering`] builds one kernel, and
//! [`KernelLowering::emit_node`] gives each primitive's value at an output index in terms of its
//! operands' values at derived indices, so views, broadcasting and fusion are all substitution.

use super::gemm::window_source;
use super::{always_inlined, LowerState};
use crate::kernel::{Body, Gemm, Kernel, KernelBuilder, E};
use crate::math;
use crate::schedule::GemmTile;
use odc_ir::{DType, IrError, NodeId, Op, PadMode, ReduceOp, ScatterReduction};
use std::collections::HashMap;

/// Builds one kernel: owns the expression builder and the buffer-slot table.
pub struct KernelLowering<'s, 'g> {
    pub(super) st: &'s mut LowerState<'g>,
    /// The node this kernel materialises (computed, not loaded).
    pub(super) root: Option<NodeId>,
    /// The contraction whose value is the GEMM accumulator.
    pub(super) acc_node: Option<NodeId>,
    /// The contraction's value where it is known as an expression (a Winograd output
    /// transform); otherwise the GEMM accumulator.
    pub(super) acc_value: Option<E>,
    pub kb: KernelBuilder,
    pub(super) slots: HashMap<usize, u32>,
    pub(super) args: Vec<usize>,
    /// A padded view read inline (bounds tests folded away where the domain proves them)
    /// instead of from its materialised copy.
    pub(super) inline_pad: Option<NodeId>,
}

impl<'s, 'g> KernelLowering<'s, 'g> {
    pub(super) fn new(st: &'s mut LowerState<'g>, root: Option<NodeId>, out: usize) -> Self {
        let mut kl =
            KernelLowering { st, root, acc_node: None, acc_value: None, kb: KernelBuilder::new(), slots: HashMap::new(), args: vec![], inline_pad: None };
        kl.slot(out);
        kl
    }

    /// The GEMM epilogue: the root's value (the accumulator itself when the root is the contraction).
    pub(super) fn epilogue(&mut self, root: NodeId, idx: &[E]) -> Result<E, IrError> {
        let v = if Some(root) == self.acc_node { self.acc_expr() } else { self.emit_node(root, idx)? };
        Ok(math::encode(&mut self.kb, v, self.st.g.ty(root).dtype))
    }

    pub(super) fn acc_expr(&mut self) -> E {
        match self.acc_value {
            Some(v) => v,
            None => self.kb.acc(),
        }
    }

    pub(super) fn slot(&mut self, buffer: usize) -> u32 {
        if let Some(&s) = self.slots.get(&buffer) {
            return s;
        }
        let b = &self.st.prog.buffers[buffer];
        let s = self.kb.buf(b.dtype, b.len);
        self.slots.insert(buffer, s);
        self.args.push(buffer);
        s
    }

    /// Loop variables over `shape` and the index they give. Unit axes get no loop (index 0),
    /// so the innermost loop, which is the vectorised one, is a real axis; a shape of only unit
    /// axes gets one unit loop.
    pub(super) fn domain(&mut self, shape: &[usize]) -> (Vec<crate::kernel::Var>, Vec<E>) {
        let mut vars = vec![];
        let mut idx = vec![];
        for &d in shape {
            if d == 1 {
                idx.push(self.kb.i64c(0));
            } else {
                let v = self.kb.var(d as i64);
                vars.push(v);
                idx.push(self.kb.var_expr(v));
            }
        }
        if vars.is_empty() {
            vars.push(self.kb.var(1));
        }
        (vars, idx)
    }

    /// A loop per axis of `shape`, unit axes included: a GEMM's last two domain variables are
    /// its row and column.
    pub(super) fn gemm_domain(&mut self, shape: &[usize]) -> (Vec<crate::kernel::Var>, Vec<E>) {
        let vars: Vec<_> = shape.iter().map(|&d| self.kb.var(d as i64)).collect();
        let idx = vars.iter().map(|&v| self.kb.var_expr(v)).collect();
        (vars, idx)
    }

    pub(super) fn finish(self, name: String, domain: Vec<crate::kernel::Var>, body: Body) -> (Kernel, Vec<usize>) {
        (self.kb.finish(name, domain, body), self.args)
    }

    /// A GEMM kernel with its register tile and cache blocks.
    pub(super) fn finish_gemm(self, name: String, domain: Vec<crate::kernel::Var>, gemm: Gemm, tile: GemmTile) -> (Kernel, Vec<usize>) {
        let (mut k, args) = self.finish(name, domain, Body::Gemm(gemm));
        k.schedule.tile = Some(tile);
        (k, args)
    }

    /// The value of node `n` at multi-index `idx`, in its compute type.
    pub fn access(&mut self, n: NodeId, idx: &[E]) -> Result<E, IrError> {
        if Some(n) == self.acc_node {
            return Ok(self.acc_expr());
        }
        if Some(n) != self.root {
            let g = self.st.g;
            let buf = match self.st.buffer_of.get(&n) {
                Some(&b) => Some(b),
                None if self.st.materialized_views.contains(&n) && self.inline_pad != Some(n) => Some(self.st.dense_buffer(n)?),
                None if matches!(g.node(n).op, Op::Constant(_)) && !always_inlined(g, n) => Some(self.st.weight_buffer(n)),
                None => None,
            };
            if let Some(buf) = buf {
                let shape = &g.ty(n).shape;
                let flat = self.kb.flat_index(idx, shape);
                let slot = self.slot(buf);
                let raw = self.kb.load(slot, flat);
                return Ok(math::decode(&mut self.kb, raw, g.ty(n).dtype));
            }
            if !always_inlined(g, n) && !self.st.plan.is_fused(n) {
                return Err(IrError::new(format!("{}: node is neither materialised nor inlinable", g.node(n).name)));
            }
        }
        self.emit_node(n, idx)
    }

    /// Operand `o` read at output index `idx` under numpy broadcasting.
    pub(super) fn access_bcast(&mut self, o: NodeId, idx: &[E]) -> Result<E, IrError> {
        let shape = self.st.g.ty(o).shape.clone();
        let off = idx.len() - shape.len();
        let mut ii = Vec::with_capacity(shape.len());
        for (i, &d) in shape.iter().enumerate() {
            ii.push(if d == 1 { self.kb.i64c(0) } else { idx[off + i] });
        }
        self.access(o, &ii)
    }

    /// An index value (any integer compute type) → wrapped (negative counts from the end) and checked i64.
    pub(super) fn index_value(&mut self, raw: E, dim: i64) -> E {
        let v = self.kb.convert(DType::I64, raw);
        let zero = self.kb.i64c(0);
        let neg = self.kb.lt(v, zero);
        let wrapped = self.kb.add_c(v, dim);
        let v = self.kb.select(neg, wrapped, v);
        self.kb.check_index(v, dim)
    }

    pub(super) fn scatter_value(&mut self, flat: E, upd: E, reduction: ScatterReduction, dtype: DType) -> E {
        let value = if reduction == ScatterReduction::None {
            upd
        } else {
            let raw = self.kb.load(0, flat);
            let old = math::decode(&mut self.kb, raw, dtype);
            let op = match reduction {
                ScatterReduction::Add => odc_ir::BinaryOp::Add,
                ScatterReduction::Mul => odc_ir::BinaryOp::Mul,
                ScatterReduction::Max => odc_ir::BinaryOp::Max,
                ScatterReduction::Min => odc_ir::BinaryOp::Min,
                ScatterReduction::None => unreachable!(),
            };
            math::binary(&mut self.kb, op, old, upd, dtype)
        };
        math::encode(&mut self.kb, value, dtype)
    }

    /// The compute definition of node `n` at `idx`.
    pub fn emit_node(&mut self, n: NodeId, idx: &[E]) -> Result<E, IrError> {
        let g = self.st.g;
        let node = g.node(n);
        let ops = g.operands(n);
        let ty = &node.ty;
        let kb_err = |m: &str| IrError::new(format!("{}: {m}", node.name));
        Ok(match &node.op {
            Op::Input { .. } => return Err(kb_err("inputs are read from buffers")),
            Op::Constant(t) => {
                let v = t.get_f64(0).map_err(|e| e.context(&node.name))?;
                let ct = t.dtype.compute_type();
                if t.dtype == DType::U64 || t.dtype == DType::I64 {
                    let i = t.get_i64(0).map_err(|e| e.context(&node.name))?;
                    self.kb.iconst(ct, i)
                } else {
                    self.kb.constant(ct, v)
                }
            }
            Op::Iota { axis, dtype, .. } => {
                let v = self.kb.convert(dtype.compute_type(), idx[*axis]);
                math::round_to_storage(&mut self.kb, v, *dtype)
            }
            Op::Unary(op) => {
                let a = self.access_bcast(ops[0], idx)?;
                math::unary(&mut self.kb, *op, a, g.ty(ops[0]).dtype)
            }
            Op::Binary(op) => {
                let a = self.access_bcast(ops[0], idx)?;
                let b = self.access_bcast(ops[1], idx)?;
                math::binary(&mut self.kb, *op, a, b, g.ty(ops[0]).dtype)
            }
            Op::Select => {
                let c = self.access_bcast(ops[0], idx)?;
                let a = self.access_bcast(ops[1], idx)?;
                let b = self.access_bcast(ops[2], idx)?;
                self.kb.select(c, a, b)
            }
            Op::Cast { to, saturate } => {
                let a = self.access(ops[0], idx)?;
                math::cast(&mut self.kb, a, g.ty(ops[0]).dtype, *to, *saturate)
            }
            Op::Bitcast { to } => {
                let a = self.access(ops[0], idx)?;
                math::bitcast(&mut self.kb, a, g.ty(ops[0]).dtype, *to)
            }
            Op::Reduce { op, axes } => {
                let in_shape = g.ty(ops[0]).shape.clone();
                let mut ii = idx.to_vec();
                let mut vars = vec![];
                for &a in axes {
                    let v = self.kb.var(in_shape[a] as i64);
                    vars.push(v);
                    ii[a] = self.kb.var_expr(v);
                }
                let mut body = self.access(ops[0], &ii)?;
                let ct = ty.dtype.compute_type();
                if in_shape.iter().product::<usize>() == 0 || axes.iter().any(|&a| in_shape[a] == 0) {
                    // Reducing nothing gives the identity.
                    return Ok(reduce_identity(&mut self.kb, *op, ct));
                }
                for &v in vars.iter().rev() {
                    body = self.kb.reduce(*op, v, body);
                }
                body
            }
            Op::MatMul => {
                let (a_ty, b_ty) = (g.ty(ops[0]).shape.clone(), g.ty(ops[1]).shape.clone());
                let r = idx.len();
                let kdim = a_ty[a_ty.len() - 1];
                let k = self.kb.var(kdim as i64);
                let ke = self.kb.var_expr(k);
                let ai = batch_index(&mut self.kb, idx, &a_ty, idx[r - 2], ke);
                let bi = batch_index(&mut self.kb, idx, &b_ty, ke, idx[r - 1]);
                let a = self.access(ops[0], &ai)?;
                let b = self.access(ops[1], &bi)?;
                if kdim == 0 {
                    return Ok(self.kb.constant(ty.dtype.compute_type(), 0.0));
                }
                let p = math::binary(&mut self.kb, odc_ir::BinaryOp::Mul, a, b, ty.dtype);
                self.kb.reduce(ReduceOp::Sum, k, p)
            }
            Op::Conv(c) => {
                let (xs, ws) = (g.ty(ops[0]).shape.clone(), g.ty(ops[1]).shape.clone());
                let sp = xs.len() - 2;
                let cg = ws[1];
                let m_per_group = ws[0] / c.groups;
                let ci = self.kb.var(cg as i64);
                let cie = self.kb.var_expr(ci);
                let mut kvars = vec![];
                let mut kexprs = vec![];
                for i in 0..sp {
                    let v = self.kb.var(ws[2 + i] as i64);
                    kvars.push(v);
                    kexprs.push(self.kb.var_expr(v));
                }
                // input channel = group * Cg + ci, group = m / (M / groups)
                let mpg = self.kb.i64c(m_per_group as i64);
                let group = self.kb.div(idx[1], mpg);
                let xi = window_source(&mut self.kb, c, cg, [idx[0], group, cie], &idx[2..2 + sp], &kexprs);
                let mut wi = vec![idx[1], cie];
                wi.extend(kexprs.iter().copied());
                let x = self.access(ops[0], &xi)?;
                let w = self.access(ops[1], &wi)?;
                let mut body = math::binary(&mut self.kb, odc_ir::BinaryOp::Mul, x, w, ty.dtype);
                for &v in kvars.iter().rev() {
                    body = self.kb.reduce(ReduceOp::Sum, v, body);
                }
                self.kb.reduce(ReduceOp::Sum, ci, body)
            }
            Op::Reshape { .. } => {
                let flat = self.kb.flat_index(idx, &ty.shape);
                let in_shape = g.ty(ops[0]).shape.clone();
                let ii = self.kb.unflatten(flat, &in_shape);
                self.access(ops[0], &ii)?
            }
            Op::Transpose { perm } => {
                let mut ii = vec![idx[0]; idx.len()];
                for (k, &p) in perm.iter().enumerate() {
                    ii[p] = idx[k];
                }
                self.access(ops[0], &ii)?
            }
            Op::Slice { starts, steps, .. } => {
                let mut ii = vec![];
                for (i, &x) in idx.iter().enumerate() {
                    let s = self.kb.mul_c(x, steps[i]);
                    ii.push(self.kb.add_c(s, starts[i]));
                }
                self.access(ops[0], &ii)?
            }
            Op::Expand { .. } => self.access_bcast(ops[0], idx)?,
            Op::Pad { low, high: _, interior, mode } => {
                let in_shape = g.ty(ops[0]).shape.clone();
                self.emit_pad(ops[0], idx, &in_shape, low, interior, *mode, ty.dtype)?
            }
            Op::Window { kernel, strides, dilations } => {
                let k = kernel.len();
                let r = g.ty(ops[0]).shape.len();
                let lead = r - k;
                let mut ii = idx[..lead].to_vec();
                for i in 0..k {
                    let o = self.kb.mul_c(idx[lead + i], strides[i] as i64);
                    let kk = self.kb.mul_c(idx[lead + k + i], dilations[i] as i64);
                    ii.push(self.kb.add(o, kk));
                }
                self.access(ops[0], &ii)?
            }
            Op::Concat { axis } => {
                // Later inputs first so the select chain reads the earliest matching input.
                let mut offsets = vec![];
                let mut off = 0i64;
                for &o in &ops {
                    offsets.push(off);
                    off += g.ty(o).shape[*axis] as i64;
                }
                let mut acc: Option<E> = None;
                for (j, &o) in ops.iter().enumerate().rev() {
                    let d = g.ty(o).shape[*axis] as i64;
                    if d == 0 {
                        continue;
                    }
                    let mut ii = idx.to_vec();
                    let local = self.kb.add_c(idx[*axis], -offsets[j]);
                    // Clamp so the (speculatively evaluated) load stays in bounds.
                    let zero = self.kb.i64c(0);
                    let hi = self.kb.i64c(d - 1);
                    let c = self.kb.binary(crate::kernel::KBinary::Max, local, zero);
                    ii[*axis] = self.kb.binary(crate::kernel::KBinary::Min, c, hi);
                    let v = self.access(o, &ii)?;
                    acc = Some(match acc {
                        None => v,
                        Some(later) => {
                            let end = self.kb.i64c(offsets[j] + d);
                            let inside = self.kb.lt(idx[*axis], end);
                            self.kb.select(inside, v, later)
                        }
                    });
                }
                acc.ok_or_else(|| kb_err("concat of empty inputs"))?
            }
            Op::Gather { axis } => {
                let ds = g.ty(ops[0]).shape.clone();
                let iq = g.ty(ops[1]).shape.len();
                let j = &idx[*axis..*axis + iq];
                let raw = self.access(ops[1], j)?;
                let i = self.index_value(raw, ds[*axis] as i64);
                let mut ii = idx[..*axis].to_vec();
                ii.push(i);
                ii.extend_from_slice(&idx[*axis + iq..]);
                self.access(ops[0], &ii)?
            }
            Op::GatherElements { axis } => {
                let ds = g.ty(ops[0]).shape.clone();
                let raw = self.access(ops[1], idx)?;
                let i = self.index_value(raw, ds[*axis] as i64);
                let mut ii = idx.to_vec();
                ii[*axis] = i;
                self.access(ops[0], &ii)?
            }
            Op::GatherNd { batch_dims } => {
                let ds = g.ty(ops[0]).shape.clone();
                let is = g.ty(ops[1]).shape.clone();
                let q = is.len();
                let depth = is[q - 1];
                let b = *batch_dims;
                let prefix = &idx[..q - 1];
                let mut ii = idx[..b].to_vec();
                for j in 0..depth {
                    let mut pi = prefix.to_vec();
                    pi.push(self.kb.i64c(j as i64));
                    let raw = self.access(ops[1], &pi)?;
                    ii.push(self.index_value(raw, ds[b + j] as i64));
                }
                ii.extend_from_slice(&idx[q - 1..]);
                self.access(ops[0], &ii)?
            }
            Op::ScatterElements { .. } | Op::ScatterNd { .. } => {
                return Err(kb_err("scatters are materialised by their own kernels"))
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_pad(
        &mut self,
        src: NodeId,
        idx: &[E],
        in_shape: &[usize],
        low: &[i64],
        interior: &[usize],
        mode: PadMode,
        dtype: DType,
    ) -> Result<E, IrError> {
        use crate::kernel::KBinary;
        let mut ii = vec![];
        let mut valid: Option<E> = None;
        for (a, &d) in in_shape.iter().enumerate() {
            let d = d as i64;
            let t = self.kb.add_c(idx[a], -low[a]);
            let src_i = match mode {
                PadMode::Constant(_) => {
                    let step = interior[a] as i64 + 1;
                    let (s, on_grid) = if step == 1 {
                        (t, None)
                    } else {
                        // t must be a multiple of step; shift by a multiple of step so Rem sees t >= 0.
                        let bias = step * (low[a].max(0) / step + 1);
                        let tb = self.kb.add_c(t, bias);
                        let stepc = self.kb.i64c(step);
                        let r = self.kb.binary(KBinary::Rem, tb, stepc);
                        let zero = self.kb.i64c(0);
                        let on = self.kb.binary(KBinary::Eq, r, zero);
                        let q = self.kb.binary(KBinary::Div, tb, stepc);
                        (self.kb.add_c(q, -(bias / step)), Some(on))
                    };
                    let zero = self.kb.i64c(0);
                    let dd = self.kb.i64c(d);
                    let ge = self.kb.binary(KBinary::Ge, s, zero);
                    let lt = self.kb.binary(KBinary::Lt, s, dd);
                    let mut ok = self.kb.and(ge, lt);
                    if let Some(on) = on_grid {
                        ok = self.kb.and(ok, on);
                    }
                    valid = Some(match valid {
                        None => ok,
                        Some(v) => self.kb.and(v, ok),
                    });
                    let hi = self.kb.i64c((d - 1).max(0));
                    let c = self.kb.binary(KBinary::Max, s, zero);
                    self.kb.binary(KBinary::Min, c, hi)
                }
                PadMode::Edge => {
                    let zero = self.kb.i64c(0);
                    let hi = self.kb.i64c(d - 1);
                    let c = self.kb.binary(KBinary::Max, t, zero);
                    self.kb.binary(KBinary::Min, c, hi)
                }
                PadMode::Reflect => {
                    if d == 1 {
                        self.kb.i64c(0)
                    } else {
                        let period = 2 * (d - 1);
                        // Shift into non-negative range by a multiple of the period.
                        let bias = period * ((low[a].max(0) + period - 1) / period + 1);
                        let tb = self.kb.add_c(t, bias);
                        let pc = self.kb.i64c(period);
                        let m = self.kb.binary(KBinary::Rem, tb, pc);
                        let dd = self.kb.i64c(d);
                        let inside = self.kb.lt(m, dd);
                        let mirrored = self.kb.mul_c(m, -1);
                        let mirrored = self.kb.add_c(mirrored, period);
                        self.kb.select(inside, m, mirrored)
                    }
                }
                PadMode::Wrap => {
                    let bias = d * (low[a].max(0) / d.max(1) + 1);
                    let tb = self.kb.add_c(t, bias);
                    let dc = self.kb.i64c(d);
                    self.kb.binary(KBinary::Rem, tb, dc)
                }
            };
            ii.push(src_i);
        }
        let v = self.access(src, &ii)?;
        Ok(match (mode, valid) {
            (PadMode::Constant(c), Some(ok)) => {
                let ct = dtype.compute_type();
                let fill = scalar_const(&mut self.kb, c, ct);
                let fill = math::round_to_storage(&mut self.kb, fill, dtype);
                self.kb.select(ok, v, fill)
            }
            _ => v,
        })
    }
}

pub(super) fn scalar_const(kb: &mut KernelBuilder, c: odc_ir::Scalar, ct: DType) -> E {
    match c {
        odc_ir::Scalar::I64(i) if !ct.is_float() => kb.iconst(ct, i),
        odc_ir::Scalar::U64(u) if !ct.is_float() => kb.iconst(ct, u as i64),
        other => kb.constant(ct, other.as_f64()),
    }
}

pub(super) fn reduce_identity(kb: &mut KernelBuilder, op: ReduceOp, ct: DType) -> E {
    match op {
        ReduceOp::Sum => kb.constant(ct, 0.0),
        ReduceOp::Prod => kb.constant(ct, 1.0),
        ReduceOp::Max if ct.is_float() => kb.constant(ct, f64::NEG_INFINITY),
        ReduceOp::Min if ct.is_float() => kb.constant(ct, f64::INFINITY),
        ReduceOp::Max => {
            let (lo, _) = crate::kernel::int_limits(ct);
            kb.iconst(ct, if ct == DType::U64 { 0 } else { lo })
        }
        ReduceOp::Min => {
            let (_, hi) = crate::kernel::int_limits(ct);
            kb.iconst(ct, if ct == DType::U64 { -1 } else { hi })
        }
    }
}

/// Operand index for a batched matmul operand of shape `shape` at output index `idx`.
pub(super) fn batch_index(kb: &mut KernelBuilder, idx: &[E], shape: &[usize], row: E, col: E) -> Vec<E> {
    let r = shape.len();
    let out_batch = &idx[..idx.len() - 2];
    let off = out_batch.len() - (r - 2);
    let mut ii = vec![];
    for (i, &d) in shape[..r - 2].iter().enumerate() {
        ii.push(if d == 1 { kb.i64c(0) } else { out_batch[off + i] });
    }
    ii.push(row);
    ii.push(col);
    ii
}
