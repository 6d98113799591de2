//! Real models against ONNX Runtime: the light_* CNNs of the onnx wheel with random weights
//! (prepared by scripts/real_models.py), and the bundled digits example.
//!
//! Agreement: every element within 1e-4 relative, where the magnitude an element is measured
//! against is floored at 1% of the tensor's largest magnitude (summation-order differences in
//! long dot products leave small logits with no more relative precision than that).

use odc::{npy, CompileOptions, Timings};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn run_model(dir: &Path) -> Vec<(Vec<f32>, Vec<f32>)> {
    let names: Vec<String> =
        std::fs::read_to_string(dir.join("inputs.txt")).unwrap().lines().map(|s| s.to_string()).collect();
    let mut opts = CompileOptions::default();
    let mut inputs = vec![];
    for (k, name) in names.iter().enumerate() {
        let t = npy::read(&dir.join(format!("input_{k}.npy"))).unwrap();
        opts.input_shapes.insert(name.clone(), t.shape.clone());
        inputs.push(t);
    }
    let mut timings = Timings::default();
    let g = odc::import_path(&dir.join("model.onnx"), &opts, &mut timings).unwrap();
    let jit = odc::compile_jit(&g, &opts, &mut timings).unwrap();
    let bufs: Vec<&[u8]> = inputs.iter().map(|t| t.data.as_slice()).collect();
    let outs = jit.run(&bufs).unwrap();
    outs.iter()
        .enumerate()
        .map(|(k, o)| {
            let want = npy::read(&dir.join(format!("expected_{k}.npy"))).unwrap();
            (f32s(o), f32s(&want.data))
        })
        .collect()
}

#[test]
fn light_cnns_match_onnx_runtime() {
    let dir = std::env::var_os("ODC_REAL_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("build/real-models"));
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|_| panic!("{} missing: run scripts/real_models.py (scripts/test.sh does)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    models.sort();
    assert!(models.len() >= 4, "expected the light CNNs in {}", dir.display());
    for m in models {
        for (k, (got, want)) in run_model(&m).into_iter().enumerate() {
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let mut worst = 0f32;
            for (g, w) in got.iter().zip(&want) {
                let tol = 1e-4 * w.abs().max(1e-2 * scale);
                assert!((g - w).abs() <= tol, "{} output {k}: {g} vs {w} (tolerance {tol})", m.display());
                worst = worst.max((g - w).abs() / w.abs().max(1e-2 * scale));
            }
            eprintln!("{}: output {k} worst relative error {worst:.2e}", m.file_name().unwrap().to_string_lossy());
        }
    }
}

#[test]
fn digits_example_predicts_the_labels() {
    let ex = root().join("examples/digits");
    let samples = npy::read(&ex.join("samples.npy")).unwrap();
    let labels: Vec<i64> =
        std::fs::read_to_string(ex.join("labels.txt")).unwrap().split_whitespace().map(|s| s.parse().unwrap()).collect();
    let mut opts = CompileOptions::default();
    opts.input_shapes.insert("pixels".into(), samples.shape.clone());
    let mut t = Timings::default();
    let g = odc::import_path(&ex.join("digits.onnx"), &opts, &mut t).unwrap();
    let jit = odc::compile_jit(&g, &opts, &mut t).unwrap();
    let out = jit.run(&[&samples.data]).unwrap();
    let digits: Vec<i64> = out[0].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(digits, labels);
    let probs = f32s(&out[1]);
    for row in probs.chunks_exact(10) {
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "probabilities sum to {s}");
    }
}
