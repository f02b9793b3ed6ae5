//! Next-token choice: greedy, or temperature with top-k and top-p (nucleus), from a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// How the next token is picked from the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Setting {
                scope: "sampling".into(),
                key: "temperature".into(),
                message: format!("must be >= 0, got {}", self.temperature),
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Setting {
                scope: "sampling".into(),
                key: "top-p".into(),
                message: format!("must be in (0, 1], got {}", self.top_p),
            });
        }
        Ok(())
    }
}

/// A seeded sampler.
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded from `config.seed`.
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        let rng = StdRng::seed_from_u64(config.seed);
        Ok(Self { config, rng })
    }

    /// Picks a token id from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.config.temperature == 0.0 {
            return argmax(logits);
        }
        let t = self.config.temperature;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.config.top_k > 0 {
            order.truncate(self.config.top_k.max(1));
        }
        let max = logits[order[0]] / t;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] / t - max) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.config.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= self.config.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (p, &i) in probs.iter().zip(&order) {
            if r < *p {
                return i as u32;
            }
            r -= p;
        }
        *order.last().expect("non-empty") as u32
    }
}

/// Index of the largest logit (the first one on ties, as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_max() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let logits = [0.1, 0.5, 3.0, 0.2];
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&logits), 2);
        let cfg = SamplingConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 0.9,
            seed: 7,
        };
        let draw = |cfg: &SamplingConfig| {
            let mut s = Sampler::new(cfg.clone()).unwrap();
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(&cfg), draw(&cfg));
    }

    #[test]
    fn top_p_drops_the_tail() {
        let logits = [10.0, 0.0, 0.0, 0.0];
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
            ..Default::default()
        })
        .unwrap();
        assert!((0..50).all(|_| s.sample(&logits) == 0));
    }

    #[test]
    fn bad_ranges_are_rejected() {
        assert!(
            Sampler::new(SamplingConfig {
                top_p: 0.0,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Sampler::new(SamplingConfig {
                temperature: -1.0,
                ..Default::default()
            })
            .is_err()
        );
    }
}
