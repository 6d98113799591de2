fn main() {
    // Compile the digits classifier for this crate's target, one image per run.
    odc_build::Model::new("../digits/digits.onnx").prefix("digits").shape("pixels", &[1, 64]).compile().unwrap();
}
