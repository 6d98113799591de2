//! Ahead-of-time modules: ELF objects for x86_64, aarch64 and riscv64 with no undefined symbols;
//! cross builds linked with Debian's cross gcc and run under qemu-user match the host JIT; the C
//! example app; static and shared libraries; the runtime loader and its errors; and the status
//! codes the generated `run` returns for bad arguments.
//!
//! Needs `nm`, `readelf`, `cc`, `aarch64-linux-gnu-gcc`, `riscv64-linux-gnu-gcc` and
//! `qemu-{aarch64,riscv64}-static` (`.ci/run` installs them).

use odc::{AotRequest, CompileOptions, Emit, Timings};
use odc_backends::aot::WeightsPlacement;
use odc_backends::target::TargetSpec;
use odc_runtime::abi::{OdcContext, OdcTensor, ABI_VERSION};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A fresh scratch directory; unique per call, since tests run concurrently.
fn work(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("odc-aot-{}-{k}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tool(cmd: &mut Command) -> std::process::Output {
    let name = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {name}: {e} (see .ci/run for the packages)"));
    assert!(out.status.success(), "{name} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

struct ModelCase {
    path: PathBuf,
    shapes: Vec<(String, Vec<usize>)>,
    /// Raw input files.
    inputs: Vec<Vec<u8>>,
}

fn digits() -> ModelCase {
    let t = odc::npy::read(&root().join("examples/digits/samples.npy")).unwrap();
    ModelCase { path: root().join("examples/digits/digits.onnx"), shapes: vec![("pixels".into(), t.shape.clone())], inputs: vec![t.data] }
}

fn squeezenet() -> ModelCase {
    let dir = std::env::var_os("ODC_REAL_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("build/real-models")).join("squeezenet");
    let name = std::fs::read_to_string(dir.join("inputs.txt")).expect("build/real-models missing: run scripts/test.sh").trim().to_string();
    let t = odc::npy::read(&dir.join("input_0.npy")).unwrap();
    ModelCase { path: dir.join("model.onnx"), shapes: vec![(name, t.shape.clone())], inputs: vec![t.data] }
}

fn options(m: &ModelCase) -> CompileOptions {
    let mut o = CompileOptions::default();
    for (n, s) in &m.shapes {
        o.input_shapes.insert(n.clone(), s.clone());
    }
    o
}

fn compile(m: &ModelCase, target: &str, emit: &[Emit], weights: WeightsPlacement, out: &Path) -> Vec<PathBuf> {
    compile_with(m, target, &[], emit, weights, out)
}

fn compile_with(m: &ModelCase, target: &str, features: &[&str], emit: &[Emit], weights: WeightsPlacement, out: &Path) -> Vec<PathBuf> {
    let req = AotRequest {
        target: TargetSpec { triple: Some(target.into()), cpu: None, features: features.iter().map(|f| f.to_string()).collect() },
        prefix: Some("model".into()),
        emit: emit.to_vec(),
        weights,
        linker: None,
        decoder: None,
        output: out.join("model.o"),
    };
    odc::compile_aot(&m.path, &options(m), &req, &mut Timings::default()).unwrap()
}

/// The host JIT's outputs, as raw bytes.
fn jit_outputs(m: &ModelCase) -> Vec<Vec<u8>> {
    let opts = options(m);
    let mut t = Timings::default();
    let g = odc::import_path(&m.path, &opts, &mut t).unwrap();
    let jit = odc::compile_jit(&g, &opts, &mut t).unwrap();
    let refs: Vec<&[u8]> = m.inputs.iter().map(|v| v.as_slice()).collect();
    jit.run(&refs).unwrap()
}

fn assert_close_f32(got: &[u8], want: &[u8], rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let g: Vec<f32> = got.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let w: Vec<f32> = want.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let scale = w.iter().fold(0f32, |a, v| a.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= rtol * b.abs().max(1e-3 * scale), "{what}[{i}]: {a} vs {b}");
    }
}

const TARGETS: [(&str, &str, &str); 3] = [
    ("x86_64", "Advanced Micro Devices X86-64", "cc"),
    ("aarch64", "AArch64", "aarch64-linux-gnu-gcc"),
    ("riscv64", "RISC-V", "riscv64-linux-gnu-gcc"),
];

#[test]
fn objects_match_their_target_and_have_no_undefined_symbols() {
    for (mname, m) in [("digits", digits()), ("squeezenet", squeezenet())] {
        for (target, machine, _) in TARGETS {
            let d = work(&format!("elf-{mname}-{target}"));
            compile(&m, target, &[Emit::Obj, Emit::Header], WeightsPlacement::Auto, &d);
            let obj = d.join("model.o");
            let h = String::from_utf8(tool(Command::new("readelf").arg("-h").arg(&obj)).stdout).unwrap();
            let line = h.lines().find(|l| l.trim_start().starts_with("Machine:")).unwrap();
            assert!(line.contains(machine), "{mname} for {target}: {line}");
            let undef = String::from_utf8(tool(Command::new("nm").arg("-u").arg(&obj)).stdout).unwrap();
            assert!(undef.trim().is_empty(), "{mname} for {target} has undefined symbols:\n{undef}");
            let defined = String::from_utf8(tool(Command::new("nm").arg("-g").arg("--defined-only").arg(&obj)).stdout).unwrap();
            let mut exported: Vec<&str> = defined.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
            exported.sort();
            assert_eq!(exported, vec!["model_arena_size", "model_describe", "model_run"], "{mname} for {target}");
        }
    }
}

/// Link the generic harness for `target` with the module and run it (under qemu when foreign).
fn run_harness(m: &ModelCase, target: &str, cc: &str, weights: WeightsPlacement) -> Vec<Vec<u8>> {
    run_harness_with(m, target, &[], cc, weights).0
}

/// [`run_harness`] with target features; also returns the work directory (holding model.o).
fn run_harness_with(m: &ModelCase, target: &str, features: &[&str], cc: &str, weights: WeightsPlacement) -> (Vec<Vec<u8>>, PathBuf) {
    let d = work(&format!("run-{target}-{}{}", m.path.file_stem().unwrap().to_string_lossy(), features.join("")));
    compile_with(m, target, features, &[Emit::Obj, Emit::Header], weights, &d);
    let exe = d.join("harness");
    let mut link = Command::new(cc);
    link.args(["-O1", "-DODC_PREFIX=model", "-include"]).arg(d.join("model.h")).arg(root().join("tests/harness/odc_harness.c")).arg(d.join("model.o")).arg("-o").arg(&exe);
    if target != "x86_64" {
        link.arg("-static");
    }
    tool(&mut link);
    let mut args: Vec<PathBuf> = vec![];
    if d.join("model.weights").exists() {
        args.push("-w".into());
        args.push(d.join("model.weights"));
    }
    for (k, bytes) in m.inputs.iter().enumerate() {
        let p = d.join(format!("in{k}.bin"));
        std::fs::write(&p, bytes).unwrap();
        args.push(p);
    }
    let n_out = jit_outputs(m).len();
    let outs: Vec<PathBuf> = (0..n_out).map(|k| d.join(format!("out{k}.bin"))).collect();
    args.extend(outs.iter().cloned());
    let mut run = if target == "x86_64" { Command::new(&exe) } else { Command::new(format!("qemu-{target}-static")) };
    if target != "x86_64" {
        run.arg(&exe);
    }
    let o = tool(run.args(&args));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "status 0");
    (outs.iter().map(|p| std::fs::read(p).unwrap()).collect(), d)
}

fn qlinear_matmul() -> ModelCase {
    let dir = root().join("cli/tests/fixtures");
    let t = odc::npy::read(&dir.join("qlinear_matmul_a.npy")).unwrap();
    ModelCase { path: dir.join("qlinear_matmul.onnx"), shapes: vec![("a".into(), t.shape.clone())], inputs: vec![t.data] }
}

/// The int8 dot-product GEMM of a quantised matrix product: aarch64 with +dotprod,+i8mm folds it
/// into `usdot` (checked in the object's disassembly), and every target's module, run under
/// qemu where foreign, gives exactly the host JIT's bytes.
#[test]
fn int8_gemm_uses_dot_instructions_and_matches_everywhere() {
    let m = qlinear_matmul();
    let want = jit_outputs(&m);
    for (target, features, cc) in
        [("x86_64", &[][..], "cc"), ("aarch64", &["+dotprod", "+i8mm"][..], "aarch64-linux-gnu-gcc"), ("aarch64", &[][..], "aarch64-linux-gnu-gcc"), ("riscv64", &[][..], "riscv64-linux-gnu-gcc")]
    {
        let (got, dir) = run_harness_with(&m, target, features, cc, WeightsPlacement::Auto);
        assert_eq!(got, want, "{target} {features:?}");
        if !features.is_empty() {
            let dis = String::from_utf8(tool(Command::new("aarch64-linux-gnu-objdump").arg("-d").arg(dir.join("model.o"))).stdout).unwrap();
            assert!(dis.contains("usdot"), "no usdot in the aarch64 +i8mm object");
        }
    }
}

#[test]
fn cross_builds_under_qemu_match_the_host_jit() {
    for (mname, m) in [("digits", digits()), ("squeezenet", squeezenet())] {
        let want = jit_outputs(&m);
        for (target, _, cc) in TARGETS {
            let got = run_harness(&m, target, cc, WeightsPlacement::Auto);
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                if mname == "digits" && k == 0 {
                    assert_eq!(g, w, "{mname} on {target}: predicted digits");
                } else {
                    assert_close_f32(g, w, 1e-5, &format!("{mname} on {target} output {k}"));
                }
            }
        }
    }
}

#[test]
fn external_weights_work_through_the_context() {
    let m = digits();
    let want = jit_outputs(&m);
    let got = run_harness(&m, "aarch64", "aarch64-linux-gnu-gcc", WeightsPlacement::External);
    assert_eq!(got[0], want[0]);
    assert_close_f32(&got[1], &want[1], 1e-5, "digits with external weights");
}

#[test]
fn c_example_app_prints_what_odc_run_prints() {
    let m = digits();
    let d = work("c-app");
    let req = AotRequest {
        target: TargetSpec::default(),
        prefix: None,
        emit: vec![Emit::Obj, Emit::StaticLib, Emit::Header],
        weights: WeightsPlacement::Auto,
        linker: None,
        decoder: None,
        output: d.join("digits.o"),
    };
    odc::compile_aot(&m.path, &options(&m), &req, &mut Timings::default()).unwrap();
    let samples = root().join("examples/digits/samples.npy");
    for (exe, link) in [("app_obj", d.join("digits.o")), ("app_lib", d.join("libdigits.a"))] {
        let exe = d.join(exe);
        tool(Command::new("cc").args(["-O2", "-I"]).arg(&d).arg(root().join("examples/c-app/main.c")).arg(&link).arg("-o").arg(&exe));
        let out = String::from_utf8(tool(Command::new(&exe).arg(&samples)).stdout).unwrap();
        assert!(out.starts_with("digit: i64 [8] = [2, 8, 2, 6, 6, 7, 1, 9]\nprobabilities: f32 [8, 10] = [0.000000, 0.000000, 1.000000"), "{out}");
    }
}

fn shared_module(name: &str, weights: WeightsPlacement) -> (PathBuf, ModelCase) {
    let m = digits();
    let d = work(name);
    compile(&m, "x86_64", &[Emit::SharedLib], weights, &d);
    (d.join("libmodel.so"), m)
}

#[test]
fn runtime_loads_and_runs_a_shared_module() {
    let (so, m) = shared_module("so", WeightsPlacement::Embedded);
    let want = jit_outputs(&m);
    let mut module = odc_runtime::Module::load(&so).unwrap();
    let info = module.info().clone();
    assert_eq!(info.name, "model");
    assert_eq!(info.inputs[0].name, "pixels");
    assert_eq!(info.inputs[0].shape, vec![8, 64]);
    assert_eq!(info.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), vec!["digit", "probabilities"]);
    for threads in [1, 2] {
        module.set_threads(threads);
        let mut o0 = vec![0u8; info.outputs[0].byte_len];
        let mut o1 = vec![0u8; info.outputs[1].byte_len];
        module.run(&[&m.inputs[0]], &mut [&mut o0, &mut o1]).unwrap();
        assert_eq!(o0, want[0]);
        assert_close_f32(&o1, &want[1], 1e-6, "shared module");
    }
    let mut short = vec![0u8; 3];
    let e = module.run(&[&m.inputs[0]], &mut [&mut short]).unwrap_err();
    assert_eq!(e.to_string(), "the module takes 2 outputs, got 1");
}

#[test]
fn loader_reports_corrupt_files_wrong_abi_and_missing_weights() {
    let d = work("loader-errors");
    // A corrupt file.
    let bad = d.join("libbroken.so");
    std::fs::write(&bad, b"\x7fELF this is not a library").unwrap();
    let e = odc_runtime::Module::load(&bad).err().unwrap().to_string();
    assert!(e.starts_with(&format!("cannot load module {}:", bad.display())), "{e}");
    // A module claiming another ABI version: patch the descriptor's version field.
    let (so, _) = shared_module("abi", WeightsPlacement::Embedded);
    let mut bytes = std::fs::read(&so).unwrap();
    let magic = odc_runtime::abi::MAGIC.to_le_bytes();
    let pos = bytes.windows(8).position(|w| w[..4] == magic && w[4..] == ABI_VERSION.to_le_bytes()).expect("descriptor");
    bytes[pos + 4..pos + 8].copy_from_slice(&99u32.to_le_bytes());
    let patched = d.join("libmodel.so");
    std::fs::write(&patched, &bytes).unwrap();
    let e = odc_runtime::Module::load(&patched).err().unwrap().to_string();
    assert_eq!(e, format!("{} was compiled for module ABI version 99, this runtime supports version 1; recompile it", patched.display()));
    // Wrong prefix.
    let e = odc_runtime::Module::load_with_prefix(&so, "other").err().unwrap().to_string();
    assert_eq!(e, format!("{} is not an odc module with this prefix: symbol 'other_describe' is missing", so.display()));
    // External weights: missing, truncated, from another model.
    let (so, _) = shared_module("weights", WeightsPlacement::External);
    let w = so.parent().unwrap().join("model.weights");
    let good = std::fs::read(&w).unwrap();
    assert!(odc_runtime::Module::load(&so).is_ok());
    std::fs::remove_file(&w).unwrap();
    let e = odc_runtime::Module::load(&so).err().unwrap().to_string();
    assert!(e.starts_with(&format!("weights file {}: cannot open", w.display())), "{e}");
    std::fs::write(&w, &good[..good.len() - 4]).unwrap();
    let e = odc_runtime::Module::load(&so).err().unwrap().to_string();
    assert_eq!(e, format!("weights file {}: has {} bytes, the module needs {}", w.display(), good.len() - 4, good.len()));
    let mut other = good.clone();
    other[0] ^= 0xff;
    std::fs::write(&w, &other).unwrap();
    let e = odc_runtime::Module::load(&so).err().unwrap().to_string();
    assert_eq!(e, format!("weights file {}: does not belong to this module (fingerprint mismatch)", w.display()));
}

type RunFn = unsafe extern "C" fn(*const OdcContext, *const OdcTensor, u32, *mut OdcTensor, u32, *mut core::ffi::c_void, u64) -> i32;

#[test]
fn generated_run_rejects_bad_arguments_with_status_codes() {
    let (so, m) = shared_module("status", WeightsPlacement::Embedded);
    let lib = unsafe { libloading::Library::new(&so).unwrap() };
    let run: RunFn = unsafe { *lib.get::<RunFn>(b"model_run").unwrap() };
    let arena_size: unsafe extern "C" fn() -> u64 = unsafe { *lib.get(b"model_arena_size").unwrap() };
    let arena_len = unsafe { arena_size() } as usize;
    let mut arena = vec![0u64; arena_len / 8 + 16];
    let base = arena.as_mut_ptr() as *mut u8;
    let aligned = unsafe { base.add(base.align_offset(64)) } as *mut core::ffi::c_void;
    let in_shape = [8i64, 64];
    let (d_shape, p_shape) = ([8i64], [8i64, 10]);
    let mut digit = vec![0i64; 8];
    let mut probs = vec![0f32; 80];
    let input = |dtype: u32, shape: &[i64], size: u64| OdcTensor {
        data: m.inputs[0].as_ptr() as *mut _,
        shape: shape.as_ptr(),
        size_bytes: size,
        rank: shape.len() as u32,
        dtype,
    };
    let mut outs = [
        OdcTensor { data: digit.as_mut_ptr() as *mut _, shape: d_shape.as_ptr(), size_bytes: 64, rank: 1, dtype: 7 },
        OdcTensor { data: probs.as_mut_ptr() as *mut _, shape: p_shape.as_ptr(), size_bytes: 320, rank: 2, dtype: 1 },
    ];
    let call = |ctx: *const OdcContext, ins: &[OdcTensor], outs: &mut [OdcTensor], arena: *mut core::ffi::c_void, len: u64| unsafe {
        run(ctx, ins.as_ptr(), ins.len() as u32, outs.as_mut_ptr(), outs.len() as u32, arena, len)
    };
    let null = std::ptr::null();
    let ok = [input(1, &in_shape, 2048)];
    assert_eq!(call(null, &ok, &mut outs, aligned, arena_len as u64), 0);
    assert_eq!(digit, vec![2, 8, 2, 6, 6, 7, 1, 9]);
    assert_eq!(call(null, &[input(11, &in_shape, 2048)], &mut outs, aligned, arena_len as u64), 4, "wrong dtype");
    assert_eq!(call(null, &[input(1, &[8, 63], 2048)], &mut outs, aligned, arena_len as u64), 5, "wrong shape");
    assert_eq!(call(null, &[input(1, &[8, 64, 1], 2048)], &mut outs, aligned, arena_len as u64), 5, "wrong rank");
    assert_eq!(call(null, &[input(1, &in_shape, 2044)], &mut outs, aligned, arena_len as u64), 6, "short buffer");
    let mut nulldata = [input(1, &in_shape, 2048)];
    nulldata[0].data = std::ptr::null_mut();
    assert_eq!(call(null, &nulldata, &mut outs, aligned, arena_len as u64), 2, "null data");
    assert_eq!(call(null, &[], &mut outs, aligned, arena_len as u64), 3, "missing input");
    if arena_len > 0 {
        assert_eq!(call(null, &ok, &mut outs, aligned, arena_len as u64 - 1), 7, "short arena");
        let misaligned = unsafe { (aligned as *mut u8).add(8) } as *mut core::ffi::c_void;
        assert_eq!(call(null, &ok, &mut outs, misaligned, arena_len as u64), 7, "misaligned arena");
        assert_eq!(call(null, &ok, &mut outs, std::ptr::null_mut(), arena_len as u64), 2, "null arena");
    }
    let ctx = OdcContext { abi_version: 7, num_threads: 1, weights: std::ptr::null(), parallel_for: None, parallel_user: std::ptr::null_mut() };
    assert_eq!(call(&ctx, &ok, &mut outs, aligned, arena_len as u64), 8, "wrong ABI version");
    // External weights without weights in the context.
    let (so2, _) = shared_module("status-ext", WeightsPlacement::External);
    let lib2 = unsafe { libloading::Library::new(&so2).unwrap() };
    let run2: RunFn = unsafe { *lib2.get::<RunFn>(b"model_run").unwrap() };
    let st = unsafe { run2(null, ok.as_ptr(), 1, outs.as_mut_ptr(), 2, aligned, arena_len as u64) };
    assert_eq!(st, 9, "missing external weights");
}

#[test]
fn unknown_targets_cpus_and_features_are_reported() {
    let m = digits();
    let d = work("bad-target");
    let try_target = |t: TargetSpec| {
        let req = AotRequest { target: t, prefix: None, emit: vec![Emit::Obj], weights: WeightsPlacement::Auto, linker: None, decoder: None, output: d.join("x.o") };
        odc::compile_aot(&m.path, &options(&m), &req, &mut Timings::default()).unwrap_err().to_string()
    };
    let e = try_target(TargetSpec { triple: Some("mips-unknown-linux-gnu".into()), ..Default::default() });
    assert_eq!(e, "target 'mips-unknown-linux-gnu' is not supported; supported: x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, riscv64gc-unknown-linux-gnu (or x86_64, aarch64, riscv64)");
    let e = try_target(TargetSpec { triple: Some("not-a-triple".into()), ..Default::default() });
    assert!(e.starts_with("unknown target 'not-a-triple'"), "{e}");
    let e = try_target(TargetSpec { triple: Some("aarch64".into()), cpu: Some("cortex-z9".into()), features: vec![] });
    assert_eq!(e, "unknown CPU 'cortex-z9' for aarch64-unknown-linux-gnu; use generic or native");
    let e = try_target(TargetSpec { triple: Some("aarch64".into()), cpu: None, features: vec!["+warp-drive".into()] });
    assert!(e.starts_with("unknown feature '+warp-drive' for aarch64-unknown-linux-gnu; available: "), "{e}");
    assert!(e.contains("+dotprod"), "{e}");
    let ok = TargetSpec { triple: Some("x86_64".into()), cpu: Some("x86-64-v3".into()), features: vec!["+avx2".into()] };
    let req = AotRequest { target: ok, prefix: None, emit: vec![Emit::Obj], weights: WeightsPlacement::Auto, linker: None, decoder: None, output: d.join("ok.o") };
    odc::compile_aot(&m.path, &options(&m), &req, &mut Timings::default()).unwrap();
}
