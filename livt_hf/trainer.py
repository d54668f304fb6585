"""Trainer subclasses for both stages: MAE/LiVT parameter groups, and Bal-BCE computed outside the model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from transformers import EvalPrediction, Trainer

from .metrics import long_tail_metrics
from .optim import param_groups


class LiVTTrainer(Trainer):
    """`Trainer` whose optimizer uses `param_groups`: layer-wise LR decay, no decay on 1-D / token / position
    parameters. The optimizer class and its kwargs (`--optim`, betas, eps) still come from `TrainingArguments`.

    """

    # Our losses are per-batch means: Trainer must divide them by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, layer_decay: float = 1.0, **kwargs):
        self.layer_decay = layer_decay
        super().__init__(*args, **kwargs)
        # transformers < 5.23 has no `loss_is_scaled_for_ga` and reads this instead (ViTMAE accepts **kwargs but
        # returns a batch mean, which would otherwise come out multiplied by the accumulation steps)
        self.model_accepts_loss_kwargs = False

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = param_groups(opt_model, self.args.learning_rate, self.args.weight_decay, self.layer_decay)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


class MAEPretrainingTrainer(LiVTTrainer):
    """LiVT stage 1 on a stock `ViTMAEForPreTraining`, which takes no labels and always returns its loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Trainer reports an evaluation loss without labels only for models whose forward has `return_loss`
        self.can_return_loss = True


class BalancedTrainer(LiVTTrainer):
    """LiVT stage 2. The loss is computed here from the model's logits, so the training step may feed soft targets
    (mixing) and so a different loss can be passed (`loss_fn`) without touching the model. Defaults to the
    model's own loss, built from its config."""

    def __init__(self, *args, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn if loss_fn is not None else self.accelerator.unwrap_model(self.model).loss_fn

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        set_epoch = getattr(self.loss_fn, "set_epoch", None)  # deferred re-weighting follows the epoch
        if model.training and set_epoch is not None:
            set_epoch(self.state.epoch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.loss_fn(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss


def long_tail_compute_metrics(
    train_counts: list[int], many_threshold: int = 100, few_threshold: int = 20
) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` for Trainer: overall, many / medium / few and head / middle / tail top-1."""

    def compute(eval_pred: EvalPrediction) -> dict[str, float]:
        predictions = np.asarray(eval_pred.predictions).argmax(-1)
        return long_tail_metrics(predictions, eval_pred.label_ids, train_counts, many_threshold, few_threshold)

    return compute
