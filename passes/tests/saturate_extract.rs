//! The DAG-aware extractor against exhaustive search on small e-graphs, and against egg-style
//! tree-cost extraction (which pays for a shared tensor once per reader).

use odc_backends::JitEvaluator;
use odc_ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, Tensor, TensorType, UnaryOp};
use odc_passes::saturate::cost::CostModel;
use odc_passes::saturate::extract::{extract_dag, extract_exact, extract_tree, Problem};
use odc_passes::saturate::{saturate, SaturateOptions};

fn bin(g: &mut Graph, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
    g.add(Op::Binary(op), &[a, b], op.name()).unwrap()
}
fn un(g: &mut Graph, op: UnaryOp, a: NodeId) -> NodeId {
    g.add(Op::Unary(op), &[a], op.name()).unwrap()
}
fn scalar(g: &mut Graph, v: f32) -> NodeId {
    g.constant(Tensor::from_f32(vec![], &[v]), "c")
}

/// Exact, DAG and tree extraction costs of `g`'s saturated e-graph.
fn costs(g: &Graph, cost: CostModel) -> (f64, f64, f64) {
    let s = saturate(g, Some(&JitEvaluator), &SaturateOptions { cost, ..SaturateOptions::default() }).unwrap();
    let eg = &s.egraph;
    let p = Problem::new(eg, &s.roots(), &|c, n| cost.node_cost(eg, c, n));
    let exact = extract_exact(&p, 5_000_000).expect("small enough to enumerate").cost;
    let dag = extract_dag(&p).unwrap().cost;
    let tree = extract_tree(&p).unwrap().cost;
    (exact, dag, tree)
}

/// A residual chain: each block's input is read by a transcendental branch and by the skip add.
fn residual_chain(n: usize, blocks: usize) -> Graph {
    let mut g = Graph::new();
    let mut x = g.add_input("x", TensorType::new(DType::F32, vec![n]));
    for _ in 0..blocks {
        let c = scalar(&mut g, 0.5);
        let a = bin(&mut g, BinaryOp::Mul, x, c);
        let t = un(&mut g, UnaryOp::Tanh, a);
        let e = un(&mut g, UnaryOp::Exp, t);
        x = bin(&mut g, BinaryOp::Add, e, a);
    }
    g.set_output("y", x);
    g
}

fn softmax(rows: usize, cols: usize) -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![rows, cols]));
    let m = g.add(Op::Reduce { op: ReduceOp::Max, axes: vec![1] }, &[x], "max").unwrap();
    let d = bin(&mut g, BinaryOp::Sub, x, m);
    let e = un(&mut g, UnaryOp::Exp, d);
    let s = g.add(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[e], "sum").unwrap();
    let y = bin(&mut g, BinaryOp::Div, e, s);
    g.set_output("y", y);
    g
}

fn assert_optimal(name: &str, (exact, dag, tree): (f64, f64, f64)) {
    assert!((dag - exact).abs() <= 1e-9 * exact, "{name}: DAG extractor {dag} vs optimum {exact}");
    assert!(tree >= exact - 1e-9 * exact, "{name}: tree {tree} below the optimum {exact}?");
}

#[test]
fn dag_extraction_is_optimal_on_small_graphs() {
    for n in [64, 4096, 1 << 16] {
        for blocks in [1, 2, 3] {
            assert_optimal(&format!("residual n={n} blocks={blocks}"), costs(&residual_chain(n, blocks), CostModel::default()));
        }
        assert_optimal(&format!("softmax 8x{n}"), costs(&softmax(8, n / 8), CostModel::default()));
    }
}

#[test]
fn tree_extraction_overpays_for_shared_tensors() {
    // Softmax on long rows: storing exp(x - max) once beats recomputing it in the sum and the
    // division, but tree cost counts the stored tensor's kernel once per reader and so prefers
    // recomputation. (Short rows: recomputing wins, and all three agree.)
    let (exact, dag, tree) = costs(&softmax(8, 4096), CostModel::default());
    assert!((dag - exact).abs() <= 1e-9 * exact);
    assert!(tree > exact * 1.05, "tree {tree} vs optimum {exact}");
}

