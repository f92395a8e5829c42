"""Every command spells the shared flags the same way (co_settle_hf.shared_flags), each spelling accepted."""

from __future__ import annotations

import pytest

from co_settle_hf.demo.ablation import build_parser as ablate_parser
from co_settle_hf.demo.run import build_parser as demo_parser
from co_settle_hf.evaluation.cli import build_parser as eval_parser
from co_settle_hf.export.cli import build_parser as export_parser
from co_settle_hf.official.importing import build_parser as import_parser
from co_settle_hf.shared_flags import SPELLINGS
from co_settle_hf.training.arguments import parse_args as train_args

#: command -> (the arguments it needs besides the shared ones, the shared flags it takes)
COMMANDS = {
    "eval": (lambda argv: eval_parser().parse_args(["davis", "--model", "m", "--data-root", "d", *argv]),
             ("output_dir", "overwrite", "backbone_precision")),
    "export": (lambda argv: export_parser().parse_args(["onnx", "adapter", *argv]), ("output_dir", "overwrite")),
    "import-official": (lambda argv: import_parser().parse_args(["--checkpoint", "c.pth", "--backbone", "b", *argv]),
                        ("output_dir", "overwrite")),
    "demo": (lambda argv: demo_parser().parse_args(argv), ("output_dir", "backbone_precision", "seed")),
    "ablate": (lambda argv: ablate_parser().parse_args(argv), ("output_dir", "backbone_precision")),
    "train": (lambda argv: train_args(["--model_name_or_path", "b", *argv]),
              ("output_dir", "overwrite", "backbone_precision", "seed")),
}
VALUES = {"output_dir": "somewhere", "backbone_precision": "bf16", "seed": "7"}
TRAINER_NAMES = {"overwrite": "overwrite_output_dir"}  # the trainer's field keeps the transformers name


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_spelling_of_every_shared_flag_reaches_the_same_setting(command):
    parse, shared = COMMANDS[command]
    for name in shared:
        for spelling in SPELLINGS[name]:
            argv = [spelling] if name == "overwrite" else [spelling, VALUES[name]]
            if name != "output_dir":
                argv += ["--output-dir", "o"]
            parsed = parse(argv)
            field = TRAINER_NAMES.get(name, name) if command == "train" else name
            expected = True if name == "overwrite" else VALUES[name]
            assert str(getattr(parsed, field)) == str(expected), (command, spelling)
