//! Extraction: one e-node per needed e-class, minimising the total cost of the resulting DAG.
//!
//! egg's `Extractor` minimises *tree* cost: a class read by two parents is paid twice, so on a
//! residual network the trunk's cost doubles at every block and shared tensors look expensive
//! to keep. [`extract_dag`] starts from that tree-cost choice and improves it under the true DAG
//! cost (every reachable class paid once): for each class it tries each alternative and keeps
//! it when the exact change in total cost (new node, plus classes that become reachable, minus
//! classes no longer reachable, tracked with reference counts) is negative. Passes repeat until
//! nothing improves. [`extract_exact`] enumerates every choice (small e-graphs only) and is the
//! reference the tests compare against.

use super::lang::{ONode, OGraph};
use egg::{Id, Language};
use std::collections::HashMap;

/// The chosen e-node index per class, and the DAG cost.
#[derive(Clone, Debug)]
pub struct Extraction {
    pub choice: HashMap<Id, ONode>,
    pub cost: f64,
}

/// A dense copy of the e-graph for extraction: canonical classes, their nodes with canonical
/// children and costs.
pub struct Problem {
    pub ids: Vec<Id>,
    index: HashMap<Id, usize>,
    /// Per class: (node, children as class indices, cost).
    pub nodes: Vec<Vec<(ONode, Vec<usize>, f64)>>,
    pub roots: Vec<usize>,
}

impl Problem {
    pub fn new(eg: &OGraph, roots: &[Id], cost: &dyn Fn(Id, &ONode) -> f64) -> Problem {
        let ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
        let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let nodes = ids
            .iter()
            .map(|&c| {
                eg[c]
                    .nodes
                    .iter()
                    .map(|n| {
                        let ch = n.children().iter().map(|&x| index[&eg.find(x)]).collect();
                        // A tiny per-node cost keeps zero-cost cycles (x = x + 0) from being chosen.
                        (n.clone(), ch, cost(c, n) + 1e-6)
                    })
                    .collect()
            })
            .collect();
        let roots = roots.iter().map(|&r| index[&eg.find(r)]).collect();
        Problem { ids, index, nodes, roots }
    }

    pub fn index_of(&self, id: Id) -> Option<usize> {
        self.index.get(&id).copied()
    }

    fn parents(&self) -> Vec<Vec<usize>> {
        let mut p = vec![vec![]; self.ids.len()];
        for (c, ns) in self.nodes.iter().enumerate() {
            for (_, ch, _) in ns {
                for &x in ch {
                    p[x].push(c);
                }
            }
        }
        for v in &mut p {
            v.sort_unstable();
            v.dedup();
        }
        p
    }

    /// Minimal tree cost per class (egg's extraction), as node indices.
    pub fn tree_choice(&self) -> Option<Vec<usize>> {
        let n = self.ids.len();
        let parents = self.parents();
        let mut best: Vec<(f64, usize)> = vec![(f64::INFINITY, usize::MAX); n];
        let mut queue: std::collections::VecDeque<usize> = (0..n).collect();
        let mut queued = vec![true; n];
        while let Some(c) = queue.pop_front() {
            queued[c] = false;
            for (k, (_, ch, cost)) in self.nodes[c].iter().enumerate() {
                let mut total = *cost;
                for &x in ch {
                    total += best[x].0;
                }
                if total < best[c].0 * (1.0 - 1e-12) - 1e-12 {
                    best[c] = (total, k);
                    for &p in &parents[c] {
                        if !queued[p] {
                            queued[p] = true;
                            queue.push_back(p);
                        }
                    }
                }
            }
        }
        if self.roots.iter().any(|&r| best[r].1 == usize::MAX) {
            return None;
        }
        Some(best.into_iter().map(|(_, k)| k).collect())
    }

    /// Total cost of the DAG that `choice` selects from the roots (each class once); `None` when
    /// the selection has a cycle or an unchosen class.
    pub fn dag_cost(&self, choice: &[usize]) -> Option<f64> {
        let mut state = vec![0u8; self.ids.len()]; // 0 new, 1 on stack, 2 done
        let mut total = 0.0;
        let mut stack: Vec<(usize, bool)> = self.roots.iter().map(|&r| (r, false)).collect();
        while let Some((c, exit)) = stack.pop() {
            if exit {
                state[c] = 2;
                continue;
            }
            match state[c] {
                2 => continue,
                1 => return None,
                _ => {}
            }
            let k = *choice.get(c)?;
            let (_, ch, cost) = self.nodes[c].get(k)?;
            state[c] = 1;
            total += cost;
            stack.push((c, true));
            for &x in ch {
                if state[x] == 1 {
                    return None;
                }
                if state[x] == 0 {
                    stack.push((x, false));
                }
            }
        }
        Some(total)
    }

    fn to_extraction(&self, choice: &[usize]) -> Option<Extraction> {
        let cost = self.dag_cost(choice)?;
        let mut map = HashMap::new();
        let mut stack: Vec<usize> = self.roots.clone();
        while let Some(c) = stack.pop() {
            if map.contains_key(&self.ids[c]) {
                continue;
            }
            let (n, ch, _) = &self.nodes[c][choice[c]];
            map.insert(self.ids[c], n.clone());
            stack.extend(ch.iter().copied());
        }
        Some(Extraction { choice: map, cost })
    }
}

/// egg-style tree-cost extraction (the baseline the DAG extractor improves on).
pub fn extract_tree(p: &Problem) -> Option<Extraction> {
    p.to_extraction(&p.tree_choice()?)
}

/// DAG-aware extraction: tree-cost start, then exact-delta local improvement.
pub fn extract_dag(p: &Problem) -> Option<Extraction> {
    let choice = p.tree_choice()?;
    let n = p.ids.len();
    // Reference counts of the current selection, and a level per class (children strictly
    // lower), which proves a switch cannot create a cycle.
    let mut refs = vec![0u32; n];
    for &r in &p.roots {
        refs[r] += 1;
    }
    let mut order = topo_order(p, &choice);
    for &c in &order {
        for &x in &p.nodes[c][choice[c]].1 {
            refs[x] += 1;
        }
    }
    let level = levels(p, &choice);
    let parents = p.parents();
    let mut st = State { choice, refs, log: vec![], changed: vec![], level, parents };
    for _pass in 0..8 {
        let mut improved = false;
        // Single switches: one class changes its node.
        for &c in order.iter().rev() {
            if st.refs[c] == 0 || p.nodes[c].len() < 2 {
                continue;
            }
            for k in 0..p.nodes[c].len() {
                if k == st.choice[c] {
                    continue;
                }
                if let Some(delta) = st.switch(p, c, k) {
                    improved |= st.settle(delta);
                }
            }
        }
        // Shared values: keep class `x` stored and let every reader switch to reading it (a
        // move no single switch finds: the first reader alone pays for the store).
        for x in 0..n {
            let readers: Vec<usize> = st.parents[x].iter().copied().filter(|&r| st.refs[r] > 0).collect();
            if readers.len() < 2 || st.choice[x] == usize::MAX {
                continue;
            }
            let mut delta = add_ref(p, &st.choice, &mut st.refs, &mut st.log, x);
            for &r in &readers {
                let mut best: Option<(f64, usize)> = None;
                for k in 0..p.nodes[r].len() {
                    if k == st.choice[r] || !p.nodes[r][k].1.contains(&x) {
                        continue;
                    }
                    let mark = st.mark();
                    let d = st.switch(p, r, k);
                    st.undo_to(mark);
                    if let Some(d) = d.filter(|&d| d < best.map_or(0.0, |b| b.0)) {
                        best = Some((d, k));
                    }
                }
                if let Some((_, k)) = best {
                    delta += st.switch(p, r, k).expect("checked above");
                }
            }
            delta -= drop_ref(p, &st.choice, &mut st.refs, &mut st.log, x);
            improved |= st.settle(delta);
        }
        if !improved {
            break;
        }
        // Classes newly reachable join the visiting order.
        order = topo_order(p, &st.choice);
    }
    p.to_extraction(&st.choice)
}

/// The selection being improved, with an undo log of reference-count and choice changes, and
/// a level per class that strictly decreases along every chosen edge (so a path between two
/// classes can only pass through levels in between; levels only ever rise).
struct State {
    choice: Vec<usize>,
    refs: Vec<u32>,
    log: Vec<(usize, i32)>,
    changed: Vec<(usize, usize)>,
    level: Vec<u32>,
    parents: Vec<Vec<usize>>,
}

impl State {
    fn mark(&self) -> (usize, usize) {
        (self.log.len(), self.changed.len())
    }
    fn undo_to(&mut self, (l, c): (usize, usize)) {
        while self.log.len() > l {
            let (x, d) = self.log.pop().expect("log entry");
            self.refs[x] = (self.refs[x] as i32 - d) as u32;
        }
        while self.changed.len() > c {
            let (x, k) = self.changed.pop().expect("change entry");
            self.choice[x] = k;
        }
    }
    /// True when some child of node `k` of class `c` reaches `c` through chosen nodes.
    fn creates_cycle(&self, p: &Problem, c: usize, k: usize) -> bool {
        let lc = self.level[c];
        let mut stack: Vec<usize> = p.nodes[c][k].1.iter().copied().filter(|&x| x == c || self.level[x] > lc).collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(y) = stack.pop() {
            if y == c {
                return true;
            }
            if !seen.insert(y) || self.choice[y] == usize::MAX {
                continue;
            }
            stack.extend(p.nodes[y][self.choice[y]].1.iter().copied().filter(|&x| x == c || self.level[x] > lc));
        }
        false
    }

    /// Restore the level invariant after class `c` changed its node.
    fn raise(&mut self, p: &Problem, c: usize) {
        let need = 1 + p.nodes[c][self.choice[c]].1.iter().map(|&x| self.level[x]).max().unwrap_or(0);
        if self.level[c] >= need {
            return;
        }
        self.level[c] = need;
        let mut stack = vec![c];
        while let Some(y) = stack.pop() {
            for i in 0..self.parents[y].len() {
                let q = self.parents[y][i];
                let k = self.choice[q];
                if k != usize::MAX && self.level[q] <= self.level[y] && p.nodes[q][k].1.contains(&y) {
                    self.level[q] = self.level[y] + 1;
                    stack.push(q);
                }
            }
        }
    }

    /// Switch class `c` to node `k`; returns the change in DAG cost, or `None` (and changes
    /// nothing) when the switch would create a cycle.
    fn switch(&mut self, p: &Problem, c: usize, k: usize) -> Option<f64> {
        if p.nodes[c][k].1.iter().any(|&x| self.choice[x] == usize::MAX) || self.creates_cycle(p, c, k) {
            return None;
        }
        let cur = self.choice[c];
        let mut delta = p.nodes[c][k].2 - p.nodes[c][cur].2;
        for &x in &p.nodes[c][k].1 {
            delta += add_ref(p, &self.choice, &mut self.refs, &mut self.log, x);
        }
        for &x in &p.nodes[c][cur].1 {
            delta -= drop_ref(p, &self.choice, &mut self.refs, &mut self.log, x);
        }
        self.changed.push((c, cur));
        self.choice[c] = k;
        self.raise(p, c);
        Some(delta)
    }
    /// Keep everything since the last settle when `delta` is an improvement, else undo it.
    fn settle(&mut self, delta: f64) -> bool {
        let keep = delta < -1e-9;
        if !keep {
            self.undo_to((0, 0));
        }
        self.log.clear();
        self.changed.clear();
        keep
    }
}

/// A level per class under `choice`: 1 + the highest level among the chosen node's children
/// (classes without a finite choice get `u32::MAX`, so nothing may switch to reading them).
fn levels(p: &Problem, choice: &[usize]) -> Vec<u32> {
    let n = p.ids.len();
    let mut level: Vec<u32> = choice.iter().map(|&k| if k == usize::MAX { u32::MAX } else { 0 }).collect();
    for start in 0..n {
        if level[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, false)];
        while let Some((x, exit)) = stack.pop() {
            let ch = &p.nodes[x][choice[x]].1;
            if exit {
                level[x] = 1 + ch.iter().map(|&y| level[y]).max().unwrap_or(0);
                continue;
            }
            if level[x] != 0 {
                continue;
            }
            stack.push((x, true));
            stack.extend(ch.iter().filter(|&&y| level[y] == 0).map(|&y| (y, false)));
        }
    }
    level
}

/// Reference `x` once more; returns the cost of everything that became reachable.
fn add_ref(p: &Problem, choice: &[usize], refs: &mut [u32], log: &mut Vec<(usize, i32)>, x: usize) -> f64 {
    let mut added = 0.0;
    let mut stack = vec![x];
    while let Some(c) = stack.pop() {
        refs[c] += 1;
        log.push((c, 1));
        if refs[c] == 1 {
            let (_, ch, cost) = &p.nodes[c][choice[c]];
            added += cost;
            stack.extend(ch.iter().copied());
        }
    }
    added
}

/// Drop one reference to `x`; returns the cost of everything that became unreachable.
fn drop_ref(p: &Problem, choice: &[usize], refs: &mut [u32], log: &mut Vec<(usize, i32)>, x: usize) -> f64 {
    let mut removed = 0.0;
    let mut stack = vec![x];
    while let Some(c) = stack.pop() {
        refs[c] -= 1;
        log.push((c, -1));
        if refs[c] == 0 {
            let (_, ch, cost) = &p.nodes[c][choice[c]];
            removed += cost;
            stack.extend(ch.iter().copied());
        }
    }
    removed
}

fn topo_order(p: &Problem, choice: &[usize]) -> Vec<usize> {
    let mut order = vec![];
    let mut seen = vec![false; p.ids.len()];
    let mut stack: Vec<(usize, bool)> = p.roots.iter().map(|&r| (r, false)).collect();
    while let Some((c, exit)) = stack.pop() {
        if exit {
            order.push(c);
            continue;
        }
        if std::mem::replace(&mut seen[c], true) {
            continue;
        }
        stack.push((c, true));
        for &x in &p.nodes[c][choice[c]].1 {
            stack.push((x, false));
        }
    }
    order
}

/// The optimal DAG extraction by exhaustive branch-and-bound search over the classes the
/// partial selection reaches, or `None` when more than `limit` partial selections would be
/// visited. For tests on small e-graphs.
pub fn extract_exact(p: &Problem, limit: u64) -> Option<Extraction> {
    struct Search<'a> {
        p: &'a Problem,
        choice: Vec<usize>,
        best: Option<(f64, Vec<usize>)>,
        visits: u64,
        limit: u64,
    }
    impl Search<'_> {
        fn go(&mut self, pending: &mut Vec<usize>, cost: f64) -> bool {
            self.visits += 1;
            if self.visits > self.limit {
                return false;
            }
            if self.best.as_ref().is_some_and(|(b, _)| cost >= *b) {
                return true;
            }
            // The next reached class without a choice.
            let c = loop {
                match pending.pop() {
                    None => {
                        if self.p.dag_cost(&self.choice).is_some() {
                            self.best = Some((cost, self.choice.clone()));
                        }
                        return true;
                    }
                    Some(c) if self.choice[c] == usize::MAX => break c,
                    Some(_) => {}
                }
            };
            for k in 0..self.p.nodes[c].len() {
                self.choice[c] = k;
                let mut next = pending.clone();
                next.extend(self.p.nodes[c][k].1.iter().copied());
                if !self.go(&mut next, cost + self.p.nodes[c][k].2) {
                    return false;
                }
            }
            self.choice[c] = usize::MAX;
            true
        }
    }
    let mut s = Search { p, choice: vec![usize::MAX; p.ids.len()], best: None, visits: 0, limit };
    let mut pending = p.roots.clone();
    if !s.go(&mut pending, 0.0) {
        return None;
    }
    let (_, choice) = s.best?;
    // Unreached classes keep no choice; give them any node so the selection is total.
    let choice: Vec<usize> = choice.into_iter().map(|k| if k == usize::MAX { 0 } else { k }).collect();
    p.to_extraction(&choice)
}
