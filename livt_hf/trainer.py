"""Trainer subclasses for both stages: MAE/LiVT parameter groups; for BFT, the loss computed outside the model on
mixed batches, drawn by a class-aware sampler."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from huggingface_hub import ModelCard
from torch import nn
from torch.utils.data import DataLoader, Sampler
from transformers import EvalPrediction, Trainer, TrainerCallback, enable_full_determinism, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .data.device_images import DeviceImages
from .data.mixing import Mixer, smooth_targets
from .data.samplers import PairedDataset
from .metrics import long_tail_metrics
from .optim import param_groups
from .runs import COMPLETE_MARKER, data_seed, last_complete_checkpoint


class CheckpointCompletion(TrainerCallback):
    """Marks a checkpoint folder complete once every process has written its part. A run killed while saving leaves
    a folder without the mark, which `--resume_from_checkpoint last` skips (Trainer writes checkpoints in place)."""

    def on_save(self, args, state, control, **kwargs):
        PartialState().wait_for_everyone()
        if args.should_save:
            Path(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}", COMPLETE_MARKER).touch()


class SeedPerProcess(TrainerCallback):
    """In a distributed run, seeds each process with `seed + process index` while it trains, as MAE and LiVT do:
    Trainer seeds every process alike, so the draws from the global RNGs (mixing factors and CutMix boxes, the
    batched augmentation, MAE's masks, dropout) would repeat across processes at the same batch position.

    Training begins after the train loader is built, whose seedable sampler (accelerate's, for Trainer's shuffle)
    must take the shared seed, and before a resumed run restores each process's saved RNG state, so resuming stays
    exact; the shared seed is set back when training ends, for the loader of a later `train()`."""

    def on_train_begin(self, args, state, control, **kwargs):
        self._seed(args, args.seed + args.process_index)

    def on_train_end(self, args, state, control, **kwargs):
        self._seed(args, args.seed)

    @staticmethod
    def _seed(args, seed: int) -> None:
        if args.world_size > 1:
            enable_full_determinism(seed) if args.full_determinism else set_seed(seed)


class NonFiniteLossGuard(TrainerCallback):
    """Stops training at the first step that logs, evaluates or saves after a non-finite loss, before any checkpoint
    of the broken weights is written. The loss is checked on the device every step and read only at those steps.

    Trainer sets those flags at a step's end and again at an epoch's end (the per-epoch strategies), and acts on
    them after each: both are checked."""

    def __init__(self, trainer: LiVTTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self._check(control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._check(control)

    def _check(self, control) -> None:
        if control.should_log or control.should_evaluate or control.should_save or control.should_training_stop:
            self.trainer.raise_on_non_finite_loss()


class LiVTTrainer(Trainer):
    """`Trainer` whose optimizer uses `param_groups`: layer-wise LR decay, no decay on 1-D / token / position
    parameters. The optimizer class and its kwargs (`--optim`, betas, eps) still come from `TrainingArguments`.

    Each process draws its own random numbers (`SeedPerProcess`). A non-finite loss stops the run
    (`NonFiniteLossGuard`) and checkpoints are marked complete once written (`CheckpointCompletion`), so the last
    complete checkpoint is always a good one to resume from. With `device_images` (`--augment_on_device`) the
    training loader yields image indices, which become augmented images on the device in the training step.
    """

    # Our losses are per-batch means: Trainer must divide them by the accumulation steps.
    loss_is_scaled_for_ga = False
    train_sampler: Sampler | None = None  # BFT's class-aware sampler; None: Trainer's shuffle

    def __init__(self, *args, layer_decay: float = 1.0, device_images: DeviceImages | None = None, **kwargs):
        self.layer_decay, self.device_images = layer_decay, device_images
        self.model_card: ModelCard | None = None
        self._first_non_finite_step: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        # the parameters' shapes before any wrapping: FSDP version 1 flattens them before the optimizer is built
        self._built_ndims = {name: param.ndim for name, param in self.model.named_parameters()}
        # transformers < 5.23 has no `loss_is_scaled_for_ga` and reads this instead (ViTMAE accepts **kwargs but
        # returns a batch mean, which would otherwise come out multiplied by the accumulation steps)
        self.model_accepts_loss_kwargs = False
        self.add_callback(SeedPerProcess())
        self.add_callback(NonFiniteLossGuard(self))
        self.add_callback(CheckpointCompletion())

    def get_train_dataloader(self) -> DataLoader:
        """Trainer's loader over a `PairedDataset`: each batch's per-image augmentation is drawn from its own RNG,
        seeded by the data seed and the batch's indices, so a resumed run gets the same batches; it also loads the
        (image, partner) pairs UniMix's sampler yields."""
        if self.train_dataset is None:
            raise ValueError(f"{type(self).__name__}: training requires a train_dataset.")
        return self._get_dataloader(
            dataset=PairedDataset(self.train_dataset, self.train_sampler, data_seed(self.args)),
            description="Training",
            batch_size=self._train_batch_size,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    def _get_train_sampler(self, train_dataset=None) -> Sampler | None:
        return self.train_sampler if self.train_sampler is not None else super()._get_train_sampler(train_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        # the first optimizer step (1-based) with a non-finite loss, kept on the device: no sync here
        if self._first_non_finite_step is None:
            self._first_non_finite_step = torch.zeros((), dtype=torch.long, device=loss.device)
        first = (self._first_non_finite_step == 0) & ~torch.isfinite(loss.detach())
        self._first_non_finite_step = torch.where(first, self.state.global_step + 1, self._first_non_finite_step)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            inputs = self.training_inputs(inputs)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def training_inputs(self, inputs: dict) -> dict:
        """The batch as the model sees it in training: with `device_images`, indices become augmented images."""
        return self.device_images(inputs) if self.device_images is not None else inputs

    def raise_on_non_finite_loss(self) -> None:
        if self._first_non_finite_step is None:
            return
        # every process checks at the same steps; one whose loss broke stops them all (not a hang in DDP). A gather,
        # not reduce(…, "max"), which sums on accelerate < 1.14; the first step any process broke at is named.
        steps = self.accelerator.gather(self._first_non_finite_step.reshape(1))
        if not (broken := steps[steps > 0].tolist()):
            return
        step = min(broken)
        last = last_complete_checkpoint(self.args.output_dir)
        raise FloatingPointError(
            f"The training loss was not finite at step {step} (epoch {self.state.epoch:.2f}); training stopped "
            f"before saving anything from it. Last complete checkpoint: {last or 'none'}. Lower --learning_rate, "
            "set --max_grad_norm, or train in fp32 (no --bf16/--fp16), then resume with --resume_from_checkpoint "
            "last or start again with --overwrite_output_dir."
        )

    def end_training(self) -> None:
        """Ends the run; in a distributed run, frees the process group while Python is still fully alive, so that
        every process exits 0 (issue 15).

        The cause of the exit abort this prevents ("terminate called without an active exception", SIGABRT, on a
        rank whose work was done): `destroy_process_group` only drops Python's references, and the DDP wrapper's
        reducer still holds the gloo group, so the group and its native threads (two `pt_gloo_runloop` workers,
        the `gloo_tcp_loop`) outlived `main()` and were torn down during interpreter shutdown, where a gloo worker
        that still has to release a collective's tensors needs the GIL, which CPython no longer grants
        (pytorch/pytorch#179291 describes this abort). So the wrapper goes first and our reference is the last one:
        dropping it runs the group's destructor with the GIL released, which joins those threads here."""
        world = torch.distributed.group.WORLD if torch.distributed.is_initialized() else None
        self.model_wrapped = self.model
        self.accelerator.free_memory()  # the prepared model (the DDP wrapper), optimizer, scheduler and loaders
        self.accelerator.end_training()  # trackers, then destroy_process_group
        gc.collect()  # a wrapper caught in a reference cycle
        del world  # the last reference: ~ProcessGroupGloo joins its threads

    def create_model_card(self, *args, **kwargs) -> None:
        """Our card (`self.model_card`, set by the scripts after training) where there is one, Trainer's otherwise:
        `push_to_hub` calls this and would overwrite README.md with Trainer's card."""
        if self.model_card is None:
            return super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero():
            self.model_card.save(Path(self.args.output_dir, "README.md"))

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = param_groups(opt_model, self.args.learning_rate, self.args.weight_decay, self.layer_decay,
                                  self._built_ndims)  # fmt: skip
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


class MAEPretrainingTrainer(LiVTTrainer):
    """LiVT stage 1 on a stock `ViTMAEForPreTraining`, which takes no labels and always returns its loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Trainer reports an evaluation loss without labels only for models whose forward has `return_loss`
        self.can_return_loss = True


class BalancedTrainer(LiVTTrainer):
    """LiVT stage 2. The loss is computed here from the model's logits, so the training step can feed it soft
    targets and a different loss can be passed (`loss_fn`) without touching the model; it defaults to the model's
    own loss, built from its config.

    Training batches come from `train_sampler` (a class-aware sampler, default: Trainer's shuffle) and are mixed on
    the device by `mixer`; `--label_smoothing_factor` smooths the training targets (Trainer's own label smoother
    would be bypassed by this `compute_loss`). Evaluation sees neither mixing nor smoothing, and gets the logits the
    loss was trained for: the eval loss, the best-epoch metric and the temperature fit never see the model's
    `inference_test_prior` shift, which is for the saved model's users.
    """

    def __init__(
        self,
        *args,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        train_sampler: Sampler | None = None,
        mixer: Mixer | None = None,
        **kwargs,
    ):
        with warnings.catch_warnings():
            # Trainer says it drops label smoothing for a multi-label problem_type (the sigmoid losses' config): it
            # only drops its own smoother, which `compute_loss` bypasses; `training_inputs` smooths for every loss.
            warnings.filterwarnings("ignore", "Label smoothing is not compatible", UserWarning)
            super().__init__(*args, **kwargs)
        if train_sampler is not None and self.args.train_sampling_strategy != "random":
            raise ValueError(
                f"--train_sampling_strategy {self.args.train_sampling_strategy} and a class-aware --train_sampler "
                "both choose the training order; drop --train_sampling_strategy."
            )
        self.loss_fn = loss_fn if loss_fn is not None else self.accelerator.unwrap_model(self.model).loss_fn
        self.train_sampler, self.mixer = train_sampler, mixer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            inputs = self.training_inputs(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_inference_test_prior=False)
        loss = self.loss_fn(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss

    def training_inputs(self, inputs: dict) -> dict:
        """The batch as the loss sees it in training: mixed, smoothed, with the epoch passed to the loss (DRW)."""
        inputs = super().training_inputs(inputs)
        epoch = self.state.epoch or 0.0
        set_epoch = getattr(self.loss_fn, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        if self.mixer is not None:
            inputs = self.mixer(inputs, epoch)
        elif "partner_pixel_values" in inputs:
            raise ValueError("The sampler yields partner images but no mixer uses them: pass `mixer=`.")
        if self.args.label_smoothing_factor:
            num_classes = self.accelerator.unwrap_model(self.model).config.num_labels
            inputs["labels"] = smooth_targets(inputs["labels"], num_classes, self.args.label_smoothing_factor)
        return inputs


def long_tail_compute_metrics(
    train_counts: list[int], many_threshold: int = 100, few_threshold: int = 20
) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` for Trainer: overall, many / medium / few and head / middle / tail top-1."""

    def compute(eval_pred: EvalPrediction) -> dict[str, float]:
        predictions = np.asarray(eval_pred.predictions).argmax(-1)
        return long_tail_metrics(predictions, eval_pred.label_ids, train_counts, many_threshold, few_threshold)

    return compute
