"""Parameter groups for MAE/LiVT: layer-wise LR decay baked into each group's lr, no weight decay on 1-D tensors,
the [CLS] token or position embeddings."""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import nn

_LAYER = re.compile(r"(?:^|\.)(?:layers|encoder\.layer)\.(\d+)\.")  # transformers 5.x and 4.x layouts
_EMBEDDING = re.compile(r"(?:^|\.)embeddings\.")
_NO_DECAY = re.compile(r"cls_token|position_embeddings|pos_embed|mask_token")
# what wrappers add to parameter names: FSDP version 1, torch's activation checkpointing, torch.compile
_WRAPPERS = re.compile(r"(?:_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")


def layer_id(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, num_layers + 1 for everything after (norm, head, decoder)."""
    if match := _LAYER.search(name):
        return int(match.group(1)) + 1
    return 0 if _EMBEDDING.search(name) else num_layers + 1


def check_layer_decay(layer_decay: float) -> None:
    if not 0 < layer_decay <= 1:
        raise ValueError(f"--layer_decay must be in (0, 1] (1: no decay; LiVT: 0.75), got {layer_decay}.")


def param_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    ndims: Mapping[str, int] | None = None,
) -> list[dict]:
    """Optimizer groups with `lr = learning_rate · layer_decay^(num_layers + 1 − layer_id)`.

    HF schedulers scale each group's own lr, so the decay survives warmup and cosine; `min_lr` floors scale with it.
    `ndims` gives each parameter's number of dimensions as the model was built, by name, for a wrapped model whose
    parameters changed shape: FSDP version 1 flattens every one into a 1-D shard, which would otherwise put all of
    them in the no-decay group. Wrapper prefixes (`_WRAPPERS`) are dropped from the names.
    """
    check_layer_decay(layer_decay)
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for wrapped_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = _WRAPPERS.sub("", wrapped_name)
        if ndims is not None and name not in ndims:
            raise ValueError(
                f"Parameter {wrapped_name} is not one of the model's own parameters, so its weight decay cannot be "
                "told. FSDP version 1 without use_orig_params merges parameters into one flat tensor per wrapped "
                "module: pass --fsdp_config '{\"version\": 2}' (or keep use_orig_params true)."
            )
        lid = layer_id(name, num_layers)
        ndim = param.ndim if ndims is None else ndims[name]
        decay = ndim > 1 and not _NO_DECAY.search(name)
        group = groups.setdefault(
            (lid, decay),
            {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": learning_rate * layer_decay ** (num_layers + 1 - lid),
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]
