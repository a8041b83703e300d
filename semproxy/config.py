"""The typed configuration: the single source of truth for every parameter name.

One dataclass per concern (model, loss, data, optim, eval), gathered in :class:`Config`. Field
names are unique across sections, so a flat name such as ``num_prompts`` or ``lr`` addresses exactly
one knob: search spaces, ``--set`` overrides, trainables and exports all speak these names. YAML
files hold the sections as mappings; a field name at the top level is accepted too. Defaults follow
the paper code's CUB-200 ViT-S/16 setting (method.md section 4).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import yaml

from .atomic import write_text_atomic
from .typed_config import (ConfigError, field_names, fields_with_role, knob, parse_scalar, read_yaml, short,
                           unknown_key, validate)

__all__ = ["ConfigError", "ModelConfig", "LossConfig", "DataConfig", "OptimConfig", "EvalConfig", "Config",
           "knob", "validate", "check_device"]

# Roles a field can declare (semproxy.typed_config.knob): who may change it, and what it decides.
RUNTIME = "runtime"  # where and how a run executes, not what it learns: may differ on resume
CACHE = "cache"      # decides the shared image cache: may be fixed in a search space, never sampled

Method = Literal["full", "linear", "bitfit", "adapter", "vpt", "vptsp_ema", "vptsp_gru", "lora"]

# Upper bounds of the size and count knobs: generous (several times what any paper or backbone
# uses), but a typo such as num_prompts: 20000000 is a one-line error rather than the OOM killer.
# What fits the machine is checked when the model is built (semproxy.models.memory).
MAX_PROMPTS = 1024      # tokens added to every sequence (VPT searched at most 200)
MAX_LAYERS = 256        # more blocks than any ViT (ViT-22B has 48); the backbone's own depth is checked too
MAX_WIDTH = 8192        # embedding / adapter widths (published DML: 64-2048; AdaptFormer: at most 512)
MAX_BATCH = 16384       # images per batch (4x the largest batch of the DML literature)
MAX_EPOCHS = 10_000
#: A search space's top-level keys (semproxy/search/space.py); a config given them is a space passed as a config.
SPACE_KEYS = ("extends", "params", "search", "starts")
# 'auto', 'cpu', 'cuda' or 'cuda:N'; whether the device exists is checked when a run starts.
DEVICE = re.compile(r"auto|cpu|cuda(:(0|[1-9][0-9]{0,3}))?")  # torch refuses cuda:01


def check_device(name: str, where: str = "config") -> str:
    """``name`` when it has the form of a device setting, else a ConfigError naming ``where`` and 'device'."""
    if not DEVICE.fullmatch(name):
        raise ConfigError(f"{where}: key 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {short(name)}")
    return name


@dataclass
class ModelConfig:
    """The prompted ViT, its fine-tuning method and the semantic proxies (method.md sections 1-2)."""

    backbone: str = knob("vit_small_patch16_224.augreg_in21k", "timm model name (optionally name.tag)", roles=(CACHE,))
    weights: Optional[str] = knob(None, "local weights file (.safetensors, .pth, .npz); None = hub/random",
                                  roles=(RUNTIME, CACHE))
    pretrained: bool = knob(True, "download pretrained weights from the hub when no weights file is given",
                            roles=(RUNTIME, CACHE))
    img_size: Optional[int] = knob(None, "input size; None = the backbone's default (at most 2048: twice the "
                                         "largest input of timm's pretrained ViTs)", low=8, high=2048, roles=(CACHE,))
    method: Method = knob("vptsp_gru", "fine-tuning method")
    bitfit: bool = knob(True, "also train every backbone bias (adapter, lora, vpt, vptsp_*; the paper's (B))")
    embedding_dim: int = knob(384, "output embedding width E", low=1, high=MAX_WIDTH)
    # deep visual prompts
    num_prompts: int = knob(10, "VPT-deep prompts N at the first layer", low=0, high=MAX_PROMPTS)
    prompt_depth: int = knob(12, "number of layers that get prompts", low=0, high=MAX_LAYERS)
    prompt_step: int = knob(0, "prompts lost per layer: layer i has max(N - i*step, 0)", low=0,
                            high=MAX_PROMPTS)
    # AdaptFormer adapters
    adapter_layers: int = knob(7, "adapters in the LAST this many blocks", low=0, high=MAX_LAYERS)
    adapter_dim: int = knob(256, "adapter bottleneck width d", low=1, high=MAX_WIDTH)
    adapter_position: Literal["parallel", "sequential"] = knob("parallel", "adapter beside or after the MLP")
    adapter_norm: Literal["pre", "post", "none"] = knob("pre", "adapter LayerNorm before/after it, or none")
    adapter_init: Literal["lora", "bert", "uniform"] = knob("lora", "adapter weight initialisation")
    adapter_scale: float = knob(0.1, "adapter output scale", low=0.0)
    adapter_dropout: float = knob(0.1, "dropout inside the adapter", low=0.0, high=1.0)
    # LoRA on the q and v projections
    lora_layers: int = knob(12, "LoRA in the LAST this many blocks", low=0, high=MAX_LAYERS)
    lora_rank: int = knob(8, "LoRA rank r of the q and v updates", low=1, high=MAX_WIDTH)
    lora_alpha: float = knob(8.0, "LoRA scale: the updates are B A x * lora_alpha / lora_rank", low=0.0)
    # semantic proxies
    class_prompts: int = knob(3, "class prompts CLS-N at the first layer", low=0, high=MAX_PROMPTS)
    class_prompt_depth: int = knob(12, "layers with class prompts CLS-L", low=0, high=MAX_LAYERS)
    class_prompt_step: int = knob(0, "class prompts lost per layer", low=0, high=MAX_PROMPTS)
    proxy_prompts: Literal["class", "class+sample"] = knob("class", "prompts of the proxy pass")
    ema_keep: float = knob(0.8, "EMA keep ratio beta (vptsp_ema)", low=0.0, high=1.0)
    gru_activation: Literal["relu", "tanh"] = knob("relu", "GRU candidate activation (vptsp_gru)")
    gru_dropout: float = knob(0.0, "dropout on the GRU hidden state", low=0.0, high=1.0)
    proxy_bias_ratio: float = knob(0.5, "lambda: weight of the proxy bias in the fused proxy", low=0.0, high=1.0)
    normalise_bias: bool = knob(False, "L2-normalise the proxy bias before fusion")
    offload_class_prompts: bool = knob(False, "keep the class-prompt bank in host memory")


@dataclass
class LossConfig:
    """Proxy-Anchor (Kim et al. 2020), method.md section 3."""

    pa_alpha: float = knob(32.0, "Proxy-Anchor scale alpha", low=0.0)
    pa_delta: float = knob(0.1, "Proxy-Anchor margin delta", low=0.0)
    pa_pos_norm: Literal["positive", "all"] = knob(
        "positive", "divide the pull term by the proxies with positives, or by all (paper code)")


Dataset = Literal["cub200", "cars196", "sop", "inshop", "inat", "synthetic"]


@dataclass
class DataConfig:
    """Which benchmark, how it is split, sampled and augmented (method.md sections 4 and 6)."""

    dataset: Dataset = knob("cub200", "benchmark", roles=(CACHE,))
    data_root: Optional[str] = knob(None, "dataset folder; None = ./data/<dataset>", roles=(RUNTIME, CACHE))
    val_fraction: float = knob(0.2, "last fraction of training classes held out for validation (0: none)",
                               low=0.0, high=0.9, roles=(CACHE,))
    batch_size: int = knob(64, "images per batch B", low=2, high=MAX_BATCH)
    samples_per_class: int = knob(2, "adjacent images per class K in a batch", low=1, high=MAX_BATCH)
    interpolation: Literal["bicubic", "bilinear"] = knob("bicubic", "resampling (bilinear = paper code)",
                                                         roles=(CACHE,))
    crop_pct: float = knob(0.875, "eval centre-crop fraction: Resize(size / crop_pct) + CenterCrop(size)",
                           low=0.1, high=1.0, roles=(CACHE,))
    train_short_side: Optional[int] = knob(
        None, "shorter side the training images are cached at, what RandomResizedCrop crops from (the paper code "
              "cropped the original files); None = the evaluation resize, img_size / crop_pct (256 at 224 px)",
        low=8, high=4096, roles=(CACHE,))
    cache_dir: Optional[str] = knob(None, "decoded-image cache; None = $SEMPROXY_CACHE, else "
                                          "~/.cache/semproxy/images", roles=(RUNTIME, CACHE))
    workers: int = knob(4, "threads that decode images into the cache", low=1, high=256, roles=(RUNTIME,))
    device_cache_mb: int = knob(4000, "keep the training cache on the GPU when it takes at most this many MB "
                                      "(10^6 bytes) and at most half the GPU's free memory; each trial on a GPU "
                                      "holds its own copy; 0 = never", low=0, high=10**7, roles=(RUNTIME,))
    max_bad_fraction: float = knob(0.01, "unreadable images tolerated (skipped) before it is an error",
                                   low=0.0, high=1.0, roles=(CACHE,))
    synthetic_classes: int = knob(24, "synthetic dataset: classes (half train, half test)", low=4, high=1000,
                                  roles=(CACHE,))
    synthetic_per_class: int = knob(16, "synthetic dataset: images per class (at most 200k images in all, more "
                                        "than SOP)", low=2, high=200, roles=(CACHE,))
    synthetic_size: int = knob(64, "synthetic dataset: image side in pixels", low=16, high=256, roles=(CACHE,))


@dataclass
class OptimConfig:
    """Optimisers, schedule and numerics (method.md section 4)."""

    optimizer: Literal["sgd", "adam", "adamw"] = knob("sgd", "optimiser of every trained parameter")
    lr: float = knob(5e-3, "learning rate of the encoder side (prompts, heads, adapters, biases)", low=0.0)
    lr_proxy: float = knob(0.1, "learning rate of the proxies (absolute)", low=0.0)
    weight_decay: float = knob(1e-6, "weight decay (L2 for sgd/adam, decoupled for adamw)", low=0.0)
    momentum: float = knob(0.9, "SGD momentum", low=0.0, high=1.0)
    epochs: int = knob(15, "training epochs", low=1, high=MAX_EPOCHS)
    warmup_epochs: int = knob(0, "linear warm-up epochs before the cosine decay", low=0, high=MAX_EPOCHS)
    cosine_epochs: Optional[int] = knob(
        None, "length in epochs of the cosine decay after the warm-up (the paper code's lr_cosine_length, "
              "torch's T_max); None = the rest of the run; past its end the rates climb again, as torch's do",
        low=1, high=MAX_EPOCHS)
    lr_min: float = knob(0.0, "learning rate the cosine decays to, absolute and the same for every group (the paper "
                              "code's lr_cosine_min, torch's eta_min)", low=0.0)
    grad_clip: Optional[float] = knob(None, "clip the gradient norm to this value; None = off", low=0.0)
    amp: bool = knob(True, "mixed precision on GPU (bf16 where supported, else fp16); off on CPU")
    compile: Literal["off", "default", "cuda_graphs"] = knob(
        "off", "run the training step (forward, loss, backward, both optimisers) as one torch.compile graph: "
               "'default' (Inductor), 'cuda_graphs' (mode reduce-overhead: replayed as CUDA graphs, GPU only); "
               "compiled once per run, its seconds reported as compile_seconds", roles=(RUNTIME,))
    seed: int = knob(0, "seed of initialisation, sampling and augmentation (numpy's range)", low=0,
                     high=2**32 - 1)


@dataclass
class EvalConfig:
    """When and what to evaluate."""

    eval_batch_size: int = knob(128, "images per evaluation batch", low=1, high=MAX_BATCH, roles=(RUNTIME,))
    eval_every: int = knob(1, "validate every this many epochs (and after the last)", low=1, high=MAX_EPOCHS,
                           roles=(RUNTIME,))
    test_eval: bool = knob(False, "evaluate on the test classes after training (final runs)", roles=(RUNTIME,))
    device: str = knob("auto", "'auto' (the GPU when there is one), 'cpu', 'cuda' or 'cuda:N'", roles=(RUNTIME,))


def _refuse_search_space(mapping: dict, known: list[str], where: str) -> None:
    """A search-space file given where a config belongs (``--config search_spaces/vptsp.yaml``) is named as such,
    not reported as its first unknown key: its unknown keys are all a space's, among them 'params' or 'extends'."""
    unknown = [key for key in mapping if key not in known]
    if unknown and all(key in SPACE_KEYS for key in unknown) and {"params", "extends"} & set(unknown):
        raise ConfigError(f"{where} is a search space (for tune.py --space), not a training config (it has top-level "
                          f"'{unknown[0]}', a config has sections {', '.join(Config.SECTIONS)})")


@dataclass
class Config:
    """Every knob of a run. ``Config()`` is the paper code's CUB ViT-S/16 setting but for its schedule's
    length and floor (``experiments/cub200_vit_s.yaml`` has them): by default the cosine spans the run
    and ends at zero."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    SECTIONS: ClassVar[tuple[str, ...]] = ("model", "loss", "data", "optim", "eval")

    # -- flat names --------------------------------------------------------------------------
    @classmethod
    def section_of(cls) -> dict[str, str]:
        """Field name -> section name, for every field (names are unique across sections)."""
        owners: dict[str, str] = {}
        for section in cls.SECTIONS:
            for name in field_names(type(getattr(cls(), section))):
                owners[name] = section
        return owners

    @classmethod
    def fields_with(cls, role: str) -> frozenset[str]:
        """Flat names of the fields that declare ``role`` (:data:`RUNTIME`, :data:`CACHE`)."""
        return frozenset().union(*(fields_with_role(type(getattr(cls(), s)), role) for s in cls.SECTIONS))

    def flat(self) -> dict[str, Any]:
        return {name: getattr(getattr(self, section), name) for name, section in self.section_of().items()}

    def replace(self, values: dict[str, Any], *, where: str = "config") -> "Config":
        """A validated copy with flat-named values changed; unknown names are an error."""
        owners = self.section_of()
        changes: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in owners:
                raise unknown_key(str(name), list(owners), where)
            changes.setdefault(owners[name], {})[name] = value
        new = dataclasses.replace(self, **{
            section: dataclasses.replace(getattr(self, section), **fields) for section, fields in changes.items()})
        return new.check(where)

    def with_overrides(self, overrides: list[str], *, where: str = "--set") -> "Config":
        """Apply ``key=value`` strings (values parsed as YAML scalars), validated like a file."""
        values: dict[str, Any] = {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{where}: expected key=value, got {short(item)}")
            values[key.strip()] = parse_scalar(text, f"{where} {key.strip()}")
        return self.replace(values, where=where)

    def check(self, where: str = "config") -> "Config":
        """Validate every section and the combinations a run needs."""
        for section in self.SECTIONS:
            validate(getattr(self, section), where=where)
        if self.data.batch_size % self.data.samples_per_class:
            raise ConfigError(f"{where}: batch_size {self.data.batch_size} is not a multiple of "
                              f"samples_per_class {self.data.samples_per_class}")
        if self.optim.warmup_epochs >= self.optim.epochs and self.optim.warmup_epochs:
            raise ConfigError(f"{where}: warmup_epochs {self.optim.warmup_epochs} must be below epochs "
                              f"{self.optim.epochs}")
        if self.optim.compile != "off" and self.model.offload_class_prompts:
            raise ConfigError(f"{where}: key 'compile' is '{self.optim.compile}' but offload_class_prompts keeps "
                              f"the class prompts on the host, outside a compiled step; use one of them")
        check_device(self.eval.device, where)
        return self

    # -- mappings and YAML -------------------------------------------------------------------
    def to_mapping(self) -> dict[str, dict[str, Any]]:
        return {section: dataclasses.asdict(getattr(self, section)) for section in self.SECTIONS}

    @classmethod
    def from_mapping(cls, mapping: Any, *, where: str = "config") -> "Config":
        """Sections as mappings, or field names at the top level; anything else is an error."""
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, dict):
            raise ConfigError(f"{where}: expected a mapping of sections, got {type(mapping).__name__}")
        owners = cls.section_of()
        _refuse_search_space(mapping, [*cls.SECTIONS, *owners], where)
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            if key in cls.SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: section '{key}' must be a mapping, got {short(value)}")
                for name in value:
                    if name in owners and owners[name] != key:
                        raise ConfigError(f"{where}: key '{name}' belongs in section '{owners[name]}', not '{key}'")
                    if owners.get(name) != key:
                        raise unknown_key(f"{key}.{name}", [f"{owners[n]}.{n}" for n in owners], where)
                items = value.items()
            elif key in owners:
                items = [(key, value)]
            else:
                raise unknown_key(key, list(cls.SECTIONS) + list(owners), where)
            for name, inner in items:  # a flat name and its section's may not both give a value
                if name in values:
                    raise ConfigError(f"{where}: key '{name}' given twice (at the top level and in section "
                                      f"'{owners[name]}')")
                values[name] = inner
        return cls().replace(values, where=where)

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        return cls.from_mapping(read_yaml(path, "config"), where=str(path))

    def dump(self, path: str | Path, header: str = "") -> Path:
        """Write YAML atomically (temporary file, then rename); ``header`` lines become comments."""
        comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
        return write_text_atomic(path, comments + yaml.safe_dump(self.to_mapping(), sort_keys=False))
