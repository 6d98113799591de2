//! Contractions on GEMM-family microkernels, as the fusion plan's [`KernelKind`] says: f32
//! MatMul directly, Conv as an implicit GEMM per group (weights as A, pixels as B; 1x1 stride-1
//! convolutions read the input as is, others through an im2col buffer, written in the GEMM's
//! panel layout when the output width allows), the int8 dot-product GEMM, and Winograd
//! (`winograd.rs`). Constant operands are packed into register-tile panels here, at compile
//! time.

use super::emit::KernelLowering;
use super::program::BufferKind;
use super::LowerState;
use odc_passes::fusion::byte_source;
use odc_passes::kernel_choice::KernelKind;
use crate::kernel::{Body, Gemm, GemmElem, GemmOperand, KernelBuilder, E};
use crate::schedule;
use odc_ir::{Bytes, DType, IrError, NodeId, Op, Tensor};

impl<'g> LowerState<'g> {
    /// Lower contraction `c` on the GEMM-family kernel the plan chose, with an epilogue that
    /// computes `root` (which may be `c`).
    pub(super) fn lower_gemm(&mut self, c: NodeId, root: NodeId, out: usize, name: &str) -> Result<(), IrError> {
        let g = self.g;
        let ops = g.operands(c);
        let kind = self.plan.kind_of(c);
        match kind {
            KernelKind::Int8Dot => {
                let bytes = (byte_source(g, ops[0]), byte_source(g, ops[1]));
                let (Some(a8), Some(b8)) = bytes else {
                    return Err(IrError::new(format!("{name}: the plan runs it on the int8 dot product, but its operands are not 8-bit")));
                };
                return self.lower_int8_matmul(c, root, out, name, a8, b8);
            }
            KernelKind::Winograd => return self.lower_winograd(c, root, out, name),
            KernelKind::GemmF32 if g.ty(c).dtype == DType::F32 => {}
            _ => return Err(IrError::new(format!("{name}: the plan runs it on the {kind} kernel, which cannot compute a {} {}", g.ty(c).dtype, g.node(c).op.name()))),
        }
        match g.node(c).op.clone() {
            Op::MatMul => {
                let (ash, bsh) = (g.ty(ops[0]).shape.clone(), g.ty(ops[1]).shape.clone());
                let osh = g.ty(c).shape.clone();
                let r = osh.len();
                let (m, n, k) = (osh[r - 2], osh[r - 1], ash[ash.len() - 1]);
                let tile = self.opts.tile(m, k);
                let nr = tile.nr;
                let a_buf = self.dense_buffer(ops[0])?;
                let b_packed = match &g.node(ops[1]).op {
                    Op::Constant(t) => {
                        let packed = pack_b(t, nr)?;
                        Some(self.add_weight(packed, &format!("{}_packed", g.node(ops[1]).name)))
                    }
                    _ => None,
                };
                let b_buf = match b_packed {
                    Some(b) => b,
                    None => self.dense_buffer(ops[1])?,
                };
                let mut kl = KernelLowering::new(self, Some(root), out);
                kl.acc_node = Some(c);
                let (vars, idx) = kl.gemm_domain(&osh);
                let a_base = batch_offset(&mut kl.kb, &idx[..r - 2], &ash[..ash.len() - 2], (m * k) as i64);
                let b_mat = if b_packed.is_some() { (n.div_ceil(nr) * nr * k) as i64 } else { (k * n) as i64 };
                let b_base = batch_offset(&mut kl.kb, &idx[..r - 2], &bsh[..bsh.len() - 2], b_mat);
                let a = GemmOperand { buf: kl.slot(a_buf), base: a_base, row_stride: k as i64, col_stride: 1, panel: None, padded_cols: false };
                let b = GemmOperand {
                    buf: kl.slot(b_buf),
                    base: b_base,
                    row_stride: n as i64,
                    col_stride: 1,
                    panel: b_packed.map(|_| (k * nr) as i64),
                    padded_cols: b_packed.is_some(),
                };
                let epilogue = kl.epilogue(root, &idx)?;
                let (kern, args) = kl.finish_gemm(name.to_string(), vars, Gemm { m, n, k, a, b, elem: GemmElem::F32, epilogue }, tile);
                self.push_kernel(kern, args);
            }
            Op::Conv(cv) => {
                let (xs, ws) = (g.ty(ops[0]).shape.clone(), g.ty(ops[1]).shape.clone());
                let osh = g.ty(c).shape.clone();
                let sp = xs.len() - 2;
                let groups = cv.groups;
                let (nb, ci, mo, cg) = (xs[0], xs[1], ws[0], ws[1]);
                let mg = mo / groups;
                let ksp: usize = ws[2..].iter().product();
                let kk = cg * ksp;
                let p: usize = osh[2..].iter().product();
                let tile = self.opts.tile(mg, kk);
                let mr = tile.mr;
                // A: the weights, packed per group when constant.
                let (a_buf, a_packed) = match &g.node(ops[1]).op {
                    Op::Constant(t) => {
                        let packed = pack_a(t, groups, mg, kk, mr)?;
                        (self.add_weight(packed, &format!("{}_packed", g.node(ops[1]).name)), true)
                    }
                    _ => (self.dense_buffer(ops[1])?, false),
                };
                // B: the input itself for 1x1 stride-1 convolutions, else an im2col buffer.
                // (Padding its rows to a multiple of nr, to drop the column tail, measured no
                // faster on resnet50.) When the output width is a multiple of nr, im2col writes
                // B in the GEMM's panel layout (`[p / nr][kk][nr]`), each panel contiguously:
                // the 7x7 stride-2 stems' im2col halved (resnet50 1.40 → 0.74 ms), their GEMM
                // time did not change.
                let pointwise = ws[2..].iter().all(|&d| d == 1) && cv.strides.iter().all(|&s| s == 1) && xs[2..] == osh[2..];
                let b_panels = !pointwise && sp == 2 && osh[3] % tile.nr == 0;
                let (b_buf, b_row, b_group_stride, b_batch_stride) = if pointwise {
                    (self.dense_buffer(ops[0])?, p, (cg * p) as i64, (ci * p) as i64)
                } else {
                    let col = self.new_buffer(BufferKind::Temp { offset: 0 }, DType::F32, nb * groups * kk * p, &format!("{name}_im2col"));
                    let panel = b_panels.then_some(tile.nr);
                    self.im2col(ops[0], col, &xs, &ws, &osh, &cv, panel, &format!("{name}_im2col"))?;
                    (col, p, (kk * p) as i64, (groups * kk * p) as i64)
                };
                let mut kl = KernelLowering::new(self, Some(root), out);
                kl.acc_node = Some(c);
                let (vars, idx) = kl.gemm_domain(&[nb, groups, mg, p]);
                let (n_e, grp, i, j) = (idx[0], idx[1], idx[2], idx[3]);
                let a_group = if a_packed { (mg.div_ceil(mr) * mr * kk) as i64 } else { (mg * kk) as i64 };
                let a_base = kl.kb.mul_c(grp, a_group);
                let nb_off = kl.kb.mul_c(n_e, b_batch_stride);
                let g_off = kl.kb.mul_c(grp, b_group_stride);
                let b_base = kl.kb.add(nb_off, g_off);
                let a = GemmOperand {
                    buf: kl.slot(a_buf),
                    base: a_base,
                    row_stride: kk as i64,
                    col_stride: 1,
                    panel: a_packed.then_some((kk * mr) as i64),
                    padded_cols: false,
                };
                let b = GemmOperand {
                    buf: kl.slot(b_buf),
                    base: b_base,
                    row_stride: b_row as i64,
                    col_stride: 1,
                    panel: b_panels.then_some((kk * tile.nr) as i64),
                    padded_cols: false,
                };
                // The root's index: [n, group * mg + i, spatial(j)..].
                let gm = kl.kb.mul_c(grp, mg as i64);
                let ch = kl.kb.add(gm, i);
                let mut ridx = vec![n_e, ch];
                ridx.extend(kl.kb.unflatten(j, &osh[2..]));
                let _ = sp;
                let epilogue = kl.epilogue(root, &ridx)?;
                let (kern, args) = kl.finish_gemm(name.to_string(), vars, Gemm { m: mg, n: p, k: kk, a, b, elem: GemmElem::F32, epilogue }, tile);
                self.push_kernel(kern, args);
            }
            other => return Err(IrError::new(format!("{} is not a contraction", other.name()))),
        }
        Ok(())
    }

    /// An i32 MatMul of 8-bit operands as an int8 dot-product GEMM: A's bytes read row-major
    /// (copied with `k` padded to a multiple of 4 when needed), B's packed at compile time.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lower_int8_matmul(&mut self, c: NodeId, root: NodeId, out: usize, name: &str, a8: (NodeId, bool), b8: (NodeId, bool)) -> Result<(), IrError> {
        let g = self.g;
        let (ash, bsh, osh) = (g.ty(a8.0).shape.clone(), g.ty(b8.0).shape.clone(), g.ty(c).shape.clone());
        let r = osh.len();
        let (m, n, k) = (osh[r - 2], osh[r - 1], ash[ash.len() - 1]);
        let k4 = k.div_ceil(4) * 4;
        let tile = schedule::int8_gemm_tile(m, k4, &self.opts.machine, self.opts.gemm_tile);
        let nr = tile.nr;
        // A: dense bytes, rows padded to k4.
        let a_buf = if k4 == k {
            self.dense_buffer(a8.0)?
        } else {
            let mut padded = ash.clone();
            *padded.last_mut().expect("rank >= 2") = k4;
            let ty = odc_ir::TensorType::new(g.ty(a8.0).dtype, padded);
            let b = self.new_buffer(BufferKind::Temp { offset: 0 }, ty.dtype, ty.num_elements(), &format!("{name}_a8"));
            self.write_padded(a8.0, b, &ty, &vec![0; ash.len()], odc_ir::Scalar::I64(0), &format!("{name}_a8"))?;
            b
        };
        // B: the constant's values as bytes in the dot-product panel layout.
        let Op::Constant(bt) = &g.node(b8.0).op else {
            return Err(IrError::new(format!("{name}: the int8 dot product needs constant weights")));
        };
        let packed = pack_b_int8(bt, b8.1, nr)?;
        let b_buf = self.add_weight(packed, &format!("{}_int8", g.node(b8.0).name));
        let mut kl = KernelLowering::new(self, Some(root), out);
        kl.acc_node = Some(c);
        let acc = kl.kb.acc_of(DType::I32);
        kl.acc_value = Some(acc);
        let (vars, idx) = kl.gemm_domain(&osh);
        let a_base = batch_offset(&mut kl.kb, &idx[..r - 2], &ash[..ash.len() - 2], (m * k4) as i64);
        let panel = (k4 * nr) as i64;
        let b_base = batch_offset(&mut kl.kb, &idx[..r - 2], &bsh[..bsh.len() - 2], n.div_ceil(nr) as i64 * panel);
        let a = GemmOperand { buf: kl.slot(a_buf), base: a_base, row_stride: k4 as i64, col_stride: 1, panel: None, padded_cols: false };
        let b = GemmOperand { buf: kl.slot(b_buf), base: b_base, row_stride: nr as i64, col_stride: 1, panel: Some(panel), padded_cols: true };
        let epilogue = kl.epilogue(root, &idx)?;
        let elem = GemmElem::Int8 { a_signed: a8.1, b_signed: b8.1 };
        let gemm = Gemm { m, n, k: k4, a, b, elem, epilogue };
        let (kern, args) = kl.finish_gemm(name.to_string(), vars, gemm, tile);
        self.push_kernel(kern, args);
        Ok(())
    }

    /// The im2col matrix of each (batch, group): `col[n][grp][c, k..][o..] =
    /// x[n, grp*cg + c, o*s + k*d ..]` (a dense, usually padded, input).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn im2col(
        &mut self,
        x: NodeId,
        col: usize,
        xs: &[usize],
        ws: &[usize],
        osh: &[usize],
        cv: &odc_ir::Conv,
        panel: Option<usize>,
        name: &str,
    ) -> Result<(), IrError> {
        if let Some(nr) = panel {
            return self.im2col_panels(x, col, ws, osh, cv, nr, name);
        }
        let sp = xs.len() - 2;
        let mut dom = vec![xs[0], cv.groups, ws[1]];
        dom.extend(&ws[2..]);
        dom.extend(&osh[2..]);
        let mut kl = KernelLowering::new(self, None, col);
        let (vars, idx) = kl.domain(&dom);
        let xi = window_source(&mut kl.kb, cv, ws[1], [idx[0], idx[1], idx[2]], &idx[3 + sp..], &idx[3..3 + sp]);
        let v = kl.access(x, &xi)?;
        let (k, args) = kl.finish(name.to_string(), vars, Body::map(v));
        self.push_kernel(k, args);
        Ok(())
    }

    /// [`Self::im2col`] of a 2-D convolution into GEMM B panels of `nr` columns (the output
    /// width a multiple of `nr`, so a panel never straddles two output rows): per batch point
    /// and group, `col[(oh * (OW / nr) + owb) * kk * nr + r * nr + owl]` with `r` the
    /// (channel, kh, kw) row. Loops run panel by panel, so each panel is written contiguously.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn im2col_panels(&mut self, x: NodeId, col: usize, ws: &[usize], osh: &[usize], cv: &odc_ir::Conv, nr: usize, name: &str) -> Result<(), IrError> {
        let (nb, groups, cg, kh, kw, oh, ow) = (osh[0], cv.groups, ws[1], ws[2], ws[3], osh[2], osh[3]);
        let (kk, p) = (cg * kh * kw, oh * ow);
        let mut kl = KernelLowering::new(self, None, col);
        let (vars, idx) = kl.domain(&[nb, groups, oh, ow / nr, cg, kh, kw, nr]);
        let (n, grp, y, xb, c, ky, kx, xl) = (idx[0], idx[1], idx[2], idx[3], idx[4], idx[5], idx[6], idx[7]);
        let kb = &mut kl.kb;
        let xo = kb.mul_c(xb, nr as i64);
        let xo = kb.add(xo, xl);
        let xi = window_source(kb, cv, cg, [n, grp, c], &[y, xo], &[ky, kx]);
        let block = kb.flat_index(&[n, grp], &[nb, groups]);
        let block = kb.mul_c(block, (kk * p) as i64);
        let panel = kb.flat_index(&[y, xb], &[oh, ow / nr]);
        let panel = kb.mul_c(panel, (kk * nr) as i64);
        let r = kb.flat_index(&[c, ky, kx], &[cg, kh, kw]);
        let r = kb.mul_c(r, nr as i64);
        let at = kb.add(block, panel);
        let at = kb.add(at, r);
        let at = kb.add(at, xl);
        let v = kl.access(x, &xi)?;
        let (k, args) = kl.finish(name.to_string(), vars, Body::map_at(v, at));
        self.push_kernel(k, args);
        Ok(())
    }
}

/// The input element a convolution's window tap reads: `[n, group * cg + c, out * stride +
/// tap * dilation ..]` for batch point `n`, group `grp`, channel `c` of the group, output
/// position `out` and tap `tap` (one entry per spatial axis).
pub(super) fn window_source(kb: &mut KernelBuilder, cv: &odc_ir::Conv, cg: usize, [n, grp, c]: [E; 3], out: &[E], tap: &[E]) -> Vec<E> {
    let gc = kb.mul_c(grp, cg as i64);
    let mut xi = vec![n, kb.add(gc, c)];
    for a in 0..out.len() {
        let o = kb.mul_c(out[a], cv.strides[a] as i64);
        let t = kb.mul_c(tap[a], cv.dilations[a] as i64);
        xi.push(kb.add(o, t));
    }
    xi
}

/// Element offset of a batch index into an operand with batch dims `shape` broadcast against
/// the output's batch index `idx` (right-aligned), for matrices of `mat` elements.
pub(super) fn batch_offset(kb: &mut KernelBuilder, idx: &[E], shape: &[usize], mat: i64) -> E {
    let off = idx.len() - shape.len();
    let mut acc = kb.i64c(0);
    let mut stride = mat;
    for (d, &ext) in shape.iter().enumerate().rev() {
        if ext != 1 {
            let t = kb.mul_c(idx[off + d], stride);
            acc = kb.add(acc, t);
        }
        stride *= ext as i64;
    }
    acc
}

/// Pack conv weights `[groups * mg][k]` into `[groups][ceil(mg/mr)][k][mr]` (zero rows pad).
pub(super) fn pack_a(t: &Tensor, groups: usize, mg: usize, k: usize, mr: usize) -> Result<Tensor, IrError> {
    let w = t.f32_values()?;
    let panels = mg.div_ceil(mr);
    let mut out = vec![0f32; groups * panels * k * mr];
    for gi in 0..groups {
        for i in 0..mg {
            for kk in 0..k {
                out[((gi * panels + i / mr) * k + kk) * mr + i % mr] = w[(gi * mg + i) * k + kk];
            }
        }
    }
    Ok(Tensor::from_f32_vec(vec![out.len()], out))
}

/// Pack matmul weights `[batch..][k][n]` into `[batch..][ceil(n/nr)][k][nr]` (zero columns pad).
pub(super) fn pack_b(t: &Tensor, nr: usize) -> Result<Tensor, IrError> {
    let w = t.f32_values()?;
    let r = t.shape.len();
    let (k, n) = (t.shape[r - 2], t.shape[r - 1]);
    let batch: usize = t.shape[..r - 2].iter().product();
    let panels = n.div_ceil(nr);
    let mut out = vec![0f32; batch * panels * k * nr];
    for b in 0..batch {
        for kk in 0..k {
            for j in 0..n {
                out[((b * panels + j / nr) * k + kk) * nr + j % nr] = w[(b * k + kk) * n + j];
            }
        }
    }
    Ok(Tensor::from_f32_vec(vec![out.len()], out))
}

/// Pack 8-bit matmul weights `[batch..][k][n]` (held as i8, u8 or byte-range i32) into
/// `[batch..][ceil(n/nr)][ceil(k/4)][nr][4]` bytes, zero-padded: four consecutive `k` of a column
/// side by side, the operand layout of the dot-product instructions.
pub(super) fn pack_b_int8(t: &Tensor, signed: bool, nr: usize) -> Result<Tensor, IrError> {
    let r = t.shape.len();
    let (k, n) = (t.shape[r - 2], t.shape[r - 1]);
    let batch: usize = t.shape[..r - 2].iter().product();
    let values: Vec<i64> = (0..t.num_elements()).map(|i| t.get_i64(i)).collect::<Result<_, _>>()?;
    let (panels, quads) = (n.div_ceil(nr), k.div_ceil(4));
    let mut out = vec![0u8; batch * panels * quads * nr * 4];
    for b in 0..batch {
        for kk in 0..k {
            for j in 0..n {
                let v = values[(b * k + kk) * n + j];
                let byte = if signed { v as i8 as u8 } else { v as u8 };
                out[(((b * panels + j / nr) * quads + kk / 4) * nr + j % nr) * 4 + kk % 4] = byte;
            }
        }
    }
    let dtype = if signed { DType::I8 } else { DType::U8 };
    Tensor::new(dtype, vec![out.len()], Bytes::from_vec(out))
}
