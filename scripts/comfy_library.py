"""ComfyUI as a library for scripts/train_comfy.py: its import with the node files a run needs, and this pack's
own modules before (pure ones) and after (its nodes, loaded the way the server loads them) that import."""
import asyncio
import glob
import importlib
import importlib.util
import logging
import os
import sys

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_comfyui(args, class_types: set):
    """ComfyUI as a library, on this rank's device, with the node definitions the graph's ``class_types`` need and
    this pack loaded the way the server loads it. Returns (nodes module, folder_paths, the pack's headless module)."""
    import torch
    use_cuda = torch.cuda.is_available() and not args.cpu
    if use_cuda:
        torch.cuda.set_device(args.local_rank)  # before comfy.model_management picks its device
    sys.path.insert(0, os.path.abspath(args.comfyui))
    from comfy.cli_args import args as comfy_args
    comfy_args.cpu = not use_cuda
    comfy_args.disable_api_nodes = True
    import folder_paths
    if args.output_directory:
        folder_paths.set_output_directory(os.path.abspath(args.output_directory))
    from utils.extra_config import load_extra_path_config
    for path in args.extra_model_paths_config:
        load_extra_path_config(os.path.abspath(path))
    import nodes
    extras = builtin_node_files(args.comfyui)
    wanted = naming_files(extras, class_types)
    failed = load_builtin_nodes(nodes, wanted, first=True)
    for path in [*args.custom_node, PACK_DIR]:
        if not asyncio.run(nodes.load_custom_node(os.path.abspath(path))):
            sys.exit(f"train_comfy.py: error: loading the node pack {path} failed (see the log above)")
    missing = sorted(set(class_types) - set(nodes.NODE_CLASS_MAPPINGS))
    if missing:  # a node whose name is not written out in its file's source: load the rest, as the server does
        logging.info("loading all of ComfyUI's comfy_extras nodes: %s not found by name", ", ".join(missing))
        failed += load_builtin_nodes(nodes, [path for path in extras if path not in wanted], first=False)
    # node replacements are a frontend feature: registering them needs the web server, which a run does not start
    failed = [name for name in failed if "nodes_replacements" not in str(name)]
    if failed:
        logging.warning("some of ComfyUI's comfy_extras nodes did not import (a workflow using them will fail): %s",
                        ", ".join(map(str, failed)))
    pack = os.path.abspath(PACK_DIR).replace(".", "_x_")
    headless = importlib.import_module(pack + ".nodes.headless")
    return nodes, folder_paths, headless, use_cuda


def builtin_node_files(comfyui: str) -> dict:
    """{path: source} of ComfyUI's comfy_extras/nodes_*.py, the files its init_builtin_extra_nodes loads."""
    found = {}
    for path in sorted(glob.glob(os.path.join(os.path.abspath(comfyui), "comfy_extras", "nodes_*.py"))):
        with open(path, encoding="utf-8", errors="replace") as handle:
            found[path] = handle.read()
    return found


def naming_files(sources: dict, class_types: set) -> list:
    """The paths of ``sources`` ({path: source}) that name one of ``class_types`` as a string literal: where a node
    is defined (V1's NODE_CLASS_MAPPINGS keys and V3's node_id are such literals)."""
    return [path for path, text in sources.items()
            if any(f'"{name}"' in text or f"'{name}'" in text for name in class_types)]


def load_builtin_nodes(nodes, paths: list, first: bool) -> list:
    """Load these comfy_extras files as ComfyUI's init_builtin_extra_nodes does (the ~130 of them take ~4 s of a
    CPU, a quarter of a process's start-up; a run loads those whose source names a node of its graph). Returns the
    files that failed."""
    async def load():
        if first:
            await nodes.init_public_apis()  # what init_extra_nodes does first: the V3 node API's versions
        return [os.path.basename(path) for path in paths
                if not await nodes.load_custom_node(path, module_parent="comfy_extras")]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ComfyUI's own import report, given by the caller without web-server-only nodes
    try:
        return asyncio.run(load())
    finally:
        root.setLevel(level)


def pack_module(name: str):
    """A pure-torch module of this pack (training/…) before ComfyUI is imported; the pack folder goes to the end of
    sys.path, so it never shadows a ComfyUI module of the same name (its nodes/)."""
    if PACK_DIR not in sys.path:
        sys.path.append(PACK_DIR)
    return importlib.import_module(name)


def pack_file_module(relative_path: str):
    """One standard-library module of this pack, loaded from its file before ComfyUI is imported (the pack's nodes/
    package needs ComfyUI, and its name is ComfyUI's own)."""
    name = "flow_cps_" + os.path.splitext(os.path.basename(relative_path))[0]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(PACK_DIR, relative_path))
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]
