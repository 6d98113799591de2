//! The fusion plan the lowering follows. Plans are made by passes (`odc_passes::fusion` for the
//! greedy policy, `odc_passes::saturate` for equality saturation); re-exported here so backend
//! users need one import.

pub use odc_passes::fusion::*;
pub use odc_passes::kernel_choice::KernelKind;
