//! The one name tree of a model's parameters.
//!
//! A model's Burn module path *is* its Hugging Face tensor name: the struct fields are named as the
//! checkpoint names them (`model.layers.3.self_attn.q_proj.weight`), `Vec` elements add their index
//! and `Option` adds nothing. So each submodule writes its names exactly once — as its field names —
//! and everything that needs names walks the module:
//!
//! - saving: [`named_tensors`] lists every parameter under its path;
//! - loading: a model is first built as a *skeleton* (the same builder as random initialisation, with
//!   [`deferred`] parameters that are never computed) and [`fill`] replaces each parameter by the
//!   source's tensor of the same path and shape;
//! - the optimiser keys its moments by the same paths ([`PathTracker`]).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::save::NamedTensor;
use crate::weights::Checkpoint;

/// Tracks the dotted path of the parameter a visitor or mapper is at.
#[derive(Default)]
pub struct PathTracker {
    parts: Vec<String>,
}

impl PathTracker {
    /// Enters a field or element.
    pub fn enter(&mut self, name: &str) {
        self.parts.push(name.to_string());
    }

    /// Leaves the innermost field or element.
    pub fn exit(&mut self) {
        self.parts.pop();
    }

    /// The current dotted path.
    pub fn path(&self) -> String {
        self.parts.join(".")
    }
}

/// A parameter of `shape` whose value is never computed unless read: the slot a checkpoint fills.
/// Read before being filled, it is zeros.
pub fn deferred<const D: usize>(shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device: &Device, require_grad: bool| {
            Tensor::zeros(shape, device).set_require_grad(require_grad)
        },
        device.clone(),
        true,
        Shape::from(shape.to_vec()),
    )
}

/// Every float parameter of `module` under its path, in field order.
pub fn named_tensors<M: Module>(module: &M) -> Vec<NamedTensor> {
    let mut lister = Lister::default();
    module.visit(&mut lister);
    lister.out
}

#[derive(Default)]
struct Lister {
    path: PathTracker,
    out: Vec<NamedTensor>,
}

impl ModuleVisitor for Lister {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out
            .push(NamedTensor::new(self.path.path(), param.val()));
    }
}

/// Where [`fill`] takes tensors from: a checkpoint, or another model's parameters.
pub trait TensorSource {
    /// Whether the source holds `name`.
    fn contains(&self, name: &str) -> bool;
    /// Tensor `name`, which must have `shape`, on `device`.
    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>>;
}

impl TensorSource for Checkpoint {
    fn contains(&self, name: &str) -> bool {
        Checkpoint::contains(self, name)
    }
    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        self.load(name, shape, device)
    }
}

/// Another model's parameters by path (a student takes its teacher's embeddings, norms and MLPs).
pub struct ModelTensors(BTreeMap<String, NamedTensor>);

impl ModelTensors {
    /// The parameters of `module`.
    pub fn of<M: Module>(module: &M) -> Self {
        Self(
            named_tensors(module)
                .into_iter()
                .map(|t| (t.name().to_string(), t))
                .collect(),
        )
    }
}

impl TensorSource for ModelTensors {
    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        _device: &Device,
    ) -> Result<Tensor<D>> {
        let found = self
            .0
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("the source model has no tensor `{name}`")))?;
        if found.shape() != shape {
            return Err(Error::Invalid(format!(
                "tensor `{name}`: the source model's is {:?}, this model's {shape:?}",
                found.shape()
            )));
        }
        Ok(found.reshaped(shape))
    }
}

/// Replaces every parameter of `skeleton` by the source's tensor `{prefix}{path}` (of the same
/// shape), except those `keep` excuses when the source lacks them, which keep the skeleton's value.
/// Fails on the first missing or mis-shaped tensor, naming it.
pub fn fill<M: Module>(
    skeleton: M,
    source: &impl TensorSource,
    prefix: &str,
    device: &Device,
    keep: impl Fn(&str) -> bool,
) -> Result<M> {
    let mut filler = Filler {
        source,
        prefix,
        device,
        keep: &keep,
        path: PathTracker::default(),
        error: None,
    };
    let module = skeleton.map(&mut filler);
    match filler.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

struct Filler<'a, S, K> {
    source: &'a S,
    prefix: &'a str,
    device: &'a Device,
    keep: &'a K,
    path: PathTracker,
    error: Option<Error>,
}

impl<S: TensorSource, K: Fn(&str) -> bool> ModuleMapper for Filler<'_, S, K> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let name = format!("{}{}", self.prefix, self.path.path());
        if !self.source.contains(&name) && (self.keep)(&name) {
            return param;
        }
        let shape: [usize; D] = param.lazy_shape().dims();
        match self.source.tensor(&name, shape, self.device) {
            Ok(tensor) => Param::from_tensor(tensor),
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Fill;
    use crate::teacher::{Qwen2Config, Qwen2ForCausalLM};

    fn config(tied: bool) -> Qwen2Config {
        Qwen2Config::from_value(
            serde_json::json!({"model_type": "qwen2", "vocab_size": 16, "hidden_size": 8,
                "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "tie_word_embeddings": tied}),
            std::path::Path::new("config.json"),
        )
        .unwrap()
    }

    #[derive(Default)]
    struct Materialised(Vec<bool>);

    impl ModuleVisitor for Materialised {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.is_initialized());
        }
    }

    #[test]
    fn module_paths_are_the_hugging_face_tensor_names() {
        let device = crate::device::BackendKind::Cpu.device().unwrap();
        let model = Qwen2ForCausalLM::random(config(false), &device);
        let names: Vec<String> = named_tensors(&model)
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        // transformers' Qwen2ForCausalLM.state_dict() keys for this config, in its order.
        let mut want = vec!["model.embed_tokens.weight".to_string()];
        for i in 0..2 {
            let p = format!("model.layers.{i}");
            for n in ["q_proj", "k_proj", "v_proj"] {
                want.push(format!("{p}.self_attn.{n}.weight"));
                want.push(format!("{p}.self_attn.{n}.bias"));
            }
            want.push(format!("{p}.self_attn.o_proj.weight"));
            for n in ["gate_proj", "up_proj", "down_proj"] {
                want.push(format!("{p}.mlp.{n}.weight"));
            }
            want.push(format!("{p}.input_layernorm.weight"));
            want.push(format!("{p}.post_attention_layernorm.weight"));
        }
        want.push("model.norm.weight".into());
        want.push("lm_head.weight".into());
        let (mut got, mut want) = (names, want);
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let tied = Qwen2ForCausalLM::random(config(true), &device);
        assert!(
            !named_tensors(&tied)
                .iter()
                .any(|t| t.name() == "lm_head.weight")
        );
    }

    #[test]
    fn a_skeleton_computes_nothing_and_fill_gives_it_the_source_values() {
        let device = crate::device::BackendKind::Cpu.device().unwrap();
        let skeleton = Qwen2ForCausalLM::new(config(false), Fill::Deferred, &device);
        let mut seen = Materialised::default();
        skeleton.visit(&mut seen);
        assert!(
            !seen.0.is_empty() && seen.0.iter().all(|m| !m),
            "{:?}",
            seen.0
        );

        let source = Qwen2ForCausalLM::random(config(false), &device);
        let filled = fill(skeleton, &ModelTensors::of(&source), "", &device, |_| false).unwrap();
        for (a, b) in named_tensors(&source).iter().zip(named_tensors(&filled)) {
            assert_eq!(a.name(), b.name());
            assert_eq!(
                a.reshaped([a.shape().iter().product::<usize>()])
                    .into_data(),
                b.reshaped([b.shape().iter().product::<usize>()])
                    .into_data(),
                "{}",
                a.name()
            );
        }
    }

    #[test]
    fn fill_names_the_tensor_it_misses_or_that_has_another_shape() {
        let device = crate::device::BackendKind::Cpu.device().unwrap();
        let narrow = Qwen2ForCausalLM::random(config(true), &device);
        let skeleton = Qwen2ForCausalLM::new(config(false), Fill::Deferred, &device);
        let err = fill(skeleton, &ModelTensors::of(&narrow), "", &device, |_| false).unwrap_err();
        assert!(err.to_string().contains("`lm_head.weight`"), "{err}");

        let mut wide = config(false);
        wide.intermediate_size = 16;
        let skeleton = Qwen2ForCausalLM::new(wide, Fill::Deferred, &device);
        let source = Qwen2ForCausalLM::random(config(false), &device);
        let err = fill(skeleton, &ModelTensors::of(&source), "", &device, |_| false).unwrap_err();
        assert!(
            err.to_string()
                .contains("model.layers.0.mlp.gate_proj.weight"),
            "{err}"
        );
    }
}
