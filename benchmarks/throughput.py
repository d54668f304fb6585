#!/usr/bin/env python
"""Training throughput: our MGP / BFT pipelines against the stock HF ones, in one process, from the same JPEG files.

    python benchmarks/throughput.py                                  # ViT-B/16, 224 px, both stages (GPU)
    python benchmarks/throughput.py --model fmnist --image_size 28   # the demo's small ViT on 28-px images
    python benchmarks/throughput.py --sweep                          # ViT-S/B/L × 128/224/384 px, model cost only

Pipelines, each a full `Trainer.train()` of `--warmup + --steps` optimizer steps, timed over the last `--steps`:
- stock:     `ViTMAEForPreTraining` / `ViTForImageClassification`, torchvision PIL transforms in DataLoader workers
             and the stock `Trainer` (what `run_mae.py` / `run_image_classification.py` do; CE for BFT);
- ours:      `MAEPretrainingTrainer` / `BalancedTrainer` with the transforms, loss (Bal-BCE), mixing (mixup / cutmix),
             drop path and layer decay of `run_pretrain_mae.py` / `run_finetune_balanced.py` (LiVT Table 9's BFT
             augmentation: RandAugment rand-m9-mstd0.5 + RandomErasing 0.25);
- device:    ours with `--augment_on_device`: the JPEGs decoded once into a uint8 tensor on the device, the same
             augmentation applied to whole batches there (`livt_hf/data/batch_augment.py`);
- synthetic: our model and Trainer on pre-made tensors already on the device: the ceiling the input pipeline
             should not lower.
The data: Fashion-MNIST images resized (bicubic) to `--image_size`, converted to RGB (or kept grayscale with
`--channels 1`) and written as JPEG (quality 90) into an image folder, which every pipeline reads.

Achieved TFLOP/s use an analytic count of matrix-multiply FLOPs (2 per multiply-add), training = 3 × forward
(forward + backward; activation recomputation is not counted). Per ViT layer on N tokens of width D, MLP width M:
8·N·D² (q, k, v, o) + 4·N·D·M (MLP) + 4·N²·D (QKᵀ and AV); plus the patch embedding 2·P·(p²·C)·D over P patches,
and per stage: BFT encodes all P + 1 tokens and adds the head 2·D·K; MGP encodes the (1 − mask)·P + 1 visible
tokens, then the decoder (width D', MLP M') runs on P + 1 tokens after a 2·V·D·D' embedding, and predicts
2·(P + 1)·D'·p²·C pixels.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms import v2 as T
from transformers import (
    Trainer,
    TrainerCallback,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    ViTMAEConfig,
)

from livt_hf import BalancedTrainer, LiVTConfig, LiVTForImageClassification, MAEPretrainingTrainer
from livt_hf.data import (
    Mixer,
    attach_transforms,
    device_train_data,
    image_processor,
    load_fashion_mnist,
    load_image_folders,
)
from livt_hf.mae import new_vitmae

# encoder (width, depth, heads, MLP width) and MAE decoder (width, depth, heads, MLP width)
MODELS = {
    "tiny": ((32, 2, 2, 64), (16, 1, 2, 32)),
    "fmnist": ((192, 4, 3, 768), (96, 2, 3, 384)),  # the demo's (run_pretrain_mae.py defaults)
    "vit-s": ((384, 12, 6, 1536), (512, 8, 16, 2048)),
    "vit-b": ((768, 12, 12, 3072), (512, 8, 16, 2048)),
    "vit-l": ((1024, 24, 16, 4096), (512, 8, 16, 2048)),
    "vit-h": ((1280, 32, 16, 5120), (512, 8, 16, 2048)),
}
MASK_RATIO = 0.75
NUM_CLASSES = 10
PIPELINES = ["stock", "ours", "device", "synthetic"]
BFT_AUGMENTATION = dict(auto_augment="rand-m9-mstd0.5", random_erasing=0.25)  # LiVT Table 9


@dataclass
class Geometry:
    model: str
    image_size: int
    patch_size: int
    channels: int

    def encoder(self) -> dict:
        (width, depth, heads, mlp), _ = MODELS[self.model]
        return dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=mlp,
                    image_size=self.image_size, patch_size=self.patch_size, num_channels=self.channels)  # fmt: skip

    def mae_config(self) -> ViTMAEConfig:
        _, (width, depth, heads, mlp) = MODELS[self.model]
        return ViTMAEConfig(**self.encoder(), decoder_hidden_size=width, decoder_num_hidden_layers=depth,
                            decoder_num_attention_heads=heads, decoder_intermediate_size=mlp, mask_ratio=MASK_RATIO,
                            norm_pix_loss=True)  # fmt: skip


def layers_flops(tokens: int, width: int, depth: int, mlp: int) -> float:
    return depth * (8 * tokens * width**2 + 4 * tokens * width * mlp + 4 * tokens**2 * width)


def training_flops_per_image(stage: str, geo: Geometry) -> float:
    """Forward + backward matrix-multiply FLOPs of one image (formula in the module docstring)."""
    (width, depth, _, mlp), (d_width, d_depth, _, d_mlp) = MODELS[geo.model]
    patches = (geo.image_size // geo.patch_size) ** 2
    pixels = geo.patch_size**2 * geo.channels
    forward = 2 * patches * pixels * width
    if stage == "bft":
        forward += layers_flops(patches + 1, width, depth, mlp) + 2 * width * NUM_CLASSES
    else:
        visible = int(patches * (1 - MASK_RATIO)) + 1
        forward += layers_flops(visible, width, depth, mlp) + 2 * visible * width * d_width
        forward += layers_flops(patches + 1, d_width, d_depth, d_mlp) + 2 * (patches + 1) * d_width * pixels
    return 3 * forward


def write_jpeg_folder(root: Path, image_size: int, channels: int, num_images: int) -> Path:
    """Fashion-MNIST train images → `root/{train,test}/<class>/<i>.jpg` at `image_size` (made once, then reused)."""
    folder = root / f"fmnist-{image_size}px-{channels}ch-{num_images}"
    if (folder / "done").exists():
        return folder
    source = load_fashion_mnist()["train"]
    names = source.features["label"].names
    mode = "RGB" if channels == 3 else "L"
    for i in range(num_images):
        row = source[i]
        # a few test images: the image-folder loader wants a test split, the benchmark never reads it
        split = "test" if i < NUM_CLASSES * 2 else "train"
        path = folder / split / names[row["label"]].replace("/", "-") / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        row["image"].convert(mode).resize((image_size, image_size), resample=3).save(path, quality=90)
    (folder / "done").touch()
    return folder


class StepTimer(TrainerCallback):
    """Wall time of the optimizer steps after `warmup` (which absorb compilation and the first worker start-up)."""

    def __init__(self, warmup: int):
        self.warmup, self.started, self.start, self.end = warmup, 0.0, 0.0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            synchronize()
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == state.max_steps:
            synchronize()
            self.end = time.perf_counter()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class DeviceTensors(torch.utils.data.Dataset):
    """Pre-made normalised images and labels already on the device: no decoding, no augmentation, no copy."""

    def __init__(self, num: int, geo: Geometry, device: torch.device, labels: bool):
        generator = torch.Generator().manual_seed(0)
        shape = (num, geo.channels, geo.image_size, geo.image_size)
        self.pixels = torch.randn(shape, generator=generator).to(device)
        self.labels = torch.randint(NUM_CLASSES, (num,), generator=generator).to(device) if labels else None

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.pixels[i]} | ({"labels": self.labels[i]} if self.labels is not None else {})


def stock_transform(geo: Geometry, stage: str):
    """torchvision PIL transforms as the stock example scripts build them."""
    mode = "RGB" if geo.channels == 3 else "L"
    scale = (0.2, 1.0) if stage == "mgp" else (0.08, 1.0)
    steps = T.Compose([
        T.ToImage(), T.RandomResizedCrop(geo.image_size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True), T.Normalize([0.5] * geo.channels, [0.5] * geo.channels),
    ])  # fmt: skip

    def apply(batch: dict) -> dict:
        out = {"pixel_values": [steps(image.convert(mode)) for image in batch["image"]]}
        return out | ({"labels": batch["label"]} if stage == "bft" else {})

    return apply


def build_trainer(pipeline: str, stage: str, geo: Geometry, folder: Path, args: TrainingArguments) -> Trainer:
    device = args.device
    if pipeline == "synthetic":
        data = DeviceTensors(args.per_device_train_batch_size * 4, geo, device, labels=stage == "bft")
    else:
        splits = load_image_folders(str(folder / "train"), str(folder / "test"))
        data, labels = splits["train"], list(splits["train"]["label"])  # labels read before a transform is attached
    processor, device_images = image_processor(geo.image_size, geo.channels), None
    augmentation = dict(with_labels=False) if stage == "mgp" else BFT_AUGMENTATION
    crop_min_scale = 0.2 if stage == "mgp" else 0.35
    if pipeline == "ours":
        attach_transforms(splits, processor, crop_min_scale, **augmentation)
    elif pipeline == "device":
        data, device_images = device_train_data(data, processor, crop_min_scale, **augmentation)
    if stage == "mgp":
        model = new_vitmae(geo.mae_config())
        if pipeline == "stock":
            return Trainer(model=model, args=args, train_dataset=data.with_transform(stock_transform(geo, stage)))
        return MAEPretrainingTrainer(model=model, args=args, train_dataset=data, device_images=device_images)
    if pipeline == "stock":
        model = ViTForImageClassification(ViTConfig(**geo.encoder(), num_labels=NUM_CLASSES))
        return Trainer(model=model, args=args, train_dataset=data.with_transform(stock_transform(geo, stage)))
    counts = [1] * NUM_CLASSES
    if pipeline != "synthetic":
        counts = torch.bincount(torch.tensor(labels), minlength=NUM_CLASSES).tolist()
    config = LiVTConfig(**geo.encoder(), num_labels=NUM_CLASSES, class_counts=counts, loss="bal_bce", drop_path_rate=0.1)
    return BalancedTrainer(model=LiVTForImageClassification(config), args=args, train_dataset=data, layer_decay=0.75,
                           mixer=Mixer("mixup_cutmix", counts), device_images=device_images)  # fmt: skip


def run_case(pipeline: str, stage: str, geo: Geometry, folder: Path, opts: argparse.Namespace) -> dict:
    cuda = torch.cuda.is_available() and not opts.use_cpu
    workers = 0 if pipeline in ("synthetic", "device") else opts.workers  # those loaders move no images
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=opts.warmup + opts.steps, per_device_train_batch_size=opts.batch_size,
            bf16=cuda and not opts.fp32, torch_compile=opts.compile, gradient_checkpointing=opts.checkpointing,
            optim="adamw_torch" if opts.no_fused else "adamw_torch_fused", dataloader_num_workers=workers,
            dataloader_pin_memory=cuda and pipeline in ("stock", "ours"), dataloader_persistent_workers=workers > 0,
            dataloader_prefetch_factor=4 if workers else None, use_cpu=not cuda, save_strategy="no",
            eval_strategy="no", logging_strategy="no", report_to="none", remove_unused_columns=False,
            disable_tqdm=True, seed=0,
        )  # fmt: skip
        trainer = build_trainer(pipeline, stage, geo, folder, args)
        timer = StepTimer(opts.warmup)
        trainer.add_callback(timer)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    seconds = timer.end - timer.start
    images_per_s = opts.steps * opts.batch_size / seconds
    result = {
        "pipeline": pipeline, "stage": stage, "model": geo.model, "image_size": geo.image_size,
        "batch_size": opts.batch_size, "images_per_s": images_per_s,
        "tflops": images_per_s * training_flops_per_image(stage, geo) / 1e12,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "warmup_s": timer.start - timer.started, "checkpointing": opts.checkpointing,
    }  # fmt: skip
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    return result


def matmul_peak_tflops(size: int = 8192, repeats: int = 20) -> float:
    """The GPU's bf16 matrix-multiply rate, measured here: the reference for '% of peak'."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def format_table(results: list[dict], peak: float | None) -> str:
    lines = ["| stage | model | px | pipeline | img/s | TFLOP/s | % of bf16 peak | peak mem (GiB) | ours / stock | "
             "warm-up s |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    stock = {(r["stage"], r["model"], r["image_size"]): r["images_per_s"] for r in results if r["pipeline"] == "stock"}
    for r in results:
        key = (r["stage"], r["model"], r["image_size"])
        ratio = f"{r['images_per_s'] / stock[key]:.2f}" if r["pipeline"] != "stock" and key in stock else ""
        share = f"{100 * r['tflops'] / peak:.0f}" if peak else ""
        name = r["pipeline"] + (" + ckpt" if r["checkpointing"] else "")
        lines.append(f"| {r['stage']} | {r['model']} | {r['image_size']} | {name} | {r['images_per_s']:,.0f} | "
                     f"{r['tflops']:.1f} | {share} | {r['peak_memory_gib']:.1f} | {ratio} | {r['warmup_s']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="+", default=["mgp", "bft"], choices=["mgp", "bft"])
    p.add_argument("--pipelines", nargs="+", choices=PIPELINES, help="Default: all four, or synthetic alone with --sweep.")
    p.add_argument("--model", default="vit-b", choices=list(MODELS))
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--patch_size", type=int, default=None, help="Default: 16, or 7 for images under 64 px.")
    p.add_argument("--channels", type=int, default=3, choices=[1, 3])
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--steps", type=int, default=40, help="Timed optimizer steps.")
    p.add_argument("--warmup", type=int, default=10, help="Untimed steps first (compilation, worker start-up).")
    p.add_argument("--workers", type=int, default=12, help="DataLoader workers of the stock and our pipelines.")
    p.add_argument("--num_images", type=int, default=20000, help="Images written to the JPEG folder.")
    p.add_argument("--data_root", default="benchmarks/data")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up includes compiling).")
    p.add_argument("--checkpointing", action="store_true", help="Activation checkpointing.")
    p.add_argument("--fp32", action="store_true", help="No bf16 autocast.")
    p.add_argument("--no_fused", action="store_true", help="Plain (for-each) AdamW instead of the fused kernel.")
    p.add_argument("--use_cpu", action="store_true", help="Run on the CPU (to check the script, not to measure).")
    p.add_argument("--sweep", action="store_true", help="ViT-S/B/L × 128/224/384 px (synthetic unless --pipelines).")
    p.add_argument("--output", default=None, help="Also write the results as JSON here.")
    return p.parse_args()


def cases(opts: argparse.Namespace):
    patch = opts.patch_size or (16 if opts.image_size >= 64 else 7)
    if not opts.sweep:
        for stage in opts.stages:
            for pipeline in opts.pipelines or PIPELINES:
                yield pipeline, stage, Geometry(opts.model, opts.image_size, patch, opts.channels)
        return
    for model in ("vit-s", "vit-b", "vit-l"):
        for size in (128, 224, 384):
            for stage in opts.stages:
                for pipeline in opts.pipelines or ["synthetic"]:
                    yield pipeline, stage, Geometry(model, size, 16, opts.channels)


def main() -> None:
    opts = parse()
    cuda = torch.cuda.is_available() and not opts.use_cpu
    results = []
    for pipeline, stage, geo in cases(opts):
        folder = None
        if pipeline != "synthetic":
            folder = write_jpeg_folder(Path(opts.data_root), geo.image_size, geo.channels, opts.num_images)
        try:
            result = run_case(pipeline, stage, geo, folder, opts)
        except torch.OutOfMemoryError:
            if opts.checkpointing:
                raise
            result = None
        if result is None:  # does not fit: retry with activation checkpointing, and say so in the table
            # out of the `except` block, whose traceback held the failed attempt's trainer and activations
            gc.collect()
            torch.cuda.empty_cache()
            result = run_case(pipeline, stage, geo, folder, argparse.Namespace(**vars(opts) | {"checkpointing": True}))
        results.append(result)
        print(json.dumps(result), flush=True)
    peak = matmul_peak_tflops() if cuda else None
    device = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"\n{device}, torch {torch.__version__}, bf16 matmul peak measured: {peak and f'{peak:.0f} TFLOP/s'}\n")
    print(format_table(results, peak))
    if opts.output:
        Path(opts.output).write_text(json.dumps({"device": device, "peak_tflops": peak, "results": results}, indent=2))


if __name__ == "__main__":
    main()
