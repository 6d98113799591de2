//! [`Program`] → a module in the odc ABI (see `odc_runtime::abi`), in any Cranelift module
//! (JIT or object).
//!
//! Emits one function per kernel and, with prefix `p`:
//!
//! * `p_run(ctx, inputs, n_inputs, outputs, n_outputs, arena, arena_size) -> status`: checks
//!   everything it is given (ABI version, counts, NULLs, dtypes, shapes, buffer sizes, arena size
//!   and alignment, external weights), then runs the kernels in order, each over its outer loop,
//!   through `ctx->parallel_for` when the host provides one and the kernel allows it;
//! * `p_arena_size()`, and `p_describe()` returning the static [`odc_runtime::abi::OdcModuleDesc`];
//! * weights as one 64-byte-aligned read-only blob (`Embedded`), or nothing when they live in a
//!   side file (`External`, base passed in the context) or are already in memory (`Absolute`, JIT).

use crate::codegen::{build_kernel, kernel_signature, CodegenOptions};
use crate::lower::{BufferKind, IoSpec, Program};
use cranelift_codegen::ir::{self, condcodes::IntCC, types, AbiParam, BlockArg, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use crate::error::CodegenError;
use crate::target::Target;
use odc_runtime::abi::{self, offsets as off, Status};

/// Where the kernels find the weights.
#[derive(Clone, Debug)]
pub enum WeightsMode {
    /// Addresses baked in as constants (in-process JIT; the caller keeps the bytes alive).
    Absolute(Vec<u64>),
    /// One blob in the module's read-only data.
    Embedded,
    /// A side file the host maps and passes as `ctx->weights`.
    External { file_name: String },
}

/// How to emit a program.
#[derive(Clone)]
pub struct ModuleSpec {
    /// Symbol prefix (a C identifier).
    pub prefix: String,
    pub weights: WeightsMode,
    /// The target `m` was made for. Its `microkernel_isa` (the same target at `opt_level=none`)
    /// compiles the GEMM microkernels: at `speed` the e-graph hoists every load of the unrolled
    /// k loop above the FMAs and the accumulators spill, while at `none` the instruction order
    /// the generator chose is kept (measured in `backends/examples/gemm_bench.rs`).
    pub target: Target,
}

/// A kernel compiled to machine code, ready for `Module::define_function_bytes`.
struct CompiledKernel {
    alignment: u64,
    bytes: Vec<u8>,
    relocs: Vec<cranelift_module::ModuleReloc>,
    disasm: Option<String>,
}

/// Build and compile kernel `k` (declared as `id`) with `isa`.
fn compile_kernel(k: &crate::kernel::Kernel, id: FuncId, sig: ir::Signature, isa: &dyn TargetIsa, opts: CodegenOptions) -> Result<CompiledKernel, CodegenError> {
    let mut ctx = cranelift_codegen::Context::for_function(ir::Function::with_name_signature(ir::UserFuncName::user(0, id.as_u32()), sig));
    build_kernel(k, &mut ctx.func, &mut FunctionBuilderContext::new(), isa.frontend_config(), opts);
    let disasm = std::env::var("ODC_DISASM").is_ok_and(|f| k.name.contains(f.as_str()));
    ctx.set_disasm(disasm);
    let code = ctx
        .compile(isa, &mut cranelift_codegen::control::ControlPlane::default())
        .map_err(|e| module_err(format!("kernel {}: {:?}", k.name, e.inner)))?;
    let (alignment, bytes) = (code.buffer.alignment as u64, code.code_buffer().to_vec());
    let disasm = disasm.then(|| code.vcode.clone().unwrap_or_else(|| "(no disassembly)".into()));
    let mach_relocs = code.buffer.relocs().to_vec();
    let relocs = mach_relocs.iter().map(|r| cranelift_module::ModuleReloc::from_mach_reloc(r, &ctx.func, id)).collect();
    Ok(CompiledKernel { alignment, bytes, relocs, disasm })
}

/// Compile every kernel of `prog` on up to one thread per core (kernels are independent; each
/// gets its own Cranelift context). GEMM kernels use `micro` when given.
fn compile_kernels(prog: &Program, ids: &[FuncId], sig: &ir::Signature, isa: &dyn TargetIsa, micro: Option<&dyn TargetIsa>, opts: CodegenOptions) -> Result<Vec<CompiledKernel>, CodegenError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = prog.kernels.len();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n).max(1);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = vec![];
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return done;
            }
            let k = &prog.kernels[i];
            let isa = match (&k.body, micro) {
                (crate::kernel::Body::Gemm(_), Some(micro)) => micro,
                _ => isa,
            };
            done.push((i, compile_kernel(k, ids[i], sig.clone(), isa, opts)));
        }
    };
    let mut results: Vec<Option<Result<CompiledKernel, CodegenError>>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mine = work();
        for (i, r) in helpers.into_iter().flat_map(|h| h.join().expect("a code generation thread panicked")).chain(mine) {
            results[i] = Some(r);
        }
    });
    results.into_iter().map(|r| r.expect("every kernel was compiled")).collect()
}

/// Symbols of an emitted program.
#[derive(Clone, Debug)]
pub struct EmittedProgram {
    pub run: FuncId,
    pub arena_size: FuncId,
    pub describe: FuncId,
    pub kernels: Vec<FuncId>,
    /// Weight offsets in the blob, its size and fingerprint (for `Embedded`/`External`).
    pub weights_layout: WeightsLayout,
}

/// Placement of every weight in one blob (64-byte aligned, zero padding between weights). The
/// weights are shared, not copied: the blob is assembled only where it is written.
#[derive(Clone, Debug, Default)]
pub struct WeightsLayout {
    pub offsets: Vec<usize>,
    pub size: usize,
    parts: Vec<odc_ir::Bytes>,
}

impl WeightsLayout {
    pub fn of(prog: &Program) -> Self {
        let mut offsets = vec![];
        let mut size = 0usize;
        for w in &prog.weights {
            size = size.div_ceil(64) * 64;
            offsets.push(size);
            size += w.data.len();
        }
        WeightsLayout { offsets, size, parts: prog.weights.iter().map(|w| w.data.clone()).collect() }
    }

    /// One blob for the weights of several programs (the entry points of one module), each
    /// distinct weight once: a weight whose bytes equal another's (the same tensor packed the
    /// same way by two programs) shares its place. Returns the layout and, per program, the
    /// offset of each of its weights.
    pub fn shared(progs: &[&Program]) -> (Self, Vec<Vec<usize>>) {
        use std::collections::HashMap;
        let mut layout = WeightsLayout::default();
        let mut by_content: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
        let mut per_program = vec![];
        for prog in progs {
            let mut offsets = vec![];
            for w in &prog.weights {
                let bytes = w.data.as_slice();
                let key = (bytes.len(), content_hash(bytes));
                let same = by_content.entry(key).or_default();
                let found = same.iter().copied().find(|&part| layout.parts[part].as_slice() == bytes);
                let part = found.unwrap_or_else(|| {
                    layout.size = layout.size.div_ceil(64) * 64;
                    layout.offsets.push(layout.size);
                    layout.size += bytes.len();
                    layout.parts.push(w.data.clone());
                    same.push(layout.parts.len() - 1);
                    layout.parts.len() - 1
                });
                offsets.push(layout.offsets[part]);
            }
            per_program.push(offsets);
        }
        (layout, per_program)
    }

    /// The bytes `range` of the blob.
    pub fn range(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        let mut out = vec![0u8; range.len()];
        for (part, &at) in self.parts.iter().zip(&self.offsets) {
            let (lo, hi) = (at.max(range.start), (at + part.len()).min(range.end));
            if lo < hi {
                out[lo - range.start..hi - range.start].copy_from_slice(&part.as_slice()[lo - at..hi - at]);
            }
        }
        out
    }

    /// The blob itself.
    pub fn blob(&self) -> Vec<u8> {
        self.range(0..self.size)
    }

    /// [`abi::fingerprint`] of the blob, from its first and last MiB.
    pub fn fingerprint(&self) -> u64 {
        let (head, tail) = abi::fingerprint_spans(self.size);
        abi::fingerprint_parts(self.size, &self.range(head), &self.range(tail))
    }

    /// Write the blob to `w` weight by weight.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        const ZEROS: [u8; 64] = [0; 64];
        let mut at = 0;
        for (part, &offset) in self.parts.iter().zip(&self.offsets) {
            w.write_all(&ZEROS[..offset - at])?;
            w.write_all(part.as_slice())?;
            at = offset + part.len();
        }
        Ok(())
    }
}

/// FNV-1a over 8-byte words (the tail bytewise): cheap enough for every weight of a model.
fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(0x100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn module_err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

/// Define every kernel, the weights, the descriptor and the three entry points in `m`.
pub fn define_program<M: Module>(m: &mut M, prog: &Program, spec: &ModuleSpec) -> Result<EmittedProgram, CodegenError> {
    check_module_target(m)?;
    prog.check_order().map_err(|e| CodegenError::Invalid(e.to_string()))?;
    let p = &spec.prefix;
    let mut fctx = FunctionBuilderContext::new();
    let kernels = define_kernels(m, prog, spec, p)?;
    let layout = WeightsLayout::of(prog);
    let weights_data = define_weights_blob(m, spec, &layout)?;
    let fingerprint = weights_fingerprint(spec, &layout);
    let desc = define_descriptor(m, p, spec, &prog.inputs, &prog.outputs, prog.arena_size, &layout, fingerprint)?;
    let arena_size = define_u64_fn(m, &format!("{p}_arena_size"), prog.arena_size as u64, &mut fctx)?;
    let describe = define_describe_fn(m, &format!("{p}_describe"), desc, &mut fctx)?;
    let entry = if prog.state.is_empty() { format!("{p}_run") } else { format!("{p}_step") };
    let offsets = match &spec.weights {
        WeightsMode::Absolute(addrs) => addrs.iter().map(|&a| a as usize).collect(),
        _ => layout.offsets.clone(),
    };
    let variant = Variant { prog, kernels: &kernels, weight_offsets: &offsets, max_position: None };
    let run = define_run(m, &[variant], spec, &entry, layout.size, weights_data, &mut fctx)?;
    Ok(EmittedProgram { run, arena_size, describe, kernels, weights_layout: layout })
}

/// One stateful entry point of a module: its name and its variants, each a program with the
/// bound on the position input it runs under (see [`Variant::max_position`]; the last: `None`).
pub struct StepEntry<'a> {
    pub name: &'a str,
    pub variants: Vec<(&'a Program, Option<(usize, i64)>)>,
}

/// What [`define_stateful_module`] emitted.
pub struct EmittedSteps {
    /// One function per [`StepEntry`], in order.
    pub entries: Vec<FuncId>,
    pub weights_layout: WeightsLayout,
}

/// Define a stateful module: one entry point per [`StepEntry`] (a decoder's `prefill` and
/// `decode`), all over one state layout and one weights blob (identical weights stored once,
/// across entries and variants), with `p_<name>`, `p_<name>_describe`, `p_state_size`,
/// `p_context` (the positions the state holds, `context`), `p_arena_size` (the largest
/// variant's) and a `p_describe` without tensors (see `odc_runtime::abi`).
pub fn define_stateful_module<M: Module>(m: &mut M, entries: &[StepEntry], context: usize, spec: &ModuleSpec) -> Result<EmittedSteps, CodegenError> {
    check_module_target(m)?;
    let p = &spec.prefix;
    let Some(first) = entries.first().and_then(|e| e.variants.first()).map(|v| v.0) else {
        return Err(CodegenError::Invalid("a stateful module needs at least one entry point".into()));
    };
    for e in entries {
        let name = e.name;
        if ["run", "describe", "arena_size", "state_size", "context", "weights", "meta", "desc", "tensor_descs"].contains(&name)
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(CodegenError::Invalid(format!("'{name}' cannot name an entry point")));
        }
        let Some((head, _)) = e.variants.first() else {
            return Err(CodegenError::Invalid(format!("entry point '{name}' has no program")));
        };
        for (prog, _) in &e.variants {
            prog.check_order().map_err(|e| CodegenError::Invalid(e.to_string()))?;
            if prog.state.is_empty() {
                return Err(CodegenError::Invalid(format!("entry point '{name}' has no state")));
            }
            if prog.state != first.state || prog.state_size != first.state_size {
                return Err(CodegenError::Invalid(format!("entry point '{name}' lays out its state differently from the first")));
            }
            if prog.inputs != head.inputs || prog.outputs != head.outputs {
                return Err(CodegenError::Invalid(format!("the variants of entry point '{name}' take different tensors")));
            }
        }
    }
    let mut fctx = FunctionBuilderContext::new();
    let progs: Vec<&Program> = entries.iter().flat_map(|e| e.variants.iter().map(|v| v.0)).collect();
    let (layout, mut offsets) = WeightsLayout::shared(&progs);
    if let WeightsMode::Absolute(_) = spec.weights {
        offsets = progs.iter().map(|q| q.weights.iter().map(|w| w.bytes().as_ptr() as usize).collect()).collect();
    }
    let weights_data = define_weights_blob(m, spec, &layout)?;
    let fingerprint = weights_fingerprint(spec, &layout);
    let mut offsets = offsets.into_iter();
    let mut ids = vec![];
    let mut arena = 0;
    for e in entries {
        let base = format!("{p}_{}", e.name);
        let mut kernels = vec![];
        for (vi, (prog, _)) in e.variants.iter().enumerate() {
            let kbase = if e.variants.len() == 1 { base.clone() } else { format!("{base}_v{vi}") };
            kernels.push(define_kernels(m, prog, spec, &kbase)?);
        }
        let offs: Vec<Vec<usize>> = e.variants.iter().map(|_| offsets.next().expect("one offset list per program")).collect();
        let variants: Vec<Variant> = e
            .variants
            .iter()
            .zip(&kernels)
            .zip(&offs)
            .map(|((&(prog, max_position), kernels), weight_offsets)| Variant { prog, kernels, weight_offsets, max_position })
            .collect();
        let head = e.variants[0].0;
        let need = e.variants.iter().map(|v| v.0.arena_size).max().unwrap_or(0);
        arena = arena.max(need);
        let desc = define_descriptor(m, &base, spec, &head.inputs, &head.outputs, need, &layout, fingerprint)?;
        define_describe_fn(m, &format!("{base}_describe"), desc, &mut fctx)?;
        ids.push(define_run(m, &variants, spec, &base, layout.size, weights_data, &mut fctx)?);
    }
    let desc = define_descriptor(m, p, spec, &[], &[], arena, &layout, fingerprint)?;
    define_describe_fn(m, &format!("{p}_describe"), desc, &mut fctx)?;
    define_u64_fn(m, &format!("{p}_arena_size"), arena as u64, &mut fctx)?;
    define_u64_fn(m, &format!("{p}_state_size"), first.state_size as u64, &mut fctx)?;
    define_u64_fn(m, &format!("{p}_context"), context as u64, &mut fctx)?;
    Ok(EmittedSteps { entries: ids, weights_layout: layout })
}

fn check_module_target<M: Module>(m: &M) -> Result<(), CodegenError> {
    if m.target_config().pointer_type() != types::I64 {
        return Err(CodegenError::Invalid("odc modules need a 64-bit target".into()));
    }
    Ok(())
}

/// Declare and compile the kernels of `prog` as `{base}_k{i}`.
fn define_kernels<M: Module>(m: &mut M, prog: &Program, spec: &ModuleSpec, base: &str) -> Result<Vec<FuncId>, CodegenError> {
    let sig = kernel_signature(m.target_config().default_call_conv, m.target_config().pointer_type());
    let mut kernels = vec![];
    for (i, k) in prog.kernels.iter().enumerate() {
        kernels.push(m.declare_function(&format!("{base}_k{i}"), Linkage::Local, &sig).map_err(module_err)?);
        if std::env::var("ODC_DUMP_KERNELS").is_ok_and(|f| k.name.contains(f.as_str())) {
            eprintln!("{k}");
        }
    }
    let compiled = compile_kernels(prog, &kernels, &sig, m.isa(), Some(&*spec.target.microkernel_isa), spec.target.codegen)?;
    for ((k, &id), c) in prog.kernels.iter().zip(&kernels).zip(compiled) {
        if let Some(d) = c.disasm {
            eprintln!("=== kernel {} ===\n{d}", k.name);
        }
        m.define_function_bytes(id, c.alignment, &c.bytes, &c.relocs).map_err(module_err)?;
    }
    Ok(kernels)
}

/// The embedded weights blob (`Embedded` with any weights), 64-byte aligned read-only data.
fn define_weights_blob<M: Module>(m: &mut M, spec: &ModuleSpec, layout: &WeightsLayout) -> Result<Option<DataId>, CodegenError> {
    match &spec.weights {
        WeightsMode::Embedded if layout.size > 0 => {
            let id = m.declare_data(&format!("{}_weights", spec.prefix), Linkage::Local, false, false).map_err(module_err)?;
            let mut d = DataDescription::new();
            d.define(layout.blob().into_boxed_slice());
            d.set_align(64);
            m.define_data(id, &d).map_err(module_err)?;
            Ok(Some(id))
        }
        _ => Ok(None),
    }
}

fn weights_fingerprint(spec: &ModuleSpec, layout: &WeightsLayout) -> u64 {
    match &spec.weights {
        WeightsMode::External { .. } => layout.fingerprint(),
        _ => 0,
    }
}

/// `uint64_t name(void)`, returning `value`.
fn define_u64_fn<M: Module>(m: &mut M, name: &str, value: u64, fctx: &mut FunctionBuilderContext) -> Result<FuncId, CodegenError> {
    let mut sig = ir::Signature::new(m.target_config().default_call_conv);
    sig.returns.push(AbiParam::new(types::I64));
    let id = m.declare_function(name, Linkage::Export, &sig).map_err(module_err)?;
    let mut ctx = m.make_context();
    ctx.func.signature = sig;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let e = b.create_block();
        b.switch_to_block(e);
        let v = b.ins().iconst(types::I64, value as i64);
        b.ins().return_(&[v]);
        b.seal_all_blocks();
        b.finalize(m.isa().frontend_config());
    }
    m.define_function(id, &mut ctx).map_err(module_err)?;
    Ok(id)
}

/// `const odc_module_desc *name(void)`, returning the address of `desc`.
fn define_describe_fn<M: Module>(m: &mut M, name: &str, desc: DataId, fctx: &mut FunctionBuilderContext) -> Result<FuncId, CodegenError> {
    let ptr = m.target_config().pointer_type();
    let mut sig = ir::Signature::new(m.target_config().default_call_conv);
    sig.returns.push(AbiParam::new(ptr));
    let id = m.declare_function(name, Linkage::Export, &sig).map_err(module_err)?;
    let mut ctx = m.make_context();
    ctx.func.signature = sig;
    {
        let gv = m.declare_data_in_func(desc, &mut ctx.func);
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let e = b.create_block();
        b.switch_to_block(e);
        let v = b.ins().symbol_value(ptr, gv);
        b.ins().return_(&[v]);
        b.seal_all_blocks();
        b.finalize(m.isa().frontend_config());
    }
    m.define_function(id, &mut ctx).map_err(module_err)?;
    Ok(id)
}

/// The static descriptor (data symbols `{base}_meta`, `{base}_tensor_descs`, `{base}_desc`):
/// strings and shapes, tensor descriptors, and the module descriptor.
#[allow(clippy::too_many_arguments)]
fn define_descriptor<M: Module>(
    m: &mut M,
    base: &str,
    spec: &ModuleSpec,
    inputs: &[IoSpec],
    outputs: &[IoSpec],
    arena_size: usize,
    layout: &WeightsLayout,
    fingerprint: u64,
) -> Result<DataId, CodegenError> {
    let p = &spec.prefix;
    // Pool of NUL-terminated strings and i64 shape arrays.
    let mut pool: Vec<u8> = vec![];
    let add_str = |pool: &mut Vec<u8>, s: &str| -> usize {
        let o = pool.len();
        pool.extend(s.as_bytes());
        pool.push(0);
        o
    };
    let name_off = add_str(&mut pool, p);
    let weights_file_off = match &spec.weights {
        WeightsMode::External { file_name } => Some(add_str(&mut pool, file_name)),
        _ => None,
    };
    let ios: Vec<&IoSpec> = inputs.iter().chain(outputs).collect();
    let mut io_offs = vec![];
    for io in &ios {
        let n = add_str(&mut pool, &io.name);
        while pool.len() % 8 != 0 {
            pool.push(0);
        }
        let s = pool.len();
        for &d in &io.shape {
            pool.extend((d as i64).to_le_bytes());
        }
        io_offs.push((n, s));
    }
    let pool_id = m.declare_data(&format!("{base}_meta"), Linkage::Local, false, false).map_err(module_err)?;
    let mut d = DataDescription::new();
    d.define(pool.into_boxed_slice());
    d.set_align(8);
    m.define_data(pool_id, &d).map_err(module_err)?;

    let descs_id = m.declare_data(&format!("{base}_tensor_descs"), Linkage::Local, false, false).map_err(module_err)?;
    let mut bytes = vec![0u8; 24 * ios.len().max(1)];
    let mut d = DataDescription::new();
    let gv_pool = m.declare_data_in_data(pool_id, &mut d);
    for (i, io) in ios.iter().enumerate() {
        let base = 24 * i;
        bytes[base + 16..base + 20].copy_from_slice(&(io.shape.len() as u32).to_le_bytes());
        bytes[base + 20..base + 24].copy_from_slice(&io.dtype.abi_code().to_le_bytes());
        d.write_data_addr(base as u32, gv_pool, io_offs[i].0 as i64);
        d.write_data_addr(base as u32 + 8, gv_pool, io_offs[i].1 as i64);
    }
    d.define(bytes.into_boxed_slice());
    d.set_align(8);
    m.define_data(descs_id, &d).map_err(module_err)?;

    let desc_id = m.declare_data(&format!("{base}_desc"), Linkage::Local, false, false).map_err(module_err)?;
    let mut b = vec![0u8; 80];
    let put32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |b: &mut Vec<u8>, o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut b, 0, abi::MAGIC);
    put32(&mut b, 4, abi::ABI_VERSION);
    put32(&mut b, 32, inputs.len() as u32);
    put32(&mut b, 36, outputs.len() as u32);
    put64(&mut b, 40, arena_size as u64);
    put64(&mut b, 48, abi::ARENA_ALIGN);
    let external = matches!(spec.weights, WeightsMode::External { .. });
    put64(&mut b, 56, if external { layout.size as u64 } else { 0 });
    put64(&mut b, 72, fingerprint);
    let mut d = DataDescription::new();
    let gv_pool = m.declare_data_in_data(pool_id, &mut d);
    let gv_descs = m.declare_data_in_data(descs_id, &mut d);
    d.write_data_addr(8, gv_pool, name_off as i64);
    d.write_data_addr(16, gv_descs, 0);
    d.write_data_addr(24, gv_descs, 24 * inputs.len() as i64);
    if let Some(o) = weights_file_off {
        d.write_data_addr(64, gv_pool, o as i64);
    }
    d.define(b.into_boxed_slice());
    d.set_align(8);
    m.define_data(desc_id, &d).map_err(module_err)?;
    Ok(desc_id)
}

/// One compiled form of an entry point: a program with its kernels and weight offsets.
pub struct Variant<'a> {
    pub prog: &'a Program,
    pub kernels: &'a [FuncId],
    pub weight_offsets: &'a [usize],
    /// `(input, max)`: this variant runs when the first i64 of input `input` is at most `max`,
    /// else the next variant is tried; the last runs whatever the bound (a decoder's steps are
    /// compiled per cache window, see `KvCache::windows`).
    pub max_position: Option<(usize, i64)>,
}

/// Emits the entry point `symbol`: `p_run`, or for a program with state a stateful entry that
/// also takes the state buffer (see `odc_runtime::abi`), running one of `variants` (all with the
/// same inputs, outputs and state); the weights blob has `blob_size` bytes.
#[allow(clippy::too_many_arguments)]
fn define_run<M: Module>(
    m: &mut M,
    variants: &[Variant],
    spec: &ModuleSpec,
    symbol: &str,
    blob_size: usize,
    weights_data: Option<DataId>,
    fctx: &mut FunctionBuilderContext,
) -> Result<FuncId, CodegenError> {
    let ptr = types::I64;
    let call_conv = m.target_config().default_call_conv;
    let prog = variants[0].prog;
    let arena_need = variants.iter().map(|v| v.prog.arena_size).max().unwrap_or(0);
    let stateful = !prog.state.is_empty();
    let mut sig = ir::Signature::new(call_conv);
    let params: &[ir::Type] =
        if stateful { &[ptr, ptr, types::I32, ptr, types::I32, ptr, types::I64, ptr, types::I64] } else { &[ptr, ptr, types::I32, ptr, types::I32, ptr, types::I64] };
    for &t in params {
        sig.params.push(AbiParam::new(t));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let run = m.declare_function(symbol, Linkage::Export, &sig).map_err(module_err)?;
    let mut ctx = m.make_context();
    ctx.func.signature = sig;
    let frefs: Vec<Vec<ir::FuncRef>> =
        variants.iter().map(|v| v.kernels.iter().map(|&k| m.declare_func_in_func(k, &mut ctx.func)).collect()).collect();
    let weights_gv = weights_data.map(|d| m.declare_data_in_func(d, &mut ctx.func));
    let flags = MemFlagsData::new().with_notrap();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let a = b.block_params(entry).to_vec();
        let (ctxp, inputs, n_in, outputs, n_out, arena, arena_len) = (a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
        let fail = b.create_block();
        let code = b.append_block_param(fail, types::I32);
        // `bail_if(cond, status)`: return `status` when `cond` is true.
        let bail_if = |b: &mut FunctionBuilder, cond: Value, st: Status| {
            let next = b.create_block();
            let c = b.ins().iconst(types::I32, st as i64);
            b.ins().brif(cond, fail, &[BlockArg::Value(c)], next, &[]);
            b.switch_to_block(next);
        };
        // Context: ABI version, parallel_for, weights (all optional when ctx is NULL).
        let has_ctx = b.ins().icmp_imm_s(IntCC::NotEqual, ctxp, 0);
        let with_ctx = b.create_block();
        let after_ctx = b.create_block();
        let pf = b.append_block_param(after_ctx, ptr);
        let user = b.append_block_param(after_ctx, ptr);
        let ext_w = b.append_block_param(after_ctx, ptr);
        let zero = b.ins().iconst(ptr, 0);
        b.ins().brif(has_ctx, with_ctx, &[], after_ctx, &[BlockArg::Value(zero), BlockArg::Value(zero), BlockArg::Value(zero)]);
        b.switch_to_block(with_ctx);
        let ver = b.ins().load(types::I32, flags, ctxp, off::CTX_ABI_VERSION);
        let bad = b.ins().icmp_imm_s(IntCC::NotEqual, ver, abi::ABI_VERSION as i64);
        bail_if(&mut b, bad, Status::AbiMismatch);
        let pfv = b.ins().load(ptr, flags, ctxp, off::CTX_PARALLEL_FOR);
        let uv = b.ins().load(ptr, flags, ctxp, off::CTX_PARALLEL_USER);
        let wv = b.ins().load(ptr, flags, ctxp, off::CTX_WEIGHTS);
        b.ins().jump(after_ctx, &[BlockArg::Value(pfv), BlockArg::Value(uv), BlockArg::Value(wv)]);
        b.switch_to_block(after_ctx);
        // Counts and NULLs.
        let bad = b.ins().icmp_imm_s(IntCC::NotEqual, n_in, prog.inputs.len() as i64);
        bail_if(&mut b, bad, Status::WrongCount);
        let bad = b.ins().icmp_imm_s(IntCC::NotEqual, n_out, prog.outputs.len() as i64);
        bail_if(&mut b, bad, Status::WrongCount);
        for (arr, n) in [(inputs, prog.inputs.len()), (outputs, prog.outputs.len())] {
            if n > 0 {
                let bad = b.ins().icmp_imm_s(IntCC::Equal, arr, 0);
                bail_if(&mut b, bad, Status::NullPointer);
            }
        }
        if arena_need > 0 {
            let bad = b.ins().icmp_imm_s(IntCC::Equal, arena, 0);
            bail_if(&mut b, bad, Status::NullPointer);
            let bad = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, arena_len, arena_need as i64);
            bail_if(&mut b, bad, Status::ArenaTooSmall);
            let mis = b.ins().band_imm_s(arena, abi::ARENA_ALIGN as i64 - 1);
            let bad = b.ins().icmp_imm_s(IntCC::NotEqual, mis, 0);
            bail_if(&mut b, bad, Status::ArenaTooSmall);
        }
        let state = stateful.then(|| (a[7], a[8]));
        if let Some((state, state_len)) = state.filter(|_| prog.state_size > 0) {
            let bad = b.ins().icmp_imm_s(IntCC::Equal, state, 0);
            bail_if(&mut b, bad, Status::StateTooSmall);
            let bad = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, state_len, prog.state_size as i64);
            bail_if(&mut b, bad, Status::StateTooSmall);
            let mis = b.ins().band_imm_s(state, abi::ARENA_ALIGN as i64 - 1);
            let bad = b.ins().icmp_imm_s(IntCC::NotEqual, mis, 0);
            bail_if(&mut b, bad, Status::StateTooSmall);
        }
        // Weights base.
        let wbase = match (&spec.weights, weights_gv) {
            (WeightsMode::Embedded, Some(gv)) => Some(b.ins().symbol_value(ptr, gv)),
            (WeightsMode::External { .. }, _) if blob_size > 0 => {
                let bad = b.ins().icmp_imm_s(IntCC::Equal, ext_w, 0);
                bail_if(&mut b, bad, Status::MissingWeights);
                Some(ext_w)
            }
            _ => None,
        };
        // Every tensor: dtype, rank, extents, data, size.
        let mut data_ptrs = vec![vec![], vec![]];
        for (side, (arr, specs)) in [(inputs, &prog.inputs), (outputs, &prog.outputs)].into_iter().enumerate() {
            for (j, io) in specs.iter().enumerate() {
                let t = b.ins().iadd_imm_s(arr, j as i64 * off::TENSOR_SIZE as i64);
                let dt = b.ins().load(types::I32, flags, t, off::TENSOR_DTYPE);
                let bad = b.ins().icmp_imm_s(IntCC::NotEqual, dt, io.dtype.abi_code() as i64);
                bail_if(&mut b, bad, Status::WrongDtype);
                let rank = b.ins().load(types::I32, flags, t, off::TENSOR_RANK);
                let bad = b.ins().icmp_imm_s(IntCC::NotEqual, rank, io.shape.len() as i64);
                bail_if(&mut b, bad, Status::WrongShape);
                if !io.shape.is_empty() {
                    let sp = b.ins().load(ptr, flags, t, off::TENSOR_SHAPE);
                    let bad = b.ins().icmp_imm_s(IntCC::Equal, sp, 0);
                    bail_if(&mut b, bad, Status::NullPointer);
                    for (d, &ext) in io.shape.iter().enumerate() {
                        let v = b.ins().load(types::I64, flags, sp, 8 * d as i32);
                        let bad = b.ins().icmp_imm_s(IntCC::NotEqual, v, ext as i64);
                        bail_if(&mut b, bad, Status::WrongShape);
                    }
                }
                let bytes = io.dtype.byte_len(io.shape.iter().product());
                let data = b.ins().load(ptr, flags, t, off::TENSOR_DATA);
                if bytes > 0 {
                    let bad = b.ins().icmp_imm_s(IntCC::Equal, data, 0);
                    bail_if(&mut b, bad, Status::NullPointer);
                    let size = b.ins().load(types::I64, flags, t, off::TENSOR_SIZE_BYTES);
                    let bad = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, size, bytes as i64);
                    bail_if(&mut b, bad, Status::BufferTooSmall);
                }
                data_ptrs[side].push(data);
            }
        }
        // The kernels, in the program's run order (checked in `define_program`).
        let pb = 8i32;
        let max_args = variants.iter().flat_map(|v| v.prog.steps.iter()).map(|s| s.args.len()).max().unwrap_or(0).max(1);
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, max_args as u32 * pb as u32, 3));
        let mut pf_sig = ir::Signature::new(call_conv);
        for t in [ptr, ptr, ptr, types::I64] {
            pf_sig.params.push(AbiParam::new(t));
        }
        pf_sig.returns.push(AbiParam::new(types::I32));
        let pf_sigref = b.import_signature(pf_sig);
        let finished = b.create_block();
        for (vi, v) in variants.iter().enumerate() {
        let prog = v.prog;
        // A variant for small positions runs when the position input is within its bound;
        // otherwise the next one is tried (the last runs unconditionally).
        let next_variant = match v.max_position {
            Some((input, max)) if vi + 1 < variants.len() => {
                let position = b.ins().load(types::I64, flags, data_ptrs[0][input], 0);
                let (this, other) = (b.create_block(), b.create_block());
                let fits = b.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, position, max);
                b.ins().brif(fits, this, &[], other, &[]);
                b.switch_to_block(this);
                Some(other)
            }
            _ => None,
        };
        for step in prog.steps_in_order() {
            for (s, &buf) in step.args.iter().enumerate() {
                let v = match prog.buffers[buf].kind {
                    BufferKind::Input(j) => data_ptrs[0][j],
                    BufferKind::Output(j) => data_ptrs[1][j],
                    BufferKind::Weight(w) => match (&spec.weights, wbase) {
                        // Absolute: the variant's offsets are the weights' addresses.
                        (WeightsMode::Absolute(_), _) => b.ins().iconst(ptr, v.weight_offsets[w] as i64),
                        (_, Some(base)) => b.ins().iadd_imm_s(base, v.weight_offsets[w] as i64),
                        // Only empty weights have no blob; a zero-size buffer is never read.
                        _ => b.ins().iconst(ptr, 0),
                    },
                    BufferKind::Temp { offset } => b.ins().iadd_imm_s(arena, offset as i64),
                    BufferKind::State { offset } => b.ins().iadd_imm_s(state.expect("state buffers only in stateful programs").0, offset as i64),
                };
                b.ins().stack_store(ptr, v, slot, s as i32 * pb);
            }
            let table = b.ins().stack_addr(ptr, slot, 0);
            let k = &prog.kernels[step.kernel];
            let extent = k.outer_extent();
            let lo = b.ins().iconst(types::I64, 0);
            let hi = b.ins().iconst(types::I64, extent);
            let done = b.create_block();
            let st = b.append_block_param(done, types::I32);
            if k.is_parallel() {
                let par = b.create_block();
                let seq = b.create_block();
                let has_pf = b.ins().icmp_imm_s(IntCC::NotEqual, pf, 0);
                b.ins().brif(has_pf, par, &[], seq, &[]);
                b.switch_to_block(par);
                let faddr = b.ins().func_addr(ptr, frefs[vi][step.kernel]);
                let call = b.ins().call_indirect(pf_sigref, pf, &[user, faddr, table, hi]);
                let r = b.inst_results(call)[0];
                b.ins().jump(done, &[BlockArg::Value(r)]);
                b.switch_to_block(seq);
            }
            let call = b.ins().call(frefs[vi][step.kernel], &[table, lo, hi]);
            let r = b.inst_results(call)[0];
            b.ins().jump(done, &[BlockArg::Value(r)]);
            b.switch_to_block(done);
            let bad = b.ins().icmp_imm_s(IntCC::NotEqual, st, 0);
            let next = b.create_block();
            b.ins().brif(bad, fail, &[BlockArg::Value(st)], next, &[]);
            b.switch_to_block(next);
        }
        b.ins().jump(finished, &[]);
        match next_variant {
            Some(other) => b.switch_to_block(other),
            None => break,
        }
        }
        b.switch_to_block(finished);
        let ok = b.ins().iconst(types::I32, 0);
        b.ins().return_(&[ok]);
        b.switch_to_block(fail);
        b.ins().return_(&[code]);
        b.seal_all_blocks();
        b.finalize(m.isa().frontend_config());
    }
    m.define_function(run, &mut ctx).map_err(|e| module_err(format!("{symbol}: {e:?}")))?;
    m.clear_context(&mut ctx);
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use odc_ir::Tensor;

    fn program_with(sizes: &[usize]) -> Program {
        let weights = sizes
            .iter()
            .enumerate()
            .map(|(w, &n)| Tensor::from_f32(vec![n], &(0..n).map(|i| (i * 31 + w * 7) as f32).collect::<Vec<_>>()))
            .collect();
        Program { weights, ..Program::default() }
    }

    /// The blob assembled range by range, written weight by weight and fingerprinted from its
    /// ends equals the blob built whole, for blobs shorter and longer than two fingerprint spans.
    #[test]
    fn weights_layout_writes_and_fingerprints_the_blob_it_describes() {
        for sizes in [&[3, 5, 17][..], &[300_000, 1, 250_001, 70_000][..]] {
            let layout = WeightsLayout::of(&program_with(sizes));
            let blob = layout.blob();
            assert_eq!(blob.len(), layout.size);
            for (w, &at) in layout.offsets.iter().enumerate() {
                assert_eq!(at % 64, 0);
                assert_eq!(&blob[at..at + sizes[w] * 4], program_with(sizes).weights[w].bytes());
            }
            let mut written = vec![];
            layout.write_to(&mut written).unwrap();
            assert_eq!(written, blob);
            assert_eq!(layout.range(5..layout.size - 3), blob[5..layout.size - 3]);
            assert_eq!(layout.fingerprint(), abi::fingerprint(&blob));
        }
    }
}
