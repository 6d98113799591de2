//! The e-graph language and its analysis.
//!
//! [`ONode`] mirrors the primitive op set: every [`Op`] is a `Prim` whose attributes live in an
//! interned table (so e-nodes stay small and hash fast), graph inputs and constants are leaves,
//! and two node kinds exist only in the e-graph: `Gemm` (a contraction run by a GEMM-family
//! microkernel of a [`KernelKind`], a kernel choice) and `Kernel` (a fused loop nest described by
//! a [`Template`]).
//!
//! The analysis ([`Tables`]) gives every e-class an [`Info`]: its tensor type (interned) and, for
//! constants, the constant's index. Merging two classes of different types is a rule bug; it is
//! recorded in [`Tables::conflicts`] and turned into an error after the run, never a panic.

use crate::kernel_choice::KernelKind;
use egg::{Analysis, DidMerge, EGraph, Id, Language};
use odc_ir::{Evaluator, Op, Tensor, TensorType};
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

/// An interned primitive op (attributes included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u32);

/// An interned fused-kernel template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TplId(pub u32);

/// A contraction on a GEMM-family microkernel: which generator, and the contraction op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmOp {
    pub kind: KernelKind,
    pub op: OpId,
}

/// An interned tensor type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TyId(pub u32);

/// An e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ONode {
    /// The `i`-th graph input.
    Input(u32),
    /// Constant `i` of [`Tables::consts`].
    Const(u32),
    /// A primitive op over its operands.
    Prim(OpId, Vec<Id>),
    /// A contraction (MatMul/Conv) computed by a GEMM-family microkernel ([`GemmOp::kind`]:
    /// f32 GEMM, int8 dot product, Winograd), weights packed at compile time.
    Gemm(GemmOp, Vec<Id>),
    /// A fused kernel: one loop nest evaluating the template over these argument buffers.
    Kernel(TplId, Vec<Id>),
}

impl Language for ONode {
    type Discriminant = (u8, u32, u8);

    fn discriminant(&self) -> Self::Discriminant {
        match self {
            ONode::Input(i) => (0, *i, 0),
            ONode::Const(c) => (1, *c, 0),
            ONode::Prim(o, _) => (2, o.0, 0),
            ONode::Gemm(g, _) => (3, g.op.0, g.kind as u8),
            ONode::Kernel(t, _) => (4, t.0, 0),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant() && self.children().len() == other.children().len()
    }

    fn children(&self) -> &[Id] {
        match self {
            ONode::Input(_) | ONode::Const(_) => &[],
            ONode::Prim(_, c) | ONode::Gemm(_, c) | ONode::Kernel(_, c) => c,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            ONode::Input(_) | ONode::Const(_) => &mut [],
            ONode::Prim(_, c) | ONode::Gemm(_, c) | ONode::Kernel(_, c) => c,
        }
    }
}

impl fmt::Display for ONode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ONode::Input(i) => write!(f, "input{i}"),
            ONode::Const(c) => write!(f, "const{c}"),
            ONode::Prim(o, _) => write!(f, "prim{}", o.0),
            ONode::Gemm(g, _) => write!(f, "{}{}", g.kind, g.op.0),
            ONode::Kernel(t, _) => write!(f, "kernel{}", t.0),
        }
    }
}

/// A node of a fused-kernel template. Operands are indices of earlier template nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TNode {
    /// Argument `i` of the kernel (a buffer it reads).
    Hole(u16),
    Prim(OpId, Vec<u16>),
    /// The kernel's contraction, computed by a GEMM-family microkernel; the nodes above it form
    /// its epilogue.
    Gemm(GemmOp, Vec<u16>),
}

/// The body of a fused kernel: an expression DAG in post-order, root last. `tys` is each node's
/// type; `origin` the e-class each node came from (for names in reports; not part of identity).
#[derive(Clone, Debug)]
pub struct Template {
    pub nodes: Vec<TNode>,
    pub tys: Vec<TyId>,
    pub origin: Vec<Id>,
}

impl PartialEq for Template {
    fn eq(&self, o: &Self) -> bool {
        self.nodes == o.nodes && self.tys == o.tys
    }
}
impl Eq for Template {}
impl Hash for Template {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.nodes.hash(h);
        self.tys.hash(h);
    }
}

impl Template {
    pub fn root(&self) -> usize {
        self.nodes.len() - 1
    }
    pub fn ty(&self) -> TyId {
        self.tys[self.root()]
    }
    /// Number of compute (non-hole) nodes.
    pub fn size(&self) -> usize {
        self.nodes.iter().filter(|n| !matches!(n, TNode::Hole(_))).count()
    }
    pub fn has_gemm(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n, TNode::Gemm(..)))
    }
    pub fn operands(&self, i: usize) -> &[u16] {
        match &self.nodes[i] {
            TNode::Hole(_) => &[],
            TNode::Prim(_, a) | TNode::Gemm(_, a) => a,
        }
    }
}

/// Constants up to this many elements are interned by value.
const SHARED_CONST_ELEMENTS: usize = 1 << 16;

/// The analysis data of an e-class: small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    pub ty: TyId,
    /// Index into [`Tables::consts`] when the class is a known constant.
    pub konst: Option<u32>,
}

/// Interning tables and the analysis.
pub struct Tables<'e> {
    pub ops: Vec<Op>,
    op_index: HashMap<String, OpId>,
    pub types: Vec<TensorType>,
    type_index: HashMap<TensorType, TyId>,
    pub consts: Vec<Tensor>,
    const_index: HashMap<(odc_ir::DType, Vec<usize>, Vec<u8>), u32>,
    pub inputs: Vec<TensorType>,
    pub tpls: Vec<Template>,
    tpl_index: HashMap<Template, TplId>,
    /// Type mismatches met while merging or typing nodes (rule bugs), reported after the run.
    pub conflicts: Vec<String>,
    /// Evaluates constant sub-graphs for constant folding.
    pub eval: Option<&'e dyn Evaluator>,
    /// Source names (graph node names) of classes, for kernel names and reports. Keys may be
    /// stale ids; look up through `find`.
    pub names: HashMap<Id, String>,
}

pub type OGraph<'e> = EGraph<ONode, Tables<'e>>;

impl<'e> Tables<'e> {
    pub fn new(inputs: Vec<TensorType>, eval: Option<&'e dyn Evaluator>) -> Self {
        Tables {
            ops: vec![],
            op_index: HashMap::new(),
            types: vec![],
            type_index: HashMap::new(),
            consts: vec![],
            const_index: HashMap::new(),
            inputs,
            tpls: vec![],
            tpl_index: HashMap::new(),
            conflicts: vec![],
            eval,
            names: HashMap::new(),
        }
    }

    pub fn intern_op(&mut self, op: Op) -> OpId {
        let key = format!("{op:?}");
        if let Some(&id) = self.op_index.get(&key) {
            return id;
        }
        let id = OpId(self.ops.len() as u32);
        self.ops.push(op);
        self.op_index.insert(key, id);
        id
    }

    pub fn intern_type(&mut self, t: TensorType) -> TyId {
        if let Some(&id) = self.type_index.get(&t) {
            return id;
        }
        let id = TyId(self.types.len() as u32);
        self.types.push(t.clone());
        self.type_index.insert(t, id);
        id
    }

    /// The id of an already interned type.
    pub fn find_type(&self, t: &TensorType) -> Option<TyId> {
        self.type_index.get(t).copied()
    }

    pub fn intern_template(&mut self, t: Template) -> TplId {
        if let Some(&id) = self.tpl_index.get(&t) {
            return id;
        }
        let id = TplId(self.tpls.len() as u32);
        self.tpls.push(t.clone());
        self.tpl_index.insert(t, id);
        id
    }

    /// Add a constant. Small constants are shared by value, so a rule that recomputes one
    /// produces the same e-node instead of a new class.
    pub fn add_const(&mut self, t: Tensor) -> u32 {
        let key = (t.num_elements() <= SHARED_CONST_ELEMENTS).then(|| (t.dtype, t.shape.clone(), t.bytes().to_vec()));
        if let Some(&i) = key.as_ref().and_then(|k| self.const_index.get(k)) {
            return i;
        }
        self.consts.push(t);
        let i = (self.consts.len() - 1) as u32;
        if let Some(k) = key {
            self.const_index.insert(k, i);
        }
        i
    }

    pub fn op(&self, id: OpId) -> &Op {
        &self.ops[id.0 as usize]
    }

    pub fn ty(&self, id: TyId) -> &TensorType {
        &self.types[id.0 as usize]
    }
}

impl Analysis<ONode> for Tables<'_> {
    type Data = Info;

    fn make(egraph: &mut EGraph<ONode, Self>, enode: &ONode, _id: Id) -> Info {
        let child_tys: Vec<TyId> = enode.children().iter().map(|&c| egraph[c].data.ty).collect();
        let a = &mut egraph.analysis;
        match enode {
            ONode::Input(i) => {
                let t = a.inputs.get(*i as usize).cloned().unwrap_or_else(|| TensorType::new(odc_ir::DType::F32, vec![]));
                Info { ty: a.intern_type(t), konst: None }
            }
            ONode::Const(c) => {
                let t = &a.consts[*c as usize];
                let ty = TensorType::new(t.dtype, t.shape.clone());
                Info { ty: a.intern_type(ty), konst: Some(*c) }
            }
            ONode::Prim(op, _) | ONode::Gemm(GemmOp { op, .. }, _) => {
                let tys: Vec<TensorType> = child_tys.iter().map(|&t| a.ty(t).clone()).collect();
                let refs: Vec<&TensorType> = tys.iter().collect();
                let op = a.op(*op).clone();
                match odc_ir::infer::infer(&op, &refs) {
                    Ok(t) => Info { ty: a.intern_type(t), konst: None },
                    Err(e) => {
                        a.conflicts.push(format!("{}: {e}", op.name()));
                        Info { ty: a.intern_type(TensorType::new(odc_ir::DType::F32, vec![])), konst: None }
                    }
                }
            }
            ONode::Kernel(t, _) => Info { ty: a.tpls[t.0 as usize].ty(), konst: None },
        }
    }

    fn merge(&mut self, a: &mut Info, b: Info) -> DidMerge {
        if a.ty != b.ty {
            let (ta, tb) = (self.ty(a.ty).clone(), self.ty(b.ty).clone());
            self.conflicts.push(format!("merged classes of types {ta} and {tb}"));
        }
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            return DidMerge(true, false);
        }
        DidMerge(false, a.konst != b.konst)
    }
}
