//! WKV-7 as CubeCL kernels: one source for WGPU (Vulkan, Metal, lavapipe), CUDA and ROCm. No plane
//! operations, no tensor cores, so every runtime runs them.
//!
//! Scheme (BlinkDL's `wkv7_cuda.cu` layout): one cube per (head, batch), one unit per value row i.
//! * Forward: unit i keeps row i of the state in registers; each step the step's r, d, k, a, b
//!   vectors go through shared memory; the state is written out at the start of every chunk of
//!   [`CHUNK_LEN`] tokens (the snapshots).
//! * Backward: unit i keeps row i **and column i** of both the state and its gradient, so every sum
//!   over the other index is local. Chunks are walked from the last; each chunk's states are first
//!   recomputed from its snapshot (exact — no division by the decay, unlike backstepping) into a
//!   scratch buffer private to each unit, then the gradient formulas of `docs/METHOD.md` §3.2 run backwards.

use burn::prelude::Shape;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::cpu::CHUNK_LEN;
use super::extension::{Wkv7Backend, dims_of_shape, grads_len, packed_len, snapshot_shape};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn wkv7_forward_kernel<F: Float>(
    r: &Tensor<F>,
    w: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    state0: &Tensor<F>,
    packed: &mut Tensor<F>,
    snapshots: &mut Tensor<F>,
    seq_len: u32,
    #[comptime] n: usize,
    #[comptime] chunk: usize,
    #[define(F)] _dtype: ElemType,
) {
    let h = CUBE_POS_X as usize;
    let bi = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_X as usize;
    let batch = CUBE_COUNT_Y as usize;
    let i = UNIT_POS_X as usize;
    let t_len = seq_len as usize;
    let chunks = t_len.div_ceil(chunk);
    let head = bi * heads + h;
    let row = (head * n + i) * n;
    let y_len = batch * t_len * heads * n;

    let mut s = Array::<F>::new(n);
    #[unroll]
    for j in 0..n {
        s[j] = state0[row + j];
    }
    let mut sh_r = Shared::<[F]>::new_slice(n);
    let mut sh_d = Shared::<[F]>::new_slice(n);
    let mut sh_k = Shared::<[F]>::new_slice(n);
    let mut sh_a = Shared::<[F]>::new_slice(n);
    let mut sh_b = Shared::<[F]>::new_slice(n);

    for t in 0..t_len {
        if t % chunk == 0 {
            let snap = ((head * chunks + t / chunk) * n + i) * n;
            #[unroll]
            for j in 0..n {
                snapshots[snap + j] = s[j];
            }
        }
        let base = ((bi * t_len + t) * heads + h) * n;
        sh_r[i] = r[base + i];
        sh_d[i] = F::exp(F::new(0.0) - F::exp(w[base + i]));
        sh_k[i] = k[base + i];
        sh_a[i] = a[base + i];
        sh_b[i] = b[base + i];
        let vi = v[base + i];
        sync_cube();
        // sa = S a (state before the update)
        let mut sa = F::new(0.0);
        #[unroll]
        for j in 0..n {
            sa += s[j] * sh_a[j];
        }
        // S ← S diag(d) + sa bᵀ + v kᵀ;  y = S r
        let mut y = F::new(0.0);
        #[unroll]
        for j in 0..n {
            let x = s[j] * sh_d[j] + sa * sh_b[j] + vi * sh_k[j];
            s[j] = x;
            y += x * sh_r[j];
        }
        packed[base + i] = y;
        sync_cube();
    }
    #[unroll]
    for j in 0..n {
        packed[y_len + row + j] = s[j];
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn wkv7_backward_kernel<F: Float>(
    r: &Tensor<F>,
    w: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    snapshots: &Tensor<F>,
    d_packed: &Tensor<F>,
    grads: &mut Tensor<F>,
    scratch: &mut Tensor<F>,
    seq_len: u32,
    #[comptime] n: usize,
    #[comptime] chunk: usize,
    #[define(F)] _dtype: ElemType,
) {
    let h = CUBE_POS_X as usize;
    let bi = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_X as usize;
    let batch = CUBE_COUNT_Y as usize;
    let i = UNIT_POS_X as usize;
    let t_len = seq_len as usize;
    let chunks = t_len.div_ceil(chunk);
    let head = bi * heads + h;
    let seq = batch * t_len * heads * n;
    let nn = n * n;
    let scratch_head = head * chunk * 2 * nn;

    // Gradient of the final state: row i and column i.
    let mut ds_row = Array::<F>::new(n);
    let mut ds_col = Array::<F>::new(n);
    #[unroll]
    for j in 0..n {
        ds_row[j] = d_packed[seq + head * nn + i * n + j];
        ds_col[j] = d_packed[seq + head * nn + j * n + i];
    }
    let mut s_row = Array::<F>::new(n);
    let mut s_col = Array::<F>::new(n);
    let mut sh_r = Shared::<[F]>::new_slice(n);
    let mut sh_d = Shared::<[F]>::new_slice(n);
    let mut sh_k = Shared::<[F]>::new_slice(n);
    let mut sh_v = Shared::<[F]>::new_slice(n);
    let mut sh_a = Shared::<[F]>::new_slice(n);
    let mut sh_b = Shared::<[F]>::new_slice(n);
    let mut sh_dy = Shared::<[F]>::new_slice(n);
    let mut sh_sa = Shared::<[F]>::new_slice(n);
    let mut sh_dsb = Shared::<[F]>::new_slice(n);

    let mut c = chunks;
    while c > 0 {
        c -= 1;
        let t0 = c * chunk;
        let mut t1 = t0 + chunk;
        if t1 > t_len {
            t1 = t_len;
        }
        let snap = (head * chunks + c) * nn;
        #[unroll]
        for j in 0..n {
            s_row[j] = snapshots[snap + i * n + j];
            s_col[j] = snapshots[snap + j * n + i];
        }
        // Recompute the chunk's states, keeping S_{t-1} (the state before step t).
        for t in t0..t1 {
            let sc = scratch_head + (t - t0) * 2 * nn;
            #[unroll]
            for j in 0..n {
                scratch[sc + j * n + i] = s_row[j];
                scratch[sc + nn + j * n + i] = s_col[j];
            }
            let base = ((bi * t_len + t) * heads + h) * n;
            sh_d[i] = F::exp(F::new(0.0) - F::exp(w[base + i]));
            sh_k[i] = k[base + i];
            sh_v[i] = v[base + i];
            sh_a[i] = a[base + i];
            sh_b[i] = b[base + i];
            sync_cube();
            let mut sa = F::new(0.0);
            #[unroll]
            for j in 0..n {
                sa += s_row[j] * sh_a[j];
            }
            sh_sa[i] = sa;
            sync_cube();
            #[unroll]
            for j in 0..n {
                s_row[j] = s_row[j] * sh_d[j] + sa * sh_b[j] + sh_v[i] * sh_k[j];
                s_col[j] = s_col[j] * sh_d[i] + sh_sa[j] * sh_b[i] + sh_v[j] * sh_k[i];
            }
            sync_cube();
        }
        // Walk the chunk backwards; s_* hold S_t on entry of step t.
        let mut t = t1;
        while t > t0 {
            t -= 1;
            let base = ((bi * t_len + t) * heads + h) * n;
            let wi = w[base + i];
            sh_r[i] = r[base + i];
            sh_d[i] = F::exp(F::new(0.0) - F::exp(wi));
            sh_k[i] = k[base + i];
            sh_v[i] = v[base + i];
            sh_a[i] = a[base + i];
            sh_b[i] = b[base + i];
            sh_dy[i] = d_packed[base + i];
            sync_cube();
            // dS += dy rᵀ;  dr = S_tᵀ dy
            let mut dr = F::new(0.0);
            #[unroll]
            for j in 0..n {
                ds_row[j] += sh_dy[i] * sh_r[j];
                ds_col[j] += sh_dy[j] * sh_r[i];
                dr += s_col[j] * sh_dy[j];
            }
            // Back to S_{t-1}.
            let sc = scratch_head + (t - t0) * 2 * nn;
            #[unroll]
            for j in 0..n {
                s_row[j] = scratch[sc + j * n + i];
                s_col[j] = scratch[sc + nn + j * n + i];
            }
            let mut sa = F::new(0.0);
            let mut dsb = F::new(0.0);
            let mut dv = F::new(0.0);
            let mut dk = F::new(0.0);
            #[unroll]
            for j in 0..n {
                sa += s_row[j] * sh_a[j];
                dsb += ds_row[j] * sh_b[j];
                dv += ds_row[j] * sh_k[j];
                dk += ds_col[j] * sh_v[j];
            }
            sh_sa[i] = sa;
            sh_dsb[i] = dsb;
            sync_cube();
            let mut dd = F::new(0.0);
            let mut da = F::new(0.0);
            let mut db = F::new(0.0);
            #[unroll]
            for j in 0..n {
                dd += s_col[j] * ds_col[j];
                da += s_col[j] * sh_dsb[j];
                db += sh_sa[j] * ds_col[j];
            }
            let di = sh_d[i];
            grads[base + i] = dr;
            grads[seq + base + i] = F::new(0.0) - dd * di * F::exp(wi);
            grads[2 * seq + base + i] = dk;
            grads[3 * seq + base + i] = dv;
            grads[4 * seq + base + i] = da;
            grads[5 * seq + base + i] = db;
            // dS_{t-1} = dS (diag(d) + a bᵀ)ᵀ
            let ai = sh_a[i];
            #[unroll]
            for j in 0..n {
                ds_row[j] = ds_row[j] * sh_d[j] + dsb * sh_a[j];
                ds_col[j] = ds_col[j] * di + sh_dsb[j] * ai;
            }
            sync_cube();
        }
    }
    #[unroll]
    for j in 0..n {
        grads[6 * seq + head * nn + i * n + j] = ds_row[j];
    }
}

fn dtype_of(t: &CubeTensor) -> ElemType {
    burn::backend::cubecl::dtype_to_storage_type(t.dtype)
}

impl Wkv7Backend for CubeBackend {
    fn wkv7_forward(
        r: CubeTensor,
        w: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        a: CubeTensor,
        b: CubeTensor,
        state0: CubeTensor,
    ) -> (CubeTensor, CubeTensor) {
        let d = dims_of_shape(&burn::backend::TensorMetadata::shape(&r));
        let [r, w, k, v, a, b, state0] = [r, w, k, v, a, b, state0].map(into_contiguous);
        let (client, device, dtype) = (r.client.clone(), r.device.clone(), r.dtype);
        let packed = empty_device_dtype(
            client.clone(),
            device.clone(),
            Shape::new([packed_len(d)]),
            dtype,
        );
        let snapshots =
            empty_device_dtype(client.clone(), device, Shape::new(snapshot_shape(d)), dtype);
        let elem = dtype_of(&r);
        wkv7_forward_kernel::launch(
            &client,
            CubeCount::Static(d.heads as u32, d.batch as u32, 1),
            CubeDim::new_1d(d.head_size as u32),
            r.into_tensor_arg(),
            w.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            state0.into_tensor_arg(),
            packed.clone().into_tensor_arg(),
            snapshots.clone().into_tensor_arg(),
            d.seq as u32,
            d.head_size,
            CHUNK_LEN,
            elem,
        );
        (packed, snapshots)
    }

    fn wkv7_backward(
        r: CubeTensor,
        w: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        a: CubeTensor,
        b: CubeTensor,
        _state0: CubeTensor,
        snapshots: CubeTensor,
        d_packed: CubeTensor,
    ) -> CubeTensor {
        let d = dims_of_shape(&burn::backend::TensorMetadata::shape(&r));
        let [r, w, k, v, a, b, snapshots, d_packed] =
            [r, w, k, v, a, b, snapshots, d_packed].map(into_contiguous);
        let (client, device, dtype) = (r.client.clone(), r.device.clone(), r.dtype);
        let grads = empty_device_dtype(
            client.clone(),
            device.clone(),
            Shape::new([grads_len(d)]),
            dtype,
        );
        let n = d.head_size;
        let scratch = empty_device_dtype(
            client.clone(),
            device,
            Shape::new([d.batch * d.heads * CHUNK_LEN * 2 * n * n]),
            dtype,
        );
        let elem = dtype_of(&r);
        wkv7_backward_kernel::launch(
            &client,
            CubeCount::Static(d.heads as u32, d.batch as u32, 1),
            CubeDim::new_1d(n as u32),
            r.into_tensor_arg(),
            w.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            snapshots.into_tensor_arg(),
            d_packed.into_tensor_arg(),
            grads.clone().into_tensor_arg(),
            scratch.into_tensor_arg(),
            d.seq as u32,
            n,
            CHUNK_LEN,
            elem,
        );
        grads
    }
}
