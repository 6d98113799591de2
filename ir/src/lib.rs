//! `odc-ir`: the graph IR every frontend produces and every pass and backend consumes.
//!
//! Owns: element types ([`DType`]), constant tensors backed by owned or memory-mapped bytes
//! ([`Tensor`]), the primitive op set ([`Op`]), the graph ([`Graph`], on `petgraph`) with its type
//! inference, verifier and printer, and the [`Evaluator`] interface through which passes fold
//! constants without knowing how code is generated.
//!
//! Must not: know about ONNX, checkpoints or Cranelift. No other odc crate is a dependency.
//!
//! ```text
//! frontend ──► Graph (primitive ops, concrete shapes) ──► passes ──► backends
//! ```
//!
//! Shapes in the graph are concrete. Symbolic dims exist only on declared model inputs
//! ([`SymDim`]) and are bound (from `--shape` overrides or sample inputs) before a graph is built:
//! the static memory plan and compile-time weight packing need every extent.

pub mod dtype;
pub mod graph;
pub mod infer;
pub mod op;
pub mod tensor;

pub use dtype::{DType, Scalar};
pub use graph::{Graph, Node, NodeId, Port, TensorType};
pub use infer::broadcast_shapes;
pub use op::{BinaryOp, Conv, Op, OpFamily, PadMode, ReduceOp, ScatterReduction, UnaryOp};
pub use tensor::{Bytes, Tensor};

use std::fmt;

/// A dimension of a declared model input: known, or named and bound later.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SymDim {
    Fixed(usize),
    Named(String),
}

impl fmt::Display for SymDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SymDim::Fixed(d) => write!(f, "{d}"),
            SymDim::Named(n) => write!(f, "{n}"),
        }
    }
}

/// An error in building or checking IR. Carries a message with context prefixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrError(pub String);

impl IrError {
    pub fn new(msg: impl Into<String>) -> Self {
        IrError(msg.into())
    }
    /// Prefix the message with where it happened.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        IrError(format!("{ctx}: {}", self.0))
    }
}

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IrError {}

/// Computes the values of constant sub-graphs. Implemented by a backend (odc's JIT) so that
/// constant folding uses exactly the code that would run at inference time.
pub trait Evaluator {
    /// Evaluate `nodes` of `graph`, whose transitive operands are all constants or iotas.
    fn evaluate(&self, graph: &Graph, nodes: &[NodeId]) -> Result<Vec<Tensor>, IrError>;
}
