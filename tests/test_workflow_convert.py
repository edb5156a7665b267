"""ui_to_api (tests/host/workflow_convert.py) on hand-written UI workflows; needs no ComfyUI."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "host"))
from workflow_convert import ui_to_api, widget_values_by_name  # noqa: E402

SEED = ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}]


def _info(required=None, optional=None, outputs=()):
    required, optional = required or {}, optional or {}
    return {"input": {"required": required, "optional": optional},
            "input_order": {"required": list(required), "optional": list(optional)},
            "output": list(outputs), "display_name": None}


# An excerpt of ComfyUI v0.3.64's /object_info (only the fields ui_to_api reads).
OBJECT_INFO = {
    "CheckpointLoaderSimple": _info({"ckpt_name": [["a.safetensors", "b.safetensors"], {}]},
                                    outputs=["MODEL", "CLIP", "VAE"]),
    "CLIPTextEncode": _info({"text": ["STRING", {"multiline": True}], "clip": ["CLIP", {}]},
                            outputs=["CONDITIONING"]),
    "EmptyLatentImage": _info({"width": ["INT", {"default": 512}], "height": ["INT", {"default": 512}],
                               "batch_size": ["INT", {"default": 1}]}, outputs=["LATENT"]),
    "LatentUpscaleBy": _info({"samples": ["LATENT", {}],
                              "upscale_method": [["nearest-exact", "bilinear"], {}],
                              "scale_by": ["FLOAT", {"default": 1.5}]}, outputs=["LATENT"]),
    "KSampler": _info({"model": ["MODEL", {}], "seed": SEED, "steps": ["INT", {"default": 20}],
                       "cfg": ["FLOAT", {"default": 8.0}], "sampler_name": [["euler", "cps"], {}],
                       "scheduler": [["normal", "simple"], {}], "positive": ["CONDITIONING", {}],
                       "negative": ["CONDITIONING", {}], "latent_image": ["LATENT", {}],
                       "denoise": ["FLOAT", {"default": 1.0}]}, outputs=["LATENT"]),
    "VAEDecode": _info({"samples": ["LATENT", {}], "vae": ["VAE", {}]}, outputs=["IMAGE"]),
    "SaveImage": _info({"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}),
    "LoadImageMask": _info({"image": [["x.png", "y.png"], {"image_upload": True}],
                            "channel": [["alpha", "red"], {}]}, outputs=["MASK"]),
    "V3Node": _info({"mode": ["COMBO", {"options": ["a", "b"]}], "count": ["INT", {"forceInput": True}],
                     "flag": ["BOOLEAN", {"default": False}]},
                    {"noise_seed": ["INT", {"default": 0}], "extra": ["IMAGE", {}]}),
}


def _node(nid, ntype, inputs=(), outputs=(), widgets=None, mode=0, **kw):
    node = {"id": nid, "type": ntype, "mode": mode,
            "inputs": [dict(name=n, type=t, link=l, **({"widget": {"name": n}} if w else {}))
                       for n, t, l, w in ((*i, False) if len(i) == 3 else i for i in inputs)],
            "outputs": [{"name": t, "type": t, "links": ls} for t, ls in outputs],
            "widgets_values": widgets if widgets is not None else []}
    node.update(kw)
    return node


def _txt2img(ksampler_widgets, seed_link=None, extra_nodes=(), extra_links=()):
    ks_inputs = [("model", "MODEL", 1), ("positive", "CONDITIONING", 4), ("negative", "CONDITIONING", 5),
                 ("latent_image", "LATENT", 6)]
    if seed_link is not None:
        ks_inputs.append(("seed", "INT", seed_link, True))
    nodes = [
        _node(4, "CheckpointLoaderSimple", outputs=[("MODEL", [1]), ("CLIP", [2, 3]), ("VAE", [8])],
              widgets=["b.safetensors"]),
        _node(6, "CLIPTextEncode", [("clip", "CLIP", 2)], [("CONDITIONING", [4])], ["a red cube"]),
        _node(7, "CLIPTextEncode", [("clip", "CLIP", 3)], [("CONDITIONING", [5])], ["blurry"]),
        _node(5, "EmptyLatentImage", outputs=[("LATENT", [6])], widgets=[64, 48, 2]),
        _node(3, "KSampler", ks_inputs, [("LATENT", [7])], ksampler_widgets),
        _node(8, "VAEDecode", [("samples", "LATENT", 7), ("vae", "VAE", 8)], [("IMAGE", [9])]),
        _node(9, "SaveImage", [("images", "IMAGE", 9)], widgets=["out/test"]),
        _node(10, "Note", widgets=["a note"]),
        *extra_nodes,
    ]
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 4, 1, 6, 0, "CLIP"], [3, 4, 1, 7, 0, "CLIP"],
             [4, 6, 0, 3, 1, "CONDITIONING"], [5, 7, 0, 3, 2, "CONDITIONING"], [6, 5, 0, 3, 3, "LATENT"],
             [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"], *extra_links]
    return {"nodes": nodes, "links": links, "version": 0.4}


def test_txt2img_graph():
    api = ui_to_api(_txt2img([123, "randomize", 20, 7.5, "cps", "simple", 1.0]), OBJECT_INFO)
    assert set(api) == {"3", "4", "5", "6", "7", "8", "9"}  # the Note is dropped
    assert api["3"] == {"class_type": "KSampler", "_meta": {"title": "KSampler"}, "inputs": {
        "seed": 123, "steps": 20, "cfg": 7.5, "sampler_name": "cps", "scheduler": "simple", "denoise": 1.0,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    assert api["4"]["inputs"] == {"ckpt_name": "b.safetensors"}
    assert api["5"]["inputs"] == {"width": 64, "height": 48, "batch_size": 2}
    assert api["6"]["inputs"] == {"text": "a red cube", "clip": ["4", 1]}
    assert api["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    assert api["9"]["inputs"] == {"images": ["8", 0], "filename_prefix": "out/test"}


def test_widget_values_without_control_value_still_line_up():
    api = ui_to_api(_txt2img([5, 30, 4.0, "euler", "normal", 0.5]), OBJECT_INFO)
    assert api["3"]["inputs"]["seed"] == 5 and api["3"]["inputs"]["steps"] == 30
    assert api["3"]["inputs"]["denoise"] == 0.5


def test_linked_widget_keeps_its_slot_and_primitive_value_wins():
    primitive = _node(11, "PrimitiveNode", outputs=[("INT", [10])], widgets=[999, "fixed"])
    wf = _txt2img([123, "fixed", 20, 7.5, "euler", "normal", 1.0], seed_link=10,
                  extra_nodes=[primitive], extra_links=[[10, 11, 0, 3, 9, "INT"]])
    api = ui_to_api(wf, OBJECT_INFO)
    assert "11" not in api
    assert api["3"]["inputs"]["seed"] == 999 and api["3"]["inputs"]["steps"] == 20


def test_reroute_chain_is_followed():
    wf = _txt2img([1, "fixed", 20, 7.5, "euler", "normal", 1.0])
    wf["links"][0] = [1, 21, 0, 3, 0, "MODEL"]  # KSampler.model <- reroute 21 <- reroute 20 <- checkpoint
    wf["links"] += [[20, 4, 0, 20, 0, "MODEL"], [21, 20, 0, 21, 0, "MODEL"]]
    wf["nodes"] += [_node(20, "Reroute", [("", "*", 20)], [("MODEL", [21])]),
                    _node(21, "Reroute", [("", "*", 21)], [("MODEL", [1])])]
    api = ui_to_api(wf, OBJECT_INFO)
    assert api["3"]["inputs"]["model"] == ["4", 0]
    assert "20" not in api and "21" not in api


def test_bypassed_node_passes_through_and_muted_node_is_dropped():
    wf = _txt2img([1, "fixed", 20, 7.5, "euler", "normal", 1.0])
    wf["links"][5] = [6, 12, 0, 3, 3, "LATENT"]  # KSampler.latent_image <- bypassed upscale <- empty latent
    wf["links"].append([30, 5, 0, 12, 0, "LATENT"])
    wf["nodes"].append(_node(12, "LatentUpscaleBy", [("samples", "LATENT", 30)], [("LATENT", [6])],
                             ["bilinear", 2.0], mode=4))
    wf["nodes"][6]["mode"] = 2  # SaveImage (id 9) muted
    api = ui_to_api(wf, OBJECT_INFO)
    assert api["3"]["inputs"]["latent_image"] == ["5", 0]
    assert "12" not in api and "9" not in api


def test_input_from_muted_node_is_left_out():
    wf = _txt2img([1, "fixed", 20, 7.5, "euler", "normal", 1.0])
    wf["nodes"][3]["mode"] = 2  # EmptyLatentImage muted
    api = ui_to_api(wf, OBJECT_INFO)
    assert "latent_image" not in api["3"]["inputs"] and "5" not in api


def test_upload_combo_and_v3_combo_force_input_and_seed_name():
    info = OBJECT_INFO["LoadImageMask"]
    assert widget_values_by_name(info, ["y.png", "image", "red"]) == {"image": "y.png", "channel": "red"}
    assert widget_values_by_name(info, ["y.png", "red"]) == {"image": "y.png", "channel": "red"}
    # COMBO type, forceInput INT (a socket, no widget value), optional INT named noise_seed has a control value
    assert widget_values_by_name(OBJECT_INFO["V3Node"], ["b", True, 7, "increment"]) == {
        "mode": "b", "flag": True, "noise_seed": 7}
    assert widget_values_by_name(OBJECT_INFO["V3Node"], {"flag": True, "mode": "a", "other": 1}) == {
        "mode": "a", "flag": True, "noise_seed": 0}  # missing widget -> its default


def test_missing_widget_values_get_defaults_and_old_bool_control_is_skipped():
    ks = OBJECT_INFO["KSampler"]
    assert widget_values_by_name(ks, None) == {"seed": 0, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
                                               "scheduler": "normal", "denoise": 1.0}
    # the frontend's old default graph stored the control as a bool
    assert widget_values_by_name(ks, [156680208700286, True, 20, 8, "euler", "normal", 1]) == {
        "seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
        "denoise": 1}


def test_dict_links_and_title():
    wf = _txt2img([1, "fixed", 20, 7.5, "euler", "normal", 1.0])
    wf["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), l))
                   for l in wf["links"]]
    wf["nodes"][4]["title"] = "My sampler"
    api = ui_to_api(wf, OBJECT_INFO)
    assert api["3"]["inputs"]["model"] == ["4", 0] and api["3"]["_meta"]["title"] == "My sampler"


def test_unknown_type_and_subgraphs_are_errors():
    wf = _txt2img([1, "fixed", 20, 7.5, "euler", "normal", 1.0])
    wf["nodes"].append(_node(40, "NoSuchNode"))
    with pytest.raises(ValueError, match="NoSuchNode"):
        ui_to_api(wf, OBJECT_INFO)
    with pytest.raises(NotImplementedError):
        ui_to_api({"nodes": [], "links": [], "definitions": {"subgraphs": [{"id": "x"}]}}, OBJECT_INFO)


def test_explicit_no_control_on_a_seed_named_input_has_no_control_value():
    # the frontend adds no control widget when control_after_generate is explicitly False (checked in Chromium)
    info = {"N": _info(required={"seed": ["INT", {"default": 0, "control_after_generate": False}],
                                 "steps": ["INT", {"default": 1}]})}
    workflow = {"nodes": [_node(1, "N", widgets=[5, 7])], "links": []}
    assert ui_to_api(workflow, info)["1"]["inputs"] == {"seed": 5, "steps": 7}
