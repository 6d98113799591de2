//! Which generator computes a contraction: the one kernel-kind decision.
//!
//! [`KernelKind`] names the code generators a `MatMul`/`Conv` can run on. [`alternatives`] says,
//! from facts about the contraction alone ([`Contraction`]: op, dtypes, shapes, which operands
//! are constant or hold bytes), which generators can take it. Equality saturation offers every
//! alternative to its cost model (`saturate::kernels`), the greedy and unfused policies take the
//! first ([`preferred`]), and the chosen kind travels in the [`crate::fusion::FusionPlan`] to the
//! lowering, which obeys it and re-derives nothing.
//!
//! A new microkernel family (a LUT low-bit GEMM, a contraction placed on an NPU) is a new
//! variant here, a legality test in [`alternatives`], a price in `saturate::cost` and a lowering
//! in `backends`.
//!
//! Must not: look at graphs or e-graphs directly (both build a [`Contraction`]), or know how a
//! kind is lowered.

use odc_ir::{DType, Op};
use std::fmt;

/// The generator that computes a contraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelKind {
    /// The generic loop nest (depthwise convolutions, other dtypes, small or odd shapes).
    Direct,
    /// The register-tiled f32 GEMM microkernel over weights packed at compile time (MatMul;
    /// Conv as an implicit GEMM over an im2col view or the input itself).
    GemmF32,
    /// The int8 dot-product GEMM (`vpdpbusd`, `sdot`/`usdot`): an i32 MatMul of 8-bit operands.
    Int8Dot,
    /// Winograd F(4x4,3x3): input transform, 36 batched f32 GEMMs, output transform.
    Winograd,
}

impl KernelKind {
    /// Every kind, in preference order for policies without a cost model.
    pub const ALL: [KernelKind; 4] = [KernelKind::Winograd, KernelKind::Int8Dot, KernelKind::GemmF32, KernelKind::Direct];

    /// True for the kinds built on a GEMM microkernel (they take a fused epilogue).
    pub fn is_gemm(self) -> bool {
        !matches!(self, KernelKind::Direct)
    }

    /// The short name used in reports and golden files.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Direct => "direct",
            KernelKind::GemmF32 => "gemm",
            KernelKind::Int8Dot => "int8-dot",
            KernelKind::Winograd => "winograd",
        }
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An operand of an i32 product that holds 8-bit values (a cast from i8/u8, or an i32 constant
/// in byte range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteOperand {
    pub signed: bool,
    pub constant: bool,
}

/// What the kernel choice needs to know about one contraction.
#[derive(Clone, Debug)]
pub struct Contraction<'a> {
    pub op: &'a Op,
    pub dtype: DType,
    pub out_shape: &'a [usize],
    /// `[A, B]` of a MatMul, `[X, W]` of a Conv.
    pub operand_shapes: [&'a [usize]; 2],
    /// The second operand (B, W) is a constant f32 tensor.
    pub const_f32_weights: bool,
    /// Each operand's byte source, when it holds 8-bit values as i32.
    pub bytes: [Option<ByteOperand>; 2],
}

/// The kinds that can compute `c` besides [`KernelKind::Direct`], which can compute any
/// contraction.
pub fn alternatives(c: &Contraction) -> Vec<KernelKind> {
    let mut kinds = vec![];
    match c.op {
        Op::MatMul if c.dtype == DType::F32 => kinds.push(KernelKind::GemmF32),
        Op::MatMul if c.dtype == DType::I32 && int8_dot_eligible(c) => kinds.push(KernelKind::Int8Dot),
        Op::Conv(cv) if c.dtype == DType::F32 => {
            let w = c.operand_shapes[1];
            // Depthwise (one input and one output channel per group) is better served by the
            // direct loop.
            let depthwise = w[1] == 1 && w[0] == cv.groups && cv.groups > 1;
            if !depthwise {
                kinds.push(KernelKind::GemmF32);
            }
            if winograd_eligible(c, cv) {
                kinds.push(KernelKind::Winograd);
            }
        }
        _ => {}
    }
    kinds
}

/// The kind a policy without a cost model takes: the first alternative in
/// [`KernelKind::ALL`]'s order (Winograd where it applies, else the GEMM), else the direct loop.
pub fn preferred(c: &Contraction) -> KernelKind {
    let alts = alternatives(c);
    KernelKind::ALL.into_iter().find(|k| alts.contains(k)).unwrap_or(KernelKind::Direct)
}

/// B constant (packed at compile time) and at least one operand signed: an unsigned x unsigned
/// byte product overflows the dot product's 16-bit intermediate.
fn int8_dot_eligible(c: &Contraction) -> bool {
    match c.bytes {
        [Some(a), Some(b)] => b.constant && (a.signed || b.signed) && c.operand_shapes[0].len() >= 2 && c.operand_shapes[1].len() >= 2,
        _ => false,
    }
}

/// Output tiles (all images) below which Winograd's batched GEMM is too narrow to win. A 7x7
/// map's four tiles still win: its GEMM streams four times the direct convolution's weights (36
/// 6x6 matrices per channel pair instead of 9 taps) but does a third of the products
/// (resnet50's 512-channel 7x7 convolutions: 5.6 → 2.4 + 0.6 ms transforms, `odc bench --top`).
pub const WINOGRAD_MIN_TILES: usize = 4;
/// Channels below which the Winograd transforms cost more than they save.
pub const WINOGRAD_MIN_CHANNELS: usize = 16;
/// Winograd F(4x4,3x3)'s output tile side.
pub const WINOGRAD_TILE: usize = 4;

/// Winograd F(4x4,3x3) applies: f32, 2-D, 3x3, stride 1, dilation 1, one group, constant
/// weights, enough channels and tiles.
fn winograd_eligible(c: &Contraction, cv: &odc_ir::Conv) -> bool {
    let (xs, ws, os) = (c.operand_shapes[0], c.operand_shapes[1], c.out_shape);
    xs.len() == 4
        && ws[2..] == [3, 3]
        && cv.groups == 1
        && cv.strides == [1, 1]
        && cv.dilations == [1, 1]
        && c.const_f32_weights
        && ws[0] >= WINOGRAD_MIN_CHANNELS
        && ws[1] >= WINOGRAD_MIN_CHANNELS
        && winograd_tiles(os) >= WINOGRAD_MIN_TILES
}

/// Output tiles of a Winograd convolution with output shape `[n, c, h, w]`.
pub fn winograd_tiles(out_shape: &[usize]) -> usize {
    let dim = |i: usize| out_shape.get(i).copied().unwrap_or(0);
    dim(0) * dim(2).div_ceil(WINOGRAD_TILE) * dim(3).div_ceil(WINOGRAD_TILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(groups: usize) -> Op {
        Op::Conv(odc_ir::Conv { strides: vec![1, 1], dilations: vec![1, 1], groups })
    }

    fn facts<'a>(op: &'a Op, x: &'a [usize], w: &'a [usize], out: &'a [usize], konst: bool) -> Contraction<'a> {
        Contraction { op, dtype: DType::F32, out_shape: out, operand_shapes: [x, w], const_f32_weights: konst, bytes: [None, None] }
    }

    #[test]
    fn a_3x3_convolution_with_channels_and_tiles_offers_winograd_and_prefers_it() {
        let op = conv(1);
        let c = facts(&op, &[1, 32, 8, 8], &[32, 32, 3, 3], &[1, 32, 8, 8], true);
        assert_eq!(alternatives(&c), vec![KernelKind::GemmF32, KernelKind::Winograd]);
        assert_eq!(preferred(&c), KernelKind::Winograd);
        // Run-time weights cannot be transformed at compile time.
        let c = facts(&op, &[1, 32, 8, 8], &[32, 32, 3, 3], &[1, 32, 8, 8], false);
        assert_eq!(alternatives(&c), vec![KernelKind::GemmF32]);
        // Three tiles are too few.
        let c = facts(&op, &[1, 32, 4, 12], &[32, 32, 3, 3], &[1, 32, 4, 12], true);
        assert_eq!(preferred(&c), KernelKind::GemmF32);
    }

    #[test]
    fn a_depthwise_convolution_runs_direct() {
        let op = conv(8);
        let c = facts(&op, &[1, 8, 8, 8], &[8, 1, 3, 3], &[1, 8, 8, 8], true);
        assert!(alternatives(&c).is_empty());
        assert_eq!(preferred(&c), KernelKind::Direct);
    }

    #[test]
    fn an_i32_matmul_takes_the_dot_product_only_with_constant_signed_bytes() {
        let op = Op::MatMul;
        let bytes = |a: bool, b: bool, bc: bool| [Some(ByteOperand { signed: a, constant: false }), Some(ByteOperand { signed: b, constant: bc })];
        let mut c = Contraction { op: &op, dtype: DType::I32, out_shape: &[4, 4], operand_shapes: [&[4, 8], &[8, 4]], const_f32_weights: false, bytes: bytes(true, false, true) };
        assert_eq!(alternatives(&c), vec![KernelKind::Int8Dot]);
        c.bytes = bytes(false, false, true);
        assert!(alternatives(&c).is_empty(), "u8 x u8 overflows the 16-bit intermediate");
        c.bytes = bytes(true, true, false);
        assert!(alternatives(&c).is_empty(), "B must be packed at compile time");
        c.bytes = [None, None];
        assert!(alternatives(&c).is_empty());
    }
}
