//! Schedules: how each kernel's loop nest runs on the target.
//!
//! As in Halide, the algorithm and its schedule are kept apart: a kernel's [`Body`] says what is
//! computed, its [`Schedule`] how: the GEMM register tile and cache blocks, the vector width,
//! the unrolling, the loop order and the loop split across threads. The heuristics that choose
//! them live here, each with its reasoning, and read only the kernel's shapes and a [`Machine`]
//! description of the target. The lowering asks for a GEMM's tile before packing its weights
//! (the packed layout depends on it); [`schedule_program`] fills in everything else after
//! lowering. The code generator obeys a schedule and never makes these choices itself.
//!
//! Loop order (fixed by body kind, recorded in [`LoopOrder`]):
//! - a map runs its output axes outermost first, so the innermost loop (the vector loop)
//!   walks the output's contiguous axis and stores whole vectors;
//! - a GEMM runs `k` blocks ⊃ row blocks of `mc` ⊃ column blocks of `nr` (over the batch) ⊃
//!   row tiles of `mr` ⊃ `k` steps: an `mc x kc` block of A stays in L2 while every column
//!   block passes over it, and a `kc x nr` sliver of B stays in L1 across the row tiles.

use crate::kernel::{Body, Kernel};
// The schedule's data types belong to the kernel IR (a kernel carries its schedule); they are
// re-exported here, where they have always been named.
pub use crate::kernel::{GemmTile, LoopOrder, Parallel, Schedule, UNROLL_REDUCE};

/// What the scheduler knows about a target's core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    /// f32 lanes per SIMD register: 4 (128-bit SSE/AVX and NEON, all Cranelift emits), or 1
    /// without SIMD.
    pub lanes: usize,
    /// Registers a GEMM microkernel may keep live: SIMD registers, or FP registers without SIMD.
    pub registers: usize,
    /// The multiply-accumulate writes its accumulator in place (aarch64 `fmla`). Otherwise
    /// (x86_64's `vfmadd213` overwrites a multiplicand, `vmulps` + `vaddps` write a product; see
    /// `CodegenOptions::gemm_fma`) each product needs a scratch register.
    pub fma_in_place: bool,
    /// A's elements are loaded `lanes` rows at a time and used by lane (aarch64's `fmla` by
    /// element); otherwise each row is broadcast into one register.
    pub a_by_lane: bool,
    /// Vector multiply-adds and loads the core issues per cycle.
    pub fma_per_cycle: usize,
    pub loads_per_cycle: usize,
    /// How far a GEMM microkernel's `k` loop is unrolled: [`K_UNROLL`] where the accumulators
    /// stay in their registers, [`K_UNROLL_ROTATING`] with x86_64's `vfmadd213`, which writes
    /// each product into the fresh A broadcast: the accumulators then rotate through the
    /// register file, and the loop's back edge moves them back (spilling some in the 6x8 tile).
    pub k_unroll: usize,
}

impl Machine {
    /// x86_64 with FMA: 16 xmm registers, two FMA-rate pipe pairs, two load ports.
    pub const X86_64: Machine =
        Machine { lanes: 4, registers: 16, fma_in_place: false, a_by_lane: false, fma_per_cycle: 2, loads_per_cycle: 2, k_unroll: K_UNROLL_ROTATING };
    /// x86_64 without FMA (`vmulps` + `vaddps`): the add accumulates in place, nothing rotates.
    pub const X86_64_NO_FMA: Machine = Machine { k_unroll: K_UNROLL, ..Machine::X86_64 };
    /// aarch64 (NEON): 32 v-registers, `fmla` by element.
    pub const AARCH64: Machine =
        Machine { lanes: 4, registers: 32, fma_in_place: true, a_by_lane: true, fma_per_cycle: 2, loads_per_cycle: 2, k_unroll: K_UNROLL };
    /// No SIMD (riscv64 without V): 24 of the 32 f-registers (the rest stay free for the
    /// epilogue and address arithmetic), one FMA and one load per cycle.
    pub const SCALAR: Machine =
        Machine { lanes: 1, registers: 24, fma_in_place: true, a_by_lane: false, fma_per_cycle: 1, loads_per_cycle: 1, k_unroll: K_UNROLL };
}

/// Estimated single-thread time below which a kernel runs on the calling thread only: handing
/// half of a loop to a polling pool thread and joining it costs one to two microseconds
/// (`odc bench --threads 2` on the MLP: its 13 us layer gained from the split, 20 us was too high).
pub const PARALLEL_MIN_NS: f64 = 6_000.0;

/// A map's parallel loop is made of its outer loops flattened until it has at least this many
/// iterations (or only the innermost loop is left), so that two to four threads get near-equal
/// shares: splitting a 3-channel image by channel leaves one of two threads idle a third of the
/// time.
pub const PARALLEL_MIN_ITERATIONS: i64 = 64;

/// The microkernel's `k` unroll: enough independent loads in flight per step, small code.
pub const K_UNROLL: usize = 4;
/// The `k` unroll when the multiply-add rotates the accumulators (x86_64 `vfmadd213`): the
/// back edge's moves and spills are paid once per 8 steps instead of 4. `gemm_bench --shapes
/// 24x32x128,256x196x1152,512x49x512,64x3136x576` on a Xeon (AVX-512 host, 2026-12-02, best of
/// 8 alternating runs): 33.0 -> 38.8, 34.7 -> 39.9, 32.2 -> 36.6, 34.2 -> 38.0 GFLOP/s; 12 and
/// 16 measured the same as 8, 6 in between.
pub const K_UNROLL_ROTATING: usize = 8;

/// Bytes of A kept in L2 per block (conservative for phone cores).
const L2_BLOCK_BYTES: usize = 256 * 1024;
/// `k` block length aimed at when `k` is split: a `kc x nr` sliver of B is 8 KB at `nr` 8, and
/// read in place from an unpadded activation (rows straddling cache lines) it still fits L1
/// (384 measured 5% slower on resnet50's 512x49x4608 layers).
const KC_TARGET: usize = 256;
/// `k` up to this length runs unblocked.
const KC_MAX_UNBLOCKED: usize = 512;

/// The register tile `(mr, nr)` for `machine`: the tile with the highest multiply-add rate per
/// cycle, where a step of `k` costs `mr * nr / lanes` multiply-adds and `nr / lanes` B loads
/// plus `mr` A broadcasts (`mr / lanes` vector loads when A is used by lane), issued at the
/// machine's rates; ties go to more accumulators (more reuse per load), then fewer loads, then
/// wider tiles. Only tiles whose accumulators, B vectors, A registers and scratch fit the
/// register file are considered, with `nr` a multiple of 4 (the int8 dot-product panels and the
/// f32x4 vectors both want it). This gives 6x8 on x86_64 (12 accumulators + 2 B + 1 broadcast +
/// 1 scratch = 16 xmm), 8x12 on aarch64 (24 + 3 + 2 = 29 of 32) and 4x4 without SIMD.
pub fn register_tile(machine: &Machine) -> (usize, usize) {
    let lanes = machine.lanes.max(1);
    let mut best: Option<((f64, usize, i64, usize), (usize, usize))> = None;
    for nr in (4..=16).step_by(4) {
        let nv = nr / lanes;
        for mr in 1..=16 {
            if machine.a_by_lane && mr % lanes != 0 {
                continue;
            }
            let acc = mr * nv;
            let a_regs = if machine.a_by_lane { mr / lanes } else { 1 };
            let scratch = usize::from(!machine.fma_in_place);
            if acc + nv + a_regs + scratch > machine.registers {
                continue;
            }
            let loads = nv + if machine.a_by_lane { mr / lanes } else { mr };
            let cycles = (acc as f64 / machine.fma_per_cycle as f64).max(loads as f64 / machine.loads_per_cycle as f64);
            let key = (acc as f64 / cycles, acc, -(loads as i64), nr);
            if best.as_ref().is_none_or(|(k, _)| key.partial_cmp(k) == Some(std::cmp::Ordering::Greater)) {
                best = Some((key, (mr, nr)));
            }
        }
    }
    best.map_or((4, 4), |(_, t)| t)
}

/// The cache blocking (`kc`, `mc`) of an `m x k` A with register tile `mr`: `k` unblocked up to
/// 512 or for a single row tile, else split into near-equal blocks of about 256 (a multiple of
/// 4); rows unblocked while `m x kc` floats fit the L2 block, else the largest multiple of `mr`
/// that does.
pub fn cache_blocks(m: usize, k: usize, mr: usize) -> (usize, usize) {
    // One row tile (a matrix-vector product) reuses no B sliver: blocking `k` would only add
    // partial-sum round trips.
    let kc = if k <= KC_MAX_UNBLOCKED || m <= mr {
        k
    } else {
        let blocks = k.div_ceil(KC_TARGET);
        k.div_ceil(blocks).div_ceil(4) * 4
    };
    let rows = (L2_BLOCK_BYTES / (4 * kc.max(1))).max(mr);
    let mc = if m <= rows { m } else { (rows / mr).max(1) * mr };
    (kc, mc)
}

/// The tile of an f32 GEMM with an `m x k` A on `machine` (`(mr, nr)` forced when given).
pub fn gemm_tile(m: usize, k: usize, machine: &Machine, forced: Option<(usize, usize)>) -> GemmTile {
    let (mr, nr) = forced.unwrap_or_else(|| register_tile(machine));
    let (kc, mc) = cache_blocks(m, k, mr);
    GemmTile { mr, nr, k_unroll: machine.k_unroll, kc, mc }
}

/// The tile of an 8-bit GEMM: no `k` blocking, since partial sums would need an i32 output.
/// It unrolls `k` by [`K_UNROLL`]: its dot products end in an integer add (`vpdpbusd`, `sdot`)
/// that accumulates in place, so nothing rotates.
pub fn int8_gemm_tile(m: usize, k4: usize, machine: &Machine, forced: Option<(usize, usize)>) -> GemmTile {
    GemmTile { kc: k4, k_unroll: K_UNROLL, ..gemm_tile(m, k4, machine, forced) }
}

/// Complete `k`'s schedule (its GEMM tile, if any, was chosen at lowering):
/// - vectors of `machine.lanes` on the innermost output loop when the kernel writes f32 and
///   that loop has at least `lanes` iterations (a GEMM: when B's columns are contiguous);
/// - the outer loop split across threads when that is safe, has at least two iterations, and
///   the estimated work exceeds [`PARALLEL_MIN_NS`]; a map's outer loops are flattened into
///   the parallel loop up to [`PARALLEL_MIN_ITERATIONS`].
pub fn schedule_kernel(k: &Kernel, machine: &Machine) -> Schedule {
    let lanes = machine.lanes.max(1);
    let f32_out = k.bufs[0].dtype == odc_ir::DType::F32;
    let (order, vector) = match &k.body {
        Body::Map { .. } => {
            let inner = *k.domain.last().expect("a kernel has at least one loop");
            (LoopOrder::OutputAxes, f32_out && k.extent(inner) >= lanes as i64)
        }
        Body::Gemm(g) => (LoopOrder::GemmBlocked, g.b.col_stride == 1),
        Body::Scatter { .. } => (LoopOrder::UpdateAxes, false),
    };
    let parallel = match &k.body {
        _ if !k.parallel_safe() || k.estimated_ns() < PARALLEL_MIN_NS => Parallel::Sequential,
        Body::Gemm(_) if k.gemm_column_blocks() >= 2 => Parallel::ColumnBlocks,
        Body::Gemm(_) => Parallel::Sequential,
        _ => {
            let (mut loops, mut iterations) = (1, k.extent(k.domain[0]));
            while iterations < PARALLEL_MIN_ITERATIONS && loops + 1 < k.domain.len() {
                iterations *= k.extent(k.domain[loops]);
                loops += 1;
            }
            if iterations < 2 { Parallel::Sequential } else { Parallel::Outer { loops } }
        }
    };
    Schedule { order, parallel, vector_lanes: if vector { lanes } else { 1 }, unroll_reduce: UNROLL_REDUCE, tile: k.schedule.tile }
}

/// Schedule every kernel of a lowered program.
pub fn schedule_program(prog: &mut crate::Program, machine: &Machine) {
    for k in &mut prog.kernels {
        k.schedule = schedule_kernel(k, machine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_tiles_fit_each_register_file() {
        assert_eq!(register_tile(&Machine::X86_64), (6, 8));
        assert_eq!(register_tile(&Machine::AARCH64), (8, 12));
        assert_eq!(register_tile(&Machine::SCALAR), (4, 4));
        // A bigger register file buys a bigger tile.
        let wide = Machine { registers: 32, ..Machine::X86_64 };
        let (mr, nr) = register_tile(&wide);
        assert!(mr * nr > 48, "{mr}x{nr}");
    }

    #[test]
    fn cache_blocks_split_long_k_and_tall_a() {
        assert_eq!(cache_blocks(128, 256, 6), (256, 128));
        // k = 4608 → 18 blocks of 256; 256 KB / (4 * 256) = 256 rows → 252 (a multiple of 6).
        assert_eq!(cache_blocks(512, 4608, 6), (256, 252));
        let (kc, _) = cache_blocks(64, 1000, 6);
        assert_eq!(kc % 4, 0);
        assert!(kc * 4 >= 1000 && kc < 1000);
        // A matrix-vector product keeps its k whole.
        assert_eq!(cache_blocks(1, 784, 6), (784, 1));
    }
}
