//! Equality saturation over the graph IR (`egg`): simplification, layout rewrites, kernel choice
//! and fusion decided together by a cost model.
//!
//! ```text
//! Graph ──► e-graph ──phase 1: simplify + layout──► phase 2: kernel choice + fusion
//!       ──► DAG-aware extraction (cost model) ──► Graph' + FusionPlan (one kernel per fused group)
//! ```
//!
//! Rule families, each in its own module, are orthogonal and compose through the e-graph:
//! [`simplify`] (identities, constant folding, view cancellation, constant reassociation),
//! [`layout`] (transpose sinking, scale and BatchNorm folding into weights), [`kernels`] (GEMM
//! microkernel vs direct loop) and [`fuse`] (elementwise producers into their readers, GEMM
//! epilogues). Each phase is an egg `Runner` with iteration and node limits (the normal stop,
//! so compilation is deterministic), a wall-clock limit only as a safety net, and the
//! `SimpleScheduler`: fusion rules legitimately match every class in every iteration, which the
//! default backoff scheduler would punish by banning them.
//!
//! The extracted e-graph is rebuilt as a new [`Graph`] in which every fused kernel's interior
//! nodes are marked fused in the [`FusionPlan`], so the backend lowers each group to one loop
//! nest (GEMM epilogues to one microkernel call).

pub mod consts;
pub mod cost;
pub mod extract;
pub mod fuse;
pub mod kernels;
pub mod lang;
pub mod layout;
pub mod rule;
pub mod simplify;

use crate::fusion::FusionPlan;
use cost::CostModel;
use egg::{Id, Language, Rewrite, Runner, SimpleScheduler};
use extract::{Extraction, Problem};
use crate::kernel_choice::KernelKind;
use lang::{GemmOp, ONode, OGraph, TNode, Tables};
use odc_ir::{Evaluator, Graph, IrError, NodeId, Op, OpFamily};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A family of rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Simplify,
    Layout,
    KernelChoice,
    Fusion,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Simplify, Family::Layout, Family::KernelChoice, Family::Fusion];
}

#[derive(Clone, Debug)]
pub struct SaturateOptions {
    pub families: Vec<Family>,
    /// Only these rules (by name) when set; for testing one rule at a time.
    pub only_rules: Option<Vec<String>>,
    pub node_limit: usize,
    /// Iterations of the simplify/layout phase and of the fusion phase.
    pub simplify_iters: usize,
    pub fusion_iters: usize,
    /// A safety net only: the iteration and node limits are the normal stop, so the same graph
    /// gives the same program however busy the machine is. Hitting this is reported
    /// ([`Report::time_limited`]) because the result then depends on the machine's speed.
    pub time_limit: Duration,
    pub cost: CostModel,
}

impl Default for SaturateOptions {
    fn default() -> Self {
        SaturateOptions {
            families: Family::ALL.to_vec(),
            only_rules: None,
            node_limit: 200_000,
            simplify_iters: 10,
            fusion_iters: 40,
            time_limit: Duration::from_secs(60),
            cost: CostModel::default(),
        }
    }
}

/// One kernel of the extracted program.
#[derive(Clone, Debug)]
pub struct KernelReport {
    /// The name of the node the kernel computes.
    pub name: String,
    /// A GEMM-family kernel kind (`gemm`, `int8-dot`, `winograd`), alone or with `+epilogue`;
    /// `fused`, `reduce`, `elementwise`, `contraction` (direct loop), `contraction+epilogue`,
    /// `indexing`.
    pub kind: String,
    /// Source nodes computed inside the kernel, in evaluation order.
    pub nodes: Vec<String>,
    /// Primitive ops inside the kernel.
    pub ops: Vec<String>,
    pub cost_ns: f64,
}

/// What saturation did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub kernels: Vec<KernelReport>,
    pub saturation_ms: f64,
    pub extraction_ms: f64,
    pub enodes: usize,
    pub eclasses: usize,
    /// Why each phase stopped.
    pub stop_reason: String,
    /// A phase stopped at the wall-clock safety limit instead of its iteration or node limit.
    pub time_limited: bool,
    pub iterations: usize,
    /// Rule name → times applied.
    pub applied: Vec<(String, usize)>,
    /// Estimated cost of the extracted program, and what tree-cost extraction would have chosen.
    pub cost_ns: f64,
    pub tree_cost_ns: f64,
}

/// The optimized graph, the fusion plan the lowering follows, and the report.
pub struct Saturated {
    pub graph: Graph,
    pub plan: FusionPlan,
    pub report: Report,
}

fn rules<'e>(opts: &SaturateOptions, phase: usize, outputs: &[Id]) -> Vec<Rewrite<ONode, Tables<'e>>> {
    let on = |f: Family| opts.families.contains(&f);
    let mut v: Vec<Rewrite<ONode, Tables<'e>>> = vec![];
    if phase == 1 {
        if on(Family::Simplify) {
            v.push(rule::rewrite(simplify::Identities, outputs));
            v.push(rule::rewrite(simplify::Involutions, outputs));
            v.push(rule::rewrite(simplify::ViewCancellation, outputs));
            v.push(rule::rewrite(simplify::ConstantFolding, outputs));
            v.push(rule::rewrite(simplify::ReassociateConstants, outputs));
            v.push(rule::rewrite(simplify::SubtractConstant, outputs));
        }
        if on(Family::Layout) {
            v.push(rule::rewrite(layout::TransposeSinking, outputs));
            v.push(rule::rewrite(layout::ScaleIntoWeights::default(), outputs));
            v.push(rule::rewrite(layout::ScaleOverBias, outputs));
            v.push(rule::rewrite(layout::DivideByConstant, outputs));
        }
    } else {
        if on(Family::KernelChoice) {
            v.push(rule::rewrite(kernels::GemmChoice, outputs));
        }
        if on(Family::Fusion) {
            v.push(rule::rewrite(fuse::FuseProducers, outputs));
            v.push(rule::rewrite(fuse::FuseEpilogue, outputs));
        }
    }
    if let Some(only) = &opts.only_rules {
        v.retain(|r| only.iter().any(|n| n == r.name.as_str()));
    }
    v
}

/// Build the e-graph of `g`. Returns it with the output classes.
pub fn egraph_of<'e>(g: &Graph, eval: Option<&'e dyn Evaluator>) -> (OGraph<'e>, Vec<(String, Id)>) {
    let inputs = g.inputs().iter().map(|p| g.ty(p.node).clone()).collect();
    let mut eg = OGraph::new(Tables::new(inputs, eval));
    let mut class_of: HashMap<NodeId, Id> = HashMap::new();
    for n in g.topo_order() {
        let node = g.node(n);
        let enode = match &node.op {
            Op::Input { index } => ONode::Input(*index as u32),
            Op::Constant(t) => ONode::Const(eg.analysis.add_const(t.clone())),
            op => {
                let op = eg.analysis.intern_op(op.clone());
                ONode::Prim(op, g.operands(n).iter().map(|o| class_of[o]).collect())
            }
        };
        let id = eg.add(enode);
        eg.analysis.names.entry(id).or_insert_with(|| node.name.clone());
        class_of.insert(n, id);
    }
    let outputs = g.outputs().iter().map(|p| (p.name.clone(), class_of[&p.node])).collect();
    eg.rebuild();
    (eg, outputs)
}

/// The saturated e-graph of a graph, with its output classes.
pub struct Saturation<'e> {
    pub egraph: OGraph<'e>,
    pub outputs: Vec<(String, Id)>,
    pub report: Report,
}

impl Saturation<'_> {
    pub fn roots(&self) -> Vec<Id> {
        self.outputs.iter().map(|o| o.1).collect()
    }
}

/// Saturate, extract and rebuild `g`.
pub fn optimize(g: &Graph, eval: Option<&dyn Evaluator>, opts: &SaturateOptions) -> Result<Saturated, IrError> {
    let Saturation { egraph: eg, outputs, mut report } = saturate(g, eval, opts)?;
    let roots: Vec<Id> = outputs.iter().map(|o| o.1).collect();
    let t1 = Instant::now();
    let cost = opts.cost;
    let problem = Problem::new(&eg, &roots, &|c, n| cost.node_cost(&eg, c, n));
    let tree = extract::extract_tree(&problem).ok_or_else(|| IrError::new("no finite-cost extraction of the graph outputs"))?;
    let ext = extract::extract_dag(&problem).ok_or_else(|| IrError::new("no finite-cost extraction of the graph outputs"))?;
    report.extraction_ms = t1.elapsed().as_secs_f64() * 1e3;
    report.tree_cost_ns = tree.cost;
    report.cost_ns = ext.cost;
    rebuild(g, &eg, &ext, &outputs, &opts.cost, report)
}

/// Run the rule phases on the e-graph of `g`.
pub fn saturate<'e>(g: &Graph, eval: Option<&'e dyn Evaluator>, opts: &SaturateOptions) -> Result<Saturation<'e>, IrError> {
    let t0 = Instant::now();
    let (mut eg, outputs) = egraph_of(g, eval);
    let roots: Vec<Id> = outputs.iter().map(|o| o.1).collect();
    let mut report = Report::default();
    let mut reasons = vec![];
    let mut applied: HashMap<String, usize> = HashMap::new();
    for (phase, iters) in [(1, opts.simplify_iters), (2, opts.fusion_iters)] {
        let rules = rules(opts, phase, &roots);
        if rules.is_empty() {
            continue;
        }
        let left = opts.time_limit.saturating_sub(t0.elapsed());
        let runner = Runner::<ONode, Tables, ()>::new(Tables::new(vec![], None))
            .with_egraph(eg)
            .with_scheduler(SimpleScheduler)
            .with_iter_limit(iters)
            .with_node_limit(opts.node_limit)
            .with_time_limit(left)
            .run(&rules);
        report.iterations += runner.iterations.len();
        if std::env::var_os("ODC_TRACE_SATURATION").is_some() {
            for (i, it) in runner.iterations.iter().enumerate() {
                eprintln!(
                    "phase {phase} iter {i}: {} nodes {} classes, search {:.1} ms apply {:.1} ms rebuild {:.1} ms, applied {:?}",
                    it.egraph_nodes, it.egraph_classes, it.search_time * 1e3, it.apply_time * 1e3, it.rebuild_time * 1e3, it.applied
                );
            }
        }
        for it in &runner.iterations {
            for (name, n) in &it.applied {
                *applied.entry(name.to_string()).or_default() += n;
            }
        }
        let reason = runner.stop_reason.clone().expect("the runner ran");
        report.time_limited |= matches!(reason, egg::StopReason::TimeLimit(_));
        reasons.push(format!("phase {phase}: {reason:?}"));
        eg = runner.egraph;
    }
    if let Some(c) = eg.analysis.conflicts.first() {
        return Err(IrError::new(format!("equality saturation produced ill-typed nodes (a rule bug): {c}")));
    }
    report.saturation_ms = t0.elapsed().as_secs_f64() * 1e3;
    report.enodes = eg.total_number_of_nodes();
    report.eclasses = eg.number_of_classes();
    report.stop_reason = reasons.join("; ");
    let mut applied: Vec<(String, usize)> = applied.into_iter().collect();
    applied.sort();
    report.applied = applied;
    Ok(Saturation { egraph: eg, outputs, report })
}

/// Turn the extraction into a graph and a fusion plan.
fn rebuild(src: &Graph, eg: &OGraph, ext: &Extraction, outputs: &[(String, Id)], cost: &CostModel, mut report: Report) -> Result<Saturated, IrError> {
    let names: HashMap<Id, &str> = {
        let mut m = HashMap::new();
        for (&id, name) in &eg.analysis.names {
            m.entry(eg.find(id)).or_insert(name.as_str());
        }
        m
    };
    let name_of = |c: Id| names.get(&eg.find(c)).map(|s| s.to_string()).unwrap_or_else(|| format!("t{c}"));
    let mut g = Graph::new();
    g.copy_state_names(src);
    let inputs: Vec<NodeId> = src.inputs().iter().map(|p| g.add_input(&p.name, src.ty(p.node).clone())).collect();
    let mut plan = FusionPlan::default();
    let mut value: HashMap<Id, NodeId> = HashMap::new();
    // Post-order over the chosen nodes.
    let mut order = vec![];
    let mut seen: HashMap<Id, bool> = HashMap::new();
    let mut stack: Vec<(Id, bool)> = outputs.iter().map(|o| (eg.find(o.1), false)).collect();
    while let Some((c, exit)) = stack.pop() {
        if exit {
            order.push(c);
            continue;
        }
        if seen.insert(c, true).is_some() {
            continue;
        }
        stack.push((c, true));
        let node = &ext.choice[&c];
        stack.extend(node.children().iter().map(|&x| (eg.find(x), false)));
    }
    for c in order {
        let node = &ext.choice[&c];
        let name = name_of(c);
        let args: Vec<NodeId> = node.children().iter().map(|&x| value[&eg.find(x)]).collect();
        let n = match node {
            ONode::Input(i) => inputs[*i as usize],
            ONode::Const(k) => g.constant(eg.analysis.consts[*k as usize].clone(), &name),
            ONode::Prim(op, _) => {
                let op = eg.analysis.op(*op).clone();
                let kind = match op.family() {
                    OpFamily::Contraction => "contraction",
                    OpFamily::Reduce => "reduce",
                    OpFamily::Indexing => "indexing",
                    _ => "elementwise",
                };
                let (is_view, is_contraction, opname) = (op.is_view(), op.family() == OpFamily::Contraction, op.name());
                let n = g.add(op, &args, &name).map_err(|e| e.context(&name))?;
                // A contraction extracted as its `Prim` runs as a direct loop, whatever GEMM
                // alternatives its class had.
                if is_contraction {
                    plan.kinds.insert(n, KernelKind::Direct);
                }
                if !is_view {
                    report.kernels.push(KernelReport { name: name.clone(), kind: kind.into(), nodes: vec![name.clone()], ops: vec![opname], cost_ns: cost.node_cost(eg, c, node) });
                }
                n
            }
            ONode::Gemm(gop, _) => {
                let op = eg.analysis.op(gop.op).clone();
                let opname = op.name();
                let n = g.add(op, &args, &name).map_err(|e| e.context(&name))?;
                plan.kinds.insert(n, gop.kind);
                report.kernels.push(KernelReport { name: name.clone(), kind: gop.kind.name().into(), nodes: vec![name.clone()], ops: vec![opname], cost_ns: cost.node_cost(eg, c, node) });
                n
            }
            ONode::Kernel(t, _) => {
                let t = &eg.analysis.tpls[t.0 as usize];
                let mut ids: Vec<NodeId> = Vec::with_capacity(t.nodes.len());
                let mut gemm = None;
                let (mut nodes, mut ops) = (vec![], vec![]);
                for (i, tn) in t.nodes.iter().enumerate() {
                    let id = match tn {
                        TNode::Hole(h) => args[*h as usize],
                        TNode::Prim(op, a) | TNode::Gemm(GemmOp { op, .. }, a) => {
                            let op = eg.analysis.op(*op).clone();
                            let nm = if i == t.root() { name.clone() } else { name_of(t.origin[i]) };
                            ops.push(op.name());
                            if !nodes.contains(&nm) {
                                nodes.push(nm.clone());
                            }
                            let operands: Vec<NodeId> = a.iter().map(|&x| ids[x as usize]).collect();
                            let id = g.add(op, &operands, &nm).map_err(|e| e.context(&nm))?;
                            if i != t.root() {
                                plan.fused.insert(id);
                            }
                            if let TNode::Gemm(gop, _) = tn {
                                plan.kinds.insert(id, gop.kind);
                                gemm = Some((id, gop.kind));
                            }
                            id
                        }
                    };
                    ids.push(id);
                }
                let root = ids[t.root()];
                let kind = if let Some((c, k)) = gemm {
                    plan.gemm_root.insert(root, c);
                    format!("{k}+epilogue")
                } else if t.nodes.iter().any(|n| matches!(n, TNode::Prim(o, _) if eg.analysis.op(*o).family() == OpFamily::Contraction)) {
                    "contraction+epilogue".into()
                } else if t.nodes.iter().any(|n| matches!(n, TNode::Prim(o, _) if matches!(eg.analysis.op(*o), Op::Reduce { .. }))) {
                    "reduce".into()
                } else {
                    "fused".into()
                };
                report.kernels.push(KernelReport { name: name.clone(), kind, nodes, ops, cost_ns: cost.node_cost(eg, c, node) });
                root
            }
        };
        value.insert(c, n);
    }
    for (name, c) in outputs {
        g.set_output(name, value[&eg.find(*c)]);
    }
    g.verify()?;
    Ok(Saturated { graph: g, plan, report })
}
