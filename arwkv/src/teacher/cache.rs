//! Key/value cache for incremental decoding, preallocated: each layer's keys and values live in a
//! buffer `[B, KV, capacity, D]` that new positions are written into in place, so a decode step
//! costs its own tokens, not a copy of the whole cache. A full buffer is reallocated with headroom
//! of an eighth of its positions (at least [`MIN_HEADROOM`]): the copies that growth costs stay an
//! eighth of the attention work or less, and the memory held at most an eighth above what is used.

use burn::prelude::*;

/// Positions of headroom a buffer gets when it is allocated or grown (more once an eighth of the
/// cached positions is larger).
pub const MIN_HEADROOM: usize = 256;

/// One layer's keys and values: the first `len` positions of `[B, KV, capacity, D]` buffers.
#[derive(Debug, Default)]
pub struct LayerKv {
    buffers: Option<(Tensor<4>, Tensor<4>)>,
    len: usize,
}

impl LayerKv {
    /// Appends `k`, `v` (`[B, KV, T, D]`) after the cached positions; returns every cached key
    /// and value so far (`[B, KV, len + T, D]`, views into the buffers).
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, kv, t, d] = k.dims();
        let needed = self.len + t;
        let (keys, values) = match self.buffers.take() {
            Some((keys, values)) if keys.dims()[2] >= needed => (keys, values),
            old => {
                let capacity = needed + MIN_HEADROOM.max(self.len / 8);
                let grown = |old: Option<Tensor<4>>, like: &Tensor<4>| {
                    let buffer =
                        Tensor::zeros([b, kv, capacity, d], (&like.device(), like.dtype()));
                    match old {
                        Some(old) if self.len > 0 => {
                            let kept = old.slice([0..b, 0..kv, 0..self.len, 0..d]);
                            buffer.slice_assign([0..b, 0..kv, 0..self.len, 0..d], kept)
                        }
                        _ => buffer,
                    }
                };
                let (old_k, old_v) = old.unzip();
                (grown(old_k, &k), grown(old_v, &v))
            }
        };
        // The buffers are owned here alone (the views of the last step are gone), so the backend
        // writes the new positions in place.
        let range = [0..b, 0..kv, self.len..needed, 0..d];
        let keys = keys.slice_assign(range.clone(), k);
        let values = values.slice_assign(range, v);
        self.len = needed;
        let cached = [0..b, 0..kv, 0..needed, 0..d];
        let views = (
            keys.clone().slice(cached.clone()),
            values.clone().slice(cached),
        );
        self.buffers = Some((keys, values));
        views
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers hold before they must grow.
    pub fn capacity(&self) -> usize {
        self.buffers.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }
}

/// Per-layer keys and values of every position seen so far.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions (every layer holds the same).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn ensure_layers(&mut self, n: usize) {
        if self.layers.len() < n {
            self.layers.resize_with(n, LayerKv::default);
        }
    }

    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut LayerKv {
        &mut self.layers[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(from: usize, t: usize, device: &Device) -> Tensor<4> {
        let values: Vec<f32> = (from..from + t)
            .flat_map(|p| [p as f32, -(p as f32)])
            .collect();
        Tensor::<1>::from_floats(values.as_slice(), device).reshape([1, 1, t, 2])
    }

    #[test]
    fn appends_in_order_across_growth() {
        let device = Device::flex();
        let mut layer = LayerKv::default();
        let (k, _) = layer.append(positions(0, 5, &device), positions(0, 5, &device));
        assert_eq!(k.dims(), [1, 1, 5, 2]);
        assert_eq!(layer.capacity(), 5 + MIN_HEADROOM);
        // One position at a time past the first capacity: the buffer grows once, with headroom.
        let end = 5 + MIN_HEADROOM + 40;
        let mut last = (k.clone(), k);
        for p in 5..end {
            last = layer.append(positions(p, 1, &device), positions(p, 1, &device));
        }
        assert_eq!(layer.len(), end);
        assert_eq!(layer.capacity(), 5 + MIN_HEADROOM + 1 + MIN_HEADROOM);
        let expected = positions(0, end, &device);
        for cached in [last.0, last.1] {
            let diff: f64 = (cached - expected.clone()).abs().max().into_scalar();
            assert_eq!(diff, 0.0);
        }
    }

    #[test]
    fn a_long_cache_grows_by_an_eighth() {
        let device = Device::flex();
        let mut layer = LayerKv::default();
        let n = 16 * MIN_HEADROOM;
        let (k, v) = layer.append(positions(0, n, &device), positions(0, n, &device));
        assert_eq!((k.dims()[2], v.dims()[2]), (n, n));
        assert_eq!(layer.capacity(), n + MIN_HEADROOM);
        layer.append(
            positions(n, MIN_HEADROOM + 1, &device),
            positions(n, MIN_HEADROOM + 1, &device),
        );
        let used = n + MIN_HEADROOM + 1;
        assert_eq!(layer.capacity(), used + n / 8);
    }
}
