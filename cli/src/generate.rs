//! Text generation over a decoder session: tokenize the prompt, prefill, then decode one token at
//! a time, choosing each next token greedily or by sampling, and stream the text as it comes.
//!
//! Owns: [`TextTokenizer`] (Hugging Face `tokenizers`), [`Sampler`], [`generate`]. Must not: know
//! whether the session runs JIT code or a loaded module (both are a [`DecoderSession`]).

use crate::Error;
use odc_runtime::DecoderSession;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;

/// A checkpoint's tokenizer: `tokenizer.json`, or GPT-2-style `vocab.json` + `merges.txt`.
pub struct TextTokenizer {
    inner: Tokenizer,
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("cannot read the tokenizer {}: {e}", path.display()))
}

impl TextTokenizer {
    /// The tokenizer at `path`: a `tokenizer.json` file, or a directory holding one (or
    /// `vocab.json` + `merges.txt`). `Ok(None)` when a directory has neither.
    pub fn find(path: &Path) -> Result<Option<TextTokenizer>, Error> {
        if path.is_file() {
            let inner = Tokenizer::from_file(path).map_err(|e| tokenizer_error(path, e))?;
            return Ok(Some(TextTokenizer { inner }));
        }
        let json = path.join("tokenizer.json");
        if json.is_file() {
            return TextTokenizer::find(&json);
        }
        let (vocab, merges) = (path.join("vocab.json"), path.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            use tokenizers::{decoders, models::bpe::BPE, pre_tokenizers::byte_level::ByteLevel};
            let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .build()
                .map_err(|e| tokenizer_error(&vocab, e))?;
            let mut inner = Tokenizer::new(bpe);
            inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
            inner.with_decoder(Some(decoders::byte_level::ByteLevel::default()));
            return Ok(Some(TextTokenizer { inner }));
        }
        Ok(None)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>, Error> {
        let e = self.inner.encode(text, true).map_err(|e| Error::Usage(format!("cannot tokenize the prompt: {e}")))?;
        Ok(e.get_ids().iter().map(|&i| i as i64).collect())
    }

    pub fn decode(&self, ids: &[i64]) -> Result<String, Error> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, true).map_err(|e| Error::Usage(format!("cannot detokenize: {e}")))
    }
}

/// How the next token is chosen from the logits.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties: the lowest id), as `transformers`' greedy search.
    Greedy,
    /// Softmax at `temperature` over the `top_k` most likely tokens (0: all), cut to the
    /// smallest set whose probability reaches `top_p`, drawn with a generator seeded by `seed`.
    Sample { temperature: f32, top_k: usize, top_p: f32, seed: u64 },
}

/// Chooses next tokens.
pub struct Sampler {
    sampling: Sampling,
    rng: rand::rngs::StdRng,
    order: Vec<(f32, usize)>,
}

impl Sampler {
    pub fn new(sampling: Sampling) -> Result<Sampler, Error> {
        let seed = match &sampling {
            Sampling::Greedy => 0,
            Sampling::Sample { temperature, top_p, seed, .. } => {
                if !(*temperature > 0.0 && temperature.is_finite()) {
                    return Err(Error::Usage(format!("--temperature must be a positive number, got {temperature}")));
                }
                if !(*top_p > 0.0 && *top_p <= 1.0) {
                    return Err(Error::Usage(format!("--top-p must be in (0, 1], got {top_p}")));
                }
                *seed
            }
        };
        Ok(Sampler { sampling, rng: rand::rngs::StdRng::seed_from_u64(seed), order: vec![] })
    }

    pub fn next(&mut self, logits: &[f32]) -> i64 {
        match self.sampling {
            Sampling::Greedy => argmax(logits) as i64,
            Sampling::Sample { temperature, top_k, top_p, .. } => {
                let order = &mut self.order;
                order.clear();
                order.extend(logits.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, &v)| (v, i)));
                if order.is_empty() {
                    return argmax(logits) as i64;
                }
                order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                if top_k > 0 {
                    order.truncate(top_k);
                }
                let top = order[0].0;
                let mut total = 0.0f64;
                for e in order.iter_mut() {
                    e.0 = ((e.0 - top) / temperature).exp();
                    total += e.0 as f64;
                }
                let mut kept = 0;
                let mut mass = 0.0f64;
                for e in order.iter() {
                    kept += 1;
                    mass += e.0 as f64;
                    if mass >= top_p as f64 * total {
                        break;
                    }
                }
                order.truncate(kept);
                let mut r = self.rng.random::<f64>() * mass;
                for e in order.iter() {
                    r -= e.0 as f64;
                    if r <= 0.0 {
                        return e.1 as i64;
                    }
                }
                order[order.len() - 1].1 as i64
            }
        }
    }
}

/// Index of the largest value (the first of equal ones; NaN never wins).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

/// What to generate.
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Stop after any of these (they are kept in the output).
    pub stop_tokens: Vec<i64>,
}

/// The result of [`generate`].
pub struct Generation {
    pub tokens: Vec<i64>,
    pub prefill: Duration,
    pub prompt_tokens: usize,
    pub decode: Duration,
    /// Decode steps run (one per new token after the first).
    pub decode_steps: usize,
}

impl Generation {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-12)
    }

    pub fn decode_tok_s(&self) -> f64 {
        if self.decode_steps == 0 {
            return 0.0;
        }
        self.decode_steps as f64 / self.decode.as_secs_f64().max(1e-12)
    }
}

/// Prefill `prompt`, then decode up to `opts.max_new_tokens` new tokens; `on_token` sees each
/// one as it is chosen. Fails before running anything if the prompt and the new tokens cannot fit
/// the context.
pub fn generate(
    s: &mut DecoderSession,
    prompt: &[i64],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(&[i64]) -> Result<(), Error>,
) -> Result<Generation, Error> {
    if prompt.is_empty() {
        return Err(Error::Usage("the prompt has no tokens".into()));
    }
    // The last new token is never fed back, so the cache needs prompt + new - 1 positions.
    let needed = s.position() + prompt.len() + opts.max_new_tokens.saturating_sub(1);
    if needed > s.context() {
        return Err(Error::Usage(format!(
            "a prompt of {} tokens and {} new ones need {needed} positions, more than the context of {}; compile with a larger --context or ask for fewer tokens",
            prompt.len(),
            opts.max_new_tokens,
            s.context()
        )));
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut g = Generation { tokens: vec![], prefill: Duration::ZERO, prompt_tokens: prompt.len(), decode: Duration::ZERO, decode_steps: 0 };
    if opts.max_new_tokens == 0 {
        return Ok(g);
    }
    let t = Instant::now();
    let mut next = sampler.next(s.prefill(prompt)?);
    g.prefill = t.elapsed();
    loop {
        g.tokens.push(next);
        on_token(&g.tokens)?;
        if g.tokens.len() == opts.max_new_tokens || opts.stop_tokens.contains(&next) {
            break;
        }
        let t = Instant::now();
        let logits = s.decode(next)?;
        g.decode += t.elapsed();
        g.decode_steps += 1;
        next = sampler.next(logits);
    }
    Ok(g)
}

/// Prints the text of the tokens generated so far as it grows (a token that ends inside a
/// multi-byte character shows once the character is complete).
pub struct TextStream<'t, W: Write> {
    tokenizer: &'t TextTokenizer,
    out: W,
    printed: String,
}

impl<'t, W: Write> TextStream<'t, W> {
    pub fn new(tokenizer: &'t TextTokenizer, out: W) -> Self {
        TextStream { tokenizer, out, printed: String::new() }
    }

    pub fn update(&mut self, tokens: &[i64]) -> Result<(), Error> {
        let text = self.tokenizer.decode(tokens)?;
        if let Some(new) = text.strip_prefix(self.printed.as_str()) {
            if !new.is_empty() && !new.ends_with('\u{fffd}') {
                let _ = write!(self.out, "{new}");
                let _ = self.out.flush();
                self.printed = text;
            }
        }
        Ok(())
    }
}

/// The token ids that end a generation, from the checkpoint's `generation_config.json` (else
/// `config.json`): `eos_token_id`, a number or a list.
pub fn stop_tokens(dir: &Path) -> Vec<i64> {
    for file in ["generation_config.json", "config.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        match v.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => return n.as_i64().into_iter().collect(),
            Some(serde_json::Value::Array(a)) => return a.iter().filter_map(|x| x.as_i64()).collect(),
            _ => {}
        }
    }
    vec![]
}

/// Where a model's tokenizer and generation config live: the checkpoint directory itself, or the
/// directory of a compiled module.
pub fn side_files_dir(model: &Path) -> PathBuf {
    if model.is_dir() {
        model.to_path_buf()
    } else {
        model.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}
