//! Graph IR → [`Program`]: kernels, buffers and the order they run in.
//!
//! Each primitive has a *compute definition* ([`KernelLowering::emit_node`]): its value at an
//! output index, in terms of its operands' values at derived indices. A node is either
//! *materialised* (it gets a buffer and a kernel that writes it) or *inlined* (its definition is
//! substituted into every reader). Views, iotas and scalar constants are always inlined; which
//! compute nodes are inlined, and which contractions run as GEMMs with an epilogue, is the
//! [`FusionPlan`].
//!
//! Contractions become [`Body::Gemm`] kernels: MatMul directly, Conv as an implicit GEMM per
//! group (weights as A, pixels as B; 1x1 stride-1 convolutions read the input as is, others
//! through an im2col buffer). Constant operands are packed into register-tile panels here, at
//! compile time.

use crate::fusion::{byte_source, FusionPlan, KernelKind};
use crate::kernel::{raw_type, Body, Gemm, GemmElem, GemmOperand, Kernel, KernelBuilder, E};
use crate::math;
use crate::schedule::{self, GemmTile, Machine};
use odc_ir::{Bytes, DType, Graph, IrError, NodeId, Op, OpFamily, PadMode, ReduceOp, ScatterReduction, Tensor};
use std::collections::{HashMap, HashSet};

mod winograd;

/// Where a buffer lives at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// The caller's `index`-th input.
    Input(usize),
    /// The caller's `index`-th output.
    Output(usize),
    /// Constant `index` of [`Program::weights`].
    Weight(usize),
    /// An intermediate at a fixed offset of the arena.
    Temp { offset: usize },
}

#[derive(Clone, Debug)]
pub struct Buffer {
    pub kind: BufferKind,
    pub dtype: DType,
    /// Elements.
    pub len: usize,
    /// Graph node names it holds (for reports).
    pub name: String,
}

impl Buffer {
    pub fn byte_len(&self) -> usize {
        self.dtype.byte_len(self.len)
    }
}

/// One kernel invocation: `args[slot]` is the buffer for the kernel's slot.
#[derive(Clone, Debug)]
pub struct Step {
    pub kernel: usize,
    pub args: Vec<usize>,
}

/// A named, typed model input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct IoSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// Everything the code generator needs to emit a module.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub kernels: Vec<Kernel>,
    pub buffers: Vec<Buffer>,
    pub steps: Vec<Step>,
    pub weights: Vec<Tensor>,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    pub arena_size: usize,
}

/// Alignment of every arena buffer.
pub const ARENA_ALIGN: usize = 64;

/// The target as lowering sees it (made by [`crate::Target::lower_options`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    /// The core the schedules are chosen for.
    pub machine: Machine,
    /// Force every GEMM's register tile `(mr, nr)` (`nr` a multiple of 4) instead of the
    /// scheduler's choice, for experiments.
    pub gemm_tile: Option<(usize, usize)>,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions { machine: Machine::X86_64, gemm_tile: None }
    }
}

impl LowerOptions {
    fn tile(&self, m: usize, k: usize) -> GemmTile {
        schedule::gemm_tile(m, k, &self.machine, self.gemm_tile)
    }
}

/// Nodes that are never materialised on their own.
pub fn always_inlined(g: &Graph, n: NodeId) -> bool {
    match &g.node(n).op {
        Op::Iota { .. } => true,
        Op::Constant(t) => t.num_elements() == 1 && !t.dtype.is_packed(),
        op => op.family() == OpFamily::View,
    }
}

/// Lower a verified graph following `plan`.
pub fn lower(g: &Graph, plan: &FusionPlan, opts: &LowerOptions) -> Result<Program, IrError> {
    let mut st = LowerState {
        g,
        plan,
        opts: *opts,
        prog: Program::default(),
        buffer_of: HashMap::new(),
        materialized_views: padded_window_inputs(g),
        aliases: vec![],
    };
    for p in g.inputs() {
        let t = g.ty(p.node);
        st.prog.inputs.push(IoSpec { name: p.name.clone(), dtype: t.dtype, shape: t.shape.clone() });
    }
    for p in g.outputs() {
        let t = g.ty(p.node);
        st.prog.outputs.push(IoSpec { name: p.name.clone(), dtype: t.dtype, shape: t.shape.clone() });
    }
    // Which graph outputs a kernel node can write directly.
    let mut direct_output: HashMap<NodeId, usize> = HashMap::new();
    for (j, p) in g.outputs().iter().enumerate() {
        let n = p.node;
        let computes = !matches!(g.node(n).op, Op::Input { .. } | Op::Constant(_)) && !always_inlined(g, n);
        if computes && !direct_output.contains_key(&n) {
            direct_output.insert(n, j);
        }
    }
    let mut kernel_nodes = vec![];
    for n in g.topo_order() {
        let node = g.node(n);
        let kind = match &node.op {
            Op::Input { index } => BufferKind::Input(*index),
            _ if always_inlined(g, n) || matches!(node.op, Op::Constant(_)) => continue,
            _ if plan.is_fused(n) && !direct_output.contains_key(&n) => continue,
            _ => {
                kernel_nodes.push(n);
                match direct_output.get(&n) {
                    Some(&j) => BufferKind::Output(j),
                    None => BufferKind::Temp { offset: 0 },
                }
            }
        };
        let b = st.new_buffer(kind, node.ty.dtype, node.ty.num_elements(), &node.name);
        st.buffer_of.insert(n, b);
    }
    for n in kernel_nodes {
        let out = st.buffer_of[&n];
        st.lower_node(n, out)?;
    }
    // Outputs not written by their own kernel: copy.
    for (j, p) in g.outputs().iter().enumerate() {
        if direct_output.get(&p.node) == Some(&j) {
            continue;
        }
        let ty = g.ty(p.node);
        let out = st.new_buffer(BufferKind::Output(j), ty.dtype, ty.num_elements(), &p.name);
        st.copy_into(p.node, out, &format!("copy_{}", p.name))?;
    }
    let (mut prog, aliases) = (st.prog, st.aliases);
    remove_dead_steps(&mut prog, &aliases);
    plan_arena(&mut prog, &aliases);
    schedule::schedule_program(&mut prog, &opts.machine);
    Ok(prog)
}

/// Drop steps whose results nothing reads: a node materialised in the plan whose only reader
/// took another route (an int8 GEMM reads the bytes under a cast, a Winograd convolution reads
/// the source of a pad). A buffer is live if it is an output or a live step reads it; every step
/// writing a live buffer is live.
fn remove_dead_steps(prog: &mut Program, aliases: &[Alias]) {
    let mut live_buf = vec![false; prog.buffers.len()];
    for (b, buf) in prog.buffers.iter().enumerate() {
        live_buf[b] = matches!(buf.kind, BufferKind::Output(_));
    }
    let mut live_step = vec![false; prog.steps.len()];
    for (i, step) in prog.steps.iter().enumerate().rev() {
        if live_buf[step.args[0]] {
            live_step[i] = true;
            for &b in &step.args {
                live_buf[b] = true;
            }
            // Reading a container reads its members (written earlier, so visited later).
            for a in aliases {
                if step.args.contains(&a.container) {
                    live_buf[a.member] = true;
                }
            }
        }
    }
    // A buffer found live late (read by an earlier-visited reader) keeps all its writers.
    for (i, step) in prog.steps.iter().enumerate() {
        if live_buf[step.args[0]] {
            live_step[i] = true;
        }
    }
    let mut keep = live_step.into_iter();
    prog.steps.retain(|_| keep.next().unwrap_or(true));
    let used: HashSet<usize> = prog.steps.iter().map(|s| s.kernel).collect();
    if used.len() < prog.kernels.len() {
        let mut remap = vec![usize::MAX; prog.kernels.len()];
        let mut kernels = vec![];
        for (k, kernel) in std::mem::take(&mut prog.kernels).into_iter().enumerate() {
            if used.contains(&k) {
                remap[k] = kernels.len();
                kernels.push(kernel);
            }
        }
        prog.kernels = kernels;
        for s in &mut prog.steps {
            s.kernel = remap[s.kernel];
        }
    }
    // Weights only dead steps read are not emitted.
    let read: HashSet<usize> = prog.steps.iter().flat_map(|s| s.args.iter().copied()).collect();
    let mut used_w = vec![false; prog.weights.len()];
    for (b, buf) in prog.buffers.iter().enumerate() {
        if let BufferKind::Weight(w) = buf.kind {
            used_w[w] |= read.contains(&b);
        }
    }
    if used_w.iter().any(|u| !u) {
        let mut remap = vec![usize::MAX; prog.weights.len()];
        let mut weights = vec![];
        for (w, t) in std::mem::take(&mut prog.weights).into_iter().enumerate() {
            if used_w[w] {
                remap[w] = weights.len();
                weights.push(t);
            }
        }
        prog.weights = weights;
        for buf in &mut prog.buffers {
            if let BufferKind::Weight(w) = buf.kind {
                // A buffer of a dropped weight is read by no step; point it at nothing real.
                buf.kind = if remap[w] == usize::MAX { BufferKind::Temp { offset: 0 } } else { BufferKind::Weight(remap[w]) };
            }
        }
    }
}

/// Pads read by a convolution or a window: copied once into a padded buffer, so the windowed
/// loops (read up to kernel-size times per element) load without bounds tests.
fn padded_window_inputs(g: &Graph) -> HashSet<NodeId> {
    g.node_ids()
        .into_iter()
        .filter(|&n| matches!(g.node(n).op, Op::Pad { .. }))
        .filter(|&n| g.users(n).iter().any(|&u| matches!(g.node(u).op, Op::Conv(_) | Op::Window { .. })))
        .collect()
}

fn kernel_name(node_name: &str, op: &str) -> String {
    let clean: String = node_name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("{op}_{clean}")
}

/// Lowering state: the program under construction and where each node's value lives.
pub struct LowerState<'g> {
    g: &'g Graph,
    plan: &'g FusionPlan,
    opts: LowerOptions,
    prog: Program,
    buffer_of: HashMap<NodeId, usize>,
    /// Views copied into a buffer of their own on first read instead of being inlined.
    materialized_views: HashSet<NodeId>,
    /// Buffers placed inside another: a concatenation's operands written straight into their
    /// slices of it (see [`LowerState::concat_in_place`]).
    aliases: Vec<Alias>,
}

/// `member` occupies the elements `offset..offset + len(member)` of `container`.
#[derive(Clone, Copy, Debug)]
struct Alias {
    member: usize,
    container: usize,
    offset: usize,
}

impl<'g> LowerState<'g> {
    fn new_buffer(&mut self, kind: BufferKind, dtype: DType, len: usize, name: &str) -> usize {
        self.prog.buffers.push(Buffer { kind, dtype, len, name: name.to_string() });
        self.prog.buffers.len() - 1
    }

    fn push_kernel(&mut self, k: Kernel, args: Vec<usize>) {
        self.prog.kernels.push(k);
        self.prog.steps.push(Step { kernel: self.prog.kernels.len() - 1, args });
    }

    /// A weight buffer holding `t`.
    fn add_weight(&mut self, t: Tensor, name: &str) -> usize {
        let (dtype, len) = (t.dtype, t.num_elements());
        self.prog.weights.push(t);
        let w = self.prog.weights.len() - 1;
        self.new_buffer(BufferKind::Weight(w), dtype, len, name)
    }

    /// The buffer of constant `n`, created on first use.
    fn weight_buffer(&mut self, n: NodeId) -> usize {
        if let Some(&b) = self.buffer_of.get(&n) {
            return b;
        }
        let Op::Constant(t) = &self.g.node(n).op else { unreachable!("weight_buffer of a non-constant") };
        let b = self.add_weight(t.clone(), &self.g.node(n).name.clone());
        self.buffer_of.insert(n, b);
        b
    }

    /// A buffer holding `n`'s value densely (row-major): its own, or a copy made now.
    fn dense_buffer(&mut self, n: NodeId) -> Result<usize, IrError> {
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
    fn concat_in_place(&mut self, n: NodeId, b: usize) -> bool {
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
    fn write_padded(&mut self, src: NodeId, out: usize, ty: &odc_ir::TensorType, low: &[i64], fill: odc_ir::Scalar, name: &str) -> Result<(), IrError> {
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

    /// A kernel that copies node `src` into buffer `out`.
    fn copy_into(&mut self, src: NodeId, out: usize, name: &str) -> Result<(), IrError> {
        self.write_into(src, None, out, name)
    }

    /// A kernel writing `src` into `out`; `root` is `Some(src)` when `src` is computed here
    /// rather than read from its buffer.
    fn write_into(&mut self, src: NodeId, root: Option<NodeId>, out: usize, name: &str) -> Result<(), IrError> {
        let ty = self.g.ty(src).clone();
        let mut kl = KernelLowering::new(self, root, out);
        let (vars, idx) = kl.domain(&ty.shape);
        let v = kl.access(src, &idx)?;
        let v = math::encode(&mut kl.kb, v, ty.dtype);
        let (k, args) = kl.finish(name.to_string(), vars, Body::map(v));
        self.push_kernel(k, args);
        Ok(())
    }

    fn lower_node(&mut self, n: NodeId, out: usize) -> Result<(), IrError> {
        let g = self.g;
        let node = g.node(n);
        let ty = node.ty.clone();
        let name = kernel_name(&node.name, &node.op.name());
        if let Some(&c) = self.plan.gemm_root.get(&n) {
            return self.lower_gemm(c, n, out, &name);
        }
        if self.plan.kind_of(n).is_gemm() {
            return self.lower_gemm(n, n, out, &name);
        }
        match &node.op {
            Op::ScatterElements { axis, reduction } => {
                let ops = g.operands(n);
                self.copy_into(ops[0], out, &format!("{name}_copy"))?;
                let (data_shape, upd_shape) = (g.ty(ops[0]).shape.clone(), g.ty(ops[2]).shape.clone());
                let mut kl = KernelLowering::new(self, None, out);
                let (vars, u) = kl.domain(&upd_shape);
                let raw = kl.access(ops[1], &u)?;
                let i = kl.index_value(raw, data_shape[*axis] as i64);
                let mut target = u.clone();
                target[*axis] = i;
                let flat = kl.kb.flat_index(&target, &data_shape);
                let upd = kl.access(ops[2], &u)?;
                let value = kl.scatter_value(flat, upd, *reduction, ty.dtype);
                let (k, args) = kl.finish(format!("{name}_scatter"), vars, Body::Scatter { index: flat, value });
                self.push_kernel(k, args);
            }
            Op::ScatterNd { reduction } => {
                let ops = g.operands(n);
                self.copy_into(ops[0], out, &format!("{name}_copy"))?;
                let data_shape = g.ty(ops[0]).shape.clone();
                let idx_shape = g.ty(ops[1]).shape.clone();
                let q = idx_shape.len();
                let depth = idx_shape[q - 1];
                let upd_shape = g.ty(ops[2]).shape.clone();
                let mut kl = KernelLowering::new(self, None, out);
                let (vars, u) = kl.domain(&upd_shape);
                let prefix = &u[..q - 1];
                let mut target = vec![];
                for j in 0..depth {
                    let mut ii = prefix.to_vec();
                    ii.push(kl.kb.i64c(j as i64));
                    let raw = kl.access(ops[1], &ii)?;
                    target.push(kl.index_value(raw, data_shape[j] as i64));
                }
                target.extend_from_slice(&u[q - 1..]);
                let flat = kl.kb.flat_index(&target, &data_shape);
                let upd = kl.access(ops[2], &u)?;
                let value = kl.scatter_value(flat, upd, *reduction, ty.dtype);
                let (k, args) = kl.finish(format!("{name}_scatter"), vars, Body::Scatter { index: flat, value });
                self.push_kernel(k, args);
            }
            _ => {
                if let Some((pad, ranges)) = self.windowed_node(n).and_then(|w| self.window_over_pad(w)) {
                    return self.lower_window_boxes(n, out, &name, pad, &ranges);
                }
                let mut kl = KernelLowering::new(self, Some(n), out);
                let (vars, idx) = kl.domain(&ty.shape);
                let v = kl.emit_node(n, &idx)?;
                let v = math::encode(&mut kl.kb, v, ty.dtype);
                let (k, args) = kl.finish(name, vars, Body::map(v));
                self.push_kernel(k, args);
            }
        }
        Ok(())
    }

    /// The direct convolution or reduction kernel root `n` computes at each of its output
    /// elements: `n` itself, or the one inlined into `n`'s elementwise chain (a depthwise
    /// convolution under its bias and ReLU), which has `n`'s shape.
    fn windowed_node(&self, n: NodeId) -> Option<NodeId> {
        let g = self.g;
        let per_element = |m: NodeId| matches!(g.node(m).op, Op::Conv(_) | Op::Reduce { .. });
        if per_element(n) {
            return Some(n);
        }
        let mut found = vec![];
        let mut stack = vec![n];
        let mut seen = HashSet::new();
        while let Some(m) = stack.pop() {
            if !seen.insert(m) {
                continue;
            }
            for o in g.operands(m) {
                if !self.plan.is_fused(o) || self.buffer_of.contains_key(&o) {
                    continue;
                }
                if per_element(o) {
                    found.push(o);
                } else if g.node(o).op.family() == OpFamily::Elementwise {
                    stack.push(o);
                }
            }
        }
        match found.as_slice() {
            [w] if g.ty(*w).shape == g.ty(n).shape => Some(*w),
            _ => None,
        }
    }

    /// A direct convolution or a window reduction (pooling) `n` reading a zero-or-constant pad
    /// that would be materialised: the pad and, per padded output axis, the range of outputs
    /// whose whole window lies inside the unpadded input.
    fn window_over_pad(&self, n: NodeId) -> Option<(NodeId, Vec<(usize, usize, usize)>)> {
        let g = self.g;
        // (padded operand, its first windowed axis, kernel, strides, dilations, root axis of window axis 0)
        let (pad, first, kernel, strides, dilations, root_first) = match &g.node(n).op {
            Op::Conv(cv) => {
                let ops = g.operands(n);
                let ws = &g.ty(ops[1]).shape;
                (ops[0], 2, ws[2..].to_vec(), cv.strides.clone(), cv.dilations.clone(), 2)
            }
            Op::Reduce { axes, .. } => {
                let w = g.operands(n)[0];
                let Op::Window { kernel, strides, dilations } = &g.node(w).op else { return None };
                let p = g.operands(w)[0];
                let first = g.ty(p).shape.len() - kernel.len();
                let window_axes: Vec<usize> = (0..kernel.len()).map(|i| first + kernel.len() + i).collect();
                if *axes != window_axes {
                    return None;
                }
                (p, first, kernel.clone(), strides.clone(), dilations.clone(), first)
            }
            _ => return None,
        };
        if !self.materialized_views.contains(&pad) || self.buffer_of.contains_key(&pad) {
            return None;
        }
        let Op::Pad { low, interior, mode: PadMode::Constant(_), high } = &g.node(pad).op else { return None };
        let unpadded = &g.ty(g.operands(pad)[0]).shape;
        let plain = low.iter().chain(high).all(|&p| p >= 0) && interior.iter().all(|&i| i == 0);
        if !plain || low[..first].iter().chain(&high[..first]).any(|&p| p != 0) {
            return None;
        }
        let out = &g.ty(n).shape;
        let mut ranges = vec![];
        for (i, &k) in kernel.iter().enumerate() {
            let (a, o) = (first + i, out[root_first + i] as i64);
            let (s, d, lo_pad, size) = (strides[i] as i64, dilations[i] as i64, low[a], unpadded[a] as i64);
            // o*s >= low and o*s + (k-1)*d < low + size.
            let lo = (lo_pad + s - 1).div_euclid(s).clamp(0, o);
            let last = lo_pad + size - 1 - (k as i64 - 1) * d;
            // No window fits inside: an empty interior, all border.
            let hi = if last < 0 { lo } else { (last.div_euclid(s) + 1).clamp(lo, o) };
            if lo > 0 || hi < o {
                ranges.push((root_first + i, lo as usize, hi as usize));
            }
        }
        // The innermost axis stays a vector loop: an interior narrower than a vector would run
        // scalar, losing more than the bounds tests cost (measured on kws_cnn's 5-wide maps).
        let (inner, lanes) = (out.len() - 1, self.opts.machine.lanes);
        if ranges.iter().any(|&(a, lo, hi)| a == inner && hi - lo < lanes && out[inner] >= lanes) {
            return None;
        }
        (!ranges.is_empty()).then_some((pad, ranges))
    }

    /// Lower `n` (see [`Self::window_over_pad`]) reading its pad inline, as one kernel per box of
    /// the output: the interior, where every window lies inside the input and the bounds tests
    /// fold away, and the border bands, which keep them. No padded copy is written.
    fn lower_window_boxes(&mut self, n: NodeId, out: usize, name: &str, pad: NodeId, ranges: &[(usize, usize, usize)]) -> Result<(), IrError> {
        let shape = self.g.ty(n).shape.clone();
        let dtype = self.g.ty(n).dtype;
        // Bands: along each split axis in turn, the part before and after its safe range
        // (spanning the remaining axes fully), then recurse into the middle.
        let mut boxes: Vec<(Vec<(usize, usize)>, String)> = vec![];
        let mut middle: Vec<(usize, usize)> = shape.iter().map(|&d| (0, d)).collect();
        for &(axis, lo, hi) in ranges {
            for (start, end, side) in [(0, lo, "lo"), (hi, shape[axis], "hi")] {
                if start < end {
                    let mut b = middle.clone();
                    b[axis] = (start, end - start);
                    boxes.push((b, format!("border{axis}{side}")));
                }
            }
            middle[axis] = (lo, hi - lo);
        }
        if middle.iter().all(|&(_, len)| len > 0) {
            boxes.push((middle, "interior".into()));
        }
        for (bx, suffix) in boxes {
            let mut kl = KernelLowering::new(self, Some(n), out);
            kl.inline_pad = Some(pad);
            let lens: Vec<usize> = bx.iter().map(|&(_, len)| len).collect();
            let (vars, local) = kl.domain(&lens);
            let idx: Vec<E> = local.iter().zip(&bx).map(|(&i, &(start, _))| kl.kb.add_c(i, start as i64)).collect();
            let v = kl.emit_node(n, &idx)?;
            let v = math::encode(&mut kl.kb, v, dtype);
            let flat = kl.kb.flat_index(&idx, &shape);
            let (k, args) = kl.finish(format!("{name}_{suffix}"), vars, Body::map_at(v, flat));
            self.push_kernel(k, args);
        }
        Ok(())
    }

    /// Lower contraction `c` on the GEMM-family kernel the plan chose, with an epilogue that
    /// computes `root` (which may be `c`).
    fn lower_gemm(&mut self, c: NodeId, root: NodeId, out: usize, name: &str) -> Result<(), IrError> {
        let g = self.g;
        let ops = g.operands(c);
        let kind = self.plan.kind_of(c);
        match kind {
            KernelKind::Int8Dot => {
                let bytes = (byte_source(g, ops[0]), byte_source(g, ops[1]));
                let (Some(a8), Some(b8)) = bytes else {
                    return Err(IrError::new(format!("{name}: the plan runs it on the int8 dot product, but its operands are not 8-bit")));
                };
                return self.lower_int8_matmul(c, root, out, name, a8, b8);
            }
            KernelKind::Winograd => return self.lower_winograd(c, root, out, name),
            KernelKind::GemmF32 if g.ty(c).dtype == DType::F32 => {}
            _ => return Err(IrError::new(format!("{name}: the plan runs it on the {kind} kernel, which cannot compute a {} {}", g.ty(c).dtype, g.node(c).op.name()))),
        }
        match g.node(c).op.clone() {
            Op::MatMul => {
                let (ash, bsh) = (g.ty(ops[0]).shape.clone(), g.ty(ops[1]).shape.clone());
                let osh = g.ty(c).shape.clone();
                let r = osh.len();
                let (m, n, k) = (osh[r - 2], osh[r - 1], ash[ash.len() - 1]);
                let tile = self.opts.tile(m, k);
                let nr = tile.nr;
                let a_buf = self.dense_buffer(ops[0])?;
                let b_packed = match &g.node(ops[1]).op {
                    Op::Constant(t) => {
                        let packed = pack_b(t, nr)?;
                        Some(self.add_weight(packed, &format!("{}_packed", g.node(ops[1]).name)))
                    }
                    _ => None,
                };
                let b_buf = match b_packed {
                    Some(b) => b,
                    None => self.dense_buffer(ops[1])?,
                };
                let mut kl = KernelLowering::new(self, Some(root), out);
                kl.acc_node = Some(c);
                let (vars, idx) = kl.gemm_domain(&osh);
                let a_base = batch_offset(&mut kl.kb, &idx[..r - 2], &ash[..ash.len() - 2], (m * k) as i64);
                let b_mat = if b_packed.is_some() { (n.div_ceil(nr) * nr * k) as i64 } else { (k * n) as i64 };
                let b_base = batch_offset(&mut kl.kb, &idx[..r - 2], &bsh[..bsh.len() - 2], b_mat);
                let a = GemmOperand { buf: kl.slot(a_buf), base: a_base, row_stride: k as i64, col_stride: 1, panel: None, padded_cols: false };
                let b = GemmOperand {
                    buf: kl.slot(b_buf),
                    base: b_base,
                    row_stride: n as i64,
                    col_stride: 1,
                    panel: b_packed.map(|_| (k * nr) as i64),
                    padded_cols: b_packed.is_some(),
                };
                let epilogue = kl.epilogue(root, &idx)?;
                let (kern, args) = kl.finish_gemm(name.to_string(), vars, Gemm { m, n, k, a, b, elem: GemmElem::F32, epilogue }, tile);
                self.push_kernel(kern, args);
            }
            Op::Conv(cv) => {
                let (xs, ws) = (g.ty(ops[0]).shape.clone(), g.ty(ops[1]).shape.clone());
                let osh = g.ty(c).shape.clone();
                let sp = xs.len() - 2;
                let groups = cv.groups;
                let (nb, ci, mo, cg) = (xs[0], xs[1], ws[0], ws[1]);
                let mg = mo / groups;
                let ksp: usize = ws[2..].iter().product();
                let kk = cg * ksp;
                let p: usize = osh[2..].iter().product();
                let tile = self.opts.tile(mg, kk);
                let mr = tile.mr;
                // A: the weights, packed per group when constant.
                let (a_buf, a_packed) = match &g.node(ops[1]).op {
                    Op::Constant(t) => {
                        let packed = pack_a(t, groups, mg, kk, mr)?;
                        (self.add_weight(packed, &format!("{}_packed", g.node(ops[1]).name)), true)
                    }
                    _ => (self.dense_buffer(ops[1])?, false),
                };
                // B: the input itself for 1x1 stride-1 convolutions, else an im2col buffer.
                // (Padding its rows to a multiple of nr, to drop the column tail, measured no
                // faster on resnet50.) When the output width is a multiple of nr, im2col writes
                // B in the GEMM's panel layout (`[p / nr][kk][nr]`), each panel contiguously:
                // the 7x7 stride-2 stems' im2col halved (resnet50 1.40 → 0.74 ms), their GEMM
                // time did not change.
                let pointwise = ws[2..].iter().all(|&d| d == 1) && cv.strides.iter().all(|&s| s == 1) && xs[2..] == osh[2..];
                let b_panels = !pointwise && sp == 2 && osh[3] % tile.nr == 0;
                let (b_buf, b_row, b_group_stride, b_batch_stride) = if pointwise {
                    (self.dense_buffer(ops[0])?, p, (cg * p) as i64, (ci * p) as i64)
                } else {
                    let col = self.new_buffer(BufferKind::Temp { offset: 0 }, DType::F32, nb * groups * kk * p, &format!("{name}_im2col"));
                    let panel = b_panels.then_some(tile.nr);
                    self.im2col(ops[0], col, &xs, &ws, &osh, &cv, panel, &format!("{name}_im2col"))?;
                    (col, p, (kk * p) as i64, (groups * kk * p) as i64)
                };
                let mut kl = KernelLowering::new(self, Some(root), out);
                kl.acc_node = Some(c);
                let (vars, idx) = kl.gemm_domain(&[nb, groups, mg, p]);
                let (n_e, grp, i, j) = (idx[0], idx[1], idx[2], idx[3]);
                let a_group = if a_packed { (mg.div_ceil(mr) * mr * kk) as i64 } else { (mg * kk) as i64 };
                let a_base = kl.kb.mul_c(grp, a_group);
                let nb_off = kl.kb.mul_c(n_e, b_batch_stride);
                let g_off = kl.kb.mul_c(grp, b_group_stride);
                let b_base = kl.kb.add(nb_off, g_off);
                let a = GemmOperand {
                    buf: kl.slot(a_buf),
                    base: a_base,
                    row_stride: kk as i64,
                    col_stride: 1,
                    panel: a_packed.then_some((kk * mr) as i64),
                    padded_cols: false,
                };
                let b = GemmOperand {
                    buf: kl.slot(b_buf),
                    base: b_base,
                    row_stride: b_row as i64,
                    col_stride: 1,
                    panel: b_panels.then_some((kk * tile.nr) as i64),
                    padded_cols: false,
                };
                // The root's index: [n, group * mg + i, spatial(j)..].
                let gm = kl.kb.mul_c(grp, mg as i64);
                let ch = kl.kb.add(gm, i);
                let mut ridx = vec![n_e, ch];
                ridx.extend(kl.kb.unflatten(j, &osh[2..]));
                let _ = sp;
                let epilogue = kl.epilogue(root, &ridx)?;
                let (kern, args) = kl.finish_gemm(name.to_string(), vars, Gemm { m: mg, n: p, k: kk, a, b, elem: GemmElem::F32, epilogue }, tile);
                self.push_kernel(kern, args);
            }
            other => return Err(IrError::new(format!("{} is not a contraction", other.name()))),
        }
        Ok(())
    }

    /// An i32 MatMul of 8-bit operands as an int8 dot-product GEMM: A's bytes read row-major
    /// (copied with `k` padded to a multiple of 4 when needed), B's packed at compile time.
    #[allow(clippy::too_many_arguments)]
    fn lower_int8_matmul(&mut self, c: NodeId, root: NodeId, out: usize, name: &str, a8: (NodeId, bool), b8: (NodeId, bool)) -> Result<(), IrError> {
        let g = self.g;
        let (ash, bsh, osh) = (g.ty(a8.0).shape.clone(), g.ty(b8.0).shape.clone(), g.ty(c).shape.clone());
        let r = osh.len();
        let (m, n, k) = (osh[r - 2], osh[r - 1], ash[ash.len() - 1]);
        let k4 = k.div_ceil(4) * 4;
        let tile = schedule::int8_gemm_tile(m, k4, &self.opts.machine, self.opts.gemm_tile);
        let nr = tile.nr;
        // A: dense bytes, rows padded to k4.
        let a_buf = if k4 == k {
            self.dense_buffer(a8.0)?
        } else {
            let mut padded = ash.clone();
            *padded.last_mut().expect("rank >= 2") = k4;
            let ty = odc_ir::TensorType::new(g.ty(a8.0).dtype, padded);
            let b = self.new_buffer(BufferKind::Temp { offset: 0 }, ty.dtype, ty.num_elements(), &format!("{name}_a8"));
            self.write_padded(a8.0, b, &ty, &vec![0; ash.len()], odc_ir::Scalar::I64(0), &format!("{name}_a8"))?;
            b
        };
        // B: the constant's values as bytes in the dot-product panel layout.
        let Op::Constant(bt) = &g.node(b8.0).op else {
            return Err(IrError::new(format!("{name}: the int8 dot product needs constant weights")));
        };
        let packed = pack_b_int8(bt, b8.1, nr)?;
        let b_buf = self.add_weight(packed, &format!("{}_int8", g.node(b8.0).name));
        let mut kl = KernelLowering::new(self, Some(root), out);
        kl.acc_node = Some(c);
        let acc = kl.kb.acc_of(DType::I32);
        kl.acc_value = Some(acc);
        let (vars, idx) = kl.gemm_domain(&osh);
        let a_base = batch_offset(&mut kl.kb, &idx[..r - 2], &ash[..ash.len() - 2], (m * k4) as i64);
        let panel = (k4 * nr) as i64;
        let b_base = batch_offset(&mut kl.kb, &idx[..r - 2], &bsh[..bsh.len() - 2], n.div_ceil(nr) as i64 * panel);
        let a = GemmOperand { buf: kl.slot(a_buf), base: a_base, row_stride: k4 as i64, col_stride: 1, panel: None, padded_cols: false };
        let b = GemmOperand { buf: kl.slot(b_buf), base: b_base, row_stride: nr as i64, col_stride: 1, panel: Some(panel), padded_cols: true };
        let epilogue = kl.epilogue(root, &idx)?;
        let elem = GemmElem::Int8 { a_signed: a8.1, b_signed: b8.1 };
        let gemm = Gemm { m, n, k: k4, a, b, elem, epilogue };
        let (kern, args) = kl.finish_gemm(name.to_string(), vars, gemm, tile);
        self.push_kernel(kern, args);
        Ok(())
    }

    /// The im2col matrix of each (batch, group): `col[n][grp][c, k..][o..] =
    /// x[n, grp*cg + c, o*s + k*d ..]` (a dense, usually padded, input).
    #[allow(clippy::too_many_arguments)]
    fn im2col(
        &mut self,
        x: NodeId,
        col: usize,
        xs: &[usize],
        ws: &[usize],
        osh: &[usize],
        cv: &odc_ir::Conv,
        panel: Option<usize>,
        name: &str,
    ) -> Result<(), IrError> {
        if let Some(nr) = panel {
            return self.im2col_panels(x, col, ws, osh, cv, nr, name);
        }
        let sp = xs.len() - 2;
        let mut dom = vec![xs[0], cv.groups, ws[1]];
        dom.extend(&ws[2..]);
        dom.extend(&osh[2..]);
        let mut kl = KernelLowering::new(self, None, col);
        let (vars, idx) = kl.domain(&dom);
        let xi = window_source(&mut kl.kb, cv, ws[1], [idx[0], idx[1], idx[2]], &idx[3 + sp..], &idx[3..3 + sp]);
        let v = kl.access(x, &xi)?;
        let (k, args) = kl.finish(name.to_string(), vars, Body::map(v));
        self.push_kernel(k, args);
        Ok(())
    }

    /// [`Self::im2col`] of a 2-D convolution into GEMM B panels of `nr` columns (the output
    /// width a multiple of `nr`, so a panel never straddles two output rows): per batch point
    /// and group, `col[(oh * (OW / nr) + owb) * kk * nr + r * nr + owl]` with `r` the
    /// (channel, kh, kw) row. Loops run panel by panel, so each panel is written contiguously.
    #[allow(clippy::too_many_arguments)]
    fn im2col_panels(&mut self, x: NodeId, col: usize, ws: &[usize], osh: &[usize], cv: &odc_ir::Conv, nr: usize, name: &str) -> Result<(), IrError> {
        let (nb, groups, cg, kh, kw, oh, ow) = (osh[0], cv.groups, ws[1], ws[2], ws[3], osh[2], osh[3]);
        let (kk, p) = (cg * kh * kw, oh * ow);
        let mut kl = KernelLowering::new(self, None, col);
        let (vars, idx) = kl.domain(&[nb, groups, oh, ow / nr, cg, kh, kw, nr]);
        let (n, grp, y, xb, c, ky, kx, xl) = (idx[0], idx[1], idx[2], idx[3], idx[4], idx[5], idx[6], idx[7]);
        let kb = &mut kl.kb;
        let xo = kb.mul_c(xb, nr as i64);
        let xo = kb.add(xo, xl);
        let xi = window_source(kb, cv, cg, [n, grp, c], &[y, xo], &[ky, kx]);
        let block = kb.flat_index(&[n, grp], &[nb, groups]);
        let block = kb.mul_c(block, (kk * p) as i64);
        let panel = kb.flat_index(&[y, xb], &[oh, ow / nr]);
        let panel = kb.mul_c(panel, (kk * nr) as i64);
        let r = kb.flat_index(&[c, ky, kx], &[cg, kh, kw]);
        let r = kb.mul_c(r, nr as i64);
        let at = kb.add(block, panel);
        let at = kb.add(at, r);
        let at = kb.add(at, xl);
        let v = kl.access(x, &xi)?;
        let (k, args) = kl.finish(name.to_string(), vars, Body::map_at(v, at));
        self.push_kernel(k, args);
        Ok(())
    }
}

/// The input element a convolution's window tap reads: `[n, group * cg + c, out * stride +
/// tap * dilation ..]` for batch point `n`, group `grp`, channel `c` of the group, output
/// position `out` and tap `tap` (one entry per spatial axis).
fn window_source(kb: &mut KernelBuilder, cv: &odc_ir::Conv, cg: usize, [n, grp, c]: [E; 3], out: &[E], tap: &[E]) -> Vec<E> {
    let gc = kb.mul_c(grp, cg as i64);
    let mut xi = vec![n, kb.add(gc, c)];
    for a in 0..out.len() {
        let o = kb.mul_c(out[a], cv.strides[a] as i64);
        let t = kb.mul_c(tap[a], cv.dilations[a] as i64);
        xi.push(kb.add(o, t));
    }
    xi
}

/// Element offset of a batch index into an operand with batch dims `shape` broadcast against
/// the output's batch index `idx` (right-aligned), for matrices of `mat` elements.
fn batch_offset(kb: &mut KernelBuilder, idx: &[E], shape: &[usize], mat: i64) -> E {
    let off = idx.len() - shape.len();
    let mut acc = kb.i64c(0);
    let mut stride = mat;
    for (d, &ext) in shape.iter().enumerate().rev() {
        if ext != 1 {
            let t = kb.mul_c(idx[off + d], stride);
            acc = kb.add(acc, t);
        }
        stride *= ext as i64;
    }
    acc
}

/// Pack conv weights `[groups * mg][k]` into `[groups][ceil(mg/mr)][k][mr]` (zero rows pad).
fn pack_a(t: &Tensor, groups: usize, mg: usize, k: usize, mr: usize) -> Result<Tensor, IrError> {
    let w = t.f32_values()?;
    let panels = mg.div_ceil(mr);
    let mut out = vec![0f32; groups * panels * k * mr];
    for gi in 0..groups {
        for i in 0..mg {
            for kk in 0..k {
                out[((gi * panels + i / mr) * k + kk) * mr + i % mr] = w[(gi * mg + i) * k + kk];
            }
        }
    }
    Ok(Tensor::from_f32_vec(vec![out.len()], out))
}

/// Pack matmul weights `[batch..][k][n]` into `[batch..][ceil(n/nr)][k][nr]` (zero columns pad).
fn pack_b(t: &Tensor, nr: usize) -> Result<Tensor, IrError> {
    let w = t.f32_values()?;
    let r = t.shape.len();
    let (k, n) = (t.shape[r - 2], t.shape[r - 1]);
    let batch: usize = t.shape[..r - 2].iter().product();
    let panels = n.div_ceil(nr);
    let mut out = vec![0f32; batch * panels * k * nr];
    for b in 0..batch {
        for kk in 0..k {
            for j in 0..n {
                out[((b * panels + j / nr) * k + kk) * nr + j % nr] = w[(b * k + kk) * n + j];
            }
        }
    }
    Ok(Tensor::from_f32_vec(vec![out.len()], out))
}

/// Pack 8-bit matmul weights `[batch..][k][n]` (held as i8, u8 or byte-range i32) into
/// `[batch..][ceil(n/nr)][ceil(k/4)][nr][4]` bytes, zero-padded: four consecutive `k` of a column
/// side by side, the operand layout of the dot-product instructions.
fn pack_b_int8(t: &Tensor, signed: bool, nr: usize) -> Result<Tensor, IrError> {
    let r = t.shape.len();
    let (k, n) = (t.shape[r - 2], t.shape[r - 1]);
    let batch: usize = t.shape[..r - 2].iter().product();
    let values: Vec<i64> = (0..t.num_elements()).map(|i| t.get_i64(i)).collect::<Result<_, _>>()?;
    let (panels, quads) = (n.div_ceil(nr), k.div_ceil(4));
    let mut out = vec![0u8; batch * panels * quads * nr * 4];
    for b in 0..batch {
        for kk in 0..k {
            for j in 0..n {
                let v = values[(b * k + kk) * n + j];
                let byte = if signed { v as i8 as u8 } else { v as u8 };
                out[(((b * panels + j / nr) * quads + kk / 4) * nr + j % nr) * 4 + kk % 4] = byte;
            }
        }
    }
    let dtype = if signed { DType::I8 } else { DType::U8 };
    Tensor::new(dtype, vec![out.len()], Bytes::from_vec(out))
}

/// Builds one kernel: owns the expression builder and the buffer-slot table.
pub struct KernelLowering<'s, 'g> {
    st: &'s mut LowerState<'g>,
    /// The node this kernel materialises (computed, not loaded).
    root: Option<NodeId>,
    /// The contraction whose value is the GEMM accumulator.
    acc_node: Option<NodeId>,
    /// The contraction's value where it is known as an expression (a Winograd output
    /// transform); otherwise the GEMM accumulator.
    acc_value: Option<E>,
    pub kb: KernelBuilder,
    slots: HashMap<usize, u32>,
    args: Vec<usize>,
    /// A padded view read inline (bounds tests folded away where the domain proves them)
    /// instead of from its materialised copy.
    inline_pad: Option<NodeId>,
}

impl<'s, 'g> KernelLowering<'s, 'g> {
    fn new(st: &'s mut LowerState<'g>, root: Option<NodeId>, out: usize) -> Self {
        let mut kl =
            KernelLowering { st, root, acc_node: None, acc_value: None, kb: KernelBuilder::new(), slots: HashMap::new(), args: vec![], inline_pad: None };
        kl.slot(out);
        kl
    }

    /// The GEMM epilogue: the root's value (the accumulator itself when the root is the contraction).
    fn epilogue(&mut self, root: NodeId, idx: &[E]) -> Result<E, IrError> {
        let v = if Some(root) == self.acc_node { self.acc_expr() } else { self.emit_node(root, idx)? };
        Ok(math::encode(&mut self.kb, v, self.st.g.ty(root).dtype))
    }

    fn acc_expr(&mut self) -> E {
        match self.acc_value {
            Some(v) => v,
            None => self.kb.acc(),
        }
    }

    fn slot(&mut self, buffer: usize) -> u32 {
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
    fn domain(&mut self, shape: &[usize]) -> (Vec<crate::kernel::Var>, Vec<E>) {
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
    fn gemm_domain(&mut self, shape: &[usize]) -> (Vec<crate::kernel::Var>, Vec<E>) {
        let vars: Vec<_> = shape.iter().map(|&d| self.kb.var(d as i64)).collect();
        let idx = vars.iter().map(|&v| self.kb.var_expr(v)).collect();
        (vars, idx)
    }

    fn finish(self, name: String, domain: Vec<crate::kernel::Var>, body: Body) -> (Kernel, Vec<usize>) {
        (self.kb.finish(name, domain, body), self.args)
    }

    /// A GEMM kernel with its register tile and cache blocks.
    fn finish_gemm(self, name: String, domain: Vec<crate::kernel::Var>, gemm: Gemm, tile: GemmTile) -> (Kernel, Vec<usize>) {
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
    fn access_bcast(&mut self, o: NodeId, idx: &[E]) -> Result<E, IrError> {
        let shape = self.st.g.ty(o).shape.clone();
        let off = idx.len() - shape.len();
        let mut ii = Vec::with_capacity(shape.len());
        for (i, &d) in shape.iter().enumerate() {
            ii.push(if d == 1 { self.kb.i64c(0) } else { idx[off + i] });
        }
        self.access(o, &ii)
    }

    /// An index value (any integer compute type) → wrapped (negative counts from the end) and checked i64.
    fn index_value(&mut self, raw: E, dim: i64) -> E {
        let v = self.kb.convert(DType::I64, raw);
        let zero = self.kb.i64c(0);
        let neg = self.kb.lt(v, zero);
        let wrapped = self.kb.add_c(v, dim);
        let v = self.kb.select(neg, wrapped, v);
        self.kb.check_index(v, dim)
    }

    fn scatter_value(&mut self, flat: E, upd: E, reduction: ScatterReduction, dtype: DType) -> E {
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
    fn emit_pad(
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

fn scalar_const(kb: &mut KernelBuilder, c: odc_ir::Scalar, ct: DType) -> E {
    match c {
        odc_ir::Scalar::I64(i) if !ct.is_float() => kb.iconst(ct, i),
        odc_ir::Scalar::U64(u) if !ct.is_float() => kb.iconst(ct, u as i64),
        other => kb.constant(ct, other.as_f64()),
    }
}

fn reduce_identity(kb: &mut KernelBuilder, op: ReduceOp, ct: DType) -> E {
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
fn batch_index(kb: &mut KernelBuilder, idx: &[E], shape: &[usize], row: E, col: E) -> Vec<E> {
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

/// Assign arena offsets to temporaries by liveness (first-fit over step intervals).
/// Place the temporaries in one arena by liveness (see [`odc_passes::memory`]). An elementwise
/// map whose input dies at it writes its output over that input (in place): the two share one
/// placement, live over the union of their lifetimes.
fn plan_arena(prog: &mut Program, aliases: &[Alias]) {
    let n = prog.buffers.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    for (s, step) in prog.steps.iter().enumerate() {
        for &b in &step.args {
            first[b] = first[b].min(s);
            last[b] = last[b].max(s);
        }
    }
    // A container lives from its members' first write to its or their last read; its members
    // are not allocated on their own.
    let mut is_member = vec![false; n];
    for a in aliases {
        if first[a.member] != usize::MAX {
            first[a.container] = first[a.container].min(first[a.member]);
            last[a.container] = last[a.container].max(last[a.member]);
        }
        is_member[a.member] = true;
    }
    let container: HashSet<usize> = aliases.iter().map(|a| a.container).collect();
    let is_temp: Vec<bool> = prog.buffers.iter().enumerate().map(|(b, buf)| matches!(buf.kind, BufferKind::Temp { .. }) && !is_member[b]).collect();
    let temp = |b: usize| is_temp[b];
    // In-place: `group[out] = group[input]` for maps whose input's last use is that map (never
    // over a container, whose bytes its members share; members are not `temp`, and no kernel
    // writes a container itself).
    let mut group: Vec<usize> = (0..n).collect();
    let elem_bytes = |b: usize| prog.buffers[b].dtype.bits();
    for (s, step) in prog.steps.iter().enumerate() {
        let out = step.args[0];
        if !temp(out) || first[out] != s || prog.steps.iter().filter(|t| t.args[0] == out).count() != 1 {
            continue;
        }
        let k = &prog.kernels[step.kernel];
        let donor = step.args.iter().enumerate().skip(1).find(|&(slot, &b)| {
            b != out
                && temp(b)
                && !container.contains(&b)
                && last[b] == s
                && prog.buffers[b].byte_len() == prog.buffers[out].byte_len()
                && elem_bytes(b) == elem_bytes(out)
                && step.args.iter().filter(|&&x| x == b).count() == 1
                && k.reads_only_at_store_index(slot as u32)
        });
        if let Some((_, &b)) = donor {
            let root = find(&mut group, b);
            group[out] = root;
        }
    }
    // One interval per group: the union of its members' lifetimes.
    let mut items = vec![];
    let mut index_of: HashMap<usize, usize> = HashMap::new();
    for b in 0..n {
        if !temp(b) || first[b] == usize::MAX {
            continue;
        }
        let r = find(&mut group, b);
        let i = *index_of.entry(r).or_insert_with(|| {
            items.push(odc_passes::memory::Interval { size: 0, start: usize::MAX, end: 0 });
            items.len() - 1
        });
        let it = &mut items[i];
        it.size = it.size.max(prog.buffers[b].byte_len());
        it.start = it.start.min(first[b]);
        it.end = it.end.max(last[b]);
    }
    let plan = odc_passes::memory::plan(&items, ARENA_ALIGN);
    for b in 0..n {
        if temp(b) && first[b] != usize::MAX {
            let r = find(&mut group, b);
            prog.buffers[b].kind = BufferKind::Temp { offset: plan.offsets[index_of[&r]] };
        }
    }
    for a in aliases {
        if let BufferKind::Temp { offset } = prog.buffers[a.container].kind {
            let at = offset + a.offset * prog.buffers[a.container].dtype.bits() / 8;
            prog.buffers[a.member].kind = BufferKind::Temp { offset: at };
        }
    }
    prog.arena_size = plan.total;
    let _ = raw_type;
}

/// Union-find root with path halving.
fn find(group: &mut [usize], mut b: usize) -> usize {
    while group[b] != b {
        group[b] = group[group[b]];
        b = group[b];
    }
    b
}
