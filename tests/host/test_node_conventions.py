"""Conventions every flow-cps node keeps, read from a real server's /object_info and its error reports: FLOAT
widgets keep typed values, seeds are fixed by default over the stock range, the SDE window and η ranges agree
between nodes, every output has a tooltip, a wrong latent size fails up front with the size to use, and error
types read as flow_cps.<Name> rather than a folder path."""
import math

import pytest

from test_grpo_nodes import grpo_graph

PACK_MODULE = "custom_nodes.flow-cps"  # conftest.py links the pack as custom_nodes' "flow-cps"
SEED_MAX = 0xFFFFFFFFFFFFFFFF
ETA_RANGE = {"cps": (0.0, 1.0), "cpws": (0.0, 1.0), "precise": (0.0, 4.0), "flow_sde": (0.0, 5.0),
             "dance_sde": (0.0, 5.0)}
SAMPLER_NODES = {"FlowCPS_SamplerCPS": "cps", "FlowCPS_SamplerCPWS": "cpws", "FlowCPS_SamplerPrecise": "precise",
                 "FlowCPS_SamplerFlowSDE": "flow_sde", "FlowCPS_SamplerDanceSDE": "dance_sde"}
# decimals a typed value must keep, per input name; every other FLOAT input keeps at least 2
DECIMALS = {"learning_rate": 8, "beta": 8, "clip_range": 8, "eps2": 8, "eta": 4,
            "weight_1": 4, "weight_2": 4, "weight_3": 4, "weight_4": 4, "eps1": 1}
TYPED = {"learning_rate": [3e-6, 1e-8, 2.5e-7], "beta": [0.0004, 4e-8, 0.04], "clip_range": [5e-5, 4e-6, 2e-4],
         "eps2": [0.005, 1e-6]}


def pack_nodes(info):
    nodes = {name: spec for name, spec in info.items() if spec.get("python_module") == PACK_MODULE}
    assert len(nodes) >= 20, sorted(nodes)
    return nodes


def inputs_of(spec):
    for section in ("required", "optional"):
        for name, value in (spec["input"].get(section) or {}).items():
            yield name, value[0], (value[1] if len(value) > 1 else {}) or {}


def frontend_float(typed, options):
    """The value ComfyUI's frontend keeps when a user types ``typed`` into a FLOAT widget with these /object_info
    options. Both shipped frontends (1.27 and 1.49, canvas and Vue nodes) do the same: precision =
    −floor(log10(step)) decimals (step 0.5 by default); round = the input's round when it is a number, else
    10^−precision; value = clamp(Number((Math.round(v / round) · round).toFixed(precision)), min, max)."""
    step = options.get("step", 0.5)
    precision = max(0, -math.floor(math.log10(step)))
    rnd = options.get("round") or (10 ** -precision if precision else None)
    value = typed
    if rnd:
        value = float(f"{math.floor(typed / rnd + 0.5) * rnd:.{precision}f}")
    return min(max(value, options.get("min", 0)), options.get("max", 2048))


def test_every_float_input_keeps_what_users_type(comfy):
    problems = []
    for node, spec in pack_nodes(comfy.object_info()).items():
        for name, kind, options in inputs_of(spec):
            if kind != "FLOAT":
                continue
            decimals = DECIMALS.get(name, 2)
            lo, hi = options.get("min", 0), options.get("max", 2048)
            candidates = [options.get("default", 0), lo + 3 * 10 ** -decimals, lo + 1 + 7 * 10 ** -decimals,
                          hi - 10 ** -decimals, *TYPED.get(name, [])]
            for typed in (round(v, decimals) for v in candidates):
                if lo <= typed <= hi and frontend_float(typed, options) != typed:
                    problems.append(f"{node}.{name}: typed {typed!r} becomes {frontend_float(typed, options)!r} "
                                    f"({options})")
            assert options.get("round") in (None, False) or options["round"] <= 10 ** -decimals, (node, name)
    assert not problems, "\n".join(problems)


def test_the_frontend_model_reproduces_the_reported_rounding():
    # the trainer's old widgets (issue #14): 3e-6 became 1e-07, 0.0004 became 0, 5e-5 became 1e-4
    assert frontend_float(3e-6, {"min": 1e-7, "max": 1.0, "step": 1e-5}) == 1e-7
    assert frontend_float(0.0004, {"min": 0.0, "max": 10.0, "step": 0.001}) == 0.0
    assert frontend_float(5e-5, {"min": 1e-6, "max": 1.0, "step": 1e-4}) == 1e-4


def test_seeds_are_fixed_by_default_over_the_stock_range(comfy):
    seeds = {}
    for node, spec in pack_nodes(comfy.object_info()).items():
        for name, kind, options in inputs_of(spec):
            if name == "seed":
                seeds[node] = (kind, options.get("control_after_generate"), options.get("min"), options.get("max"))
    assert {"FlowCPS_GRPOTrainLoRA", "FlowCPS_CalibrateExploration"} <= set(seeds), seeds
    for node in ("FlowCPS_GRPOTrainLoRA", "FlowCPS_CalibrateExploration"):
        assert seeds[node] == ("INT", "fixed", 0, SEED_MAX), (node, seeds[node])
    assert all(kind == "INT" and maximum == SEED_MAX for kind, _, _, maximum in seeds.values()), seeds


def test_sde_window_defaults_and_eta_ranges_agree_between_nodes(comfy):
    nodes = pack_nodes(comfy.object_info())
    windows = {}
    for node, spec in nodes.items():
        options = {name: opts for name, _, opts in inputs_of(spec)}
        if "sde_end_step" in options:
            windows[node] = (options["sde_start_step"]["default"], options["sde_end_step"]["default"],
                             options["sde_end_step"]["max"])
    assert set(SAMPLER_NODES) | {"FlowCPS_GRPOTrainLoRA"} <= set(windows)
    assert len(set(windows.values())) == 1, windows
    for node, rule in SAMPLER_NODES.items():
        eta = dict((n, o) for n, _, o in inputs_of(nodes[node]))["eta"]
        assert (eta["min"], eta["max"]) == ETA_RANGE[rule], node
    trainer_eta = dict((n, o) for n, _, o in inputs_of(nodes["FlowCPS_GRPOTrainLoRA"]))["eta"]
    assert (trainer_eta["min"], trainer_eta["max"]) == (0.0, max(hi for _, hi in ETA_RANGE.values()))


def test_every_output_has_a_tooltip(comfy):
    missing = []
    for node, spec in pack_nodes(comfy.object_info()).items():
        tooltips = spec.get("output_tooltips") or []
        for i, name in enumerate(spec.get("output_name") or spec.get("output") or []):
            if i >= len(tooltips) or not tooltips[i]:
                missing.append(f"{node} output {i} ({name})")
    assert not missing, missing


def history_error(comfy, entry):
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return data
    return None


def test_the_trainer_rejects_an_eta_outside_the_rules_range(comfy):
    graph = grpo_graph("host_eta_range", iterations=1, save=False)
    graph["4"]["inputs"]["eta"] = 1.5  # the widget admits it (precise goes to 4), CPS does not
    entry, messages = comfy.run(graph, timeout=120)
    error = history_error(comfy, entry)
    assert entry["status"]["status_str"] == "error" and error is not None, entry["status"]
    assert "eta = 1.5 is outside the range of rule 'cps': [0, 1]" in error["exception_message"], error
    assert error["exception_type"] == "ValueError"


def test_a_512_latent_on_the_toy_model_fails_up_front_with_the_size_to_use(comfy):
    graph = grpo_graph("host_toy_512", iterations=1, save=False)
    graph["3"]["inputs"].update(width=512, height=512)
    entry, messages = comfy.run(graph, timeout=120)
    error = history_error(comfy, entry)
    assert entry["status"]["status_str"] == "error" and error is not None, entry["status"]
    message = error["exception_message"]
    assert "the toy digit model takes a 16×16 latent: set Empty Latent Image to width 128, height 128" in message
    assert "512×512 image" in message and "must match the size" not in message
    assert error["node_type"] == "FlowCPS_GRPOTrainLoRA" and "/" not in error["exception_type"]


def test_the_ksampler_on_the_toy_model_explains_a_wrong_latent_size(comfy):
    from test_sampler_nodes import toy_graph

    graph = toy_graph("euler", seed=1, prefix="host/toy_512")
    latent = next(n for n in graph.values() if n["class_type"] == "EmptyLatentImage")
    latent["inputs"].update(width=512, height=512)
    entry, messages = comfy.run(graph, timeout=120)
    error = history_error(comfy, entry)
    assert error is not None and "Empty Latent Image of 128×128" in error["exception_message"], entry["status"]


def test_error_types_of_the_pack_read_as_flow_cps_names(comfy, tmp_path):
    from test_reward_nodes import score_graph

    graph = score_graph({"class_type": "FlowCPS_RewardCLIP",
                         "inputs": {"model": "pickscore", "path": str(tmp_path / "nowhere"), "dtype": "float32"}})
    entry, messages = comfy.run(graph, timeout=240)
    error = history_error(comfy, entry)
    assert error is not None, entry["status"]
    assert error["exception_type"] == "flow_cps.RewardModelNotFound", error["exception_type"]
    assert comfy.execution_error(messages)["exception_type"] == "flow_cps.RewardModelNotFound"


@pytest.mark.parametrize("value", [3e-6, 0.0004])
def test_typed_small_values_reach_the_trainer_exactly_over_the_api(comfy, value):
    """The server side does not round: a value that passes validation reaches the node as sent."""
    graph = grpo_graph("host_exact_" + str(value), iterations=1, save=False)
    graph["4"]["inputs"].update(learning_rate=value, beta=value, clip_range=value, eta=1.5)
    entry, _ = comfy.run(graph, timeout=120)  # fails at the η check, after validation, with the values as sent
    error = history_error(comfy, entry)
    assert error is not None and "eta = 1.5" in error["exception_message"]
    inputs = error["current_inputs"]
    assert inputs["learning_rate"] == [value] and inputs["beta"] == [value] and inputs["clip_range"] == [value]
