//! Neural-network building blocks as compositions of primitives, on the [`Builder`].
//!
//! Owns every NN operator a frontend needs beyond the primitives: activations and softmax
//! ([`activation`]), normalisations ([`norm`]), scaled-dot-product attention with masks and
//! grouped-query heads ([`attention`]), rotary position embeddings ([`rope`]) and convolution
//! geometry (`auto_pad`, padding, channel bias: [`conv`]). Each is the textbook definition written
//! with [`Builder`] primitives; fusion puts them back together.
//!
//! Must not: know a source format. The ONNX importer's operators and the checkpoint builders
//! are thin adapters that read their attributes or config and call these; a new frontend calls
//! them too instead of writing its own attention.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod norm;
pub mod rope;

pub use attention::{AttentionOptions, AttentionOutputs, CausalOffset, FullyMaskedRows};
pub use conv::{AutoPad, ConvGeometry};
pub use rope::RopeOptions;
