//! Data parallelism: the ranks a run trains on, and how one optimiser step is shared among them.
//!
//! Each rank is a device with its own copy of the stage's objective (a teacher on that device).
//! A step's `N × grad_accum` micro-batches are the next ones of the single data stream, dealt
//! round-robin (micro-batch k of the step to rank k mod N). Every rank runs its share on a copy
//! of rank 0's weights, in its own thread, with each loss scaled by 1/(N·grad_accum); the
//! gradients are then summed over the ranks by a [`Collective`], and rank 0 alone holds AdamW's
//! moments, steps, writes the metrics and the checkpoints. Its new weights are copied to the
//! other ranks at the start of the next step.
//!
//! So a step on N ranks is the step one device takes with `N × grad_accum` accumulated
//! micro-batches (up to the order of a float sum), and the checkpointed data position is the
//! same stream whatever N is: a run may resume on a different number of devices.
//!
//! The collective is Burn's own ([`BurnAllReduce`]: NCCL, CUDA only in Burn 0.22.1);
//! [`SharedMemoryRanks`] runs N ranks on one device so the logic is tested without N GPUs.

use std::sync::{Barrier, Mutex};
use std::thread;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::distributed::{
    DistributedConfig, DistributedContext, ReduceOperation, all_reduce,
};

use super::objective::Objective;
use crate::data::DataPosition;
use crate::error::{Error, Result};

/// Sums one tensor over the ranks of a data-parallel run.
pub trait Collective: Sync {
    /// The sum over every rank of its `tensor`, on the caller's device. Every rank calls it
    /// from its own thread, for the same parameters in the same order.
    fn sum(&self, rank: usize, tensor: Tensor<1>) -> Tensor<1>;
}

/// Burn's collective all-reduce over one device per rank (NCCL; CUDA only in Burn 0.22.1).
pub struct BurnAllReduce {
    devices: Vec<Device>,
    _context: DistributedContext,
}

impl BurnAllReduce {
    /// Starts Burn's communication server for `devices` (stopped when this is dropped).
    pub fn start(devices: Vec<Device>) -> Self {
        let context = DistributedContext::init(
            devices.clone(),
            DistributedConfig {
                all_reduce_op: ReduceOperation::Sum,
            },
        );
        Self {
            devices,
            _context: context,
        }
    }
}

impl Collective for BurnAllReduce {
    fn sum(&self, _rank: usize, tensor: Tensor<1>) -> Tensor<1> {
        all_reduce(tensor, ReduceOperation::Sum, self.devices.clone()).resolve()
    }
}

/// N ranks on one device, summing through shared memory in rank order: the data-parallel logic
/// without N GPUs (what the tests run).
pub struct SharedMemoryRanks {
    slots: Mutex<Vec<Option<Tensor<1>>>>,
    arrived: Barrier,
    read: Barrier,
}

impl SharedMemoryRanks {
    /// A collective for `ranks` threads.
    pub fn new(ranks: usize) -> Self {
        Self {
            slots: Mutex::new(vec![None; ranks]),
            arrived: Barrier::new(ranks),
            read: Barrier::new(ranks),
        }
    }
}

impl Collective for SharedMemoryRanks {
    fn sum(&self, rank: usize, tensor: Tensor<1>) -> Tensor<1> {
        self.slots.lock().expect("no rank panics holding it")[rank] = Some(tensor);
        self.arrived.wait();
        let total = self
            .slots
            .lock()
            .expect("no rank panics holding it")
            .iter()
            .map(|t| t.clone().expect("every rank has arrived"))
            .reduce(|a, b| a + b)
            .expect("at least one rank");
        // Nobody overwrites a slot for the next parameter before every rank has read this one.
        self.read.wait();
        total
    }
}

/// One rank: its objective (holding what it needs on its device) and its device.
pub struct Rank<'a, M> {
    /// The stage's objective, on this rank's device.
    pub objective: &'a dyn Objective<M>,
    /// The device the rank computes on.
    pub device: Device,
}

/// The ranks a run trains on; rank 0 holds the loop's model and optimiser.
pub struct Ranks<'a, M> {
    ranks: Vec<Rank<'a, M>>,
    collective: Option<&'a dyn Collective>,
}

impl<'a, M> Ranks<'a, M> {
    /// One device, no collective.
    pub fn single(objective: &'a dyn Objective<M>, device: &Device) -> Self {
        Self {
            ranks: vec![Rank {
                objective,
                device: device.clone(),
            }],
            collective: None,
        }
    }

    /// Several ranks whose gradients `collective` sums (rank 0 first: the model's device).
    pub fn data_parallel(ranks: Vec<Rank<'a, M>>, collective: &'a dyn Collective) -> Result<Self> {
        if ranks.is_empty() {
            return Err(Error::Setting {
                scope: "data parallelism".into(),
                key: "devices".into(),
                message: "needs at least one rank".into(),
            });
        }
        Ok(Self {
            ranks,
            collective: Some(collective),
        })
    }

    /// How many ranks.
    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    /// Never: there is always rank 0.
    pub fn is_empty(&self) -> bool {
        self.ranks.is_empty()
    }

    /// Rank 0's objective (whose data positions every rank shares).
    pub fn lead(&self) -> &Rank<'a, M> {
        &self.ranks[0]
    }
}

/// A rank's part of a step: given the rank, its replica of the model and the positions of its
/// micro-batches in stream order, its gradients and sums.
pub type RankWork<'s, M, S> =
    dyn Fn(&Rank<'_, M>, M, &[DataPosition]) -> Result<RankShare<M, S>> + Sync + 's;

/// What one rank's share of a step produced: its gradients and whatever the caller sums besides.
pub struct RankShare<M, S> {
    replica: M,
    grads: GradientsParams,
    /// The caller's per-rank sums (losses, tokens, …).
    pub sums: S,
}

impl<M, S> RankShare<M, S> {
    /// A share computed on `replica`.
    pub fn new(replica: M, grads: GradientsParams, sums: S) -> Self {
        Self {
            replica,
            grads,
            sums,
        }
    }
}

impl<M: Module> Ranks<'_, M> {
    /// One step's gradients, summed over the ranks, and each rank's sums: `positions` (the step's
    /// micro-batches in stream order) dealt round-robin, `share` run for each rank on a copy of
    /// `model` on its device. The first error of any rank is returned and nothing is reduced.
    pub fn step<S: Send>(
        &self,
        model: &M,
        positions: &[DataPosition],
        share: &RankWork<'_, M, S>,
    ) -> Result<(GradientsParams, Vec<S>)> {
        let n = self.ranks.len();
        let dealt = |r: usize| -> Vec<DataPosition> {
            positions.iter().copied().skip(r).step_by(n).collect()
        };
        let Some(collective) = self.collective.filter(|_| n > 1) else {
            let s = share(&self.ranks[0], model.clone(), &dealt(0))?;
            return Ok((s.grads, vec![s.sums]));
        };
        // Every rank's share on a copy of rank 0's weights (the broadcast), in its own thread.
        let shares: Vec<Result<RankShare<M, S>>> = thread::scope(|s| {
            let handles: Vec<_> = self
                .ranks
                .iter()
                .enumerate()
                .map(|(r, rank)| {
                    let replica = model.clone().fork(&rank.device);
                    let mine = dealt(r);
                    s.spawn(move || share(rank, replica, &mine))
                })
                .collect();
            handles.into_iter().map(join).collect()
        });
        let shares = shares.into_iter().collect::<Result<Vec<_>>>()?;
        let ids = gradient_ids(&shares[0].replica, &shares[0].grads);
        for (r, s) in shares.iter().enumerate().skip(1) {
            if gradient_ids(&s.replica, &s.grads) != ids {
                return Err(Error::Invalid(format!(
                    "data parallelism: rank {r} has gradients for other parameters than rank 0"
                )));
            }
        }
        // The all-reduce: every rank at once (NCCL waits for all of them); rank 0's sum is kept.
        let mut sums = Vec::with_capacity(n);
        let reduced: Vec<GradientsParams> = thread::scope(|s| {
            let handles: Vec<_> = shares
                .into_iter()
                .enumerate()
                .map(|(r, share)| {
                    sums.push(share.sums);
                    let (replica, grads) = (share.replica, share.grads);
                    s.spawn(move || reduce(collective, r, &replica, grads))
                })
                .collect();
            handles.into_iter().map(join).collect()
        });
        let grads = reduced.into_iter().next().expect("rank 0");
        Ok((grads, sums))
    }
}

/// A rank thread's result; a panic in it is re-raised here, with its own message.
fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The parameters of `module` that `grads` holds a gradient for, in visiting order.
fn gradient_ids<M: Module>(module: &M, grads: &GradientsParams) -> Vec<ParamId> {
    struct Ids<'a> {
        grads: &'a GradientsParams,
        ids: Vec<ParamId>,
    }
    impl ModuleVisitor for Ids<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.grads.get::<D>(param.id).is_some() {
                self.ids.push(param.id);
            }
        }
    }
    let mut ids = Ids { grads, ids: vec![] };
    module.visit(&mut ids);
    ids.ids
}

/// `grads` with each gradient replaced by its sum over the ranks, parameter by parameter.
fn reduce<M: Module>(
    collective: &dyn Collective,
    rank: usize,
    module: &M,
    mut grads: GradientsParams,
) -> GradientsParams {
    struct Sum<'a> {
        collective: &'a dyn Collective,
        rank: usize,
        grads: &'a mut GradientsParams,
    }
    impl ModuleVisitor for Sum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let shape = g.shape();
                let flat = g.reshape([shape.num_elements()]);
                let total = self.collective.sum(self.rank, flat).reshape(shape);
                self.grads.register::<D>(param.id, total);
            }
        }
    }
    module.visit(&mut Sum {
        collective,
        rank,
        grads: &mut grads,
    });
    grads
}
