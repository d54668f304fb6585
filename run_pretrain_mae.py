#!/usr/bin/env python
"""LiVT stage 1, Masked Generative Pretraining: stock ViTMAE (mask 0.75, norm-pix loss) on the long-tailed split.

    python run_pretrain_mae.py                      # Fashion-MNIST-LT (ρ = 100), offline, CPU-sized
    python run_pretrain_mae.py recipes/imagenet_lt_pretrain.json
    accelerate launch run_pretrain_mae.py --train_dir … --test_dir … --image_size 224 --patch_size 16 …
"""

from transformers import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining

from livt_hf.arguments import PretrainDataArguments, PretrainingArguments, PretrainModelArguments, parse_args
from livt_hf.data import batch_transform, eval_transform, prepare_splits, train_transform
from livt_hf.runs import infer_num_channels, logger, resolve_checkpoint, save_run_config, setup_logging
from livt_hf.trainer import MAEPretrainingTrainer


def main():
    model_args, data_args, training_args = parse_args(PretrainModelArguments, PretrainDataArguments, PretrainingArguments)
    setup_logging(training_args)
    checkpoint = resolve_checkpoint(training_args)
    logger.info("Total train batch %d; %s", training_args.total_train_batch_size, training_args.lr_rule)

    splits, split_info = prepare_splits(data_args)
    channels = model_args.num_channels or infer_num_channels(splits["train"])
    config = ViTMAEConfig(
        image_size=model_args.image_size,
        patch_size=model_args.patch_size,
        num_channels=channels,
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
        decoder_hidden_size=model_args.decoder_hidden_size,
        decoder_num_hidden_layers=model_args.decoder_num_hidden_layers,
        decoder_num_attention_heads=model_args.decoder_num_attention_heads,
        decoder_intermediate_size=model_args.decoder_intermediate_size,
        mask_ratio=model_args.mask_ratio,
        norm_pix_loss=model_args.norm_pix_loss,
    )
    processor = ViTImageProcessor(
        size={"height": config.image_size, "width": config.image_size}, image_mean=[0.5] * channels, image_std=[0.5] * channels
    )
    mean, std = processor.image_mean, processor.image_std
    augment = train_transform(config.image_size, mean, std, data_args.crop_min_scale)
    splits["train"].set_transform(batch_transform(augment, channels, with_labels=False))
    splits["validation"].set_transform(batch_transform(eval_transform(config.image_size, mean, std), channels, with_labels=False))

    trainer = MAEPretrainingTrainer(
        model=ViTMAEForPreTraining(config),
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        split_info.save(f"{training_args.output_dir}/lt_split.json")
        save_run_config(training_args.output_dir, model_args, data_args, training_args)
    logger.info("Validation reconstruction loss %.4f; checkpoint in %s", metrics["eval_loss"], training_args.output_dir)


if __name__ == "__main__":
    main()
