//! WKV-7: the Burn reference op against an f64 token-loop oracle (forward, final state and every
//! gradient, including the initial state's), and the oracle's backward against f64 finite differences.
//! The hand-written CPU path (`wkv7::cpu`) is held to the same oracle.
//! Tolerance: RMS-ratio ‖x − oracle‖ / ‖oracle‖ ≤ 1e-5 for f32 paths.

use arwkv::wkv7::cpu::{self, Wkv7Dims, Wkv7Inputs};
use arwkv::wkv7::reference::wkv7;
use burn::prelude::*;

const RMS_RATIO_TOLERANCE: f64 = 1e-5;

#[derive(Clone, Copy, Debug)]
struct Shape {
    b: usize,
    t: usize,
    h: usize,
    n: usize,
}

impl Shape {
    fn seq(&self) -> usize {
        self.b * self.t * self.h * self.n
    }
    fn state(&self) -> usize {
        self.b * self.h * self.n * self.n
    }
    fn x(&self, b: usize, t: usize, h: usize, j: usize) -> usize {
        ((b * self.t + t) * self.h + h) * self.n + j
    }
    fn s(&self, b: usize, h: usize, i: usize, j: usize) -> usize {
        ((b * self.h + h) * self.n + i) * self.n + j
    }
}

/// Inputs of one case, in f64.
#[derive(Clone)]
struct Inputs {
    r: Vec<f64>,
    w: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    s0: Vec<f64>,
}

struct Lcg(u64);
impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-12), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Inputs shaped like the time mixer's: a = −κ̂, b = κ̂·iclr with κ̂ unit-norm per head.
fn make_inputs(s: Shape, seed: u64, with_state: bool) -> Inputs {
    let mut g = Lcg(seed);
    let mut v = |scale: f64| (0..s.seq()).map(|_| scale * g.normal()).collect::<Vec<_>>();
    let r = v(0.5);
    let k = v(0.5);
    let vv = v(0.5);
    let kappa = v(1.0);
    let mut g = Lcg(seed ^ 0x9e37);
    let w: Vec<f64> = (0..s.seq()).map(|_| -3.0 + 2.5 * g.uniform()).collect();
    let iclr: Vec<f64> = (0..s.seq()).map(|_| g.uniform()).collect();
    let mut a = vec![0.0; s.seq()];
    let mut b = vec![0.0; s.seq()];
    for bi in 0..s.b {
        for t in 0..s.t {
            for h in 0..s.h {
                let norm = (0..s.n)
                    .map(|j| kappa[s.x(bi, t, h, j)].powi(2))
                    .sum::<f64>()
                    .sqrt();
                for j in 0..s.n {
                    let i = s.x(bi, t, h, j);
                    a[i] = -kappa[i] / norm;
                    b[i] = kappa[i] / norm * iclr[i];
                }
            }
        }
    }
    let s0 = if with_state {
        (0..s.state()).map(|_| 0.3 * g.normal()).collect()
    } else {
        vec![0.0; s.state()]
    };
    Inputs {
        r,
        w,
        k,
        v: vv,
        a,
        b,
        s0,
    }
}

/// Whether position `t` of row `bi` is padding (`padded` is `[B·T]`, or empty for none).
fn is_padded(padded: &[bool], s: Shape, bi: usize, t: usize) -> bool {
    !padded.is_empty() && padded[bi * s.t + t]
}

/// Forward in f64; returns y, the final state, and every state S_0..S_T per (b, h).
fn oracle_forward(s: Shape, x: &Inputs) -> (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
    oracle_forward_padded(s, x, &[])
}

/// [`oracle_forward`] where a padded position (`padded`, `[B·T]`) keeps the state and outputs 0,
/// as the reference's training kernel does.
fn oracle_forward_padded(
    s: Shape,
    x: &Inputs,
    padded: &[bool],
) -> (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
    let mut y = vec![0.0; s.seq()];
    let mut final_state = vec![0.0; s.state()];
    let mut history = Vec::new();
    for bi in 0..s.b {
        for h in 0..s.h {
            let mut st: Vec<f64> = (0..s.n * s.n).map(|e| x.s0[s.s(bi, h, 0, 0) + e]).collect();
            history.push(st.clone());
            for t in 0..s.t {
                if is_padded(padded, s, bi, t) {
                    history.push(st.clone());
                    continue;
                }
                let at = |v: &Vec<f64>, j: usize| v[s.x(bi, t, h, j)];
                let decay: Vec<f64> = (0..s.n).map(|j| (-(at(&x.w, j).exp())).exp()).collect();
                let sa: Vec<f64> = (0..s.n)
                    .map(|i| (0..s.n).map(|j| st[i * s.n + j] * at(&x.a, j)).sum())
                    .collect();
                for i in 0..s.n {
                    for j in 0..s.n {
                        st[i * s.n + j] = st[i * s.n + j] * decay[j]
                            + sa[i] * at(&x.b, j)
                            + at(&x.v, i) * at(&x.k, j);
                    }
                    y[s.x(bi, t, h, i)] = (0..s.n).map(|j| st[i * s.n + j] * at(&x.r, j)).sum();
                }
                history.push(st.clone());
            }
            final_state[s.s(bi, h, 0, 0)..s.s(bi, h, 0, 0) + s.n * s.n].copy_from_slice(&st);
        }
    }
    (y, final_state, history)
}

/// Gradients of L = Σ y·dy + Σ S_T·dS_T, by the backward formulas of `docs/METHOD.md` §3.2.
fn oracle_backward(s: Shape, x: &Inputs, dy: &[f64], ds_t: &[f64]) -> Inputs {
    oracle_backward_padded(s, x, dy, ds_t, &[])
}

/// [`oracle_backward`] of [`oracle_forward_padded`]: a padded step passes the state's gradient
/// through unchanged and gives its inputs none.
fn oracle_backward_padded(
    s: Shape,
    x: &Inputs,
    dy: &[f64],
    ds_t: &[f64],
    padded: &[bool],
) -> Inputs {
    let (_, _, history) = oracle_forward_padded(s, x, padded);
    let mut g = Inputs {
        r: vec![0.0; s.seq()],
        w: vec![0.0; s.seq()],
        k: vec![0.0; s.seq()],
        v: vec![0.0; s.seq()],
        a: vec![0.0; s.seq()],
        b: vec![0.0; s.seq()],
        s0: vec![0.0; s.state()],
    };
    let n = s.n;
    for bi in 0..s.b {
        for h in 0..s.h {
            let states = &history[(bi * s.h + h) * (s.t + 1)..(bi * s.h + h + 1) * (s.t + 1)];
            let mut gs: Vec<f64> = (0..n * n).map(|e| ds_t[s.s(bi, h, 0, 0) + e]).collect();
            for t in (0..s.t).rev() {
                if is_padded(padded, s, bi, t) {
                    continue;
                }
                let idx = |j: usize| s.x(bi, t, h, j);
                let (cur, prev) = (&states[t + 1], &states[t]);
                for i in 0..n {
                    for j in 0..n {
                        gs[i * n + j] += dy[idx(i)] * x.r[idx(j)];
                    }
                }
                let decay: Vec<f64> = (0..n).map(|j| (-(x.w[idx(j)].exp())).exp()).collect();
                let sa: Vec<f64> = (0..n)
                    .map(|i| (0..n).map(|j| prev[i * n + j] * x.a[idx(j)]).sum())
                    .collect();
                let dsa: Vec<f64> = (0..n)
                    .map(|i| (0..n).map(|j| gs[i * n + j] * x.b[idx(j)]).sum())
                    .collect();
                for j in 0..n {
                    g.r[idx(j)] = (0..n).map(|i| cur[i * n + j] * dy[idx(i)]).sum();
                    let ddecay: f64 = (0..n).map(|i| gs[i * n + j] * prev[i * n + j]).sum();
                    g.w[idx(j)] = ddecay * decay[j] * -(x.w[idx(j)].exp());
                    g.k[idx(j)] = (0..n).map(|i| gs[i * n + j] * x.v[idx(i)]).sum();
                    g.b[idx(j)] = (0..n).map(|i| gs[i * n + j] * sa[i]).sum();
                    g.a[idx(j)] = (0..n).map(|i| prev[i * n + j] * dsa[i]).sum();
                }
                for i in 0..n {
                    g.v[idx(i)] = (0..n).map(|j| gs[i * n + j] * x.k[idx(j)]).sum();
                }
                for i in 0..n {
                    for j in 0..n {
                        gs[i * n + j] = gs[i * n + j] * decay[j] + dsa[i] * x.a[idx(j)];
                    }
                }
            }
            g.s0[s.s(bi, h, 0, 0)..s.s(bi, h, 0, 0) + n * n].copy_from_slice(&gs);
        }
    }
    g
}

fn rms_ratio(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    (num / den.max(1e-300)).sqrt()
}

fn tensor4(v: &[f64], dims: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<f32>>(), dims),
        device,
    )
}

fn to_f64(t: Tensor<4>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

const SHAPES: [Shape; 5] = [
    Shape {
        b: 1,
        t: 16,
        h: 1,
        n: 32,
    },
    Shape {
        b: 1,
        t: 1,
        h: 1,
        n: 64,
    },
    Shape {
        b: 2,
        t: 5,
        h: 2,
        n: 8,
    },
    Shape {
        b: 1,
        t: 19,
        h: 2,
        n: 64,
    },
    Shape {
        b: 3,
        t: 33,
        h: 1,
        n: 16,
    },
];

type Op = fn(
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Option<Tensor<4>>,
) -> arwkv::Result<arwkv::wkv7::Wkv7Output>;

#[test]
fn reference_forward_and_gradients_match_the_f64_oracle() {
    check_against_oracle(wkv7, &Device::flex().autodiff());
}

#[test]
fn dispatched_op_matches_the_f64_oracle_on_every_device() {
    // Flex runs the hand-written CPU kernels, WGPU the CubeCL kernels, both through the backend
    // extension with their hand-written backward.
    for (kind, device) in arwkv_tests::test_devices() {
        eprintln!("wkv7 dispatched on {kind}");
        check_against_oracle(arwkv::wkv7::wkv7, &device.autodiff());
    }
    assert!(arwkv::wkv7::is_flex(&Device::flex().autodiff()));
    for (kind, device) in arwkv_tests::test_devices() {
        if kind == arwkv::BackendKind::Wgpu {
            assert!(
                arwkv::wkv7::is_cube(&device.autodiff()),
                "WGPU must take the CubeCL path"
            );
        }
    }
}

#[test]
fn dispatched_op_without_autodiff_and_without_initial_state() {
    let s = Shape {
        b: 2,
        t: 21,
        h: 2,
        n: 16,
    };
    let x = make_inputs(s, 3, false);
    let (y, s_t, _) = oracle_forward(s, &x);
    let device = Device::flex();
    let seq = [s.b, s.t, s.h, s.n];
    let t = |v: &[f64]| tensor4(v, seq, &device);
    let out =
        arwkv::wkv7::wkv7(t(&x.r), t(&x.w), t(&x.k), t(&x.v), t(&x.a), t(&x.b), None).unwrap();
    assert!(rms_ratio(&to_f64(out.y), &y) <= RMS_RATIO_TOLERANCE);
    assert!(rms_ratio(&to_f64(out.state), &s_t) <= RMS_RATIO_TOLERANCE);
}

fn check_against_oracle(op: Op, device: &Device) {
    for (case, &s) in SHAPES.iter().enumerate() {
        for with_state in [false, true] {
            let run = |[r, w, k, v, a, b]: [Tensor<4>; 6], s0| op(r, w, k, v, a, b, Some(s0));
            let seeds = (11 + case as u64, 99 + case as u64);
            check_case(s, seeds, with_state, &[], device, "", &run);
        }
    }
}

/// One case of `run` (the op on r, w, k, v, a, b and the initial state) against the f64 oracle:
/// y, the final state and every gradient within the tolerance. With padding (`padded`, `[B·T]`,
/// true = pad; empty for none) y and the input gradients at padded positions must be exactly 0.
fn check_case(
    s: Shape,
    (input_seed, grad_seed): (u64, u64),
    with_state: bool,
    padded: &[bool],
    device: &Device,
    path: &str,
    run: &dyn Fn([Tensor<4>; 6], Tensor<4>) -> arwkv::Result<arwkv::wkv7::Wkv7Output>,
) {
    let x = make_inputs(s, input_seed, with_state);
    let (y, s_t, _) = oracle_forward_padded(s, &x, padded);
    let mut g = Lcg(grad_seed);
    let dy: Vec<f64> = (0..s.seq()).map(|_| g.normal()).collect();
    let ds_t: Vec<f64> = (0..s.state()).map(|_| g.normal()).collect();
    let want = oracle_backward_padded(s, &x, &dy, &ds_t, padded);

    let seq = [s.b, s.t, s.h, s.n];
    let st = [s.b, s.h, s.n, s.n];
    let leaf = |v: &[f64], d: [usize; 4]| tensor4(v, d, device).require_grad();
    let (r, w, k, v, a, b, s0) = (
        leaf(&x.r, seq),
        leaf(&x.w, seq),
        leaf(&x.k, seq),
        leaf(&x.v, seq),
        leaf(&x.a, seq),
        leaf(&x.b, seq),
        leaf(&x.s0, st),
    );
    let inputs = [
        r.clone(),
        w.clone(),
        k.clone(),
        v.clone(),
        a.clone(),
        b.clone(),
    ];
    let out = run(inputs, s0.clone()).unwrap();
    let label = format!("{path} {s:?} state0={with_state}");
    let got_y = to_f64(out.y.clone());
    assert!(rms_ratio(&got_y, &y) <= RMS_RATIO_TOLERANCE, "{label}: y");
    assert!(
        rms_ratio(&to_f64(out.state.clone()), &s_t) <= RMS_RATIO_TOLERANCE,
        "{label}: final state"
    );
    let at_padding = |v: &[f64]| -> f64 {
        v.iter()
            .enumerate()
            .filter(|(i, _)| is_padded(padded, s, i / (s.t * s.h * s.n), i / (s.h * s.n) % s.t))
            .map(|(_, x)| x.abs())
            .fold(0.0, f64::max)
    };
    assert_eq!(at_padding(&got_y), 0.0, "{label}: y at padding");

    let loss =
        (out.y * tensor4(&dy, seq, device)).sum() + (out.state * tensor4(&ds_t, st, device)).sum();
    let grads = loss.backward();
    for (name, leaf, expected) in [
        ("dr", &r, &want.r),
        ("dw", &w, &want.w),
        ("dk", &k, &want.k),
        ("dv", &v, &want.v),
        ("da", &a, &want.a),
        ("db", &b, &want.b),
        ("dstate0", &s0, &want.s0),
    ] {
        let got = to_f64(leaf.grad(&grads).expect("gradient").inner());
        let ratio = rms_ratio(&got, expected);
        assert!(
            ratio <= RMS_RATIO_TOLERANCE,
            "{label}: {name} RMS-ratio {ratio:.2e}"
        );
        if name != "dstate0" {
            assert_eq!(at_padding(&got), 0.0, "{label}: {name} at padding");
        }
    }
}

#[test]
fn oracle_backward_matches_finite_differences() {
    let s = Shape {
        b: 1,
        t: 6,
        h: 2,
        n: 4,
    };
    let x = make_inputs(s, 5, true);
    let mut g = Lcg(7);
    let dy: Vec<f64> = (0..s.seq()).map(|_| g.normal()).collect();
    let ds_t: Vec<f64> = (0..s.state()).map(|_| g.normal()).collect();
    let loss = |x: &Inputs| {
        let (y, st, _) = oracle_forward(s, x);
        y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>()
            + st.iter().zip(&ds_t).map(|(a, b)| a * b).sum::<f64>()
    };
    let analytic = oracle_backward(s, &x, &dy, &ds_t);
    let eps = 1e-6;
    type Field = fn(&mut Inputs) -> &mut Vec<f64>;
    let fields: [(&str, Field, &Vec<f64>); 7] = [
        ("r", |x| &mut x.r, &analytic.r),
        ("w", |x| &mut x.w, &analytic.w),
        ("k", |x| &mut x.k, &analytic.k),
        ("v", |x| &mut x.v, &analytic.v),
        ("a", |x| &mut x.a, &analytic.a),
        ("b", |x| &mut x.b, &analytic.b),
        ("s0", |x| &mut x.s0, &analytic.s0),
    ];
    for (name, field, grad) in fields {
        let len = field(&mut x.clone()).len();
        let numeric: Vec<f64> = (0..len)
            .map(|i| {
                let (mut plus, mut minus) = (x.clone(), x.clone());
                field(&mut plus)[i] += eps;
                field(&mut minus)[i] -= eps;
                (loss(&plus) - loss(&minus)) / (2.0 * eps)
            })
            .collect();
        let ratio = rms_ratio(grad, &numeric);
        assert!(
            ratio <= 1e-7,
            "d{name}: analytic vs finite differences RMS-ratio {ratio:.2e}"
        );
    }
}

#[test]
fn mismatched_shapes_are_named() {
    let device = Device::flex();
    let z = |d: [usize; 4]| Tensor::<4>::zeros(d, &device);
    let err = wkv7(
        z([1, 2, 1, 4]),
        z([1, 2, 1, 4]),
        z([1, 3, 1, 4]),
        z([1, 2, 1, 4]),
        z([1, 2, 1, 4]),
        z([1, 2, 1, 4]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`k` has shape [1, 3, 1, 4]"), "{err}");
    let err = wkv7(
        z([1, 2, 1, 4]),
        z([1, 2, 1, 4]),
        z([1, 2, 1, 4]),
        z([1, 2, 1, 4]),
        z([1, 2, 1, 4]),
        z([1, 2, 1, 4]),
        Some(z([1, 1, 4, 3])),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("initial state has shape [1, 1, 4, 3]"),
        "{err}"
    );
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn cpu_forward_and_backward_match_the_f64_oracle() {
    for (case, &s) in SHAPES.iter().enumerate() {
        for with_state in [false, true] {
            let x = make_inputs(s, 31 + case as u64, with_state);
            let (y, s_t, _) = oracle_forward(s, &x);
            let mut g = Lcg(77 + case as u64);
            let dy: Vec<f64> = (0..s.seq()).map(|_| g.normal()).collect();
            let ds_t: Vec<f64> = (0..s.state()).map(|_| g.normal()).collect();
            let want = oracle_backward(s, &x, &dy, &ds_t);
            let dims = Wkv7Dims {
                batch: s.b,
                seq: s.t,
                heads: s.h,
                head_size: s.n,
            };
            let (r, w, k, v, a, b) = (
                f32s(&x.r),
                f32s(&x.w),
                f32s(&x.k),
                f32s(&x.v),
                f32s(&x.a),
                f32s(&x.b),
            );
            let inputs = Wkv7Inputs {
                r: &r,
                w: &w,
                k: &k,
                v: &v,
                a: &a,
                b: &b,
            };
            let s0 = f32s(&x.s0);
            let fwd = cpu::forward(dims, inputs, with_state.then_some(s0.as_slice()));
            let label = format!("{s:?} state0={with_state}");
            assert!(
                rms_ratio(&f64s(&fwd.y), &y) <= RMS_RATIO_TOLERANCE,
                "{label}: y"
            );
            assert!(
                rms_ratio(&f64s(&fwd.state), &s_t) <= RMS_RATIO_TOLERANCE,
                "{label}: final state"
            );
            let grads = cpu::backward(dims, inputs, &fwd.snapshots, &f32s(&dy), Some(&f32s(&ds_t)));
            for (name, got, expected) in [
                ("dr", &grads.r, &want.r),
                ("dw", &grads.w, &want.w),
                ("dk", &grads.k, &want.k),
                ("dv", &grads.v, &want.v),
                ("da", &grads.a, &want.a),
                ("db", &grads.b, &want.b),
                ("dstate0", &grads.state0, &want.s0),
            ] {
                let ratio = rms_ratio(&f64s(got), expected);
                assert!(
                    ratio <= RMS_RATIO_TOLERANCE,
                    "{label}: {name} RMS-ratio {ratio:.2e}"
                );
            }
        }
    }
}

/// WKV-7 with a padding mask: the op under test, given the mask `[B, T]` (1 = real token).
type PaddedOp = fn(
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Option<Tensor<4>>,
    &Tensor<2>,
) -> arwkv::Result<arwkv::wkv7::Wkv7Output>;

/// The tensor-op reference on masked inputs (what `wkv7_padded` does on devices without kernels).
#[allow(clippy::too_many_arguments)]
fn reference_padded(
    r: Tensor<4>,
    w: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    a: Tensor<4>,
    b: Tensor<4>,
    state0: Option<Tensor<4>>,
    mask: &Tensor<2>,
) -> arwkv::Result<arwkv::wkv7::Wkv7Output> {
    let [r, w, k, v, a, b] = arwkv::wkv7::mask_padding([r, w, k, v, a, b], mask)?;
    wkv7(r, w, k, v, a, b, state0)
}

/// Rows padded on the right, on the left, in the middle, and not at all (`[B·T]`, true = pad).
fn padding_pattern(s: Shape) -> Vec<bool> {
    (0..s.b)
        .flat_map(|bi| {
            (0..s.t).map(move |t| match bi % 4 {
                0 => t >= s.t - s.t / 3,
                1 => t < s.t / 4 + 1,
                2 => t % 3 == 1,
                _ => false,
            })
        })
        .collect()
}

const PADDED_SHAPES: [Shape; 2] = [
    Shape {
        b: 4,
        t: 13,
        h: 2,
        n: 16,
    },
    Shape {
        b: 3,
        t: 20,
        h: 1,
        n: 64,
    },
];

fn check_padded_against_oracle(op: PaddedOp, device: &Device, path: &str) {
    for (case, &s) in PADDED_SHAPES.iter().enumerate() {
        for with_state in [false, true] {
            let padded = padding_pattern(s);
            let real: Vec<f32> = padded.iter().map(|&p| if p { 0.0 } else { 1.0 }).collect();
            let mask = Tensor::<2>::from_data(TensorData::new(real, [s.b, s.t]), device);
            let run =
                |[r, w, k, v, a, b]: [Tensor<4>; 6], s0| op(r, w, k, v, a, b, Some(s0), &mask);
            let seeds = (51 + case as u64, 61 + case as u64);
            check_case(s, seeds, with_state, &padded, device, path, &run);
        }
    }
}

#[test]
fn padded_rows_match_the_f64_oracle_on_the_reference_path() {
    check_padded_against_oracle(reference_padded, &Device::flex().autodiff(), "reference");
}

#[test]
fn padded_rows_match_the_f64_oracle_on_every_device() {
    // Flex: the CPU kernels; WGPU: the CubeCL kernels; both with their hand-written backward.
    for (kind, device) in arwkv_tests::test_devices() {
        check_padded_against_oracle(
            arwkv::wkv7::wkv7_padded,
            &device.autodiff(),
            &format!("{kind:?}"),
        );
    }
}

#[test]
fn a_padding_mask_of_the_wrong_shape_is_named() {
    let device = Device::flex();
    let z = || Tensor::<4>::zeros([1, 2, 1, 4], &device);
    let mask = Tensor::<2>::ones([1, 3], &device);
    let err = arwkv::wkv7::wkv7_padded(z(), z(), z(), z(), z(), z(), None, &mask)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("padding mask has shape [1, 3], expected [B, T] = [1, 2]"),
        "{err}"
    );
}
