"""README.md's Python snippets run as written (from a fresh working folder, with the repository importable)."""
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    namespace = {"__name__": f"readme_block_{index}"}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
    if "trainer" in namespace:
        assert namespace["trainer"].iteration == namespace["config"].iterations
        assert os.path.exists(tmp_path / "checkpoint.safetensors") and namespace["lora_sd"]
    if "lp" in namespace:
        assert namespace["lp"].shape == (2,) and namespace["x"].shape == (2, 1, 16, 16)
