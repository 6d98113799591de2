//! Checkpoint weights: single files and shards load zero-copy with their dtypes and shapes;
//! truncated files, bad offsets, missing tensors and inconsistent indexes are precise errors.

use odc_frontend::safetensors::CheckpointWeights;
use odc_ir::DType;
use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("odc-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A safetensors file written by hand: header JSON, then `data`.
fn raw_file(path: &Path, header: &str, data: &[u8]) {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn two_tensors(path: &Path) {
    let mut data = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    data.extend(half::bf16::from_f32(0.5).to_le_bytes());
    data.extend(half::bf16::from_f32(-2.0).to_le_bytes());
    raw_file(
        path,
        r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]},"__metadata__":{"format":"pt"}}"#,
        &data,
    );
}

#[test]
fn a_single_file_loads_without_copying() {
    let d = dir("single");
    two_tensors(&d.join("model.safetensors"));
    let w = CheckpointWeights::open(&d).unwrap();
    assert_eq!(w.names().collect::<Vec<_>>(), vec!["b", "w"]);
    let t = w.get("w").unwrap();
    assert_eq!((t.dtype, t.shape.clone()), (DType::F32, vec![2, 3]));
    assert_eq!(t.f32_values().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert!(t.data.is_mapped(), "weights must stay in the mapped file");
    let b = w.get("b").unwrap();
    assert_eq!((b.dtype, b.decoded_f64()), (DType::BF16, vec![0.5, -2.0]));
    let e = w.get_shaped("w", &[3, 2]).unwrap_err().to_string();
    assert_eq!(e, "invalid model: tensor 'w' has shape [2, 3], the config implies [3, 2]");
    let e = w.get("lm_head.weight").unwrap_err().to_string();
    assert_eq!(e, "invalid model: the checkpoint has no tensor 'lm_head.weight'");
}

#[test]
fn shards_load_through_their_index() {
    let d = dir("shards");
    raw_file(&d.join("model-00001-of-00002.safetensors"), r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &f32s(&[7.0]));
    raw_file(&d.join("model-00002-of-00002.safetensors"), r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &f32s(&[8.0, 9.0]));
    let index = r#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#;
    std::fs::write(d.join("model.safetensors.index.json"), index).unwrap();
    let w = CheckpointWeights::open(&d).unwrap();
    assert_eq!(w.get("b").unwrap().f32_values().unwrap(), vec![8.0, 9.0]);
    // An index that puts a tensor in the wrong shard.
    std::fs::write(d.join("model.safetensors.index.json"), index.replace("\"b\":\"model-00002", "\"b\":\"model-00001").replace("\"a\":", "\"c\":\"model-00002-of-00002.safetensors\",\"a\":")).unwrap();
    let e = CheckpointWeights::open(&d).unwrap_err().to_string();
    assert!(e.contains("is listed in") && e.contains("but"), "{e}");
    std::fs::write(d.join("model.safetensors.index.json"), r#"{"weight_map":{"a":"../elsewhere.safetensors"}}"#).unwrap();
    let e = CheckpointWeights::open(&d).unwrap_err().to_string();
    assert!(e.contains("outside the checkpoint directory"), "{e}");
}

#[test]
fn corrupt_files_are_precise_errors() {
    let d = dir("corrupt");
    let p = d.join("model.safetensors");
    two_tensors(&p);
    let good = std::fs::read(&p).unwrap();
    // Every truncation is an error, never a panic or a short tensor.
    for cut in 0..good.len() {
        std::fs::write(&p, &good[..cut]).unwrap();
        let e = CheckpointWeights::open(&d).err().unwrap_or_else(|| panic!("cut at {cut} loaded"));
        assert!(e.to_string().starts_with("malformed model: "), "cut {cut}: {e}");
    }
    let cases = [
        (r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12, "invalid offset"),
        (r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#, 16, "invalid shape, data type, or offset"),
        (r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8, "metadata"),
        (r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]"#, 8, "invalid json in header"),
        (r#"{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, 8, "dtype c64"),
    ];
    for (header, len, want) in cases {
        raw_file(&p, header, &vec![0u8; len]);
        let e = CheckpointWeights::open(&d).err().unwrap_or_else(|| panic!("{header} loaded")).to_string();
        assert!(e.to_lowercase().contains(want), "{header}: {e}");
    }
    std::fs::remove_file(&p).unwrap();
    let e = CheckpointWeights::open(&d).err().unwrap().to_string();
    assert!(e.contains("no model.safetensors or model.safetensors.index.json"), "{e}");
}
