//! sin and cos (Cody-Waite reduction by multiples of pi/2, a polynomial per quadrant) and atan
//! (Cephes-style range reduction); the dispatch in `mod.rs` builds tan and the inverse
//! functions from these. No other function family.

use crate::kernel::{KBinary, KernelBuilder, E};
use odc_ir::DType;
use super::shorthand::F;

/// sin(x) or cos(x).
pub(super) fn sin_cos(kb: &mut KernelBuilder, x: E, cosine: bool) -> E {
    let t = kb.ty(x);
    let mut f = F::new(kb, t);
    let (p1, p2, p3) = if t == DType::F32 {
        (1.570_312_5, 4.837_512_969_970_703_125e-4, 7.549_789_954_891_882_16e-8)
    } else {
        (1.570_796_326_734_125_614_17, 6.077_100_506_303_965_976_6e-11, 2.022_266_248_711_166_455_8e-21)
    };
    let q = f.mulc(x, std::f64::consts::FRAC_2_PI);
    let j = f.nearest(q);
    let a = f.mulc(j, p1);
    let y = f.sub(x, a);
    let b = f.mulc(j, p2);
    let y = f.sub(y, b);
    let c = f.mulc(j, p3);
    let y = f.sub(y, c);
    let z = f.mul(y, y);
    let (sp, cp): (&[f64], &[f64]) = if t == DType::F32 {
        (
            &[-1.951_529_589_1e-4, 8.332_160_873_6e-3, -1.666_665_461_1e-1],
            &[2.443_315_711_809_948e-5, -1.388_731_625_493_765e-3, 4.166_664_568_298_827e-2],
        )
    } else {
        (
            &[
                1.589_690_995_211_550_102_21e-10,
                -2.505_076_025_340_686_341_95e-8,
                2.755_731_370_707_006_767_89e-6,
                -1.984_126_982_985_794_931_34e-4,
                8.333_333_333_322_489_461_24e-3,
                -1.666_666_666_666_663_243_48e-1,
            ],
            &[
                -1.135_964_755_778_819_482_65e-11,
                2.087_572_321_298_174_827_9e-9,
                -2.755_731_435_139_066_330_35e-7,
                2.480_158_728_947_672_941_78e-5,
                -1.388_888_888_887_410_957_49e-3,
                4.166_666_666_666_660_190_37e-2,
            ],
        )
    };
    // sin(y) = y + y z S(z); cos(y) = 1 - z/2 + z^2 C(z)
    let s = f.poly(z, sp);
    let yz = f.mul(y, z);
    let s = f.mul(yz, s);
    let sin_y = f.add(y, s);
    let cpoly = f.poly(z, cp);
    let z2 = f.mul(z, z);
    let cc = f.mul(z2, cpoly);
    let hz = f.mulc(z, 0.5);
    let one = f.c(1.0);
    let c0 = f.sub(one, hz);
    let cos_y = f.add(c0, cc);
    // Quadrant from j (mod 4); cos(x) = sin(x + pi/2) shifts the quadrant by one.
    let it = f.int_t();
    let ji = f.kb.convert(it, j);
    let ji = if cosine { f.kb.add_c(ji, 1) } else { ji };
    let three = f.kb.iconst(it, 3);
    let quad = f.kb.binary(KBinary::And, ji, three);
    let one_i = f.kb.iconst(it, 1);
    let two_i = f.kb.iconst(it, 2);
    let odd = f.kb.binary(KBinary::And, quad, one_i);
    let zi = f.kb.iconst(it, 0);
    let odd = f.kb.binary(KBinary::Ne, odd, zi);
    let hi_half = f.kb.binary(KBinary::And, quad, two_i);
    let hi_half = f.kb.binary(KBinary::Ne, hi_half, zi);
    let v = f.sel(odd, cos_y, sin_y);
    let nv = f.neg(v);
    let r = f.sel(hi_half, nv, v);
    // Infinite input gives NaN.
    let ax = f.abs(x);
    let inf = f.cmpc(KBinary::Eq, ax, f64::INFINITY);
    let nan = f.c(f64::NAN);
    f.sel(inf, nan, r)
}

/// arctan(x).
pub(super) fn atan(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    let mut f = F::new(kb, t);
    let a = f.abs(x);
    let t3p8 = 2.414_213_562_373_095_048_80;
    let big = f.cmpc(KBinary::Gt, a, t3p8);
    let mid_lim = if t == DType::F32 { 0.414_213_562_373_095_048_80 } else { 0.66 };
    let mid = f.cmpc(KBinary::Gt, a, mid_lim);
    let one = f.c(1.0);
    let m1 = f.c(-1.0);
    let inv = f.div(m1, a);
    let am1 = f.sub(a, one);
    let ap1 = f.add(a, one);
    let red = f.div(am1, ap1);
    let tt = f.sel(mid, red, a);
    let tt = f.sel(big, inv, tt);
    let pio2 = f.c(std::f64::consts::FRAC_PI_2);
    let pio4 = f.c(std::f64::consts::FRAC_PI_4);
    let zero = f.c(0.0);
    let y0 = f.sel(mid, pio4, zero);
    let y0 = f.sel(big, pio2, y0);
    let z = f.mul(tt, tt);
    let r = if t == DType::F32 {
        let p = f.poly(z, &[8.053_744_495_38e-2, -1.387_768_560_32e-1, 1.997_771_064_78e-1, -3.333_294_915_39e-1]);
        let pz = f.mul(p, z);
        let pzt = f.mul(pz, tt);
        let s = f.add(pzt, tt);
        f.add(y0, s)
    } else {
        let p = f.poly(
            z,
            &[
                -8.750_608_600_031_904_122_785e-1,
                -1.615_753_718_733_365_076_637e1,
                -7.500_855_792_314_704_667_340e1,
                -1.228_866_684_490_136_173_410e2,
                -6.485_021_904_942_025_371_773e1,
            ],
        );
        let q = f.poly(
            z,
            &[
                1.0,
                2.485_846_490_142_306_297_962e1,
                1.650_270_098_316_988_542_046e2,
                4.328_810_604_912_902_668_951e2,
                4.853_903_996_359_136_964_868e2,
                1.945_506_571_482_613_964_425e2,
            ],
        );
        let pq = f.div(p, q);
        let zz = f.mul(z, pq);
        let w = f.mul(tt, zz);
        let w = f.add(w, tt);
        let more = 6.123_233_995_736_765_886_130e-17;
        let c_big = f.c(more);
        let c_mid = f.c(0.5 * more);
        let corr = f.sel(mid, c_mid, zero);
        let corr = f.sel(big, c_big, corr);
        let w = f.add(w, corr);
        f.add(y0, w)
    };
    let r = f.with_sign_of(r, x);
    let nan = f.is_nan(x);
    f.sel(nan, x, r)
}
