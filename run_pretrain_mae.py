#!/usr/bin/env python
"""LiVT stage 1, Masked Generative Pretraining: stock ViTMAE (mask 0.75, norm-pix loss) on the long-tailed split.

    python run_pretrain_mae.py                      # Fashion-MNIST-LT (ρ = 100), offline, CPU-sized
    python run_pretrain_mae.py recipes/imagenet_lt_pretrain.json
    python run_pretrain_mae.py --model_name_or_path facebook/vit-mae-base --dataset_name …  # continue a Hub ViTMAE
    accelerate launch run_pretrain_mae.py --train_dir … --test_dir … --image_size 224 --patch_size 16 …
"""

from pathlib import Path

from livt_hf.arguments import PretrainDataArguments, PretrainingArguments, PretrainModelArguments, parse_args
from livt_hf.data import attach_transforms, checkpoint_processor, device_train_data, prepare_splits
from livt_hf.mae import mae_from_checkpoint, new_vitmae, new_vitmae_config
from livt_hf.modelcard import pretrain_model_card
from livt_hf.plots import plot_pretrain_results, sample_reconstructions
from livt_hf.runs import (
    fit_epochs_to_min_steps,
    infer_num_channels,
    logger,
    run_record,
    save_run_config,
    start_run,
    warn_on_channel_conversion,
)
from livt_hf.trainer import MAEPretrainingTrainer


def main():
    model_args, data_args, training_args = parse_args(PretrainModelArguments, PretrainDataArguments, PretrainingArguments)
    checkpoint = start_run(training_args)
    # a checkpoint is read, and checked against the flags, before any data is loaded
    model = mae_from_checkpoint(model_args) if model_args.model_name_or_path else None

    splits, split_info = prepare_splits(data_args)
    fit_epochs_to_min_steps(training_args, len(splits["train"]))
    del splits["test"]  # MGP never sees the test split
    if model is None:
        channels = model_args.num_channels or infer_num_channels(splits["train"])
        model = new_vitmae(new_vitmae_config(model_args, channels))
    else:
        warn_on_channel_conversion(splits["train"], model.config.num_channels)
    processor, inputs = checkpoint_processor(model_args.model_name_or_path, model.config.image_size,
                                             model.config.num_channels)  # fmt: skip
    train_dataset, device_images = splits["train"], None
    if data_args.augment_on_device:
        train_dataset, device_images = device_train_data(splits["train"], processor, data_args.crop_min_scale,
                                                         with_labels=False)  # fmt: skip
    attach_transforms(splits, processor, data_args.crop_min_scale, with_labels=False)  # ViTMAE takes no labels

    trainer = MAEPretrainingTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=splits["validation"],
        processing_class=processor,
        device_images=device_images,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    # on every process: under FSDP the reconstructions' forward gathers the weights from all of them
    reconstructions = sample_reconstructions(trainer.model, splits["validation"], seed=training_args.seed)
    if trainer.is_world_process_zero():
        out = Path(training_args.output_dir)
        split_info.save(out / "lt_split.json")
        record = run_record(model_args, data_args, training_args)
        plots = plot_pretrain_results(out / "plots", reconstructions, processor, trainer.state.log_history,
                                      seed=training_args.seed)  # fmt: skip
        trainer.model_card = pretrain_model_card(out, split_info, record, metrics["eval_loss"], plots, inputs)
        trainer.create_model_card()  # README.md; push_to_hub below uploads this card, not Trainer's
        save_run_config(out, record)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    logger.info("Validation reconstruction loss %.4f; checkpoint in %s", metrics["eval_loss"], training_args.output_dir)
    trainer.end_training()  # frees the process group: a distributed run exits 0


if __name__ == "__main__":
    main()
