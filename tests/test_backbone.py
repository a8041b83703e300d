"""Backbone loading: by name, from .safetensors / .pth / .npz files, and clear errors otherwise."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from semproxy.models import BackboneError, create_backbone
from weights_util import save_jax_npz

NAME = "vit_micro_patch8_32"


@pytest.fixture
def source() -> torch.nn.Module:
    torch.manual_seed(1)
    return timm.create_model(NAME, num_classes=10).eval()  # with a head, as released checkpoints have


def _assert_same_backbone(loaded, source):
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)


def test_builds_by_name_without_head():
    model = create_backbone(NAME)
    assert model.num_classes == 0 and model.embed_dim == 64 and len(model.blocks) == 12


def test_unknown_name_is_a_clear_error():
    with pytest.raises(BackboneError, match="unknown timm model 'vit_nonexistent_patch3'"):
        create_backbone("vit_nonexistent_patch3")


def test_non_vit_is_refused():
    with pytest.raises(BackboneError, match="needs a timm VisionTransformer"):
        create_backbone("resnet18")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".npz"])
def test_loads_local_weights(tmp_path, source, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    elif suffix == ".pth":
        torch.save({"model": source.state_dict(), "epoch": 3}, path)  # a training-script wrapper
    else:
        save_jax_npz(source, path)
    loaded = create_backbone(NAME, weights=path)
    _assert_same_backbone(loaded, source)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval().forward_features(images), source.forward_features(images),
                               rtol=1e-5, atol=1e-5)


def test_weights_resampled_to_another_image_size(tmp_path, source):
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = create_backbone(NAME, weights=path, img_size=48)
    assert loaded.pos_embed.shape == (1, 1 + 6 * 6, 64)
    torch.testing.assert_close(loaded.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def _one_line_error(call) -> str:
    with pytest.raises(BackboneError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_names_file_and_model(tmp_path):
    message = _one_line_error(lambda: create_backbone(NAME, weights=tmp_path / "nope.safetensors"))
    assert "nope.safetensors" in message and "not found" in message and NAME in message


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".npz"])
def test_mismatched_file_names_file_and_model(tmp_path, suffix):
    other = timm.create_model(NAME, num_classes=0, embed_dim=32, depth=3)  # another architecture
    path = tmp_path / f"other{suffix}"
    if suffix == ".safetensors":
        save_file(other.state_dict(), str(path))
    elif suffix == ".pth":
        torch.save(other.state_dict(), path)
    else:
        save_jax_npz(other, path)
    message = _one_line_error(lambda: create_backbone(NAME, weights=path))
    assert str(path) in message and f"does not match '{NAME}'" in message


def test_corrupt_and_unknown_files(tmp_path):
    corrupt = tmp_path / "broken.pth"
    corrupt.write_bytes(b"not a checkpoint")
    assert "cannot be read" in _one_line_error(lambda: create_backbone(NAME, weights=corrupt))
    odd = tmp_path / "weights.onnx"
    odd.write_bytes(b"x")
    assert "unknown format '.onnx'" in _one_line_error(lambda: create_backbone(NAME, weights=odd))


def test_npz_with_extra_blocks_is_refused(tmp_path):
    deeper = timm.create_model(NAME, num_classes=0, depth=13)
    path = tmp_path / "deeper.npz"
    save_jax_npz(deeper, path)
    assert "13 blocks in the file, 12 in the model" in _one_line_error(lambda: create_backbone(NAME, weights=path))


def test_pretrained_weights_that_cannot_be_fetched_say_how_to_give_a_local_file(monkeypatch):
    import huggingface_hub.constants

    from semproxy.errors import MAX_MESSAGE

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as a machine with no network
    with pytest.raises(BackboneError) as raised:
        create_backbone("vit_small_patch16_224.augreg_in21k", pretrained=True)
    message = str(raised.value)
    assert message.startswith("cannot build 'vit_small_patch16_224.augreg_in21k'") and "\n" not in message
    assert len(message) <= MAX_MESSAGE and message.endswith("--weights FILE, or weights: in the config)")
