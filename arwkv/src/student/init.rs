//! Seeded initialisers of the student (`docs/METHOD.md` §4), computed on the host so that one
//! seed gives the same weights on every backend.

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The host random source of an initialisation.
pub struct InitRng(StdRng);

impl InitRng {
    /// A generator fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// One N(0, 1) sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1: f64 = 1.0 - self.0.random::<f64>(); // (0, 1]
        let u2: f64 = self.0.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `rows × cols` values drawn from U(−bound, bound), row-major.
    pub fn uniform(&mut self, rows: usize, cols: usize, bound: f64) -> Vec<f32> {
        (0..rows * cols)
            .map(|_| ((self.0.random::<f64>() * 2.0 - 1.0) * bound) as f32)
            .collect()
    }

    /// A `rows × cols` matrix with orthonormal rows (rows ≤ cols) or columns (rows > cols),
    /// scaled by `gain`, as PyTorch's `orthogonal_`: Gram–Schmidt on a Gaussian matrix.
    pub fn orthogonal(&mut self, rows: usize, cols: usize, gain: f64) -> Vec<f32> {
        let (count, len) = if rows <= cols {
            (rows, cols)
        } else {
            (cols, rows)
        };
        let mut vectors: Vec<Vec<f64>> = Vec::with_capacity(count);
        while vectors.len() < count {
            let mut u: Vec<f64> = (0..len).map(|_| self.normal()).collect();
            for q in &vectors {
                let dot: f64 = u.iter().zip(q).map(|(a, b)| a * b).sum();
                u.iter_mut().zip(q).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = u.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm > 1e-6 {
                vectors.push(u.into_iter().map(|a| a / norm).collect());
            }
        }
        let mut out = vec![0f32; rows * cols];
        for (i, q) in vectors.iter().enumerate() {
            for (j, &x) in q.iter().enumerate() {
                let (r, c) = if rows <= cols { (i, j) } else { (j, i) };
                out[r * cols + c] = (gain * x) as f32;
            }
        }
        out
    }
}

/// A `[rows, cols]` tensor from row-major host values.
pub fn matrix(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// A `[1, 1, C]` tensor (the stored shape of the time mixer's per-channel vectors).
pub fn channel_vector(values: Vec<f32>, device: &Device) -> Tensor<3> {
    let c = values.len();
    Tensor::from_data(TensorData::new(values, [1, 1, c]), device)
}

/// The layer-dependent per-channel initial values of one time mixer (`docs/METHOD.md` §4).
pub struct LayerSchedule {
    /// `i / C` for every channel.
    ddd: Vec<f64>,
    /// `l / (L − 1)` (0 for a one-layer model).
    r0: f64,
    /// `1 − l / L`.
    r1: f64,
}

impl LayerSchedule {
    /// The schedule of layer `layer` of `layers` at width `c`.
    pub fn new(layer: usize, layers: usize, c: usize) -> Self {
        Self {
            ddd: (0..c).map(|i| i as f64 / c as f64).collect(),
            r0: if layers > 1 {
                layer as f64 / (layers - 1) as f64
            } else {
                0.0
            },
            r1: 1.0 - layer as f64 / layers as f64,
        }
    }

    fn map(&self, f: impl Fn(f64) -> f64) -> Vec<f32> {
        self.ddd.iter().map(|&d| f(d) as f32).collect()
    }

    /// `x_r = 1 − ddd^(0.2·r1)`.
    pub fn x_r(&self) -> Vec<f32> {
        self.map(|d| 1.0 - d.powf(0.2 * self.r1))
    }

    /// `x_w = x_a = 1 − ddd^(0.9·r1)`.
    pub fn x_w(&self) -> Vec<f32> {
        self.map(|d| 1.0 - d.powf(0.9 * self.r1))
    }

    /// `x_k = 1 − (ddd^(0.9·r1) + 0.4·r0)`.
    pub fn x_k(&self) -> Vec<f32> {
        self.map(|d| 1.0 - (d.powf(0.9 * self.r1) + 0.4 * self.r0))
    }

    /// `x_v = 1 − (ddd^(0.4·r1) + 0.6·r0)`.
    pub fn x_v(&self) -> Vec<f32> {
        self.map(|d| 1.0 - (d.powf(0.4 * self.r1) + 0.6 * self.r0))
    }

    /// `w0[n] = −7 + 5·(n/(C−1))^(0.85 + √r0) + 0.5`.
    pub fn w0(&self) -> Vec<f32> {
        let c = self.ddd.len();
        let denom = (c.max(2) - 1) as f64;
        (0..c)
            .map(|n| (-7.0 + 5.0 * (n as f64 / denom).powf(0.85 + self.r0.sqrt()) + 0.5) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_rows_are_orthonormal_times_gain() {
        let mut rng = InitRng::new(7);
        for (rows, cols) in [(4, 10), (10, 4)] {
            let m = rng.orthogonal(rows, cols, 0.1);
            let (count, stride_outer, stride_inner, len) = if rows <= cols {
                (rows, cols, 1, cols)
            } else {
                (cols, 1, cols, rows)
            };
            for a in 0..count {
                for b in 0..count {
                    let dot: f64 = (0..len)
                        .map(|x| {
                            m[a * stride_outer + x * stride_inner] as f64
                                * m[b * stride_outer + x * stride_inner] as f64
                        })
                        .sum();
                    let want = if a == b { 0.01 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-6, "{rows}x{cols} ({a},{b}): {dot}");
                }
            }
        }
    }

    #[test]
    fn schedule_matches_the_formulas_at_the_ends() {
        let first = LayerSchedule::new(0, 4, 8);
        assert_eq!(first.x_r()[0], 1.0); // 0^p = 0
        assert!((first.w0()[0] - (-6.5)).abs() < 1e-6);
        assert!((first.w0()[7] - (-1.5)).abs() < 1e-6);
        let last = LayerSchedule::new(3, 4, 8);
        assert!((last.x_k()[0] - 0.6).abs() < 1e-6); // 1 − (0 + 0.4)
    }
}
