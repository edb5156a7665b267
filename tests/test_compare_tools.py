"""Parsing of sampler/η lists, the per-step η schedule, and the grid/chart renderers."""
import pytest
import torch

from samplers import sd3_schedule
from samplers.compare import noise_level_chart, parse_floats, parse_names, parse_rule_specs
from samplers.eta_schedule import EtaSchedule
from samplers.plots import label_grid, line_chart


def test_parse_lists():
    assert parse_names(" flow_sde, flow_cps\n euler_ancestral ,, ") == ["flow_sde", "flow_cps", "euler_ancestral"]
    assert parse_floats("0.3, 0.7,1") == [0.3, 0.7, 1.0]
    with pytest.raises(ValueError, match="write numbers separated by commas"):
        parse_floats("0.3, abc")


def test_parse_rule_specs_accepts_rule_and_ksampler_names_with_default_eta():
    specs = parse_rule_specs("flow_sde=0.5, flow_cps, precise=1.414, ode")
    assert specs == [("flow_sde eta=0.5", "flow_sde", 0.5), ("cps eta=0.8", "cps", 0.8),
                     ("precise eta=1.414", "precise", 1.414), ("ode", "ode", 0.0)]
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        parse_rule_specs("ddim")
    with pytest.raises(ValueError, match="could not read η in 'cps=x'"):
        parse_rule_specs("cps=x")
    with pytest.raises(ValueError, match="name at least one sampler"):
        parse_rule_specs(" , ")


def test_eta_schedule_checks_length_and_values():
    schedule = EtaSchedule.parse("0.9, 0.5 0.0")
    assert schedule.for_steps(3) == [0.9, 0.5, 0.0]
    with pytest.raises(ValueError, match="has 3 values but the sampler runs 4 steps"):
        schedule.for_steps(4)
    with pytest.raises(ValueError, match=">= 0"):
        EtaSchedule([0.1, -0.2])
    with pytest.raises(ValueError, match="could not read the eta schedule"):
        EtaSchedule.parse("0.1, x")


def test_label_grid_places_each_image_in_its_cell():
    images = torch.zeros(6, 8, 8, 3)
    for i in range(6):
        images[i] = i / 5
    grid = label_grid(images, 2, 3, ["a", "b"], ["x", "y", "z"], cell_labels=[str(i) for i in range(6)], min_cell=32)
    assert grid.shape[0] == 1 and grid.shape[-1] == 3
    assert 0 <= float(grid.min()) and float(grid.max()) <= 1
    # every distinct cell value appears as a solid 32×32 block (8 px enlarged 4×)
    for i in range(6):
        mask = ((grid[0] - i / 5).abs() < 1 / 255).all(-1)
        assert int(mask.sum()) >= 32 * 32, i
    with pytest.raises(ValueError, match="rows × cols = 6 images"):
        label_grid(images[:5], 2, 3, ["a", "b"], ["x", "y", "z"])


def test_line_chart_and_noise_level_chart_render():
    chart = line_chart({"a": ([0, 1, 2], [0.0, 1.0, 0.5]), "b": ([0, 1, 2], [0.2, float("nan"), 0.1])},
                       title="t", dashed=("b",), bands={"a": ([0, 0.5, 0.2], [0.1, 1.2, 0.7])})
    assert chart.shape == (1, 440, 720, 3)
    assert float(chart.std()) > 0.05  # something was drawn on the white canvas
    image = noise_level_chart(parse_rule_specs("flow_sde, cps"), sd3_schedule(10))
    assert image.shape == (1, 440, 720, 3)
    with pytest.raises(ValueError, match="at least one finite point"):
        line_chart({"a": ([0], [float("nan")])})
