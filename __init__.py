"""flow-cps: coefficients-preserving samplers, noise-artifact comparison and GRPO LoRA training for ComfyUI.

ComfyUI imports this file by path; everything below uses relative imports only.
"""
import importlib.util

WEB_DIRECTORY = "./web"

# Outside ComfyUI (pytest collects the repository root as a package) there is nothing to register.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint, register_ksampler_names, register_reward_folder

    register_ksampler_names()
    register_reward_folder()  # models/reward_models/<name>/ for the CLIP-family reward loaders
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
