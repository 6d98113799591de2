//! Decoders over a KV cache, compiled for in-process execution: a checkpoint's `prefill` and
//! `decode` steps (two programs sharing one cache layout) and a [`DecoderSession`] over them.
//!
//! Owns: choosing the cache capacity from the config and the options, and compiling both steps.
//! Must not: tokenize or sample (see `generate`), or know the cache layout (the frontend's).

use crate::{compile_jit_owned, import_model_owned, open_model, CompileOptions, Error, Timings};
use odc_backends::JitProgram;
use odc_frontend::safetensors::config::ModelConfig;
use odc_frontend::safetensors::decoder::KvCache;
use odc_frontend::{DecoderStep, ModelSource};
use odc_runtime::{DecoderEntries, DecoderSession, RunError};
use std::path::Path;

/// The context a decoder gets unless asked: its `max_position_embeddings`, capped here.
pub const DEFAULT_CONTEXT_CAP: usize = 2048;
/// Tokens one prefill step takes unless asked (longer prompts run in several steps).
pub const DEFAULT_MAX_PREFILL: usize = 64;

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

/// A decoder's two steps, compiled for this host.
pub struct DecoderJit {
    pub prefill: JitProgram,
    pub decode: JitProgram,
    pub cache: KvCache,
}

impl DecoderJit {
    /// Compile the decoder checkpoint at `path` for `cache` (see [`CacheOptions::resolve`]).
    pub fn compile(path: &Path, cache: &CacheOptions, opts: &CompileOptions, timings: &mut Timings) -> Result<DecoderJit, Error> {
        let cache = cache.resolve(&open_model(path, timings)?)?;
        let step = |chunk, timings: &mut Timings| -> Result<JitProgram, Error> {
            let opts = CompileOptions { step: Some(DecoderStep { chunk, cache }), ..opts.clone() };
            let g = import_model_owned(open_model(path, timings)?, &opts, timings)?;
            compile_jit_owned(g, &opts, timings)
        };
        let prefill = step(cache.max_prefill, timings)?;
        let decode = step(1, timings)?;
        Ok(DecoderJit { prefill, decode, cache })
    }

    /// Share parallel loops among `threads` threads (both steps use the prefill program's pool).
    pub fn set_threads(&mut self, threads: usize) {
        self.prefill.set_threads(threads);
    }

    /// A generation session with an empty cache.
    pub fn session(&self) -> Result<DecoderSession<'_>, RunError> {
        DecoderSession::new(DecoderEntries {
            prefill: self.prefill.entry(),
            decode: self.decode.entry(),
            context: self.cache.context,
            weights: std::ptr::null(),
            pool: self.prefill.pool(),
        })
    }
}
