//! The schedule a kernel carries, as plain data: GEMM tile and cache blocks, the parallel split,
//! loop order, vector width and reduction unroll, with its default and printed form. The
//! heuristics that choose these values live in [`crate::schedule`], which depends on this
//! module; nothing here may depend on the scheduler.

use std::fmt;

/// The register tile and cache blocking of a GEMM kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTile {
    /// Rows of A per microkernel.
    pub mr: usize,
    /// Columns of B per microkernel (a multiple of 4).
    pub nr: usize,
    /// How far the microkernel's `k` loop is unrolled.
    pub k_unroll: usize,
    /// `k` block length (partial sums are kept in the output between blocks).
    pub kc: usize,
    /// Rows per L2 block of A.
    pub mc: usize,
}

/// The loop split across the thread pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallel {
    /// Runs on the calling thread: not safe to split (a scatter, a packed output) or too
    /// little work to repay waking the other threads.
    Sequential,
    /// A map's outermost `loops` loops, flattened into one.
    Outer { loops: usize },
    /// A GEMM's (batch point, column block) pairs.
    ColumnBlocks,
}

/// The loop nest's shape (the orders are described in [`crate::schedule`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopOrder {
    /// Output axes outermost first.
    OutputAxes,
    /// `k` blocks, row blocks, column blocks, row tiles, `k` steps.
    GemmBlocked,
    /// Update points in order (scatters run sequentially).
    UpdateAxes,
}

/// How one kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub order: LoopOrder,
    pub parallel: Parallel,
    /// Lanes of the innermost output loop (of a GEMM's column vectors): 4 or 1 (scalar).
    pub vector_lanes: usize,
    /// Reductions of at most this many steps are fully unrolled.
    pub unroll_reduce: i64,
    /// A GEMM's tile; `None` for other kernels.
    pub tile: Option<GemmTile>,
}

impl Default for Schedule {
    /// Sequential and scalar: correct for every kernel, fast for none.
    fn default() -> Self {
        Schedule { order: LoopOrder::OutputAxes, parallel: Parallel::Sequential, vector_lanes: 1, unroll_reduce: UNROLL_REDUCE, tile: None }
    }
}

/// Reductions of at most this many steps (convolution and pooling windows) are unrolled, so
/// their indices become constants and their loads plain offsets.
pub const UNROLL_REDUCE: i64 = 8;

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parallel {
            Parallel::Sequential => write!(f, "sequential")?,
            Parallel::Outer { loops: 1 } => write!(f, "parallel outer loop")?,
            Parallel::Outer { loops } => write!(f, "parallel outer {loops} loops flattened")?,
            Parallel::ColumnBlocks => write!(f, "parallel column blocks")?,
        }
        write!(f, ", vector {}", self.vector_lanes)?;
        match self.tile {
            Some(t) => write!(f, ", tile {}x{}, k unroll {}, kc {}, mc {}", t.mr, t.nr, t.k_unroll, t.kc, t.mc),
            None => write!(f, ", unroll reductions <= {}", self.unroll_reduce),
        }
    }
}
