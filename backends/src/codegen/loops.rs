//! Loop nests and memory access: the scope emission that places nodes in their loops, the
//! output, flattened-outer and scatter loop levels with their vector loop and scalar tail, and
//! element loads and stores. Expressions themselves are emitted by `scalar.rs`/`vector.rs`.

use crate::kernel::{raw_type, Body, Var, E};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, BlockArg, InstBuilder, Value};
use odc_ir::DType;
use super::{clif_type, flags, vflags, Cg, LANES};

impl<'k, 'f> Cg<'k, 'f> {

    pub(super) fn depends_on(&self, e: E, v: Var) -> bool {
        self.an.free[e.0 as usize].contains(&v)
    }

    /// Emit every live node whose home is `scope`.
    pub(crate) fn emit_scope(&mut self, scope: Option<Var>) {
        let nodes = self.an.by_home.get(&scope).cloned().unwrap_or_default();
        for e in nodes {
            match self.vv {
                Some(vv) if self.depends_on(e, vv) => {
                    self.emit_vec(e);
                }
                _ => {
                    self.emit_s(e);
                }
            }
        }
    }

    /// A counted loop `for iv in start..end step` carrying `init`; returns the final iv and values.
    pub(crate) fn build_loop<F>(&mut self, start: Value, end: Value, step: i64, init: &[Value], body: F) -> (Value, Vec<Value>)
    where
        F: FnOnce(&mut Self, Value, Vec<Value>) -> Vec<Value>,
    {
        let header = self.b.create_block();
        let body_blk = self.b.create_block();
        let exit = self.b.create_block();
        let iv = self.b.append_block_param(header, types::I64);
        let mut carried = vec![];
        for &v in init {
            let t = self.b.func.dfg.value_type(v);
            carried.push(self.b.append_block_param(header, t));
        }
        let exit_iv = self.b.append_block_param(exit, types::I64);
        let mut exit_vals = vec![];
        for &v in init {
            let t = self.b.func.dfg.value_type(v);
            exit_vals.push(self.b.append_block_param(exit, t));
        }
        let mut args: Vec<BlockArg> = vec![BlockArg::Value(start)];
        args.extend(init.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);

        self.b.switch_to_block(header);
        let cond = if step == 1 {
            self.b.ins().icmp(IntCC::SignedLessThan, iv, end)
        } else {
            let next = self.b.ins().iadd_imm_s(iv, step);
            self.b.ins().icmp(IntCC::SignedLessThanOrEqual, next, end)
        };
        let mut exit_args: Vec<BlockArg> = vec![BlockArg::Value(iv)];
        exit_args.extend(carried.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().brif(cond, body_blk, &[], exit, &exit_args);

        self.b.switch_to_block(body_blk);
        let saved = self.memo.clone();
        let results = body(self, iv, carried);
        self.memo = saved;
        let next = self.b.ins().iadd_imm_s(iv, step);
        let mut back: Vec<BlockArg> = vec![BlockArg::Value(next)];
        back.extend(results.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &back);

        self.b.switch_to_block(exit);
        (exit_iv, exit_vals)
    }

    pub(crate) fn iconst64(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    fn level_bounds(&mut self, level: usize, lo: Value, hi: Value) -> (Value, Value) {
        if level == 0 {
            (lo, hi)
        } else {
            let v = self.k.domain[level];
            let ext = self.k.extent(v);
            (self.iconst64(0), self.iconst64(ext))
        }
    }

    pub(super) fn emit_output_level(&mut self, level: usize, lo: Value, hi: Value) {
        let n = self.k.domain.len();
        let var = self.k.domain[level];
        let (start, end) = self.level_bounds(level, lo, hi);
        let innermost = level + 1 == n;
        // The schedule asks for vectors only on f32 outputs; the target must have them.
        let vectorize = innermost && self.opts.vectorize && self.k.schedule.vector_lanes == LANES && self.k.extent(var) >= LANES as i64;
        let mut tail_start = start;
        if vectorize {
            let (iv_end, _) = self.build_loop(start, end, LANES as i64, &[], |cg, iv, _| {
                cg.loopvar.insert(var, iv);
                cg.vv = Some(var);
                cg.emit_scope(Some(var));
                cg.store_map_vector();
                cg.vv = None;
                vec![]
            });
            tail_start = iv_end;
        }
        self.build_loop(tail_start, end, 1, &[], |cg, iv, _| {
            cg.loopvar.insert(var, iv);
            cg.emit_scope(Some(var));
            if innermost {
                cg.store_map_scalar();
            } else {
                cg.emit_output_level(level + 1, lo, hi);
            }
            vec![]
        });
    }

    /// The first `loops` output loops as one loop over `lo..hi` of their flattened index (the
    /// schedule's parallel loop), then the remaining levels.
    pub(super) fn emit_flattened_outer(&mut self, loops: usize, lo: Value, hi: Value) {
        let vars = self.k.domain[..loops].to_vec();
        self.build_loop(lo, hi, 1, &[], |cg, t, _| {
            let mut rem = t;
            for &v in vars.iter().rev() {
                let e = cg.k.extent(v);
                let i = cg.b.ins().urem_imm_s(rem, e);
                rem = cg.b.ins().udiv_imm_s(rem, e);
                cg.loopvar.insert(v, i);
            }
            for &v in &vars {
                cg.emit_scope(Some(v));
            }
            cg.emit_output_level(loops, lo, hi);
            vec![]
        });
    }

    pub(super) fn emit_scatter_level(&mut self, level: usize, lo: Value, hi: Value) {
        let n = self.k.domain.len();
        let var = self.k.domain[level];
        let (start, end) = self.level_bounds(level, lo, hi);
        self.build_loop(start, end, 1, &[], |cg, iv, _| {
            cg.loopvar.insert(var, iv);
            cg.emit_scope(Some(var));
            if level + 1 == n {
                let Body::Scatter { index, value } = cg.k.body.clone() else { unreachable!() };
                let idx = cg.emit_s(index);
                let val = cg.emit_s(value);
                cg.store_elem(idx, val);
            } else {
                cg.emit_scatter_level(level + 1, lo, hi);
            }
            vec![]
        });
    }

    /// Row-major flat index of the current domain point (with the lane variable at lane 0).
    fn domain_flat_index(&mut self) -> Value {
        let mut acc = self.iconst64(0);
        let mut stride = 1i64;
        for &v in self.k.domain.clone().iter().rev() {
            let iv = self.loopvar[&v];
            let t = self.b.ins().imul_imm_s(iv, stride);
            acc = self.b.ins().iadd(acc, t);
            stride *= self.k.extent(v);
        }
        acc
    }

    fn store_map_scalar(&mut self) {
        let Body::Map { stores } = self.k.body.clone() else { unreachable!() };
        for s in stores {
            let v = self.emit_s(s.value);
            let idx = match s.index {
                Some(i) => self.emit_s(i),
                None => self.domain_flat_index(),
            };
            self.store_elem(idx, v);
        }
    }

    /// The stores of four lanes: a vector store where the index advances by one element per
    /// lane, else the vector's lanes stored one by one.
    fn store_map_vector(&mut self) {
        let Body::Map { stores } = self.k.body.clone() else { unreachable!() };
        let vv = self.vv.expect("vector loop");
        for s in stores {
            let v = self.as_vector(s.value, DType::F32);
            let contiguous = s.index.is_none_or(|i| self.lane_coef(i, vv) == Some(1));
            if contiguous {
                let idx = match s.index {
                    Some(i) => self.emit_lane(i, 0),
                    None => self.domain_flat_index(),
                };
                let addr = self.elem_addr(0, idx, 4);
                self.b.ins().store(vflags(), v, addr, 0);
            } else {
                let i = s.index.expect("the row-major index is contiguous");
                for l in 0..LANES {
                    let idx = self.emit_lane(i, l);
                    let x = self.b.ins().extractlane(v, l as u8);
                    let addr = self.elem_addr(0, idx, 4);
                    self.b.ins().store(flags(), x, addr, 0);
                }
            }
        }
    }

    pub(crate) fn elem_addr(&mut self, buf: usize, idx: Value, size: i64) -> Value {
        let off = if size == 1 { idx } else { self.b.ins().imul_imm_s(idx, size) };
        let off = if self.ptr == types::I64 { off } else { self.b.ins().ireduce(self.ptr, off) };
        self.b.ins().iadd(self.bases[buf], off)
    }

    /// Store a raw value into element `idx` of buffer 0.
    pub(crate) fn store_elem(&mut self, idx: Value, v: Value) {
        let storage = self.k.bufs[0].dtype;
        if storage.is_packed() {
            let bits = storage.bits() as i64;
            let per_byte = 8 / bits;
            let byte_idx = self.b.ins().udiv_imm_s(idx, per_byte);
            let addr = self.elem_addr(0, byte_idx, 1);
            let old = self.b.ins().load(types::I8, flags(), addr, 0);
            let lane = self.b.ins().urem_imm_s(idx, per_byte);
            let shift = self.b.ins().imul_imm_s(lane, bits);
            let shift8 = self.b.ins().ireduce(types::I8, shift);
            let m = self.b.ins().iconst(types::I8, (1i64 << bits) - 1);
            let val = self.b.ins().band(v, m);
            let val = self.b.ins().ishl(val, shift8);
            let hole = self.b.ins().ishl(m, shift8);
            let hole = self.b.ins().bnot(hole);
            let kept = self.b.ins().band(old, hole);
            let new = self.b.ins().bor(kept, val);
            self.b.ins().store(flags(), new, addr, 0);
        } else {
            let size = (storage.bits() / 8) as i64;
            let addr = self.elem_addr(0, idx, size);
            self.b.ins().store(flags(), v, addr, 0);
        }
    }

    pub(super) fn load_elem(&mut self, buf: usize, idx: Value) -> Value {
        let storage = self.k.bufs[buf].dtype;
        let raw = raw_type(storage);
        if storage.is_packed() {
            let bits = storage.bits() as i64;
            let per_byte = 8 / bits;
            let byte_idx = self.b.ins().udiv_imm_s(idx, per_byte);
            let addr = self.elem_addr(buf, byte_idx, 1);
            let byte = self.b.ins().load(types::I8, flags(), addr, 0);
            let lane = self.b.ins().urem_imm_s(idx, per_byte);
            let shift = self.b.ins().imul_imm_s(lane, bits);
            let shift8 = self.b.ins().ireduce(types::I8, shift);
            let v = self.b.ins().ushr(byte, shift8);
            let up = 8 - bits;
            let v = self.b.ins().ishl_imm_s(v, up);
            if raw.is_signed_int() {
                self.b.ins().sshr_imm_s(v, up)
            } else {
                self.b.ins().ushr_imm_s(v, up)
            }
        } else {
            let size = (storage.bits() / 8) as i64;
            let addr = self.elem_addr(buf, idx, size);
            self.b.ins().load(clif_type(raw), flags(), addr, 0)
        }
    }
}
