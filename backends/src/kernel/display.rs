//! The printed form of a [`Kernel`] (`odc inspect --kernels` and the golden plan tests):
//! buffers, domain, schedule, live nodes and the body. Output format is compared byte for byte;
//! change it only together with the golden files.

use super::{Body, Kernel};
use std::fmt;

impl fmt::Display for Kernel {
    /// A readable dump: buffers, domain, then one line per reachable node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {}", self.name)?;
        for (i, b) in self.bufs.iter().enumerate() {
            writeln!(f, "  buf{i}: {}[{}]", b.dtype, b.len)?;
        }
        let dom: Vec<String> = self.domain.iter().map(|v| format!("v{}<{}", v.0, self.extent(*v))).collect();
        writeln!(f, "  domain: {}", dom.join(", "))?;
        writeln!(f, "  schedule: {}; {} outer iterations", self.schedule, self.outer_extent())?;
        let roots = self.body.roots();
        let mut live = vec![false; self.nodes.len()];
        let mut stack = roots.clone();
        while let Some(e) = stack.pop() {
            if !live[e.0 as usize] {
                live[e.0 as usize] = true;
                stack.extend(self.operands(e));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if live[i] {
                writeln!(f, "  e{i}: {} = {n:?}", self.types[i])?;
            }
        }
        match &self.body {
            Body::Map { stores } => stores.iter().try_for_each(|s| match s.index {
                None => writeln!(f, "  out[domain] = e{}", s.value.0),
                Some(i) => writeln!(f, "  out[e{}] = e{}", i.0, s.value.0),
            }),
            Body::Scatter { index, value } => writeln!(f, "  out[e{}] = e{}", index.0, value.0),
            Body::Gemm(g) => writeln!(
                f,
                "  gemm m={} n={} k={}: A buf{} (base e{}, strides {}x{}, panel {:?}), B buf{} (base e{}, strides {}x{}, panel {:?}); out = e{}",
                g.m, g.n, g.k, g.a.buf, g.a.base.0, g.a.row_stride, g.a.col_stride, g.a.panel, g.b.buf, g.b.base.0,
                g.b.row_stride, g.b.col_stride, g.b.panel, g.epilogue.0
            ),
        }
    }
}
