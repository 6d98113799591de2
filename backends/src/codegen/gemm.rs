//! Code generation for [`Body::Gemm`] kernels: register-tiled f32 matrix products.
//!
//! The kernel's outer (parallel) loop runs over (batch point, column block of `nr`); inside, a
//! loop over row blocks of `mr` calls a microkernel that keeps the `mr x nr` accumulator tile in
//! registers (f32x4 vectors, or scalars for the last `n % 4` columns) across the `k` loop,
//! unrolled by the tile's `k_unroll`, with A broadcast and B loaded by vectors, in a fixed instruction
//! order. The epilogue expression is then evaluated per tile vector (bias, activation, residual
//! adds, ... fused by the lowering) and stored. Row and column tails get their own microkernel
//! instances, so no load ever leaves its operand.

use super::{flags, vflags, Cg, Memo, VVal};
use crate::kernel::{Expr, Gemm, GemmElem, GemmOperand, Var};
use crate::schedule::GemmTile;
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, Value};
use odc_ir::DType;

const LANES: usize = 4;

/// Tile geometry of one microkernel instance.
#[derive(Clone, Copy)]
struct Tile {
    rows: usize,
    /// Vector columns (4 floats each).
    nv: usize,
    /// Scalar columns after the vectors.
    ns: usize,
    /// Columns that exist in the output (fewer than computed when B's last panel is padded).
    valid: usize,
}

/// Where a tile sits: operand bases, batch point and first column, and its `k` block.
struct TileAt {
    a_base: Value,
    b_base: Value,
    bflat: Value,
    j0: Value,
    phase: Phase,
    kb: KBlock,
}

/// Effective strides of an operand inside a tile: element (r, c) of the tile at
/// `tile_base + r * rs + c * cs`.
struct TileOperand {
    rs: i64,
    cs: i64,
}

fn a_tile(a: &GemmOperand, mr: usize) -> TileOperand {
    match a.panel {
        Some(_) => TileOperand { rs: 1, cs: mr as i64 },
        None => TileOperand { rs: a.row_stride, cs: a.col_stride },
    }
}

fn b_tile(b: &GemmOperand, nr: usize) -> TileOperand {
    match b.panel {
        Some(_) => TileOperand { rs: nr as i64, cs: 1 },
        None => TileOperand { rs: b.row_stride, cs: b.col_stride },
    }
}

/// Which `k` block a code path handles: the accumulators start from zero or from the partial
/// sums in the output, and end in the epilogue or as partial sums.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The whole `k` range.
    Only,
    First,
    Middle,
    Last,
}

impl Phase {
    fn resumes(self) -> bool {
        matches!(self, Phase::Middle | Phase::Last)
    }
    fn finishes(self) -> bool {
        matches!(self, Phase::Only | Phase::Last)
    }
}

/// The `k` range of a block: its first index and its (static) length.
#[derive(Clone, Copy)]
struct KBlock {
    start: Value,
    len: usize,
}

/// Variables and values shared by the loops of one GEMM kernel.
struct GemmCtx<'m> {
    tile: GemmTile,
    ivar: Var,
    jvar: Var,
    batch_vars: Vec<Var>,
    vector: bool,
    base_memo: &'m Memo,
}

impl<'k, 'f> Cg<'k, 'f> {
    pub(crate) fn emit_gemm(&mut self, g: &Gemm, lo: Value, hi: Value) {
        let k = self.k;
        let nd = k.domain.len();
        let base_memo = self.memo.clone();
        let cx = GemmCtx {
            tile: k.gemm_tile(),
            ivar: k.domain[nd - 2],
            jvar: k.domain[nd - 1],
            batch_vars: k.domain[..nd - 2].to_vec(),
            vector: self.opts.vectorize && k.schedule.vector_lanes == LANES,
            base_memo: &base_memo,
        };
        let kc = cx.tile.kc.max(1);
        let nkb = g.k.div_ceil(kc).max(1);
        if nkb == 1 {
            let start = self.iconst64(0);
            self.emit_k_block(g, &cx, lo, hi, Phase::Only, KBlock { start, len: g.k });
            return;
        }
        let start = self.iconst64(0);
        self.emit_k_block(g, &cx, lo, hi, Phase::First, KBlock { start, len: kc });
        if nkb > 2 {
            let (b0, b1) = (self.iconst64(1), self.iconst64(nkb as i64 - 1));
            self.build_loop(b0, b1, 1, &[], |cg, kb, _| {
                let start = cg.b.ins().imul_imm_s(kb, kc as i64);
                cg.emit_k_block(g, &cx, lo, hi, Phase::Middle, KBlock { start, len: kc });
                vec![]
            });
        }
        let start = self.iconst64(((nkb - 1) * kc) as i64);
        self.emit_k_block(g, &cx, lo, hi, Phase::Last, KBlock { start, len: g.k - (nkb - 1) * kc });
        self.memo = base_memo.clone();
    }

    /// One `k` block over all rows and the thread's column blocks `lo..hi`, in row blocks of
    /// `mc` (each swept by every column block while it is in cache). The row tail (`m % mr`)
    /// follows the row blocks.
    fn emit_k_block(&mut self, g: &Gemm, cx: &GemmCtx, lo: Value, hi: Value, phase: Phase, kb: KBlock) {
        let full_rows = g.m / cx.tile.mr;
        let has_tail = g.m % cx.tile.mr != 0;
        let per_block = (cx.tile.mc / cx.tile.mr).max(1);
        let row_blocks = full_rows.div_ceil(per_block);
        if row_blocks <= 1 {
            let (r0, r1) = (self.iconst64(0), self.iconst64(full_rows as i64));
            self.emit_columns(g, cx, lo, hi, phase, kb, (r0, r1), has_tail);
            return;
        }
        let (b0, b1) = (self.iconst64(0), self.iconst64(row_blocks as i64));
        self.build_loop(b0, b1, 1, &[], |cg, ib, _| {
            let r0 = cg.b.ins().imul_imm_s(ib, per_block as i64);
            let r1 = cg.b.ins().iadd_imm_s(r0, per_block as i64);
            let last = cg.iconst64(full_rows as i64);
            let r1 = cg.b.ins().smin(r1, last);
            cg.emit_columns(g, cx, lo, hi, phase, kb, (r0, r1), false);
            vec![]
        });
        if has_tail {
            let r = self.iconst64(0);
            self.emit_columns(g, cx, lo, hi, phase, kb, (r, r), true);
        }
    }

    /// The thread's column blocks (over batch points), each with the full row blocks
    /// `rows.0..rows.1` and, when `tail`, the row tail.
    #[allow(clippy::too_many_arguments)]
    fn emit_columns(&mut self, g: &Gemm, cx: &GemmCtx, lo: Value, hi: Value, phase: Phase, kb: KBlock, rows: (Value, Value), tail: bool) {
        let jb = g.n.div_ceil(cx.tile.nr) as i64;
        self.build_loop(lo, hi, 1, &[], |cg, t, _| {
            // t -> (batch point, column block)
            let bflat = cg.b.ins().udiv_imm_s(t, jb);
            let jblock = cg.b.ins().urem_imm_s(t, jb);
            let mut rem = bflat;
            for &v in cx.batch_vars.iter().rev() {
                let e = cg.k.extent(v);
                let q = cg.b.ins().udiv_imm_s(rem, e);
                let r = cg.b.ins().urem_imm_s(rem, e);
                cg.loopvar.insert(v, r);
                rem = q;
            }
            let a_base = cg.emit_s(g.a.base);
            let b_base = cg.emit_s(g.b.base);
            let j0 = cg.b.ins().imul_imm_s(jblock, cx.tile.nr as i64);
            let full_cols = g.n / cx.tile.nr;
            let tail_cols = g.n % cx.tile.nr;
            // (vector columns, scalar columns, valid columns). A packed B's last panel is padded
            // with zero columns, so its tail runs as full vectors and only stores are cut short.
            let split = |cols: usize| -> (usize, usize, usize) {
                if cx.vector && g.b.padded_cols {
                    (cx.tile.nr.div_ceil(LANES), 0, cols)
                } else if cx.vector {
                    (cols / LANES, cols % LANES, cols)
                } else {
                    (0, cols, cols)
                }
            };
            let at = TileAt { a_base, b_base, bflat, j0, phase, kb };
            if tail_cols == 0 {
                cg.emit_row_blocks(g, cx, &at, split(cx.tile.nr), rows, tail);
            } else {
                let is_tail = cg.b.ins().icmp_imm_s(IntCC::Equal, jblock, full_cols as i64);
                let tail_blk = cg.b.create_block();
                let full_blk = cg.b.create_block();
                let join = cg.b.create_block();
                cg.b.ins().brif(is_tail, tail_blk, &[], full_blk, &[]);
                cg.b.switch_to_block(full_blk);
                cg.emit_row_blocks(g, cx, &at, split(cx.tile.nr), rows, tail);
                cg.b.ins().jump(join, &[]);
                cg.b.switch_to_block(tail_blk);
                cg.emit_row_blocks(g, cx, &at, split(tail_cols), rows, tail);
                cg.b.ins().jump(join, &[]);
                cg.b.switch_to_block(join);
            }
            vec![]
        });
    }

    /// Row blocks `rows.0..rows.1` of one column block, then (when `tail`) the row tail.
    fn emit_row_blocks(&mut self, g: &Gemm, cx: &GemmCtx, at: &TileAt, (nv, ns, valid): (usize, usize, usize), rows: (Value, Value), tail: bool) {
        self.build_loop(rows.0, rows.1, 1, &[], |cg, ib, _| {
            let i0 = cg.b.ins().imul_imm_s(ib, cx.tile.mr as i64);
            cg.emit_tile(g, cx, at, i0, Tile { rows: cx.tile.mr, nv, ns, valid });
            vec![]
        });
        let rest = g.m % cx.tile.mr;
        if tail && rest > 0 {
            let i0 = self.iconst64((g.m / cx.tile.mr * cx.tile.mr) as i64);
            self.emit_tile(g, cx, at, i0, Tile { rows: rest, nv, ns, valid });
        }
    }

    /// One microkernel instance for rows `i0..` of column block `at.j0`, over `at.kb`: the
    /// accumulators start at zero (or the partial sums), run through the k loop, and end in
    /// the epilogue (or as partial sums).
    fn emit_tile(&mut self, g: &Gemm, cx: &GemmCtx, at: &TileAt, i0: Value, tile: Tile) {
        let (ivar, jvar, base_memo) = (cx.ivar, cx.jvar, cx.base_memo);
        let (bflat, j0) = (at.bflat, at.j0);
        let a_t = a_tile(&g.a, cx.tile.mr);
        let b_t = b_tile(&g.b, cx.tile.nr);
        // Element offsets of the tile's (0, k0) in A and (k0, 0) in B.
        let a_off = match g.a.panel {
            Some(p) => {
                let pi = self.b.ins().udiv_imm_s(i0, cx.tile.mr as i64);
                self.b.ins().imul_imm_s(pi, p)
            }
            None => self.b.ins().imul_imm_s(i0, g.a.row_stride),
        };
        let a_off = self.b.ins().iadd(a_off, at.a_base);
        let ak = self.b.ins().imul_imm_s(at.kb.start, a_t.cs);
        let a_off = self.b.ins().iadd(a_off, ak);
        let b_off = match g.b.panel {
            Some(p) => {
                let pj = self.b.ins().udiv_imm_s(j0, cx.tile.nr as i64);
                self.b.ins().imul_imm_s(pj, p)
            }
            None => self.b.ins().imul_imm_s(j0, g.b.col_stride),
        };
        let b_off = self.b.ins().iadd(b_off, at.b_base);
        let bk = self.b.ins().imul_imm_s(at.kb.start, b_t.rs);
        let b_off = self.b.ins().iadd(b_off, bk);
        let int8 = matches!(g.elem, GemmElem::Int8 { .. });
        // Bytes per operand element; the k loop advances by `unit` k per step (a dot product
        // of four bytes for 8-bit operands).
        let (esize, unit) = if int8 { (1, 4) } else { (4, 1) };
        let (acc_vt, acc_st) = if int8 { (types::I32X4, types::I32) } else { (types::F32X4, types::F32) };
        let a_ptr = self.elem_addr(g.a.buf as usize, a_off, esize);
        let b_ptr = self.elem_addr(g.b.buf as usize, b_off, esize);
        let n_vec = tile.rows * tile.nv;
        // Output element offsets of the tile's rows, and the accumulators' starting values.
        let mn = (g.m * g.n) as i64;
        let out_batch = self.b.ins().imul_imm_s(bflat, mn);
        let row_off: Vec<Value> = (0..tile.rows)
            .map(|r| {
                let i = self.b.ins().iadd_imm_s(i0, r as i64);
                let row = self.b.ins().imul_imm_s(i, g.n as i64);
                let row = self.b.ins().iadd(row, out_batch);
                self.b.ins().iadd(row, j0)
            })
            .collect();
        let mut init = Vec::with_capacity(n_vec + tile.rows * tile.ns + 2);
        if at.phase.resumes() {
            for &ro in &row_off {
                for v in 0..tile.nv {
                    let addr = self.elem_addr(0, ro, 4);
                    let present = tile.valid.saturating_sub(v * LANES).min(LANES);
                    init.push(if present == LANES {
                        self.b.ins().load(acc_vt, vflags(), addr, (v * LANES * 4) as i32)
                    } else {
                        // A padded vector: its columns past the output's end start (and stay) zero.
                        let z = self.gemm_zero(int8);
                        let mut acc = self.b.ins().splat(acc_vt, z);
                        for l in 0..present {
                            let x = self.b.ins().load(acc_st, flags(), addr, ((v * LANES + l) * 4) as i32);
                            acc = self.b.ins().insertlane(acc, x, l as u8);
                        }
                        acc
                    });
                }
            }
            for &ro in &row_off {
                for s in 0..tile.ns {
                    let addr = self.elem_addr(0, ro, 4);
                    init.push(self.b.ins().load(acc_st, flags(), addr, ((tile.nv * LANES + s) * 4) as i32));
                }
            }
        } else {
            let z = self.gemm_zero(int8);
            let zv = self.b.ins().splat(acc_vt, z);
            init.extend(vec![zv; n_vec]);
            init.extend(vec![z; tile.rows * tile.ns]);
        }
        // A small tile (a matrix-vector product, a narrow tail) has too few accumulators to hide
        // the add latency: the unrolled k steps then rotate over `sets` independent copies,
        // summed after the loop.
        let n_acc = init.len();
        let k_unroll = cx.tile.k_unroll.max(1) as i64;
        let sets = if n_acc < 6 { (8 / n_acc.max(1)).clamp(1, k_unroll as usize) } else { 1 };
        for _ in 1..sets {
            let z = self.gemm_zero(int8);
            let zv = self.b.ins().splat(acc_vt, z);
            init.extend(vec![zv; n_vec]);
            init.extend(vec![z; tile.rows * tile.ns]);
        }
        init.push(a_ptr);
        init.push(b_ptr);
        // Steps of `unit` k (an 8-bit block's length is a multiple of 4).
        let klen = (at.kb.len / unit) as i64;
        let k_main = (klen / k_unroll) * k_unroll;
        let step = |cg: &mut Self, carried: Vec<Value>, unroll: i64| -> Vec<Value> {
            let (mut all, ptrs) = (carried[..carried.len() - 2].to_vec(), &carried[carried.len() - 2..]);
            let (ap, bp) = (ptrs[0], ptrs[1]);
            for u in 0..unroll {
                let set = if unroll == k_unroll { u as usize % sets } else { 0 };
                if let GemmElem::Int8 { a_signed, b_signed } = g.elem {
                    // Four k per step: B's vector v holds columns 4v..4v+4, four bytes each; A's
                    // four bytes of row r are broadcast to every lane.
                    let accs = &mut all[set * n_acc..(set + 1) * n_acc];
                    let brow = (u * unit as i64 * b_t.rs) as i32;
                    let bv: Vec<Value> = (0..tile.nv).map(|v| cg.b.ins().load(types::I8X16, vflags(), bp, brow + (v * 16) as i32)).collect();
                    for r in 0..tile.rows {
                        let a_off = (r as i64 * a_t.rs + u * unit as i64 * a_t.cs) as i32;
                        if tile.nv > 0 {
                            let a4 = cg.b.ins().load(types::I32, flags(), ap, a_off);
                            let a4 = cg.b.ins().splat(types::I32X4, a4);
                            let a4 = cg.b.ins().bitcast(types::I8X16, super::bflags(), a4);
                            for v in 0..tile.nv {
                                let i = r * tile.nv + v;
                                accs[i] = cg.dot4(accs[i], a4, a_signed, bv[v], b_signed);
                            }
                        }
                        // Scalar columns (targets without SIMD): four widened byte products.
                        for s in 0..tile.ns {
                            let col = (tile.nv * LANES + s) as i32;
                            let i = n_vec + r * tile.ns + s;
                            for q in 0..4 {
                                let a = cg.load_byte_i32(ap, a_off + q, a_signed);
                                let b = cg.load_byte_i32(bp, brow + col * 4 + q, b_signed);
                                let p = cg.b.ins().imul(a, b);
                                accs[i] = cg.b.ins().iadd(accs[i], p);
                            }
                        }
                    }
                    continue;
                }
                // B row u of the tile: vectors, then scalar columns.
                let brow = (u * b_t.rs * 4) as i32;
                let bv: Vec<Value> = (0..tile.nv)
                    .map(|v| cg.b.ins().load(types::F32X4, vflags(), bp, brow + (v * LANES * 4) as i32))
                    .collect();
                let bs: Vec<Value> = (0..tile.ns)
                    .map(|s| cg.b.ins().load(types::F32, flags(), bp, brow + (((tile.nv * LANES + s) as i64 * b_t.cs) * 4) as i32))
                    .collect();
                let accs = &mut all[set * n_acc..(set + 1) * n_acc];
                for r in 0..tile.rows {
                    let a_off = ((r as i64 * a_t.rs + u * a_t.cs) * 4) as i32;
                    // A's element is broadcast to a vector either once per use (`vbroadcastss
                    // mem`: a load-port uop, and an x86 FMA that overwrites its multiplicand then
                    // consumes a fresh register) or once per row and shared (a load plus a register
                    // shuffle on an FP pipe). `gemm_shared_broadcast_rows` balances the two.
                    let share = r < cg.opts.gemm_shared_broadcast_rows;
                    let mut shared = None;
                    for v in 0..tile.nv {
                        let av = match shared {
                            Some(av) => av,
                            None => {
                                let a = cg.b.ins().load(types::F32, flags(), ap, a_off);
                                let av = cg.b.ins().splat(types::F32X4, a);
                                if share {
                                    shared = Some(av);
                                }
                                av
                            }
                        };
                        let i = r * tile.nv + v;
                        accs[i] = cg.fmadd(av, bv[v], accs[i]);
                    }
                    if tile.ns > 0 {
                        let a = cg.b.ins().load(types::F32, flags(), ap, a_off);
                        for s in 0..tile.ns {
                            let i = n_vec + r * tile.ns + s;
                            accs[i] = cg.fmadd(a, bs[s], accs[i]);
                        }
                    }
                }
            }
            let ap = cg.b.ins().iadd_imm_s(ap, unroll * unit as i64 * a_t.cs * esize);
            let bp = cg.b.ins().iadd_imm_s(bp, unroll * unit as i64 * b_t.rs * esize);
            all.push(ap);
            all.push(bp);
            all
        };
        let mut carried = init;
        if k_main > 0 {
            let start = self.iconst64(0);
            let end = self.iconst64(k_main);
            let (_, out) = self.build_loop(start, end, k_unroll, &carried, |cg, _kk, c| step(cg, c, k_unroll));
            carried = out;
        }
        for _ in k_main..klen {
            carried = step(self, carried, 1);
        }
        let mut accs = carried[..n_acc].to_vec();
        for set in 1..sets {
            for (i, acc) in accs.iter_mut().enumerate() {
                let other = carried[set * n_acc + i];
                *acc = if int8 { self.b.ins().iadd(*acc, other) } else { self.b.ins().fadd(*acc, other) };
            }
        }
        let accs = &accs;
        if !at.phase.finishes() {
            // Partial sums back to the output.
            for (r, &ro) in row_off.iter().enumerate() {
                let addr = self.elem_addr(0, ro, 4);
                for v in 0..tile.nv {
                    let acc = accs[r * tile.nv + v];
                    let present = tile.valid.saturating_sub(v * LANES).min(LANES);
                    if present == LANES {
                        self.b.ins().store(vflags(), acc, addr, (v * LANES * 4) as i32);
                    } else {
                        for l in 0..present {
                            let x = self.b.ins().extractlane(acc, l as u8);
                            self.b.ins().store(flags(), x, addr, ((v * LANES + l) * 4) as i32);
                        }
                    }
                }
                for s in 0..tile.ns {
                    self.b.ins().store(flags(), accs[n_vec + r * tile.ns + s], addr, ((tile.nv * LANES + s) * 4) as i32);
                }
            }
            return;
        }
        // Epilogue and stores: whole vectors of f32 or i32 results; other result types (an
        // 8-bit requantised output) and a padded vector's existing columns lane by lane.
        let out_ty = self.k.bufs[0].dtype;
        let vector_store = matches!(out_ty, DType::F32 | DType::I32);
        for r in 0..tile.rows {
            let i = self.b.ins().iadd_imm_s(i0, r as i64);
            for v in 0..tile.nv {
                let acc = accs[r * tile.nv + v];
                let present = tile.valid.saturating_sub(v * LANES).min(LANES);
                if present < LANES || !vector_store {
                    // Columns of a padded vector that exist: scalar epilogues.
                    for l in 0..present {
                        let col = v * LANES + l;
                        let j = self.b.ins().iadd_imm_s(j0, col as i64);
                        self.loopvar.insert(ivar, i);
                        self.loopvar.insert(jvar, j);
                        self.memo = base_memo.clone();
                        let acc_e = self.acc_expr();
                        let x = self.b.ins().extractlane(acc, l as u8);
                        self.memo.scalar.insert(acc_e, x);
                        let val = self.emit_s(g.epilogue);
                        let idx = self.b.ins().iadd_imm_s(row_off[r], col as i64);
                        self.store_elem(idx, val);
                    }
                    continue;
                }
                let j = self.b.ins().iadd_imm_s(j0, (v * LANES) as i64);
                self.loopvar.insert(ivar, i);
                self.loopvar.insert(jvar, j);
                self.memo = base_memo.clone();
                self.vv = Some(jvar);
                let acc_e = self.acc_expr();
                self.memo.vector.insert(acc_e, VVal::V(acc));
                let val = self.as_vector(g.epilogue, out_ty);
                self.vv = None;
                let idx = self.b.ins().iadd_imm_s(row_off[r], (v * LANES) as i64);
                let addr = self.elem_addr(0, idx, 4);
                self.b.ins().store(vflags(), val, addr, 0);
            }
            for s in 0..tile.ns {
                let j = self.b.ins().iadd_imm_s(j0, (tile.nv * LANES + s) as i64);
                self.loopvar.insert(ivar, i);
                self.loopvar.insert(jvar, j);
                self.memo = base_memo.clone();
                let acc_e = self.acc_expr();
                self.memo.scalar.insert(acc_e, accs[n_vec + r * tile.ns + s]);
                let val = self.emit_s(g.epilogue);
                let idx = self.b.ins().iadd_imm_s(row_off[r], (tile.nv * LANES + s) as i64);
                self.store_elem(idx, val);
            }
        }
        self.memo = base_memo.clone();
    }

    /// The byte at `ptr + off` widened to i32.
    fn load_byte_i32(&mut self, ptr: Value, off: i32, signed: bool) -> Value {
        let x = self.b.ins().load(types::I8, flags(), ptr, off);
        if signed {
            self.b.ins().sextend(types::I32, x)
        } else {
            self.b.ins().uextend(types::I32, x)
        }
    }

    fn gemm_zero(&mut self, int8: bool) -> Value {
        if int8 {
            self.b.ins().iconst(types::I32, 0)
        } else {
            self.b.ins().f32const(0.0)
        }
    }

    /// `acc + dot4(a, b)` per i32 lane: the sums of the four byte products in each lane, as the
    /// exact-i32 widening tree that Cranelift folds into one instruction where the target has
    /// one (`vpdpbusd` for signed x unsigned with AVX-VNNI, `sdot`/`usdot` on aarch64).
    fn dot4(&mut self, acc: Value, a: Value, a_signed: bool, b: Value, b_signed: bool) -> Value {
        // Mixed signs: the operand order of the target's one-instruction pattern.
        let swap = a_signed != b_signed && (a_signed == self.opts.dot_unsigned_first);
        let ((x, xs), (y, ys)) = if swap { ((b, b_signed), (a, a_signed)) } else { ((a, a_signed), (b, b_signed)) };
        let ins = |cg: &mut Self, v: Value, signed: bool, low: bool| match (signed, low) {
            (true, true) => cg.b.ins().swiden_low(v),
            (true, false) => cg.b.ins().swiden_high(v),
            (false, true) => cg.b.ins().uwiden_low(v),
            (false, false) => cg.b.ins().uwiden_high(v),
        };
        let (xl, yl) = (ins(self, x, xs, true), ins(self, y, ys, true));
        let (xh, yh) = (ins(self, x, xs, false), ins(self, y, ys, false));
        let lo = self.b.ins().imul(xl, yl);
        let hi = self.b.ins().imul(xh, yh);
        let (lo_l, lo_h) = (self.b.ins().swiden_low(lo), self.b.ins().swiden_high(lo));
        let (hi_l, hi_h) = (self.b.ins().swiden_low(hi), self.b.ins().swiden_high(hi));
        let pl = self.b.ins().iadd_pairwise(lo_l, lo_h);
        let ph = self.b.ins().iadd_pairwise(hi_l, hi_h);
        let t = self.b.ins().iadd_pairwise(pl, ph);
        self.b.ins().iadd(t, acc)
    }

    fn fmadd(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.opts.gemm_fma {
            self.b.ins().fma(a, b, c)
        } else {
            let m = self.b.ins().fmul(a, b);
            self.b.ins().fadd(m, c)
        }
    }

    /// The arena id of the kernel's `Acc` node (there is at most one).
    fn acc_expr(&self) -> crate::kernel::E {
        let i = self.k.nodes.iter().position(|n| matches!(n, Expr::Acc)).expect("a GEMM epilogue refers to the accumulator");
        crate::kernel::E(i as u32)
    }
}
