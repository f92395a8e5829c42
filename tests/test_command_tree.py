"""`co-settle` is one argparse tree: each subcommand is its module's own parser, and every command
spells the shared flags the same way (co_settle_hf.shared_flags), each spelling accepted."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from eval_fixtures import write_tapvid_pickle

from co_settle_hf.cli import COMMANDS, build_parser, run
from co_settle_hf.shared_flags import SPELLINGS
from co_settle_hf.training.arguments import from_namespace

#: command -> (the arguments it needs besides the shared ones, the shared flags it takes)
NEEDS = {
    "eval": (["davis", "--model", "m", "--data-root", "d"], ("output_dir", "overwrite", "backbone_precision")),
    "export": (["onnx", "adapter"], ("output_dir", "overwrite")),
    "import-official": (["--checkpoint", "c.pth", "--backbone", "b"], ("output_dir", "overwrite")),
    "demo": ([], ("output_dir", "backbone_precision", "seed")),
    "ablate": ([], ("output_dir", "backbone_precision")),
    "train": (["--model_name_or_path", "b"], ("output_dir", "overwrite", "backbone_precision", "seed")),
}
VALUES = {"output_dir": "somewhere", "backbone_precision": "bf16", "seed": "7"}
TRAINER_NAMES = {"overwrite": "overwrite_output_dir"}  # the trainer's field keeps the transformers name


def options(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Every flag of a parser and of its nested subcommands, by subcommand path."""
    found = {"": {s for action in parser._actions for s in action.option_strings}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update({f"{name} {k}".strip(): v for k, v in options(sub).items()})
    return found


def subcommand(name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_is_its_modules_parser(command):
    """The tree mounts the module's parser itself: the same flags at every level (a module cannot drift from the CLI)."""
    assert options(subcommand(command)) == options(COMMANDS[command].build_parser())
    assert subcommand(command).description == COMMANDS[command].build_parser().description


@pytest.mark.parametrize("command", sorted(NEEDS))
def test_every_spelling_of_every_shared_flag_reaches_the_same_setting(command):
    needs, shared = NEEDS[command]
    for name in shared:
        for spelling in SPELLINGS[name]:
            argv = [spelling] if name == "overwrite" else [spelling, VALUES[name]]
            if name != "output_dir":
                argv += ["--output-dir", "o"]
            parsed = build_parser().parse_args([command, *needs, *argv])
            field = TRAINER_NAMES.get(name, name) if command == "train" else name
            expected = True if name == "overwrite" else VALUES[name]
            assert str(getattr(parsed, field)) == str(expected), (command, spelling)


def test_train_settings_file_then_flags_through_the_tree(tmp_path):
    # YAML reads 1e-4 as a string: it is converted as the flag's text would be.
    (tmp_path / "run.yaml").write_text("model_name_or_path: b\noutput_dir: o\nlearning_rate: 1e-4\nseed: 1\npool_size: 3\n")
    args = from_namespace(build_parser().parse_args(["train", str(tmp_path / "run.yaml"), "--seed", "3"]))
    assert (args.seed, args.learning_rate, args.pool_size, args.model_name_or_path) == (3, 1e-4, 3, "b")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", str(tmp_path / "run.txt")])


def test_a_refusal_names_the_command_and_the_flag(tmp_path):
    with pytest.raises(SystemExit, match=r"^co-settle train: .*--pool_size must be at least 1"):
        run("train", ["--model_name_or_path", "b", "--output_dir", str(tmp_path / "o"), "--pool_size", "0"])
    with pytest.raises(SystemExit, match=r"^co-settle eval davis: .*--data-root .*missing does not exist"):
        run("eval", ["davis", "--model", "m", "--data-root", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "e")])
    assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()


def test_the_console_script_exits_0_on_success_and_1_on_a_refusal(tmp_path):
    """`co-settle` as installed: a command's result (here the written files) is never taken for an exit status."""
    script = str(Path(sys.executable).parent / "co-settle")
    pickle = write_tapvid_pickle(tmp_path / "tapvid_davis.pkl")
    done = subprocess.run([script, "convert-tapvid", str(pickle), str(tmp_path / "npz")], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "") and "wrote 2 videos" in done.stdout
    refused = subprocess.run([script, "convert-tapvid", str(tmp_path / "missing.pkl"), str(tmp_path / "other")],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.startswith("co-settle convert-tapvid: ") and "missing.pkl" in refused.stderr
