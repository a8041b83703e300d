"""The base config a search or a run starts from when given none: the shipped paper setting per dataset."""
from __future__ import annotations

from pathlib import Path

import pytest

from semproxy.data import DATASETS
from semproxy.presets import EXPERIMENTS, default_base_config


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_each_dataset_starts_from_its_shipped_setting_or_says_where_the_paper_codes_is(dataset):
    config, source = default_base_config(dataset)
    assert config.data.dataset == dataset
    shipped = EXPERIMENTS / ("synthetic.yaml" if dataset == "synthetic" else f"{dataset}_vit_s.yaml")
    if shipped.is_file():
        assert Path(source) == shipped
    else:  # iNaturalist: the paper code ran it with ViT-B only
        assert source.startswith(f"the default config (no {shipped.name} ships")
        assert (EXPERIMENTS / f"{dataset}_vit_b.yaml").is_file() and f"{dataset}_vit_b.yaml" in source


def test_inat_is_the_dataset_without_a_vit_s_setting():
    assert [d for d in sorted(DATASETS) if not default_base_config(d)[1].endswith(".yaml")] == ["inat"]
