//! Code generation for [`Body::Gemm`] kernels: register-tiled f32 matrix products.
//!
//! The kernel's outer (parallel) loop runs over (batch point, column block of `nr`); inside, a
//! loop over row blocks of `mr` calls a microkernel that keeps the `mr x nr` accumulator tile in
//! registers (f32x4 vectors, or scalars for the last `n % 4` columns) across the `k` loop,
//! unrolled by [`K_UNROLL`], with A broadcast and B loaded by vectors, in a fixed instruction
//! order. The epilogue expression is then evaluated per tile vector (bias, activation, residual
//! adds, ... fused by the lowering) and stored. Row and column tails get their own microkernel
//! instances, so no load ever leaves its operand.

use crate::codegen::{flags, vflags, Cg, VVal};
use crate::kernel::{Expr, Gemm, GemmOperand};
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, Value};
use odc_ir::DType;

/// How far the k loop is unrolled.
pub const K_UNROLL: i64 = 4;
const LANES: usize = 4;

/// Tile geometry of one microkernel instance.
#[derive(Clone, Copy)]
struct Tile {
    rows: usize,
    /// Vector columns (4 floats each).
    nv: usize,
    /// Scalar columns after the vectors.
    ns: usize,
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

impl<'k, 'f> Cg<'k, 'f> {
    pub(crate) fn emit_gemm(&mut self, g: &Gemm, lo: Value, hi: Value) {
        let k = self.k;
        let nd = k.domain.len();
        let (ivar, jvar) = (k.domain[nd - 2], k.domain[nd - 1]);
        let batch_vars: Vec<_> = k.domain[..nd - 2].to_vec();
        let vector = self.opts.vectorize && g.b.col_stride == 1;
        let jb = g.n.div_ceil(g.nr) as i64;
        let base_memo = self.memo.clone();
        let (_, _) = self.build_loop(lo, hi, 1, &[], |cg, t, _| {
            // t -> (batch point, column block)
            let bflat = cg.b.ins().udiv_imm_s(t, jb);
            let jblock = cg.b.ins().urem_imm_s(t, jb);
            let mut rem = bflat;
            for &v in batch_vars.iter().rev() {
                let e = cg.k.extent(v);
                let q = cg.b.ins().udiv_imm_s(rem, e);
                let r = cg.b.ins().urem_imm_s(rem, e);
                cg.loopvar.insert(v, r);
                rem = q;
            }
            let a_base = cg.emit_s(g.a.base);
            let b_base = cg.emit_s(g.b.base);
            let j0 = cg.b.ins().imul_imm_s(jblock, g.nr as i64);
            let full_cols = g.n / g.nr;
            let tail_cols = g.n % g.nr;
            let split = |cols: usize| -> (usize, usize) {
                if vector {
                    (cols / LANES, cols % LANES)
                } else {
                    (0, cols)
                }
            };
            if tail_cols == 0 {
                cg.emit_row_blocks(g, a_base, b_base, bflat, j0, split(g.nr), ivar, jvar, &base_memo);
            } else {
                let is_tail = cg.b.ins().icmp_imm_s(IntCC::Equal, jblock, full_cols as i64);
                let tail_blk = cg.b.create_block();
                let full_blk = cg.b.create_block();
                let join = cg.b.create_block();
                cg.b.ins().brif(is_tail, tail_blk, &[], full_blk, &[]);
                cg.b.switch_to_block(full_blk);
                cg.emit_row_blocks(g, a_base, b_base, bflat, j0, split(g.nr), ivar, jvar, &base_memo);
                cg.b.ins().jump(join, &[]);
                cg.b.switch_to_block(tail_blk);
                cg.emit_row_blocks(g, a_base, b_base, bflat, j0, split(tail_cols), ivar, jvar, &base_memo);
                cg.b.ins().jump(join, &[]);
                cg.b.switch_to_block(join);
            }
            vec![]
        });
    }

    /// All row blocks of one column block: full blocks in a loop, then the row tail.
    #[allow(clippy::too_many_arguments)]
    fn emit_row_blocks(
        &mut self,
        g: &Gemm,
        a_base: Value,
        b_base: Value,
        bflat: Value,
        j0: Value,
        (nv, ns): (usize, usize),
        ivar: crate::kernel::Var,
        jvar: crate::kernel::Var,
        base_memo: &crate::codegen::Memo,
    ) {
        let full_rows = g.m / g.mr;
        if full_rows > 0 {
            let start = self.iconst64(0);
            let end = self.iconst64(full_rows as i64);
            self.build_loop(start, end, 1, &[], |cg, ib, _| {
                let i0 = cg.b.ins().imul_imm_s(ib, g.mr as i64);
                cg.emit_tile(g, a_base, b_base, bflat, i0, j0, Tile { rows: g.mr, nv, ns }, ivar, jvar, base_memo);
                vec![]
            });
        }
        let tail = g.m % g.mr;
        if tail > 0 {
            let i0 = self.iconst64((full_rows * g.mr) as i64);
            self.emit_tile(g, a_base, b_base, bflat, i0, j0, Tile { rows: tail, nv, ns }, ivar, jvar, base_memo);
        }
    }

    /// One microkernel instance plus its epilogue and stores.
    #[allow(clippy::too_many_arguments)]
    fn emit_tile(
        &mut self,
        g: &Gemm,
        a_base: Value,
        b_base: Value,
        bflat: Value,
        i0: Value,
        j0: Value,
        tile: Tile,
        ivar: crate::kernel::Var,
        jvar: crate::kernel::Var,
        base_memo: &crate::codegen::Memo,
    ) {
        let at = a_tile(&g.a, g.mr);
        let bt = b_tile(&g.b, g.nr);
        // Element offsets of the tile's (0, 0) in A and B.
        let a_off = match g.a.panel {
            Some(p) => {
                let pi = self.b.ins().udiv_imm_s(i0, g.mr as i64);
                self.b.ins().imul_imm_s(pi, p)
            }
            None => self.b.ins().imul_imm_s(i0, g.a.row_stride),
        };
        let a_off = self.b.ins().iadd(a_off, a_base);
        let b_off = match g.b.panel {
            Some(p) => {
                let pj = self.b.ins().udiv_imm_s(j0, g.nr as i64);
                self.b.ins().imul_imm_s(pj, p)
            }
            None => self.b.ins().imul_imm_s(j0, g.b.col_stride),
        };
        let b_off = self.b.ins().iadd(b_off, b_base);
        let a_ptr = self.elem_addr(g.a.buf as usize, a_off, 4);
        let b_ptr = self.elem_addr(g.b.buf as usize, b_off, 4);
        let zv = {
            let z = self.b.ins().f32const(0.0);
            self.b.ins().splat(types::F32X4, z)
        };
        let zs = self.b.ins().f32const(0.0);
        let n_vec = tile.rows * tile.nv;
        let mut init = vec![zv; n_vec];
        init.extend(vec![zs; tile.rows * tile.ns]);
        init.push(a_ptr);
        init.push(b_ptr);
        let k_main = (g.k as i64 / K_UNROLL) * K_UNROLL;
        let step = |cg: &mut Self, carried: Vec<Value>, unroll: i64| -> Vec<Value> {
            let (mut accs, ptrs) = (carried[..carried.len() - 2].to_vec(), &carried[carried.len() - 2..]);
            let (ap, bp) = (ptrs[0], ptrs[1]);
            for u in 0..unroll {
                // B row u of the tile: vectors, then scalar columns.
                let brow = (u * bt.rs * 4) as i32;
                let bv: Vec<Value> = (0..tile.nv)
                    .map(|v| cg.b.ins().load(types::F32X4, vflags(), bp, brow + (v * LANES * 4) as i32))
                    .collect();
                let bs: Vec<Value> = (0..tile.ns)
                    .map(|s| cg.b.ins().load(types::F32, flags(), bp, brow + (((tile.nv * LANES + s) as i64 * bt.cs) * 4) as i32))
                    .collect();
                for r in 0..tile.rows {
                    let a_off = ((r as i64 * at.rs + u * at.cs) * 4) as i32;
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
            let ap = cg.b.ins().iadd_imm_s(ap, unroll * at.cs * 4);
            let bp = cg.b.ins().iadd_imm_s(bp, unroll * bt.rs * 4);
            accs.push(ap);
            accs.push(bp);
            accs
        };
        let mut carried = init;
        if k_main > 0 {
            let start = self.iconst64(0);
            let end = self.iconst64(k_main);
            let (_, out) = self.build_loop(start, end, K_UNROLL, &carried, |cg, _kk, c| step(cg, c, K_UNROLL));
            carried = out;
        }
        for _ in k_main..g.k as i64 {
            carried = step(self, carried, 1);
        }
        let accs = &carried[..carried.len() - 2];
        // Epilogue and stores.
        let mn = (g.m * g.n) as i64;
        let out_batch = self.b.ins().imul_imm_s(bflat, mn);
        for r in 0..tile.rows {
            let i = self.b.ins().iadd_imm_s(i0, r as i64);
            let row = self.b.ins().imul_imm_s(i, g.n as i64);
            let row = self.b.ins().iadd(row, out_batch);
            for v in 0..tile.nv {
                let j = self.b.ins().iadd_imm_s(j0, (v * LANES) as i64);
                self.loopvar.insert(ivar, i);
                self.loopvar.insert(jvar, j);
                self.memo = base_memo.clone();
                self.vv = Some(jvar);
                let acc_e = self.acc_expr();
                self.memo.vector.insert(acc_e, VVal::V(accs[r * tile.nv + v]));
                let val = self.as_vector(g.epilogue, DType::F32);
                self.vv = None;
                let idx = self.b.ins().iadd(row, j);
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
                let idx = self.b.ins().iadd(row, j);
                self.store_elem(idx, val);
            }
        }
        self.memo = base_memo.clone();
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
