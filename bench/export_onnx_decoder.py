#!/usr/bin/env python3
"""Export a llama-family checkpoint to ONNX with a KV cache, for the ONNX Runtime column of
bench/generate.py.

    .venv-hf/bin/python bench/export_onnx_decoder.py [CHECKPOINT_DIR]   # default build/smollm2

Writes CHECKPOINT_DIR/model-kv.onnx (+ model-kv.onnx.data): inputs `input_ids [1, T]` (i64),
`past_keys`, `past_values` `[layers, 1, kv_heads, P, head_dim]` (f32, P = 0 for the first call);
outputs `logits [1, vocab]` of the last token and `present_keys`, `present_values`
`[layers, 1, kv_heads, P + T, head_dim]`. The graph is a direct torch transcription of the
llama forward pass (RMSNorm, rotate-half RoPE at positions P..P+T, grouped-query attention with
a causal mask, SwiGLU, tied or untied head) over the checkpoint's weights; before writing, its
greedy continuation of the reference prompt is checked against transformers' (reference.json),
so the ONNX model is the same model. Needs torch, safetensors and onnx (the .venv-hf venv plus
`pip install onnx==1.23.2`).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file


class Decoder(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        c = json.load(open(os.path.join(d, "config.json")))
        self.c = c
        w = load_file(os.path.join(d, "model.safetensors"))
        self.w = {k: v.float() for k, v in w.items()}
        for i, (k, v) in enumerate(self.w.items()):
            self.register_buffer(f"w{i}", v, persistent=False)
        self.hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd))
        self.register_buffer("inv_freq", inv.float(), persistent=False)

    def norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.c["rms_norm_eps"]) * w

    def rope(self, x, cos, sin):
        h = x.shape[-1] // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
        return x * cos + rot * sin

    def forward(self, input_ids, past_keys, past_values):
        c, w, hd = self.c, self.w, self.hd
        nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
        t = input_ids.shape[1]
        p = past_keys.shape[3]
        pos = torch.arange(t, dtype=torch.float32) + p
        f = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat([f, f], dim=-1)
        cos, sin = emb.cos(), emb.sin()
        keys = torch.arange(p + t)[None, :]
        allowed = keys <= (torch.arange(t)[:, None] + p)
        mask = torch.where(allowed, 0.0, float("-inf"))
        x = w["model.embed_tokens.weight"][input_ids]
        new_k, new_v = [], []
        for l in range(c["num_hidden_layers"]):
            pre = f"model.layers.{l}."
            h = self.norm(x, w[pre + "input_layernorm.weight"])
            q = (h @ w[pre + "self_attn.q_proj.weight"].T).view(1, t, nh, hd).transpose(1, 2)
            k = (h @ w[pre + "self_attn.k_proj.weight"].T).view(1, t, nkv, hd).transpose(1, 2)
            v = (h @ w[pre + "self_attn.v_proj.weight"].T).view(1, t, nkv, hd).transpose(1, 2)
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
            k = torch.cat([past_keys[l], k], dim=2)
            v = torch.cat([past_values[l], v], dim=2)
            new_k.append(k)
            new_v.append(v)
            g = nh // nkv
            qg = q.reshape(1, nkv, g * t, hd)
            s = (qg @ k.transpose(2, 3)) / (hd ** 0.5)
            s = s.view(1, nkv, g, t, p + t) + mask
            a = torch.softmax(s, dim=-1).view(1, nkv, g * t, p + t) @ v
            a = a.view(1, nh, t, hd).transpose(1, 2).reshape(1, t, nh * hd)
            x = x + a @ w[pre + "self_attn.o_proj.weight"].T
            h = self.norm(x, w[pre + "post_attention_layernorm.weight"])
            gate = h @ w[pre + "mlp.gate_proj.weight"].T
            up = h @ w[pre + "mlp.up_proj.weight"].T
            x = x + (torch.nn.functional.silu(gate) * up) @ w[pre + "mlp.down_proj.weight"].T
        x = self.norm(x[:, -1], w["model.norm.weight"])
        head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        return x @ head.T, torch.stack(new_k), torch.stack(new_v)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "build/smollm2"
    m = Decoder(d).eval()
    c = m.c
    shape = lambda n: (c["num_hidden_layers"], 1, c["num_key_value_heads"], n, m.hd)
    ref = json.load(open(os.path.join(d, "reference.json")))
    with torch.no_grad():
        ids = torch.tensor([ref["ids"]])
        logits, k, v = m(ids, torch.zeros(shape(0)), torch.zeros(shape(0)))
        got = []
        for _ in range(len(ref["greedy"])):
            nxt = int(logits.argmax())
            got.append(nxt)
            logits, k, v = m(torch.tensor([[nxt]]), k, v)
    if got != ref["greedy"]:
        sys.exit(f"the torch transcription's greedy tokens {got} differ from transformers' {ref['greedy']}")
    out = os.path.join(d, "model-kv.onnx")
    args = (torch.tensor([[1, 2, 3, 4]]), torch.zeros(shape(3)), torch.zeros(shape(3)))
    torch.onnx.export(m, args, out, dynamo=False, opset_version=17,
                      input_names=["input_ids", "past_keys", "past_values"],
                      output_names=["logits", "present_keys", "present_values"],
                      dynamic_axes={"input_ids": {1: "tokens"}, "past_keys": {3: "past"}, "past_values": {3: "past"},
                                    "present_keys": {3: "total"}, "present_values": {3: "total"}},
                      external_data=True)
    print(f"greedy tokens match transformers; wrote {out}")


if __name__ == "__main__":
    main()
