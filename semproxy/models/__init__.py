"""Prompted ViTs with semantic proxies: backbone loading, the fine-tuning methods, prompts, heads, accumulators."""
from .accumulators import ACCUMULATORS, EMAAccumulator, GRUAccumulator
from ..data.batch_classes import BatchClasses
from .backbone import BackboneError, create_backbone, load_backbone_weights
from .class_bank import ClassPromptBank
from .heads import EmbeddingHead
from .methods import METHODS, Adapter, FineTuningMethod, PEFTMethod, get_method, register_method
from .params import ParameterCount, count_parameters
from .prompted_vit import PromptedViT, TrainOutput, build_model
from .prompts import DeepPrompts, prompt_counts
from .row_optim import RowSparseOptimizer
from .semantic import SemanticProxies

__all__ = [
    "ACCUMULATORS", "EMAAccumulator", "GRUAccumulator", "Adapter", "BackboneError", "create_backbone",
    "load_backbone_weights", "ClassPromptBank", "EmbeddingHead", "METHODS", "FineTuningMethod", "PEFTMethod",
    "get_method", "register_method", "ParameterCount", "count_parameters", "PromptedViT", "TrainOutput", "build_model",
    "DeepPrompts", "prompt_counts", "RowSparseOptimizer", "SemanticProxies", "BatchClasses",
]
