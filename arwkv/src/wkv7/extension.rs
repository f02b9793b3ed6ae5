//! The CPU path registered as a Burn backend extension: on a Flex device (with or without
//! autodiff) `Tensor` code runs [`super::cpu`] forward, and the hand-written [`super::cpu::backward`]
//! as the gradient.
//!
//! The op returns one packed 1-D tensor `[y (B·T·H·N) ‖ S_T (B·H·N·N)]` so that both outputs hang
//! off one autodiff node; the wrapper in [`super`] slices it apart (and the slices' gradients flow
//! back into the packed gradient the backward unpacks).

use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::prelude::TensorData;

use super::cpu::{self, Wkv7Dims, Wkv7Inputs};

/// The WKV-7 recurrence as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait Wkv7Backend: Backend {
    /// Packed `[y ‖ S_T]` of the recurrence; every input `[B, T, H, N]`, `state0` `[B, H, N, N]`.
    fn wkv7_packed(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        state0: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

fn dims_of(r: &FlexTensor) -> Wkv7Dims {
    let shape = r.shape();
    Wkv7Dims {
        batch: shape[0],
        seq: shape[1],
        heads: shape[2],
        head_size: shape[3],
    }
}

fn host(t: FlexTensor) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

fn device_tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Host copies of the seven inputs.
#[derive(Clone, Debug)]
struct HostInputs {
    dims: Wkv7Dims,
    x: Arc<[Vec<f32>; 6]>,
    state0: Arc<Vec<f32>>,
}

impl HostInputs {
    fn new(inputs: [FlexTensor; 7]) -> Self {
        let dims = dims_of(&inputs[0]);
        let [r, w, k, v, a, b, s0] = inputs;
        Self {
            dims,
            x: Arc::new([host(r), host(w), host(k), host(v), host(a), host(b)]),
            state0: Arc::new(host(s0)),
        }
    }

    fn view(&self) -> Wkv7Inputs<'_> {
        let [r, w, k, v, a, b] = &*self.x;
        Wkv7Inputs { r, w, k, v, a, b }
    }

    fn forward(&self) -> (FlexTensor, Vec<f32>) {
        let out = cpu::forward(self.dims, self.view(), Some(&self.state0));
        let mut packed = out.y;
        packed.extend_from_slice(&out.state);
        let len = packed.len();
        (device_tensor(packed, vec![len]), out.snapshots)
    }
}

impl Wkv7Backend for Flex {
    fn wkv7_packed(
        r: FlexTensor,
        w: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        a: FlexTensor,
        b: FlexTensor,
        state0: FlexTensor,
    ) -> FlexTensor {
        HostInputs::new([r, w, k, v, a, b, state0]).forward().0
    }
}

#[derive(Debug)]
struct Wkv7Backward;

impl Backward<Flex, 7> for Wkv7Backward {
    type State = (HostInputs, Arc<Vec<f32>>);

    fn backward(
        self,
        ops: Ops<Self::State, 7>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (inputs, snapshots) = ops.state;
        let dims = inputs.dims;
        let d_packed = host(grads.consume::<Flex>(&ops.node));
        let (dy, d_state) = d_packed.split_at(dims.seq_len());
        let g = cpu::backward(dims, inputs.view(), &snapshots, dy, Some(d_state));
        let seq_shape = vec![dims.batch, dims.seq, dims.heads, dims.head_size];
        let state_shape = vec![dims.batch, dims.heads, dims.head_size, dims.head_size];
        let outputs = [
            (g.r, &seq_shape),
            (g.w, &seq_shape),
            (g.k, &seq_shape),
            (g.v, &seq_shape),
            (g.a, &seq_shape),
            (g.b, &seq_shape),
            (g.state0, &state_shape),
        ];
        for (parent, (grad, shape)) in ops.parents.into_iter().zip(outputs) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, device_tensor(grad, shape.clone()));
            }
        }
    }
}

impl<C: CheckpointStrategy> Wkv7Backend for Autodiff<Flex, C> {
    fn wkv7_packed(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        state0: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [
            r.node(),
            w.node(),
            k.node(),
            v.node(),
            a.node(),
            b.node(),
            state0.node(),
        ];
        let primitives = [
            r.into_primitive(),
            w.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            a.into_primitive(),
            b.into_primitive(),
            state0.into_primitive(),
        ];
        match Wkv7Backward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let inputs = HostInputs::new(primitives);
                let (packed, snapshots) = inputs.forward();
                prep.finish((inputs, Arc::new(snapshots)), packed)
            }
            OpsKind::UnTracked(prep) => prep.finish(HostInputs::new(primitives).forward().0),
        }
    }
}
