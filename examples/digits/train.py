#!/usr/bin/env python3
"""Train the bundled example: a small MLP on scikit-learn's 8x8 handwritten digits, exported to
ONNX by hand (MatMul/Add/Relu/Softmax/ArgMax, opset 17) with a few sample inputs.

    python examples/digits/train.py            # rewrites digits.onnx, samples.npy, labels.txt

Needs numpy, scikit-learn and onnx (scripts/setup-venv.sh installs them).
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=0)
    clf.fit(x_train, y_train)
    acc = clf.score(x_test, y_test)
    print(f"test accuracy: {acc:.3f} on {len(y_test)} held-out digits")

    w1, w2 = [w.astype(np.float32) for w in clf.coefs_]
    b1, b2 = [b.astype(np.float32) for b in clf.intercepts_]
    nodes = [
        helper.make_node("MatMul", ["pixels", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "w2"], ["l0"], name="fc2"),
        helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
        helper.make_node("ArgMax", ["logits"], ["digit"], name="predict", axis=-1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("digit", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
        ],
        [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="odc-example")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, "digits.onnx"))

    # Eight held-out digits as sample inputs, with their true labels.
    samples = x_test[:8]
    np.save(os.path.join(HERE, "samples.npy"), samples)
    with open(os.path.join(HERE, "labels.txt"), "w") as f:
        f.write(" ".join(str(v) for v in y_test[:8]) + "\n")
    print("true labels of samples.npy:", " ".join(str(v) for v in y_test[:8]))
    print("sklearn predicts:          ", " ".join(str(v) for v in clf.predict(samples)))


if __name__ == "__main__":
    main()
