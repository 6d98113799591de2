//! `odc-runtime`: what an application needs to use a compiled odc module, and nothing else.
//!
//! Owns: the module ABI ([`abi`]: the `#[repr(C)]` structures, status codes and layout that
//! generated code and every host share), and, with the `std` feature, a [`loader`] for shared
//! modules (`dlopen`, magic and ABI-version checks, external weights), the one [`call`] path into
//! a module's `run` (input validation, context, status mapping) and the
//! [`pool::ThreadPool`] behind the modules' parallel-loop callback, and a decoder's
//! [`session::DecoderSession`] (the KV-cache state, prompt chunking and the context limit).
//!
//! Must not: contain math kernels (every kernel is generated code) or depend on any compiler
//! crate. Without `std` only [`abi`] remains, for `no_std` hosts that link modules statically.

#![cfg_attr(not(feature = "std"), no_std)]

pub mod abi;
#[cfg(feature = "std")]
pub mod call;
#[cfg(feature = "std")]
pub mod loader;
#[cfg(feature = "std")]
pub mod pool;
#[cfg(feature = "std")]
pub mod session;

pub use abi::Status;
#[cfg(feature = "std")]
pub use call::{Arena, EntryFn, EntryPoint, RunError, State, TensorInfo};
#[cfg(feature = "std")]
pub use loader::{LoadError, Module, ModuleInfo, StepInfo};
#[cfg(feature = "std")]
pub use pool::ThreadPool;
#[cfg(feature = "std")]
pub use session::{DecoderEntries, DecoderSession};
