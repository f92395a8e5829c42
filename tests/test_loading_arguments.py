"""Every argument transformers' loaders, savers and pushers take is accepted, and reaches the files it is about.

The lists are read from the installed transformers, so these tests follow whatever version is installed:
the newest in `make test`, the lowest declared in `make test-min`.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from PIL import Image
from tiny_backbones import build_backbone, save_backbone
from transformers import AutoImageProcessor, AutoModel, PreTrainedModel, pipeline

from co_settle_hf import CoSettleModel
from co_settle_hf.hub.arguments import DOWNLOAD_ARGUMENTS, PUSH_ARGUMENTS

# Arguments transformers' from_pretrained reads from **kwargs rather than naming them, with harmless values;
# `_from_auto` and `_from_pipeline` are what AutoModel and pipeline() add.
UNNAMED_LOAD_ARGUMENTS = dict(
    proxies={}, dtype=torch.float32, torch_dtype=torch.float32, device_map="cpu", attn_implementation="sdpa",
    trust_remote_code=False, max_memory=None, offload_folder=None, key_mapping=None, subfolder="",
    _from_auto=True, _from_pipeline="image-feature-extraction",
)


def defaults_of(function, *skip: str) -> dict:
    """Each keyword parameter a function names, at its default value."""
    return {
        name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty and name not in skip
    }


@pytest.fixture
def adapter_folder(tmp_path):
    adapter = CoSettleModel.from_backbone(str(save_backbone("vit", tmp_path / "base")))
    adapter.save_pretrained(tmp_path / "adapter")
    return adapter, tmp_path / "adapter"


def test_every_argument_of_transformers_from_pretrained_is_accepted(adapter_folder):
    adapter, folder = adapter_folder
    x = torch.randn(1, 3, 64, 64)
    expected = adapter(x).features
    named = defaults_of(PreTrainedModel.from_pretrained, "config")
    assert {"cache_dir", "force_download", "local_files_only", "token", "revision"} <= set(named)
    for name, value in {**named, **UNNAMED_LOAD_ARGUMENTS}.items():
        loaded = CoSettleModel.from_pretrained(folder, **{name: value})
        assert torch.equal(loaded(x).features, expected), name
    everything = CoSettleModel.from_pretrained(folder, **named, **UNNAMED_LOAD_ARGUMENTS)
    assert torch.equal(everything(x).features, expected)
    model, info = CoSettleModel.from_pretrained(folder, output_loading_info=True)
    assert isinstance(model, CoSettleModel) and not info["missing_keys"] and not info["unexpected_keys"]


def test_arguments_that_are_neither_loader_nor_config_stay_errors(adapter_folder):
    _, folder = adapter_folder
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['not_a_loader_argument'\]"):
        CoSettleModel.from_pretrained(folder, not_a_loader_argument=1)
    with pytest.raises(TypeError, match="not_a_push_argument"):
        CoSettleModel.from_pretrained(folder).push_to_hub("user/repo", not_a_push_argument=1)


def test_download_arguments_reach_the_adapter_and_its_base(hub_server, hub_repo_id, tmp_path, monkeypatch):
    """`proxies` and `cache_dir` go to every Hub file read, the adapter's and the base backbone's alike."""
    import transformers.utils.hub as transformers_hub

    base_repo = hub_repo_id + "-base"
    build_backbone("vit").push_to_hub(base_repo)
    CoSettleModel.from_backbone(base_repo).push_to_hub(hub_repo_id)
    reads = []
    real = transformers_hub.hf_hub_download

    def recording(repo_id, filename, **kwargs):
        reads.append((repo_id, filename, kwargs.get("proxies"), kwargs.get("cache_dir")))
        return real(repo_id, filename, **kwargs)

    monkeypatch.setattr(transformers_hub, "hf_hub_download", recording)
    cache = str(tmp_path / "cache")
    model = CoSettleModel.from_pretrained(hub_repo_id, proxies={}, cache_dir=cache)
    files = {(repo, name) for repo, name, _, _ in reads}
    assert {(hub_repo_id, "config.json"), (hub_repo_id, "model.safetensors"), (base_repo, "model.safetensors")} <= files
    assert all(proxies == {} and cache_dir == cache for _, _, proxies, cache_dir in reads), reads
    assert model.backbone.revision == HfApi().model_info(base_repo).sha


def test_cache_dir_and_local_files_only_serve_both_offline(hub_server, hub_repo_id, tmp_path, request):
    base_repo = hub_repo_id + "-base"
    build_backbone("vit").push_to_hub(base_repo)
    adapter = CoSettleModel.from_backbone(base_repo)
    adapter.push_to_hub(hub_repo_id)
    cache = tmp_path / "cache"
    x = torch.randn(1, 3, 32, 32)
    expected = CoSettleModel.from_pretrained(hub_repo_id, cache_dir=cache)(x).features
    assert {p.name for p in cache.iterdir()} >= {f"models--{hub_repo_id.replace('/', '--')}", f"models--{base_repo.replace('/', '--')}"}
    request.getfixturevalue("hub_offline")
    offline = CoSettleModel.from_pretrained(hub_repo_id, cache_dir=cache, local_files_only=True)
    assert torch.equal(offline(x).features, expected)


def test_image_processor_and_pipeline_take_transformers_arguments(adapter_folder, tmp_path):
    adapter, folder = adapter_folder
    download = dict(proxies={}, cache_dir=tmp_path / "c", local_files_only=True, force_download=False, token=None, revision="main")
    assert set(download) <= DOWNLOAD_ARGUMENTS
    processor = AutoImageProcessor.from_pretrained(folder, **download)
    picture = Image.new("RGB", (80, 60), (200, 30, 90))
    pixel_values = processor(picture, return_tensors="pt").pixel_values
    extractor = pipeline("image-feature-extraction", model=str(folder), dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in extractor.model.parameters()} == {torch.bfloat16}
    assert extractor.model.device.type == "cpu"
    features = extractor(picture, return_tensors=True)
    expected = adapter(pixel_values).last_hidden_state
    assert features.shape == expected.shape and torch.allclose(features.float(), expected, atol=0.1)
    automodel = AutoModel.from_pretrained(folder, proxies={}, dtype="auto")
    assert isinstance(automodel, CoSettleModel) and torch.equal(automodel(pixel_values).features, adapter(pixel_values).features)


def test_save_and_push_take_transformers_arguments(adapter_folder, hub_server, hub_repo_id, tmp_path):
    adapter, _ = adapter_folder
    x = torch.randn(1, 3, 32, 32)
    saving = defaults_of(PreTrainedModel.save_pretrained, "push_to_hub")
    adapter.save_pretrained(tmp_path / "saved", **saving)
    assert torch.equal(CoSettleModel.from_pretrained(tmp_path / "saved")(x).features, adapter(x).features)
    pushing = defaults_of(PreTrainedModel.push_to_hub)
    assert set(pushing) == PUSH_ARGUMENTS
    pushing.update(commit_message="every argument", commit_description="from transformers' signature", tags=["video"])
    commit = adapter.push_to_hub(hub_repo_id, push_backbone=True, **pushing)
    assert HfApi().model_info(hub_repo_id).sha == commit.oid
    card = ModelCard.load(hf_hub_download(hub_repo_id, "README.md"))
    assert "video" in card.data.tags
    assert torch.equal(CoSettleModel.from_pretrained(hub_repo_id)(x).features, adapter(x).features)
