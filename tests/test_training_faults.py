"""Training faults: a non-finite loss stops the run at once, naming its step, and leaves only good checkpoints.
(A run killed between or during saves: tests/test_resume.py.)"""

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from livt_hf import BalancedTrainer
from livt_hf.arguments import FinetuningArguments
from livt_hf.runs import COMPLETE_MARKER, last_complete_checkpoint
from test_trainer import parse, tiny_model


class BreaksAtStep:
    """The model's own loss, made NaN from the `step`-th call on (one call per optimizer step here)."""

    def __init__(self, loss_fn, step: int):
        self.loss_fn, self.step, self.calls = loss_fn, step, 0

    def __call__(self, logits, labels):
        self.calls += 1
        loss = self.loss_fn(logits, labels)
        return loss * float("nan") if self.calls >= self.step else loss


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_non_finite_loss_stops_training_before_it_is_saved(tmp_path, accumulation):
    torch.manual_seed(0)
    model = tiny_model()
    data = Dataset.from_dict({"pixel_values": torch.randn(64, 1, 28, 28).tolist(), "labels": [0, 1, 2, 3] * 16})
    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--per_device_train_batch_size", str(4 // accumulation),
                 "--gradient_accumulation_steps", str(accumulation), "--max_steps", "12", "--save_strategy", "steps",
                 "--save_steps", "2", "--eval_strategy", "no", "--load_best_model_at_end", "0", "--logging_steps", "100",
                 "--learning_rate", "1e-3")  # fmt: skip
    # micro-batch 2·5 − 1 = 9 of 2 per step falls in optimizer step 5; with one micro-batch per step, call 5 is step 5
    loss_fn = BreaksAtStep(model.loss_fn, step=5 if accumulation == 1 else 9)
    trainer = BalancedTrainer(model=model, args=args, train_dataset=data.with_format("torch"), loss_fn=loss_fn)
    with pytest.raises(FloatingPointError, match=r"not finite at step 5 .*Last complete checkpoint: .*checkpoint-4"):
        trainer.train()
    # the guard fired at step 6, the first save after the NaN, before writing it
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert all((tmp_path / c / COMPLETE_MARKER).exists() for c in ("checkpoint-2", "checkpoint-4"))
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "checkpoint-4" / "model.safetensors").values())
    assert not all(torch.isfinite(p).all() for p in model.parameters())  # the live weights did break


def test_a_finite_run_is_not_stopped_and_logs_every_step_loss(tmp_path):
    model = tiny_model()
    data = Dataset.from_dict({"pixel_values": torch.randn(16, 1, 28, 28).tolist(), "labels": [0, 1, 2, 3] * 4})
    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--per_device_train_batch_size", "4",
                 "--max_steps", "4", "--save_strategy", "no", "--eval_strategy", "no", "--load_best_model_at_end", "0",
                 "--logging_steps", "1")  # fmt: skip
    trainer = BalancedTrainer(model=model, args=args, train_dataset=data.with_format("torch"))
    trainer.train()
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4]
    assert not args.logging_nan_inf_filter  # our default: a non-finite loss is not averaged away in the logs


def test_a_loss_that_breaks_after_the_last_log_of_an_epoch_is_not_saved_by_the_epoch_save(tmp_path):
    # 16 images in batches of 4: 4 steps per epoch, saved (and rotated, keeping one) at each epoch's end; the loss
    # turns NaN at step 8, the last of epoch 2, where no step-end flag asks for a log, an evaluation or a save
    torch.manual_seed(0)
    model = tiny_model()
    data = Dataset.from_dict({"pixel_values": torch.randn(16, 1, 28, 28).tolist(), "labels": [0, 1, 2, 3] * 4})
    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--per_device_train_batch_size", "4",
                 "--num_train_epochs", "3", "--save_strategy", "epoch", "--save_total_limit", "1",
                 "--eval_strategy", "no", "--load_best_model_at_end", "0", "--logging_steps", "100",
                 "--learning_rate", "1e-3")  # fmt: skip
    trainer = BalancedTrainer(model=model, args=args, train_dataset=data.with_format("torch"),
                              loss_fn=BreaksAtStep(model.loss_fn, step=8))  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"not finite at step 8 .*Last complete checkpoint: .*checkpoint-4"):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4"]  # kept, not rotated away
    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "checkpoint-4" / "model.safetensors").values())


def test_the_message_names_the_first_step_any_process_broke_at(tmp_path, monkeypatch):
    """Two processes: this one's loss broke at step 6, the other's at step 5 (DDP then spreads the NaN to all). The
    step named is 5, whatever `accelerator.reduce` does (accelerate < 1.14 sums for "max")."""
    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--eval_strategy", "no",
                 "--load_best_model_at_end", "0")  # fmt: skip
    trainer = BalancedTrainer(model=tiny_model(), args=args)
    trainer.state.epoch = 0.4
    trainer._first_non_finite_step = torch.tensor(6)
    monkeypatch.setattr(trainer.accelerator, "gather", lambda t: torch.cat([t.reshape(1), torch.tensor([5])]))
    monkeypatch.setattr(trainer.accelerator, "reduce", lambda t, reduction: t + 5)  # old accelerate's "max"
    with pytest.raises(FloatingPointError, match=r"not finite at step 5 \(epoch 0.40\)"):
        trainer.raise_on_non_finite_loss()
    trainer._first_non_finite_step = torch.tensor(0)  # this process's loss is fine: the other one's step counts
    with pytest.raises(FloatingPointError, match=r"not finite at step 5 "):
        trainer.raise_on_non_finite_loss()
