//! WKV-7 as a Burn backend extension: `wkv7_forward` (outputs and state snapshots) and
//! `wkv7_backward` (all seven gradients from the snapshots) per backend, and one autodiff
//! implementation on top of them for every backend.
//!
//! * Flex: the plain-Rust kernels of [`super::cpu`];
//! * Cube (WGPU, CUDA, ROCm; through Fusion): the CubeCL kernels of [`super::cube`].
//!
//! Packing: the forward returns `[y (B·T·H·N) ‖ S_T (B·H·N·N)]` as one 1-D tensor so both outputs
//! hang off one autodiff node (the wrapper in [`super`] slices it apart), plus the snapshots
//! `[B, H, ⌈T/16⌉, N, N]`; the backward takes the packed output gradient and returns the packed
//! input gradients `[dr ‖ dw ‖ dk ‖ dv ‖ da ‖ db ‖ dS₀]`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::prelude::{Shape, TensorData};
use burn::tensor::Slice;

use super::cpu::{self, CHUNK_LEN, Wkv7Dims, Wkv7Inputs};

/// Output metadata of the forward, for lazy (fusion) backends.
#[cfg(feature = "cube")]
fn forward_meta(
    r: &burn::backend::fusion::custom::TensorSpec,
    _w: &burn::backend::fusion::custom::TensorSpec,
    _k: &burn::backend::fusion::custom::TensorSpec,
    _v: &burn::backend::fusion::custom::TensorSpec,
    _a: &burn::backend::fusion::custom::TensorSpec,
    _b: &burn::backend::fusion::custom::TensorSpec,
    _s0: &burn::backend::fusion::custom::TensorSpec,
) -> (
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
) {
    use burn::backend::fusion::custom::TensorSpec;
    let d = dims_of_shape(&r.shape);
    (
        TensorSpec::new(Shape::new([packed_len(d)]), r.dtype),
        TensorSpec::new(Shape::new(snapshot_shape(d)), r.dtype),
    )
}

/// Output metadata of the backward, for lazy (fusion) backends.
#[cfg(feature = "cube")]
#[allow(clippy::too_many_arguments)]
fn backward_meta(
    r: &burn::backend::fusion::custom::TensorSpec,
    _w: &burn::backend::fusion::custom::TensorSpec,
    _k: &burn::backend::fusion::custom::TensorSpec,
    _v: &burn::backend::fusion::custom::TensorSpec,
    _a: &burn::backend::fusion::custom::TensorSpec,
    _b: &burn::backend::fusion::custom::TensorSpec,
    _s0: &burn::backend::fusion::custom::TensorSpec,
    _snapshots: &burn::backend::fusion::custom::TensorSpec,
    _d_packed: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    let d = dims_of_shape(&r.shape);
    burn::backend::fusion::custom::TensorSpec::new(Shape::new([grads_len(d)]), r.dtype)
}

/// The WKV-7 recurrence as backend operations.
#[backend_extension(
    Flex,
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
    Autodiff
)]
pub trait Wkv7Backend: Backend {
    /// `([y ‖ S_T], snapshots)`; every input `[B, T, H, N]`, `state0` `[B, H, N, N]`, all f32.
    #[fusion(meta = forward_meta)]
    fn wkv7_forward(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        state0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Packed `[dr ‖ dw ‖ dk ‖ dv ‖ da ‖ db ‖ dS₀]` from the packed output gradient.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = backward_meta)]
    fn wkv7_backward(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        state0: FloatTensor<Self>,
        snapshots: FloatTensor<Self>,
        d_packed: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Sizes from an input's `[B, T, H, N]` shape.
pub fn dims_of_shape(shape: &Shape) -> Wkv7Dims {
    Wkv7Dims {
        batch: shape[0],
        seq: shape[1],
        heads: shape[2],
        head_size: shape[3],
    }
}

/// Length of the packed forward output.
pub fn packed_len(d: Wkv7Dims) -> usize {
    d.seq_len() + d.state_len()
}

/// Length of the packed gradients.
pub fn grads_len(d: Wkv7Dims) -> usize {
    6 * d.seq_len() + d.state_len()
}

/// Shape of the snapshots: one state per chunk of [`CHUNK_LEN`] tokens.
pub fn snapshot_shape(d: Wkv7Dims) -> [usize; 5] {
    [
        d.batch,
        d.heads,
        d.seq.div_ceil(CHUNK_LEN),
        d.head_size,
        d.head_size,
    ]
}

fn host(t: FlexTensor) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl Wkv7Backend for Flex {
    fn wkv7_forward(
        r: FlexTensor,
        w: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        a: FlexTensor,
        b: FlexTensor,
        state0: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        let d = dims_of_shape(&r.shape());
        let [r, w, k, v, a, b, s0] = [r, w, k, v, a, b, state0].map(host);
        let x = Wkv7Inputs {
            r: &r,
            w: &w,
            k: &k,
            v: &v,
            a: &a,
            b: &b,
        };
        let out = cpu::forward(d, x, Some(&s0));
        let mut packed = out.y;
        packed.extend_from_slice(&out.state);
        (
            flex(packed, vec![packed_len(d)]),
            flex(out.snapshots, snapshot_shape(d).to_vec()),
        )
    }

    fn wkv7_backward(
        r: FlexTensor,
        w: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        a: FlexTensor,
        b: FlexTensor,
        _state0: FlexTensor,
        snapshots: FlexTensor,
        d_packed: FlexTensor,
    ) -> FlexTensor {
        let d = dims_of_shape(&r.shape());
        let [r, w, k, v, a, b, snapshots, d_packed] =
            [r, w, k, v, a, b, snapshots, d_packed].map(host);
        let x = Wkv7Inputs {
            r: &r,
            w: &w,
            k: &k,
            v: &v,
            a: &a,
            b: &b,
        };
        let (dy, d_state) = d_packed.split_at(d.seq_len());
        let g = cpu::backward(d, x, &snapshots, dy, Some(d_state));
        let mut packed = Vec::with_capacity(grads_len(d));
        for part in [g.r, g.w, g.k, g.v, g.a, g.b, g.state0] {
            packed.extend_from_slice(&part);
        }
        flex(packed, vec![grads_len(d)])
    }
}

#[derive(Debug)]
struct Wkv7Backward;

impl<B: Wkv7Backend> Backward<B, 7> for Wkv7Backward {
    /// The seven inputs and the forward's snapshots.
    type State = (Vec<FloatTensor<B>>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 7>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (inputs, snapshots) = ops.state;
        let d = dims_of_shape(&inputs[0].shape());
        let d_packed = grads.consume::<B>(&ops.node);
        let [r, w, k, v, a, b, s0]: [FloatTensor<B>; 7] = inputs.try_into().expect("seven inputs");
        let packed = B::wkv7_backward(r, w, k, v, a, b, s0, snapshots, d_packed);
        let seq = d.seq_len();
        let seq_shape = Shape::new([d.batch, d.seq, d.heads, d.head_size]);
        let state_shape = Shape::new([d.batch, d.heads, d.head_size, d.head_size]);
        for (i, parent) in ops.parents.into_iter().enumerate() {
            let Some(node) = parent else { continue };
            let (start, shape) = if i < 6 {
                (i * seq, seq_shape.clone())
            } else {
                (6 * seq, state_shape.clone())
            };
            let len = shape.num_elements();
            let part = B::float_slice(packed.clone(), &[Slice::from(start..start + len)]);
            grads.register::<B>(node.id, B::float_reshape(part, shape));
        }
    }
}

impl<B: Wkv7Backend, C: CheckpointStrategy> Wkv7Backend for Autodiff<B, C> {
    fn wkv7_forward(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        state0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let tensors = [r, w, k, v, a, b, state0];
        let nodes = tensors.each_ref().map(|t| t.node());
        let [r, w, k, v, a, b, s0] = tensors.map(|t| t.into_primitive());
        let run = || {
            B::wkv7_forward(
                r.clone(),
                w.clone(),
                k.clone(),
                v.clone(),
                a.clone(),
                b.clone(),
                s0.clone(),
            )
        };
        match Wkv7Backward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (packed, snapshots) = run();
                let state = (vec![r, w, k, v, a, b, s0], snapshots.clone());
                (
                    prep.finish(state, packed),
                    <Self as burn::backend::AutodiffBackend>::from_inner(snapshots),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (packed, snapshots) = run();
                (
                    prep.finish(packed),
                    <Self as burn::backend::AutodiffBackend>::from_inner(snapshots),
                )
            }
        }
    }

    fn wkv7_backward(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        state0: FloatTensor<Self>,
        snapshots: FloatTensor<Self>,
        d_packed: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // Second-order gradients are not tracked: the result is a constant of the graph.
        let packed = B::wkv7_backward(
            r.into_primitive(),
            w.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            a.into_primitive(),
            b.into_primitive(),
            state0.into_primitive(),
            snapshots.into_primitive(),
            d_packed.into_primitive(),
        );
        <Self as burn::backend::AutodiffBackend>::from_inner(packed)
    }
}
