//! What lowering, the scheduler and the code generator ask of a finished [`Kernel`]: node
//! accessors, the split loop's extent, GEMM shape and tile, in-place safety and a run-time
//! estimate. Read-only: nothing here builds nodes or changes the schedule.

use super::{operands, Body, Expr, GemmTile, KBinary, Kernel, Parallel, Var, E};
use super::int_value;
use odc_ir::DType;

impl Kernel {
    pub fn node(&self, e: E) -> &Expr {
        &self.nodes[e.0 as usize]
    }
    pub fn ty(&self, e: E) -> DType {
        self.types[e.0 as usize]
    }
    pub fn extent(&self, v: Var) -> i64 {
        self.var_extents[v.0 as usize]
    }
    /// Number of points in the domain.
    pub fn domain_size(&self) -> i64 {
        self.domain.iter().map(|&v| self.extent(v)).product()
    }

    /// Iterations of the loop split across threads (the range `lo..hi` the kernel function
    /// takes): a GEMM's batch points times column blocks, else the schedule's flattened outer
    /// loops (the outermost loop alone when sequential).
    pub fn outer_extent(&self) -> i64 {
        match &self.body {
            Body::Gemm(_) => self.gemm_column_blocks(),
            _ => self.domain[..self.flattened_outer_loops()].iter().map(|&v| self.extent(v)).product(),
        }
    }

    /// A GEMM's batch points times its column blocks of the tile's width.
    pub fn gemm_column_blocks(&self) -> i64 {
        let Body::Gemm(g) = &self.body else { return 0 };
        let batch: i64 = self.domain[..self.domain.len() - 2].iter().map(|&v| self.extent(v)).product();
        batch * g.n.div_ceil(self.gemm_tile().nr) as i64
    }

    /// Outer loops flattened into the first loop of the kernel function.
    pub fn flattened_outer_loops(&self) -> usize {
        match self.schedule.parallel {
            Parallel::Outer { loops, .. } => loops,
            _ => 1,
        }
    }

    /// The tile of a GEMM kernel (chosen at lowering, see [`crate::schedule::gemm_tile`]).
    pub fn gemm_tile(&self) -> GemmTile {
        self.schedule.tile.expect("GEMM kernels are lowered with a tile")
    }
    /// Operands of a node.
    pub fn operands(&self, e: E) -> Vec<E> {
        operands(self.node(e))
    }
    /// `e` as `sum(coef * var) + constant` when it is built from vars, integer constants, adds,
    /// subtracts and constant multiples.
    fn linear_form(&self, e: E) -> Option<(std::collections::BTreeMap<u32, i64>, i64)> {
        match *self.node(e) {
            Expr::Var(v) => Some((std::iter::once((v.0, 1)).collect(), 0)),
            Expr::Const(t, bits) if !t.is_float() && t != DType::Bool => Some((Default::default(), int_value(t, bits))),
            Expr::Binary(op @ (KBinary::Add | KBinary::Sub), a, b) => {
                let (mut la, ka) = self.linear_form(a)?;
                let (lb, kb) = self.linear_form(b)?;
                let s = if op == KBinary::Add { 1 } else { -1 };
                for (v, c) in lb {
                    *la.entry(v).or_insert(0) += s * c;
                }
                la.retain(|_, c| *c != 0);
                Some((la, ka + s * kb))
            }
            Expr::Binary(KBinary::Mul, a, b) => {
                let (la, ka) = self.linear_form(a)?;
                let (lb, kb) = self.linear_form(b)?;
                let (l, k, c) = if la.is_empty() { (lb, kb, ka) } else if lb.is_empty() { (la, ka, kb) } else { return None };
                Some((l.into_iter().map(|(v, x)| (v, x * c)).filter(|(_, x)| *x != 0).collect(), k * c))
            }
            _ => None,
        }
    }

    /// True when this is a plain map (one store at the row-major index of the domain point) that
    /// reads buffer `slot` only at that same index: its output may then overwrite `slot` in
    /// place (each element is read before it is written, by the same lane).
    pub fn reads_only_at_store_index(&self, slot: u32) -> bool {
        let Body::Map { stores } = &self.body else { return false };
        if stores.len() != 1 || stores[0].index.is_some() {
            return false;
        }
        let mut want = std::collections::BTreeMap::new();
        let mut stride = 1i64;
        for &v in self.domain.iter().rev() {
            if self.extent(v) > 1 {
                want.insert(v.0, stride);
            }
            stride *= self.extent(v);
        }
        let mut live = vec![false; self.nodes.len()];
        let mut stack = self.body.roots();
        let mut any = false;
        while let Some(e) = stack.pop() {
            if std::mem::replace(&mut live[e.0 as usize], true) {
                continue;
            }
            if let Expr::Load { buf, index } = *self.node(e) {
                if buf == slot {
                    any = true;
                    match self.linear_form(index) {
                        Some((l, 0)) if l == want => {}
                        _ => return false,
                    }
                }
            }
            stack.extend(self.operands(e));
        }
        any
    }

    /// `(m, n, k, batch)` of a GEMM kernel.
    pub fn gemm_shape(&self) -> Option<(usize, usize, usize, usize)> {
        let Body::Gemm(g) = &self.body else { return None };
        let batch: i64 = self.domain[..self.domain.len() - 2].iter().map(|&v| self.extent(v)).product();
        Some((g.m, g.n, g.k, batch as usize))
    }

    /// True when the outermost loop may be split across threads.
    pub fn parallel_safe(&self) -> bool {
        matches!(self.body, Body::Map { .. } | Body::Gemm(_)) && !self.bufs[0].dtype.is_packed()
    }

    /// A rough single-thread run time in nanoseconds: GEMM flops at ~40 GFLOP/s; otherwise
    /// domain points times live expression nodes times the reduction extents, at ~4 per ns.
    pub fn estimated_ns(&self) -> f64 {
        if let Some((m, n, k, b)) = self.gemm_shape() {
            return 2.0 * (m * n * k * b) as f64 / 40.0;
        }
        let mut live = vec![false; self.nodes.len()];
        let mut stack = self.body.roots();
        while let Some(e) = stack.pop() {
            if !std::mem::replace(&mut live[e.0 as usize], true) {
                stack.extend(self.operands(e));
            }
        }
        let nodes = live.iter().filter(|&&l| l).count() as f64;
        let reduce: f64 = self
            .nodes
            .iter()
            .zip(&live)
            .filter_map(|(n, &l)| match n {
                Expr::Reduce { var, .. } if l => Some(self.extent(*var) as f64),
                _ => None,
            })
            .product();
        self.domain_size() as f64 * nodes * reduce / 4.0
    }

    /// Split across the thread pool (decided by the schedule).
    pub fn is_parallel(&self) -> bool {
        self.schedule.parallel != Parallel::Sequential
    }
}
