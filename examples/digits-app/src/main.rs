//! Classifies the eight sample digits with the model odc compiled in `build.rs`.
//!
//! `cargo run --release -p digits-app` prints one prediction per sample and the true labels.

include!(concat!(env!("OUT_DIR"), "/digits.rs"));

/// The float32 payload of a `.npy` file (C order, little endian).
fn npy_f32(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not a .npy file");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

const SAMPLES: &[u8] = include_bytes!("../../digits/samples.npy");
const LABELS: &str = include_str!("../../digits/labels.txt");

/// Predicted digit for each sample, running the model once per image.
fn classify() -> Vec<i64> {
    let pixels = npy_f32(SAMPLES);
    let mut model = digits::Model::new();
    let mut out = digits::Outputs::new();
    pixels
        .chunks_exact(digits::PIXELS_SHAPE[1])
        .map(|image| {
            model.run_into(&digits::Inputs { pixels: image }, &mut out).expect("the model runs");
            out.digit[0]
        })
        .collect()
}

fn main() {
    let predicted = classify();
    let labels: Vec<i64> = LABELS.split_whitespace().map(|s| s.parse().unwrap()).collect();
    println!("predicted: {predicted:?}");
    println!("labels:    {labels:?}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn predicts_the_labels() {
        let labels: Vec<i64> = super::LABELS.split_whitespace().map(|s| s.parse().unwrap()).collect();
        assert_eq!(super::classify(), labels);
    }

    #[test]
    fn describes_itself() {
        let d = super::digits::Model::describe();
        assert_eq!(d.abi_version, odc_runtime::abi::ABI_VERSION);
        assert_eq!((d.num_inputs, d.num_outputs), (1, 2));
    }
}
