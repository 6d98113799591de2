//! Property tests: generated kernels against plain reference implementations on random shapes,
//! including views composed through each other (transpose ∘ slice ∘ reshape ∘ pad).

use odc_backends::{lower, JitProgram, OptLevel};
use odc_ir::{BinaryOp, Conv, DType, Graph, NodeId, Op, PadMode, ReduceOp, Scalar, Tensor, TensorType};
use proptest::prelude::*;

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = i % shape[a];
        i /= shape[a];
    }
    idx
}

fn run(g: &Graph, inputs: &[Vec<f32>]) -> Vec<f32> {
    run_with(g, inputs, false)
}

fn run_with(g: &Graph, inputs: &[Vec<f32>], fuse: bool) -> Vec<f32> {
    g.verify().unwrap();
    let plan = if fuse { odc_passes::fusion::greedy(g) } else { odc_backends::FusionPlan::none(g) };
    let prog = lower(g, &plan, &odc_backends::LowerOptions::default()).unwrap();
    let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
    let bytes: Vec<Vec<u8>> = inputs.iter().map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let out = jit.run(&refs).unwrap().remove(0);
    out.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    g.add_input(name, TensorType::new(DType::F32, shape.to_vec()))
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn close(got: &[f32], want: &[f32], tol: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!((g - w).abs() <= tol * (1.0 + w.abs()), "[{}]: {} vs {}", i, g, w);
    }
    Ok(())
}

/// A 2-D convolution of the zero-padded `x` (`[batch, c, h, w]`, `pad` on each side) with `w`
/// (`[m, c / groups, kh, kw]`), accumulated in f64: `[batch, m, oh, ow]`.
#[allow(clippy::too_many_arguments)]
fn conv2d_reference(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], groups: usize, stride: usize, dil: usize, pad: i64, (oh, ow): (usize, usize)) -> Vec<f64> {
    let ([batch, c, h, wd], [m, cpg, kh, kw]) = (xs, ws);
    let mpg = m / groups;
    let mut out = vec![0f64; batch * m * oh * ow];
    for b in 0..batch { for mo in 0..m { let gi = mo / mpg; for oy in 0..oh { for ox in 0..ow {
        let mut acc = 0f64;
        for ci in 0..cpg { for ky in 0..kh { for kx in 0..kw {
            let iy = (oy * stride + ky * dil) as i64 - pad;
            let ix = (ox * stride + kx * dil) as i64 - pad;
            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                let chan = gi * cpg + ci;
                acc += x[((b * c + chan) * h + iy as usize) * wd + ix as usize] as f64 * w[((mo * cpg + ci) * kh + ky) * kw + kx] as f64;
            }
        }}}
        out[((b * m + mo) * oh + oy) * ow + ox] = acc;
    }}}}
    out
}

/// `max(y + bias[channel], 0)` for an NCHW `y`: the epilogue the GEMM and Winograd tests fuse.
fn bias_relu(g: &mut Graph, y: NodeId, bias: &[f32]) -> NodeId {
    let shape = g.ty(y).shape.clone();
    let bv = g.constant(Tensor::from_f32(vec![bias.len(), 1, 1], bias), "bias");
    let s = g.add(Op::Binary(BinaryOp::Add), &[y, bv], "add").unwrap();
    let z = g.constant(Tensor::from_f32(vec![], &[0.0]), "zero");
    let zx = g.add(Op::Expand { shape }, &[z], "zx").unwrap();
    g.add(Op::Binary(BinaryOp::Max), &[s, zx], "relu").unwrap()
}

/// A shape and a broadcast-compatible partner.
fn bcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..5, 1..4).prop_flat_map(|a| {
        let r = a.len();
        (Just(a.clone()), prop::collection::vec(any::<bool>(), r), 0..=r).prop_map(|(a, ones, drop)| {
            let b: Vec<usize> = a.iter().zip(&ones).map(|(&d, &o)| if o { 1 } else { d }).collect();
            (a, b[drop..].to_vec())
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn broadcast_binary((a, b) in bcast_pair(), op in prop::sample::select(vec![BinaryOp::Add, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Sub])) {
        let mut g = Graph::new();
        let x = input(&mut g, "a", &a);
        let y = input(&mut g, "b", &b);
        let z = g.add(Op::Binary(op), &[x, y], "z").unwrap();
        g.set_output("z", z);
        let (da, db) = (data(a.iter().product(), 1), data(b.iter().product(), 2));
        let out_shape = g.ty(z).shape.clone();
        let n: usize = out_shape.iter().product();
        let (sa, sb) = (strides(&a), strides(&b));
        let want: Vec<f32> = (0..n).map(|i| {
            let idx = unravel(i, &out_shape);
            let off_a = out_shape.len() - a.len();
            let off_b = out_shape.len() - b.len();
            let ia: usize = (0..a.len()).map(|k| if a[k] == 1 { 0 } else { idx[off_a + k] * sa[k] }).sum();
            let ib: usize = (0..b.len()).map(|k| if b[k] == 1 { 0 } else { idx[off_b + k] * sb[k] }).sum();
            match op { BinaryOp::Add => da[ia] + db[ib], BinaryOp::Mul => da[ia] * db[ib], BinaryOp::Max => da[ia].max(db[ib]), _ => da[ia] - db[ib] }
        }).collect();
        close(&run(&g, &[da, db]), &want, 0.0)?;
    }

    #[test]
    fn reductions(shape in prop::collection::vec(1usize..6, 1..4), mask in prop::collection::vec(any::<bool>(), 3), max in any::<bool>()) {
        let axes: Vec<usize> = (0..shape.len()).filter(|&i| mask[i]).collect();
        let mut g = Graph::new();
        let x = input(&mut g, "x", &shape);
        let op = if max { ReduceOp::Max } else { ReduceOp::Sum };
        let r = g.add(Op::Reduce { op, axes: axes.clone() }, &[x], "r").unwrap();
        g.set_output("r", r);
        let d = data(shape.iter().product(), 3);
        let out_shape = g.ty(r).shape.clone();
        let mut want = vec![if max { f32::NEG_INFINITY } else { 0.0 }; out_shape.iter().product()];
        let os = strides(&out_shape);
        for (i, v) in d.iter().enumerate() {
            let idx = unravel(i, &shape);
            let o: usize = (0..shape.len()).map(|k| if axes.contains(&k) { 0 } else { idx[k] * os[k] }).sum();
            want[o] = if max { want[o].max(*v) } else { want[o] + v };
        }
        close(&run(&g, &[d]), &want, 1e-5)?;
    }

    /// Shapes cover full register tiles and every row, column and k tail; B is an input (read
    /// in place) or a constant (packed into panels at compile time); with fusion on, a bias add
    /// and a max(0, .) become the GEMM epilogue.
    #[test]
    fn batched_matmul(m in 1usize..20, k in 1usize..20, n in 1usize..30, batch_a in 1usize..3, batch_b in 1usize..3,
                      const_b in any::<bool>(), epilogue in any::<bool>()) {
        let (batch_a, batch_b) = if batch_a != batch_b && batch_a != 1 && batch_b != 1 { (batch_a, 1) } else { (batch_a, batch_b) };
        let mut g = Graph::new();
        let (da, db) = (data(batch_a * m * k, 4), data(batch_b * k * n, 5));
        let bias = data(n, 6);
        let a = input(&mut g, "a", &[batch_a, m, k]);
        let b = if const_b {
            g.constant(Tensor::from_f32(vec![batch_b, k, n], &db), "b")
        } else {
            input(&mut g, "b", &[batch_b, k, n])
        };
        let mut c = g.add(Op::MatMul, &[a, b], "c").unwrap();
        let bt = batch_a.max(batch_b);
        if epilogue {
            let bv = g.constant(Tensor::from_f32(vec![n], &bias), "bias");
            let bx = g.add(Op::Expand { shape: vec![bt, m, n] }, &[bv], "bias_x").unwrap();
            let s = g.add(Op::Binary(BinaryOp::Add), &[c, bx], "add").unwrap();
            let z = g.constant(Tensor::from_f32(vec![], &[0.0]), "zero");
            let zx = g.add(Op::Expand { shape: vec![bt, m, n] }, &[z], "zero_x").unwrap();
            c = g.add(Op::Binary(BinaryOp::Max), &[s, zx], "relu").unwrap();
        }
        g.set_output("c", c);
        let mut want = vec![0f32; bt * m * n];
        for t in 0..bt {
            let (ta, tb) = (if batch_a == 1 { 0 } else { t }, if batch_b == 1 { 0 } else { t });
            for i in 0..m { for j in 0..n {
                let dot: f32 = (0..k).map(|p| da[(ta * m + i) * k + p] * db[(tb * k + p) * n + j]).sum();
                want[(t * m + i) * n + j] = if epilogue { (dot + bias[j]).max(0.0) } else { dot };
            }}
        }
        let inputs = if const_b { vec![da] } else { vec![da, db] };
        close(&run_with(&g, &inputs, epilogue), &want, 1e-5)?;
    }

    #[test]
    fn conv2d(c_per_group in 1usize..3, groups in 1usize..3, m_per_group in 1usize..3, h in 3usize..8, w in 3usize..14,
              kh in 1usize..4, kw in 1usize..4, stride in 1usize..3, dil in 1usize..3, pad in 0i64..2, pad_hi in 0i64..3) {
        // Direct (grouped) convolutions read the pad inline, split into border and interior boxes.
        prop_assume!(h + (pad + pad_hi) as usize >= dil * (kh - 1) + 1 && w + (pad + pad_hi) as usize >= dil * (kw - 1) + 1);
        let (c, m) = (c_per_group * groups, m_per_group * groups);
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[1, c, h, w]);
        let wt = input(&mut g, "w", &[m, c_per_group, kh, kw]);
        let xp = g.add(Op::Pad { low: vec![0, 0, pad, pad], high: vec![0, 0, pad_hi, pad_hi], interior: vec![0; 4], mode: PadMode::Constant(Scalar::F64(0.0)) }, &[x], "pad").unwrap();
        let y = g.add(Op::Conv(Conv { strides: vec![stride, stride], dilations: vec![dil, dil], groups }), &[xp, wt], "conv").unwrap();
        g.set_output("y", y);
        let (dx, dw) = (data(c * h * w, 6), data(m * c_per_group * kh * kw, 7));
        let ys = g.ty(y).shape.clone();
        let want: Vec<f32> = conv2d_reference(&dx, [1, c, h, w], &dw, [m, c_per_group, kh, kw], groups, stride, dil, pad, (ys[2], ys[3]))
            .iter().map(|&v| v as f32).collect();
        close(&run(&g, &[dx, dw]), &want, 1e-5)?;
    }

    #[test]
    fn composed_views(d0 in 1usize..5, d1 in 1usize..5, d2 in 1usize..5, start in 0usize..3, step in 1i64..3, lo in 0i64..3, hi in 0i64..3) {
        // transpose -> slice (with step, possibly reversed) -> reshape -> pad, then copied out.
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[d0, d1, d2]);
        let t = g.add(Op::Transpose { perm: vec![2, 0, 1] }, &[x], "t").unwrap();
        let s0 = start.min(d2 - 1) as i64;
        let count = ((d2 as i64 - s0) + step - 1) / step;
        let s = g.add(Op::Slice { starts: vec![s0, 0, d1 as i64 - 1], steps: vec![step, 1, -1], sizes: vec![count as usize, d0, d1] }, &[t], "s").unwrap();
        let r = g.add(Op::Reshape { shape: vec![count as usize * d0 * d1] }, &[s], "r").unwrap();
        let p = g.add(Op::Pad { low: vec![lo], high: vec![hi], interior: vec![0], mode: PadMode::Constant(Scalar::F64(9.0)) }, &[r], "p").unwrap();
        let y = g.add(Op::Binary(BinaryOp::Add), &[p, p], "y").unwrap();
        g.set_output("y", y);
        let dx = data(d0 * d1 * d2, 8);
        let mut flat = vec![];
        for a in 0..count as usize { for b in 0..d0 { for c in 0..d1 {
            let k = s0 as usize + a * step as usize;
            let j = d1 - 1 - c;
            flat.push(dx[(b * d1 + j) * d2 + k]);
        }}}
        let mut want = vec![9.0f32; lo as usize];
        want.extend(flat);
        want.extend(vec![9.0; hi as usize]);
        let want: Vec<f32> = want.iter().map(|v| v + v).collect();
        close(&run(&g, &[dx]), &want, 0.0)?;
    }

    #[test]
    fn reflect_edge_wrap_padding(n in 1usize..6, lo in 0i64..4, hi in 0i64..4, mode in 0u8..3) {
        let pm = [PadMode::Reflect, PadMode::Edge, PadMode::Wrap][mode as usize];
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[n]);
        let p = g.add(Op::Pad { low: vec![lo], high: vec![hi], interior: vec![0], mode: pm }, &[x], "p").unwrap();
        g.set_output("p", p);
        let dx = data(n, 9);
        let want: Vec<f32> = (-lo..n as i64 + hi).map(|i| {
            let nn = n as i64;
            let j = match pm {
                PadMode::Edge => i.clamp(0, nn - 1),
                PadMode::Wrap => i.rem_euclid(nn),
                _ => if nn == 1 { 0 } else { let p = 2 * (nn - 1); let m = i.rem_euclid(p); if m < nn { m } else { p - m } },
            };
            dx[j as usize]
        }).collect();
        close(&run(&g, &[dx]), &want, 0.0)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// 3x3 stride-1 convolutions large enough for Winograd F(4x4, 3x3) (down to a 7x7 map's
    /// four tiles), including output sizes that are not a multiple of 4 (partial tile row, column and corner), padding or none, and
    /// a fused bias + ReLU + residual epilogue.
    #[test]
    fn winograd_conv3x3(ci in 16usize..20, co in 16usize..21, h in 5usize..19, w in 5usize..19, pad in 0i64..2, batch in 1usize..3) {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[batch, ci, h, w]);
        let dw = data(co * ci * 9, 11).iter().map(|v| v * 0.2).collect::<Vec<_>>();
        let wt = g.constant(Tensor::from_f32(vec![co, ci, 3, 3], &dw), "w");
        let xp = g.add(Op::Pad { low: vec![0, 0, pad, pad], high: vec![0, 0, pad, pad], interior: vec![0; 4], mode: PadMode::Constant(Scalar::F64(0.0)) }, &[x], "pad").unwrap();
        let y = g.add(Op::Conv(Conv { strides: vec![1, 1], dilations: vec![1, 1], groups: 1 }), &[xp, wt], "conv").unwrap();
        let ys = g.ty(y).shape.clone();
        let (oh, ow) = (ys[2], ys[3]);
        prop_assume!(batch * oh.div_ceil(4) * ow.div_ceil(4) >= 4);
        let res = input(&mut g, "res", &[batch, co, oh, ow]);
        let y_res = g.add(Op::Binary(BinaryOp::Add), &[y, res], "residual").unwrap();
        let bias = data(co, 12);
        let r = bias_relu(&mut g, y_res, &bias);
        g.set_output("y", r);
        let (dx, dr) = (data(batch * ci * h * w, 13), data(batch * co * oh * ow, 14));
        let conv = conv2d_reference(&dx, [batch, ci, h, w], &dw, [co, ci, 3, 3], 1, 1, 1, pad, (oh, ow));
        let want: Vec<f32> = conv.iter().enumerate()
            .map(|(i, &acc)| (acc + bias[(i / (oh * ow)) % co] as f64 + dr[i] as f64).max(0.0) as f32)
            .collect();
        let got = run_with(&g, &[dx, dr], true);
        close(&got, &want, 2e-4)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Convolutions whose output width is a multiple of the GEMM tile's 8 columns: im2col writes
    /// B in panel layout (batches, groups, strides, dilations, padding, constant weights, a
    /// bias + ReLU epilogue).
    #[test]
    fn conv2d_im2col_panels(batch in 1usize..3, groups in 1usize..3, cpg in 1usize..4, mpg in 1usize..9, oh in 1usize..4, owb in 1usize..3,
                            kh in 1usize..4, kw in 2usize..4, stride in 1usize..3, dil in 1usize..3, pad in 0usize..2) {
        let (c, m, ow) = (cpg * groups, mpg * groups, owb * 8);
        let h = ((oh - 1) * stride + dil * (kh - 1) + 1).saturating_sub(2 * pad).max(1);
        let w = (ow - 1) * stride + dil * (kw - 1) + 1 - 2 * pad;
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[batch, c, h, w]);
        let dw = data(m * cpg * kh * kw, 21);
        let wt = g.constant(Tensor::from_f32(vec![m, cpg, kh, kw], &dw), "w");
        let p = pad as i64;
        let xp = g.add(Op::Pad { low: vec![0, 0, p, p], high: vec![0, 0, p, p], interior: vec![0; 4], mode: PadMode::Constant(Scalar::F64(0.0)) }, &[x], "pad").unwrap();
        let y = g.add(Op::Conv(Conv { strides: vec![stride, stride], dilations: vec![dil, dil], groups }), &[xp, wt], "conv").unwrap();
        let ys = g.ty(y).shape.clone();
        prop_assert_eq!(ys[3], ow);
        let bias = data(m, 22);
        let r = bias_relu(&mut g, y, &bias);
        g.set_output("y", r);
        let oh = ys[2];
        let dx = data(batch * c * h * w, 23);
        let conv = conv2d_reference(&dx, [batch, c, h, w], &dw, [m, cpg, kh, kw], groups, stride, dil, p, (oh, ow));
        let want: Vec<f32> = conv.iter().enumerate().map(|(i, &acc)| (acc + bias[(i / (oh * ow)) % m] as f64).max(0.0) as f32).collect();
        close(&run_with(&g, &[dx], true), &want, 1e-5)?;
    }
}

#[test]
fn winograd_is_used_for_eligible_convolutions() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[1, 16, 18, 18]);
    let wt = g.constant(Tensor::from_f32(vec![16, 16, 3, 3], &data(16 * 16 * 9, 1)), "w");
    let y = g.add(Op::Conv(Conv { strides: vec![1, 1], dilations: vec![1, 1], groups: 1 }), &[x, wt], "conv").unwrap();
    g.set_output("y", y);
    let prog = lower(&g, &odc_passes::fusion::greedy(&g), &odc_backends::LowerOptions::default()).unwrap();
    let names: Vec<&str> = prog.kernels.iter().map(|k| k.name.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("winograd_gemm")), "{names:?}");
}

fn bytes_tensor(dtype: DType, shape: Vec<usize>, v: &[i64]) -> Tensor {
    let b: Vec<u8> = v.iter().map(|&x| x as u8).collect();
    Tensor::new(dtype, shape, odc_ir::Bytes::from_vec(b)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// i32 products of 8-bit operands (A an input, B constant) run as the int8 dot-product GEMM:
    /// every signedness pair with a signed side, `k` not a multiple of 4, row and column tails,
    /// batches, and an epilogue that dequantises to f32.
    #[test]
    fn int8_matmul(m in 1usize..15, k in 1usize..40, n in 1usize..21, batch in 1usize..3, signs in 0u8..3) {
        let (a_signed, b_signed) = [(false, true), (true, false), (true, true)][signs as usize];
        let (adt, bdt) = (if a_signed { DType::I8 } else { DType::U8 }, if b_signed { DType::I8 } else { DType::U8 });
        let val = |signed: bool, i: usize, seed: usize| -> i64 {
            let x = ((i * 2654435761 + seed * 97) >> 7) % 256;
            if signed { x as i64 - 128 } else { x as i64 }
        };
        let av: Vec<i64> = (0..batch * m * k).map(|i| val(a_signed, i, 1)).collect();
        let bv: Vec<i64> = (0..k * n).map(|i| val(b_signed, i, 2)).collect();
        let mut g = Graph::new();
        let a = g.add_input("a", TensorType::new(adt, vec![batch, m, k]));
        let b = g.constant(bytes_tensor(bdt, vec![k, n], &bv), "b");
        let ai = g.add(Op::Cast { to: DType::I32, saturate: false }, &[a], "ai").unwrap();
        let bi = g.add(Op::Cast { to: DType::I32, saturate: false }, &[b], "bi").unwrap();
        let p = g.add(Op::MatMul, &[ai, bi], "p").unwrap();
        let pf = g.add(Op::Cast { to: DType::F32, saturate: false }, &[p], "pf").unwrap();
        let s = g.constant(Tensor::from_f32(vec![], &[0.5]), "scale");
        let y = g.add(Op::Binary(BinaryOp::Mul), &[pf, s], "y").unwrap();
        g.set_output("y", y);
        let plan = odc_passes::fusion::greedy(&g);
        let prog = lower(&g, &plan, &odc_backends::LowerOptions::default()).unwrap();
        prop_assert!(prog.kernels.iter().any(|k| matches!(&k.body, odc_backends::kernel::Body::Gemm(gm) if gm.elem != odc_backends::kernel::GemmElem::F32)));
        let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
        let ab: Vec<u8> = av.iter().map(|&x| x as u8).collect();
        let out = jit.run(&[&ab]).unwrap().remove(0);
        let got: Vec<f32> = out.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        for t in 0..batch { for i in 0..m { for j in 0..n {
            let dot: i64 = (0..k).map(|p| av[(t * m + i) * k + p] * bv[p * n + j]).sum();
            prop_assert_eq!(got[(t * m + i) * n + j], dot as f32 * 0.5, "({}, {}, {})", t, i, j);
        }}}
    }
}

#[test]
fn padded_depthwise_conv_reads_its_pad_inline() {
    let (c, h, w) = (8, 12, 12);
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[1, c, h, w]);
    let wt = g.constant(Tensor::from_f32(vec![c, 1, 3, 3], &data(c * 9, 3)), "w");
    let xp = g.add(Op::Pad { low: vec![0, 0, 1, 1], high: vec![0, 0, 1, 1], interior: vec![0; 4], mode: PadMode::Constant(Scalar::F64(0.0)) }, &[x], "pad").unwrap();
    let y = g.add(Op::Conv(Conv { strides: vec![1, 1], dilations: vec![1, 1], groups: c }), &[xp, wt], "dw").unwrap();
    g.set_output("y", y);
    let prog = lower(&g, &odc_backends::FusionPlan::none(&g), &odc_backends::LowerOptions::default()).unwrap();
    let names: Vec<&str> = prog.kernels.iter().map(|k| k.name.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("_interior")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("pad_")), "no padded copy: {names:?}");
    let interior = prog.kernels.iter().find(|k| k.name.ends_with("_interior")).unwrap();
    let text = interior.to_string();
    assert!(!text.contains("Select") && !text.contains("Lt"), "the interior has no bounds tests:\n{text}");
}

/// A dilated window wider than input + low pad: no output has its whole window inside, so the
/// box split has an empty interior and every output is a border one.
#[test]
fn padded_window_wider_than_its_input_is_all_border() {
    let (c, h, w) = (2, 3, 9);
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[1, c, h, w]);
    let dw = data(c * 9, 5);
    let wt = g.constant(Tensor::from_f32(vec![c, 1, 3, 3], &dw), "w");
    let xp = g.add(Op::Pad { low: vec![0, 0, 1, 1], high: vec![0, 0, 1, 1], interior: vec![0; 4], mode: PadMode::Constant(Scalar::F64(0.0)) }, &[x], "pad").unwrap();
    let y = g.add(Op::Conv(Conv { strides: vec![1, 1], dilations: vec![2, 2], groups: c }), &[xp, wt], "dw").unwrap();
    g.set_output("y", y);
    let ys = g.ty(y).shape.clone();
    let (oh, ow) = (ys[2], ys[3]);
    assert_eq!(oh, 1);
    let dx = data(c * h * w, 6);
    let mut want = vec![0f32; c * oh * ow];
    for ch in 0..c {
        for ox in 0..ow {
            let mut s = 0f32;
            for ky in 0..3 {
                for kx in 0..3 {
                    let (iy, ix) = ((ky * 2) as i64 - 1, (ox + kx * 2) as i64 - 1);
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        s += dx[(ch * h + iy as usize) * w + ix as usize] * dw[ch * 9 + ky * 3 + kx];
                    }
                }
            }
            want[ch * ow + ox] = s;
        }
    }
    let got = run(&g, &[dx]);
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-5, "output {i}: {a} vs {b}");
    }
}
