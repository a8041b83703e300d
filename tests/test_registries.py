"""Every name table agrees with the typed config: one name, one thing, wherever it is looked up."""
from __future__ import annotations

import typing

from semproxy.config import CACHE, RUNTIME, Config, DataConfig, ModelConfig
from semproxy.data import DATASETS
from semproxy.models import ACCUMULATORS, METHODS
from semproxy.search.schedulers import SCHEDULERS
from semproxy.search.searcher import SAMPLERS
from semproxy.search.settings import SearchSettings
from tune import search_parser


def _literal(section: type, name: str) -> set:
    return set(typing.get_args(typing.get_type_hints(section)[name]))


def test_methods_datasets_schedulers_and_searchers_are_the_configs_names():
    assert set(METHODS) == _literal(ModelConfig, "method")
    assert set(DATASETS) == _literal(DataConfig, "dataset")
    assert set(SCHEDULERS) == _literal(SearchSettings, "scheduler")
    assert set(SAMPLERS) == _literal(SearchSettings, "searcher")
    assert {spec.accumulator for spec in METHODS.values() if spec.accumulator} <= set(ACCUMULATORS)


def test_the_command_lines_offer_the_registries_names():
    choices = {a.dest: set(a.choices) for a in search_parser()._actions if a.choices}
    assert choices["dataset"] == set(DATASETS)
    assert choices["scheduler"] == set(SCHEDULERS) and choices["searcher"] == set(SAMPLERS)


def test_field_roles_are_declared_on_real_fields():
    names = set(Config.section_of())
    runtime, cache = Config.fields_with(RUNTIME), Config.fields_with(CACHE)
    assert runtime and cache and runtime | cache <= names
    assert {"device", "data_root", "cache_dir"} <= runtime and "lr" not in runtime | cache
    assert {"dataset", "backbone", "img_size"} <= cache
