"""Checkpoints: what is trained plus everything needed to continue exactly, and nothing frozen.

A checkpoint holds the trained tensors (parameters that require grad and the semantic-proxy
buffers: class-prompt bank, accumulator states), the optimiser and schedule state, the RNG state,
the epoch, the config and the backbone's identity (name and a hash of its weights). It is written to
a temporary file and renamed into place, and read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch

from .atomic import replacing
from .config import RUNTIME, Config
from .errors import CheckpointError
from .models import PromptedViT

__all__ = ["CheckpointError", "CHECKPOINT_FILE", "backbone_hash", "trained_state", "restore_trained",
           "save_checkpoint", "load_checkpoint", "check_compatible", "RUNTIME_FIELDS"]

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1
# Fields that say where and how a run executes, not what it learns: they may differ on resume.
RUNTIME_FIELDS = Config.fields_with(RUNTIME)
#: How a file torch.save writes begins (a zip archive); semproxy writes no other kind.
TORCH_MAGIC = b"PK\x03\x04"
#: The longest part of torch's own explanation quoted in a message.
MAX_REASON = 100



def backbone_hash(model: PromptedViT) -> str:
    """SHA-256 over the backbone's tensors as loaded (before any training), in state_dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def trained_state(model: PromptedViT) -> dict[str, torch.Tensor]:
    """Every tensor training changes: trainable parameters and the semantic-proxy buffers."""
    state = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if model.semantic is not None:
        state.update({f"semantic.{name}": b.detach() for name, b in model.semantic.named_buffers()})
    return state


def restore_trained(model: PromptedViT, payload: dict[str, Any], *, where: str) -> None:
    """Copy a checkpoint's trained tensors into ``model`` in place (optimisers keep their references).

    The checkpoint must hold exactly the tensors the model trains: one missing or one the model
    does not have is a CheckpointError naming it.
    """
    current, saved = trained_state(model), payload["trained"]
    for names, what in ((set(current) - set(saved), "lacks trained tensor"),
                        (set(saved) - set(current), "holds a trained tensor the model does not have:")):
        if names:
            raise CheckpointError(f"{where}: {what} '{sorted(names)[0]}'")
    with torch.no_grad():
        for name, tensor in current.items():
            tensor.copy_(saved[name])


def save_checkpoint(directory: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``directory/checkpoint.pt`` atomically (a kill or full disk keeps the last one)."""
    path = Path(directory) / CHECKPOINT_FILE
    with replacing(path) as tmp:
        torch.save({"format": FORMAT_VERSION, **payload}, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file or directory (tensors and plain containers only)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - corrupt or foreign file
        raise CheckpointError(_unreadable(path, error)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a semproxy checkpoint (format {FORMAT_VERSION})")
    return payload


def _unreadable(path: Path, error: BaseException) -> str:
    """Why torch cannot load ``path``, in one line: a file of another kind (a metrics.json), or a torch file of
    more than tensors, is no checkpoint; a torch archive that cannot be unpacked is corrupt or cut short.
    torch's reason is cut to its first clause (its messages run to hundreds of characters of advice about
    ``weights_only``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(TORCH_MAGIC))
    except OSError:
        head = TORCH_MAGIC
    reason = _torch_reason(error)
    if not head:
        return f"checkpoint {path} is not a semproxy checkpoint (the file is empty)"
    if head != TORCH_MAGIC:
        return (f"checkpoint {path} is not a semproxy checkpoint (torch cannot read it: {reason}); "
                f"give a run folder or its {CHECKPOINT_FILE}")
    if isinstance(error, pickle.UnpicklingError):  # a torch file, of objects a checkpoint never holds
        return f"checkpoint {path} is not a semproxy checkpoint (it holds more than tensors; torch: {reason})"
    return f"checkpoint {path} cannot be read: the file is corrupt or cut short (torch: {reason})"


def _torch_reason(error: BaseException) -> str:
    """The informative clause of torch.load's error: the unpickler's own complaint where torch wraps it in advice
    ("Weights only load failed. ... WeightsUnpickler error: Unsupported operand 123 ..."), else its first
    sentence; the exception's type where it says nothing (an EOFError)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    clause = lines[0].split(". ", 1)[0].rstrip(".")
    return clause if len(clause) <= MAX_REASON else clause[:MAX_REASON - 3] + "..."


def check_compatible(payload: dict[str, Any], config: Config, backbone_sha256: str, *, where: str) -> None:
    """Refuse a checkpoint of another backbone (name, or weights: ``backbone_sha256`` is
    :func:`backbone_hash` of the model it would be restored into) or another learning config."""
    saved = payload["backbone"]
    if saved["name"] != config.model.backbone:
        raise CheckpointError(f"{where}: made for backbone '{saved['name']}', not '{config.model.backbone}'")
    if saved["sha256"] != backbone_sha256:
        raise CheckpointError(f"{where}: the backbone weights differ from those it was trained on "
                              f"(sha256 {saved['sha256'][:12]}...)")
    theirs = Config.from_mapping(payload["config"]).flat()
    ours = config.flat()
    differing = sorted(k for k in ours if k not in RUNTIME_FIELDS and ours[k] != theirs.get(k))
    if differing:
        key = differing[0]
        raise CheckpointError(f"{where}: made with another config ({key}={theirs.get(key)!r}, "
                              f"now {ours[key]!r}{f' and {len(differing) - 1} more' if len(differing) > 1 else ''})")
