//! `odc-passes`: graph construction and graph-to-graph transformations.
//!
//! Owns: the [`Builder`] every frontend builds graphs with (shape-checked primitives, numpy-style
//! conveniences, compile-time evaluation of constant sub-graphs), the neural-network operators
//! as compositions of primitives ([`nn`]), constant folding ([`fold`]), folding per-channel affine
//! maps into contraction weights ([`affine`]) and static memory planning ([`memory`]).
//!
//! Must not: generate machine code or know about a source format. Constant evaluation goes
//! through the [`odc_ir::Evaluator`] it is given, so this crate stays independent of backends.

pub mod affine;
pub mod build;
pub mod fold;
pub mod fusion;
pub mod kernel_choice;
pub mod memory;
pub mod nn;
pub mod saturate;

pub use build::{norm_axis, Builder};
