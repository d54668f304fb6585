"""Trains a tiny LiVT model for 2 epochs with a class-aware sampler and records, on every process, which training
images each step saw and the mixing factors it drew; then, as a restarted run would, resumes a fresh trainer from the
mid-epoch checkpoint of step 20 and records the same for the steps it trains. Run by tests/test_samplers.py under
`torchrun --nproc_per_node 2`.

    record_sampling.py OUT_DIR SAMPLER MIXING
"""

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import HfArgumentParser

import livt_hf.data.mixing
from livt_hf import BalancedTrainer, LiVTConfig, LiVTForImageClassification
from livt_hf.arguments import FinetuningArguments
from livt_hf.data import Mixer, build_train_sampler
from threads import live_thread_names

COUNTS = [160, 80, 40, 20]  # 300 images: 15 batches of 10 per process and epoch
EPOCHS = 2
RESUME_STEP = 20  # the fifth step of the second epoch
DRAWS = []  # every Beta draw of the mixer (its mixing factors), in order
_sample_beta = livt_hf.data.mixing.sample_beta


def _recording_sample_beta(*args, **kwargs):
    values = _sample_beta(*args, **kwargs)
    DRAWS.append(values.tolist())
    return values


livt_hf.data.mixing.sample_beta = _recording_sample_beta


class RecordingTrainer(BalancedTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            partner = inputs.pop("partner_idx", None)
            self.seen.append({
                "epoch": int(self.state.epoch), "idx": inputs.pop("idx").tolist(),
                "labels": inputs["labels"].tolist(), "partner_idx": None if partner is None else partner.tolist(),
            })  # fmt: skip
        else:
            inputs.pop("idx")
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def train(out_dir: str, kind: str, mixing: str, resume_from_checkpoint: str | None = None) -> RecordingTrainer:
    labels = [c for c, n in enumerate(COUNTS) for _ in range(n)]
    data = Dataset.from_dict({
        "idx": list(range(len(labels))), "labels": labels, "pixel_values": torch.zeros(len(labels), 1, 8, 8).tolist(),
    }).with_format("torch")  # fmt: skip
    config = LiVTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16, image_size=8,
                        patch_size=4, num_channels=1, num_labels=len(COUNTS), class_counts=COUNTS)  # fmt: skip
    (args,) = HfArgumentParser(FinetuningArguments).parse_args_into_dataclasses([
        "--output_dir", out_dir, "--per_device_train_batch_size", "10", "--num_train_epochs", str(EPOCHS),
        "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", str(RESUME_STEP),
        "--load_best_model_at_end", "0", "--report_to", "none", "--use_cpu", "1", "--seed", "3",
    ])  # fmt: skip
    # a fresh sampler, as a restarted process has: only the trainer can tell it which epoch it resumes in
    sampler = build_train_sampler(labels, kind, EPOCHS, seed=3, partner_tau=-1.0 if mixing == "unimix" else None)
    trainer = RecordingTrainer(model=LiVTForImageClassification(config), args=args, train_dataset=data,
                               train_sampler=sampler, mixer=Mixer(mixing, COUNTS))  # fmt: skip
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def main(out_dir: str, kind: str, mixing: str) -> None:
    whole = train(out_dir, kind, mixing)
    record = {"world": whole.args.world_size, "steps": whole.seen, "draws": DRAWS.copy()}
    del whole  # its DDP wrapper holds the process group too: `end_training` below must be able to free it
    DRAWS.clear()
    resumed = train(out_dir, kind, mixing, resume_from_checkpoint=str(Path(out_dir, f"checkpoint-{RESUME_STEP}")))
    record |= {"resumed_steps": resumed.seen, "resumed_draws": DRAWS}
    rank = resumed.args.process_index
    resumed.end_training()
    record["threads_at_exit"] = live_thread_names()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(*sys.argv[1:])
