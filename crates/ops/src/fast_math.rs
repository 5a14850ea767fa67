//! Branch-free single-precision math that the compiler vectorises, shared by the `flex` kernels
//! of this crate ([`crate::gelu`], [`crate::attention`]): no libm calls, no float-to-int casts, so
//! a loop over a slice becomes SIMD code (built for AVX2 where present by pulp's dispatch in the
//! callers).

/// `exp(v)` for `v ≤ 0`, relative error about 1e-7: `v = k·ln2 + r` with `|r| ≤ ln2/2`, a degree-7
/// polynomial for `exp(r)`, `2^k` put into the exponent bits. Below −87 it returns about 1e-38,
/// not 0 (GELU's terms are far below f32's resolution there; the softmax selects 0 itself).
/// NaN stays NaN, as libm's (a clamp by `f32::max` would turn it into −87 and the result finite).
#[inline(always)]
pub(crate) fn exp_non_positive(v: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that k·LN2_HI is exact for the k that occur here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer (no libm call: vectorises).
    const ROUND: f32 = 12_582_912.0;
    // A select, not `f32::max`: a NaN fails the comparison and goes on as NaN.
    let v = if v < -87.0 { -87.0 } else { v };
    let rounded = v * LOG2_E + ROUND;
    let k = rounded - ROUND;
    let r = v - k * LN2_HI - k * LN2_LO;
    // Taylor terms of exp(r) - 1 - r over r², to r⁵ (|r| ≤ 0.35: the next term is under 3e-8).
    let p = 1.0 / 2.0 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))));
    let exp_r = 1.0 + r + r * r * p;
    // k sits in the low mantissa bits of `rounded`: 2^k from integer arithmetic alone (a float
    // to int cast would not vectorise).
    let k_bits = rounded.to_bits().wrapping_sub(ROUND.to_bits());
    exp_r * f32::from_bits(k_bits.wrapping_add(127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponential_is_within_2e7_relative() {
        for v in (0..=840_000).map(|i| i as f32 * -1e-4) {
            let (got, expected) = (exp_non_positive(v) as f64, (v as f64).exp());
            assert!((got - expected).abs() <= 2e-7 * expected, "exp({v}) = {got}, not {expected}");
        }
    }

    #[test]
    fn nan_stays_nan_and_minus_infinity_gives_about_zero() {
        assert!(exp_non_positive(f32::NAN).is_nan());
        assert!((0.0..1e-37).contains(&exp_non_positive(f32::NEG_INFINITY)));
    }
}
