//! Stage 1 — attention alignment (the paper's AttentionWrapper, Figure 4/5; `docs/METHOD.md` §5).
//!
//! Teacher forcing: the residual stream is the teacher's at every layer. Each layer's time mixer sees
//! the teacher's normalised input and is trained only by its own loss against the teacher's
//! attention output; `v_first` reaches the later layers detached, as in the reference.

use burn::prelude::*;
use burn::tensor::module::embedding;

use super::loss::{AlignmentLoss, alignment_loss};
use crate::error::{Error, Result};
use crate::student::ArwkvForCausalLM;
use crate::teacher::Qwen2ForCausalLM;

/// Losses of one stage-1 batch.
#[derive(Clone, Debug)]
pub struct AlignmentLosses {
    /// Mean over layers (what is minimised).
    pub loss: Tensor<1>,
    /// One loss per layer.
    pub per_layer: Vec<Tensor<1>>,
}

/// Stage-1 losses of `student` against `teacher` on ids `[B, T]`. Only the time mixers get
/// gradients (everything from the teacher is detached). With a padding `mask` `[B, T]` (1 = real
/// token; rows right-padded, so the teacher's causal attention never sees the padding before a real
/// token), the time mixers get it too and the loss counts real positions only.
pub fn alignment_losses(
    teacher: &Qwen2ForCausalLM,
    student: &ArwkvForCausalLM,
    ids: Tensor<2, Int>,
    mask: Option<&Tensor<2>>,
    kind: AlignmentLoss,
) -> Result<AlignmentLosses> {
    let layers = &teacher.model.layers;
    if layers.len() != student.model.layers.len()
        || teacher.config.hidden_size != student.config.qwen.hidden_size
    {
        return Err(Error::Invalid(format!(
            "stage 1: the student ({} layers, width {}) was not built from this teacher ({} layers, \
             width {})",
            student.model.layers.len(),
            student.config.qwen.hidden_size,
            layers.len(),
            teacher.config.hidden_size
        )));
    }
    let [_, t] = ids.dims();
    let device = ids.device();
    let (cos, sin) = teacher.rope.tables(0, t, &device);
    let mut x = embedding(teacher.model.embed_tokens.weight.val(), ids).detach();
    let mut v_first: Option<Tensor<3>> = None;
    let mut per_layer = Vec::with_capacity(layers.len());
    for (tl, sl) in layers.iter().zip(&student.model.layers) {
        let h = tl.input_layernorm.forward(x.clone()).detach();
        let attention = tl.self_attn.forward(h.clone(), &cos, &sin, None).detach();
        let mixed = sl.self_attn.time_mixer.forward(
            h.cast(student.compute_dtype),
            v_first.take(),
            None,
            mask,
        )?;
        v_first = Some(mixed.v_first.detach());
        per_layer.push(alignment_loss(attention.clone(), mixed.out, mask, kind));
        let h = x + attention;
        x = (h.clone() + tl.mlp.forward(tl.post_attention_layernorm.forward(h))).detach();
    }
    let loss = Tensor::cat(per_layer.clone(), 0).mean();
    Ok(AlignmentLosses { loss, per_layer })
}
