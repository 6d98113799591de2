#!/usr/bin/env python3
"""Prepare real-model checks: the light_* CNNs from the onnx wheel with their constant-filled
weights replaced by seeded random initializers, one random input each, and ONNX Runtime's
outputs for that input.

    python scripts/real_models.py OUT_DIR [--models resnet50,squeezenet,...]

Writes OUT_DIR/<name>/model.onnx, input_<k>.npy (named in inputs.txt) and expected_<k>.npy.
Needs numpy, onnx and onnxruntime (scripts/setup-venv.sh installs them).
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT = ["resnet50", "squeezenet", "shufflenet", "inception_v1", "inception_v2", "densenet121",
         "vgg19", "zfnet512", "bvlc_alexnet"]


def light_dir():
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def randomize(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Replace every ConstantOfShape-generated weight by a random initializer.

    Weights are scaled like He initialisation so activations stay in a sane range; BatchNorm
    variances are made positive.
    """
    rng = np.random.default_rng(seed)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    keep_nodes = []
    new_inits = []
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = numpy_helper.to_array(inits[node.input[0]]).astype(np.int64).tolist()
            name = node.output[0]
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if len(shape) == 1:
                lname = name.lower()
                if "var" in lname or "_riv" in lname:
                    w = rng.uniform(0.5, 1.5, size=shape)
                elif lname.endswith("_s_0") or "scale" in lname or "gamma" in lname:
                    w = rng.uniform(0.8, 1.2, size=shape)
                else:
                    w = rng.normal(0.0, 0.05, size=shape)
            else:
                w = rng.normal(0.0, np.sqrt(1.0 / max(fan_in, 1)), size=shape)
            new_inits.append(numpy_helper.from_array(w.astype(np.float32), name))
        else:
            keep_nodes.append(node)
    used = {i for n in keep_nodes for i in n.input}
    old = [t for t in g.initializer if t.name in used]
    del g.node[:]
    g.node.extend(keep_nodes)
    del g.initializer[:]
    g.initializer.extend(old + new_inits)
    # Also expose the softmax's input: random weights often saturate the probabilities, and the
    # logits are the more sensitive comparison.
    for node in keep_nodes:
        if node.op_type == "Softmax" and node.input[0] not in {o.name for o in g.output}:
            g.output.append(helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
    # Keep only real inputs in graph.input (weights are initializers now).
    not_inputs = set(inits) | {t.name for t in new_inits}
    real = [i for i in g.input if i.name not in not_inputs]
    del g.input[:]
    g.input.extend(real)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--models", default="resnet50,squeezenet,shufflenet,inception_v1")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    import onnxruntime as ort

    for name in a.models.split(","):
        src = os.path.join(light_dir(), f"light_{name}.onnx")
        model = randomize(onnx.load(src), a.seed)
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        onnx.save(model, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(a.seed + 1)
        feeds = {}
        names = []
        for k, i in enumerate(sess.get_inputs()):
            x = rng.uniform(-1, 1, size=i.shape).astype(np.float32)
            np.save(os.path.join(d, f"input_{k}.npy"), x)
            feeds[i.name] = x
            names.append(i.name)
        with open(os.path.join(d, "inputs.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
        outs = sess.run(None, feeds)
        for k, o in enumerate(outs):
            np.save(os.path.join(d, f"expected_{k}.npy"), o)
        print(f"{name}: {len(model.graph.node)} nodes, outputs {[o.shape for o in outs]}", file=sys.stderr)


if __name__ == "__main__":
    main()
