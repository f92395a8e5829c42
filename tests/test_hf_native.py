"""The adapter behaves like a transformers model: bundled backbones, loading kwargs, processor, pipeline, push."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi
from tiny_backbones import save_backbone

from co_settle_hf import CoSettleModel
from co_settle_hf.modeling_co_settle import AdapterLoadError, LocalBaseError


@pytest.mark.parametrize("family", ["vit", "clip", "vit_mae", "dinov3_vit"])  # clip: the tower of a full checkpoint
def test_bundled_backbone_loads_from_the_adapter_folder_alone(family, tmp_path):
    base = save_backbone(family, tmp_path / "base")
    adapter = CoSettleModel.from_backbone(str(base))
    x = torch.randn(1, 3, 64, 96)
    expected = adapter(x).features
    adapter.save_pretrained(tmp_path / "adapter", save_backbone=True)
    config = json.loads((tmp_path / "adapter" / "config.json").read_text())
    assert config["base_model_subfolder"] == "backbone" and config["base_model_name_or_path"] is None
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "adapter" / "backbone").iterdir()}
    shutil.rmtree(base)  # the local base is gone: only the bundled copy remains
    loaded = CoSettleModel.from_pretrained(tmp_path / "adapter")
    assert torch.equal(loaded(x).features, expected)
    loaded.save_pretrained(tmp_path / "again")  # a bundled adapter stays bundled when saved again
    assert torch.equal(CoSettleModel.from_pretrained(tmp_path / "again")(x).features, expected)


def test_local_base_push_is_refused_then_bundled_push_loads_anywhere(hub_server, hub_repo_id, tmp_path):
    base = save_backbone("dinov2", tmp_path / "base")
    adapter = CoSettleModel.from_backbone(str(base))
    with pytest.raises(LocalBaseError, match="push_backbone=True"):
        adapter.push_to_hub(hub_repo_id)
    assert not HfApi().repo_exists(hub_repo_id)  # refused before anything was created

    commit = adapter.push_to_hub(hub_repo_id, push_backbone=True)
    files = set(HfApi().list_repo_files(hub_repo_id))
    assert {"backbone/config.json", "backbone/model.safetensors", "config.json", "model.safetensors"} <= files
    x = torch.randn(1, 3, 56, 70)
    torch.save(adapter(x).features, tmp_path / "expected.pt")
    torch.save(x, tmp_path / "x.pt")
    shutil.rmtree(base)
    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    script = (
        "import sys, torch; from co_settle_hf import CoSettleModel\n"
        f"m = CoSettleModel.from_pretrained({hub_repo_id!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        f"ok = torch.equal(m(x).features, torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True))\n"
        "print('backbone from', m.backbone.name_or_path, m.backbone.revision, 'equal', ok)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "fresh-hf-home"), "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-c", script], cwd=fresh, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"backbone from {hub_repo_id} {commit.oid} equal True" in result.stdout


def test_missing_base_names_it_and_says_to_pass_backbone(tmp_path):
    base = save_backbone("vit", tmp_path / "base")
    CoSettleModel.from_backbone(str(base)).save_pretrained(tmp_path / "adapter")
    shutil.rmtree(base)
    with pytest.raises(AdapterLoadError, match=r"base backbone .*base.* cannot be found.*Pass backbone="):
        CoSettleModel.from_pretrained(tmp_path / "adapter")


# ---------------------------------------------------------------------- image processor and pipeline
def save_with_processor(family: str, folder):
    """A tiny backbone; DINOv2 and CLIP also get their real processor classes, as Hub checkpoints have."""
    import transformers as T

    save_backbone(family, folder)
    processors = {
        "dinov2": lambda: T.BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                                              image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
        "clip": lambda: T.CLIPImageProcessor(),
    }
    if family in processors:
        processors[family]().save_pretrained(folder)
    return folder


@pytest.fixture
def picture():
    from PIL import Image

    pixels = torch.Generator().manual_seed(0)
    return Image.fromarray(torch.randint(0, 256, (75, 110, 3), generator=pixels, dtype=torch.uint8).numpy())


@pytest.mark.parametrize("family", ["vit", "dinov2", "clip"])
def test_image_processor_and_pipeline_give_the_model_features(family, tmp_path, picture):
    import numpy as np
    from transformers import AutoImageProcessor, pipeline

    base = save_with_processor(family, tmp_path / "base")
    adapter = CoSettleModel.from_backbone(str(base), image_size=112)
    adapter.save_pretrained(tmp_path / "adapter")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "adapter")
    assert list(processor.image_mean) == adapter.config.image_mean and list(processor.image_std) == adapter.config.image_std
    if family != "vit":  # the base's own processor class, kept
        assert type(processor).__name__.startswith({"dinov2": "Bit", "clip": "CLIP"}[family])
    pixel_values = processor(picture, return_tensors="pt").pixel_values
    # By hand: a square resize to the training size, [0, 1], the adapter's mean and std.
    resized = np.asarray(picture.resize((112, 112), resample=processor.resample), dtype=np.float32) / 255
    mean, std = torch.tensor(adapter.config.image_mean), torch.tensor(adapter.config.image_std)
    manual = ((torch.from_numpy(resized) - mean) / std).permute(2, 0, 1)[None]
    assert pixel_values.shape == (1, 3, 112, 112) and torch.allclose(pixel_values, manual, atol=1e-5)

    model = CoSettleModel.from_pretrained(tmp_path / "adapter")
    out = model(pixel_values)
    grid = 112 // adapter.config.patch_size
    assert out.last_hidden_state.shape == (1, grid * grid, 32) and out.pooler_output.shape == (1, 32)
    assert torch.equal(out.last_hidden_state, out.features.flatten(1, 2))
    extractor = pipeline("image-feature-extraction", model=str(tmp_path / "adapter"))
    assert torch.allclose(extractor(picture, return_tensors=True), out.last_hidden_state, atol=1e-5)
    pooled = extractor(picture, pool=True, return_tensors=True)
    assert torch.allclose(pooled, out.last_hidden_state.mean(dim=1), atol=1e-5)


# ---------------------------------------------------------------------- transformers' loading arguments
@pytest.fixture
def vit_adapter(tmp_path):
    base = save_backbone("vit", tmp_path / "base")
    adapter = CoSettleModel.from_backbone(str(base))
    adapter.save_pretrained(tmp_path / "adapter")
    return adapter, tmp_path / "adapter"


def test_dtype_device_map_attn_implementation_and_subfolder(vit_adapter, tmp_path):
    adapter, folder = vit_adapter
    x = torch.randn(1, 3, 64, 64)
    for key in ("dtype", "torch_dtype"):
        half = CoSettleModel.from_pretrained(folder, **{key: torch.bfloat16})
        assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
        assert half(x).features.dtype == torch.bfloat16
    assert {p.dtype for p in CoSettleModel.from_pretrained(folder, dtype="auto").parameters()} == {torch.float32}
    eager = CoSettleModel.from_pretrained(folder, attn_implementation="eager", device_map="cpu")
    assert eager.backbone.model.config._attn_implementation == "eager"
    assert CoSettleModel.from_pretrained(folder).backbone.model.config._attn_implementation == "sdpa"
    assert torch.allclose(eager(x).features, adapter(x).features, atol=1e-5)

    shutil.copytree(folder, tmp_path / "repo" / "adapters" / "vit")
    nested = CoSettleModel.from_pretrained(tmp_path / "repo", subfolder="adapters/vit")
    assert torch.equal(nested(x).features, adapter(x).features)
    with pytest.raises(TypeError, match="not_a_setting"):
        CoSettleModel.from_pretrained(folder, not_a_setting=1)
    changed = CoSettleModel.from_pretrained(folder, objective={"pool_size": 4}).config.objective  # as a sub-config is changed
    assert (changed.pool_size, changed.cycle_temperature) == (4, adapter.config.objective.cycle_temperature)


def test_subfolder_and_backbone_revision_on_the_hub(hub_server, hub_repo_id, tmp_path):
    from tiny_backbones import build_backbone

    base_repo = hub_repo_id + "-base"
    build_backbone("vit").push_to_hub(base_repo)
    first = HfApi().model_info(base_repo).sha
    build_backbone("vit", seed=1).push_to_hub(base_repo)
    second = HfApi().model_info(base_repo).sha
    adapter = CoSettleModel.from_backbone(base_repo, revision=first)
    adapter.save_pretrained(tmp_path / "adapter")
    HfApi().create_repo(hub_repo_id)
    HfApi().upload_folder(repo_id=hub_repo_id, folder_path=tmp_path / "adapter", path_in_repo="adapters/vit")
    x = torch.randn(1, 3, 64, 64)
    pinned = CoSettleModel.from_pretrained(hub_repo_id, subfolder="adapters/vit")
    moved = CoSettleModel.from_pretrained(hub_repo_id, subfolder="adapters/vit", backbone_revision=second)
    assert (pinned.backbone.revision, moved.backbone.revision) == (first, second)
    assert torch.equal(pinned(x).features, adapter(x).features)
    assert not torch.allclose(moved(x).features, adapter(x).features)


def test_print_and_trainable_parameters(vit_adapter, capsys):
    adapter, _ = vit_adapter
    text = repr(adapter)
    assert "(projection): CoSettleProjection(\n    kind='linear', trainable=True" in text
    assert "(backbone): BackboneEncoder(\n    family='ViT (incl. DINO v1)'" in text and "frozen=True" in text
    assert "(model): ViTModel(" in text
    adapter.print_trainable_parameters()
    trainable, total = 32 * 32 + 3 * 32, adapter.num_parameters()
    assert capsys.readouterr().out.strip() == (
        f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")
    assert total > 10 * trainable


def test_a_backbone_passed_in_stays_where_it_is(vit_adapter):
    adapter, folder = vit_adapter
    mine = adapter.backbone.to(torch.float64)
    loaded = CoSettleModel.from_pretrained(folder, backbone=mine)
    assert loaded.backbone is mine and next(mine.parameters()).dtype == torch.float64
    assert loaded.projection.norm.weight.dtype == torch.float32


# ---------------------------------------------------------------------- input checks (issue 10)
@pytest.mark.parametrize("pixels, error, message", [
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "torch.uint8.*image processor"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.int64), TypeError, "torch.int64.*image processor"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.bool), TypeError, "torch.bool.*image processor"),
    (torch.zeros(0, 3, 32, 32), ValueError, r"empty batch of size \(0, 3, 32, 32\)"),
    (torch.zeros(1, 3, 8, 40), ValueError, "8x40 pixels is smaller than one 16x16 patch"),
    (torch.full((1, 3, 32, 32), float("nan")), ValueError, "NaN or infinite"),
    (torch.tensor(float("inf")).expand(1, 3, 32, 32), ValueError, "NaN or infinite"),
])
def test_bad_pixels_are_named(vit_adapter, pixels, error, message):
    adapter, _ = vit_adapter
    with pytest.raises(error, match=message):
        adapter(pixels)


# ---------------------------------------------------------------------- model card and push_to_hub
@pytest.fixture
def hub_base(hub_server, hub_repo_id):
    from tiny_backbones import build_backbone

    repo = hub_repo_id + "-base"
    build_backbone("vit").push_to_hub(repo)
    return repo


def test_card_survives_save_load_save_push_and_reads_back(hub_base, hub_repo_id, tmp_path):
    from huggingface_hub import ModelCard, hf_hub_download

    from co_settle_hf.hub.model_card import MEASURED, REPORTED, eval_result

    adapter = CoSettleModel.from_backbone(hub_base)
    training = {"steps": 300, "global_batch_size": 16, "data": "test-user/kinetics-mini"}
    results = [eval_result("davis", "J&F-Mean", 0.61234), eval_result("davis", "J&F-Mean", 0.65, reported=True)]
    adapter.save_pretrained(tmp_path / "a", model_card={"training": training, "eval_results": results})
    readme = tmp_path / "a" / "README.md"
    readme.write_text(readme.read_text() + "\n## My notes\n\nHand-written, keep me.\n")

    CoSettleModel.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    again = (tmp_path / "b" / "README.md").read_text()
    for kept in ("| global_batch_size | 16 |", "test-user/kinetics-mini", "0.6123", "Hand-written, keep me.", "reported by the authors"):
        assert kept in again
    assert "has not been trained yet" not in again and "No evaluation results" not in again

    CoSettleModel.from_pretrained(tmp_path / "b").push_to_hub(hub_repo_id, commit_message="card test")
    card = ModelCard.load(hf_hub_download(hub_repo_id, "README.md"))
    assert f'from_pretrained("{hub_repo_id}")' in card.text and "path/to/this/adapter" not in card.text
    assert "Hand-written, keep me." in card.text and "| global_batch_size | 16 |" in card.text
    assert "https://arxiv.org/abs/2603.26597" in card.text and "arxiv:2603.26597" in card.data.tags
    assert card.data.datasets == ["test-user/kinetics-mini"]
    assert (card.data.base_model, card.data.base_model_relation) == (hub_base, "adapter")
    read = {(r.metric_type, r.source_name): r.metric_value for r in card.data.eval_results}
    assert read == {("J&F-Mean", MEASURED): 0.6123, ("J&F-Mean", REPORTED): 0.65}
    assert {(r.task_type, r.dataset_name, r.dataset_split) for r in card.data.eval_results} == {
        ("video-object-segmentation", "DAVIS 2017", "val")}


def test_push_to_hub_pull_request_tags_and_save_pretrained_push(hub_server, hub_base, hub_repo_id, tmp_path):
    from huggingface_hub import ModelCard, hf_hub_download

    adapter = CoSettleModel.from_backbone(hub_base)
    x = torch.randn(1, 3, 64, 64)
    main = adapter.push_to_hub(hub_repo_id)
    with torch.no_grad():
        adapter.projection.norm.bias.add_(1.0)
    pr = adapter.push_to_hub(hub_repo_id, create_pr=True, tags=["my-tag"], commit_message="shifted",
                             commit_description="bias moved by one")
    assert (pr.pr_revision, pr.pr_num) == ("refs/pr/1", 1) and pr.oid != main.oid
    assert hub_server.store.get(hub_repo_id, True).descriptions[pr.oid] == ("shifted", "bias moved by one")
    assert [ref.ref for ref in HfApi().list_repo_refs(hub_repo_id, include_pull_requests=True).pull_requests] == ["refs/pr/1"]
    assert torch.equal(CoSettleModel.from_pretrained(hub_repo_id, revision=pr.pr_revision)(x).features, adapter(x).features)
    assert HfApi().model_info(hub_repo_id).sha == main.oid  # main is untouched by the pull request
    assert "my-tag" in ModelCard.load(hf_hub_download(hub_repo_id, "README.md", revision=pr.pr_revision)).data.tags
    with pytest.raises(ValueError, match="leave revision unset"):  # the Hub opens pull requests against main only
        adapter.push_to_hub(hub_repo_id, create_pr=True, revision="dev")
    assert [b.name for b in HfApi().list_repo_refs(hub_repo_id).branches] == ["main"]

    info = adapter.save_pretrained(tmp_path / "saved", push_to_hub=True, repo_id=hub_repo_id + "-saved", private=True)
    assert info.oid == HfApi().model_info(hub_repo_id + "-saved").sha and HfApi().model_info(hub_repo_id + "-saved").private
    assert f'from_pretrained("{hub_repo_id}-saved")' in (tmp_path / "saved" / "README.md").read_text()


def test_eval_update_card_writes_model_index(tmp_path):
    from eval_fixtures import eval_cli as cli_main
    from eval_fixtures import write_davis
    from huggingface_hub import ModelCard

    base = save_backbone("vit", tmp_path / "base")
    CoSettleModel.from_backbone(str(base)).save_pretrained(tmp_path / "adapter", model_card={"training": {"steps": 5}})
    write_davis(tmp_path / "DAVIS")
    adapter = str(tmp_path / "adapter")
    rows = cli_main(["davis", "--model", adapter, "--data-root", str(tmp_path / "DAVIS"), "--output-dir", str(tmp_path / "out"),
                     "--device", "cpu", "--size", "64", "96", "--update-card", adapter])
    card = ModelCard.load(tmp_path / "adapter" / "README.md")
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {m: round(rows[adapter][m], 4) for m in ("J&F-Mean", "J-Mean", "F-Mean")}
    assert f"| J&F-Mean | {values['J&F-Mean']:.4f} | measured here |" in card.text and "| steps | 5 |" in card.text


def test_trainer_refuses_a_local_base_push_before_any_work(tmp_path, capsys):
    from co_settle_hf.training.arguments import parse_args

    base = save_backbone("vit", tmp_path / "base")
    command = ["--backbone", str(base), "--train-dir", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--push-to-hub",
               "--hub-model-id", "test-user/x"]
    with pytest.raises(SystemExit):
        parse_args(command)
    assert "--hub_push_backbone" in capsys.readouterr().err  # the primary (underscore) spelling names the flag
    assert parse_args([*command, "--hub-push-backbone"]).hub_push_backbone


def test_local_base_is_recorded_absolute_with_a_warning(tmp_path, monkeypatch, caplog):
    save_backbone("vit", tmp_path / "relative-base")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="co_settle_hf.modeling_co_settle"):
        adapter = CoSettleModel.from_backbone("relative-base")
    assert adapter.config.base_model_name_or_path == str(tmp_path / "relative-base")
    assert "local folder" in caplog.text and "push_backbone=True" in caplog.text
    adapter.save_pretrained(tmp_path / "adapter")
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "base_model:" not in card and "loads only where that folder exists" in card
    monkeypatch.chdir(tmp_path / "adapter")  # from another directory the adapter still finds its base
    assert CoSettleModel.from_pretrained(tmp_path / "adapter").backbone.name_or_path == str(tmp_path / "relative-base")


def test_objective_does_not_import_backbones_or_training():
    """The one-pass training forward lives in training/, so objective/ is plain tensors and imports no cycle."""
    import ast
    from pathlib import Path

    import co_settle_hf.objective as objective

    for path in Path(objective.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                assert not (node.module or "").startswith(("backbones", "training")) and node.level == 1, (path.name, node.module)


def test_a_hand_written_card_is_kept_and_completed(vit_adapter, tmp_path):
    from huggingface_hub import ModelCard

    _, folder = vit_adapter
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- mine\n---\n# My adapter\n\nWritten by hand.\n")
    CoSettleModel.from_pretrained(folder).save_pretrained(tmp_path / "resaved", model_card={"training": {"steps": 7}})
    card = ModelCard.load(tmp_path / "resaved" / "README.md")
    assert card.text.startswith("# My adapter\n\nWritten by hand.")
    assert card.data.license == "mit" and {"mine", "co-settle"} <= set(card.data.tags)
    assert "## Training" in card.text and "| steps | 7 |" in card.text


@pytest.mark.parametrize("family", ["dinov2", "siglip_vision_model", "dinov3_vit"])
def test_bf16_loading_and_pipeline_per_family(family, tmp_path, picture):
    from transformers import pipeline

    CoSettleModel.from_backbone(str(save_backbone(family, tmp_path / "base")), image_size=64).save_pretrained(tmp_path / "adapter")
    model = CoSettleModel.from_pretrained(tmp_path / "adapter", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    extractor = pipeline("image-feature-extraction", model=str(tmp_path / "adapter"), dtype=torch.bfloat16)
    features = extractor(picture, return_tensors=True)
    grid = 64 // model.config.patch_size
    assert features.dtype == torch.bfloat16 and features.shape == (1, grid * grid, 32) and torch.isfinite(features).all()


def test_a_card_with_broken_metadata_is_saved_unchanged(vit_adapter, tmp_path, caplog):
    _, folder = vit_adapter
    broken = "---\nlicense: [mit\n---\n# Mine\n"
    (folder / "README.md").write_text(broken)
    with caplog.at_level("WARNING", logger="co_settle_hf.hub.model_card"):
        CoSettleModel.from_pretrained(folder).save_pretrained(tmp_path / "resaved")
    assert (tmp_path / "resaved" / "README.md").read_text() == broken and "cannot be parsed" in caplog.text
