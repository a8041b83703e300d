"""Fuzzing the command lines with malformed spaces and configs: every one is a one-line error, at once.

Hundreds of cases, generated deterministically (seeded) from the shipped ``search_spaces/*.yaml`` and
``experiments/synthetic.yaml``, each invalid by construction: unknown keys, wrong types, out-of-range
and huge values, NaN and infinities, bad distributions and conditions, alias bombs, deep nesting,
truncated YAML, binary garbage, foreign encodings. Each runs through the real entry points
(``tune.main``, ``semproxy.cli.train.main``) in-process and must end with exit code 2 and a single line
on stderr under 300 characters naming the file, within seconds, before Ray or data preparation
starts, and without writing anything.
"""
from __future__ import annotations

import dataclasses
import random
import resource
import string
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union

import pytest
import ray
import yaml

from semproxy.cli import train as final
from semproxy.config import Config
from semproxy.search.space import CACHE_FIELDS, read_space_document
from tune import main as tune_main

ROOT = Path(__file__).resolve().parent.parent
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
SYNTHETIC = ROOT / "experiments" / "synthetic.yaml"
SEED = 20240611
CASES_PER_MUTATION = 9
MAX_SECONDS = 15
MAX_GROWTH_KIB = 300 * 1024

# -- what the config's fields accept -----------------------------------------------------------------

OWNERS = Config.section_of()
FIELDS: dict[str, tuple[Any, dict]] = {}
for _section in Config.SECTIONS:
    _cls = type(getattr(Config(), _section))
    _hints = typing.get_type_hints(_cls)
    FIELDS.update({f.name: (_hints[f.name], f.metadata) for f in dataclasses.fields(_cls)})
SEARCHABLE = sorted(set(FIELDS) - CACHE_FIELDS)
# Valid (low, high) pairs of numeric fields, for distributions that are wrong in another way.
RANGES = {"lr": (1e-4, 1e-2), "lr_proxy": (1e-3, 0.5), "weight_decay": (0.0, 0.1), "proxy_bias_ratio": (0.1, 0.9),
          "num_prompts": (1, 50), "prompt_depth": (1, 12), "class_prompts": (1, 40), "adapter_dim": (8, 64)}


def _inner(tp: Any) -> Any:
    """The type of an Optional field (None is a valid value of it, so never a mutation)."""
    if typing.get_origin(tp) is Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def wrong_types(tp: Any) -> list:
    """Values of a type the field never takes."""
    tp = _inner(tp)
    extra = {int: [2.5, "ten", True], float: ["fast", True, "1e-3x"], bool: [1, "on please", 0.5],
             str: [3, 0.5, False]}
    if typing.get_origin(tp) is Literal:
        return [[1, 2], {"x": 1}, 3, True, "no_such_" + typing.get_args(tp)[0]]
    return [[1, 2], {"x": 1}, *extra[tp]]


def out_of_range(tp: Any, meta: dict) -> list:
    """Values of the right type outside the field's [low, high] (and numbers no float can hold)."""
    tp, low, high = _inner(tp), meta["low"], meta["high"]
    if tp not in (int, float):
        return []
    margin = 1 if tp is int else 0.5
    edges = [v for v in (None if low is None else low - margin, None if high is None else high + margin) if v is not None]
    return edges + ([10 ** 30, -(10 ** 400)] if tp is int else [float("nan"), float("inf"), -float("inf"), 10 ** 400])


BAD_VALUES = {name: wrong_types(tp) + out_of_range(tp, meta) for name, (tp, meta) in FIELDS.items()}


def bomb(levels: int = 9) -> list:
    """A "billion laughs" tree: shared lists, which yaml.safe_dump writes as anchors and aliases."""
    tree: Any = ["lol"] * 9
    for _ in range(levels):
        tree = [tree] * 9
    return tree


# -- cases -----------------------------------------------------------------------------------------

@dataclass
class Case:
    kind: str                   # "space" or "config"
    mutation: str
    content: bytes
    entry: str = "tune"         # "tune" or "final" (configs only)
    overrides: tuple[str, ...] = ()
    names: str = ""             # what the error must name; "" = the file

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.mutation}"


PLACEHOLDER = "__FUZZ__"


def dump(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=10 ** 6)


def with_raw(document: dict, path: tuple, raw: str) -> bytes:
    """``document`` as YAML with the value at ``path`` replaced by raw YAML text (what safe_dump cannot write)."""
    target = document
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = PLACEHOLDER
    return dump(document).replace(PLACEHOLDER, raw, 1).encode()


def load_space_doc(rng: random.Random) -> dict:
    """A shipped space as one self-contained mapping (what it ``extends`` merged in)."""
    return read_space_document(rng.choice(SPACES))


def load_config_doc() -> dict:
    return yaml.safe_load(SYNTHETIC.read_text())


def any_value_path(rng: random.Random, kind: str, document: dict) -> tuple:
    """Where to put a hostile value: a parameter of a space, a key of a config section."""
    if kind == "space":
        return ("params", rng.choice(list(document["params"])))
    section = rng.choice([s for s in document if isinstance(document[s], dict)])
    return (section, rng.choice(list(document[section])))


# Mutations of a space's parsed document (each returns the document to dump, or raw bytes).
def space_unknown_param(rng, doc):
    name = rng.choice(SEARCHABLE)
    typo = name[:-1] + rng.choice([c for c in string.ascii_lowercase if c != name[-1]]) + "x"
    doc["params"][typo] = 1
    return doc


def space_unknown_top_key(rng, doc):
    doc[rng.choice(["parms", "serach", "start", "space", "1"])] = {}
    return doc


def space_bad_fixed_value(rng, doc):
    name = rng.choice(sorted(FIELDS))
    doc["params"][name] = rng.choice(BAD_VALUES[name])
    return doc


def _numeric(rng) -> tuple[str, Any, Any]:
    name = rng.choice(sorted(RANGES))
    return (name, *RANGES[name])


def space_bad_distribution(rng, doc):
    name, low, high = _numeric(rng)
    integer, field_low, field_high = isinstance(low, int), FIELDS[name][1]["low"], FIELDS[name][1]["high"]
    inside = "randint" if integer else "uniform"
    step_kind = "qrandint" if integer else "quniform"
    bad = rng.choice([
        {"normal": [low, high]}, {inside: [low, high], "choice": [low]}, {"when": {}}, {"Uniform": [low, high]},
        {inside: [low]}, {inside: [low, high, 1, 2]}, {inside: ["a", high]}, {inside: [True, high]},
        {inside: [high, low]}, {inside: low}, {inside: []}, {inside: {"low": low}},
        {step_kind: [low, high, 0]}, {step_kind: [low, high, -1]}, {step_kind: [low, high, (high - low) * 2 + 1]},
        {inside: [low, float("nan")]}, {inside: [-float("inf"), high]}, {step_kind: [low, high, float("nan")]},
        {inside: [low, 10 ** 400]}, {step_kind: [low, high, 10 ** 400]},
        {inside: [field_low - 1, high]}, {inside: [field_low - 2, field_low - 1]},
        {inside: [low, field_high + 1]} if field_high is not None else {"choice": [field_low - 1]},
        {"loguniform": [0, high]} if not integer else {"randint": [low, high + 0.5]},
        {"choice": []}, {"choice": low}, {"choice": [low, low]}, {"choice": [low, high, low]},
        {"choice": [low, "x" if integer else True]}, {"choice": [[low]]},
    ])
    doc["params"][name] = bad
    return doc


def space_bad_when(rng, doc):
    params = doc["params"]
    params.setdefault("batch_size", {"choice": [32, 64]})
    anchor = params["batch_size"]
    options = anchor["choice"] if isinstance(anchor, dict) and "choice" in anchor else [anchor]
    target = rng.choice([n for n in ("eval_every", "warmup_epochs", "grad_clip", "pa_delta") if n not in params])
    value = {"eval_every": [1, 2], "warmup_epochs": [0, 1], "grad_clip": [1.0, 2.0], "pa_delta": [0.1, 0.2]}[target]
    params[target] = {"choice": value, "when": rng.choice([
        {"batch_size": max(options) + 2},                        # a value batch_size never takes
        {"batch_size": [options[0], max(options) + 2]},
        {"batch_size": []},
        {"batch_size": "big"},                                   # not even a valid batch_size
        {"no_such_param": 1}, {"seed": 1},                       # not a parameter above it
        ["batch_size"], "batch_size",                            # not a mapping
    ])}
    if rng.random() < 0.3:  # a condition on a parameter defined further down
        params[target]["when"] = {"lr_proxy": 0.1}
        params.pop("lr_proxy", None)
        params["lr_proxy"] = {"choice": [0.1, 0.5]}
    return doc


def space_searched_cache_field(rng, doc):
    doc["params"][rng.choice(["synthetic_size", "img_size", "val_fraction", "dataset"])] = {
        "choice": rng.choice([[32, 48], [0.1, 0.2], ["cub200", "synthetic"]])}
    return doc


def space_bad_search_block(rng, doc):
    doc["search"] = rng.choice([
        {"num_sample": 3}, {"num_samples": "many"}, {"num_samples": 0}, {"num_samples": 10 ** 30},
        {"max_epochs": 2.5}, {"reduction_factor": 1}, {"grace_period": True}, {"scheduler": "hyperband"},
        [1, 2], "asha", 0, {"seed": -1},
    ])
    return doc


def space_bad_starts(rng, doc):
    params = doc["params"]
    doc["starts"] = rng.choice([
        [{"no_such_param": 1}], {"lr": 0.1}, [1, 2], "lr=0.1", [[]],
        [{name: rng.choice(BAD_VALUES[name]) for name in [rng.choice(list(params))]}],
    ])
    return doc


def space_bad_structure(rng, doc):
    return rng.choice([{"params": {}}, {"params": None}, {"params": [1, 2]}, {"params": "lr"}, [doc["params"]],
                       "params", 42, None, {"search": {"num_samples": 2}}])


# Mutations of the synthetic config's document.
def config_unknown_key(rng, doc):
    section = rng.choice(list(doc))
    name = rng.choice(list(doc[section]))
    typo = name.replace("_", "", 1) if "_" in name else name + "s"
    assert typo not in FIELDS
    doc[section][typo] = doc[section].pop(name)
    return doc


def config_wrong_section(rng, doc):
    name = rng.choice(sorted(FIELDS))
    section = rng.choice([s for s in Config.SECTIONS if s != OWNERS[name]])
    doc.setdefault(section, {})[name] = getattr(getattr(Config(), OWNERS[name]), name)
    return doc


def config_unknown_section(rng, doc):
    doc[rng.choice(["modle", "training", "optimizer_", "evaluation"])] = {"lr": 0.1}
    return doc


def config_section_not_mapping(rng, doc):
    doc[rng.choice(Config.SECTIONS)] = rng.choice([3, [1, 2], "vpt", True, bomb(2)])
    return doc


def config_bad_value(rng, doc):
    name = rng.choice(sorted(FIELDS))
    doc.setdefault(OWNERS[name], {})[name] = rng.choice(BAD_VALUES[name])
    return doc


def config_bad_combination(rng, doc):
    choice = rng.randrange(5)
    if choice == 0:
        doc["data"].update(batch_size=33, samples_per_class=2)
    elif choice == 1:
        doc["optim"].update(epochs=3, warmup_epochs=3)
    elif choice == 2:
        doc["eval"]["device"] = rng.choice(["banana", "cuda:", "gpu", "cuda:x", "CPU", "cuda:-1", "cuda:0 "])
    else:  # a key given flat and in its section, in either order
        name = rng.choice(list(doc["optim"]))
        doc = {name: doc["optim"][name], **doc} if choice == 3 else {**doc, name: doc["optim"][name]}
    return doc


def config_bad_structure(rng, doc):
    return rng.choice([[doc], "model", 3.5, ["model", "optim"]])


# Mutations of the text, for either kind of file (``doc`` already mutated or not).
def raw_alias_bomb(rng, kind, doc):
    target = doc
    *parents, last = any_value_path(rng, kind, doc)
    for key in parents:
        target = target[key]
    target[last] = {"choice": bomb()} if kind == "space" and rng.random() < 0.5 else bomb()
    return dump(doc).encode()


def raw_deep_nesting(rng, kind, doc):
    depth = rng.choice([60, 500, 20_000])
    opener, closer = rng.choice([("[", "]"), ("{a: ", "}")])
    return with_raw(doc, any_value_path(rng, kind, doc), opener * depth + "1" + closer * depth)


def raw_hostile_scalar(rng, kind, doc):
    return with_raw(doc, any_value_path(rng, kind, doc), rng.choice([
        "!!python/object/apply:os.system ['echo pwned']", "!!python/object:os.system x", "!!python/name:os.system",
        "*undefined_alias", "{<<: 3}", "{[a, b]: 1}", "{? {a: 1} : 2}", "2001-13-45", "!!binary '%%%'",
        "[1, 2", "{a: 1", "'unterminated", '"bad \\q escape"', "x" * 5000, "9" * 5000, "1" * 4000,
        "!!int 12abc", "!!float nope", "@reserved", "`backtick", "- - -\n - x",
    ]))


def raw_truncated(rng, kind, doc):
    text = dump(doc)
    cuts = [i + 1 for i, c in enumerate(text) if c in "[{"]
    if cuts:
        return text[:rng.choice(cuts)].encode()
    return with_raw(doc, any_value_path(rng, kind, doc), rng.choice(["[1, 2", "{a: 1", "'open"]))


def raw_duplicate_key(rng, kind, doc):
    lines = dump(doc).splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines)
             if ": " in line and not line.rstrip().endswith(":") and not line.lstrip().startswith("-")]
    i = rng.choice(keyed)
    return "".join(lines[:i + 1] + [lines[i]] + lines[i + 1:]).encode()


def raw_encoding(rng, kind, doc):
    text = "# r\u00e9glages\n" + dump(doc)
    return rng.choice([lambda: text.encode("utf-16"), lambda: text.encode("utf-32"), lambda: text.encode("utf-16-le"),
                       lambda: text.encode("utf-16-be"), lambda: text.encode("latin-1"),
                       lambda: text.encode("cp1252")])()


def raw_binary(rng, kind, doc):
    head = rng.choice([b"\x89PNG\r\n\x1a\n", b"\x1f\x8b\x08\x00", b"\x7fELF\x02\x01\x01", b"PK\x03\x04", b""])
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(16, 2048)))
    return head + b"\x00" + body


def raw_control_and_layout(rng, kind, doc):
    text = dump(doc)
    lines = text.splitlines(keepends=True)
    return rng.choice([
        lambda: ("# \x01 control\n" + text),
        lambda: text + "\x7f\x08",
        lambda: "".join("\t" + line if i == len(lines) // 2 else line for i, line in enumerate(lines)),
        lambda: text + "---\n" + text,
        lambda: "%YAML 9.9\n---\n" + text,
        lambda: text + "\ufffe",
        lambda: "key: value\n  - broken: [\n",
    ])().encode()


def raw_oversized(rng, kind, doc):
    return (dump(doc) + "#" + "x" * (1 << 20) + "\n").encode()


SPACE_MUTATIONS: list[Callable] = [
    space_unknown_param, space_unknown_top_key, space_bad_fixed_value, space_bad_fixed_value, space_bad_distribution,
    space_bad_distribution, space_bad_distribution, space_bad_when, space_bad_when, space_searched_cache_field,
    space_bad_search_block, space_bad_starts, space_bad_structure]
CONFIG_MUTATIONS: list[Callable] = [
    config_unknown_key, config_wrong_section, config_unknown_section, config_section_not_mapping, config_bad_value,
    config_bad_value, config_bad_value, config_bad_combination, config_bad_structure]
RAW_MUTATIONS: list[Callable] = [
    raw_alias_bomb, raw_deep_nesting, raw_hostile_scalar, raw_hostile_scalar, raw_truncated, raw_duplicate_key,
    raw_encoding, raw_binary, raw_control_and_layout, raw_oversized]
BAD_OVERRIDES = ["num_prompts=!!python/object:os.system x", "num_prompts=20000000", "lr=.nan", "lr=1e999",
                 "device=banana", "device=cuda:x", "method=prefix", "num_prompts", "=3", "no_such_key=1",
                 "batch_size=[1, 2", "embedding_dim=" + "9" * 5000, "num_prompts=" + yaml.safe_dump(bomb(), default_flow_style=True, width=10 ** 6).strip(), "num_prompts=*a",
                 "seed=-1", "eval_every=" + "1" * 400]
# Well-formed but absent: the device's existence is checked before any work, naming the key.
ABSENT_DEVICES = ["device=cuda:9999", "device=cuda:1234"]


def generate_cases() -> list[Case]:
    cases = []
    for i in range(CASES_PER_MUTATION):
        for mutate in SPACE_MUTATIONS:
            rng = random.Random(f"{SEED}-{mutate.__name__}-{i}")
            out = mutate(rng, load_space_doc(rng))
            cases.append(Case("space", mutate.__name__, dump(out).encode()))
        for mutate in CONFIG_MUTATIONS:
            rng = random.Random(f"{SEED}-{mutate.__name__}-{i}")
            out = mutate(rng, load_config_doc())
            cases.append(Case("config", mutate.__name__, dump(out).encode(), entry=rng.choice(["tune", "final"])))
        for mutate in RAW_MUTATIONS:
            for kind in ("space", "config"):
                rng = random.Random(f"{SEED}-{mutate.__name__}-{kind}-{i}")
                doc = load_space_doc(rng) if kind == "space" else load_config_doc()
                cases.append(Case(kind, mutate.__name__, mutate(rng, kind, doc),
                                  entry="tune" if kind == "space" else rng.choice(["tune", "final"])))
    for i, override in enumerate(BAD_OVERRIDES):
        cases.append(Case("config", f"override{i}", SYNTHETIC.read_bytes(), "final", (override,), "--set"))
    for i, override in enumerate(ABSENT_DEVICES):
        cases.append(Case("config", f"device{i}", SYNTHETIC.read_bytes(), "final", (override,), "key 'device'"))
    return cases


CASES = generate_cases()


# -- running them ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def baseline_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working directory, cache and data root in tmp_path; Ray and data preparation fail the test."""
    import semproxy.prepared as prepared

    def forbidden(*args, **kwargs):
        raise AssertionError("malformed input got past validation")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMPROXY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ray, "init", forbidden)
    monkeypatch.setattr(prepared, "prepare_data", forbidden)
    return tmp_path


def _run(case: Case, tmp: Path) -> tuple[int, Path]:
    path = tmp / f"fuzz-{case.kind}.yaml"
    path.write_bytes(case.content)
    if case.entry == "final":
        return final.main(["--config", str(path), "--out", str(tmp / "out"),
                           *[a for o in case.overrides for a in ("--set", o)]]), path
    common = ["--dataset", "synthetic", "--data-root", str(tmp / "data"), "--storage", str(tmp / "runs")]
    if case.kind == "space":
        return tune_main(["--space", str(path), *common]), path
    return tune_main(["--space", str(ROOT / "search_spaces" / "vptsp.yaml"), "--config", str(path), *common]), path


def test_the_cases_cover_every_mutation_hundreds_of_times():
    assert len(CASES) >= 300
    assert len({c.content for c in CASES}) > 0.6 * len(CASES)  # mostly distinct inputs
    assert {c.mutation for c in CASES} >= {m.__name__ for m in SPACE_MUTATIONS + CONFIG_MUTATIONS + RAW_MUTATIONS}
    assert {c.entry for c in CASES if c.kind == "config"} == {"tune", "final"}


@pytest.mark.parametrize("entry,kind", [("tune", "space"), ("tune", "config"), ("final", "config")])
def test_the_harness_lets_the_unmutated_files_through(entry, kind, sandbox):
    """The bases, written as the cases are, reach data preparation: the cases fail by their mutation."""
    doc = load_space_doc(random.Random(SEED)) if kind == "space" else load_config_doc()
    with pytest.raises(AssertionError, match="got past validation"):
        _run(Case(kind, "none", dump(doc).encode(), entry=entry), sandbox)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_one_line_exit_2_and_nothing_else(case, sandbox, capsys, baseline_rss):
    start = time.perf_counter()
    code, path = _run(case, sandbox)
    seconds = time.perf_counter() - start
    out = capsys.readouterr()
    assert code == 2, out
    lines = out.err.splitlines()
    assert len(lines) == 1 and out.err.endswith("\n"), out.err[:2000]
    assert lines[0].startswith("error: ") and (case.names or str(path)) in lines[0] and len(lines[0]) < 300, lines[0]
    assert seconds < MAX_SECONDS
    assert not ray.is_initialized()
    assert not any((sandbox / d).exists() for d in ("runs", "data", "cache", "out")), sorted(sandbox.iterdir())


def test_memory_stayed_bounded(baseline_rss):
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_rss < MAX_GROWTH_KIB
