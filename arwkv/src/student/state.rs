//! Recurrent inference state of a student: per layer the token shift `[B, C]` and the WKV state
//! `[B, H, N, N]` (f32). Its size does not depend on how many tokens were seen.

use super::time_mixer::TimeMixState;

/// State of every layer after the tokens seen so far.
#[derive(Clone, Debug, Default)]
pub struct RecurrentState {
    layers: Vec<Option<TimeMixState>>,
    len: usize,
}

impl RecurrentState {
    /// A state before any token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens consumed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token was consumed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Layer `i`'s state, if it has one.
    pub fn layer(&self, i: usize) -> Option<&TimeMixState> {
        self.layers.get(i).and_then(|s| s.as_ref())
    }

    /// Bytes the state occupies (f32), independent of the context length.
    pub fn size_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|s| {
                4 * (s.shift.dims().iter().product::<usize>()
                    + s.wkv.dims().iter().product::<usize>())
            })
            .sum()
    }

    pub(crate) fn set_layer(&mut self, i: usize, state: TimeMixState) {
        if self.layers.len() <= i {
            self.layers.resize_with(i + 1, || None);
        }
        self.layers[i] = Some(state);
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
