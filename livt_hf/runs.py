"""What both scripts do around training: logging, output-folder policy, resuming, saving what a run used."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import sys
from pathlib import Path

import datasets
import huggingface_hub
import torch
import transformers
from transformers import set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy, SaveStrategy

from .data.image_checks import sample_image_modes
from .data.transforms import GRAYSCALE_MODES


logger = logging.getLogger("livt_hf")
FINISHED_MARKER = "run_config.json"
COMPLETE_MARKER = "checkpoint_complete"  # written into a checkpoint folder once all of it is saved
# Raised epochs beyond this many are evaluated and saved in groups: 1,116 images at MGP's batch 256 make 5-step epochs,
# and 400 evaluations and checkpoints took 16 % of a 2000-step run (docs/DEMO_RECIPE.md, small data).
MAX_EPOCH_EVALUATIONS = 50


def setup_logging(args: transformers.TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stdout)
    # our own messages (batch size, LR rule, split summary) on the main process; the libraries at the level asked
    level = args.get_process_log_level()
    logger.setLevel(logging.INFO if args.should_log else level)  # also covers livt_hf.* module loggers
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def start_run(args) -> str | None:
    """The Hub check (first), logging, the output-folder check, the seed, the LR rule; returns the checkpoint to
    resume. Seeding here, before the model is built, makes its fresh weights (the BFT head) the same every run:
    Trainer seeds only when it is constructed, after the model."""
    check_hub_access(args)
    setup_logging(args)
    set_seed(args.seed)
    with args.main_process_first(desc="checking output_dir"):  # rank 0 deletes (--overwrite_output_dir) first
        checkpoint = resolve_checkpoint(args)
    logger.info("Total train batch %d; %s", args.total_train_batch_size, args.lr_rule)
    return checkpoint


def data_seed(args: transformers.TrainingArguments) -> int:
    """The seed of the training data's order and per-image augmentation: `--data_seed`, else `--seed` (Trainer's
    rule for its own sampler)."""
    return args.data_seed if args.data_seed is not None else args.seed


def fit_epochs_to_min_steps(args: transformers.TrainingArguments, num_train_images: int) -> bool:
    """Raise `args.num_train_epochs` to give at least `args.min_train_steps` optimizer steps on `num_train_images`.

    A recipe in epochs gives a small split few updates (1,116 images at batch 64: 18 steps an epoch), too few for a
    ViT to learn anything; a floor in steps makes the same defaults train small and large splits. Steps per epoch are
    counted as Trainer counts them (batches per process, then accumulation). Beyond `MAX_EPOCH_EVALUATIONS` raised
    epochs, per-epoch evaluation and saving become every k epochs (in steps), the epochs rounded up to a multiple of k
    so that the last step is still evaluated. Returns whether the epochs were raised."""
    if not args.min_train_steps or args.max_steps > 0:
        return False
    per_batch = args.train_batch_size * args.world_size
    batches = num_train_images // per_batch if args.dataloader_drop_last else math.ceil(num_train_images / per_batch)
    steps_per_epoch = max(batches // args.gradient_accumulation_steps, 1)
    if args.num_train_epochs * steps_per_epoch >= args.min_train_steps:
        return False
    epochs = math.ceil(args.min_train_steps / steps_per_epoch)
    by_epoch = args.eval_strategy == IntervalStrategy.EPOCH and args.save_strategy == SaveStrategy.EPOCH
    every = math.ceil(epochs / MAX_EPOCH_EVALUATIONS) if by_epoch else 1
    epochs = every * math.ceil(epochs / every)
    logger.info(
        "%d train images give %d steps an epoch: --num_train_epochs raised from %g to %d for --min_train_steps %d.",
        num_train_images, steps_per_epoch, args.num_train_epochs, epochs, args.min_train_steps,
    )  # fmt: skip
    args.num_train_epochs = epochs
    if every > 1:
        args.eval_strategy, args.save_strategy = IntervalStrategy.STEPS, SaveStrategy.STEPS
        args.eval_steps = args.save_steps = every * steps_per_epoch
        logger.info("Evaluated and saved every %d epochs (%d steps), not after each of the %d.", every,
                    args.eval_steps, epochs)  # fmt: skip
    return True


def check_hub_access(args: transformers.TrainingArguments) -> None:
    """With `--push_to_hub`, fail now if the Hub cannot be used. Trainer would find out only when it creates the repo,
    after the data is loaded and the model built, and say so in a network error."""
    if not args.push_to_hub:
        return
    if huggingface_hub.is_offline_mode():
        problem, fix = "offline mode is on", "unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE)"
    elif args.hub_token is None and huggingface_hub.get_token() is None:
        problem, fix = "no Hugging Face token found", "log in with `hf auth login` (or set HF_TOKEN), pass --hub_token"
    else:
        return
    raise ValueError(
        f"--push_to_hub: {problem}, so nothing could be uploaded. Either {fix}, or drop --push_to_hub (the model is "
        "saved to --output_dir either way)."
    )


def resolve_checkpoint(args: transformers.TrainingArguments) -> str | None:
    """The checkpoint to resume from, after checking output_dir holds nothing we would silently clobber.

    `--resume_from_checkpoint last` picks the newest complete checkpoint in output_dir (newer ones that a kill left
    half-written are deleted, with a warning); a path picks that one, if complete. An output_dir that holds a finished
    run or checkpoints is an error unless the run resumes or `--overwrite_output_dir` is set.
    """
    out = Path(args.output_dir)
    if args.overwrite_output_dir and out.exists():
        logger.warning("--overwrite_output_dir: deleting %s", out)
        shutil.rmtree(out)
    resume = args.resume_from_checkpoint
    if resume == "last":
        resume = last_complete_checkpoint(out) if out.is_dir() else None
        if resume is None:
            raise FileNotFoundError(f"--resume_from_checkpoint last: no complete checkpoint-* folder in {out}.")
        for folder in _checkpoints(out):
            if _step(folder) > _step(Path(resume)):
                logger.warning("Deleting %s: the run stopped while saving it (it has no %s).", folder, COMPLETE_MARKER)
                shutil.rmtree(folder)
    if resume is not None:
        if not Path(resume).is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {resume} is not a checkpoint folder.")
        if not (Path(resume) / COMPLETE_MARKER).exists():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume} was not completely written (the run stopped while saving it). "
                "Pass --resume_from_checkpoint last to take the newest complete checkpoint."
            )
        logger.info("Resuming from %s", resume)
        return str(resume)
    if (out / FINISHED_MARKER).exists():
        raise FileExistsError(
            f"{out} holds a finished run. Pick another --output_dir, or pass --overwrite_output_dir to replace it."
        )
    if out.is_dir() and _checkpoints(out):
        raise FileExistsError(
            f"{out} holds checkpoints of an unfinished run. Continue it with --resume_from_checkpoint last, or pass "
            "--overwrite_output_dir to start again."
        )
    return None


def last_complete_checkpoint(folder: str | Path) -> str | None:
    """The newest `checkpoint-N` folder whose save completed (it holds `COMPLETE_MARKER`)."""
    complete = [c for c in _checkpoints(Path(folder)) if (c / COMPLETE_MARKER).exists()]
    return str(max(complete, key=_step)) if complete else None


def _checkpoints(folder: Path) -> list[Path]:
    return [c for c in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if c.is_dir() and c.name.split("-")[-1].isdigit()]


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def infer_num_channels(dataset: datasets.Dataset) -> int:
    """3 if any of up to 1000 train images spread over the split is in colour, else 1; logged with the modes seen.

    The first image alone would make a mostly-RGB split grayscale whenever that image is grayscale. A mixed split gets
    RGB: grayscale converts to RGB without loss, colour to grayscale does not. The modes come from the file headers (no
    pixel decoding), so the look is cheap; a colour minority too rare to show in the sample loses its colour, the
    price of not reading every header (pretraining's `--num_channels` overrides the choice).
    """
    modes = sample_image_modes(dataset)
    channels = 1 if modes.keys() <= GRAYSCALE_MODES else 3
    mixed = channels == 3 and modes.keys() & GRAYSCALE_MODES
    kind = "grayscale" if channels == 1 else "mixed, grayscale becomes RGB" if mixed else "colour"
    logger.info("Train image modes %s in %d sampled images: %s, %d channel(s).", dict(modes), modes.total(), kind,
                channels)  # fmt: skip
    return channels


def warn_on_channel_conversion(dataset: datasets.Dataset, num_channels: int) -> None:
    """Warn when the train images' channels (`infer_num_channels`) are not the checkpoint's: they are converted."""
    data_channels = infer_num_channels(dataset)
    if data_channels != num_channels:
        logger.warning("Images have %d channel(s), the checkpoint %d: they are converted to %s.",
                       data_channels, num_channels, "grayscale" if num_channels == 1 else "RGB")  # fmt: skip


def machine(device: str | torch.device = "cpu") -> dict:
    """What a run's wall time was measured on: the CPU model and cores, the torch threads and the device."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []  # fmt: skip
    device = str(device)
    return {
        "cpu": names[0] if names else platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else device,
        "torch": torch.__version__,
    }


def run_record(*arg_objects) -> dict:
    """Every argument (one entry per dataclass), the library versions and the machine: what `run_config.json` holds."""
    record = {type(a).__name__: _jsonable(dataclasses.asdict(a)) for a in arg_objects}
    record["versions"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "python": sys.version.split()[0],
    }
    training = [a for a in arg_objects if isinstance(a, transformers.TrainingArguments)]
    record["machine"] = machine(training[0].device if training else "cpu")
    return record


def save_run_config(output_dir: str, record: dict) -> None:
    """Written last: its presence marks the run as finished."""
    Path(output_dir, FINISHED_MARKER).write_text(json.dumps(record, indent=2, default=str))


def read_run_config(folder: str) -> dict | None:
    """The `run_config.json` of an earlier run in a local folder (the MGP checkpoint, for the BFT card), if any."""
    path = Path(folder, FINISHED_MARKER)
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


__all__ = [
    "check_hub_access",
    "infer_num_channels",
    "last_complete_checkpoint",
    "machine",
    "read_run_config",
    "resolve_checkpoint",
    "save_run_config",
    "setup_logging",
    "start_run",
    "warn_on_channel_conversion",
]
