"""The Python snippets of README.md and docs/*.md run as written (from a fresh working folder, with the repository
importable)."""
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [(document.relative_to(REPO).as_posix(), index, block)
          for document in DOCUMENTS
          for index, block in enumerate(re.findall(r"```python\n(.*?)```", document.read_text(encoding="utf-8"),
                                                   flags=re.S))]


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("name, index, block", BLOCKS, ids=[f"{name}:{index}" for name, index, _ in BLOCKS])
def test_readme_python_block_runs(name, index, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    namespace = {"__name__": f"readme_block_{index}"}
    exec(compile(block, f"{name} python block {index}", "exec"), namespace)
    if "trainer" in namespace:
        assert namespace["trainer"].iteration == namespace["config"].iterations
        assert os.path.exists(tmp_path / "checkpoint.safetensors") and namespace["lora_sd"]
    if "lp" in namespace:
        assert namespace["lp"].shape == (2,) and namespace["x"].shape == (2, 1, 16, 16)
