//! Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray, 2016).
//!
//! Each 4x4 output tile is computed from a 6x6 input tile with 36 products per channel pair
//! instead of 144: `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`. The lowering is four steps:
//!
//! 1. the weights `U = G g Gᵀ` are transformed (and packed as GEMM A panels) at compile time;
//! 2. an input-transform kernel writes `V[36][Ci][tiles] = Bᵀ d B` for every tile, reading a
//!    zero-padded copy of the input whose size is a whole number of tiles;
//! 3. one batched GEMM computes `M[36][Co][tiles] = U · V`;
//! 4. output-transform kernels compute `Aᵀ M A` and the fused epilogue (bias, activation,
//!    residual, ...) for every output element: full tiles, then the partial tile row and column
//!    when the output size is not a multiple of 4, each with statically known valid elements.
//!
//! The transforms are straight-line sums with constant coefficients (zeros skipped, ±1 as
//! adds), so they cost a few adds per element next to the GEMM's `2 * Co` flops.

use super::emit::KernelLowering;
use super::program::BufferKind;
use super::LowerState;
use crate::kernel::{Body, Gemm, GemmElem, GemmOperand, KernelBuilder, Store, E};
use odc_ir::{DType, Graph, IrError, NodeId, Op, PadMode, Scalar, Tensor, TensorType};

/// Input tile side, output tile side.
const T_IN: usize = 6;
const T_OUT: usize = 4;

const BT: [[f64; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

const AT: [[f64; 6]; 4] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// What this lowering relies on (when and whether Winograd pays is the kernel choice's
/// decision, `odc_passes::kernel_choice`): an f32 2-D 3x3 convolution, stride 1, dilation 1, one
/// group, constant f32 weights.
fn check_applies(g: &Graph, c: NodeId, name: &str) -> Result<(), IrError> {
    let Op::Conv(cv) = &g.node(c).op else { return Err(IrError::new(format!("{name}: Winograd needs a convolution"))) };
    let ops = g.operands(c);
    let (xs, ws) = (&g.ty(ops[0]).shape, &g.ty(ops[1]).shape);
    let constant_f32 = matches!(&g.node(ops[1]).op, Op::Constant(t) if t.dtype == DType::F32);
    let applies = g.node(c).ty.dtype == DType::F32
        && xs.len() == 4
        && ws[2..] == [3, 3]
        && cv.groups == 1
        && cv.strides == [1, 1]
        && cv.dilations == [1, 1]
        && constant_f32;
    if applies {
        Ok(())
    } else {
        Err(IrError::new(format!("{name}: the plan runs it on Winograd F(4x4,3x3), which needs an f32 3x3 stride-1 convolution with constant weights")))
    }
}

/// The distance in floats between two of the 36 transformed matrices holding `len` floats each:
/// `len` rounded up to whole 64-byte lines, an odd number of them. The input transform writes
/// one element of each matrix per tile; at a distance that is a multiple of 4 KB (512 channels x
/// 4 tiles x 4 bytes = 8 KB) all 36 stores fall in one L1 set, whose 8 ways they evict in turn.
fn conflict_free_stride(len: usize) -> usize {
    let lines = len.div_ceil(16);
    (lines | 1) * 16
}

/// Rows (at least `co`) of the product matrices `M[36][rows][tiles]`, so that the output
/// transform's 36 loads per tile, `rows * tiles` floats apart, spread over at least 8 L1 sets
/// (the GEMM writes its output densely, so the spacing is made by computing a few zero rows).
fn conflict_free_rows(co: usize, tiles: usize) -> usize {
    // A stride of L lines visits 64 / gcd(L, 64) of the 64 sets: at least 8 unless 16 divides L.
    let spread = |rows: usize| {
        let bytes = rows * tiles * 4;
        bytes % 64 != 0 || (bytes / 64) % 16 != 0
    };
    (co..co + 64).find(|&r| spread(r)).unwrap_or(co)
}

/// `sum_j coef[j] * x[j]` with zero terms skipped and unit coefficients as adds/subtracts.
fn lincomb(kb: &mut KernelBuilder, coef: &[f64], x: &[E]) -> E {
    let mut acc: Option<E> = None;
    for (&c, &v) in coef.iter().zip(x) {
        if c == 0.0 {
            continue;
        }
        acc = Some(match (acc, c) {
            (None, 1.0) => v,
            (None, _) => {
                let k = kb.constant(DType::F32, c);
                kb.binary(crate::kernel::KBinary::Mul, k, v)
            }
            (Some(a), 1.0) => kb.binary(crate::kernel::KBinary::Add, a, v),
            (Some(a), -1.0) => kb.binary(crate::kernel::KBinary::Sub, a, v),
            (Some(a), _) => {
                let k = kb.constant(DType::F32, c);
                let t = kb.binary(crate::kernel::KBinary::Mul, k, v);
                kb.binary(crate::kernel::KBinary::Add, a, t)
            }
        });
    }
    acc.unwrap_or_else(|| kb.constant(DType::F32, 0.0))
}

/// `U = G g Gᵀ` for every (co, ci), written straight into GEMM A panels: the 36 matrices
/// `[rows][Ci]` (`rows >= Co`, the rows past `Co` zero), each packed like [`super::pack_a`]
/// packs one group (`[rows / mr][Ci][mr]`, zero rows pad), in one pass (512-channel layers have
/// 9.4M elements; transforming, then packing, then copying cost a third of a second of
/// resnet50's compile). Row `xi` of `U` needs only row `xi` of `G g`, and its six matrices are
/// contiguous, so the six rows are computed in parallel (the transforms were most of resnet50's
/// lowering time).
fn transform_weights_packed(w: &[f32], co: usize, ci: usize, rows: usize, mr: usize) -> Vec<f32> {
    let panels = rows.div_ceil(mr);
    let matrix = panels * ci * mr;
    let mut out = vec![0f32; 36 * matrix];
    let row = |xi: usize, dst: &mut [f32]| {
        // Panel by panel, so each of the six output streams is written sequentially.
        for po in 0..panels {
            for i in 0..ci {
                for lo in 0..mr.min(co.saturating_sub(po * mr)) {
                    let o = po * mr + lo;
                    let g = &w[(o * ci + i) * 9..(o * ci + i) * 9 + 9];
                    // Row xi of G g, then its products with Gᵀ, in f64.
                    let t: [f64; 3] = std::array::from_fn(|c| G[xi][0] * g[c] as f64 + G[xi][1] * g[3 + c] as f64 + G[xi][2] * g[6 + c] as f64);
                    for (nu, gn) in G.iter().enumerate() {
                        dst[((nu * panels + po) * ci + i) * mr + lo] = (t[0] * gn[0] + t[1] * gn[1] + t[2] * gn[2]) as f32;
                    }
                }
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(T_IN);
    let mut rows_left: Vec<(usize, &mut [f32])> = out.chunks_mut(T_IN * matrix).enumerate().collect();
    std::thread::scope(|s| {
        let per = T_IN.div_ceil(threads);
        while !rows_left.is_empty() {
            let batch: Vec<_> = rows_left.drain(..per.min(rows_left.len())).collect();
            s.spawn(move || batch.into_iter().for_each(|(xi, dst)| row(xi, dst)));
        }
    });
    out
}

impl<'g> LowerState<'g> {
    /// Lower convolution `c` (the contraction of kernel root `root`, written to `out`) with
    /// Winograd F(4x4, 3x3).
    pub(super) fn lower_winograd(&mut self, c: NodeId, root: NodeId, out: usize, name: &str) -> Result<(), IrError> {
        let g = self.g;
        check_applies(g, c, name)?;
        let ops = g.operands(c);
        let (x, w) = (ops[0], ops[1]);
        let (xs, os) = (g.ty(x).shape.clone(), g.ty(c).shape.clone());
        let (nb, ci, co) = (xs[0], xs[1], os[1]);
        let (oh, ow) = (os[2], os[3]);
        let (ty_n, tx_n) = (oh.div_ceil(T_OUT), ow.div_ceil(T_OUT));
        let tiles = nb * ty_n * tx_n;
        let tile = self.opts.tile(co, ci);
        let mr = tile.mr;

        // 1. Weights.
        let Op::Constant(wt) = &g.node(w).op else { unreachable!("checked by check_applies") };
        let m_rows = conflict_free_rows(co, tiles);
        let u = transform_weights_packed(&wt.f32_values()?, co, ci, m_rows, mr);
        let u_buf = self.add_weight(Tensor::from_f32_vec(vec![u.len()], u), &format!("{}_winograd", g.node(w).name));

        // 2. Input: zero-padded to whole tiles, then transformed.
        let (src, low) = match &g.node(x).op {
            Op::Pad { low, high, interior, mode: PadMode::Constant(Scalar::F64(z)) }
                if *z == 0.0 && interior.iter().all(|&i| i == 0) && low.iter().chain(high).all(|&p| p >= 0) =>
            {
                (g.operands(x)[0], low.clone())
            }
            _ => (x, vec![0; 4]),
        };
        let (hp, wp) = (T_OUT * ty_n + 2, T_OUT * tx_n + 2);
        let padded_ty = TensorType::new(DType::F32, vec![nb, ci, hp, wp]);
        let padded = self.new_buffer(BufferKind::Temp { offset: 0 }, DType::F32, padded_ty.num_elements(), &format!("{name}_winograd_pad"));
        self.write_padded(src, padded, &padded_ty, &low, Scalar::F64(0.0), name)?;
        let v_stride = conflict_free_stride(ci * tiles);
        let v_buf = self.new_buffer(BufferKind::Temp { offset: 0 }, DType::F32, 36 * v_stride, &format!("{name}_winograd_v"));
        {
            let mut kl = KernelLowering::new(self, None, v_buf);
            let pslot = kl.slot(padded);
            let (vars, idx) = kl.domain(&[nb, ci, ty_n, tx_n]);
            let (n, cc, ty, tx) = (idx[0], idx[1], idx[2], idx[3]);
            let kb = &mut kl.kb;
            let plane = kb.flat_index(&[n, cc], &[nb, ci]);
            let plane = kb.mul_c(plane, (hp * wp) as i64);
            let r0 = kb.mul_c(ty, T_OUT as i64);
            let c0 = kb.mul_c(tx, T_OUT as i64);
            let mut d = vec![];
            for i in 0..T_IN {
                let r = kb.add_c(r0, i as i64);
                let r = kb.mul_c(r, wp as i64);
                let row = kb.add(plane, r);
                for j in 0..T_IN {
                    let col = kb.add_c(c0, j as i64);
                    let at = kb.add(row, col);
                    d.push(kb.load(pslot, at));
                }
            }
            // t = Bᵀ d (6x6), V = t B.
            let t: Vec<Vec<E>> = (0..T_IN)
                .map(|xi| (0..T_IN).map(|j| lincomb(kb, &BT[xi], &(0..T_IN).map(|i| d[i * T_IN + j]).collect::<Vec<_>>())).collect())
                .collect();
            let tile = kb.flat_index(&[n, ty, tx], &[nb, ty_n, tx_n]);
            let mut stores = vec![];
            for xi in 0..T_IN {
                for nu in 0..T_IN {
                    let value = lincomb(kb, &BT[nu], &t[xi]);
                    let matrix = kb.i64c(((xi * T_IN + nu) * v_stride) as i64);
                    let row = kb.mul_c(cc, tiles as i64);
                    let at = kb.add(matrix, row);
                    let index = kb.add(at, tile);
                    stores.push(Store { index: Some(index), value });
                }
            }
            let (k, args) = kl.finish(format!("{name}_winograd_in"), vars, Body::Map { stores });
            self.push_kernel(k, args);
        }

        // 3. M[36][m_rows][tiles] = U V (rows past Co are zero and never read).
        let m_buf = self.new_buffer(BufferKind::Temp { offset: 0 }, DType::F32, 36 * m_rows * tiles, &format!("{name}_winograd_m"));
        {
            let mut kl = KernelLowering::new(self, None, m_buf);
            let (vars, idx) = kl.gemm_domain(&[36, m_rows, tiles]);
            let a_base = kl.kb.mul_c(idx[0], (m_rows.div_ceil(mr) * mr * ci) as i64);
            let b_base = kl.kb.mul_c(idx[0], v_stride as i64);
            let a = GemmOperand { buf: kl.slot(u_buf), base: a_base, row_stride: ci as i64, col_stride: 1, panel: Some((ci * mr) as i64), padded_cols: false };
            let b = GemmOperand { buf: kl.slot(v_buf), base: b_base, row_stride: tiles as i64, col_stride: 1, panel: None, padded_cols: false };
            let epilogue = kl.kb.acc();
            let gemm = Gemm { m: m_rows, n: tiles, k: ci, a, b, elem: GemmElem::F32, epilogue };
            let (k, args) = kl.finish_gemm(format!("{name}_winograd_gemm"), vars, gemm, tile);
            self.push_kernel(k, args);
        }

        // 4. Output transforms with the epilogue: full tiles, then partial tile row, column, corner.
        let (fy, fx) = (oh / T_OUT, ow / T_OUT);
        let (ry, rx) = (oh % T_OUT, ow % T_OUT);
        let regions = [
            (Some(fy), Some(fx), T_OUT, T_OUT, "out"),
            (None, Some(fx), ry, T_OUT, "out_row"),
            (Some(fy), None, T_OUT, rx, "out_col"),
            (None, None, ry, rx, "out_corner"),
        ];
        for (tiles_y, tiles_x, valid_a, valid_b, suffix) in regions {
            let count_y = tiles_y.unwrap_or(1);
            let count_x = tiles_x.unwrap_or(1);
            if valid_a == 0 || valid_b == 0 || count_y == 0 || count_x == 0 {
                continue;
            }
            let mut kl = KernelLowering::new(self, Some(root), out);
            kl.acc_node = Some(c);
            let mslot = kl.slot(m_buf);
            let mut dims = vec![nb, co];
            dims.extend(tiles_y);
            dims.extend(tiles_x);
            let (vars, idx) = kl.domain(&dims);
            let (n, o) = (idx[0], idx[1]);
            let ty = match tiles_y {
                Some(_) => idx[2],
                None => kl.kb.i64c(fy as i64),
            };
            let tx = match tiles_x {
                Some(_) => idx[dims.len() - 1],
                None => kl.kb.i64c(fx as i64),
            };
            let tile = kl.kb.flat_index(&[n, ty, tx], &[nb, ty_n, tx_n]);
            let m: Vec<E> = (0..36)
                .map(|b| {
                    let row = kl.kb.i64c((b * m_rows) as i64);
                    let row = kl.kb.add(row, o);
                    let at = kl.kb.mul_c(row, tiles as i64);
                    let at = kl.kb.add(at, tile);
                    kl.kb.load(mslot, at)
                })
                .collect();
            // t = Aᵀ M (4x6), Y = t A (4x4).
            let t: Vec<Vec<E>> = (0..valid_a)
                .map(|a| (0..T_IN).map(|nu| lincomb(&mut kl.kb, &AT[a], &(0..T_IN).map(|xi| m[xi * T_IN + nu]).collect::<Vec<_>>())).collect())
                .collect();
            let oy0 = kl.kb.mul_c(ty, T_OUT as i64);
            let ox0 = kl.kb.mul_c(tx, T_OUT as i64);
            let mut stores = vec![];
            for (a, ta) in t.iter().enumerate() {
                for (bb, at_row) in AT.iter().enumerate().take(valid_b) {
                    let y = lincomb(&mut kl.kb, at_row, ta);
                    kl.acc_value = Some(y);
                    let oy = kl.kb.add_c(oy0, a as i64);
                    let ox = kl.kb.add_c(ox0, bb as i64);
                    let ridx = [n, o, oy, ox];
                    let value = kl.epilogue(root, &ridx)?;
                    let index = kl.kb.flat_index(&ridx, &os);
                    stores.push(Store { index: Some(index), value });
                }
            }
            let (k, args) = kl.finish(format!("{name}_winograd_{suffix}"), vars, Body::Map { stores });
            self.push_kernel(k, args);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{conflict_free_rows, conflict_free_stride};

    #[test]
    fn matrix_strides_are_an_odd_number_of_lines() {
        // 512 channels x 4 tiles: 8 KB apart would put all 36 matrices in one L1 set.
        assert_eq!(conflict_free_stride(512 * 4), 2064);
        assert_eq!(conflict_free_stride(16 * 3), 48);
        assert_eq!(conflict_free_stride(1), 16);
        for len in 1..5000 {
            let s = conflict_free_stride(len);
            assert!(s >= len && s % 16 == 0 && (s / 16) % 2 == 1 && s - len < 32, "{len} -> {s}");
        }
    }

    #[test]
    fn product_rows_spread_over_l1_sets() {
        // resnet50: 512 x 4 tiles (8 KB apart), 256 x 16 (16 KB), 64 x 196 (49 KB, 16 lines in common).
        assert_eq!(conflict_free_rows(512, 4), 513);
        assert_eq!(conflict_free_rows(256, 16), 257);
        assert_eq!(conflict_free_rows(64, 196), 65);
        assert_eq!(conflict_free_rows(48, 5), 48);
        for co in 16..600 {
            for tiles in [4, 9, 16, 36, 49, 64, 196, 784] {
                let r = conflict_free_rows(co, tiles);
                let bytes = r * tiles * 4;
                let sets = if bytes % 64 != 0 { 64 } else { (0..64).map(|i| i * (bytes / 64) % 64).collect::<std::collections::HashSet<_>>().len() };
                assert!(r >= co && r < co + 64 && sets >= 8, "{co} x {tiles} -> {r}");
            }
        }
    }
}
