//! The `odc` command line.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use odc::{npy, CompileOptions, Timings};
use odc_backends::OptLevel;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "odc", version, about = "An ahead-of-time compiler for neural networks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Fix an input's shape: NAME=D1xD2x... (repeatable).
    #[arg(long = "shape", value_name = "NAME=SHAPE")]
    shapes: Vec<String>,
    /// Give a symbolic dimension a value: NAME=N (repeatable).
    #[arg(long = "dim", value_name = "NAME=N")]
    dims: Vec<String>,
    /// Kernel grouping: saturate (equality saturation, default), greedy, or off (one kernel per op).
    #[arg(long = "fuse", value_name = "MODE")]
    fuse: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile with the JIT and run on .npy inputs.
    Run {
        #[command(flatten)]
        m: ModelArgs,
        /// An input: NAME=FILE.npy (or just FILE.npy for a single-input model). Repeatable.
        #[arg(long = "input", short = 'i', value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// Write each output to DIR/<name>.npy.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Print at most this many values per output.
        #[arg(long, default_value_t = 16)]
        print: usize,
        /// Print the time each compile stage and the run took.
        #[arg(long)]
        timings: bool,
    },
    /// Report every unsupported operator, attribute and dtype (exit status 1 if any).
    Check {
        #[command(flatten)]
        m: ModelArgs,
    },
    /// Compile ahead of time into an object, libraries and bindings for a target.
    Compile {
        #[command(flatten)]
        m: ModelArgs,
        /// Target triple or x86_64 / aarch64 / riscv64 (default: the host).
        #[arg(long)]
        target: Option<String>,
        /// CPU preset (x86_64: x86-64-v2, x86-64-v3, haswell, ...; native for the host's).
        #[arg(long)]
        cpu: Option<String>,
        /// Feature toggles, comma separated: +fma,+avx2,-avx,+dotprod,+v, ...
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// What to write: obj, staticlib, sharedlib, header, rust (comma separated).
        #[arg(long, default_value = "obj,header")]
        emit: String,
        /// Symbol prefix (default: the model file's stem).
        #[arg(long)]
        prefix: Option<String>,
        /// Weights: embedded in the object, external (a .weights file), or auto (external above 128 MiB).
        #[arg(long, default_value = "auto")]
        weights: String,
        /// Linker for sharedlib (default: cc, or the target's Debian cross gcc).
        #[arg(long)]
        linker: Option<String>,
        /// Decoder checkpoints: positions the KV cache holds (default: max_position_embeddings,
        /// at most 2048). A decoder without --dim sequence=N compiles to prefill/decode steps.
        #[arg(long)]
        context: Option<usize>,
        /// Decoder checkpoints: tokens per prefill step (default 64).
        #[arg(long)]
        max_prefill: Option<usize>,
        /// Decoder checkpoints: each step is compiled once per KV-cache window, doubling from this
        /// many slots (default 64) to the whole cache, and attends to the smallest window that
        /// holds its positions: larger means fewer variants (faster compile), slower attention.
        #[arg(long)]
        min_window: Option<usize>,
        /// Output: dir/name.o (other artifacts beside it), or a directory.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Print where compile time went (each stage, in milliseconds).
        #[arg(long)]
        timings: bool,
    },
    /// Time a model: random (or given) inputs, warm-up, repeated runs, per-kernel breakdown.
    Bench {
        #[command(flatten)]
        m: ModelArgs,
        /// Threads sharing each parallel loop.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Use this input instead of random values: NAME=FILE.npy (repeatable).
        #[arg(long = "input", short = 'i', value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Untimed runs first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Kernels listed in the breakdown.
        #[arg(long, default_value_t = 12)]
        top: usize,
    },
    /// Run a compiled module (`odc compile --emit sharedlib`) through the runtime loader: print
    /// or save its outputs, or time it (`--runs N` ends with `median_ms=<x> min_ms=<y>`).
    Exec {
        /// The shared library (lib<name>.so).
        module: PathBuf,
        /// Symbol prefix (default: the file name without `lib` and `.so`).
        #[arg(long)]
        prefix: Option<String>,
        /// An input: NAME=FILE.npy (or just FILE.npy for a single-input module). Repeatable.
        #[arg(long = "input", short = 'i', value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// Write each output to DIR/<name>.npy.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Print at most this many values per output.
        #[arg(long, default_value_t = 16)]
        print: usize,
        /// Threads sharing each parallel loop.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed runs (0: run once and print the outputs). Inputs not given are random.
        #[arg(long, default_value_t = 0)]
        runs: usize,
        /// Untimed runs before the timed ones.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// A stateful module (a decoder): run this step (prefill, decode) on a fresh, zeroed
        /// state; without it, list the steps.
        #[arg(long)]
        step: Option<String>,
    },
    /// Generate text with a decoder: a checkpoint directory (compiled in process) or a compiled
    /// decoder module. Streams the text, then prints `generated: <ids>` and
    /// `prefill_tok_s=<x> decode_tok_s=<y>`.
    Generate(GenerateArgs),
    /// Show the imported graph and the kernel plan.
    Inspect {
        #[command(flatten)]
        m: ModelArgs,
        /// Print the primitive graph.
        #[arg(long)]
        graph: bool,
        /// Print every kernel's IR.
        #[arg(long)]
        kernels: bool,
        /// Report the fusion decisions of equality saturation: each kernel, the nodes it fused
        /// and its estimated cost.
        #[arg(long)]
        fusion: bool,
        /// With --fusion: print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A decoder checkpoint directory (llama, qwen2) or a compiled decoder module (.so).
    model: PathBuf,
    /// The prompt text (needs the model's tokenizer).
    #[arg(long, conflicts_with = "prompt_tokens")]
    prompt: Option<String>,
    /// The prompt as token ids: 1,2,3.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    prompt_tokens: Vec<i64>,
    /// New tokens to generate (fewer if an end-of-sequence token comes first).
    #[arg(short = 'n', long = "max-new-tokens", default_value_t = 64)]
    max_new_tokens: usize,
    /// Sample at this temperature (default: greedy decoding).
    #[arg(long, conflicts_with = "greedy", allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// When sampling: keep the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// When sampling: keep the smallest set of tokens whose probability reaches P.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// When sampling: the random seed (default: a fresh one, printed on stderr).
    #[arg(long)]
    seed: Option<u64>,
    /// Always take the most likely token (the default unless --temperature is given).
    #[arg(long)]
    greedy: bool,
    /// Threads sharing each parallel loop.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Checkpoints: positions the KV cache holds (default: max_position_embeddings, at most 2048).
    #[arg(long)]
    context: Option<usize>,
    /// Checkpoints: tokens per prefill step (default 64; longer prompts take several steps).
    #[arg(long)]
    max_prefill: Option<usize>,
    /// Checkpoints: the smallest KV-cache window compiled (default 64; see `odc compile --help`).
    #[arg(long)]
    min_window: Option<usize>,
    /// The tokenizer: a tokenizer.json, or a directory with one (or vocab.json + merges.txt).
    /// Default: the checkpoint directory, or the module's directory.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Keep going past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Module symbol prefix (default: the file name without `lib` and `.so`).
    #[arg(long)]
    prefix: Option<String>,
}

fn generate(a: &GenerateArgs) -> Result<()> {
    use odc::generate::{self as gen, Sampling, TextStream, TextTokenizer};
    use std::io::Write;
    let side = gen::side_files_dir(&a.model);
    let tokenizer_path = a.tokenizer.clone().unwrap_or_else(|| side.clone());
    let tokenizer = TextTokenizer::find(&tokenizer_path)?;
    let prompt = match (&a.prompt, &a.prompt_tokens[..]) {
        (Some(text), _) => match &tokenizer {
            Some(t) => t.encode(text)?,
            None => bail!("--prompt needs a tokenizer: {} has no tokenizer.json (or vocab.json + merges.txt); pass --tokenizer or --prompt-tokens", tokenizer_path.display()),
        },
        (None, []) => bail!("give a prompt: --prompt TEXT or --prompt-tokens 1,2,3"),
        (None, ids) => ids.to_vec(),
    };
    let sampling = match a.temperature {
        Some(t) if t != 0.0 => {
            let seed = a.seed.unwrap_or_else(rand::random);
            eprintln!("sampling: temperature {t}, top-k {}, top-p {}, seed {seed}", a.top_k, a.top_p);
            Sampling::Sample { temperature: t, top_k: a.top_k, top_p: a.top_p, seed }
        }
        _ => Sampling::Greedy,
    };
    let stop_tokens = if a.ignore_eos { vec![] } else { gen::stop_tokens(a.tokenizer.as_deref().map_or(&side, |t| if t.is_dir() { t } else { &side })) };
    let opts = gen::GenerateOptions { max_new_tokens: a.max_new_tokens, sampling, stop_tokens };
    let t0 = std::time::Instant::now();
    // A checkpoint compiles in process; a module is loaded. Both give a DecoderSession.
    let jit;
    let module;
    let mut session = if a.model.is_dir() {
        let cache = odc::decoder::CacheOptions { context: a.context, max_prefill: a.max_prefill, min_window: a.min_window };
        let mut d = odc::decoder::DecoderJit::compile(&a.model, &cache, &CompileOptions::default(), &mut Timings::default())?;
        d.set_threads(a.threads);
        jit = d;
        eprintln!(
            "compiled {} in {:.2} s: context {}, prefill steps of {} tokens, threads {}",
            a.model.display(),
            t0.elapsed().as_secs_f64(),
            jit.cache.context,
            jit.cache.max_prefill,
            a.threads
        );
        jit.session()?
    } else {
        if a.context.is_some() || a.max_prefill.is_some() || a.min_window.is_some() {
            bail!("--context, --max-prefill and --min-window are fixed when a module is compiled (odc compile --context N --max-prefill P)");
        }
        let prefix = match &a.prefix {
            Some(p) => p.clone(),
            None => module_prefix(&a.model)?,
        };
        let mut m = odc_runtime::Module::load_with_prefix(&a.model, &prefix)?;
        m.set_threads(a.threads);
        module = m;
        let s = module.decoder_session()?;
        eprintln!("loaded {}: context {}, prefill steps of {} tokens, threads {}", a.model.display(), s.context(), s.max_prefill(), a.threads);
        s
    };

    let stdout = std::io::stdout();
    let mut stream = tokenizer.as_ref().map(|t| TextStream::new(t, stdout.lock()));
    if let (Some(text), Some(_)) = (&a.prompt, &stream) {
        print!("{text}");
    }
    let g = gen::generate(&mut session, &prompt, &opts, |tokens| match &mut stream {
        Some(s) => s.update(tokens),
        None => Ok(()),
    })?;
    drop(stream);
    let ids: Vec<String> = g.tokens.iter().map(|t| t.to_string()).collect();
    let mut out = std::io::stdout().lock();
    if tokenizer.is_some() {
        writeln!(out)?;
    }
    writeln!(out, "generated: {}", ids.join(" "))?;
    writeln!(out, "prefill_tok_s={:.2} decode_tok_s={:.2}", g.prefill_tok_s(), g.decode_tok_s())?;
    Ok(())
}

fn compile_options(m: &ModelArgs) -> Result<CompileOptions> {
    let mut o = CompileOptions::default();
    for s in &m.shapes {
        let (name, dims) = odc::parse_shape_arg(s)?;
        o.input_shapes.insert(name, dims);
    }
    for d in &m.dims {
        let (name, v) = d.split_once('=').with_context(|| format!("expected NAME=N, got '{d}'"))?;
        o.dims.insert(name.to_string(), v.parse().with_context(|| format!("bad value in '{d}'"))?);
    }
    if std::env::var("ODC_OPT").as_deref() == Ok("none") {
        o.opt_level = OptLevel::None;
    }
    if let Ok(f) = std::env::var("ODC_FUSION") {
        o.fusion = odc::FusionMode::parse(&f)?;
    }
    if let Some(f) = &m.fuse {
        o.fusion = odc::FusionMode::parse(f)?;
    }
    Ok(o)
}

fn format_values(dtype: odc_ir::DType, data: &[u8], limit: usize) -> String {
    use odc_ir::DType::*;
    let n = dtype.byte_len(1).max(1);
    let count = if dtype.is_packed() { 0 } else { data.len() / n };
    let shown: Vec<String> = (0..count.min(limit))
        .map(|i| {
            let b = &data[i * n..i * n + n];
            match dtype {
                F32 => format!("{:.6}", f32::from_le_bytes(b.try_into().unwrap())),
                F64 => format!("{:.6}", f64::from_le_bytes(b.try_into().unwrap())),
                F16 => format!("{:.4}", half::f16::from_le_bytes([b[0], b[1]])),
                BF16 => format!("{:.4}", half::bf16::from_le_bytes([b[0], b[1]])),
                I8 => format!("{}", b[0] as i8),
                U8 => format!("{}", b[0]),
                Bool => format!("{}", b[0] != 0),
                I16 => format!("{}", i16::from_le_bytes([b[0], b[1]])),
                U16 => format!("{}", u16::from_le_bytes([b[0], b[1]])),
                I32 => format!("{}", i32::from_le_bytes(b.try_into().unwrap())),
                U32 => format!("{}", u32::from_le_bytes(b.try_into().unwrap())),
                I64 => format!("{}", i64::from_le_bytes(b.try_into().unwrap())),
                U64 => format!("{}", u64::from_le_bytes(b.try_into().unwrap())),
                _ => format!("0x{:02x}", b[0]),
            }
        })
        .collect();
    let more = if count > limit { format!(", ... ({} total)", count) } else { String::new() };
    format!("[{}{}]", shown.join(", "), more)
}

fn run(m: &ModelArgs, inputs: &[String], output_dir: Option<&Path>, print: usize, show_timings: bool) -> Result<()> {
    let mut opts = compile_options(m)?;
    let mut timings = Timings::default();
    let model = odc::open_model(&m.model, &mut timings)?;
    let declared = model.declared_inputs();
    let mut given: HashMap<String, npy::NpyTensor> = HashMap::new();
    for spec in inputs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (n.to_string(), f.to_string()),
            None if declared.len() == 1 => (declared[0].name.clone(), spec.clone()),
            None => bail!("the model has {} inputs; name each one: --input NAME=FILE.npy", declared.len()),
        };
        if !declared.iter().any(|d| d.name == name) {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            bail!("the model has no input '{name}' (inputs: {})", names.join(", "));
        }
        let t = npy::read(Path::new(&file))?;
        opts.input_shapes.entry(name.clone()).or_insert_with(|| t.shape.clone());
        // Known values let shape-determining inputs be specialised at compile time.
        if let Ok(tensor) = odc_ir::Tensor::new(t.dtype, t.shape.clone(), odc_ir::Bytes::from_vec(t.data.clone())) {
            opts.input_values.insert(name.clone(), tensor);
        }
        given.insert(name, t);
    }
    let missing: Vec<&str> = declared.iter().filter(|d| !given.contains_key(&d.name)).map(|d| d.name.as_str()).collect();
    if !missing.is_empty() {
        bail!("missing input(s): {} (pass --input NAME=FILE.npy)", missing.join(", "));
    }
    let g = odc::import_model_owned(model, &opts, &mut timings)?;
    let jit = odc::compile_jit_owned(g, &opts, &mut timings)?;
    for d in &declared {
        if !jit.inputs().iter().any(|s| s.name == d.name) {
            eprintln!("note: input '{}' determines shapes and was specialised to the given value", d.name);
        }
    }
    let mut bufs = vec![];
    for spec in jit.inputs() {
        let t = &given[&spec.name];
        if t.dtype != spec.dtype {
            bail!("input '{}' must be {}, the file holds {}", spec.name, spec.dtype, t.dtype);
        }
        if t.shape != spec.shape {
            bail!("input '{}' must have shape {:?}, the file has {:?}", spec.name, spec.shape, t.shape);
        }
        bufs.push(t.data.as_slice());
    }
    let t0 = std::time::Instant::now();
    let outs = jit.run(&bufs)?;
    let run_time = t0.elapsed();
    if show_timings {
        for (name, d) in &timings.stages {
            eprintln!("time {name}: {:.1} ms", d.as_secs_f64() * 1e3);
        }
        eprintln!("time run: {:.1} ms", run_time.as_secs_f64() * 1e3);
    }
    if let Some(dir) = output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for (spec, data) in jit.outputs().iter().zip(&outs) {
        println!("{}: {} {:?} = {}", spec.name, spec.dtype, spec.shape, format_values(spec.dtype, data, print));
        if let Some(dir) = output_dir {
            npy::write(&dir.join(format!("{}.npy", safe_file_name(&spec.name))), spec.dtype, &spec.shape, data)?;
        }
    }
    Ok(())
}

fn check(m: &ModelArgs) -> Result<bool> {
    let opts = compile_options(m)?;
    let mut timings = Timings::default();
    let model = match odc::open_model(&m.model, &mut timings) {
        Ok(model) => model,
        // A checkpoint's unsupported config values are found when it is opened.
        Err(e) if e.unsupported().is_some() => {
            println!("{e}");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    match odc::import_model(&model, &opts, &mut timings) {
        Ok(g) => {
            println!(
                "ok: {} imports into {} primitive nodes ({} inputs, {} outputs)",
                m.model.display(),
                g.node_count(),
                g.inputs().len(),
                g.outputs().len()
            );
            Ok(true)
        }
        Err(e) => {
            if let odc::Error::Frontend(odc_frontend::FrontendError::Shape(msg)) = &e {
                // Without shapes, still list the operators odc does not know.
                let unknown = model.unknown_operators();
                if !unknown.is_empty() {
                    println!("the model uses {} unsupported feature(s):", unknown.len());
                    for u in &unknown {
                        println!("  {u}");
                    }
                }
                println!("(a full check needs shapes: {msg})");
                return Ok(false);
            }
            println!("{e}");
            Ok(false)
        }
    }
}

fn inspect(m: &ModelArgs, show_graph: bool, show_kernels: bool) -> Result<()> {
    let opts = compile_options(m)?;
    let mut timings = Timings::default();
    let g = odc::import_path(&m.model, &opts, &mut timings)?;
    let prog = odc::plan(&g, &opts, &odc::host_target(&opts)?, &mut timings)?;
    if show_graph {
        print!("{g}");
    }
    println!("primitive nodes: {}", g.node_count());
    println!("kernels: {}", prog.kernels.len());
    println!("weights: {} tensors, {} bytes", prog.weights.len(), prog.weights.iter().map(|w| w.data.len()).sum::<usize>());
    println!("arena: {} bytes", prog.arena_size);
    for (name, d) in &timings.stages {
        println!("time {name}: {:.1} ms", d.as_secs_f64() * 1e3);
    }
    if show_kernels {
        for k in &prog.kernels {
            print!("{k}");
        }
    }
    Ok(())
}

/// `odc inspect --fusion [--json]`: what equality saturation decided.
fn inspect_fusion(m: &ModelArgs, json: bool) -> Result<()> {
    let opts = compile_options(m)?;
    let mut timings = Timings::default();
    let model = odc::open_model(&m.model, &mut timings)?;
    let source_nodes = model.node_count();
    let g = odc::import_model_owned(model, &opts, &mut timings)?;
    let s = odc::saturate(&g, &mut timings)?;
    let prog = odc_backends::lower(&s.graph, &s.plan, &odc::host_target(&opts)?.lower_options())?;
    let r = &s.report;
    if json {
        use serde_json::json;
        let kernels: Vec<_> = r
            .kernels
            .iter()
            .map(|k| json!({"name": k.name, "kind": k.kind, "nodes": k.nodes, "ops": k.ops, "cost_ns": (k.cost_ns * 10.0).round() / 10.0}))
            .collect();
        let applied: serde_json::Map<String, serde_json::Value> = r.applied.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let doc = json!({
            "model": m.model.display().to_string(),
            "source_nodes": source_nodes,
            "primitive_nodes": g.node_count(),
            "kernels": kernels,
            "kernel_count": r.kernels.len(),
            "lowered_kernels": prog.kernels.len(),
            "saturation_ms": r.saturation_ms,
            "extraction_ms": r.extraction_ms,
            "enodes": r.enodes,
            "eclasses": r.eclasses,
            "iterations": r.iterations,
            "stop_reason": r.stop_reason,
            "time_limited": r.time_limited,
            "rules_applied": applied,
            "estimated_cost_ns": r.cost_ns,
            "tree_extraction_cost_ns": r.tree_cost_ns,
            "arena_bytes": prog.arena_size,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for k in &r.kernels {
        println!("{:<40} {:<14} {:>10.1} us  {}", k.name, k.kind, k.cost_ns / 1e3, k.ops.join(" "));
        if k.nodes.len() > 1 {
            println!("{:<40} fused: {}", "", k.nodes.join(", "));
        }
    }
    let source = source_nodes.map_or("source nodes: -".to_string(), |n| format!("source nodes: {n}"));
    println!("{source}, primitive nodes: {}, fused kernels: {}, lowered kernels: {}", g.node_count(), r.kernels.len(), prog.kernels.len());
    println!("e-graph: {} e-nodes in {} e-classes after {} iterations ({})", r.enodes, r.eclasses, r.iterations, r.stop_reason);
    println!("saturation {:.1} ms, extraction {:.1} ms", r.saturation_ms, r.extraction_ms);
    println!("estimated cost: {:.1} us (tree-cost extraction: {:.1} us)", r.cost_ns / 1e3, r.tree_cost_ns / 1e3);
    let applied: Vec<String> = r.applied.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("rules applied: {}", applied.join(" "));
    Ok(())
}

/// Random bytes for a tensor of `dtype`: floats uniform in [-1, 1), integers in [0, 8), bools.
fn random_input(dtype: odc_ir::DType, n: usize, rng: &mut impl rand::Rng) -> Vec<u8> {
    use odc_ir::DType::*;
    let mut out = Vec::with_capacity(dtype.byte_len(n));
    for _ in 0..n {
        let f: f64 = rng.random_range(-1.0..1.0);
        let i: i64 = rng.random_range(0..8);
        match dtype {
            F32 => out.extend((f as f32).to_le_bytes()),
            F64 => out.extend(f.to_le_bytes()),
            F16 => out.extend(half::f16::from_f64(f).to_le_bytes()),
            BF16 => out.extend(half::bf16::from_f64(f).to_le_bytes()),
            Bool => out.push((i & 1) as u8),
            I8 | U8 => out.push(i as u8),
            I16 | U16 => out.extend((i as i16).to_le_bytes()),
            I32 | U32 => out.extend((i as i32).to_le_bytes()),
            I64 | U64 => out.extend(i.to_le_bytes()),
            _ => out.push(0),
        }
    }
    out.truncate(dtype.byte_len(n));
    out
}

fn bench(m: &ModelArgs, threads: usize, inputs: &[String], runs: usize, warmup: usize, top: usize) -> Result<()> {
    let mut opts = compile_options(m)?;
    let mut given: HashMap<String, npy::NpyTensor> = HashMap::new();
    for spec in inputs {
        let (name, file) = spec.split_once('=').with_context(|| format!("expected NAME=FILE.npy, got '{spec}'"))?;
        let t = npy::read(Path::new(file))?;
        opts.input_shapes.entry(name.to_string()).or_insert_with(|| t.shape.clone());
        given.insert(name.to_string(), t);
    }
    let mut timings = Timings::default();
    let t0 = std::time::Instant::now();
    let g = odc::import_path(&m.model, &opts, &mut timings)?;
    let mut jit = odc::compile_jit_owned(g, &opts, &mut timings)?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    jit.set_threads(threads);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0dc);
    let data: Vec<Vec<u8>> = jit
        .inputs()
        .iter()
        .map(|s| match given.get(&s.name) {
            Some(t) => t.data.clone(),
            None => random_input(s.dtype, s.shape.iter().product(), &mut rng),
        })
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    let mut bufs = jit.buffers();
    for _ in 0..warmup {
        jit.run_into(&refs, &mut bufs)?;
    }
    let mut times = vec![];
    for _ in 0..runs.max(1) {
        let t = std::time::Instant::now();
        jit.run_into(&refs, &mut bufs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Per-kernel breakdown: average of a few profiled runs, grouped by kernel name.
    let prog = jit.program();
    let reps = 3;
    let mut per: HashMap<String, f64> = HashMap::new();
    let mut flops: HashMap<String, f64> = HashMap::new();
    let mut total = 0.0;
    for _ in 0..reps {
        for (step, t) in prog.steps_in_order().zip(jit.profile(&refs, &mut bufs)?) {
            let k = &prog.kernels[step.kernel];
            *per.entry(k.name.clone()).or_default() += t * 1e3 / reps as f64;
            if let Some((m, n, kk, b)) = k.gemm_shape() {
                *flops.entry(k.name.clone()).or_default() += 2.0 * (m * n * kk * b) as f64 / reps as f64;
            }
            total += t * 1e3 / reps as f64;
        }
    }
    let mut rows: Vec<(String, f64)> = per.into_iter().collect();
    rows.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    let gemm_info = |name: &str, ms: f64| match flops.get(name) {
        Some(f) => format!("  ({:.1} GFLOP/s)", f / (ms * 1e-3) / 1e9),
        None => String::new(),
    };
    println!("model: {}  threads: {threads}  kernels: {}  arena: {} bytes", m.model.display(), prog.kernels.len(), prog.arena_size);
    println!("compile: {compile_ms:.1} ms ({})", timings.stages.iter().map(|(n, d)| format!("{n} {:.1}", d.as_secs_f64() * 1e3)).collect::<Vec<_>>().join(", "));
    println!("per-kernel time (profiled, {:.3} ms total):", total);
    for (name, t) in rows.iter().take(top) {
        println!("  {:5.1}%  {:8.3} ms  {name}{}", 100.0 * t / total.max(1e-12), t, gemm_info(name, *t));
    }
    if rows.len() > top {
        let rest: f64 = rows[top..].iter().map(|r| r.1).sum();
        println!("  {:5.1}%  {:8.3} ms  ({} more kernels)", 100.0 * rest / total.max(1e-12), rest, rows.len() - top);
    }
    println!("median_ms={:.4} min_ms={:.4}", times[times.len() / 2], times[0]);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn exec(
    path: &Path,
    prefix: Option<&str>,
    inputs: &[String],
    output_dir: Option<&Path>,
    print: usize,
    threads: usize,
    runs: usize,
    warmup: usize,
    step: Option<&str>,
) -> Result<()> {
    let prefix = match prefix {
        Some(p) => p.to_string(),
        None => module_prefix(path)?,
    };
    let mut module = odc_runtime::Module::load_with_prefix(path, &prefix)?;
    module.set_threads(threads);
    let mut info = module.info().clone();
    let mut state = module.new_state();
    match (step, &state) {
        (None, Some(_)) => {
            println!("module '{}': stateful, state {} bytes, context {}", info.name, info.state_size.unwrap_or(0), info.context.unwrap_or(0));
            for s in &info.steps {
                let list = |ts: &[odc_runtime::TensorInfo]| ts.iter().map(|t| format!("{} {:?}", t.name, t.shape)).collect::<Vec<_>>().join(", ");
                println!("step {}: inputs {}; outputs {}; arena {} bytes", s.name, list(&s.inputs), list(&s.outputs), s.arena_size);
            }
            println!("run a step with --step NAME, or generate text with `odc generate {}`", path.display());
            return Ok(());
        }
        (Some(name), Some(_)) => {
            let Some(s) = info.steps.iter().find(|s| s.name == name) else {
                let names: Vec<&str> = info.steps.iter().map(|s| s.name.as_str()).collect();
                bail!("the module has no step '{name}' (steps: {})", names.join(", "));
            };
            (info.inputs, info.outputs, info.arena_size) = (s.inputs.clone(), s.outputs.clone(), s.arena_size);
        }
        (Some(_), None) => bail!("--step is for stateful modules (decoders); this one has `run`"),
        (None, None) => {}
    }
    let dtype_of = |t: &odc_runtime::TensorInfo| {
        odc_ir::DType::from_abi_code(t.dtype).with_context(|| format!("'{}' has an unknown dtype code {}", t.name, t.dtype))
    };
    let mut given: HashMap<String, npy::NpyTensor> = HashMap::new();
    for spec in inputs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (n.to_string(), f.to_string()),
            None if info.inputs.len() == 1 => (info.inputs[0].name.clone(), spec.clone()),
            None => bail!("the module has {} inputs; name each one: --input NAME=FILE.npy", info.inputs.len()),
        };
        if !info.inputs.iter().any(|t| t.name == name) {
            let names: Vec<&str> = info.inputs.iter().map(|t| t.name.as_str()).collect();
            bail!("the module has no input '{name}' (inputs: {})", names.join(", "));
        }
        given.insert(name, npy::read(Path::new(&file))?);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0dc);
    let mut data = vec![];
    for t in &info.inputs {
        let dtype = dtype_of(t)?;
        data.push(match given.get(&t.name) {
            Some(x) if x.dtype != dtype => bail!("input '{}' must be {dtype}, the file holds {}", t.name, x.dtype),
            Some(x) if x.shape != t.shape => bail!("input '{}' must have shape {:?}, the file has {:?}", t.name, t.shape, x.shape),
            Some(x) => x.data.clone(),
            None if runs > 0 => random_input(dtype, t.shape.iter().product(), &mut rng),
            None => bail!("missing input '{}' (pass --input NAME=FILE.npy)", t.name),
        });
    }
    let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    let mut outs: Vec<Vec<u8>> = info.outputs.iter().map(|t| vec![0u8; t.byte_len]).collect();
    let mut run_once = |outs: &mut Vec<Vec<u8>>| -> Result<()> {
        let mut views: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        match (step, &mut state) {
            (Some(name), Some(state)) => module.run_step(name, &refs, &mut views, state)?,
            _ => module.run(&refs, &mut views)?,
        }
        Ok(())
    };
    if runs > 0 {
        for _ in 0..warmup {
            run_once(&mut outs)?;
        }
        let mut times = vec![];
        for _ in 0..runs {
            let t = std::time::Instant::now();
            run_once(&mut outs)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("module: {}  threads: {threads}  arena: {} bytes", path.display(), info.arena_size);
        println!("median_ms={:.4} min_ms={:.4}", times[times.len() / 2], times[0]);
    } else {
        run_once(&mut outs)?;
    }
    if let Some(dir) = output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for (t, data) in info.outputs.iter().zip(&outs) {
        let dtype = dtype_of(t)?;
        if runs == 0 {
            println!("{}: {} {:?} = {}", t.name, dtype, t.shape, format_values(dtype, data, print));
        }
        if let Some(dir) = output_dir {
            npy::write(&dir.join(format!("{}.npy", safe_file_name(&t.name))), dtype, &t.shape, data)?;
        }
    }
    Ok(())
}

/// The prefix of the one odc module in a shared library: the `<prefix>_describe` it exports.
fn module_prefix(path: &Path) -> Result<String> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = object::File::parse(&*data).with_context(|| format!("{} is not a shared library", path.display()))?;
    let described: Vec<String> = file
        .dynamic_symbols()
        .filter_map(|s| s.name().ok().and_then(|n| n.strip_suffix("_describe")).map(str::to_string))
        .collect();
    // A stateful module's steps describe themselves too (`p_prefill_describe`): not modules.
    let is_step = |d: &String| {
        odc_runtime::loader::STEP_NAMES.iter().any(|step| d.strip_suffix(step).and_then(|x| x.strip_suffix('_')).is_some_and(|p| described.iter().any(|q| q == p)))
    };
    let prefixes: Vec<String> = described.iter().filter(|d| !is_step(d)).cloned().collect();
    match prefixes.as_slice() {
        [p] => Ok(p.clone()),
        [] => bail!("{} exports no <prefix>_describe: not an odc module", path.display()),
        many => bail!("{} holds several modules ({}); choose one with --prefix", path.display(), many.join(", ")),
    }
}

/// An output name as a file name: anything but letters, digits, `_` and `-` becomes `_`.
fn safe_file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

#[allow(clippy::too_many_arguments)]
fn compile(
    m: &ModelArgs,
    target: Option<String>,
    cpu: Option<String>,
    features: Vec<String>,
    emit: &str,
    prefix: Option<String>,
    weights: &str,
    linker: Option<String>,
    (context, max_prefill, min_window): (Option<usize>, Option<usize>, Option<usize>),
    output: PathBuf,
    show_timings: bool,
) -> Result<()> {
    let opts = compile_options(m)?;
    let weights = match weights {
        "auto" => odc_backends::aot::WeightsPlacement::Auto,
        "embedded" | "embed" => odc_backends::aot::WeightsPlacement::Embedded,
        "external" => odc_backends::aot::WeightsPlacement::External,
        w => bail!("--weights must be auto, embedded or external, not '{w}'"),
    };
    let req = odc::AotRequest {
        target: odc_backends::target::TargetSpec { triple: target, cpu, features: features.into_iter().filter(|f| !f.is_empty()).collect() },
        prefix,
        emit: odc::Emit::parse_list(emit)?,
        weights,
        linker,
        decoder: (context.is_some() || max_prefill.is_some() || min_window.is_some())
            .then_some(odc::decoder::CacheOptions { context, max_prefill, min_window }),
        output,
    };
    let mut timings = Timings::default();
    let t0 = std::time::Instant::now();
    for f in odc::compile_aot(&m.model, &opts, &req, &mut timings)? {
        println!("wrote {}", f.display());
    }
    if show_timings {
        for (name, d) in &timings.stages {
            println!("time {name}: {:.1} ms", d.as_secs_f64() * 1e3);
        }
        println!("time total: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Run { m, inputs, output_dir, print, timings } => run(m, inputs, output_dir.as_deref(), *print, *timings).map(|_| true),
        Cmd::Check { m } => check(m),
        Cmd::Compile { m, target, cpu, features, emit, prefix, weights, linker, context, max_prefill, min_window, output, timings } => compile(
            m,
            target.clone(),
            cpu.clone(),
            features.clone(),
            emit,
            prefix.clone(),
            weights,
            linker.clone(),
            (*context, *max_prefill, *min_window),
            output.clone(),
            *timings,
        )
        .map(|_| true),
        Cmd::Bench { m, threads, inputs, runs, warmup, top } => bench(m, *threads, inputs, *runs, *warmup, *top).map(|_| true),
        Cmd::Inspect { m, graph, kernels, fusion, json } => {
            if *fusion || *json {
                inspect_fusion(m, *json).map(|_| true)
            } else {
                inspect(m, *graph, *kernels).map(|_| true)
            }
        }
        Cmd::Generate(a) => generate(a).map(|_| true),
        Cmd::Exec { module, prefix, inputs, output_dir, print, threads, runs, warmup, step } => {
            exec(module, prefix.as_deref(), inputs, output_dir.as_deref(), *print, *threads, *runs, *warmup, step.as_deref()).map(|_| true)
        }
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
