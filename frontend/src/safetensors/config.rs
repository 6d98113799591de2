//! `config.json` → the architecture to build. Every field odc reads is checked here, and every
//! value it cannot honour is collected (all at once, by key) the way unsupported ONNX operators
//! are, so the graph builders only ever see configurations they implement.

use crate::{FrontendError, Unsupported};
use serde_json::{Map, Value};

/// A decoder-only transformer of the llama family (llama, qwen2 differ only in flags).
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v projections (qwen2; llama's `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the attention output projection (llama's `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.1's piecewise rescaling of the inverse frequencies.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// A BERT encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Exact (erf) GELU; `gelu_new`/`gelu_pytorch_tanh` use the tanh approximation.
    pub gelu_tanh: bool,
}

/// What a checkpoint's `config.json` describes.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    Decoder(DecoderConfig),
    Bert(BertConfig),
}

impl ModelConfig {
    /// Parse `config.json` text; `Err` lists every unsupported or invalid value.
    pub fn parse(text: &str) -> Result<ModelConfig, FrontendError> {
        let json: Value = serde_json::from_str(text).map_err(|e| FrontendError::Malformed(format!("config.json: {e}")))?;
        let obj = json.as_object().ok_or_else(|| FrontendError::Malformed("config.json is not a JSON object".into()))?;
        let mut r = Reader { obj, problems: vec![] };
        let model_type = r.string("model_type").unwrap_or_default();
        let architectures: Vec<String> = obj
            .get("architectures")
            .and_then(|a| a.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let config = match model_type.as_str() {
            "llama" | "qwen2" => Some(ModelConfig::Decoder(decoder(&mut r, &model_type))),
            "bert" => Some(ModelConfig::Bert(bert(&mut r))),
            _ => {
                r.unsupported(
                    "model_type",
                    format!(
                        "architecture '{}' ({}) is not supported; supported: llama, qwen2, bert",
                        if model_type.is_empty() { "<missing>" } else { &model_type },
                        if architectures.is_empty() { "no architectures listed".to_string() } else { architectures.join(", ") }
                    ),
                );
                None
            }
        };
        match config {
            Some(c) if r.problems.is_empty() => Ok(c),
            _ => Err(FrontendError::UnsupportedList(r.problems)),
        }
    }
}

fn decoder(r: &mut Reader, model_type: &str) -> DecoderConfig {
    let hidden_size = r.usize("hidden_size");
    let num_heads = r.usize("num_attention_heads");
    let num_kv_heads = r.opt_usize("num_key_value_heads").unwrap_or(num_heads);
    let head_dim = r.opt_usize("head_dim").unwrap_or(if num_heads > 0 { hidden_size / num_heads } else { 0 });
    if num_heads > 0 && num_kv_heads > 0 && num_heads % num_kv_heads != 0 {
        r.unsupported("num_key_value_heads", format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"));
    }
    if num_heads > 0 && r.obj.get("head_dim").is_none() && hidden_size % num_heads != 0 {
        r.unsupported("hidden_size", format!("{hidden_size} is not a multiple of num_attention_heads {num_heads}"));
    }
    if head_dim % 2 != 0 {
        r.unsupported("head_dim", format!("RoPE needs an even head dimension, got {head_dim}"));
    }
    let act = r.string("hidden_act").unwrap_or_else(|| "silu".into());
    if act != "silu" {
        r.unsupported("hidden_act", format!("'{act}' (the llama family uses silu)"));
    }
    let (rope_theta, rope_scaling) = rope(r);
    let qwen = model_type == "qwen2";
    let attention_bias = r.opt_bool("attention_bias").unwrap_or(false);
    if qwen {
        // Qwen2 attention has q/k/v biases, no output bias; sliding windows are off by default.
        if r.opt_bool("use_sliding_window").unwrap_or(false) {
            r.unsupported("use_sliding_window", "sliding-window attention".into());
        }
    }
    if let Some(types) = r.obj.get("layer_types").and_then(|t| t.as_array()) {
        if let Some(t) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
            r.unsupported("layer_types", format!("layer type {t} (only full_attention)"));
        }
    }
    for key in ["pretraining_tp"] {
        if let Some(v) = r.opt_usize(key) {
            if v != 1 {
                r.unsupported(key, format!("{v} (only 1)"));
            }
        }
    }
    DecoderConfig {
        model_type: model_type.to_string(),
        vocab_size: r.usize("vocab_size"),
        hidden_size,
        intermediate_size: r.usize("intermediate_size"),
        num_layers: r.usize("num_hidden_layers"),
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps: r.opt_f64("rms_norm_eps").unwrap_or(1e-6),
        rope_theta,
        rope_scaling,
        max_position_embeddings: r.opt_usize("max_position_embeddings").unwrap_or(2048),
        tie_word_embeddings: r.opt_bool("tie_word_embeddings").unwrap_or(false),
        qkv_bias: qwen || attention_bias,
        o_bias: !qwen && attention_bias,
        mlp_bias: r.opt_bool("mlp_bias").unwrap_or(false),
    }
}

/// RoPE base and scaling: `rope_theta` + `rope_scaling` (transformers 4) or one
/// `rope_parameters` object holding both (transformers 5).
fn rope(r: &mut Reader) -> (f64, RopeScaling) {
    let (key, params) = match (r.obj.get("rope_parameters"), r.obj.get("rope_scaling")) {
        (Some(p), _) if !p.is_null() => ("rope_parameters", p.clone()),
        (_, Some(p)) => ("rope_scaling", p.clone()),
        _ => ("rope_scaling", Value::Null),
    };
    let mut theta = r.opt_f64("rope_theta");
    if params.is_null() {
        return (theta.unwrap_or(10000.0), RopeScaling::None);
    }
    let Some(o) = params.as_object() else {
        r.unsupported(key, format!("{params} is not an object"));
        return (theta.unwrap_or(10000.0), RopeScaling::None);
    };
    if let Some(t) = o.get("rope_theta") {
        match t.as_f64().filter(|t| *t > 0.0) {
            Some(t) => theta = Some(t),
            None => r.unsupported(key, format!("rope_theta {t} is not a positive number")),
        }
    }
    let theta = theta.unwrap_or(10000.0);
    let kind = o.get("rope_type").or_else(|| o.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
    match kind {
        "default" => (theta, RopeScaling::None),
        "llama3" => {
            let mut num = |name: &str| match o.get(name).and_then(|x| x.as_f64()) {
                Some(x) if x > 0.0 => x,
                _ => {
                    r.unsupported(key, format!("llama3 scaling needs a positive '{name}'"));
                    1.0
                }
            };
            let scaling = RopeScaling::Llama3 {
                factor: num("factor"),
                low_freq_factor: num("low_freq_factor"),
                high_freq_factor: num("high_freq_factor"),
                original_max_position_embeddings: num("original_max_position_embeddings"),
            };
            (theta, scaling)
        }
        other => {
            r.unsupported(key, format!("rope_type '{other}' (supported: default, llama3)"));
            (theta, RopeScaling::None)
        }
    }
}

fn bert(r: &mut Reader) -> BertConfig {
    let act = r.string("hidden_act").unwrap_or_else(|| "gelu".into());
    let gelu_tanh = match act.as_str() {
        "gelu" => false,
        "gelu_new" | "gelu_pytorch_tanh" => true,
        other => {
            r.unsupported("hidden_act", format!("'{other}' (supported: gelu, gelu_new, gelu_pytorch_tanh)"));
            false
        }
    };
    if let Some(p) = r.string("position_embedding_type") {
        if p != "absolute" {
            r.unsupported("position_embedding_type", format!("'{p}' (only absolute)"));
        }
    }
    if r.opt_bool("is_decoder").unwrap_or(false) {
        r.unsupported("is_decoder", "BERT as a decoder".into());
    }
    let hidden_size = r.usize("hidden_size");
    let num_heads = r.usize("num_attention_heads");
    if num_heads > 0 && hidden_size % num_heads != 0 {
        r.unsupported("hidden_size", format!("{hidden_size} is not a multiple of num_attention_heads {num_heads}"));
    }
    BertConfig {
        vocab_size: r.usize("vocab_size"),
        hidden_size,
        intermediate_size: r.usize("intermediate_size"),
        num_layers: r.usize("num_hidden_layers"),
        num_heads,
        max_position_embeddings: r.opt_usize("max_position_embeddings").unwrap_or(512),
        type_vocab_size: r.opt_usize("type_vocab_size").unwrap_or(2),
        layer_norm_eps: r.opt_f64("layer_norm_eps").unwrap_or(1e-12),
        gelu_tanh,
    }
}

/// Typed field access that records, rather than stops at, each problem.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    problems: Vec<Unsupported>,
}

impl Reader<'_> {
    fn unsupported(&mut self, key: &str, reason: String) {
        self.problems.push(Unsupported { node: "config.json".into(), op: key.into(), reason });
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                self.unsupported(key, format!("{v} is not a string"));
                None
            }
        }
    }

    fn opt_usize(&mut self, key: &str) -> Option<usize> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().and_then(|x| usize::try_from(x).ok()).filter(|&x| x > 0) {
                Some(x) => Some(x),
                None => {
                    self.unsupported(key, format!("{v} is not a positive integer"));
                    None
                }
            },
        }
    }

    fn usize(&mut self, key: &str) -> usize {
        if self.obj.get(key).is_none() {
            self.unsupported(key, "required and missing".into());
            return 0;
        }
        self.opt_usize(key).unwrap_or(0)
    }

    fn opt_f64(&mut self, key: &str) -> Option<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64().filter(|x| x.is_finite() && *x > 0.0) {
                Some(x) => Some(x),
                None => {
                    self.unsupported(key, format!("{v} is not a positive number"));
                    None
                }
            },
        }
    }

    fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                self.unsupported(key, format!("{v} is not a boolean"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,
        "intermediate_size":160,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
        "vocab_size":100,"rms_norm_eps":1e-5,"rope_theta":10000.0,"rope_scaling":null,"hidden_act":"silu",
        "tie_word_embeddings":true,"max_position_embeddings":256}"#;

    #[test]
    fn a_llama_config_reads_with_defaults() {
        let ModelConfig::Decoder(c) = ModelConfig::parse(SMOLLM).unwrap() else { panic!("not a decoder") };
        assert_eq!((c.head_dim, c.num_kv_heads, c.tie_word_embeddings, c.qkv_bias), (16, 2, true, false));
        assert_eq!(c.rope_scaling, RopeScaling::None);
    }

    #[test]
    fn transformers_5_rope_parameters_read_like_rope_theta_and_scaling() {
        let v5 = SMOLLM.replace(
            "\"rope_theta\":10000.0,\"rope_scaling\":null",
            "\"rope_parameters\":{\"rope_theta\":500000.0,\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}",
        );
        let ModelConfig::Decoder(c) = ModelConfig::parse(&v5).unwrap() else { panic!("not a decoder") };
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(
            c.rope_scaling,
            RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192.0 }
        );
    }

    #[test]
    fn every_unsupported_value_is_listed_by_key() {
        let bad = SMOLLM
            .replace("\"silu\"", "\"relu\"")
            .replace("\"rope_scaling\":null", "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}")
            .replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3");
        let e = ModelConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("the model uses 3 unsupported feature(s):"), "{e}");
        for key in ["(hidden_act): 'relu'", "(rope_scaling): rope_type 'yarn'", "(num_key_value_heads): 3 does not divide"] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    #[test]
    fn unknown_architectures_and_missing_fields_are_reported() {
        let e = ModelConfig::parse(r#"{"model_type":"mamba","architectures":["MambaForCausalLM"]}"#).unwrap_err().to_string();
        assert!(e.contains("architecture 'mamba' (MambaForCausalLM) is not supported"), "{e}");
        let e = ModelConfig::parse(r#"{"model_type":"llama"}"#).unwrap_err().to_string();
        assert!(e.contains("(hidden_size): required and missing") && e.contains("(vocab_size): required and missing"), "{e}");
        assert!(ModelConfig::parse("[1]").unwrap_err().to_string().contains("not a JSON object"));
    }
}
