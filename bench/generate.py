#!/usr/bin/env python3
"""Text-generation speed: odc (a decoder module compiled ahead of time) vs llama.cpp (llama-cpp-python)
and ONNX Runtime on the same checkpoint, same threads, same prompt, in one run, alternating engines.

    PY=$(bash bench/setup-llm-venv.sh)
    $PY bench/generate.py [--model build/smollm2] [--threads 1,2] [--prompt-tokens 64] [--new 64]
                          [--context 2048] [--repeat 5] [--odc target/release/odc] [--out FILE]

The model is a checkpoint directory with `model-f32.gguf` beside `model.safetensors` holding the
same f32 weights (scripts/smollm2.py writes both). odc compiles it once with `odc compile
--context C --max-prefill P` and every run is `odc generate lib.so --prompt-tokens ... -n N
--ignore-eos --threads T`, whose last line gives prefill and decode tokens/s. llama.cpp loads the
f32 GGUF with n_ctx = C, n_batch = P and the same threads; prefill is one `eval` of the prompt,
decode one `eval` per token, greedy (argmax of the logits) like odc. Each engine's median over
`--repeat` runs is reported, and the ratio odc/llama.cpp; the greedy tokens of both are compared
(they may differ where two logits are within rounding: f32 kernels sum in different orders).
ONNX Runtime runs `model-kv.onnx` beside the checkpoint when it exists (bench/export_onnx_decoder.py
writes it), its caches passed back in each call.

Decode is memory-bound: every token reads every weight once (the tied embedding through the LM
head), so `bytes/token x tokens/s` is the bandwidth a decoder sustains. It is set against the
machine's read bandwidth measured here by numpy (the best of 5 sums over a 1 GiB float32 array,
one thread).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def read_bandwidth_gbs():
    a = np.ones(1 << 28, dtype=np.float32)  # 1 GiB
    a.sum()
    best = min(timed(lambda: a.sum()) for _ in range(5))
    return a.nbytes / best / 1e9


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def odc_run(odc, module, prompt, new, threads):
    cmd = [odc, "generate", module, "--prompt-tokens", ",".join(map(str, prompt)), "-n", str(new), "--ignore-eos",
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    speeds = dict(kv.split("=") for kv in out[-1].split())
    tokens = [int(t) for t in out[-2].removeprefix("generated: ").split()]
    return float(speeds["prefill_tok_s"]), float(speeds["decode_tok_s"]), tokens


class Ort:
    """ONNX Runtime on model-kv.onnx (bench/export_onnx_decoder.py): the caches go in as inputs and
    come back as outputs, fed to the next call, as a plain onnxruntime host does."""

    def __init__(self, path, threads, config):
        import onnxruntime as ort
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        self.s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        hd = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        self.empty = np.zeros((config["num_hidden_layers"], 1, config["num_key_value_heads"], 0, hd), np.float32)

    def run(self, prompt, new):
        t = time.perf_counter()
        logits, k, v = self.s.run(None, {"input_ids": np.array([prompt], np.int64), "past_keys": self.empty, "past_values": self.empty})
        prefill = len(prompt) / (time.perf_counter() - t)
        tokens = [int(np.argmax(logits))]
        t = time.perf_counter()
        for _ in range(new - 1):
            logits, k, v = self.s.run(None, {"input_ids": np.array([[tokens[-1]]], np.int64), "past_keys": k, "past_values": v})
            tokens.append(int(np.argmax(logits)))
        decode = (new - 1) / (time.perf_counter() - t)
        return prefill, decode, tokens


class LlamaCpp:
    def __init__(self, gguf, context, batch, threads):
        import llama_cpp
        self.llm = llama_cpp.Llama(model_path=gguf, n_ctx=context, n_batch=batch, n_ubatch=batch, n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False)

    def last_logits(self):
        # With logits_all=False llama.cpp computes the logits of each batch's last token only.
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))

    def run(self, prompt, new):
        llm = self.llm
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        prefill = len(prompt) / (time.perf_counter() - t)
        tokens = [int(np.argmax(self.last_logits()))]
        t = time.perf_counter()
        for _ in range(new - 1):
            llm.eval([tokens[-1]])
            tokens.append(int(np.argmax(self.last_logits())))
        decode = (new - 1) / (time.perf_counter() - t)
        return prefill, decode, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--model", default=os.path.join(root, "build/smollm2"))
    ap.add_argument("--odc", default=os.path.join(root, "target/release/odc"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--max-prefill", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    for p in [a.odc, os.path.join(a.model, "model.safetensors"), os.path.join(a.model, "model-f32.gguf")]:
        if not os.path.exists(p):
            sys.exit(f"missing {p} (cargo build --release -p odc; python scripts/smollm2.py {a.model})")
    config = json.load(open(os.path.join(a.model, "config.json")))
    prompt = [(17 * i + 100) % config["vocab_size"] for i in range(a.prompt_tokens)]
    weight_bytes = os.path.getsize(os.path.join(a.model, "model.safetensors"))
    bandwidth = read_bandwidth_gbs()
    lines = [f"# Text generation: odc vs llama.cpp ({os.path.basename(os.path.abspath(a.model))}, f32)", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; prompt {a.prompt_tokens} tokens, {a.new} new, "
             f"context {a.context}, prefill chunk {a.max_prefill}; median of {a.repeat} alternating runs; "
             f"weights {weight_bytes / 1e6:.0f} MB read per decoded token; numpy read bandwidth {bandwidth:.1f} GB/s", "",
             "| threads | odc prefill tok/s | llama.cpp | odc/llama.cpp | ORT | odc/ORT | odc decode tok/s | llama.cpp | odc/llama.cpp | ORT | odc/ORT | odc GB/s (% of read bw) | llama.cpp GB/s | greedy equal to odc: llama.cpp, ORT |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([a.odc, "compile", a.model, "--emit", "sharedlib", "--weights", "external", "--context", str(a.context),
                        "--max-prefill", str(a.max_prefill), "-o", tmp + "/"], check=True, capture_output=True)
        compile_s = time.perf_counter() - t
        module = os.path.join(tmp, "lib" + os.path.basename(os.path.abspath(a.model)) + ".so")
        for threads in [int(x) for x in a.threads.split(",")]:
            cpp = LlamaCpp(os.path.join(a.model, "model-f32.gguf"), a.context, a.max_prefill, threads)
            onnx = os.path.join(a.model, "model-kv.onnx")
            ort = Ort(onnx, threads, config) if os.path.exists(onnx) else None
            cpp.run(prompt[:8], 4)  # warm-up
            odc_run(a.odc, module, prompt[:8], 4, threads)
            o, c, r = [], [], []
            for _ in range(a.repeat):
                o.append(odc_run(a.odc, module, prompt, a.new, threads))
                c.append(cpp.run(prompt, a.new))
                if ort:
                    r.append(ort.run(prompt, a.new))
            med = lambda rs, i: statistics.median(x[i] for x in rs) if rs else float("nan")
            op, od, cp_, cd, rp, rd = med(o, 0), med(o, 1), med(c, 0), med(c, 1), med(r, 0), med(r, 1)
            same = lambda rs: f"{sum(x == y for x, y in zip(o[0][2], rs[0][2]))}/{a.new}" if rs else "-"
            lines.append(f"| {threads} | {op:.1f} | {cp_:.1f} | {op / cp_:.2f} | {rp:.1f} | {op / rp:.2f} | {od:.2f} | {cd:.2f} | **{od / cd:.2f}** | "
                         f"{rd:.2f} | {od / rd:.2f} | {od * weight_bytes / 1e9:.1f} ({100 * od * weight_bytes / 1e9 / bandwidth:.0f}%) | "
                         f"{cd * weight_bytes / 1e9:.1f} | {same(c)}, {same(r)} |")
            print(lines[-1], flush=True)
            for name, rs in [("odc", o), ("llama.cpp", c), ("ORT", r)]:
                print(f"  {name} runs (prefill, decode tok/s): {[(round(p, 1), round(d, 2)) for p, d, _ in rs]}", flush=True)
            del cpp, ort
    lines += ["", f"odc compile time (both steps, AOT, external weights): {compile_s:.1f} s"]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        open(a.out, "w").write(text)


if __name__ == "__main__":
    main()
