#!/usr/bin/env python
"""LiVT stage 2, Balanced Fine-Tuning: a LiVT classifier from the MGP checkpoint, trained with Bal-BCE.

    python run_finetune_balanced.py                 # after run_pretrain_mae.py, Fashion-MNIST-LT (ρ = 100)
    python run_finetune_balanced.py --from_scratch  # from a new ViTMAE encoder: no stage 1
    python run_finetune_balanced.py recipes/imagenet_lt_finetune.json
    python run_finetune_balanced.py --loss ce       # the plain-CE baseline on the same split

The best epoch is chosen on the validation split; the test split is evaluated once, at the end.
"""

import json
import math
from pathlib import Path

from transformers.trainer_utils import PredictionOutput

from livt_hf.arguments import (
    FinetuneDataArguments,
    FinetuneModelArguments,
    FinetuningArguments,
    MixingArguments,
    parse_args,
)
from livt_hf.data import (
    Mixer,
    attach_transforms,
    build_train_sampler,
    checkpoint_processor,
    device_train_data,
    prepare_splits,
)
from livt_hf.losses import LOSS_DEFAULTS
from livt_hf.mae import new_vitmae, scratch_vitmae_config
from livt_hf.metrics import (
    calibration_metrics,
    fit_temperature,
    format_report,
    long_tail_report,
    probabilities_from_logits,
)
from livt_hf.modeling_livt import LiVTForImageClassification
from livt_hf.modelcard import finetune_model_card
from livt_hf.plots import plot_finetune_results
from livt_hf.prior_shift import predicted_prior
from livt_hf.runs import (
    data_seed,
    fit_epochs_to_min_steps,
    infer_num_channels,
    logger,
    read_run_config,
    run_record,
    save_run_config,
    start_run,
    warn_on_channel_conversion,
)
from livt_hf.trainer import BalancedTrainer, long_tail_compute_metrics


def main() -> tuple[BalancedTrainer, PredictionOutput]:
    """Fine-tune, report on the test split; returns the trainer and the test predictions (for tests and notebooks)."""
    model_args, data_args, mixing_args, training_args = parse_args(
        FinetuneModelArguments, FinetuneDataArguments, MixingArguments, FinetuningArguments
    )
    if data_args.train_sampler == "progressive" and training_args.max_steps > 0:
        raise ValueError("The progressive sampler follows --num_train_epochs; train by epochs, not --max_steps.")
    checkpoint = start_run(training_args)

    splits, split_info = prepare_splits(data_args)
    epochs_raised = fit_epochs_to_min_steps(training_args, len(splits["train"]))
    names = split_info.class_names
    model_kwargs = dict(
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        class_counts=split_info.train_counts,
        loss=model_args.loss,
        tau=model_args.tau,
        drop_path_rate=model_args.drop_path_rate,
        cosine_head=model_args.cosine_head,
        head_init_std=model_args.head_init_std,
        head_bias_init=model_args.head_bias_init,
        test_prior=model_args.test_prior,
        inference_test_prior=model_args.inference_test_prior,
        **{name: getattr(model_args, name) for name in LOSS_DEFAULTS},
    )
    if model_args.from_scratch:
        mae = new_vitmae(scratch_vitmae_config(model_args.image_size, infer_num_channels(splits["train"])))
        model = LiVTForImageClassification.from_mae(mae, "a new ViTMAE (--from_scratch)", **model_kwargs)
    else:
        overrides = {"image_size": model_args.image_size} if model_args.image_size else {}
        model = LiVTForImageClassification.from_mae_pretrained(model_args.mae_checkpoint, **model_kwargs, **overrides)
    config = model.config
    logger.info("Loss %s (τ = %g), train class counts %s", config.loss, config.tau, config.class_counts)
    data_args.resolve_random_translate(config.image_size, training_args.num_train_epochs, epochs_raised)

    warn_on_channel_conversion(splits["train"], config.num_channels)
    train_sampler = build_train_sampler(
        splits["train"]["label"],
        data_args.train_sampler,
        num_epochs=math.ceil(training_args.num_train_epochs),
        seed=data_seed(training_args),
        partner_tau=mixing_args.unimix_tau if mixing_args.mixing == "unimix" else None,
        partner_until_epoch=mixing_args.mix_until_epoch,
    )
    mixer = Mixer(mixing_args.mixing, split_info.train_counts, **mixing_args.mixer_params())
    logger.info("Sampler %s, mixing %s", data_args.train_sampler, mixing_args)
    processor, inputs = checkpoint_processor(model_args.mae_checkpoint, config.image_size, config.num_channels)
    augmentation = dict(auto_augment=data_args.auto_augment, random_erasing=data_args.random_erasing,
                        random_translate=data_args.random_translate)
    train_dataset, device_images = splits["train"], None
    if data_args.augment_on_device:
        train_dataset, device_images = device_train_data(splits["train"], processor, data_args.crop_min_scale,
                                                         **augmentation)  # fmt: skip
    attach_transforms(splits, processor, data_args.crop_min_scale, **augmentation)

    trainer = BalancedTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=splits["validation"],
        processing_class=processor,
        compute_metrics=long_tail_compute_metrics(
            split_info.train_counts, data_args.many_threshold, data_args.few_threshold
        ),
        layer_decay=model_args.layer_decay,
        train_sampler=train_sampler,
        mixer=mixer,
        device_images=device_images,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    # one pass over validation gives the best model's metrics and the logits temperature scaling is fitted on
    validation = trainer.predict(splits["validation"], metric_key_prefix="eval")
    trainer.save_metrics("eval", validation.metrics)

    # The test split is used once, here, after the model was chosen on validation.
    test = trainer.predict(splits["test"], metric_key_prefix="test")
    trainer.save_metrics("test", test.metrics)
    report = long_tail_report(
        test.predictions.argmax(-1),
        test.label_ids,
        split_info.train_counts,
        names,
        data_args.many_threshold,
        data_args.few_threshold,
    )
    # the trainer evaluates the raw logits (never config.inference_test_prior's shift): the report says so
    report["prior"] = {"predictions_for": predicted_prior(config.loss, config.tau, config.test_prior),
                       "inference_test_prior": config.inference_test_prior}  # fmt: skip
    # post-hoc temperature scaling, fitted on validation; the test split only reports its effect
    temperature = fit_temperature(validation.predictions, validation.label_ids, config.loss)
    report["temperature"] = temperature
    report["calibration"] = {
        label: calibration_metrics(probabilities_from_logits(test.predictions, config.loss, t), test.label_ids)
        for label, t in (("as trained", 1.0), (f"temperature-scaled, T = {temperature:.3f}", temperature))
    }
    table = format_report(report, title=f"Test split ({sum(split_info.test_counts)} images), loss {config.loss}")
    if trainer.is_world_process_zero():
        out = Path(training_args.output_dir)
        (out / "results.json").write_text(json.dumps(report, indent=2))
        (out / "results.md").write_text(table)
        split_info.save(out / "lt_split.json")
        record = run_record(model_args, data_args, mixing_args, training_args)
        plots = plot_finetune_results(out / "plots", report, test.predictions, test.label_ids, config.loss,
                                      trainer.state.log_history)  # fmt: skip
        pretraining = read_run_config(model_args.mae_checkpoint) if model_args.mae_checkpoint else None
        trainer.model_card = finetune_model_card(out, report, split_info, record, inputs, pretraining, plots)
        trainer.create_model_card()  # README.md; push_to_hub below uploads this card, not Trainer's
        save_run_config(out, record)
        print(table)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return trainer, test


if __name__ == "__main__":
    trainer, _ = main()
    trainer.end_training()  # frees the process group: a distributed run exits 0
