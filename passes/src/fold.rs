//! Constant folding: replace every sub-graph that depends on no input by its value.
//!
//! All foldable frontier nodes are evaluated in one batch (one compiled program). A node is only
//! folded when its value is not much larger than the constants it is computed from, so
//! broadcasts and iotas stay generators instead of becoming large weights.

use odc_ir::{Evaluator, Graph, IrError, NodeId, Op};
use std::collections::HashMap;

/// Bytes a folded value may exceed its constant inputs by.
const GROWTH_ALLOWANCE: usize = 4096;

/// Fold constant sub-graphs of `g`. Returns the number of nodes replaced.
pub fn fold_constants(g: &mut Graph, eval: &dyn Evaluator) -> Result<usize, IrError> {
    let order = g.topo_order();
    // For each node: is it constant, and how many bytes of stored constants feed it.
    let mut constant: HashMap<NodeId, bool> = HashMap::new();
    let mut source_bytes: HashMap<NodeId, usize> = HashMap::new();
    for &n in &order {
        let node = g.node(n);
        let (c, bytes) = match &node.op {
            Op::Input { .. } => (false, 0),
            Op::Constant(t) => (true, t.data.len()),
            Op::Iota { .. } => (true, 0),
            _ => {
                let ops = g.operands(n);
                let c = ops.iter().all(|o| constant[o]);
                let b = ops.iter().map(|o| source_bytes[o]).sum();
                (c, b)
            }
        };
        constant.insert(n, c);
        source_bytes.insert(n, bytes);
    }
    // Frontier: constant, computed nodes read by a non-constant node or by an output.
    let mut frontier = vec![];
    for &n in &order {
        let node = g.node(n);
        if !constant[&n] || matches!(node.op, Op::Constant(_) | Op::Iota { .. }) {
            continue;
        }
        let read_by_runtime = g.users(n).iter().any(|u| !constant[u]) || g.is_output(n);
        if !read_by_runtime {
            continue;
        }
        if node.ty.byte_len() > source_bytes[&n] + GROWTH_ALLOWANCE {
            continue;
        }
        frontier.push(n);
    }
    if frontier.is_empty() {
        return Ok(0);
    }
    let values = eval.evaluate(g, &frontier)?;
    for (n, t) in frontier.iter().zip(values) {
        let name = g.node(*n).name.clone();
        let c = g.constant(t, &name);
        g.replace_uses(*n, c);
    }
    g.remove_dead();
    Ok(frontier.len())
}
