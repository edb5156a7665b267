"""README.md and docs/*.md: every measurement table names the command that produced it, and every relative link or
image points at a file that exists (and, for a `#anchor` into a Markdown file, at one of its headings).

The rule for tables (checked by `table_problems`):

- A *table* is a run of lines starting with `|` whose second line is the separator row (`|---|:-:|---:|`), in the
  prose or inside a fenced code block.
- It is a *measurement table* when one of its columns is right-aligned (`---:`) or it stands inside a fenced code
  block. Measured numbers are right-aligned columns; a table inside a fence is pasted script output. Reference
  tables (the nodes, the model families, the step rules, the rewards, the recipe) have only left or centred
  columns and stand in the prose, so they need no command.
- A measurement table needs a command: `scripts/NAME.py` of a script that exists in `scripts/`, written inside
  backticks or a fenced code block, either in the heading of the table's section or in the `WINDOW` lines above
  the table's first line. The window stops at the section's heading: a command in an earlier section does not
  count. For a table inside a fence, the fence's own lines above the table count too.
"""
import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
WINDOW = 15
SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCRIPT = re.compile(r"\bscripts/([\w-]+)\.py\b")


def scan(lines):
    """For every line: (inside a fenced code block, index of the section heading it belongs to or None). Fence
    marker lines count as inside."""
    out, fence, section = [], False, None
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            out.append((True, section))
            fence = not fence
            continue
        if not fence and HEADING.match(line):
            section = i
        out.append((fence, section))
    return out


def tables(lines):
    """(first line index, last line index, alignment cells, inside a fence) of every table."""
    found, i, info = [], 0, scan(lines)
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and SEPARATOR.match(lines[i + 1].strip()):
            end = i + 1
            while end + 1 < len(lines) and lines[end + 1].lstrip().startswith("|"):
                end += 1
            found.append((i, end, [c.strip() for c in lines[i + 1].strip().strip("|").split("|")], info[i][0]))
            i = end + 1
        else:
            i += 1
    return found


def commands_in(lines, info):
    """The scripts named as commands in these lines: inside backticks in prose, anywhere in a fence."""
    prose = "\n".join(line for line, (fence, _) in zip(lines, info) if not fence)
    spans = re.findall(r"`([^`]+)`", prose)
    spans += [line for line, (fence, _) in zip(lines, info) if fence]
    return {name for span in spans for name in SCRIPT.findall(span)}


def is_measurement(aligns, in_fence):
    """A table inside a fence, or one with a right-aligned column (`---:`, not the centred `:-:`)."""
    return in_fence or any(a.endswith(":") and not a.startswith(":") for a in aligns)


def table_problems(text, scripts_dir=REPO / "scripts"):
    """Why a measurement table in `text` breaks the rule of this module's docstring, one line per table."""
    lines = text.split("\n")
    info = scan(lines)
    problems = []
    for start, end, aligns, in_fence in tables(lines):
        if not is_measurement(aligns, in_fence):
            continue  # a reference table
        section = info[start][1]
        first = max(start - WINDOW, 0 if section is None else section)
        names = commands_in(lines[first:start], info[first:start])
        if section is not None:
            names |= {name for span in re.findall(r"`([^`]+)`", lines[section]) for name in SCRIPT.findall(span)}
        names = {name for name in names if (scripts_dir / f"{name}.py").is_file()}
        if not names:
            problems.append(f"line {start + 1}: measurement table {lines[start].strip()[:60]!r} has no command "
                            f"(`python scripts/NAME.py ...`) in its heading or the {WINDOW} lines above it")
    return problems


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation and symbols dropped, spaces to hyphens."""
    kept = "".join(c for c in heading.lower()
                   if c.isalnum() or c in "_- " or unicodedata.category(c).startswith("M"))
    return kept.replace(" ", "-")


def anchors(path):
    lines = path.read_text(encoding="utf-8").split("\n")
    seen, out = {}, set()
    for line, (fence, _) in zip(lines, scan(lines)):
        match = None if fence else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(path):
    """Relative links and images of a Markdown file (outside code) whose file or anchor does not exist."""
    lines = path.read_text(encoding="utf-8").split("\n")
    prose = "\n".join(line for line, (fence, _) in zip(lines, scan(lines)) if not fence)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    problems = []
    for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):
            continue  # https:, mailto:, …
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading with this anchor in {linked.name}")
    return problems


IDS = [d.relative_to(REPO).as_posix() for d in DOCUMENTS]


def test_the_docs_pages_exist():
    names = {d.name for d in DOCUMENTS}
    assert {"samplers.md", "training.md", "methods.md", "rewards.md", "scale.md", "command-line.md",
            "benchmarks.md", "testing.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=IDS)
def test_every_measurement_table_names_its_command(document):
    assert table_problems(document.read_text(encoding="utf-8")) == []


def test_the_docs_hold_measurement_tables_the_rule_checks():
    """The rule is not vacuous: the docs' benchmark tables are recognised as measurement tables."""
    count = 0
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").split("\n")
        count += sum(1 for _, _, aligns, fence in tables(lines) if is_measurement(aligns, fence))
    assert count >= 10


def test_the_table_rule_fails_without_a_command_and_passes_with_one():
    measured = "| rule | µs |\n|---|---:|\n| cps | 59 |\n"
    reference = "| node | what it does |\n|---|---|\n| Sampler CPS | a sampler |\n"
    pasted = "```\ntorch 2.13, 2 threads\n\n| rule | µs |\n|---|---|\n| cps | 59 |\n```\n"
    assert len(table_problems(f"## Speed\n\nOne step, median of 400:\n\n{measured}")) == 1
    assert len(table_problems(f"## Speed\n\n{pasted}")) == 1
    assert table_problems(f"## Speed\n\n`python scripts/bench_step.py`, median of 400:\n\n{measured}") == []
    assert table_problems(f"## Speed: `python scripts/bench_step.py`\n\n{pasted}") == []
    assert table_problems(f"## Speed\n\n```bash\npython scripts/bench_step.py\n```\n\n{measured}") == []
    assert table_problems(f"## Nodes\n\n{reference}") == []
    # not in backticks, a script that does not exist, or a command in the section before: still a problem
    assert len(table_problems(f"## Speed\n\npython scripts/bench_step.py:\n\n{measured}")) == 1
    assert len(table_problems(f"## Speed\n\n`python scripts/no_such_bench.py`:\n\n{measured}")) == 1
    assert len(table_problems(f"## A\n\n`python scripts/bench_step.py`\n\n## B\n\n{measured}")) == 1
    # too far above
    assert len(table_problems("## Speed\n\n`python scripts/bench_step.py`\n" + "text\n" * WINDOW + measured)) == 1


@pytest.mark.parametrize("document", DOCUMENTS, ids=IDS)
def test_every_relative_link_and_image_exists(document):
    assert link_problems(document) == []


def test_the_link_check_fails_on_a_missing_file_or_anchor(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"")
    (tmp_path / "other.md").write_text("# Other page\n\n## The toy task: bold digits\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n![x](images/x.png) [o](other.md#the-toy-task-bold-digits) [s](#page) "
                    "[w](https://example.org/a) `[c](not/checked.md)`\n\n```\n[f](in/a/fence.md)\n```\n",
                    encoding="utf-8")
    assert link_problems(page) == []
    page.write_text("![x](images/y.png) [o](other.md#no-such-heading) [s](#nowhere) [m](missing.md)\n",
                    encoding="utf-8")
    assert len(link_problems(page)) == 4


def test_slug_matches_githubs_anchors():
    assert slug("Beyond basic GRPO: MixGRPO, a trust region, DiffusionNFT") == \
        "beyond-basic-grpo-mixgrpo-a-trust-region-diffusionnft"
    assert slug("The rules compared on bold digits: `python scripts/bench_grpo.py`") == \
        "the-rules-compared-on-bold-digits-python-scriptsbench_grpopy"
    assert slug("Reward latency (8×512×512 RGB, 2 threads, median of 3)") == \
        "reward-latency-8512512-rgb-2-threads-median-of-3"
    assert slug("The demo's output") == "the-demos-output"
