"""Adapters pushed to and pulled from a Hub (the local server speaks the Hub's API to the real client)."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from tiny_backbones import build_backbone

from co_settle_hf import CoSettleModel


@pytest.fixture
def backbone_repo(hub_server, hub_repo_id):
    """A tiny DINOv2 backbone living on the Hub, like a real base model."""
    repo = hub_repo_id + "-backbone"
    build_backbone("dinov2").push_to_hub(repo)
    return repo


def test_push_and_load_by_id_branch_revision_then_offline(hub_server, hub_repo_id, backbone_repo, request):
    api = HfApi()
    adapter = CoSettleModel.from_backbone(backbone_repo)
    base_commit = api.model_info(backbone_repo).sha
    assert adapter.config.base_model_revision == base_commit  # the base is pinned to its commit

    first = adapter.push_to_hub(hub_repo_id, commit_message="first adapter")
    files = sorted(api.list_repo_files(hub_repo_id))
    assert set(files) - {".gitattributes"} == {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"}
    assert not any(name == "adapter_config.json" for name in files)

    # The base moves on after the adapter was made: the adapter still loads the pinned commit.
    build_backbone("dinov2", seed=1).push_to_hub(backbone_repo)
    assert api.model_info(backbone_repo).sha != base_commit

    with torch.no_grad():
        adapter.projection.norm.bias.add_(1.0)  # a second version, on a branch
    adapter.push_to_hub(hub_repo_id, revision="experiment", commit_message="shifted")

    x = torch.randn(1, 3, 224, 224)
    expected_main = adapter(x).features - 1.0
    by_id = CoSettleModel.from_pretrained(hub_repo_id)
    by_branch = CoSettleModel.from_pretrained(hub_repo_id, revision="experiment")
    by_commit = CoSettleModel.from_pretrained(hub_repo_id, revision=first.oid)
    assert torch.allclose(by_id(x).features, expected_main, atol=1e-5)
    assert torch.equal(by_commit(x).features, by_id(x).features)
    assert torch.equal(by_branch(x).features, adapter(x).features)
    assert by_id.backbone.revision == base_commit

    card = ModelCard.load(hf_hub_download(hub_repo_id, "README.md"))
    assert card.data.library_name == "co-settle-hf"
    assert card.data.base_model == backbone_repo
    assert card.data.base_model_relation == "adapter"
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert {"co-settle", "video"} <= set(card.data.tags)
    assert card.data.license
    assert "CoSettleModel.from_pretrained" in card.text and "@inproceedings" in card.text

    request.getfixturevalue("hub_offline")
    offline = CoSettleModel.from_pretrained(hub_repo_id)
    offline_branch = CoSettleModel.from_pretrained(hub_repo_id, revision="experiment")
    assert torch.equal(offline(x).features, by_id(x).features)
    assert torch.equal(offline_branch(x).features, by_branch(x).features)


def test_missing_adapter_repo_is_a_clear_error(hub_server):
    from co_settle_hf.modeling_co_settle import AdapterLoadError

    with pytest.raises(AdapterLoadError, match="test-user/does-not-exist"):
        CoSettleModel.from_pretrained("test-user/does-not-exist")
