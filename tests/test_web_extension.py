"""Runs the web extension's JS unit tests (node's built-in test runner) as part of the pytest suite."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_web_chart_logic_passes_its_node_tests():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs it: .ci/run)")
    result = subprocess.run([node, "--test", str(ROOT / "tests" / "web")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout and "# pass 11" in result.stdout


def test_web_extension_imports_only_the_documented_frontend_modules():
    for path in (ROOT / "web").glob("*.js"):
        text = path.read_text()
        statements = re.findall(r"^import\b[^;]*?[\"']([^\"']+)[\"'];?", text, flags=re.M | re.S)
        assert len(statements) == len(re.findall(r"^import\b", text, flags=re.M)), path.name
        for source in statements:
            assert source in ("../../scripts/app.js", "../../scripts/api.js") or source.startswith("./"), \
                f"{path.name}: {source}"
