#!/usr/bin/env python3
"""Time one model in one engine (ONNX Runtime or tract); run by run.py in a child process so
that the child's peak RSS is that engine's alone.

    python bench/worker.py {ort,tract} MODEL.onnx --input NAME=FILE.npy ... \
        [--threads N] [--runs R] [--warmup W] [--save-outputs DIR]

Prints one JSON line: times_ms (every timed run), median_ms, cpu_per_wall (process CPU time /
wall time over the timed runs, ~1 means one busy thread; null when they took under 0.25 s),
threads_started (OS threads the engine started), output names; with --save-outputs, writes
the first run's outputs to DIR/<k>.npy in output order.
"""
import argparse
import json
import os
import time

import numpy as np


def os_threads():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Threads:"))


def ort_engine(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]

    def run(feeds):
        return sess.run(None, feeds)

    return in_names, out_names, run, lambda outs: outs


def tract_engine(path, threads):
    # tract's Python bindings (and the C API under them) have no way to choose an executor:
    # tract runs single-threaded whatever `threads` is. run.py labels it accordingly.
    import tract

    model = tract.onnx().load(path).into_model()
    in_names = [model.input_name(i) for i in range(model.input_count())]
    out_names = [model.output_name(i) for i in range(model.output_count())]
    runnable = model.into_runnable()

    def run(feeds):
        return runnable.run([feeds[n] for n in in_names])

    return in_names, out_names, run, lambda outs: [o.to_numpy() for o in outs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=["ort", "tract"])
    ap.add_argument("model")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--save-outputs", metavar="DIR")
    a = ap.parse_args()

    feeds = {}
    for spec in a.input:
        name, file = spec.split("=", 1)
        feeds[name] = np.load(file)
    threads_before = os_threads()  # numpy's BLAS may already have started some
    make = ort_engine if a.engine == "ort" else tract_engine
    in_names, out_names, run, to_numpy = make(a.model, a.threads)
    missing = [n for n in in_names if n not in feeds]
    if missing:
        raise SystemExit(f"missing input(s): {', '.join(missing)}")

    first = run(feeds)
    if a.save_outputs:
        os.makedirs(a.save_outputs, exist_ok=True)
        for k, o in enumerate(to_numpy(first)):
            np.save(os.path.join(a.save_outputs, f"{k}.npy"), np.asarray(o))
    for _ in range(max(a.warmup - 1, 0)):  # the run above was the first warm-up
        run(feeds)

    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(max(a.runs, 1)):
        t = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - t) * 1e3)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    print(json.dumps({"times_ms": times, "median_ms": float(np.median(times)),
                      # CPU accounting is too coarse for short windows to be meaningful
                      "cpu_per_wall": cpu / wall if wall >= 0.25 else None,
                      "threads_started": os_threads() - threads_before, "outputs": out_names}))


if __name__ == "__main__":
    main()
