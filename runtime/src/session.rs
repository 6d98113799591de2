//! A decoder's generation session: the KV-cache state and the two stateful entry points that
//! share it (`prefill` over a chunk of tokens, `decode` over one), with the bookkeeping every host
//! needs: the cache length, chunking a prompt, padding the last chunk, and the context limit.
//!
//! Owns: [`DecoderSession`]. Must not: sample tokens or compute anything itself (the logits come
//! from the module; choosing the next token is the caller's).

use crate::call::{Arena, EntryPoint, RunError, State, TensorInfo};
use crate::pool::ThreadPool;

/// The entry points of a decoder module and what it was compiled for.
pub struct DecoderEntries<'m> {
    /// `input_ids [1, max_prefill]`, `position [1]` and (when `max_prefill > 1`) `n_tokens [1]`
    /// → `logits [1, vocab]` at the last valid token.
    pub prefill: &'m EntryPoint,
    /// `input_ids [1, 1]`, `position [1]` → `logits [1, vocab]`.
    pub decode: &'m EntryPoint,
    /// Positions the cache holds.
    pub context: usize,
    /// Base of the external weights (null when embedded or absolute).
    pub weights: *const u8,
    pub pool: Option<&'m ThreadPool>,
}

/// A generation in progress: the cache and how many positions it holds.
pub struct DecoderSession<'m> {
    m: DecoderEntries<'m>,
    state: State,
    arena: Arena,
    position: usize,
    max_prefill: usize,
    vocab: usize,
    logits: Vec<u8>,
    values: Vec<f32>,
    /// The prefill step's token ids, reused by every chunk.
    ids: Vec<u8>,
}

fn expect_shape(what: &str, infos: &[TensorInfo], i: usize, rank: usize) -> Result<Vec<usize>, RunError> {
    match infos.get(i) {
        Some(t) if t.shape.len() == rank => Ok(t.shape.clone()),
        _ => Err(RunError::Arguments(format!("not a decoder module: {what} {i} is not a rank-{rank} tensor"))),
    }
}

impl<'m> DecoderSession<'m> {
    /// A session with an empty cache. Fails when the entry points are not a decoder's.
    pub fn new(m: DecoderEntries<'m>) -> Result<DecoderSession<'m>, RunError> {
        let ids = expect_shape("prefill input", m.prefill.inputs(), 0, 2)?;
        let logits = expect_shape("prefill output", m.prefill.outputs(), 0, 2)?;
        let (Some(state_size), Some(decode_state)) = (m.prefill.state_size(), m.decode.state_size()) else {
            return Err(RunError::Arguments("not a decoder module: its steps have no state".into()));
        };
        if state_size != decode_state || m.decode.outputs().first().map(|t| &t.shape) != Some(&logits) {
            return Err(RunError::Arguments("not a decoder module: prefill and decode disagree on state or logits".into()));
        }
        let arena = Arena::new(m.prefill.arena_size().max(m.decode.arena_size()));
        if m.prefill.outputs()[0].dtype != 1 {
            return Err(RunError::Arguments("not a decoder module: its logits are not f32".into()));
        }
        let (max_prefill, vocab) = (ids[1], logits[1]);
        Ok(DecoderSession {
            state: State::new(state_size),
            arena,
            position: 0,
            max_prefill,
            vocab,
            logits: vec![0u8; 4 * vocab],
            values: vec![0.0; vocab],
            ids: vec![0u8; 8 * max_prefill],
            m,
        })
    }

    /// Tokens in the cache.
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn context(&self) -> usize {
        self.m.context
    }

    pub fn max_prefill(&self) -> usize {
        self.max_prefill
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Empty the cache.
    pub fn reset(&mut self) {
        self.state.reset();
        self.position = 0;
    }

    fn check_tokens(&self, tokens: &[i64]) -> Result<(), RunError> {
        if tokens.is_empty() {
            return Err(RunError::Arguments("no tokens to run".into()));
        }
        if self.position + tokens.len() > self.m.context {
            return Err(RunError::Arguments(format!(
                "{} tokens do not fit the context of {} ({} already in the cache); compile with a larger --context",
                tokens.len(),
                self.m.context,
                self.position
            )));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t < 0 || t as usize >= self.vocab) {
            return Err(RunError::Arguments(format!("token id {t} is outside the vocabulary of {} tokens", self.vocab)));
        }
        Ok(())
    }

    /// Append `tokens` to the cache (in chunks of up to `max_prefill`); returns the logits after
    /// the last one. Allocates nothing.
    pub fn prefill(&mut self, tokens: &[i64]) -> Result<&[f32], RunError> {
        self.check_tokens(tokens)?;
        let p = self.max_prefill;
        for chunk in tokens.chunks(p) {
            self.ids.fill(0);
            for (i, &t) in chunk.iter().enumerate() {
                self.ids[8 * i..8 * i + 8].copy_from_slice(&t.to_le_bytes());
            }
            let position = (self.position as i64).to_le_bytes();
            let n = (chunk.len() as i64).to_le_bytes();
            let entry = self.m.prefill;
            let all: [&[u8]; 3] = [&self.ids, &position, &n];
            let inputs = &all[..entry.inputs().len().min(3)];
            entry.call_step(inputs, &mut [&mut self.logits], &mut self.arena, &mut self.state, self.m.weights, self.m.pool)?;
            self.position += chunk.len();
        }
        Ok(self.read_logits())
    }

    /// Append one token; returns the logits after it. Allocates nothing.
    pub fn decode(&mut self, token: i64) -> Result<&[f32], RunError> {
        self.check_tokens(&[token])?;
        let (ids, position) = (token.to_le_bytes(), (self.position as i64).to_le_bytes());
        self.m.decode.call_step(&[&ids, &position], &mut [&mut self.logits], &mut self.arena, &mut self.state, self.m.weights, self.m.pool)?;
        self.position += 1;
        Ok(self.read_logits())
    }

    fn read_logits(&mut self) -> &[f32] {
        for (v, b) in self.values.iter_mut().zip(self.logits.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        &self.values
    }
}
