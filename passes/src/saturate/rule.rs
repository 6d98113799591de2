//! Rules written in Rust, run by egg's `Runner`.
//!
//! A [`NodeRule`] looks at one e-node of one e-class and proposes equivalent [`Term`]s. The
//! adapter turns it into an `egg::Rewrite`: the search phase (read-only e-graph) collects the
//! proposed terms, the apply phase adds them and unions each with the matched class. Each
//! (class, node) pair is rewritten at most once per rule, so expensive rules (those computing new
//! constant weights) never repeat work across iterations.

use super::lang::{GemmOp, ONode, OGraph, Tables, Template, TyId};
use egg::{Applier, Id, Language, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use odc_ir::{Op, Tensor};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// A node of a proposed term. Children index earlier term nodes.
#[derive(Clone, Debug)]
pub enum TermNode {
    /// An existing e-class.
    Class(Id),
    /// A new constant.
    Const(Tensor),
    Prim(Op, Vec<usize>),
    Gemm(GemmOp, Vec<usize>),
    Kernel(Template, Vec<usize>),
}

/// An expression to add to the e-graph; its last node is the root.
#[derive(Clone, Debug, Default)]
pub struct Term {
    pub nodes: Vec<TermNode>,
}

impl Term {
    pub fn push(&mut self, n: TermNode) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }
    pub fn class(&mut self, id: Id) -> usize {
        self.push(TermNode::Class(id))
    }
    pub fn prim(&mut self, op: Op, args: Vec<usize>) -> usize {
        self.push(TermNode::Prim(op, args))
    }
    /// A term that is just an existing class (the rule proves two classes equal).
    pub fn just(id: Id) -> Term {
        Term { nodes: vec![TermNode::Class(id)] }
    }

    /// Add the term to the e-graph; returns the root's class. New classes are named after
    /// `origin` (the class the rule rewrote).
    pub fn add_to(&self, eg: &mut OGraph, origin: Id) -> Id {
        let name = eg.analysis.names.get(&origin).or_else(|| eg.analysis.names.get(&eg.find(origin))).cloned();
        let mut ids: Vec<Id> = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let id = match n {
                TermNode::Class(c) => eg.find(*c),
                TermNode::Const(t) => {
                    let c = eg.analysis.add_const(t.clone());
                    eg.add(ONode::Const(c))
                }
                TermNode::Prim(op, a) => {
                    let op = eg.analysis.intern_op(op.clone());
                    eg.add(ONode::Prim(op, a.iter().map(|&i| ids[i]).collect()))
                }
                TermNode::Gemm(op, a) => eg.add(ONode::Gemm(*op, a.iter().map(|&i| ids[i]).collect())),
                TermNode::Kernel(t, a) => {
                    let t = eg.analysis.intern_template(t.clone());
                    eg.add(ONode::Kernel(t, a.iter().map(|&i| ids[i]).collect()))
                }
            };
            if let Some(name) = &name {
                eg.analysis.names.entry(id).or_insert_with(|| name.clone());
            }
            ids.push(id);
        }
        *ids.last().expect("terms are never empty")
    }
}

/// Facts about the whole e-graph computed once per search (for rules that ask for them): how
/// many distinct classes read each class through a primitive (dataflow users; fused kernels are
/// alternatives, not users), and per class the primitive e-node with the fewest compute ops
/// beneath it (the representative a fusion rule inlines).
#[derive(Default)]
pub struct Context {
    users: HashMap<Id, u32>,
    outputs: HashSet<Id>,
    simplest: HashMap<Id, usize>,
}

impl Context {
    pub fn new(eg: &OGraph, outputs: &[Id]) -> Self {
        let mut readers: HashMap<Id, HashSet<Id>> = HashMap::new();
        for c in eg.classes() {
            for n in &c.nodes {
                if matches!(n, ONode::Prim(..) | ONode::Gemm(..)) {
                    for &ch in n.children() {
                        readers.entry(eg.find(ch)).or_default().insert(c.id);
                    }
                }
            }
        }
        let users: HashMap<Id, u32> = readers.into_iter().map(|(k, v)| (k, v.len() as u32)).collect();
        let simplest = simplest_nodes(eg, &users);
        Context { users, outputs: outputs.iter().map(|&o| eg.find(o)).collect(), simplest }
    }

    /// The primitive e-node of `class` with the fewest compute ops beneath it.
    pub fn simplest<'a>(&self, eg: &'a OGraph, class: Id) -> Option<&'a ONode> {
        let c = eg.find(class);
        self.simplest.get(&c).map(|&i| &eg[c].nodes[i])
    }
    /// True when `class` is read by exactly one other class and is not a graph output.
    pub fn single_user(&self, eg: &OGraph, class: Id) -> bool {
        let c = eg.find(class);
        self.users.get(&c).copied().unwrap_or(0) <= 1 && !self.outputs.contains(&c)
    }
}

/// Per class, the index of the `Prim`/`Gemm`/leaf e-node minimising the compute in its tree: a
/// tree-cost fixpoint over primitives only, where views and leaves count zero, elementwise ops
/// and reductions one, contractions a thousand, and a class with several readers nothing (it is
/// stored anyway, so reading it beats recomputing it, e.g. with weights scaled for one reader).
fn simplest_nodes(eg: &OGraph, users: &HashMap<Id, u32>) -> HashMap<Id, usize> {
    let mut parents: HashMap<Id, Vec<Id>> = HashMap::new();
    for c in eg.classes() {
        for n in &c.nodes {
            for &ch in n.children() {
                parents.entry(eg.find(ch)).or_default().push(c.id);
            }
        }
    }
    let mut best: HashMap<Id, (u32, usize)> = HashMap::new();
    let mut queue: std::collections::VecDeque<Id> = eg.classes().map(|c| c.id).collect();
    let mut queued: HashSet<Id> = queue.iter().copied().collect();
    while let Some(cid) = queue.pop_front() {
        queued.remove(&cid);
        let mut improved = false;
        for (i, n) in eg[cid].nodes.iter().enumerate() {
            let own = match n {
                ONode::Input(_) | ONode::Const(_) => 0,
                ONode::Prim(op, _) if eg.analysis.op(*op).is_view() => 0,
                ONode::Prim(op, _) if eg.analysis.op(*op).family() == odc_ir::OpFamily::Contraction => 1000,
                ONode::Gemm(..) => 1000,
                ONode::Prim(..) => 1,
                ONode::Kernel(..) => continue,
            };
            let total = n.children().iter().try_fold(own, |acc: u32, ch| {
                let ch = eg.find(*ch);
                let shared = users.get(&ch).is_some_and(|&u| u > 1);
                best.get(&ch).map(|&(k, _)| acc.saturating_add(if shared { 0 } else { k }))
            });
            if let Some(total) = total {
                if best.get(&cid).is_none_or(|&(b, _)| total < b) {
                    best.insert(cid, (total, i));
                    improved = true;
                }
            }
        }
        if improved {
            for &p in parents.get(&cid).map(|v| v.as_slice()).unwrap_or(&[]) {
                if queued.insert(p) {
                    queue.push_back(p);
                }
            }
        }
    }
    best.into_iter().map(|(k, (_, i))| (k, i)).collect()
}

/// A rewrite rule over one e-node.
pub trait NodeRule: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Whether [`NodeRule::rewrite`] reads the [`Context`] (computing it costs a pass over the
    /// e-graph per search).
    fn needs_context(&self) -> bool {
        false
    }
    /// Terms equivalent to `node` (an e-node of `class`).
    fn rewrite(&self, eg: &OGraph, ctx: &Context, class: Id, node: &ONode) -> Vec<Term>;
}

struct Shared<R> {
    rule: R,
    outputs: Vec<Id>,
    pending: Mutex<Vec<Term>>,
    done: Mutex<HashSet<(Id, ONode)>>,
}

struct Search<R>(Arc<Shared<R>>);
struct Apply<R>(Arc<Shared<R>>);

fn term_var() -> Var {
    "?term".parse().expect("valid variable")
}

impl<'e, R: NodeRule> Searcher<ONode, Tables<'e>> for Search<R> {
    fn search_eclass_with_limit(&self, eg: &OGraph<'e>, eclass: Id, limit: usize) -> Option<SearchMatches<'_, ONode>> {
        let ctx = self.context(eg);
        self.search_one(eg, &ctx, eclass, limit)
    }

    fn search_with_limit(&self, eg: &OGraph<'e>, limit: usize) -> Vec<SearchMatches<'_, ONode>> {
        self.0.pending.lock().expect("rule state").clear();
        let ctx = self.context(eg);
        let mut out = vec![];
        let mut left = limit;
        for c in eg.classes() {
            if left == 0 {
                break;
            }
            if let Some(m) = self.search_one(eg, &ctx, c.id, left) {
                left -= m.substs.len();
                out.push(m);
            }
        }
        out
    }

    fn vars(&self) -> Vec<Var> {
        vec![term_var()]
    }
}

impl<R: NodeRule> Search<R> {
    fn context(&self, eg: &OGraph) -> Context {
        if self.0.rule.needs_context() {
            Context::new(eg, &self.0.outputs)
        } else {
            Context::default()
        }
    }

    fn search_one<'e>(&self, eg: &OGraph<'e>, ctx: &Context, eclass: Id, limit: usize) -> Option<SearchMatches<'_, ONode>> {
        let shared = &self.0;
        let mut substs = vec![];
        let mut done = shared.done.lock().expect("rule state");
        let mut pending = shared.pending.lock().expect("rule state");
        for n in &eg[eclass].nodes {
            if substs.len() >= limit {
                break;
            }
            let key = (eclass, n.clone());
            if done.contains(&key) {
                continue;
            }
            let terms = shared.rule.rewrite(eg, ctx, eclass, n);
            if terms.is_empty() {
                continue;
            }
            done.insert(key);
            for t in terms {
                let mut s = Subst::with_capacity(1);
                s.insert(term_var(), Id::from(pending.len()));
                pending.push(t);
                substs.push(s);
            }
        }
        (!substs.is_empty()).then(|| SearchMatches { eclass, substs, ast: None })
    }
}

impl<'e, R: NodeRule> Applier<ONode, Tables<'e>> for Apply<R> {
    fn apply_one(&self, eg: &mut OGraph<'e>, eclass: Id, subst: &Subst, _ast: Option<&PatternAst<ONode>>, _rule: Symbol) -> Vec<Id> {
        let i = usize::from(subst[term_var()]);
        let term = self.0.pending.lock().expect("rule state")[i].clone();
        let root = term.add_to(eg, eclass);
        if eg.union(eclass, root) {
            vec![eclass]
        } else {
            vec![]
        }
    }
}

/// Wrap a rule as an egg rewrite. `outputs` are the graph's output classes (never "single-user").
pub fn rewrite<'e, R: NodeRule>(rule: R, outputs: &[Id]) -> Rewrite<ONode, Tables<'e>> {
    let name = rule.name();
    let shared = Arc::new(Shared { rule, outputs: outputs.to_vec(), pending: Mutex::new(vec![]), done: Mutex::new(HashSet::new()) });
    Rewrite::new(name, Search(shared.clone()), Apply(shared)).expect("rule variables are bound")
}

/// The type of class `c`.
pub fn ty_of<'a>(eg: &'a OGraph, c: Id) -> &'a odc_ir::TensorType {
    eg.analysis.ty(eg[c].data.ty)
}

/// The type id of class `c`.
pub fn tyid(eg: &OGraph, c: Id) -> TyId {
    eg[c].data.ty
}

/// The constant held by class `c`, if any.
pub fn const_of<'a>(eg: &'a OGraph, c: Id) -> Option<&'a Tensor> {
    eg[c].data.konst.map(|k| &eg.analysis.consts[k as usize])
}

/// The first `Prim` e-node of class `c` whose op satisfies `f`.
pub fn find_prim<'a>(eg: &'a OGraph, c: Id, f: impl Fn(&Op) -> bool) -> Option<(&'a Op, &'a [Id])> {
    eg[c].nodes.iter().find_map(|n| match n {
        ONode::Prim(o, a) if f(eg.analysis.op(*o)) => Some((eg.analysis.op(*o), a.as_slice())),
        _ => None,
    })
}
