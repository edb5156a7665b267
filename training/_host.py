"""The pure-torch sampler package, imported relatively inside ComfyUI and as a top-level package in tests."""
try:
    from .. import samplers  # the pack imported by ComfyUI (module name = folder path)
    from ..samplers import plots
except ImportError:  # training/ imported as a top-level package (tests, scripts)
    import samplers
    from samplers import plots

__all__ = ["samplers", "plots"]
