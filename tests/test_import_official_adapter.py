"""`co-settle import-official`: each of the eight published models as a self-contained adapter folder."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from eval_fixtures import write_davis
from huggingface_hub import HfApi, ModelCard
from official_checkpoints import reference_features, write_layout

from co_settle_hf import CoSettleModel, import_official
from co_settle_hf.backbones.families import IMAGENET_MEAN, IMAGENET_STD
from co_settle_hf.cli import main as cli
from co_settle_hf.official.importing import convert_trained
from co_settle_hf.official.published import AUTHORS_REPO, PUBLISHED
from co_settle_hf.official.reading import read_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"
PREFIX_TOKENS = {"ijepa": 0, "dinov2": 5}


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A folder laid out like the authors' Hub repository, with all eight trained checkpoints."""
    return write_layout(tmp_path_factory.mktemp("Co-Settle"), PUBLISHED)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_import_each_published_model(name, layout, tmp_path):
    published = PUBLISHED[name]
    out = import_official(name, tmp_path / name, source=str(layout))
    assert sorted(p.name for p in (out / "backbone").iterdir())[:2] == ["config.json", "model.safetensors"]
    model = CoSettleModel.from_pretrained(out)  # no other argument: the bundled backbone comes along
    config = model.config
    assert config.base_model_subfolder == "backbone"
    assert (config.apply_final_norm, config.position_interpolation, config.projection_init) == (
        published.final_norm, published.position_interpolation, published.projection_init)
    assert tuple(config.image_mean) == IMAGENET_MEAN and tuple(config.image_std) == IMAGENET_STD
    assert config.num_prefix_tokens == PREFIX_TOKENS.get(name, 1)

    # The folder reloads bit-identically: backbone and projection equal the conversion in memory.
    checkpoint = read_checkpoint(layout / published.checkpoint)
    encoder, _, projection = convert_trained(checkpoint, published, name)
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(model.backbone.model.state_dict()[key], value), key
    for key, value in projection.items():
        assert torch.equal(model.state_dict()[key], value), key
    # Features are the authors' evaluation forward, at the training size and at another aspect.
    for size in [(224, 224), (160, 288)]:
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(5))
        features = model(x).features.flatten(1, 2)
        assert torch.allclose(features, reference_features(checkpoint, name, x), atol=2e-5, rtol=0)

    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == published.hub_base
    reported = {(r.dataset_type, r.metric_type): r for r in card.data.eval_results}
    davis = reported[("davis", "J&F-Mean")]
    assert davis.metric_value == published.reported[("davis", "J&F-Mean")][1]
    assert "reported by the authors" in davis.source_name
    assert published.checkpoint in card.text and "@inproceedings" in card.text


def readme_commands() -> list[str]:
    return re.findall(r"`(co-settle import-official [^`]+)`", README.read_text())


def test_readme_lists_one_command_per_published_model():
    names = [shlex.split(command)[2] for command in readme_commands()]
    assert sorted(names) == sorted(PUBLISHED)


def test_readme_command_through_the_hub_then_offline(hub_server, hub_repo_id, tmp_path, monkeypatch, request):
    """The authors' layout on a Hub; the README's command run as written; a push; an offline reload."""
    api = HfApi()
    api.create_repo(AUTHORS_REPO, exist_ok=True)
    commit = api.upload_folder(repo_id=AUTHORS_REPO, folder_path=write_layout(tmp_path / "layout", ["dino"]), commit_message="release").oid

    # The README's snippet, both lines as written: import DINO, evaluate it on DAVIS.
    snippet = re.search(r"```bash\n(co-settle import-official dino .*?)```", README.read_text(), re.S).group(1).splitlines()
    assert snippet[0] in readme_commands()
    write_davis(tmp_path / "DAVIS")
    monkeypatch.chdir(tmp_path)
    for line in snippet:
        cli(shlex.split(line)[1:])
    out = tmp_path / shlex.split(snippet[0])[-1]
    summary = json.loads(next((tmp_path / "eval").rglob("summary.json")).read_text())
    assert 0 <= summary["J&F-Mean"] <= 1
    card = ModelCard.load(out / "README.md")
    assert f"commit `{commit}`" in card.text  # the resolved commit of the download is recorded
    local = CoSettleModel.from_pretrained(out)

    import_official("dino", tmp_path / "again", push_to_hub=hub_repo_id)  # the cached download is reused
    x = torch.randn(1, 3, 224, 224)
    online = CoSettleModel.from_pretrained(hub_repo_id)
    assert torch.equal(online(x).features, local(x).features)
    request.getfixturevalue("hub_offline")
    offline = CoSettleModel.from_pretrained(hub_repo_id)
    assert torch.equal(offline(x).features, local(x).features)


def test_cli_errors_name_the_problem(layout, tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"does not exist: .* is not laid out like the yafeng19/Co-Settle repository"):
        cli(["import-official", "dino", "--output-dir", str(tmp_path / "out"), "--source", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli(["import-official", "dinov3", "--output-dir", str(tmp_path / "out")])
    assert "invalid choice: 'dinov3'" in capsys.readouterr().err
    checkpoint = layout / PUBLISHED["dino"].checkpoint
    small = str(checkpoint.stat().st_size // 2)
    with pytest.raises(SystemExit, match=r"checkpoint\.pth is [\d,]+ bytes, over the limit"):
        cli(["import-official", "dino", "--output-dir", str(tmp_path / "out"), "--source", str(layout), "--max-checkpoint-bytes", small])
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"taken exists and is not empty"):
        cli(["import-official", "dino", "--output-dir", str(tmp_path / "taken"), "--source", str(layout)])
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
