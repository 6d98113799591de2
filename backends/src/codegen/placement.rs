//! Node placement: the free variables of every live node and its *home*, the innermost loop
//! among them, where the emitters compute it (so invariant work is hoisted by construction).
//! Analysis only; it emits no code.

use crate::kernel::{Expr, Kernel, Var, E};
use std::collections::HashMap;

/// Free variables, homes and loop depths of a kernel's nodes.
pub(crate) struct Analysis {
    pub(super) free: Vec<Vec<Var>>,
    pub(super) by_home: HashMap<Option<Var>, Vec<E>>,
}

pub(super) fn analyse(k: &Kernel) -> Analysis {
    let n = k.nodes.len();
    let mut live = vec![false; n];
    let roots = k.body.roots();
    let mut stack = roots;
    while let Some(e) = stack.pop() {
        if !live[e.0 as usize] {
            live[e.0 as usize] = true;
            stack.extend(k.operands(e));
        }
    }
    // Free variables, bottom-up (operands precede users in the arena).
    let mut free: Vec<Vec<Var>> = vec![vec![]; n];
    for i in 0..n {
        if !live[i] {
            continue;
        }
        let e = E(i as u32);
        let mut f: Vec<Var> = match k.node(e) {
            Expr::Var(v) => vec![*v],
            // The accumulator varies with the GEMM's (i, j): the last two domain variables.
            Expr::Acc => k.domain[k.domain.len().saturating_sub(2)..].to_vec(),
            _ => k.operands(e).iter().flat_map(|o| free[o.0 as usize].iter().copied()).collect(),
        };
        if let Expr::Reduce { var, .. } = k.node(e) {
            f.retain(|v| v != var);
        }
        f.sort_unstable();
        f.dedup();
        free[i] = f;
    }
    // Loop depths: output vars by position, reduce vars one below the reduce's home (users first).
    let mut depth: HashMap<Var, u32> = HashMap::new();
    for (i, v) in k.domain.iter().enumerate() {
        depth.insert(*v, i as u32 + 1);
    }
    for i in (0..n).rev() {
        if !live[i] {
            continue;
        }
        if let Expr::Reduce { var, .. } = k.nodes[i] {
            let d = free[i].iter().map(|v| depth[v]).max().unwrap_or(0);
            depth.insert(var, d + 1);
        }
    }
    let mut by_home: HashMap<Option<Var>, Vec<E>> = HashMap::new();
    for i in 0..n {
        if !live[i] {
            continue;
        }
        let h = free[i].iter().copied().max_by_key(|v| depth[v]);
        by_home.entry(h).or_default().push(E(i as u32));
    }
    Analysis { free, by_home }
}
