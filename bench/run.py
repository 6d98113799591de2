#!/usr/bin/env python3
"""Compare odc with ONNX Runtime and tract on the same models, inputs and thread counts.

    python bench/run.py [--models a,b] [--threads 1,2] [--runs 20] [--repeat 3] [--odc PATH]
                        [--out bench/results.md]

Run it with the venv's python (bash bench/setup-venv.sh prints its path) after
`python bench/make_models.py`. odc is measured the way it is deployed: each model is compiled
once per run, ahead of time (`odc compile --emit sharedlib --weights external`), and the module
is timed with `odc exec`; the JIT (`odc bench`) is timed too, as an extra column. Every
measurement runs in its own child process: `odc exec` / `odc bench` for odc, bench/worker.py for
ONNX Runtime and tract. Each child's median over --runs timed runs is one sample; the whole set
is measured --repeat times, engines interleaved (their order rotates between repeats), and the
table shows the median of those per-repeat medians. Peak RSS is the child's maximum resident set
(GNU time's %M; the largest over repeats). Outputs are compared on the first repeat, at every
thread count: the AOT module (`odc exec --output-dir`) and tract against ONNX Runtime. See
bench/README.md.
"""
import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

try:
    import numpy as np
except ImportError:
    sys.exit("error: numpy is missing; run bench/run.py with the python that "
             "`bash bench/setup-venv.sh` prints")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "worker.py")
DEFAULT_MODELS = os.path.join(HERE, "models")
# "odc": the ahead-of-time compiled module run by `odc exec` (what the ratios use);
# "jit": `odc bench`, the JIT in the compiler's process (an informative extra column).
ENGINES = ["odc", "ort", "tract", "jit"]
TOLERANCE = 1e-3  # max |diff| / max |reference| above which outputs are flagged
ODC_LABEL = "odc (AOT module)"
JIT_LABEL = "odc (JIT, includes the compiler)"
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MEDIAN_RE = re.compile(r"median_ms=([0-9.eE+-]+)\s+min_ms=[0-9.eE+-]+\s*$", re.M)


# ---------------------------------------------------------------------------------------------
# child processes

def run_child(cmd, timeout):
    """Run cmd to completion; return (returncode, stdout, stderr, peak RSS in MB, wall seconds).

    The peak RSS comes from GNU time (/usr/bin/time -f %M): a child forked from this Python
    process inherits its RSS high-water mark, which Linux keeps across exec, so os.wait4's
    ru_maxrss is only an upper bound (used, and labelled, when /usr/bin/time is absent)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, n) for n in ("out", "err", "rss")]
        full = [TIME, "-f", "%M", "-o", paths[2]] + cmd if TIME else cmd
        with open(paths[0], "wb") as out, open(paths[1], "wb") as err:
            start = time.perf_counter()
            p = subprocess.Popen(full, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            timer = threading.Timer(timeout, os.killpg, (p.pid, signal.SIGKILL))
            timer.start()
            try:
                _, status, usage = os.wait4(p.pid, 0)
            finally:
                timer.cancel()
            wall = time.perf_counter() - start
            p.returncode = rc = os.waitstatus_to_exitcode(status)
        stdout, stderr = (open(f, errors="replace").read() for f in paths[:2])
        rss_kib = usage.ru_maxrss
        if TIME:
            with open(paths[2]) as f:
                last = (f.read().split() or ["0"])[-1]
            rss_kib = int(last) if last.isdigit() else 0
    if rc in (-signal.SIGKILL, 128 + signal.SIGKILL):
        stderr += f"\nerror: killed (after the {timeout:g} s timeout, or out of memory)"
    return rc, stdout, stderr, rss_kib / 1024.0, wall


def failure(what, rc, stdout, stderr):
    lines = [l.strip() for l in (stderr + "\n" + stdout).splitlines() if l.strip()]
    errs = [l for l in lines if "error" in l.lower()] or lines
    msg = errs[-1] if errs else "(no output)"
    return f"{what} exited with status {rc}: {msg[:400]}"


def input_args(entry, models_dir):
    return [f"{i['name']}={os.path.join(models_dir, i['file'])}" for i in entry["inputs"]]


def median_ms(stdout):
    """The median of the last `... median_ms=<x> min_ms=<y>` line (odc bench and odc exec)."""
    found = MEDIAN_RE.findall(stdout)
    return float(found[-1]) if found else None


def compile_odc(a, entry, models_dir, out_dir):
    """`odc compile --emit sharedlib --weights external -o OUT_DIR/model.o`, once per model.

    Returns {"lib", "files", "s", "rss"} (s: wall time of the whole command, which includes
    import, optimisation, code generation and linking) or {"error"}."""
    os.makedirs(out_dir, exist_ok=True)
    cmd = [a.odc, "compile", os.path.join(models_dir, entry["file"]), "--emit", "sharedlib",
           "--weights", "external", "-o", os.path.join(out_dir, "model.o")]
    rc, out, err, rss, wall = run_child(cmd, a.timeout)
    if rc != 0:
        return {"error": failure("odc compile", rc, out, err)}
    # it prints `wrote PATH` per artifact (libmodel.so, model.weights)
    files = [l.split(None, 1)[1].strip() for l in out.splitlines() if l.startswith("wrote ")]
    libs = [f for f in files if f.endswith(".so")]
    if len(libs) != 1 or not os.path.isfile(libs[0]):
        return {"error": f"odc compile reported {files or 'no files'}, not one shared library"}
    return {"lib": libs[0], "files": files, "s": wall, "rss": rss}


def measure_odc(a, entry, models_dir, subcommand, target, threads):
    """Time `odc exec LIB` (the AOT module) or `odc bench MODEL` (the JIT) in a child."""
    cmd = [a.odc, subcommand, target, "--threads", str(threads), "--runs", str(a.runs),
           "--warmup", str(a.warmup)]
    for spec in input_args(entry, models_dir):
        cmd += ["--input", spec]
    rc, out, err, rss, _ = run_child(cmd, a.timeout)
    ms = median_ms(out)
    if rc != 0 or ms is None:
        return {"error": failure(f"odc {subcommand}", rc, out, err)}
    return {"ms": ms, "rss": rss}


def measure_aot(a, entry, models_dir, lib, threads):
    return measure_odc(a, entry, models_dir, "exec", lib, threads)


def measure_jit(a, entry, models_dir, threads):
    return measure_odc(a, entry, models_dir, "bench", os.path.join(models_dir, entry["file"]), threads)


def measure_py(a, engine, entry, models_dir, threads, save_dir):
    cmd = [sys.executable, WORKER, engine, os.path.join(models_dir, entry["file"]),
           "--threads", str(threads), "--runs", str(a.runs), "--warmup", str(a.warmup)]
    for spec in input_args(entry, models_dir):
        cmd += ["--input", spec]
    if save_dir:
        cmd += ["--save-outputs", save_dir]
    rc, out, err, rss, _ = run_child(cmd, a.timeout)
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = None
    if rc != 0 or res is None:
        return {"error": failure(f"{engine} worker", rc, out, err)}
    if save_dir:
        res["outputs"] = [np.load(os.path.join(save_dir, f"{k}.npy"))
                          for k in range(len(res["outputs"]))]
    return {"ms": res["median_ms"], "rss": rss, "outputs": res["outputs"] if save_dir else None,
            "busy": (res["cpu_per_wall"], res["threads_started"])}


def aot_outputs(a, entry, models_dir, lib, threads, names, out_dir):
    """Run the module once with `odc exec --threads T --output-dir DIR`; read DIR/<sanitized
    name>.npy for every ONNX Runtime output."""
    cmd = [a.odc, "exec", lib, "--threads", str(threads), "--output-dir", out_dir,
           "--print", "0"]
    for spec in input_args(entry, models_dir):
        cmd += ["-i", spec]
    rc, out, err, _, _ = run_child(cmd, a.timeout)
    if rc != 0:
        return None, failure("odc exec --output-dir", rc, out, err)
    outs = []
    for n in names:
        # odc keeps alphanumerics, '_' and '-' and writes '_' for anything else
        safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in n)
        path = os.path.join(out_dir, f"{safe}.npy")
        if not os.path.exists(path):
            return None, f"odc exec wrote no {safe}.npy for output {n!r}"
        outs.append(np.load(path))
    return outs, None


def compare(ref, got, names):
    """Per output: max |got - ref| / max |ref| (or an error string)."""
    if len(ref) != len(got):
        return {n: f"{len(got)} outputs, expected {len(ref)}" for n in names}
    res = {}
    for n, r, g in zip(names, ref, got):
        r, g = np.asarray(r, np.float64), np.asarray(g, np.float64)
        if r.shape != g.shape:
            res[n] = f"shape {list(g.shape)}, expected {list(r.shape)}"
            continue
        if r.size == 0:
            res[n] = 0.0
            continue
        diff = np.abs(g - r)
        d = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
        scale = float(np.max(np.abs(r)))
        res[n] = d / scale if scale > 0 else d
    return res


# ---------------------------------------------------------------------------------------------
# environment description

def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown (no lscpu)"
    info = dict(l.split(":", 1) for l in out.splitlines() if ":" in l)
    name = info.get("Model name", "unknown").strip()
    cpus = info.get("CPU(s)", "?").strip()
    flags = info.get("Flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {cpus} CPUs, {isa}"


def versions(odc):
    import onnx
    import onnxruntime
    import tract

    odc_v = subprocess.run([odc, "--version"], capture_output=True, text=True).stdout.strip()
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    return (f"{odc_v or 'odc ?'} ({odc}; repo HEAD {git or '?'}), "
            f"onnxruntime {onnxruntime.__version__}, tract {tract.version()}, "
            f"onnx {onnx.__version__}, numpy {np.__version__}, "
            f"Python {sys.version.split()[0]}")


def child_rss(cmd, timeout):
    rc, _, _, rss, _ = run_child(cmd, timeout)
    return f"{rss:.0f}" if rc == 0 else "?"


def file_size(path):
    n = os.path.getsize(path)
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


# ---------------------------------------------------------------------------------------------
# report

def fmt_ms(x):
    return "-" if x is None else f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def fmt_ratio(x, y):
    return "-" if x is None or y is None or y == 0 else f"{x / y:.2f}"


def report(a, manifest, results, checks, errors, compiled, header, base_rss):
    lines = header + ["",
        f"**odc** is the ahead-of-time compiled module (`odc compile --emit sharedlib --weights "
        f"external`, run by `odc exec`): its time, the ratios and the first peak-RSS figure. "
        f"The two **JIT** columns are `odc bench`, {JIT_LABEL}, for information.", "",
        "| model | MFLOP | compile s | threads | odc ms | ORT ms | tract ms | odc/ORT | odc/tract "
        "| outputs agree | peak RSS MB (odc / ORT / tract) | JIT ms | JIT RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    tract_multi = False
    for entry in manifest:
        name = entry["name"]
        comp = compiled.get(name, {})
        comp_s = "FAIL" if "error" in comp else f"{comp['s']:.2f}" if "s" in comp else "-"
        for t in a.threads:
            ms, shown, rss = {}, {}, {}
            for e in ENGINES:
                samples = results[name, t, e]["ms"]
                ms[e] = float(np.median(samples)) if samples else None
                failed = (name, t, e) in errors or (e == "odc" and "error" in comp)
                shown[e] = "FAIL" if failed else fmt_ms(ms[e])
                peaks = results[name, t, e]["rss"]
                rss[e] = f"{max(peaks):.0f}" if peaks else "-"
            if ms["tract"] is not None and t > 1:
                shown["tract"] += " (1T)"
                tract_multi = True
            lines.append(f"| {name} | {entry['mflop']:g} | {comp_s} | {t} | {shown['odc']} "
                         f"| {shown['ort']} | {shown['tract']} | {fmt_ratio(ms['odc'], ms['ort'])} "
                         f"| {fmt_ratio(ms['odc'], ms['tract'])} | {agree_cell(checks.get((name, t), {}))} "
                         f"| {rss['odc']} / {rss['ort']} / {rss['tract']} | {shown['jit']} "
                         f"| {rss['jit']} |")
    lines += ["",
              f"Times are ms per inference: median of {a.runs} timed runs (after {a.warmup} "
              f"warm-up runs) in one child process, then the median over {a.repeat} repeat(s). "
              "Ratios (odc = AOT module) below 1 mean odc is faster. *compile s*: wall time of "
              "the model's one `odc compile` (import, optimisation, code generation, linking). "
              "*outputs agree*: the largest max|x - ORT| / max|ORT| over the model's outputs, for "
              "the AOT module (`odc exec --output-dir`, run at the row's thread count) and tract "
              f"against ONNX Runtime at that thread count; NO when above {TOLERANCE:g}. "
              f"Peak RSS is that of each engine's own child process: {ODC_LABEL}, the `odc exec` "
              "process (runtime, generated code, mapped weights, arena, the inputs; the odc "
              f"executable alone: {base_rss['odc']} MB); JIT, the `odc bench` process, compiler "
              "included; ORT and tract, a Python child (python + numpy + onnxruntime alone: "
              f"{base_rss['ort']} MB; python + numpy + tract alone: {base_rss['tract']} MB)."]
    if not TIME:
        lines += ["", "No /usr/bin/time here: peak RSS is os.wait4's ru_maxrss, an upper bound "
                  "that includes the harness's own RSS (Linux keeps the high-water mark across "
                  "fork and exec)."]
    if tract_multi:
        lines += ["", "(1T): tract's Python bindings expose no thread setting and run "
                  "single-threaded (it starts no thread and its CPU time / wall time is ~1.0, "
                  "see below); its single-threaded time is shown in every thread row, and "
                  "odc/tract compares against it."]
    mods = []
    for entry in manifest:
        comp = compiled.get(entry["name"])
        if comp and "error" not in comp:
            sizes = ", ".join(f"{os.path.basename(f)} {file_size(f)}"
                              for f in comp["files"] if os.path.isfile(f))
            mods.append(f"* {entry['name']}: {comp['s']:.2f} s, peak RSS {comp['rss']:.0f} MB; "
                        f"{sizes}")
    if mods:
        lines += ["", "### Compiled modules", "",
                  "`odc compile --emit sharedlib --weights external`: wall time, the compiler's "
                  "peak RSS, and what it wrote:", ""] + mods
    busy = []
    for entry in manifest:
        parts = []
        for t in a.threads:
            for e in ("ort", "tract"):
                samples = results[entry["name"], t, e]["busy"]
                if samples:
                    ratios = [c for c, _ in samples if c is not None]
                    ratio = f" ({np.median(ratios):.2f})" if ratios else ""
                    parts.append(f"t={t} {e} +{max(n for _, n in samples)}{ratio}")
        if parts:
            busy.append(f"* {entry['name']}: " + ", ".join(parts))
    if busy:
        lines += ["", "Threads the ORT / tract child started (+n), and in brackets its CPU time / "
                  "wall time over the timed runs when they lasted at least 0.25 s:", ""] + busy
    details = []
    for entry in manifest:
        for e, label in (("odc", "odc (AOT module)"), ("tract", "tract")):
            per_t = {t: checks[entry["name"], t].get(e) for t in a.threads
                     if (entry["name"], t) in checks}
            shown = []
            for t, per in per_t.items():
                if isinstance(per, str) or per is None:
                    text = per or "not compared"
                else:
                    text = ", ".join(
                        f"`{o}` {d:.1e}" + ("" if d <= TOLERANCE else " **disagrees**")
                        if isinstance(d, float) else f"`{o}` {d} **disagrees**"
                        for o, d in per.items())
                shown.append((t, text))
            if not shown:
                continue
            if len({text for _, text in shown}) == 1:
                details.append(f"* {entry['name']} {label}: {shown[0][1]}")
            else:
                details.append(f"* {entry['name']} {label}: "
                               + "; ".join(f"t={t}: {text}" for t, text in shown))
    if details:
        lines += ["", "### Output agreement", "",
                  "max |x - ORT| / max |ORT| per output (the same at every thread count unless "
                  "listed per thread count):", ""] + details
    if errors:
        lines += ["", "### Errors", ""]
        lines += [f"* {m} / {e}: {msg}" if t is None else f"* {m} / {e} / threads {t}: {msg}"
                  for (m, t, e), msg in errors.items()]
    return "\n".join(lines) + "\n"


def agree_cell(check):
    if "reference" in check:
        return "n/a (no ORT reference)"
    parts, bad, missing = [], False, False
    for e in ("odc", "tract"):
        per = check.get(e)
        if per is None:
            continue
        if isinstance(per, str):  # it failed: the reason is under "Output agreement"
            missing = True
            parts.append(f"{e} FAIL")
            continue
        if not all(isinstance(d, float) for d in per.values()):
            bad = True
            parts.append(f"{e} shape/count mismatch")
            continue
        worst = max(per.values(), default=0.0)
        bad |= not worst <= TOLERANCE  # also NaN
        parts.append(f"{e} {worst:.1e}")
    if not parts:
        return "-"
    verdict = "**NO**" if bad else "incomplete" if missing else "yes"
    return verdict + " (" + ", ".join(parts) + ")"


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated (default: every model in models.json)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    ap.add_argument("--repeat", type=int, default=3, help="times the whole measurement is repeated")
    ap.add_argument("--odc", default=os.path.join(ROOT, "target", "release", "odc"),
                    help="odc binary (default: target/release/odc)")
    ap.add_argument("--models-dir", default=DEFAULT_MODELS,
                    help="make_models.py's output (default: bench/models)")
    ap.add_argument("--out", default=os.path.join(HERE, "results.md"),
                    help="markdown report (default: bench/results.md)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per child process")
    a = ap.parse_args()
    a.threads = [int(t) for t in a.threads.split(",")]
    if min(a.threads + [a.runs, a.repeat]) < 1:
        sys.exit("error: --threads, --runs and --repeat must be at least 1")

    if not (os.path.isfile(a.odc) and os.access(a.odc, os.X_OK)):
        sys.exit(f"error: no odc binary at {a.odc}; build it with `cargo build --release -p odc` "
                 "(or pass --odc PATH)")
    a.odc = os.path.abspath(a.odc)
    manifest_path = os.path.join(a.models_dir, "models.json")
    extra = "" if a.models_dir == DEFAULT_MODELS else " " + shlex.quote(a.models_dir)
    hint = f"run `python bench/make_models.py{extra}` first"
    if not os.path.exists(manifest_path):
        sys.exit(f"error: {manifest_path} not found; {hint}")
    with open(manifest_path) as f:
        known = {m["name"]: m for m in json.load(f)["models"]}
    names = a.models.split(",") if a.models else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"error: unknown model(s) {', '.join(unknown)} (known: {', '.join(known)})")
    manifest = [known[n] for n in names]
    for entry in manifest:
        for f in [entry["file"]] + [i["file"] for i in entry["inputs"]]:
            if not os.path.exists(os.path.join(a.models_dir, f)):
                sys.exit(f"error: {os.path.join(a.models_dir, f)} is missing; {hint}")
    try:
        vers = versions(a.odc)
    except ImportError as e:
        sys.exit(f"error: {e}; run bench/run.py with the python that bench/setup-venv.sh prints")

    command = " ".join(["python", shlex.quote(os.path.relpath(sys.argv[0]))]
                       + [shlex.quote(x) for x in sys.argv[1:]])
    base_rss = {"ort": child_rss([sys.executable, "-c", "import numpy, onnxruntime"], a.timeout),
                "tract": child_rss([sys.executable, "-c", "import numpy, tract"], a.timeout),
                "odc": child_rss([a.odc, "--version"], a.timeout)}
    header = ["# odc vs ONNX Runtime vs tract", "",
              f"* command: `{command}`",
              f"* date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
              f"* CPU: {cpu_model()} (lscpu)",
              f"* versions: {vers}",
              f"* runs {a.runs}, warm-up {a.warmup}, repeats {a.repeat}, threads "
              f"{','.join(map(str, a.threads))}"]

    results = {(m["name"], t, e): {"ms": [], "rss": [], "busy": []}
               for m in manifest for t in a.threads for e in ENGINES}
    errors = {}      # (model, threads or None, engine) -> message; a failure is not retried
    checks = {}      # (model, threads) -> {"odc"|"tract": {output: rel diff} or message}
    compiled = {}    # model -> compile_odc's result, compiled once (first repeat)
    scratch = tempfile.mkdtemp(prefix="odc-bench-")
    try:
        for r in range(a.repeat):
            rot = r % len(ENGINES)
            order = ENGINES[rot:] + ENGINES[:rot]
            for entry in manifest:
                name = entry["name"]
                if name not in compiled:
                    comp = compiled[name] = compile_odc(a, entry, a.models_dir,
                                                        os.path.join(scratch, name))
                    if "error" in comp:
                        errors[name, None, "odc compile"] = comp["error"]
                        print(f"[{r + 1}/{a.repeat}] {name}: {comp['error']}", file=sys.stderr)
                    else:
                        print(f"[{r + 1}/{a.repeat}] {name}: odc compile {comp['s']:.2f} s, "
                              f"peak RSS {comp['rss']:.0f} MB", file=sys.stderr)
                lib = compiled[name].get("lib")
                for t in a.threads:
                    saved = {}
                    for e in order:
                        if (name, t, e) in errors or (e == "odc" and lib is None):
                            continue
                        save = os.path.join(scratch, f"{name}-{t}-{e}") if r == 0 else None
                        if e == "odc":
                            res = measure_aot(a, entry, a.models_dir, lib, t)
                        elif e == "jit":
                            res = measure_jit(a, entry, a.models_dir, t)
                        else:
                            res = measure_py(a, e, entry, a.models_dir, t, save)
                        cell = results[name, t, e]
                        if "error" in res:
                            errors[name, t, e] = res["error"]
                            print(f"[{r + 1}/{a.repeat}] {name} t={t} {e}: {res['error']}",
                                  file=sys.stderr)
                            continue
                        cell["ms"].append(res["ms"])
                        cell["rss"].append(res["rss"])
                        if "busy" in res:
                            cell["busy"].append(res["busy"])
                        if res.get("outputs") is not None:
                            saved[e] = res["outputs"]
                        print(f"[{r + 1}/{a.repeat}] {name} t={t} {e}: {res['ms']:.3f} ms, "
                              f"peak RSS {res['rss']:.0f} MB", file=sys.stderr)
                    if r > 0:
                        continue
                    # Output agreement, on the first repeat only, at every thread count.
                    out_names = entry["outputs"]
                    if "ort" not in saved:
                        checks[name, t] = {"reference": "ONNX Runtime failed"}
                        continue
                    check = {}
                    if lib is None:
                        check["odc"] = "odc compile failed"
                    else:
                        outs, err = aot_outputs(a, entry, a.models_dir, lib, t, out_names,
                                                os.path.join(scratch, name, f"outputs-t{t}"))
                        if err:
                            errors[name, t, "odc exec --output-dir"] = err
                            print(f"[1/{a.repeat}] {name} t={t}: {err}", file=sys.stderr)
                        check["odc"] = err if err else compare(saved["ort"], outs, out_names)
                    if "tract" in saved:  # tract names outputs after nodes: match by position
                        check["tract"] = compare(saved["ort"], saved["tract"], out_names)
                    else:
                        check["tract"] = "tract failed"
                    checks[name, t] = check
        text = report(a, manifest, results, checks, errors, compiled, header, base_rss)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
