#!/usr/bin/env python
"""Evaluate a fine-tuned model on test sets resampled to other label distributions (UniMix Table D2).

    python run_evaluate_test_priors.py                          # outputs/livt-fmnist-lt on Fashion-MNIST
    python run_evaluate_test_priors.py --model_dir outputs/livt-ce --test_imbalance_ratios 100 1 0.01

For each ρ' (> 1 long-tailed like train, 1 balanced, < 1 reversed) it prints top-1 with the raw logits, shifted
to a uniform prior, to the true prior of that test set, and to a prior estimated by EM from the unlabelled
predictions, calibrated first by a temperature fitted on the validation split (rebuilt with the data arguments the
model was trained with). The test split is inferred once; the resampling is seeded.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import ViTImageProcessor

from livt_hf import LiVTForImageClassification
from livt_hf.arguments import DataArguments, parse_args
from livt_hf.data import attach_transforms, prepare_splits
from livt_hf.losses import model_prior
from livt_hf.prior_shift import (
    TEST_IMBALANCE_RATIOS,
    PosteriorCalibration,
    evaluate_under_test_priors,
    format_test_prior_table,
)


@dataclass
class EvaluationArguments:
    model_dir: str = field(default="outputs/livt-fmnist-lt", metadata={"help": "A fine-tuned LiVT model folder."})
    test_imbalance_ratios: list[float] = field(
        default_factory=lambda: list(TEST_IMBALANCE_RATIOS), metadata={"help": "The ρ' of the resampled test sets."}
    )
    resample_seed: int = field(default=0)
    batch_size: int = field(default=256)


@torch.no_grad()
def predict(model, dataset, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    logits, labels = [], []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=lambda b: b):
        pixels = torch.stack([item["pixel_values"] for item in batch]).to(device)
        # the raw logits: main() applies every shift to them
        logits.append(model(pixels, use_inference_test_prior=False).logits.float().cpu())
        labels.append(torch.tensor([item["labels"] for item in batch]))
    return torch.cat(logits), torch.cat(labels)


def main():
    eval_args, data_args = parse_args(EvaluationArguments, DataArguments)
    model = LiVTForImageClassification.from_pretrained(eval_args.model_dir)
    config = model.config
    splits, split_info = prepare_splits(data_args)
    if split_info.class_names != [config.id2label[i] for i in range(config.num_labels)]:
        raise ValueError(
            f"The data's classes {split_info.class_names} are not the model's {list(config.id2label.values())}: "
            "pass the data arguments the model was trained with."
        )
    del splits["train"]
    attach_transforms(splits, ViTImageProcessor.from_pretrained(eval_args.model_dir), crop_min_scale=1.0)
    val_logits, val_labels = predict(model, splits["validation"], eval_args.batch_size)
    trained_for = model_prior(config.loss, config.class_counts, config.tau, config.test_prior)
    val_prior = torch.tensor(split_info.validation_counts, dtype=torch.float64) / sum(split_info.validation_counts)
    calibration = PosteriorCalibration.fit(val_logits.numpy(), val_labels.numpy(), config.loss, trained_for, val_prior)
    logits, labels = predict(model, splits["test"], eval_args.batch_size)
    rows = evaluate_under_test_priors(
        logits.numpy(), labels.numpy(), calibration, eval_args.test_imbalance_ratios, eval_args.resample_seed
    )
    title = f"{eval_args.model_dir} (loss {config.loss}; EM on bias-corrected T = {calibration.temperature:.3f})"
    table = format_test_prior_table(rows, title)
    out = Path(eval_args.model_dir)
    (out / "test_priors.json").write_text(json.dumps(rows, indent=2))
    (out / "test_priors.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
