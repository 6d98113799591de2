//! [`Program`] → functions in a Cranelift module (JIT or object).
//!
//! Emits one function per kernel plus a driver:
//!
//! ```text
//! i32 run(const void *const *inputs, void *const *outputs, void *arena, const void *const *weights)
//! ```
//!
//! which fills an argument table per step (input, output, weight or arena pointers), calls the
//! kernel over its whole outer range, and returns the first non-zero status.

use crate::codegen::{build_kernel, kernel_signature, CodegenOptions};
use crate::lower::{BufferKind, Program};
use cranelift_codegen::ir::{self, condcodes::IntCC, types, AbiParam, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use odc_ir::IrError;

/// Symbols of an emitted program.
#[derive(Clone, Debug)]
pub struct EmittedProgram {
    pub run: FuncId,
    pub kernels: Vec<FuncId>,
}

fn module_err(e: impl std::fmt::Display) -> IrError {
    IrError::new(format!("code generation failed: {e}"))
}

/// Code generation options derived from the module's target.
pub fn options_for(isa: &dyn TargetIsa) -> CodegenOptions {
    let has_fma = match isa.triple().architecture {
        target_lexicon::Architecture::X86_64 => {
            isa.isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool() == Some(true))
        }
        target_lexicon::Architecture::Aarch64(_) => true,
        target_lexicon::Architecture::Riscv64(_) => true,
        _ => false,
    };
    CodegenOptions { vectorize: true, has_fma }
}

/// Define every kernel and the driver in `m`. `prefix` namespaces the symbols; the driver is
/// `<prefix>_run_impl` with the given linkage.
pub fn define_program<M: Module>(m: &mut M, prog: &Program, prefix: &str, run_linkage: Linkage) -> Result<EmittedProgram, IrError> {
    let ptr = m.target_config().pointer_type();
    let call_conv = m.target_config().default_call_conv;
    let opts = options_for(m.isa());
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = m.make_context();
    let mut kernels = vec![];
    for (i, k) in prog.kernels.iter().enumerate() {
        let name = format!("{prefix}_k{i}");
        let sig = kernel_signature(call_conv, ptr);
        let id = m.declare_function(&name, Linkage::Local, &sig).map_err(module_err)?;
        ctx.func.signature = sig;
        build_kernel(k, &mut ctx.func, &mut fctx, m.isa().frontend_config(), opts);
        m.define_function(id, &mut ctx).map_err(|e| module_err(format!("kernel {}: {e:?}", k.name)))?;
        m.clear_context(&mut ctx);
        kernels.push(id);
    }

    let mut sig = ir::Signature::new(call_conv);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let run = m.declare_function(&format!("{prefix}_run_impl"), run_linkage, &sig).map_err(module_err)?;
    ctx.func.signature = sig;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let (inputs, outputs, arena, weights) = (p[0], p[1], p[2], p[3]);
        let pb = ptr.bytes() as i32;
        let max_args = prog.steps.iter().map(|s| s.args.len()).max().unwrap_or(0).max(1);
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, max_args as u32 * pb as u32, 3));
        let fail = b.create_block();
        let status_param = b.append_block_param(fail, types::I32);
        let flags = MemFlagsData::new().with_notrap();
        let mut frefs = vec![];
        for &k in &kernels {
            frefs.push(m.declare_func_in_func(k, b.func));
        }
        for step in &prog.steps {
            for (s, &buf) in step.args.iter().enumerate() {
                let v = match prog.buffers[buf].kind {
                    BufferKind::Input(j) => b.ins().load(ptr, flags, inputs, j as i32 * pb),
                    BufferKind::Output(j) => b.ins().load(ptr, flags, outputs, j as i32 * pb),
                    BufferKind::Weight(w) => b.ins().load(ptr, flags, weights, w as i32 * pb),
                    BufferKind::Temp { offset } => b.ins().iadd_imm_s(arena, offset as i64),
                };
                b.ins().stack_store(ptr, v, slot, s as i32 * pb);
            }
            let table = b.ins().stack_addr(ptr, slot, 0);
            let k = &prog.kernels[step.kernel];
            let extent = k.extent(k.domain[0]);
            let lo = b.ins().iconst(types::I64, 0);
            let hi = b.ins().iconst(types::I64, extent);
            let call = b.ins().call(frefs[step.kernel], &[table, lo, hi]);
            let st = b.inst_results(call)[0];
            let next = b.create_block();
            let bad = b.ins().icmp_imm_s(IntCC::NotEqual, st, 0);
            b.ins().brif(bad, fail, &[ir::BlockArg::Value(st)], next, &[]);
            b.switch_to_block(next);
        }
        let zero = b.ins().iconst(types::I32, 0);
        b.ins().return_(&[zero]);
        b.switch_to_block(fail);
        b.ins().return_(&[status_param]);
        b.seal_all_blocks();
        b.finalize(m.isa().frontend_config());
    }
    m.define_function(run, &mut ctx).map_err(|e| module_err(format!("driver: {e:?}")))?;
    m.clear_context(&mut ctx);
    Ok(EmittedProgram { run, kernels })
}
