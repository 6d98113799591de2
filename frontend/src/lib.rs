//! `odc-frontend`: model formats → graph IR.
//!
//! Owns: [`ModelSource`] (a model of any format, what the driver opens), the ONNX importer
//! ([`onnx`]: protobuf loading, tensors and external data, the operator registry that expands
//! each ONNX operator into primitives, opset-specific semantics) and the Hugging Face checkpoint
//! reader ([`safetensors`]: `config.json` and safetensors weights).
//!
//! Must not: emit anything but graph IR, or know how code is generated. Compile-time constants
//! are evaluated through the [`odc_ir::Evaluator`] the caller provides.

pub mod onnx;
pub mod safetensors;
pub mod source;

pub use source::{DecoderStep, ImportOptions, ModelSource, SourceFormat};

use std::fmt;

/// One unsupported feature, with the node it occurs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// Node name (or the op and its first output when the node is unnamed).
    pub node: String,
    pub op: String,
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node '{}' ({}): {}", self.node, self.op, self.reason)
    }
}

/// Why a model could not be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendError {
    /// The file could not be read.
    Io(String),
    /// The bytes are not a well-formed model.
    Malformed(String),
    /// The model is well-formed but inconsistent (missing values, bad shapes, truncated data).
    Invalid(String),
    /// Input shapes are needed and not known.
    Shape(String),
    /// One unsupported feature (raised inside an operator; collected into `UnsupportedList`).
    Unsupported(String),
    /// Every unsupported feature of the model.
    UnsupportedList(Vec<Unsupported>),
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendError::Io(m) => write!(f, "{m}"),
            FrontendError::Malformed(m) => write!(f, "malformed model: {m}"),
            FrontendError::Invalid(m) => write!(f, "invalid model: {m}"),
            FrontendError::Shape(m) => write!(f, "{m}"),
            FrontendError::Unsupported(m) => write!(f, "unsupported: {m}"),
            FrontendError::UnsupportedList(list) => {
                writeln!(f, "the model uses {} unsupported feature(s):", list.len())?;
                for (i, u) in list.iter().enumerate() {
                    if i + 1 < list.len() {
                        writeln!(f, "  {u}")?;
                    } else {
                        write!(f, "  {u}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for FrontendError {}
