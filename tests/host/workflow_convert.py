"""Convert a UI-format ComfyUI workflow (what the browser saves) into the API format that POST /prompt takes.

Rules, as the ComfyUI frontend applies them when it queues a graph:
- ``widgets_values`` holds one value per widget, in the order of the node's inputs in ``object_info``
  (``input_order``: required, then optional). A widget input that is connected by a link KEEPS its slot in
  ``widgets_values`` (the link wins, the stored value is ignored).
- Widgets are INT / FLOAT / STRING / BOOLEAN / COMBO inputs (a list as the type is a COMBO) unless the spec says
  ``forceInput``. Everything else is a socket.
- Extra frontend-only values: an input with ``control_after_generate`` (and any INT named ``seed`` or
  ``noise_seed``) is followed by its control value ("fixed", "randomize", ...; a bool in very old files); a
  COMBO with a control is also followed by a filter string; a COMBO with ``image_upload`` (``video_upload``,
  ...) is followed by the upload button's value ("image", ...). These are skipped only when the value found
  there looks like one, so workflows saved without them still line up.
- ``widgets_values`` may also be a dict (name -> value); then names are used directly. A widget with no stored
  value (no or a short ``widgets_values``) gets its default from object_info, as the frontend would show it.
- Virtual nodes: Note / MarkdownNote are dropped; Reroute is followed upstream; a PrimitiveNode's value
  (its ``widgets_values[0]``) replaces the link into the widget it drives.
- Modes: 2 (muted) drops the node and the links out of it; 4 (bypassed) drops the node and passes each of its
  outputs through to the first input of the same type (the input at the same slot index first).
- Subgraphs (``definitions.subgraphs``) are not supported and raise NotImplementedError.
"""
from __future__ import annotations

from typing import Any

DROPPED_TYPES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize", "increment-wrap"}
UPLOAD_VALUES = {"image", "video", "audio"}
SEED_NAMES = {"seed", "noise_seed"}
MODE_MUTED = 2
MODE_BYPASS = 4


def _spec_parts(spec) -> tuple[Any, dict]:
    if isinstance(spec, (list, tuple)) and spec:
        typ = spec[0]
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return typ, opts
    return spec, {}


def _is_widget(spec) -> bool:
    typ, opts = _spec_parts(spec)
    if opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES


def widget_layout(info: dict) -> list[tuple[str, list[str], Any, dict]]:
    """[(widget input name, kinds of extra frontend values after it, type, options)] for one object_info entry."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {sec: list(inputs.get(sec, {})) for sec in ("required", "optional")}
    layout = []
    for section in ("required", "optional"):
        section_specs = inputs.get(section, {}) or {}
        for name in order.get(section, []):
            spec = section_specs.get(name)
            if spec is None or not _is_widget(spec):
                continue
            typ, opts = _spec_parts(spec)
            is_combo = isinstance(typ, list) or typ == "COMBO"
            extras = []
            if opts.get("control_after_generate") or (typ == "INT" and name in SEED_NAMES
                                                     and opts.get("control_after_generate") is not False):
                extras.append("control")
                if is_combo:
                    extras.append("filter")
            if is_combo and any(k.endswith("_upload") and v for k, v in opts.items()):
                extras.append("upload")
            layout.append((name, extras, typ, opts))
    return layout


def _extra_matches(kind: str, value, next_type) -> bool:
    if kind == "control":  # very old workflows stored the control as a "randomize" checkbox (a bool)
        return value in CONTROL_VALUES or (isinstance(value, bool) and next_type != "BOOLEAN")
    if kind == "filter":
        return isinstance(value, str)
    if kind == "upload":
        return value in UPLOAD_VALUES
    return False


def _default(typ, opts):
    if "default" in opts:
        return opts["default"]
    options = typ if isinstance(typ, list) else opts.get("options")
    return options[0] if options else None


def widget_values_by_name(info: dict, widgets_values) -> dict:
    """Map a node's widgets_values onto its widget input names; widgets without a stored value get the default."""
    layout = widget_layout(info)
    out = {}
    if isinstance(widgets_values, dict):
        out = {name: widgets_values[name] for name, *_ in layout if name in widgets_values}
    elif widgets_values:
        values, i = list(widgets_values), 0
        for k, (name, extras, _, _) in enumerate(layout):
            if i >= len(values):
                break
            out[name] = values[i]
            i += 1
            next_type = layout[k + 1][2] if k + 1 < len(layout) else None
            for kind in extras:
                if i < len(values) and _extra_matches(kind, values[i], next_type):
                    i += 1
    for name, _, typ, opts in layout:
        if name not in out:
            default = _default(typ, opts)
            if default is not None:
                out[name] = default
    return out


def _parse_links(raw_links) -> dict:
    links = {}
    for link in raw_links or []:
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"],
                                 link["target_slot"], link.get("type"))
        else:
            link_id, origin_id, origin_slot, target_id, target_slot, *rest = link
            links[link_id] = (origin_id, origin_slot, target_id, target_slot, rest[0] if rest else None)
    return links


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Return {node id (str): {"class_type", "inputs", "_meta"}} for a UI-format workflow."""
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise NotImplementedError("workflows with subgraphs are not supported by ui_to_api")
    nodes = {node["id"]: node for node in workflow.get("nodes", [])}
    links = _parse_links(workflow.get("links"))

    def resolve(link_id, depth=0):
        """Follow a link to its real source: ("link", [id, slot]), ("value", v) or None (dropped)."""
        if link_id is None or link_id not in links or depth > 1000:
            return None
        origin_id, origin_slot, _, _, _ = links[link_id]
        origin = nodes.get(origin_id)
        if origin is None:
            return None
        otype, mode = origin.get("type"), origin.get("mode", 0)
        if otype == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if otype == "Reroute":
            inputs = origin.get("inputs") or []
            return resolve(inputs[0].get("link"), depth + 1) if inputs else None
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            outputs = origin.get("outputs") or []
            out_type = outputs[origin_slot].get("type") if origin_slot < len(outputs) else None
            inputs = origin.get("inputs") or []
            for idx in [origin_slot, *range(len(inputs))]:
                if idx < len(inputs) and inputs[idx].get("type") == out_type:
                    return resolve(inputs[idx].get("link"), depth + 1)
            return None
        return ("link", [str(origin_id), origin_slot])

    api = {}
    for node_id, node in nodes.items():
        ntype, mode = node.get("type"), node.get("mode", 0)
        if ntype in DROPPED_TYPES or ntype in ("Reroute", "PrimitiveNode") or mode in (MODE_MUTED, MODE_BYPASS):
            continue
        if ntype not in object_info:
            raise ValueError(f"node {node_id}: type {ntype!r} is not in object_info")
        info = object_info[ntype]
        inputs = widget_values_by_name(info, node.get("widgets_values"))
        for inp in node.get("inputs") or []:
            if inp.get("link") is None:
                continue
            name = (inp.get("widget") or {}).get("name") or inp["name"]
            source = resolve(inp["link"])
            if source is None:
                continue  # a widget keeps its stored value; a socket stays unconnected
            inputs[name] = source[1]
        title = node.get("title") or info.get("display_name") or ntype
        api[str(node_id)] = {"class_type": ntype, "inputs": inputs, "_meta": {"title": title}}
    return api
