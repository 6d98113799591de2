//! The lowered program: buffers, the kernels and the steps that run them, and where each step
//! may run and what it waits for.
//!
//! A [`Step`] names a kernel, the buffers it reads and writes, the [`Device`] it runs on and the
//! earlier steps it depends on. [`Program::order`] is the run order, data that a scheduler may
//! change (any order that respects the dependencies computes the same values); the code
//! generator's driver follows it.

use crate::kernel::Kernel;
use odc_ir::{DType, IrError, Tensor};

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
    /// Graph state (see [`odc_ir::Graph::add_state`]) at a fixed offset of the caller's state
    /// buffer: the state's input and output are this one buffer, updated in place.
    State { offset: usize },
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


/// Where a step runs. Only the CPU for now; an NPU delegate adds its own variant, and a step
/// placed there is handed to the delegate instead of called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    #[default]
    Cpu,
}

/// One kernel invocation: `args[slot]` is the buffer for the kernel's slot (slot 0 is the
/// buffer it writes).
#[derive(Clone, Debug)]
pub struct Step {
    pub kernel: usize,
    pub args: Vec<usize>,
    pub device: Device,
    /// Earlier steps (indices into [`Program::steps`]) that must finish first: they write memory
    /// this step reads or writes, or read memory it overwrites (arena reuse included). A step's
    /// write is its whole output buffer, which is conservative: the box kernels of one windowed
    /// op, writing disjoint parts of one buffer, are ordered too. Filled in by [`Program::link`].
    pub deps: Vec<usize>,
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
    /// The run order: a permutation of `0..steps.len()` in which every step comes after its
    /// dependencies.
    pub order: Vec<usize>,
    pub weights: Vec<Tensor>,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    pub arena_size: usize,
    /// The state tensors, in declaration order, each at its offset of the state buffer
    /// ([`StateSpec::offset`], [`ARENA_ALIGN`]-aligned); empty for a stateless program.
    pub state: Vec<StateSpec>,
    /// Bytes of the state buffer (0 without state).
    pub state_size: usize,
}

/// One state tensor and where it lives in the state buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSpec {
    pub io: IoSpec,
    pub offset: usize,
}

impl Program {
    /// Lay out `state` in one buffer (each tensor [`ARENA_ALIGN`]-aligned), in order.
    pub fn layout_state(state: Vec<IoSpec>) -> (Vec<StateSpec>, usize) {
        let mut size = 0usize;
        let specs = state
            .into_iter()
            .map(|io| {
                let offset = size.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
                size = offset + io.dtype.byte_len(io.shape.iter().product());
                StateSpec { io, offset }
            })
            .collect();
        (specs, size.div_ceil(ARENA_ALIGN) * ARENA_ALIGN)
    }
}

/// Alignment of every arena buffer.
pub const ARENA_ALIGN: usize = 64;

/// A buffer's place in memory: which address space (inputs, outputs and weights each one per
/// tensor, the arena one for all temporaries) and the byte range in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    space: (u8, usize),
    start: usize,
    end: usize,
}

impl Region {
    fn of(b: &Buffer) -> Region {
        let len = b.byte_len();
        let (space, start) = match b.kind {
            BufferKind::Input(i) => ((0, i), 0),
            BufferKind::Output(i) => ((1, i), 0),
            BufferKind::Weight(i) => ((2, i), 0),
            BufferKind::Temp { offset } => ((3, 0), offset),
            BufferKind::State { offset } => ((4, 0), offset),
        };
        Region { space, start, end: start + len }
    }

    fn overlaps(&self, o: &Region) -> bool {
        self.space == o.space && self.start < o.end && o.start < self.end && self.start < self.end && o.start < o.end
    }
}

impl Program {
    /// Fill in every step's dependencies from the memory it touches (after the arena is
    /// planned: temporaries that share arena bytes are ordered too), and set the run order to
    /// the order the steps were made in.
    /// Only direct dependencies are kept: one implied by another (`a` before `b` before `c`)
    /// is dropped.
    pub fn link(&mut self) {
        let n = self.steps.len();
        let regions: Vec<Region> = self.buffers.iter().map(Region::of).collect();
        let touched: Vec<(Region, Vec<Region>)> =
            self.steps.iter().map(|s| (regions[s.args[0]], s.args[1..].iter().map(|&b| regions[b]).collect())).collect();
        // reach[i]: every step that step i waits for, directly or not (a bit set).
        let words = n.div_ceil(64);
        let mut reach = vec![vec![0u64; words]; n];
        for i in 0..n {
            let (write, reads) = &touched[i];
            let conflicts = touched[..i].iter().enumerate().filter(|(_, (w, rs))| {
                w.overlaps(write) || reads.iter().any(|r| w.overlaps(r)) || rs.iter().any(|r| r.overlaps(write))
            });
            let mut all: Vec<usize> = conflicts.map(|(j, _)| j).collect();
            all.reverse();
            let (mut covered, mut direct) = (vec![0u64; words], vec![]);
            for d in all {
                if covered[d / 64] >> (d % 64) & 1 == 0 {
                    direct.push(d);
                    covered[d / 64] |= 1 << (d % 64);
                    for (c, r) in covered.iter_mut().zip(&reach[d]) {
                        *c |= r;
                    }
                }
            }
            direct.reverse();
            reach[i] = covered;
            self.steps[i].deps = direct;
        }
        self.order = (0..n).collect();
    }

    /// Check that [`Program::order`] runs every step once, after its dependencies.
    pub fn check_order(&self) -> Result<(), IrError> {
        let n = self.steps.len();
        let mut position = vec![usize::MAX; n];
        for (at, &s) in self.order.iter().enumerate() {
            if s >= n || position[s] != usize::MAX {
                return Err(IrError::new(format!("run order lists step {s} twice or out of range ({n} steps)")));
            }
            position[s] = at;
        }
        if self.order.len() != n {
            return Err(IrError::new(format!("run order has {} of {n} steps", self.order.len())));
        }
        for (s, step) in self.steps.iter().enumerate() {
            if let Some(&d) = step.deps.iter().find(|&&d| position[d] > position[s]) {
                return Err(IrError::new(format!("run order puts step {s} before step {d}, which it depends on")));
            }
        }
        Ok(())
    }

    /// The steps in run order.
    pub fn steps_in_order(&self) -> impl Iterator<Item = &Step> {
        self.order.iter().map(|&i| &self.steps[i])
    }
}
