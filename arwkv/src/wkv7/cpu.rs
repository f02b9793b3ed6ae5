//! WKV-7 on the CPU in plain Rust: forward and backward over `[B, T, H, N]` f32 slices, one task per
//! (batch, head) on rayon, the state row in cache.
//!
//! The forward keeps a snapshot of the state at the start of every chunk of [`CHUNK_LEN`] tokens;
//! the backward walks the chunks from the last to the first, recomputes the chunk's states from its
//! snapshot (exact, no division by the decay) and applies the gradient formulas of `docs/METHOD.md` §3.2.

use rayon::prelude::*;

/// Tokens between two state snapshots.
pub const CHUNK_LEN: usize = 16;

/// Sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wkv7Dims {
    /// B.
    pub batch: usize,
    /// T.
    pub seq: usize,
    /// H.
    pub heads: usize,
    /// N (head size).
    pub head_size: usize,
}

impl Wkv7Dims {
    /// Elements of one `[B, T, H, N]` input.
    pub fn seq_len(&self) -> usize {
        self.batch * self.seq * self.heads * self.head_size
    }
    /// Elements of one `[B, H, N, N]` state.
    pub fn state_len(&self) -> usize {
        self.batch * self.heads * self.head_size * self.head_size
    }
    /// Number of snapshots per (batch, head): one per chunk start.
    pub fn chunks(&self) -> usize {
        self.seq.div_ceil(CHUNK_LEN)
    }
    fn index(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.seq + t) * self.heads + h) * self.head_size
    }
}

/// The six per-token inputs, each `[B, T, H, N]`.
#[derive(Clone, Copy, Debug)]
pub struct Wkv7Inputs<'a> {
    /// Receptance.
    pub r: &'a [f32],
    /// Raw log-log decay ω (d = exp(−exp(ω))).
    pub w: &'a [f32],
    /// Key.
    pub k: &'a [f32],
    /// Value.
    pub v: &'a [f32],
    /// Transition vector a (−κ̂ in the time mixer).
    pub a: &'a [f32],
    /// Transition vector b (κ̂ ⊙ iclr in the time mixer).
    pub b: &'a [f32],
}

/// Forward results.
#[derive(Clone, Debug)]
pub struct Wkv7Forward {
    /// `[B, T, H, N]`.
    pub y: Vec<f32>,
    /// `[B, H, N, N]` final state.
    pub state: Vec<f32>,
    /// `[B, H, chunks, N, N]`: the state at the start of every chunk, for the backward.
    pub snapshots: Vec<f32>,
}

/// Gradients of every input.
#[derive(Clone, Debug)]
pub struct Wkv7Grads {
    /// dL/dr.
    pub r: Vec<f32>,
    /// dL/dω.
    pub w: Vec<f32>,
    /// dL/dk.
    pub k: Vec<f32>,
    /// dL/dv.
    pub v: Vec<f32>,
    /// dL/da.
    pub a: Vec<f32>,
    /// dL/db.
    pub b: Vec<f32>,
    /// dL/dS₀, `[B, H, N, N]`.
    pub state0: Vec<f32>,
}

/// decay = exp(−exp(ω)).
#[inline]
fn decay(w: f32) -> f32 {
    (-w.exp()).exp()
}

/// One token: S ← S·diag(d) + (S a) bᵀ + v kᵀ, then y = S r.
#[inline]
#[allow(clippy::too_many_arguments)]
fn step(
    state: &mut [f32],
    n: usize,
    d: &[f32],
    r: &[f32],
    k: &[f32],
    v: &[f32],
    a: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    for i in 0..n {
        let row = &mut state[i * n..(i + 1) * n];
        let sa = dot(row, a);
        let vi = v[i];
        for j in 0..n {
            row[j] = row[j] * d[j] + sa * b[j] + vi * k[j];
        }
        y[i] = dot(row, r);
    }
}

/// Runs the recurrence; `state0` defaults to zeros.
pub fn forward(dims: Wkv7Dims, x: Wkv7Inputs<'_>, state0: Option<&[f32]>) -> Wkv7Forward {
    let (n, nn, chunks) = (
        dims.head_size,
        dims.head_size * dims.head_size,
        dims.chunks(),
    );
    let tasks: Vec<(usize, usize)> = (0..dims.batch)
        .flat_map(|b| (0..dims.heads).map(move |h| (b, h)))
        .collect();
    let per_head: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(b, h)| {
            let mut state = match state0 {
                Some(s) => s[(b * dims.heads + h) * nn..][..nn].to_vec(),
                None => vec![0.0; nn],
            };
            let mut snapshots = Vec::with_capacity(chunks * nn);
            let mut y = vec![0.0; dims.seq * n];
            let mut d = vec![0.0; n];
            for t in 0..dims.seq {
                if t % CHUNK_LEN == 0 {
                    snapshots.extend_from_slice(&state);
                }
                let o = dims.index(b, t, h);
                d.iter_mut()
                    .zip(tok(x.w, o, n))
                    .for_each(|(d, &w)| *d = decay(w));
                step(
                    &mut state,
                    n,
                    &d,
                    tok(x.r, o, n),
                    tok(x.k, o, n),
                    tok(x.v, o, n),
                    tok(x.a, o, n),
                    tok(x.b, o, n),
                    &mut y[t * n..(t + 1) * n],
                );
            }
            (y, state, snapshots)
        })
        .collect();
    let mut out = Wkv7Forward {
        y: vec![0.0; dims.seq_len()],
        state: Vec::with_capacity(dims.state_len()),
        snapshots: Vec::with_capacity(dims.batch * dims.heads * chunks * nn),
    };
    for (&(b, h), (y, state, snaps)) in tasks.iter().zip(per_head) {
        for t in 0..dims.seq {
            out.y[dims.index(b, t, h)..][..n].copy_from_slice(&y[t * n..(t + 1) * n]);
        }
        out.state.extend_from_slice(&state);
        out.snapshots.extend_from_slice(&snaps);
    }
    out
}

/// Gradients of L given dL/dy (`[B, T, H, N]`) and optionally dL/dS_T (`[B, H, N, N]`).
pub fn backward(
    dims: Wkv7Dims,
    x: Wkv7Inputs<'_>,
    snapshots: &[f32],
    dy: &[f32],
    d_state: Option<&[f32]>,
) -> Wkv7Grads {
    let (n, nn, chunks) = (
        dims.head_size,
        dims.head_size * dims.head_size,
        dims.chunks(),
    );
    let tasks: Vec<(usize, usize)> = (0..dims.batch)
        .flat_map(|b| (0..dims.heads).map(move |h| (b, h)))
        .collect();
    let per_head: Vec<([Vec<f32>; 6], Vec<f32>)> = tasks
        .par_iter()
        .map(|&(b, h)| {
            let head = b * dims.heads + h;
            let mut g = match d_state {
                Some(s) => s[head * nn..][..nn].to_vec(),
                None => vec![0.0; nn],
            };
            let mut grads: [Vec<f32>; 6] = std::array::from_fn(|_| vec![0.0; dims.seq * n]);
            // states[s] = state before token chunk_start + s (CHUNK_LEN + 1 of them).
            let mut states = vec![0.0; (CHUNK_LEN + 1) * nn];
            let mut scratch_y = vec![0.0; n];
            let (mut d, mut sa, mut dsa) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            let mut acc = vec![0.0f32; 5 * n];
            for c in (0..chunks).rev() {
                let start = c * CHUNK_LEN;
                let len = CHUNK_LEN.min(dims.seq - start);
                states[..nn].copy_from_slice(&snapshots[(head * chunks + c) * nn..][..nn]);
                for s in 0..len {
                    let o = dims.index(b, start + s, h);
                    d.iter_mut()
                        .zip(tok(x.w, o, n))
                        .for_each(|(d, &w)| *d = decay(w));
                    let (before, after) = states.split_at_mut((s + 1) * nn);
                    after[..nn].copy_from_slice(&before[s * nn..]);
                    step(
                        &mut after[..nn],
                        n,
                        &d,
                        tok(x.r, o, n),
                        tok(x.k, o, n),
                        tok(x.v, o, n),
                        tok(x.a, o, n),
                        tok(x.b, o, n),
                        &mut scratch_y,
                    );
                }
                for s in (0..len).rev() {
                    let t = start + s;
                    let o = dims.index(b, t, h);
                    let (r, w, k, v, a, bb, dyt) = (
                        tok(x.r, o, n),
                        tok(x.w, o, n),
                        tok(x.k, o, n),
                        tok(x.v, o, n),
                        tok(x.a, o, n),
                        tok(x.b, o, n),
                        tok(dy, o, n),
                    );
                    let prev = &states[s * nn..(s + 1) * nn];
                    let cur = &states[(s + 1) * nn..(s + 2) * nn];
                    d.iter_mut().zip(w).for_each(|(d, &w)| *d = decay(w));
                    // G += dy rᵀ
                    for i in 0..n {
                        let gi = &mut g[i * n..(i + 1) * n];
                        gi.iter_mut().zip(r).for_each(|(g, &r)| *g += dyt[i] * r);
                    }
                    for i in 0..n {
                        let (pi, gi) = (&prev[i * n..(i + 1) * n], &g[i * n..(i + 1) * n]);
                        sa[i] = dot(pi, a);
                        dsa[i] = dot(gi, bb);
                        grads[3][s_idx(t, n) + i] = dot(gi, k);
                    }
                    // Column sums over the value index i, accumulated row by row so the inner loop
                    // runs over contiguous memory (and vectorises).
                    acc.iter_mut().for_each(|x| *x = 0.0);
                    let (dr, rest) = acc.split_at_mut(n);
                    let (dd, rest) = rest.split_at_mut(n);
                    let (dk, rest) = rest.split_at_mut(n);
                    let (db, da) = rest.split_at_mut(n);
                    for i in 0..n {
                        let (gi, pi, ci) = (
                            &g[i * n..(i + 1) * n],
                            &prev[i * n..(i + 1) * n],
                            &cur[i * n..(i + 1) * n],
                        );
                        let (dyi, vi, sai, dsai) = (dyt[i], v[i], sa[i], dsa[i]);
                        for j in 0..n {
                            dr[j] += ci[j] * dyi;
                            dd[j] += gi[j] * pi[j];
                            dk[j] += gi[j] * vi;
                            db[j] += gi[j] * sai;
                            da[j] += pi[j] * dsai;
                        }
                    }
                    let [gr, gw, gk, _, ga, gb] = &mut grads;
                    let base = s_idx(t, n);
                    for j in 0..n {
                        gr[base + j] = dr[j];
                        gw[base + j] = dd[j] * d[j] * -w[j].exp();
                        gk[base + j] = dk[j];
                        gb[base + j] = db[j];
                        ga[base + j] = da[j];
                    }
                    // G ← G diag(d) + dsa aᵀ
                    for i in 0..n {
                        let gi = &mut g[i * n..(i + 1) * n];
                        for j in 0..n {
                            gi[j] = gi[j] * d[j] + dsa[i] * a[j];
                        }
                    }
                }
            }
            (grads, g)
        })
        .collect();
    let zeros = || vec![0.0; dims.seq_len()];
    let mut out = Wkv7Grads {
        r: zeros(),
        w: zeros(),
        k: zeros(),
        v: zeros(),
        a: zeros(),
        b: zeros(),
        state0: Vec::with_capacity(dims.state_len()),
    };
    for (&(b, h), (grads, g0)) in tasks.iter().zip(per_head) {
        let targets = [
            &mut out.r, &mut out.w, &mut out.k, &mut out.v, &mut out.a, &mut out.b,
        ];
        for (dst, src) in targets.into_iter().zip(&grads) {
            for t in 0..dims.seq {
                dst[dims.index(b, t, h)..][..n].copy_from_slice(&src[s_idx(t, n)..][..n]);
            }
        }
        out.state0.extend_from_slice(&g0);
    }
    out
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it (a plain
/// f32 `sum()` is a serial dependency chain).
#[inline]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for l in 0..8 {
            lanes[l] += a[l] * b[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The `n` values of one token and head starting at offset `o`.
#[inline]
fn tok(v: &[f32], o: usize, n: usize) -> &[f32] {
    &v[o..o + n]
}

#[inline]
fn s_idx(t: usize, n: usize) -> usize {
    t * n
}
