//! Decoders over a KV cache, compiled for in-process execution: a checkpoint's `prefill` and
//! `decode` steps (two programs sharing one cache layout) and a [`DecoderSession`] over them.
//!
//! Owns: choosing the cache capacity from the config and the options, and compiling both steps.
//! Must not: tokenize or sample (see `generate`), or know the cache layout (the frontend's).

use crate::{host_target, import_model_owned, open_model, plan, CompileOptions, Error, Timings};
use odc_backends::{JitSteps, Program, Target};
use odc_frontend::safetensors::config::ModelConfig;
use odc_frontend::safetensors::decoder::KvCache;
use odc_frontend::{DecoderStep, ModelSource};
use odc_runtime::{DecoderEntries, DecoderSession, RunError};
use std::path::Path;

/// The context a decoder gets unless asked: its `max_position_embeddings`, capped here.
pub const DEFAULT_CONTEXT_CAP: usize = 2048;
/// Tokens one prefill step takes unless asked (longer prompts run in several steps).
pub const DEFAULT_MAX_PREFILL: usize = 64;
/// The smallest cache window a step is compiled for unless asked (see `KvCache::windows`).
pub const DEFAULT_MIN_WINDOW: usize = 64;

/// The files of a checkpoint that text generation reads besides the weights (tokenizer and stop
/// tokens); a compiled decoder module gets copies beside it.
pub const SIDE_FILES: [&str; 6] = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json", "config.json"];

/// The cache a decoder is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheOptions {
    /// Positions the cache holds (`None`: the config's `max_position_embeddings`, at most
    /// [`DEFAULT_CONTEXT_CAP`]).
    pub context: Option<usize>,
    /// Tokens per prefill step (`None`: [`DEFAULT_MAX_PREFILL`], at most the context).
    pub max_prefill: Option<usize>,
    /// The smallest cache window compiled (`None`: [`DEFAULT_MIN_WINDOW`]): each step is
    /// compiled once per window, doubling from this one to the whole cache, and runs the
    /// smallest that holds its positions.
    pub min_window: Option<usize>,
}

impl CacheOptions {
    /// The cache for the decoder in `source`; an error if it is not a decoder checkpoint.
    pub fn resolve(&self, source: &ModelSource) -> Result<KvCache, Error> {
        let max_positions = match source {
            ModelSource::Checkpoint(c) => match &c.config {
                ModelConfig::Decoder(d) => d.max_position_embeddings,
                ModelConfig::Bert(_) => return Err(not_a_decoder("a BERT encoder")),
            },
            ModelSource::Onnx { .. } => return Err(not_a_decoder("an ONNX model")),
        };
        let context = self.context.unwrap_or(max_positions.min(DEFAULT_CONTEXT_CAP));
        let max_prefill = self.max_prefill.unwrap_or(DEFAULT_MAX_PREFILL.min(context));
        Ok(KvCache { context, max_prefill })
    }
}

/// Whether an ahead-of-time build of `source` is a stateful decoder module, and over which
/// cache: yes for a decoder checkpoint given no sequence shape (see `AotRequest::decoder`).
pub fn module_cache(source: &ModelSource, opts: &CompileOptions, asked: Option<&CacheOptions>) -> Result<Option<KvCache>, Error> {
    let is_decoder = matches!(source, ModelSource::Checkpoint(c) if matches!(c.config, ModelConfig::Decoder(_)));
    let sequence_given = opts.input_shapes.contains_key("input_ids") || opts.dims.contains_key("sequence");
    match (is_decoder, sequence_given, asked) {
        (true, false, asked) => Ok(Some(asked.copied().unwrap_or_default().resolve(source)?)),
        (true, true, Some(_)) => Err(Error::Usage(
            "a decoder compiles either to prefill/decode steps over a KV cache (--context, --max-prefill) or to `run` over a fixed sequence (--dim sequence=N), not both".into(),
        )),
        (false, _, Some(_)) => Err(CacheOptions::default().resolve(source).err().unwrap_or_else(|| not_a_decoder("this model"))),
        (_, _, None) => Ok(None),
    }
}

fn not_a_decoder(what: &str) -> Error {
    Error::Usage(format!("{what} has no KV cache: text generation needs a decoder checkpoint (llama, qwen2)"))
}

/// A decoder's steps: per step (`prefill`, `decode`) its programs, one per cache window, each
/// with the bound on its position input it runs under (the last, the whole cache: none).
pub type DecoderSteps = Vec<(String, Vec<(Program, Option<(usize, i64)>)>)>;

/// Import and lower the `prefill` and `decode` steps of the decoder at `path` for `target`.
pub fn decoder_steps(path: &Path, cache: KvCache, min_window: usize, opts: &CompileOptions, target: &Target, timings: &mut Timings) -> Result<DecoderSteps, Error> {
    let mut steps = vec![];
    for (name, chunk) in [("prefill", cache.max_prefill), ("decode", 1)] {
        let windows = cache.windows(chunk, min_window);
        let mut variants = vec![];
        for (i, &window) in windows.iter().enumerate() {
            let opts = CompileOptions { step: Some(DecoderStep { chunk, cache, window: Some(window) }), ..opts.clone() };
            let g = import_model_owned(open_model(path, timings)?, &opts, timings)?;
            let prog = plan(&g, &opts, target, timings)?;
            let position = prog.inputs.iter().position(|t| t.name == "position").expect("a decoder step takes its position");
            let bound = (i + 1 < windows.len()).then_some((position, (window - chunk) as i64));
            variants.push((prog, bound));
        }
        steps.push((name.to_string(), variants));
    }
    Ok(steps)
}

/// A decoder's two steps, compiled for this host.
pub struct DecoderJit {
    pub steps: JitSteps,
    pub cache: KvCache,
}

impl DecoderJit {
    /// Compile the decoder checkpoint at `path` for `cache` (see [`CacheOptions::resolve`]).
    pub fn compile(path: &Path, cache_opts: &CacheOptions, opts: &CompileOptions, timings: &mut Timings) -> Result<DecoderJit, Error> {
        let cache = cache_opts.resolve(&open_model(path, timings)?)?;
        let target = host_target(opts)?;
        let steps = decoder_steps(path, cache, cache_opts.min_window.unwrap_or(DEFAULT_MIN_WINDOW), opts, &target, timings)?;
        let steps = timings.record("codegen", || JitSteps::compile(steps, cache.context, &target))?;
        Ok(DecoderJit { steps, cache })
    }

    pub fn set_threads(&mut self, threads: usize) {
        self.steps.set_threads(threads);
    }

    /// A generation session with an empty cache.
    pub fn session(&self) -> Result<DecoderSession<'_>, RunError> {
        let step = |name: &str| self.steps.step(name).ok_or_else(|| RunError::Arguments(format!("the decoder has no {name} step")));
        DecoderSession::new(DecoderEntries {
            prefill: step("prefill")?,
            decode: step("decode")?,
            context: self.cache.context,
            weights: std::ptr::null(),
            pool: self.steps.pool(),
        })
    }
}
