//! The dataflow graph: primitive-op nodes on a `petgraph` stable graph.
//!
//! Edges point from producer to consumer and carry the operand slot, so operand order survives
//! rewrites. Every node has exactly one output; multi-result operators are several nodes.

use crate::dtype::DType;
use crate::infer::infer;
use crate::op::Op;
use crate::tensor::Tensor;
use crate::IrError;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashSet;
use std::fmt;

/// A node handle. Stable across removals.
pub type NodeId = NodeIndex<u32>;

/// Element type plus concrete shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        TensorType { dtype, shape }
    }
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn byte_len(&self) -> usize {
        self.dtype.byte_len(self.num_elements())
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, "x")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// One primitive operation and its result type.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub ty: TensorType,
    /// Where the node came from (e.g. the ONNX node name), for errors and reports.
    pub name: String,
}

/// A named graph input or output.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub node: NodeId,
}

/// A graph of primitive ops.
#[derive(Clone, Default)]
pub struct Graph {
    g: StableDiGraph<Node, u32>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    /// Names of the graph's *state*: each is both an input (the value before the call) and an
    /// output of the same type (the value after it), held in one caller-provided buffer that
    /// the compiled code updates in place (a decoder's KV cache).
    state: Vec<String>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare the next graph input.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> NodeId {
        let index = self.inputs.len();
        let id = self.g.add_node(Node { op: Op::Input { index }, ty, name: name.to_string() });
        self.inputs.push(Port { name: name.to_string(), node: id });
        id
    }

    pub fn constant(&mut self, t: Tensor, name: &str) -> NodeId {
        let ty = TensorType::new(t.dtype, t.shape.clone());
        self.g.add_node(Node { op: Op::Constant(t), ty, name: name.to_string() })
    }

    /// Add `op` applied to `operands`, inferring (and so checking) its type.
    pub fn add(&mut self, op: Op, operands: &[NodeId], name: &str) -> Result<NodeId, IrError> {
        let tys: Vec<&TensorType> = operands.iter().map(|&o| &self.g[o].ty).collect();
        // Callers know where the node comes from and add that context themselves.
        let ty = infer(&op, &tys)?;
        let id = self.g.add_node(Node { op, ty, name: name.to_string() });
        for (slot, &o) in operands.iter().enumerate() {
            self.g.add_edge(o, id, slot as u32);
        }
        Ok(id)
    }

    /// Turn graph input `node` into the constant `t` (specialising the graph on that input's
    /// value). The input disappears from the signature; later inputs are renumbered.
    pub fn freeze_input(&mut self, node: NodeId, t: Tensor) -> Result<(), IrError> {
        let pos = self.inputs.iter().position(|p| p.node == node).ok_or_else(|| IrError::new("not a graph input"))?;
        if self.is_state(&self.inputs[pos].name) {
            return Err(IrError::new(format!("state '{}' cannot be a compile-time constant", self.inputs[pos].name)));
        }
        let ty = TensorType::new(t.dtype, t.shape.clone());
        if ty != self.g[node].ty {
            return Err(IrError::new(format!(
                "value for input '{}' is {ty}, the input is {}",
                self.inputs[pos].name, self.g[node].ty
            )));
        }
        self.inputs.remove(pos);
        self.g[node].op = Op::Constant(t);
        for (i, p) in self.inputs.iter().enumerate() {
            self.g[p.node].op = Op::Input { index: i };
        }
        Ok(())
    }

    pub fn set_output(&mut self, name: &str, node: NodeId) {
        self.outputs.push(Port { name: name.to_string(), node });
    }

    /// Declare state `name` of type `ty`: an input holding its value before the call. Its value
    /// after the call is set with [`Graph::set_state_output`].
    pub fn add_state(&mut self, name: &str, ty: TensorType) -> NodeId {
        self.state.push(name.to_string());
        self.add_input(name, ty)
    }

    /// The value state `name` holds after the call.
    pub fn set_state_output(&mut self, name: &str, node: NodeId) {
        self.set_output(name, node);
    }

    /// The state names, in declaration order.
    pub fn state(&self) -> &[String] {
        &self.state
    }

    /// Declare the same state as `other` (for passes that rebuild a graph port by port).
    pub fn copy_state_names(&mut self, other: &Graph) {
        self.state = other.state.clone();
    }

    /// Whether port name `name` is state.
    pub fn is_state(&self, name: &str) -> bool {
        self.state.iter().any(|s| s == name)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.g[id].ty
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// All node ids in insertion order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.g.node_indices().collect()
    }

    /// Operands in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut e: Vec<(u32, NodeId)> =
            self.g.edges_directed(id, Direction::Incoming).map(|e| (*e.weight(), e.source())).collect();
        e.sort_unstable_by_key(|&(slot, _)| slot);
        e.into_iter().map(|(_, n)| n).collect()
    }

    /// Distinct consumers of a node.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut seen = HashSet::new();
        self.g.neighbors_directed(id, Direction::Outgoing).filter(|n| seen.insert(*n)).collect()
    }

    /// Number of operand slots (over all consumers) that read this node, plus graph outputs.
    pub fn use_count(&self, id: NodeId) -> usize {
        self.g.edges_directed(id, Direction::Outgoing).count()
            + self.outputs.iter().filter(|p| p.node == id).count()
    }

    pub fn is_output(&self, id: NodeId) -> bool {
        self.outputs.iter().any(|p| p.node == id)
    }

    /// Make every reader of `old` (nodes and graph outputs) read `new` instead.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        let edges: Vec<(NodeId, u32)> =
            self.g.edges_directed(old, Direction::Outgoing).map(|e| (e.target(), *e.weight())).collect();
        self.g.retain_edges(|g, e| g.edge_endpoints(e).map(|(s, _)| s) != Some(old));
        for (t, slot) in edges {
            self.g.add_edge(new, t, slot);
        }
        for p in &mut self.outputs {
            if p.node == old {
                p.node = new;
            }
        }
    }

    /// Replace a node's op in place, keeping its operands; the type must not change.
    pub fn replace_op(&mut self, id: NodeId, op: Op) {
        self.g[id].op = op;
    }

    /// Remove nodes that no output depends on (inputs are always kept).
    pub fn remove_dead(&mut self) -> usize {
        let mut live = HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|p| p.node).collect();
        stack.extend(self.inputs.iter().map(|p| p.node));
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeId> = self.g.node_indices().filter(|n| !live.contains(n)).collect();
        for &d in &dead {
            self.g.remove_node(d);
        }
        dead.len()
    }

    /// Nodes in an order where operands come first.
    pub fn topo_order(&self) -> Vec<NodeId> {
        petgraph::algo::toposort(&self.g, None).expect("graphs are acyclic by construction")
    }

    /// A new graph computing `roots` (as its outputs) from copies of their ancestors. Fails if
    /// any ancestor is a graph input.
    pub fn extract(&self, roots: &[NodeId]) -> Result<Graph, IrError> {
        let mut out = Graph::new();
        let mut map: std::collections::HashMap<NodeId, NodeId> = std::collections::HashMap::new();
        let mut needed = HashSet::new();
        let mut stack: Vec<NodeId> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if needed.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        for n in self.topo_order() {
            if !needed.contains(&n) {
                continue;
            }
            let node = &self.g[n];
            if let Op::Input { .. } = node.op {
                return Err(IrError::new(format!("{} depends on graph input '{}'", self.g[roots[0]].name, node.name)));
            }
            let ops: Vec<NodeId> = self.operands(n).iter().map(|o| map[o]).collect();
            let id = out.g.add_node(node.clone());
            for (slot, o) in ops.into_iter().enumerate() {
                out.g.add_edge(o, id, slot as u32);
            }
            map.insert(n, id);
        }
        for (i, r) in roots.iter().enumerate() {
            out.set_output(&format!("out{i}"), map[r]);
        }
        Ok(out)
    }

    /// Check every node's type against its operands and the graph's ports.
    pub fn verify(&self) -> Result<(), IrError> {
        if petgraph::algo::is_cyclic_directed(&self.g) {
            return Err(IrError::new("graph has a cycle"));
        }
        for id in self.g.node_indices() {
            let n = &self.g[id];
            let ops = self.operands(id);
            let slots: Vec<u32> = {
                let mut s: Vec<u32> = self.g.edges_directed(id, Direction::Incoming).map(|e| *e.weight()).collect();
                s.sort_unstable();
                s
            };
            if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
                return Err(IrError::new(format!("{}: operand slots {slots:?} are not dense", n.name)));
            }
            match &n.op {
                Op::Input { index } => {
                    let p = self.inputs.get(*index).ok_or_else(|| IrError::new("input index out of range"))?;
                    if p.node != id {
                        return Err(IrError::new(format!("input {index} is not registered as a port")));
                    }
                }
                op => {
                    let tys: Vec<&TensorType> = ops.iter().map(|&o| &self.g[o].ty).collect();
                    let t = infer(op, &tys).map_err(|e| e.context(n.name.clone()))?;
                    if t != n.ty {
                        return Err(IrError::new(format!("{}: stored type {} but operands give {}", n.name, n.ty, t)));
                    }
                }
            }
        }
        for p in self.inputs.iter().chain(&self.outputs) {
            if !self.g.contains_node(p.node) {
                return Err(IrError::new(format!("port {} refers to a removed node", p.name)));
            }
        }
        for s in &self.state {
            let input = self.inputs.iter().find(|p| &p.name == s);
            let output = self.outputs.iter().find(|p| &p.name == s);
            match (input, output) {
                (Some(i), Some(o)) if self.g[i.node].ty == self.g[o.node].ty => {}
                (Some(_), Some(_)) => return Err(IrError::new(format!("state '{s}' changes type between input and output"))),
                _ => return Err(IrError::new(format!("state '{s}' needs both an input and an output"))),
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Graph {
    /// One line per node in topological order: `%id = op[attrs](%a, %b) : type  # name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.inputs {
            writeln!(f, "input {} = %{} : {}", p.name, p.node.index(), self.g[p.node].ty)?;
        }
        for id in self.topo_order() {
            let n = &self.g[id];
            if matches!(n.op, Op::Input { .. }) {
                continue;
            }
            let args: Vec<String> = self.operands(id).iter().map(|o| format!("%{}", o.index())).collect();
            writeln!(f, "%{} = {}({}) : {}  # {}", id.index(), n.op, args.join(", "), n.ty, n.name)?;
        }
        for p in &self.outputs {
            writeln!(f, "output {} = %{}", p.name, p.node.index())?;
        }
        Ok(())
    }
}
