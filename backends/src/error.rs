//! Typed failures below the graph: building a target, generating code, linking.
//!
//! Lowering reports [`odc_ir::IrError`] (it is about the graph); everything after it reports a
//! [`CodegenError`], so a driver can tell a model problem from a tool or target problem.

pub use crate::target::TargetError;

/// Why code generation, object emission or linking failed.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Cranelift rejected a function or the module (a bug in odc's generator).
    #[error("code generation failed: {0}")]
    Cranelift(String),
    /// The request cannot be emitted (e.g. a symbol prefix that is not a C identifier).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write archive: {0}")]
    Archive(String),
    #[error("cannot run linker '{linker}' ({reason}); install it or pass --linker")]
    LinkerNotFound { linker: String, reason: String },
    #[error("linker '{linker}' failed: {stderr}")]
    LinkFailed { linker: String, stderr: String },
}

impl From<CodegenError> for odc_ir::IrError {
    /// For [`odc_ir::Evaluator`] (constant folding through the JIT), whose interface is the IR's.
    fn from(e: CodegenError) -> Self {
        odc_ir::IrError::new(e.to_string())
    }
}
