//! Key/value cache for incremental decoding.

use burn::prelude::*;

/// Per-layer keys and values `[B, KV, T, D]` of every position seen so far.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<(Option<Tensor<4>>, Option<Tensor<4>>)>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn ensure_layers(&mut self, n: usize) {
        if self.layers.len() < n {
            self.layers.resize_with(n, || (None, None));
        }
    }

    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut (Option<Tensor<4>>, Option<Tensor<4>>) {
        &mut self.layers[i]
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
