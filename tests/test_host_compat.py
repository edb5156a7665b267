"""nodes/host_compat.py: the decisions that differ between ComfyUI versions, checked without a host.

The module has no ComfyUI import, so it is loaded by file path (importing the nodes package would need ComfyUI).
The dynamic-VRAM path itself needs an NVIDIA GPU: these tests pin down which copy each kind of ModelPatcher gets.
"""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

_spec = importlib.util.spec_from_file_location(
    "flow_cps_host_compat", Path(__file__).resolve().parent.parent / "nodes" / "host_compat.py")
host_compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(host_compat)


def test_autograd_kernels_sets_the_flag_and_restores_it_also_on_error():
    mm = SimpleNamespace(in_training=False)
    with host_compat.autograd_kernels(mm):
        assert mm.in_training is True
    assert mm.in_training is False
    with pytest.raises(KeyboardInterrupt):
        with host_compat.autograd_kernels(mm):
            raise KeyboardInterrupt  # what ComfyUI's cancel raises inside a node
    assert mm.in_training is False
    mm.in_training = True  # nested inside the stock trainer's own block: left as it was
    with host_compat.autograd_kernels(mm):
        pass
    assert mm.in_training is True


def test_autograd_kernels_is_a_no_op_on_hosts_without_the_flag():
    mm = SimpleNamespace()
    with host_compat.autograd_kernels(mm):
        assert not hasattr(mm, "in_training")
    assert not hasattr(mm, "in_training")


class NewPatcher:
    """The shape of ModelPatcher / ModelPatcherDynamic on ComfyUI v0.33."""

    def __init__(self, cached=None, dynamic=False):
        self.cached_patcher_init = cached
        self.dynamic = dynamic

    def clone(self, disable_dynamic=False, model_override=None, force_deepcopy=False):
        raise AssertionError("the decision must not clone")

    def is_dynamic(self):
        return self.dynamic


class OldPatcher:
    """The shape of ModelPatcher on ComfyUI v0.3.64: no force_deepcopy, no dynamic VRAM, no cached loader."""

    def clone(self):
        raise AssertionError("the decision must not clone")


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_stock_loaded_model_on_a_new_host_is_deep_copied(dynamic):
    loader = (lambda *a, **k: None, ("model.safetensors", {}))
    assert host_compat.trainable_copy_strategy(NewPatcher(loader, dynamic)) == host_compat.DEEPCOPY


def test_a_custom_model_without_a_cached_loader_shares_its_weights():
    assert host_compat.trainable_copy_strategy(NewPatcher(None, dynamic=False)) == host_compat.SHARED


def test_a_dynamic_model_without_a_cached_loader_is_refused_with_advice():
    with pytest.raises(host_compat.DynamicModelNotTrainable, match="--disable-dynamic-vram"):
        host_compat.trainable_copy_strategy(NewPatcher(None, dynamic=True))


def test_an_old_host_shares_the_weights_even_with_a_cached_loader_attribute():
    patcher = OldPatcher()
    assert host_compat.trainable_copy_strategy(patcher) == host_compat.SHARED
    patcher.cached_patcher_init = (print, ())  # no force_deepcopy to use it with
    assert host_compat.trainable_copy_strategy(patcher) == host_compat.SHARED
