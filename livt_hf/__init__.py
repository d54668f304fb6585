"""livt-hf: LiVT (masked generative pretraining + balanced fine-tuning) for long-tailed image data on HF."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_livt import LiVTConfig
from .losses import LOSSES, build_loss
from .modeling_livt import LiVTForImageClassification, LiVTModel, LiVTPreTrainedModel
from .trainer import BalancedTrainer, LiVTTrainer, MAEPretrainingTrainer

__version__ = "0.1.0"

AutoConfig.register(LiVTConfig.model_type, LiVTConfig, exist_ok=True)
AutoModel.register(LiVTConfig, LiVTModel, exist_ok=True)
AutoModelForImageClassification.register(LiVTConfig, LiVTForImageClassification, exist_ok=True)
# `save_pretrained` also writes the code and an `auto_map`, so a saved model loads where livt_hf is not installed:
# `AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)`.
LiVTConfig.register_for_auto_class()
LiVTModel.register_for_auto_class("AutoModel")
LiVTForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "LOSSES",
    "BalancedTrainer",
    "LiVTConfig",
    "LiVTForImageClassification",
    "LiVTModel",
    "LiVTPreTrainedModel",
    "LiVTTrainer",
    "MAEPretrainingTrainer",
    "build_loss",
]
