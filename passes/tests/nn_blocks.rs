//! The NN building blocks (`odc_passes::nn`), each built on the graph builder, compiled through
//! the JIT and compared with a direct f64 implementation of its textbook definition, plus the
//! errors they give for operands that do not fit.

use odc_backends::{lower, FusionPlan, JitEvaluator, JitProgram, LowerOptions, OptLevel};
use odc_ir::{DType, NodeId, TensorType};
use odc_passes::nn::{AttentionOptions, AutoPad, CausalOffset, ConvGeometry, FullyMaskedRows, RopeOptions};
use odc_passes::Builder;
use rand::{Rng, SeedableRng};

/// Build a graph with f32 inputs of `shapes`, let `f` add the block, run it on `values`.
fn run_block(shapes: &[Vec<usize>], values: &[Vec<f32>], f: impl FnOnce(&mut Builder, &[NodeId]) -> NodeId) -> (Vec<usize>, Vec<f32>) {
    let mut b = Builder::new(&JitEvaluator);
    let inputs: Vec<NodeId> = shapes.iter().enumerate().map(|(i, s)| b.g.add_input(&format!("x{i}"), TensorType::new(DType::F32, s.clone()))).collect();
    let y = f(&mut b, &inputs);
    let y = if b.dtype(y) == DType::F32 { y } else { b.cast(y, DType::F32).unwrap() };
    let shape = b.shape(y);
    let mut g = b.finish();
    g.set_output("y", y);
    let prog = lower(&g, &FusionPlan::none(&g), &LowerOptions::default()).unwrap();
    let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
    let bytes: Vec<Vec<u8>> = values.iter().map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|v| v.as_slice()).collect();
    let out = jit.run(&refs).unwrap();
    (shape, out[0].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { (g as f64 - w).abs() <= tol * w.abs().max(1.0) };
        assert!(ok, "{what}: element {i} is {g}, expected {w}");
    }
}

/// Reference attention: q [B,H,S,D], k/v [B,KV,T,D], head h reads kv head h / (H/KV).
fn attention_ref(q: &[f32], k: &[f32], v: &[f32], dims: (usize, usize, usize, usize, usize, usize), scale: f64, bias: impl Fn(usize, usize) -> f64, zero_masked: bool) -> Vec<f64> {
    let (b, h, kvh, s, t, d) = dims;
    let mut out = vec![0.0; b * h * s * d];
    for bi in 0..b {
        for hi in 0..h {
            let kv = hi / (h / kvh);
            for i in 0..s {
                let qrow = &q[((bi * h + hi) * s + i) * d..][..d];
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        let krow = &k[((bi * kvh + kv) * t + j) * d..][..d];
                        qrow.iter().zip(krow).map(|(&a, &c)| a as f64 * c as f64).sum::<f64>() * scale + bias(i, j)
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let o = &mut out[((bi * h + hi) * s + i) * d..][..d];
                if m == f64::NEG_INFINITY {
                    o.iter_mut().for_each(|x| *x = if zero_masked { 0.0 } else { f64::NAN });
                    continue;
                }
                let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    let vrow = &v[((bi * kvh + kv) * t + j) * d..][..d];
                    for (x, &vv) in o.iter_mut().zip(vrow) {
                        *x += ej / sum * vv as f64;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn grouped_query_attention_with_a_causal_mask_after_past_keys() {
    // 4 query heads over 2 key/value heads, 3 queries after 2 cached keys (5 keys in all).
    let (b, h, kvh, s, t, d) = (2, 4, 2, 3, 5, 8);
    let shapes = vec![vec![b, h, s, d], vec![b, kvh, t, d], vec![b, kvh, t, d]];
    let vals: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, sh)| random(sh.iter().product(), i as u64)).collect();
    let (shape, got) = run_block(&shapes, &vals, |bd, x| {
        let allowed = bd.causal_allowed(s, t, CausalOffset::Fixed(t - s)).unwrap();
        let bias = bd.bias_from_mask(allowed, DType::F32).unwrap();
        bd.attention(x[0], x[1], x[2], &AttentionOptions::for_head_dim(d).with_bias(bias)).unwrap().output
    });
    assert_eq!(shape, vec![b, h, s, d]);
    let causal = |i: usize, j: usize| if j <= i + (t - s) { 0.0 } else { f64::NEG_INFINITY };
    let want = attention_ref(&vals[0], &vals[1], &vals[2], (b, h, kvh, s, t, d), 1.0 / (d as f64).sqrt(), causal, false);
    assert_close(&got, &want, 1e-5, "GQA attention");
}

#[test]
fn fully_masked_rows_give_zeros_or_nan_as_asked() {
    let (b, h, s, t, d) = (1, 2, 2, 3, 4);
    let shapes = vec![vec![b, h, s, d], vec![b, h, t, d], vec![b, h, t, d]];
    let vals: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, sh)| random(sh.iter().product(), 10 + i as u64)).collect();
    // Row 0 sees no key at all, row 1 sees keys 0 and 1.
    let mask = |i: usize, j: usize| if i == 1 && j < 2 { 0.0 } else { f64::NEG_INFINITY };
    for rows in [FullyMaskedRows::Zero, FullyMaskedRows::Propagate] {
        let (_, got) = run_block(&shapes, &vals, |bd, x| {
            let i = bd.iota(DType::I64, &[s, t], 0).unwrap();
            let j = bd.iota(DType::I64, &[s, t], 1).unwrap();
            let one = bd.scalar(DType::I64, 1.0).unwrap();
            let two = bd.scalar(DType::I64, 2.0).unwrap();
            let row1 = bd.binary(odc_ir::BinaryOp::Eq, i, one).unwrap();
            let early = bd.binary(odc_ir::BinaryOp::Lt, j, two).unwrap();
            let allowed = bd.binary(odc_ir::BinaryOp::And, row1, early).unwrap();
            let bias = bd.bias_from_mask(allowed, DType::F32).unwrap();
            let o = AttentionOptions { fully_masked_rows: rows, ..AttentionOptions::for_head_dim(d).with_bias(bias) };
            bd.attention(x[0], x[1], x[2], &o).unwrap().output
        });
        let want = attention_ref(&vals[0], &vals[1], &vals[2], (b, h, h, s, t, d), 0.5, mask, rows == FullyMaskedRows::Zero);
        assert_close(&got, &want, 1e-5, &format!("{rows:?}"));
    }
}

#[test]
fn attention_reports_operands_that_do_not_fit() {
    let mut b = Builder::new(&JitEvaluator);
    let q = b.g.add_input("q", TensorType::new(DType::F32, vec![1, 3, 2, 4]));
    let k = b.g.add_input("k", TensorType::new(DType::F32, vec![1, 2, 2, 4]));
    let e = b.attention(q, k, k, &AttentionOptions::for_head_dim(4)).err().unwrap();
    assert!(e.0.contains("3 query heads are not a multiple of 2 key/value heads"), "{}", e.0);
    let x = b.g.add_input("x", TensorType::new(DType::F32, vec![1, 2, 10]));
    let e = b.split_heads(x, 3).err().unwrap();
    assert!(e.0.contains("into 3 heads"), "{}", e.0);
    let k5 = b.g.add_input("k5", TensorType::new(DType::F32, vec![1, 3, 2, 5]));
    assert!(b.attention(q, k5, k5, &AttentionOptions::for_head_dim(4)).is_err());
}

#[test]
fn split_and_merge_heads_are_inverse() {
    let shape = vec![2, 3, 12];
    let vals = vec![random(72, 3)];
    let (s, got) = run_block(&[shape.clone()], &vals, |bd, x| {
        let h = bd.split_heads(x[0], 4).unwrap();
        assert_eq!(bd.shape(h), vec![2, 4, 3, 3]);
        bd.merge_heads(h).unwrap()
    });
    assert_eq!(s, shape);
    assert_eq!(got, vals[0]);
}

fn rope_ref(x: &[f32], rows: usize, head: usize, rot: usize, interleaved: bool, angle: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for r in 0..rows {
        for p in 0..rot / 2 {
            let (a, b) = if interleaved { (2 * p, 2 * p + 1) } else { (p, p + rot / 2) };
            let (xa, xb) = (x[r * head + a] as f64, x[r * head + b] as f64);
            let (c, s) = (angle(r, p).cos(), angle(r, p).sin());
            out[r * head + a] = xa * c - xb * s;
            out[r * head + b] = xa * s + xb * c;
        }
    }
    out
}

#[test]
fn rotary_embedding_rotate_half_interleaved_and_partial() {
    // x: [B=1, H=2, S=5, D=8]; tables [S, rot/2] broadcast over the heads.
    let (h, s, d) = (2, 5, 8);
    let vals = vec![random(h * s * d, 4)];
    let inv_freq = |rot: usize| -> Vec<f64> { (0..rot / 2).map(|j| 1.0 / 10000f64.powf(2.0 * j as f64 / rot as f64)).collect() };
    for (interleaved, rot) in [(false, 8), (true, 8), (false, 4), (true, 6)] {
        let freqs = inv_freq(rot);
        let (shape, got) = run_block(&[vec![1, h, s, d]], &vals, |bd, x| {
            let (cos, sin) = bd.rope_tables(s, &freqs);
            let o = RopeOptions { interleaved, rotary_dim: Some(rot) };
            bd.rotary_embedding(x[0], cos, sin, &o).unwrap()
        });
        assert_eq!(shape, vec![1, h, s, d]);
        let want = rope_ref(&vals[0], h * s, d, rot, interleaved, |r, p| (((r % s) as f32) * freqs[p] as f32) as f64);
        assert_close(&got, &want, 1e-5, &format!("rope interleaved={interleaved} rot={rot}"));
    }
    let mut b = Builder::new(&JitEvaluator);
    let x = b.g.add_input("x", TensorType::new(DType::F32, vec![1, 2, 5, 8]));
    let (cos, sin) = b.rope_tables(5, &inv_freq(8));
    let e = b.rotary_embedding(x, cos, sin, &RopeOptions { interleaved: false, rotary_dim: Some(7) }).err().unwrap();
    assert!(e.0.contains("must be even"), "{}", e.0);
    let e = b.rotary_embedding(x, cos, sin, &RopeOptions { interleaved: false, rotary_dim: Some(6) }).err().unwrap();
    assert!(e.0.contains("rotary_dim / 2 = 3"), "{}", e.0);
}

#[test]
fn norms_match_their_definitions() {
    let (n, c, sp) = (2, 4, 6);
    let x = random(n * c * sp, 5);
    let scale: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.25).collect();
    let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.1 - 0.2).collect();
    let eps = 1e-5;
    let stats = |vals: &[f64]| {
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let v = vals.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / vals.len() as f64;
        (m, v)
    };
    let shapes = vec![vec![n, c, sp], vec![c], vec![c]];
    let vals = vec![x.clone(), scale.clone(), bias.clone()];
    let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();

    // Group norm, 2 groups of 2 channels, then the channel affine map.
    let (_, got) = run_block(&shapes, &vals, |b, i| {
        let y = b.group_norm(i[0], 2, eps).unwrap();
        b.channel_affine(y, i[1], i[2]).unwrap()
    });
    let mut want = vec![0.0; x.len()];
    for ni in 0..n {
        for g in 0..2 {
            let base = (ni * c + g * 2) * sp;
            let (m, v) = stats(&xf[base..base + 2 * sp]);
            for k in 0..2 * sp {
                let ch = g * 2 + k / sp;
                want[base + k] = (xf[base + k] - m) / (v + eps).sqrt() * scale[ch] as f64 + bias[ch] as f64;
            }
        }
    }
    assert_close(&got, &want, 1e-5, "group_norm");

    // Instance norm: per (sample, channel).
    let (_, got) = run_block(&shapes, &vals, |b, i| b.instance_norm(i[0], i[1], i[2], eps).unwrap());
    for row in 0..n * c {
        let (m, v) = stats(&xf[row * sp..][..sp]);
        for k in 0..sp {
            want[row * sp + k] = (xf[row * sp + k] - m) / (v + eps).sqrt() * scale[row % c] as f64 + bias[row % c] as f64;
        }
    }
    assert_close(&got, &want, 1e-5, "instance_norm");

    // Layer norm and RMS norm over the last axis, with and without statistics.
    let (_, got_ln) = run_block(&[vec![n * c, sp]], &[x.clone()], |b, i| b.layer_norm(i[0], None, None, 1, eps).unwrap());
    let (_, got_stats) = run_block(&[vec![n * c, sp]], &[x.clone()], |b, i| b.normalize_with_stats(i[0], &[1], eps).unwrap().0);
    let (_, got_rms) = run_block(&[vec![n * c, sp]], &[x.clone()], |b, i| b.rms_norm(i[0], None, &[1], eps).unwrap());
    let (mut ln, mut rms) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    for row in 0..n * c {
        let r = &xf[row * sp..][..sp];
        let (m, v) = stats(r);
        let ms = r.iter().map(|a| a * a).sum::<f64>() / sp as f64;
        for k in 0..sp {
            ln[row * sp + k] = (r[k] - m) / (v + eps).sqrt();
            rms[row * sp + k] = r[k] / (ms + eps).sqrt();
        }
    }
    assert_close(&got_ln, &ln, 1e-5, "layer_norm");
    assert_close(&got_stats, &ln, 1e-5, "normalize_with_stats");
    assert_close(&got_rms, &rms, 1e-5, "rms_norm");

    // Batch norm with given per-channel statistics.
    let mean: Vec<f32> = (0..c).map(|i| i as f32 * 0.3).collect();
    let var: Vec<f32> = (0..c).map(|i| 1.0 + i as f32).collect();
    let shapes5 = vec![vec![n, c, sp], vec![c], vec![c], vec![c], vec![c]];
    let vals5 = vec![x.clone(), scale.clone(), bias.clone(), mean.clone(), var.clone()];
    let (_, got) = run_block(&shapes5, &vals5, |b, i| {
        let (m, v) = (b.per_channel(i[3], 3).unwrap(), b.per_channel(i[4], 3).unwrap());
        b.batch_norm(i[0], i[1], i[2], m, v, eps).unwrap()
    });
    for (k, w) in want.iter_mut().enumerate() {
        let ch = (k / sp) % c;
        *w = (xf[k] - mean[ch] as f64) / (var[ch] as f64 + eps).sqrt() * scale[ch] as f64 + bias[ch] as f64;
    }
    assert_close(&got, &want, 1e-5, "batch_norm");

    let mut b = Builder::new(&JitEvaluator);
    let x = b.g.add_input("x", TensorType::new(DType::F32, vec![1, 6, 2]));
    assert!(b.group_norm(x, 4, eps).err().unwrap().0.contains("4 groups do not divide"));
}

#[test]
fn activations_match_their_definitions_over_a_wide_range() {
    // Includes large magnitudes: softplus and mish must not overflow, sigmoid must saturate.
    let xs: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.25).chain([-90.0, 90.0, 0.0]).collect();
    let n = xs.len();
    let erf = |x: f64| -> f64 {
        if x.abs() > 3.0 {
            // erfc by its continued fraction, evaluated backwards.
            let a = x.abs();
            let mut f = a;
            for n in (1..=80).rev() {
                f = a + (n as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / (std::f64::consts::PI.sqrt() * f);
            return x.signum() * (1.0 - erfc);
        }
        // The Maclaurin series, accurate to ~1e-12 for |x| <= 3.
        let (mut sum, mut term) = (0.0, x);
        for k in 0..200 {
            sum += term / (2 * k + 1) as f64;
            term *= -x * x / (k + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    };
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    type Case<'a> = (&'a str, Box<dyn Fn(&mut Builder, NodeId) -> NodeId>, Box<dyn Fn(f64) -> f64>);
    let cases: Vec<Case> = vec![
        ("relu", Box::new(|b, x| b.relu(x).unwrap()), Box::new(|x| x.max(0.0))),
        ("sigmoid", Box::new(|b, x| b.sigmoid(x).unwrap()), Box::new(sigmoid)),
        ("leaky_relu", Box::new(|b, x| b.leaky_relu(x, 0.1).unwrap()), Box::new(|x| if x >= 0.0 { x } else { 0.1 * x })),
        ("elu", Box::new(|b, x| b.elu(x, 2.0, 1.0, false).unwrap()), Box::new(|x| if x > 0.0 { x } else { 2.0 * x.exp_m1() })),
        ("celu", Box::new(|b, x| b.elu(x, 2.0, 1.0, true).unwrap()), Box::new(|x| if x > 0.0 { x } else { 2.0 * (x / 2.0).exp_m1() })),
        ("selu", Box::new(|b, x| b.elu(x, 1.5, 1.1, false).unwrap()), Box::new(|x| 1.1 * if x > 0.0 { x } else { 1.5 * x.exp_m1() })),
        ("hard_sigmoid", Box::new(|b, x| b.hard_sigmoid(x, 0.2, 0.5).unwrap()), Box::new(|x| (0.2 * x + 0.5).clamp(0.0, 1.0))),
        ("hard_swish", Box::new(|b, x| b.hard_swish(x).unwrap()), Box::new(|x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0))),
        ("softplus", Box::new(|b, x| b.softplus(x).unwrap()), Box::new(softplus)),
        ("softsign", Box::new(|b, x| b.softsign(x).unwrap()), Box::new(|x| x / (1.0 + x.abs()))),
        ("mish", Box::new(|b, x| b.mish(x).unwrap()), Box::new(move |x| x * softplus(x).tanh())),
        ("gelu", Box::new(|b, x| b.gelu(x, false).unwrap()), Box::new(move |x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt())))),
        ("gelu_tanh", Box::new(|b, x| b.gelu(x, true).unwrap()), Box::new(|x| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()))),
        ("swish", Box::new(|b, x| b.swish(x, 1.5).unwrap()), Box::new(move |x| x * sigmoid(1.5 * x))),
        ("thresholded_relu", Box::new(|b, x| b.thresholded_relu(x, 1.0).unwrap()), Box::new(|x| if x > 1.0 { x } else { 0.0 })),
        ("shrink", Box::new(|b, x| b.shrink(x, 0.5, 0.25).unwrap()), Box::new(|x| if x < -0.5 { x + 0.25 } else if x > 0.5 { x - 0.25 } else { 0.0 })),
    ];
    for (name, build, reference) in cases {
        let (_, got) = run_block(&[vec![n]], &[xs.clone()], |b, i| build(b, i[0]));
        let want: Vec<f64> = xs.iter().map(|&x| reference(x as f64)).collect();
        assert_close(&got, &want, 2e-6, name);
    }
    // softmax over the last axis, with a huge logit that would overflow a naive exp.
    let logits = vec![1.0f32, 2.0, 3.0, 500.0, -1.0, 0.0];
    let (_, got) = run_block(&[vec![2, 3]], &[logits.clone()], |b, i| b.softmax(i[0], &[1]).unwrap());
    let mut want = vec![];
    for row in logits.chunks(3) {
        let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        want.extend(row.iter().map(|&v| (v as f64 - m).exp() / s));
    }
    assert_close(&got, &want, 1e-6, "softmax");
    let (_, got) = run_block(&[vec![4], vec![4]], &[vec![-3.0, -0.5, 0.5, 3.0], vec![1.0, 2.0, -1.0, 0.5]], |b, i| b.swiglu(i[0], i[1], 1.0).unwrap());
    let want: Vec<f64> = [(-3.0, 1.0), (-0.5, 2.0), (0.5, -1.0), (3.0, 0.5)].iter().map(|&(g, u): &(f64, f64)| g * sigmoid(g) * u).collect();
    assert_close(&got, &want, 1e-6, "swiglu");
}

#[test]
fn auto_pad_resolves_like_the_onnx_definition() {
    let mut g = ConvGeometry::new(vec![3, 4]);
    g.strides = vec![2, 1];
    g.auto_pad = AutoPad::SameUpper;
    g.resolve_auto_pad(&[7, 6]);
    // Axis 0: out 4, needs (4-1)*2+3-7 = 2 → 1/1. Axis 1: out 6, needs 5+4-6 = 3 → 1 before, 2 after.
    assert_eq!((g.pads_begin.clone(), g.pads_end.clone()), (vec![1, 1], vec![1, 2]));
    g.auto_pad = AutoPad::SameLower;
    g.resolve_auto_pad(&[7, 6]);
    assert_eq!((g.pads_begin.clone(), g.pads_end.clone()), (vec![1, 2], vec![1, 1]));
    g.auto_pad = AutoPad::Valid;
    g.resolve_auto_pad(&[7, 6]);
    assert_eq!((g.pads_begin.clone(), g.pads_end.clone()), (vec![0, 0], vec![0, 0]));
    assert_eq!(AutoPad::parse("SAME_LOWER").unwrap(), AutoPad::SameLower);
    assert!(AutoPad::parse("SAME").err().unwrap().0.contains("unknown auto_pad 'SAME'"));
}

#[test]
fn same_padded_strided_convolution_matches_a_direct_loop() {
    // x [1, 2, 5, 5], w [3, 2, 3, 3], stride 2, SAME_UPPER, channel bias.
    let (c, m, hw, k) = (2, 3, 5, 3);
    let x = random(c * hw * hw, 6);
    let w = random(m * c * k * k, 7);
    let bias = vec![0.5f32, -0.25, 1.0];
    let (shape, got) = run_block(&[vec![1, c, hw, hw], vec![m, c, k, k], vec![m]], &[x.clone(), w.clone(), bias.clone()], |b, i| {
        let mut geom = ConvGeometry::new(vec![k, k]);
        geom.strides = vec![2, 2];
        geom.auto_pad = AutoPad::SameUpper;
        let y = b.conv(i[0], i[1], &geom, 1).unwrap();
        b.channel_bias(y, Some(i[2])).unwrap()
    });
    assert_eq!(shape, vec![1, m, 3, 3]);
    // SAME_UPPER on 5 with stride 2, kernel 3: out 3, total pad 2 → 1 before, 1 after.
    let mut want = vec![];
    for mo in 0..m {
        for oy in 0..3 {
            for ox in 0..3 {
                let mut acc = bias[mo] as f64;
                for ci in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = ((oy * 2 + ky) as i64 - 1, (ox * 2 + kx) as i64 - 1);
                            if iy < 0 || ix < 0 || iy >= hw as i64 || ix >= hw as i64 {
                                continue;
                            }
                            acc += x[(ci * hw + iy as usize) * hw + ix as usize] as f64 * w[((mo * c + ci) * k + ky) * k + kx] as f64;
                        }
                    }
                }
                want.push(acc);
            }
        }
    }
    assert_close(&got, &want, 1e-5, "conv SAME_UPPER stride 2");
}
