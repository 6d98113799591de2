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
//!
//! Split by job: [`program`] (the lowered program's types, step dependencies and run order),
//! [`buffers`] (buffers, weights, in-place concatenation, copies), [`gemm`] (GEMM-family
//! contractions and weight packing) and `winograd`, [`window`] (windows over pads), [`emit`]
//! (per-op compute definitions) and [`arena`] (the static memory plan). This file is the
//! driver: which nodes get a kernel, in what order, and the clean-up after.

use odc_passes::fusion::FusionPlan;
use crate::kernel::Body;
use crate::math;
use crate::schedule::{self, GemmTile, Machine};
use emit::KernelLowering;
use odc_ir::{Graph, IrError, NodeId, Op, OpFamily};
use std::collections::{HashMap, HashSet};

mod arena;
mod buffers;
mod emit;
mod gemm;
pub mod program;
mod window;
mod winograd;

pub use program::{Buffer, BufferKind, Device, IoSpec, Program, StateSpec, Step, ARENA_ALIGN};

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
        materialized_views: window::padded_window_inputs(g),
        aliases: vec![],
    };
    check_state_updates(g)?;
    let state_io = |name: &str| {
        let p = g.inputs().iter().find(|p| p.name == name).expect("verified: state has an input");
        let t = g.ty(p.node);
        IoSpec { name: name.to_string(), dtype: t.dtype, shape: t.shape.clone() }
    };
    let (state, state_size) = Program::layout_state(g.state().iter().map(|s| state_io(s)).collect());
    let state_kind = |name: &str| state.iter().find(|s| s.io.name == name).map(|s| BufferKind::State { offset: s.offset });
    // Where each graph input and output lives: the caller's tensors, or the state buffer.
    let mut input_kind = vec![];
    for p in g.inputs() {
        let t = g.ty(p.node);
        input_kind.push(state_kind(&p.name).unwrap_or_else(|| {
            st.prog.inputs.push(IoSpec { name: p.name.clone(), dtype: t.dtype, shape: t.shape.clone() });
            BufferKind::Input(st.prog.inputs.len() - 1)
        }));
    }
    let mut output_kind = vec![];
    for p in g.outputs() {
        let t = g.ty(p.node);
        output_kind.push(state_kind(&p.name).unwrap_or_else(|| {
            st.prog.outputs.push(IoSpec { name: p.name.clone(), dtype: t.dtype, shape: t.shape.clone() });
            BufferKind::Output(st.prog.outputs.len() - 1)
        }));
    }
    st.prog.state = state;
    st.prog.state_size = state_size;
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
            Op::Input { index } => input_kind[*index].clone(),
            _ if always_inlined(g, n) || matches!(node.op, Op::Constant(_)) => continue,
            _ if plan.is_fused(n) && !direct_output.contains_key(&n) => continue,
            _ => {
                kernel_nodes.push(n);
                match direct_output.get(&n) {
                    Some(&j) => output_kind[j].clone(),
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
        let out = st.new_buffer(output_kind[j].clone(), ty.dtype, ty.num_elements(), &p.name);
        st.copy_into(p.node, out, &format!("copy_{}", p.name))?;
    }
    let (mut prog, aliases) = (st.prog, st.aliases);
    remove_dead_steps(&mut prog, &aliases);
    arena::plan_arena(&mut prog, &aliases);
    prog.link();
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
        live_buf[b] = matches!(buf.kind, BufferKind::Output(_) | BufferKind::State { .. });
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

/// State is updated in place: each state output must be a scatter into its state input, and
/// that scatter the input's only reader (any other reader could run after the update and see
/// the new value instead of the old).
fn check_state_updates(g: &Graph) -> Result<(), IrError> {
    for s in g.state() {
        let port = |ports: &[odc_ir::Port]| ports.iter().find(|p| &p.name == s).map(|p| p.node);
        let (Some(input), Some(output)) = (port(g.inputs()), port(g.outputs())) else {
            return Err(IrError::new(format!("state '{s}' needs both an input and an output")));
        };
        let scatter = matches!(g.node(output).op, Op::ScatterElements { .. } | Op::ScatterNd { .. });
        if !scatter || g.operands(output).first() != Some(&input) || g.use_count(input) != 1 || g.outputs().iter().filter(|p| p.node == output).count() != 1 {
            return Err(IrError::new(format!(
                "state '{s}' must be updated in place: its new value must be one scatter into its old value, which nothing else reads"
            )));
        }
    }
    Ok(())
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
                self.copy_unless_in_place(ops[0], out, &format!("{name}_copy"))?;
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
                self.copy_unless_in_place(ops[0], out, &format!("{name}_copy"))?;
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
}
