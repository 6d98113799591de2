#!/usr/bin/env python3
"""Write the benchmark models, one fixed input per model input, and a manifest.

    python bench/make_models.py [OUT_DIR] [--seed S]      (OUT_DIR defaults to bench/models)

Writes OUT_DIR/<name>/model.onnx, OUT_DIR/<name>/input_<k>.npy and OUT_DIR/models.json, which
lists for each model its file, its inputs (name, .npy file, shape, dtype), its outputs and an
approximate MFLOP count (2 x multiply-accumulates of its Conv, MatMul and Gemm nodes).

Models:
  resnet50, squeezenet, shufflenet, inception_v1
      the light_* models shipped in the onnx wheel (opset 9, as shipped), with their
      constant-filled weights replaced by seeded random initializers by randomize() from
      scripts/real_models.py. randomize() also exposes the Softmax's input (the logits) as an
      extra graph output; we keep it because random weights often saturate the probabilities
      and the logits are the more sensitive comparison. As randomize() takes the weights out of
      graph.input, these files are marked IR version 4 (IR 3 wants initializers as inputs).
  bert_encoder   a 4-layer BERT-style encoder (hidden 256, 4 heads, FFN 1024, seq 128), opset 17
  kws_cnn        the DS-CNN keyword-spotting model of "Hello Edge" (49x10 MFCC in), opset 17
  mlp            784 -> 512 -> 512 -> 10, Gemm + Relu, opset 17

Every model is checked with onnx.checker and run once in ONNX Runtime.
"""
import argparse
import json
import os
import sys
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
sys.dont_write_bytecode = True  # leave no __pycache__ in scripts/
from real_models import light_dir, randomize  # noqa: E402  (shared with the real-model tests)

OPSET = 17
LIGHT = ["resnet50", "squeezenet", "shufflenet", "inception_v1"]
MODELS = LIGHT + ["bert_encoder", "kws_cnn", "mlp"]


class GraphBuilder:
    """A small helper around onnx.helper: unique names, seeded initializers."""

    def __init__(self, rng):
        self.rng = rng
        self.nodes, self.inits = [], []
        self.count = 0

    def name(self, base):
        self.count += 1
        return f"{base}_{self.count}"

    def init(self, base, array):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def normal(self, base, shape, std):
        return self.init(base, self.rng.normal(0.0, std, size=shape).astype(np.float32))

    def op(self, op_type, inputs, base=None, **attrs):
        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def model(self, name, inputs, outputs):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="odc-bench")
        m.ir_version = 8  # readable by every runtime compared here
        return m


# ---------------------------------------------------------------------------------------------
# BERT-style encoder

def bert_encoder(rng, vocab=8000, seq=128, hidden=256, heads=4, ffn=1024, layers=4):
    b = GraphBuilder(rng)
    dh = hidden // heads
    eps = 1e-12

    def linear(x, n_in, n_out, base):
        w = b.normal(f"{base}_w", (n_in, n_out), np.sqrt(1.0 / n_in))  # LeCun scaling
        bias = b.normal(f"{base}_b", (n_out,), 0.02)
        return b.op("Add", [b.op("MatMul", [x, w], f"{base}_mm"), bias], base)

    def layer_norm(x, base):
        gamma = b.init(f"{base}_gamma", rng.uniform(0.9, 1.1, hidden).astype(np.float32))
        beta = b.normal(f"{base}_beta", (hidden,), 0.02)
        return b.op("LayerNormalization", [x, gamma, beta], base, axis=-1, epsilon=eps)

    split_shape = b.init("split_heads_shape", np.array([1, seq, heads, dh], np.int64))
    merge_shape = b.init("merge_heads_shape", np.array([1, seq, hidden], np.int64))
    scale = b.init("attn_scale", np.array(1.0 / np.sqrt(dh), np.float32))
    half = b.init("half", np.array(0.5, np.float32))
    one = b.init("one", np.array(1.0, np.float32))
    sqrt2 = b.init("sqrt2", np.array(np.sqrt(2.0), np.float32))

    word = b.normal("word_embeddings", (vocab, hidden), 0.02)  # BERT's initializer range
    pos = b.normal("position_embeddings", (seq, hidden), 0.02)
    x = b.op("Gather", [word, "input_ids"], "embed", axis=0)           # [1, seq, hidden]
    x = b.op("Add", [x, pos], "embed_pos")
    x = layer_norm(x, "embed_ln")

    for li in range(layers):
        p = f"l{li}"

        def heads_of(t, perm, base):
            return b.op("Transpose", [b.op("Reshape", [t, split_shape], f"{base}_split")],
                        base, perm=perm)

        q = heads_of(linear(x, hidden, hidden, f"{p}_q"), [0, 2, 1, 3], f"{p}_qh")  # [1,H,S,D]
        k = heads_of(linear(x, hidden, hidden, f"{p}_k"), [0, 2, 3, 1], f"{p}_kh")  # [1,H,D,S]
        v = heads_of(linear(x, hidden, hidden, f"{p}_v"), [0, 2, 1, 3], f"{p}_vh")  # [1,H,S,D]
        scores = b.op("Mul", [b.op("MatMul", [q, k], f"{p}_qk"), scale], f"{p}_scores")
        probs = b.op("Softmax", [scores], f"{p}_probs", axis=-1)
        ctx = b.op("MatMul", [probs, v], f"{p}_ctx")                                # [1,H,S,D]
        ctx = b.op("Transpose", [ctx], f"{p}_ctx_t", perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, merge_shape], f"{p}_ctx_merge")
        attn = linear(ctx, hidden, hidden, f"{p}_o")
        x = layer_norm(b.op("Add", [x, attn], f"{p}_attn_res"), f"{p}_attn_ln")

        h = linear(x, hidden, ffn, f"{p}_ffn1")
        erf = b.op("Erf", [b.op("Div", [h, sqrt2], f"{p}_gelu_div")], f"{p}_gelu_erf")
        gelu = b.op("Mul", [h, b.op("Mul", [b.op("Add", [erf, one], f"{p}_gelu_add"), half],
                                    f"{p}_gelu_half")], f"{p}_gelu")
        out = linear(gelu, ffn, hidden, f"{p}_ffn2")
        x = layer_norm(b.op("Add", [x, out], f"{p}_ffn_res"), f"{p}_ffn_ln")

    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    model = b.model("bert_encoder",
                    [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])],
                    [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                                   [1, seq, hidden])])
    inputs = {"input_ids": rng.integers(0, vocab, size=(1, seq), dtype=np.int64)}
    return model, inputs


# ---------------------------------------------------------------------------------------------
# DS-CNN keyword spotting ("Hello Edge", Zhang et al. 2017)

def kws_cnn(rng, channels=64, blocks=4, classes=12):
    b = GraphBuilder(rng)

    def conv_bn_relu(x, c_in, c_out, kernel, stride, pads, group, base):
        fan_in = (c_in // group) * kernel[0] * kernel[1]
        w = b.normal(f"{base}_w", (c_out, c_in // group, *kernel), np.sqrt(2.0 / fan_in))  # He
        bias = b.normal(f"{base}_b", (c_out,), 0.05)
        y = b.op("Conv", [x, w, bias], base, kernel_shape=list(kernel), strides=list(stride),
                 pads=pads, group=group)
        bn = [b.init(f"{base}_bn_scale", rng.uniform(0.8, 1.2, c_out).astype(np.float32)),
              b.normal(f"{base}_bn_bias", (c_out,), 0.05),
              b.normal(f"{base}_bn_mean", (c_out,), 0.05),
              b.init(f"{base}_bn_var", rng.uniform(0.5, 1.5, c_out).astype(np.float32))]
        y = b.op("BatchNormalization", [y] + bn, f"{base}_bn", epsilon=1e-3)
        return b.op("Relu", [y], f"{base}_relu")

    # 49x10 input, 10x4 kernel, stride 2, "SAME" padding -> 25x5.
    x = conv_bn_relu("mfcc", 1, channels, (10, 4), (2, 2), [4, 1, 5, 1], 1, "conv1")
    for i in range(blocks):
        x = conv_bn_relu(x, channels, channels, (3, 3), (1, 1), [1, 1, 1, 1], channels, f"dw{i}")
        x = conv_bn_relu(x, channels, channels, (1, 1), (1, 1), [0, 0, 0, 0], 1, f"pw{i}")
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "pool")], "flatten", axis=1)
    w = b.normal("fc_w", (classes, channels), np.sqrt(1.0 / channels))
    bias = b.normal("fc_b", (classes,), 0.05)
    b.nodes.append(helper.make_node("Gemm", [x, w, bias], ["logits"], name="fc", transB=1))
    model = b.model("kws_cnn",
                    [helper.make_tensor_value_info("mfcc", TensorProto.FLOAT, [1, 1, 49, 10])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])])
    inputs = {"mfcc": rng.normal(0.0, 1.0, size=(1, 1, 49, 10)).astype(np.float32)}
    return model, inputs


# ---------------------------------------------------------------------------------------------
# MLP

def mlp(rng, sizes=(784, 512, 512, 10)):
    b = GraphBuilder(rng)
    x = "x"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        w = b.normal(f"fc{i}_w", (n_out, n_in), np.sqrt((1.0 if last else 2.0) / n_in))
        bias = b.normal(f"fc{i}_b", (n_out,), 0.05)
        if last:
            b.nodes.append(helper.make_node("Gemm", [x, w, bias], ["logits"], name=f"fc{i}",
                                            transB=1))
        else:
            x = b.op("Relu", [b.op("Gemm", [x, w, bias], f"fc{i}", transB=1)], f"relu{i}")
    model = b.model("mlp",
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, sizes[-1]])])
    inputs = {"x": rng.uniform(0.0, 1.0, size=(1, sizes[0])).astype(np.float32)}
    return model, inputs


# ---------------------------------------------------------------------------------------------
# light_* CNNs from the onnx wheel

def light(name, seed, rng):
    model = randomize(onnx.load(os.path.join(light_dir(), f"light_{name}.onnx")), seed)
    # randomize() drops the weights from graph.input, which IR version 3 (as shipped) requires;
    # IR 4 (the IR version of opset 9) allows it, and shape inference needs it.
    model.ir_version = max(model.ir_version, 4)
    # randomize() declares the extra logits output without a shape; infer it (shape inference
    # only fills value_info, so look it up with the output removed).
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.output[:]
    bare.graph.output.extend(o for o in model.graph.output if o.type.tensor_type.HasField("shape"))
    inferred = {v.name: v for v in shape_inference.infer_shapes(bare).graph.value_info}
    for o in model.graph.output:
        if not o.type.tensor_type.HasField("shape"):
            o.CopyFrom(inferred[o.name])
    inputs = {}
    for i in model.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        inputs[i.name] = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    return model, inputs


# ---------------------------------------------------------------------------------------------

def mflop(model):
    """2 x multiply-accumulates of every Conv, MatMul and Gemm, from inferred shapes."""
    g = shape_inference.infer_shapes(model).graph
    shapes = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    macs = 0
    for n in g.node:
        if n.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        out, a, w = shapes.get(n.output[0]), shapes.get(n.input[0]), shapes.get(n.input[1])
        if out is None or a is None or w is None:
            print(f"  warning: no shapes for {n.op_type} {n.name!r}; left out of MFLOP",
                  file=sys.stderr)
            continue
        if n.op_type == "Conv":  # out [N, Cout, ...] x weight [Cout, Cin/group, k...]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type == "MatMul":
            macs += int(np.prod(out)) * a[-1]
        else:  # Gemm: out [M, N], K from A (transA flips it)
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            macs += int(np.prod(out)) * (a[0] if trans_a else a[1])
    return round(2 * macs / 1e6, 1)


def build(name, seed):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name in LIGHT:
        return light(name, seed, rng)
    return {"bert_encoder": bert_encoder, "kws_cnn": kws_cnn, "mlp": mlp}[name](rng)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "models"))
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    import onnxruntime as ort

    manifest = []
    for name in MODELS:
        model, inputs = build(name, a.seed)
        onnx.checker.check_model(model, full_check=True)
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        onnx.save(model, path)

        entry = {"name": name, "file": f"{name}/model.onnx", "mflop": mflop(model), "inputs": []}
        for k, (iname, x) in enumerate(inputs.items()):
            np.save(os.path.join(d, f"input_{k}.npy"), x)
            entry["inputs"].append({"name": iname, "file": f"{name}/input_{k}.npy",
                                    "shape": list(x.shape), "dtype": str(x.dtype)})

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, inputs)
        entry["outputs"] = [o.name for o in sess.get_outputs()]
        for o, v in zip(sess.get_outputs(), outs):
            if not np.all(np.isfinite(v)):
                sys.exit(f"{name}: output {o.name!r} has non-finite values; fix the weights")
        manifest.append(entry)
        desc = ", ".join(f"{o.name} {list(v.shape)} max|x|={np.abs(v).max():.3g}"
                         for o, v in zip(sess.get_outputs(), outs))
        print(f"{name}: {len(model.graph.node)} nodes, {entry['mflop']} MFLOP; {desc}",
              file=sys.stderr)

    with open(os.path.join(a.out, "models.json"), "w") as f:
        json.dump({"seed": a.seed, "models": manifest}, f, indent=1)
        f.write("\n")
    print(os.path.join(a.out, "models.json"))


if __name__ == "__main__":
    main()
