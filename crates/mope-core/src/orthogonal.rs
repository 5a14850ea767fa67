//! Deterministic orthogonal matrices. The router keys of MoPE are orthogonal and frozen; drawing
//! them from a seed stored in the configuration makes them reproducible without saving them, so
//! adapters hold only trainable tensors.

/// SplitMix64: a small, well-mixed generator; plenty for drawing an initialisation.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn next_normal(&mut self) -> f64 {
        let (u1, u2) = (self.next_unit(), self.next_unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A `rows × cols` matrix (row-major) with orthonormal columns when `rows >= cols`, or
/// orthonormal rows otherwise (as `torch.nn.init.orthogonal_`), drawn from `seed`.
///
/// # Panics
/// If `rows` or `cols` is zero.
pub fn orthogonal(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    assert!(rows > 0 && cols > 0, "orthogonal matrix needs non-zero dims, got {rows}x{cols}");
    let (tall_rows, tall_cols) = if rows >= cols { (rows, cols) } else { (cols, rows) };
    let mut rng = SplitMix64(seed);
    // Columns of a tall random Gaussian matrix, orthonormalised by modified Gram-Schmidt.
    let mut columns: Vec<Vec<f64>> = (0..tall_cols)
        .map(|_| (0..tall_rows).map(|_| rng.next_normal()).collect())
        .collect();
    for j in 0..tall_cols {
        for i in 0..j {
            let dot: f64 = (0..tall_rows).map(|r| columns[i][r] * columns[j][r]).sum();
            for r in 0..tall_rows {
                columns[j][r] -= dot * columns[i][r];
            }
        }
        let norm = columns[j].iter().map(|v| v * v).sum::<f64>().sqrt();
        columns[j].iter_mut().for_each(|v| *v /= norm);
    }
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[r * cols + c] = if rows >= cols { columns[c][r] } else { columns[r][c] } as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gram(m: &[f32], rows: usize, cols: usize, by_columns: bool) -> Vec<f64> {
        let n = if by_columns { cols } else { rows };
        let at = |i: usize, k: usize| -> f64 {
            if by_columns { m[k * cols + i] as f64 } else { m[i * cols + k] as f64 }
        };
        let len = if by_columns { rows } else { cols };
        let mut g = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] = (0..len).map(|k| at(i, k) * at(j, k)).sum();
            }
        }
        g
    }

    fn assert_identity(g: &[f64], n: usize) {
        for i in 0..n {
            for j in 0..n {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((g[i * n + j] - want).abs() < 1e-5, "gram[{i},{j}] = {}", g[i * n + j]);
            }
        }
    }

    #[test]
    fn tall_matrix_has_orthonormal_columns() {
        let m = orthogonal(10, 4, 7);
        assert_identity(&gram(&m, 10, 4, true), 4);
    }

    #[test]
    fn wide_matrix_has_orthonormal_rows() {
        let m = orthogonal(10, 16, 7);
        assert_identity(&gram(&m, 10, 16, false), 10);
    }

    #[test]
    fn same_seed_same_matrix_other_seed_other_matrix() {
        assert_eq!(orthogonal(10, 4, 1), orthogonal(10, 4, 1));
        assert_ne!(orthogonal(10, 4, 1), orthogonal(10, 4, 2));
    }
}
