//! Every error path feeds bad input and asserts the message: malformed protobuf, missing
//! initializers, bad shapes, unknown shapes, truncated or missing external data, unsupported
//! operators (all listed at once, with node names), and wrong inputs at run time.

use odc::{CompileOptions, Timings};
use odc_conformance::model_builder::*;
use std::path::{Path, PathBuf};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("odc-errors-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_model(dir: &Path, m: &onnx_protobuf::ModelProto) -> PathBuf {
    let p = dir.join("model.onnx");
    std::fs::write(&p, to_bytes(m)).unwrap();
    p
}

fn import(path: &Path, opts: &CompileOptions) -> Result<odc_ir::Graph, String> {
    odc::import_path(path, opts, &mut Timings::default()).map_err(|e| e.to_string())
}

fn add_model() -> onnx_protobuf::ModelProto {
    let g = graph(
        vec![node("Add", "add", &["x", "y"], &["z"])],
        vec![f32_info("x", &[2, 3]), f32_info("y", &[2, 3])],
        vec![f32_info("z", &[2, 3])],
        vec![],
    );
    model(g, 17)
}

#[test]
fn malformed_protobuf_is_reported() {
    let d = tmpdir("malformed");
    let p = d.join("model.onnx");
    std::fs::write(&p, b"\x0a\xff\xff\xff\xff\x0fgarbage").unwrap();
    let e = import(&p, &CompileOptions::default()).unwrap_err();
    assert!(e.starts_with("malformed model: not a valid ONNX protobuf"), "{e}");
}

#[test]
fn model_without_graph_is_reported() {
    let d = tmpdir("nograph");
    let p = d.join("model.onnx");
    std::fs::write(&p, b"").unwrap();
    let e = import(&p, &CompileOptions::default()).unwrap_err();
    assert_eq!(e, "malformed model: the model has no graph");
}

#[test]
fn missing_file_is_reported() {
    let e = import(Path::new("/nonexistent/odc/model.onnx"), &CompileOptions::default()).unwrap_err();
    assert!(e.starts_with("cannot read /nonexistent/odc/model.onnx"), "{e}");
}

#[test]
fn missing_initializer_is_reported() {
    let g = graph(
        vec![node("MatMul", "proj", &["x", "w"], &["y"])],
        vec![f32_info("x", &[2, 3])],
        vec![f32_info("y", &[2, 4])],
        vec![],
    );
    let d = tmpdir("missing-init");
    let e = import(&write_model(&d, &model(g, 17)), &CompileOptions::default()).unwrap_err();
    assert_eq!(e, "invalid model: node 'proj' (MatMul) reads 'w', which no node, input or initializer produces");
}

#[test]
fn shapes_that_do_not_broadcast_are_reported() {
    let g = graph(
        vec![node("Add", "add", &["x", "y"], &["z"])],
        vec![f32_info("x", &[2, 3]), f32_info("y", &[4, 5])],
        vec![f32_info("z", &[2, 3])],
        vec![],
    );
    let d = tmpdir("bad-shapes");
    let e = import(&write_model(&d, &model(g, 17)), &CompileOptions::default()).unwrap_err();
    assert_eq!(e, "invalid model: node 'add' (Add): shapes [[2, 3], [4, 5]] do not broadcast");
}

#[test]
fn matmul_inner_dimension_mismatch_is_reported() {
    let g = graph(
        vec![node("MatMul", "mm", &["x", "w"], &["y"])],
        vec![f32_info("x", &[2, 3])],
        vec![f32_info("y", &[2, 4])],
        vec![f32_tensor("w", &[5, 4], &[0.0; 20])],
    );
    let d = tmpdir("mm-mismatch");
    let e = import(&write_model(&d, &model(g, 17)), &CompileOptions::default()).unwrap_err();
    assert_eq!(e, "invalid model: node 'mm' (MatMul): matmul inner dimensions differ: [2, 3] x [5, 4]");
}

#[test]
fn symbolic_dims_need_shapes() {
    let g = graph(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![value_info("x", 1, &[D::S("batch"), D::N(3)])],
        vec![value_info("y", 1, &[D::S("batch"), D::N(3)])],
        vec![],
    );
    let d = tmpdir("symbolic");
    let p = write_model(&d, &model(g, 17));
    let e = import(&p, &CompileOptions::default()).unwrap_err();
    assert_eq!(
        e,
        "input shapes are not fully known: 'x' has symbolic dimension 'batch'; pass --shape NAME=D1xD2x... for each"
    );
    // With the dimension given it imports.
    let mut o = CompileOptions::default();
    o.dims.insert("batch".into(), 4);
    let g = import(&p, &o).unwrap();
    assert_eq!(g.ty(g.inputs()[0].node).shape, vec![4, 3]);
}

#[test]
fn shape_override_that_breaks_the_model_is_reported() {
    let d = tmpdir("override");
    let p = write_model(&d, &add_model());
    let mut o = CompileOptions::default();
    o.input_shapes.insert("x".into(), vec![7]);
    o.input_shapes.insert("y".into(), vec![5]);
    let e = import(&p, &o).unwrap_err();
    assert_eq!(e, "invalid model: node 'add' (Add): shapes [[7], [5]] do not broadcast");
}

fn external_model(length: usize) -> onnx_protobuf::ModelProto {
    let g = graph(
        vec![node("Add", "add", &["x", "w"], &["y"])],
        vec![f32_info("x", &[4])],
        vec![f32_info("y", &[4])],
        vec![external_f32("w", &[4], "weights.bin", 0, length)],
    );
    model(g, 17)
}

#[test]
fn truncated_external_data_is_reported() {
    let d = tmpdir("truncated");
    std::fs::write(d.join("weights.bin"), [0u8; 10]).unwrap();
    let e = import(&write_model(&d, &external_model(16)), &CompileOptions::default()).unwrap_err();
    assert_eq!(e, "invalid model: tensor 'w': external data file 'weights.bin' is truncated: needs bytes 0..16 but has 10");
}

#[test]
fn missing_external_data_file_is_reported() {
    let d = tmpdir("missing-ext");
    let _ = std::fs::remove_file(d.join("weights.bin"));
    let e = import(&write_model(&d, &external_model(16)), &CompileOptions::default()).unwrap_err();
    assert!(e.starts_with("invalid model: cannot open external data file"), "{e}");
    assert!(e.contains("weights.bin"), "{e}");
}

#[test]
fn external_data_with_wrong_length_is_reported() {
    let d = tmpdir("badlen");
    std::fs::write(d.join("weights.bin"), [0u8; 16]).unwrap();
    let e = import(&write_model(&d, &external_model(12)), &CompileOptions::default()).unwrap_err();
    assert_eq!(e, "invalid model: tensor 'w': external data length 12 does not match 16 bytes for f32 [4]");
}

#[test]
fn external_data_outside_the_model_directory_is_refused() {
    let g = graph(
        vec![node("Add", "add", &["x", "w"], &["y"])],
        vec![f32_info("x", &[4])],
        vec![f32_info("y", &[4])],
        vec![external_f32("w", &[4], "../escape.bin", 0, 16)],
    );
    let d = tmpdir("escape");
    let e = import(&write_model(&d, &model(g, 17)), &CompileOptions::default()).unwrap_err();
    assert_eq!(e, "invalid model: external data location '../escape.bin' must be relative and inside the model directory");
}

#[test]
fn external_data_loads_when_intact() {
    let d = tmpdir("ext-ok");
    let w: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(d.join("weights.bin"), &w).unwrap();
    let p = write_model(&d, &external_model(16));
    let opts = CompileOptions::default();
    let mut t = Timings::default();
    let g = odc::import_path(&p, &opts, &mut t).unwrap();
    let jit = odc::compile_jit(&g, &opts, &mut t).unwrap();
    let x: Vec<u8> = [10.0f32, 20.0, 30.0, 40.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = jit.run(&[&x]).unwrap();
    let y: Vec<f32> = out[0].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(y, vec![11.0, 22.0, 33.0, 44.0]);
}

#[test]
fn every_unsupported_operator_is_listed_with_its_node() {
    let mut nms = node("NonMaxSuppression", "nms", &["x", "x"], &["sel"]);
    attr_int(&mut nms, "center_point_box", 0);
    let g = graph(
        vec![
            node("Relu", "relu", &["x"], &["r"]),
            node("FancyOp", "fancy", &["r"], &["f"]),
            nms,
            node("Add", "after_fancy", &["f", "r"], &["y"]),
        ],
        vec![f32_info("x", &[1, 4, 4])],
        vec![f32_info("y", &[1, 4, 4])],
        vec![],
    );
    let d = tmpdir("unsupported");
    let e = import(&write_model(&d, &model(g, 17)), &CompileOptions::default()).unwrap_err();
    assert_eq!(
        e,
        "the model uses 2 unsupported feature(s):\n  node 'fancy' (FancyOp): operator FancyOp is not supported\n  node 'nms' (NonMaxSuppression): operator NonMaxSuppression is not supported"
    );
}

#[test]
fn unsupported_dtypes_and_attributes_are_listed() {
    let mut cast = node("Cast", "to_string", &["x"], &["s"]);
    attr_int(&mut cast, "to", 8);
    let mut gelu = node("Gelu", "gelu", &["x"], &["g"]);
    let mut a = onnx_protobuf::AttributeProto::new();
    a.name = "approximate".into();
    a.s = b"cubic".to_vec();
    a.type_ = onnx_protobuf::attribute_proto::AttributeType::STRING.into();
    gelu.attribute.push(a);
    let g = graph(
        vec![cast, gelu],
        vec![f32_info("x", &[3]), value_info("names", 8, &[D::N(3)])],
        vec![f32_info("g", &[3])],
        vec![],
    );
    let d = tmpdir("unsupported-dtype");
    let e = import(&write_model(&d, &model(g, 20)), &CompileOptions::default()).unwrap_err();
    assert_eq!(
        e,
        "the model uses 3 unsupported feature(s):\n  node 'names' (input): input type string is not supported\n  node 'to_string' (Cast): Cast to string is not supported\n  node 'gelu' (Gelu): Gelu approximate=cubic"
    );
}

#[test]
fn run_time_shape_operands_are_unsupported_not_guessed() {
    let g = graph(
        vec![node("Reshape", "reshape", &["x", "shape"], &["y"])],
        vec![f32_info("x", &[2, 3]), value_info("shape", 7, &[D::N(2)])],
        vec![f32_info("y", &[3, 2])],
        vec![],
    );
    let d = tmpdir("runtime-shape");
    let e = import(&write_model(&d, &model(g, 17)), &CompileOptions::default()).unwrap_err();
    assert_eq!(
        e,
        "invalid model: node 'reshape' (Reshape): Reshape's shape must be a compile-time constant (it depends on a model input)"
    );
}

fn compile(m: &onnx_protobuf::ModelProto, name: &str) -> odc_backends::JitProgram {
    let d = tmpdir(name);
    let p = write_model(&d, m);
    let opts = CompileOptions::default();
    let mut t = Timings::default();
    let g = odc::import_path(&p, &opts, &mut t).unwrap();
    odc::compile_jit(&g, &opts, &mut t).unwrap()
}

#[test]
fn wrong_input_size_at_run_time_is_an_error() {
    let jit = compile(&add_model(), "run-size");
    let x = vec![0u8; 24];
    let short = vec![0u8; 20];
    let e = jit.run(&[&x, &short]).unwrap_err();
    assert_eq!(e.to_string(), "input 'y' (f32 [2, 3]) needs 24 bytes, got 20");
    let e = jit.run(&[&x]).unwrap_err();
    assert_eq!(e.to_string(), "the module takes 2 inputs, got 1");
}

#[test]
fn out_of_range_gather_index_is_an_error_not_undefined_behaviour() {
    let mut gather = node("Gather", "lookup", &["table", "idx"], &["y"]);
    attr_int(&mut gather, "axis", 0);
    let g = graph(
        vec![gather],
        vec![value_info("idx", 7, &[D::N(3)])],
        vec![f32_info("y", &[3, 2])],
        vec![f32_tensor("table", &[4, 2], &[0., 1., 2., 3., 4., 5., 6., 7.])],
    );
    let jit = compile(&model(g, 17), "gather-oob");
    let ok: Vec<u8> = [3i64, -1, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = jit.run(&[&ok]).unwrap();
    let y: Vec<f32> = out[0].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(y, vec![6., 7., 6., 7., 0., 1.]);
    for bad in [[0i64, 4, 1], [1, 2, -5], [i64::MAX, 0, 0]] {
        let b: Vec<u8> = bad.iter().flat_map(|v| v.to_le_bytes()).collect();
        let e = jit.run(&[&b]).unwrap_err();
        assert_eq!(e.to_string(), "an index input was out of range", "{bad:?}");
    }
}

#[test]
fn integer_division_by_zero_does_not_trap() {
    let g = graph(
        vec![node("Div", "div", &["a", "b"], &["q"]), node("Mod", "mod", &["a", "b"], &["r"])],
        vec![value_info("a", 6, &[D::N(4)]), value_info("b", 6, &[D::N(4)])],
        vec![value_info("q", 6, &[D::N(4)]), value_info("r", 6, &[D::N(4)])],
        vec![],
    );
    let jit = compile(&model(g, 17), "div0");
    let a: Vec<u8> = [7i32, i32::MIN, -7, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    let b: Vec<u8> = [0i32, -1, 2, -4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = jit.run(&[&a, &b]).unwrap();
    let q: Vec<i32> = out[0].chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    let r: Vec<i32> = out[1].chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(q, vec![0, i32::MIN, -3, -2]);
    assert_eq!(r, vec![0, 0, 1, -3]);
}

/// The top-level fields of a protobuf message: (field number, start of the tag, start of the
/// payload, end). Only the wire types ONNX files use (varint, 64-bit, length-delimited, 32-bit).
fn protobuf_fields(b: &[u8]) -> Vec<(u64, usize, usize, usize)> {
    fn varint(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*at];
            *at += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut fields = vec![];
    let mut at = 0;
    while at < b.len() {
        let tag_at = at;
        let tag = varint(b, &mut at);
        let payload = match tag & 7 {
            0 => {
                let p = at;
                varint(b, &mut at);
                p
            }
            1 => {
                at += 8;
                at - 8
            }
            2 => {
                let len = varint(b, &mut at) as usize;
                at += len;
                at - len
            }
            5 => {
                at += 4;
                at - 4
            }
            w => panic!("test model uses wire type {w}"),
        };
        fields.push((tag >> 3, tag_at, payload, at));
    }
    fields
}

#[test]
fn corrupted_models_are_errors_never_panics() {
    // Corruptions that make any model invalid, at every place they can happen: each must be a
    // clean error (a panic fails the test too).
    let mut m = add_model();
    m.graph.as_mut().unwrap().initializer.push(f32_tensor("unused", &[2, 2], &[1.0, 2.0, 3.0, 4.0]));
    let bytes = to_bytes(&m);
    let d = tmpdir("corrupt");
    let p = d.join("model.onnx");
    let expect_error = |b: &[u8], what: String| {
        std::fs::write(&p, b).unwrap();
        match import(&p, &CompileOptions::default()) {
            Ok(_) => panic!("{what}: imported without an error"),
            Err(e) => assert!(e.starts_with("malformed model") || e.starts_with("invalid model"), "{what}: {e}"),
        }
    };
    let top = protobuf_fields(&bytes);
    let &(_, g_tag, g_start, g_end) = top.iter().find(|f| f.0 == 7).expect("the model has a graph field");
    let graph_fields = protobuf_fields(&bytes[g_start..g_end]);
    let mut cases = 0;
    // 1. Cut right before the graph (no graph) or inside it (its length prefix then promises
    //    bytes that are not there).
    for cut in g_tag..g_end {
        expect_error(&bytes[..cut], format!("truncated at byte {cut} of {}", bytes.len()));
        cases += 1;
    }
    // 2. An invalid wire type (7) in place of each tag, top level and inside the graph.
    let tags = top.iter().map(|f| f.1).chain(graph_fields.iter().map(|f| g_start + f.1));
    for tag_at in tags {
        let mut b = bytes.clone();
        b[tag_at] = (b[tag_at] & 0xf8) | 7;
        expect_error(&b, format!("wire type 7 at byte {tag_at}"));
        cases += 1;
    }
    // 3. Each node, input, output or initializer of the graph (fields 1, 11, 12, 5) pointing
    //    past the end: its length prefix raised to more than the rest of the file.
    for &(field, tag_at, payload, _) in graph_fields.iter().filter(|f| [1, 5, 11, 12].contains(&f.0)) {
        let mut b = bytes[..g_start + tag_at + 1].to_vec();
        b.extend_from_slice(&[0xff, 0xff, 0x3f]); // varint 1,048,575
        b.extend_from_slice(&bytes[g_start + payload..]);
        expect_error(&b, format!("graph field {field} at byte {} overlong", g_start + tag_at));
        cases += 1;
    }
    assert!(cases > 100, "only {cases} corruptions");
}

#[test]
fn randomly_corrupted_models_import_or_fail_cleanly_and_imported_ones_run() {
    // Random byte flips and truncations may still leave a valid model (a flipped weight, a renamed
    // node); whatever imports must also compile and run without a panic, and every failure must
    // be one of the frontend's errors.
    let mut m = add_model();
    m.graph.as_mut().unwrap().initializer.push(f32_tensor("unused", &[2, 2], &[1.0, 2.0, 3.0, 4.0]));
    let bytes = to_bytes(&m);
    let d = tmpdir("corrupt-random");
    let p = d.join("model.onnx");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut failed, mut ran) = (0, 0);
    for i in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..1 + i % 4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pos = (seed as usize) % b.len();
            b[pos] = (seed >> 32) as u8;
        }
        if i % 7 == 0 {
            b.truncate((seed as usize) % b.len());
        }
        std::fs::write(&p, &b).unwrap();
        let opts = CompileOptions::default();
        match odc::import_path(&p, &opts, &mut Timings::default()) {
            Err(e) => {
                let e = e.to_string();
                assert!(["malformed model", "invalid model", "the model uses"].iter().any(|k| e.starts_with(k)), "case {i}: {e}");
                failed += 1;
            }
            Ok(g) => {
                let jit = odc::compile_jit(&g, &opts, &mut Timings::default());
                if let Ok(jit) = jit {
                    let inputs: Vec<Vec<u8>> = jit.inputs().iter().map(|t| vec![0u8; t.dtype.byte_len(t.shape.iter().product())]).collect();
                    let refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
                    let _ = jit.run(&refs);
                }
                ran += 1;
            }
        }
    }
    eprintln!("{failed} corruptions failed to import, {ran} imported and ran");
    assert_eq!(failed + ran, 400);
    assert!(failed > 200, "most random corruptions break the model; only {failed} of 400 did");
}
