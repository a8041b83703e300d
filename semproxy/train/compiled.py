"""The ``compile`` knob: the training step through ``torch.compile``, one graph, compiled once per run.

The step (``Trainer.device_step``: forward, Proxy-Anchor, backward, clipping, the dense and the
row-sparse updates) has static shapes for a run (B images of G = B / K classes with K each, fixed
prompt counts), no host sync and no branch on tensor values, so Dynamo captures it whole: the
backward as ``torch.autograd.grad`` inside the graph (Dynamo's ``trace_autograd_ops``, set only while
the step traces and runs, never process-wide), the optimisers through torch's functional updates.
``fullgraph=True`` makes a graph break an error rather than a silent split. Modes are a registry
keyed by the config's names (``tests/test_compile.py`` checks they agree).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..config import ConfigError

__all__ = ["CompileMode", "COMPILE_MODES", "compile_step", "explain_step", "TRACE_CONFIG"]

#: Dynamo settings the step is traced under: the backward joins the graph instead of breaking it; every
#: Trainer of a process adds an entry to the cache of the one ``device_step`` code object (tests and
#: benches build several), so the limit on entries is raised from 8.
TRACE_CONFIG = {"trace_autograd_ops": True, "recompile_limit": 64}


@dataclass(frozen=True)
class CompileMode:
    """One value of ``compile``: torch.compile's mode (None: the step runs eagerly), whether it needs CUDA,
    and whether what the step mutates must keep its address from call to call (a CUDA graph replays
    the captured addresses: the optimiser states, the class-prompt bank and the learning rates)."""

    torch_mode: Optional[str]
    cuda_only: bool = False
    static_state: bool = False


COMPILE_MODES: dict[str, CompileMode] = {
    "off": CompileMode(None),
    "default": CompileMode("default"),
    "cuda_graphs": CompileMode("reduce-overhead", cuda_only=True, static_state=True),
}


def _traced(fn: Callable, before_first: Callable[[], None] = lambda: None) -> Callable:
    """``fn`` run under :data:`TRACE_CONFIG` (Dynamo reads it when it traces: at the first call, or a
    recompile), with ``before_first()`` run once, before the first call."""
    pending = [before_first]

    def run(*args: Any) -> Any:
        while pending:
            pending.pop()()
        with torch._dynamo.config.patch(**TRACE_CONFIG):
            return fn(*args)
    return run


def compile_step(step: Callable, mode_name: str, device: torch.device,
                 state: Callable[[], list[torch.Tensor]]) -> Callable:
    """``step`` as the ``compile`` mode ``mode_name`` runs it on ``device``; itself for ``off``.

    ``state``: the tensors the step mutates besides parameters and buffers, marked static for CUDA
    graphs at the first call (after a checkpoint's optimiser state was loaded, which replaces them).
    Compilation itself happens at that first call too. A CUDA-only mode on another device is a
    one-line ConfigError.
    """
    mode = COMPILE_MODES[mode_name]
    if mode.torch_mode is None:
        return step
    if mode.cuda_only and device.type != "cuda":
        raise ConfigError(f"key 'compile' is '{mode_name}', which captures CUDA graphs, but the device is "
                          f"{device.type}: use compile: default or off")
    missing = [key for key in TRACE_CONFIG if not hasattr(torch._dynamo.config, key)]
    if missing:
        raise ConfigError(f"key 'compile' is '{mode_name}', but torch {torch.__version__}'s Dynamo has no "
                          f"'{missing[0]}' setting, which the compiled step needs: use compile: off, or a newer torch")

    def mark_static() -> None:
        for tensor in state() if mode.static_state else []:
            torch._dynamo.mark_static_address(tensor)

    # dynamic=False: a run's shapes are static; another Trainer's shapes give another static graph.
    return _traced(torch.compile(step, mode=mode.torch_mode, fullgraph=True, dynamic=False), mark_static)


def explain_step(step: Callable, *args: Any):
    """``torch._dynamo.explain`` of ``step`` on ``args``, traced as a compiled step is (runs the step once)."""
    return _traced(torch._dynamo.explain(step))(*args)
