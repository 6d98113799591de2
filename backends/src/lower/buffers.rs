//! Buffers and weights of the program under construction: new buffers, weight buffers,
//! dense copies of views, concatenations written in place, and the copy/fill kernels that
//! materialise a value into a buffer.

use super::emit::{scalar_const, KernelLowering};
use super::program::{Buffer, BufferKind, Step};
use super::{kernel_name, Alias, LowerState};
use crate::kernel::{Body, Kernel, E};
use crate::math;
use odc_ir::{DType, IrError, NodeId, Op, PadMode, Tensor};
use std::collections::HashSet;

impl<'g> LowerState<'g> {
    pub(super) fn new_buffer(&mut self, kind: BufferKind, dtype: DType, len: usize, name: &str) -> usize {
        self.prog.buffers.push(Buffer { kind, dtype, len, name: name.to_string() });
        self.prog.buffers.len() - 1
    }

    pub(super) fn push_kernel(&mut self, k: Kernel, args: Vec<usize>) {
        self.prog.kernels.push(k);
        self.prog.steps.push(Step { kernel: self.prog.kernels.len() - 1, args, device: Default::default(), deps: vec![] });
    }

    /// A weight buffer holding `t`.
    pub(super) fn add_weight(&mut self, t: Tensor, name: &str) -> usize {
        let (dtype, len) = (t.dtype, t.num_elements());
        self.prog.weights.push(t);
        let w = self.prog.weights.len() - 1;
        self.new_buffer(BufferKind::Weight(w), dtype, len, name)
    }

    /// The buffer of constant `n`, created on first use.
    pub(super) fn weight_buffer(&mut self, n: NodeId) -> usize {
        if let Some(&b) = self.buffer_of.get(&n) {
            return b;
        }
        let Op::Constant(t) = &self.g.node(n).op else { unreachable!("weight_buffer of a non-constant") };
        let b = self.add_weight(t.clone(), &self.g.node(n).name.clone());
        self.buffer_of.insert(n, b);
        b
    }

    /// A buffer holding `n`'s value densely (row-major): its own, or a copy made now.
    pub(super) fn dense_buffer(&mut self, n: NodeId) -> Result<usize, IrError> {
        if let Some(&b) = self.buffer_of.get(&n) {
            return Ok(b);
        }
        if let Op::Constant(_) = self.g.node(n).op {
            return Ok(self.weight_buffer(n));
        }
        let ty = self.g.ty(n).clone();
        let name = self.g.node(n).name.clone();
        let b = self.new_buffer(BufferKind::Temp { offset: 0 }, ty.dtype, ty.num_elements(), &name);
        if self.concat_in_place(n, b) {
            self.buffer_of.insert(n, b);
            return Ok(b);
        }
        match self.g.node(n).op.clone() {
            Op::Pad { low, high, interior, mode: PadMode::Constant(c) }
                if low.iter().chain(&high).all(|&p| p >= 0) && interior.iter().all(|&i| i == 0) =>
            {
                self.write_padded(self.g.operands(n)[0], b, &ty, &low, c, &name)?
            }
            _ => self.write_into(n, Some(n), b, &kernel_name(&name, "materialize"))?,
        }
        self.buffer_of.insert(n, b);
        Ok(b)
    }

    /// Place the operands of concatenation `n` in their slices of its buffer `b` instead of
    /// copying them, when every slice is contiguous (the axes before the concatenation axis
    /// are all 1, as for a batch-1 channel concatenation) and every operand already has a
    /// temporary buffer of its own that is not shared: written by its own kernels, not an
    /// output, not a container itself, not in another concatenation. The arena planner then
    /// allocates `b` once for all of them. Returns whether it did.
    pub(super) fn concat_in_place(&mut self, n: NodeId, b: usize) -> bool {
        let Op::Concat { axis } = self.g.node(n).op else { return false };
        let ty = self.g.ty(n);
        if ty.shape[..axis].iter().any(|&d| d != 1) {
            return false;
        }
        let ops = self.g.operands(n);
        let placed: HashSet<usize> = self.aliases.iter().flat_map(|a| [a.member, a.container]).collect();
        let mut members = vec![];
        for (i, &o) in ops.iter().enumerate() {
            let Some(&m) = self.buffer_of.get(&o) else { return false };
            let buf = &self.prog.buffers[m];
            let own = matches!(buf.kind, BufferKind::Temp { .. })
                && buf.dtype == ty.dtype
                && buf.len == self.g.ty(o).num_elements()
                && !placed.contains(&m)
                && !ops[..i].contains(&o)
                && self.prog.steps.iter().any(|s| s.args[0] == m);
            if !own {
                return false;
            }
            members.push(m);
        }
        let mut offset = 0;
        for m in members {
            self.aliases.push(Alias { member: m, container: b, offset });
            offset += self.prog.buffers[m].len;
        }
        debug_assert_eq!(offset, ty.num_elements());
        true
    }

    /// A constant-mode pad as two branch-free kernels: fill `out` (of type `ty`) with `fill`,
    /// then copy `src` into the interior starting at `low`.
    pub(super) fn write_padded(&mut self, src: NodeId, out: usize, ty: &odc_ir::TensorType, low: &[i64], fill: odc_ir::Scalar, name: &str) -> Result<(), IrError> {
        // The fill writes every element alike: one flat loop, all whole vectors but the last
        // (a 5-wide map's 7-wide padded rows would each end in three scalar stores).
        let mut kl = KernelLowering::new(self, None, out);
        let (vars, _) = kl.domain(&[ty.num_elements()]);
        let ct = ty.dtype.compute_type();
        let c = scalar_const(&mut kl.kb, fill, ct);
        let c = math::round_to_storage(&mut kl.kb, c, ty.dtype);
        let c = math::encode(&mut kl.kb, c, ty.dtype);
        let (k, args) = kl.finish(kernel_name(name, "pad_fill"), vars, Body::map(c));
        self.push_kernel(k, args);
        let src_shape = self.g.ty(src).shape.clone();
        let mut kl = KernelLowering::new(self, None, out);
        let (vars, idx) = kl.domain(&src_shape);
        let v = kl.access(src, &idx)?;
        let v = math::encode(&mut kl.kb, v, ty.dtype);
        let shifted: Vec<E> = idx.iter().zip(low).map(|(&i, &l)| kl.kb.add_c(i, l)).collect();
        let index = kl.kb.flat_index(&shifted, &ty.shape);
        let (k, args) = kl.finish(kernel_name(name, "pad_copy"), vars, Body::map_at(v, index));
        self.push_kernel(k, args);
        Ok(())
    }

    /// Copy `src` into `out` unless `src` already lives there (state updated in place: the
    /// scatter's data operand is the state's old value, in the very buffer it writes).
    pub(super) fn copy_unless_in_place(&mut self, src: NodeId, out: usize, name: &str) -> Result<(), IrError> {
        let same = self.buffer_of.get(&src).is_some_and(|&b| {
            let (a, o) = (&self.prog.buffers[b], &self.prog.buffers[out]);
            matches!(a.kind, BufferKind::State { .. }) && a.kind == o.kind && a.len == o.len && a.dtype == o.dtype
        });
        if same {
            return Ok(());
        }
        self.copy_into(src, out, name)
    }

    /// A kernel that copies node `src` into buffer `out`.
    pub(super) fn copy_into(&mut self, src: NodeId, out: usize, name: &str) -> Result<(), IrError> {
        self.write_into(src, None, out, name)
    }

    /// A kernel writing `src` into `out`; `root` is `Some(src)` when `src` is computed here
    /// rather than read from its buffer.
    pub(super) fn write_into(&mut self, src: NodeId, root: Option<NodeId>, out: usize, name: &str) -> Result<(), IrError> {
        let ty = self.g.ty(src).clone();
        let mut kl = KernelLowering::new(self, root, out);
        let (vars, idx) = kl.domain(&ty.shape);
        let v = kl.access(src, &idx)?;
        let v = math::encode(&mut kl.kb, v, ty.dtype);
        let (k, args) = kl.finish(name.to_string(), vars, Body::map(v));
        self.push_kernel(k, args);
        Ok(())
    }
}
