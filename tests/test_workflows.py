"""The shipped workflows (workflows/, written by scripts/make_workflows.py): up to date, no overlapping nodes, a
title as file name and a thumbnail beside each. Needs no ComfyUI; tests/host/test_browser.py checks the node sizes
the frontends really draw."""
import itertools
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_workflows  # noqa: E402

TITLE_H = 30  # the title bar the frontends draw above a node's pos
FILES = sorted((ROOT / "workflows").glob("*.json"))


def boxes(workflow):
    return {n["id"]: (n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in workflow["nodes"]}


def overlapping(boxes_by_id):
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes_by_id.items(), 2)
            if ba[0] < bb[2] and bb[0] < ba[2] and ba[1] < bb[3] and bb[1] < ba[3]]


def test_the_shipped_files_are_what_make_workflows_writes():
    assert [f.stem for f in FILES] == sorted(t.title for t in make_workflows.TEMPLATES)
    for template in make_workflows.TEMPLATES:
        shipped = json.loads((ROOT / "workflows" / f"{template.title}.json").read_text())
        assert shipped == json.loads(json.dumps(template.build().to_json())), f"{template.title}: re-run the script"


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_no_two_nodes_overlap(path):
    workflow = json.loads(path.read_text())
    assert overlapping(boxes(workflow)) == []
    assert all(x >= 0 and y >= 0 for x, y, _, _ in boxes(workflow).values())


def test_the_overlap_check_catches_an_overlap():
    assert overlapping({1: (0, 0, 100, 100), 2: (50, 90, 200, 300)}) == [(1, 2)]
    assert overlapping({1: (0, 0, 100, 100), 2: (100, 0, 200, 100)}) == []  # touching is fine


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_card_title_and_thumbnail(path):
    # both frontends show a custom-node template's file name as the card title
    title = path.stem
    assert " " in title and "_" not in title and title[0].isupper(), title
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"no thumbnail {thumbnail.name}"
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.size == make_workflows.THUMB
    template = next(t for t in make_workflows.TEMPLATES if t.title == title)
    assert template.description and "\n" not in template.description and len(template.description) < 100
    assert template.runs_here == title.endswith("(toy digits)")
    workflow = template.build()
    if template.runs_here:  # the thumbnail is made from the images these nodes output (make_workflows --render)
        types = {n["id"]: n["type"] for n in workflow.to_json()["nodes"]}
        assert workflow.thumbnail_nodes and all(
            types[i] in ("SaveImage", "PreviewImage", "FlowCPS_CompareRewardCurves") for i in workflow.thumbnail_nodes)


def test_links_connect_existing_slots():
    for path in FILES:
        workflow = json.loads(path.read_text())
        nodes = {n["id"]: n for n in workflow["nodes"]}
        for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
            assert link_id in nodes[src]["outputs"][src_slot]["links"]
            assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
            assert nodes[src]["outputs"][src_slot]["type"] == kind == nodes[dst]["inputs"][dst_slot]["type"]
