"""ComfyUI glue: node classes that read inputs, call samplers/ or training/, and return outputs."""
from comfy_api.latest import ComfyExtension, io

from . import chart_nodes, compare_nodes, method_nodes, reward_nodes, sampler_nodes, toy_nodes, train_nodes
from .comfy_sampling import register_ksampler_names


class FlowCPSExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*sampler_nodes.NODES, *compare_nodes.NODES, *toy_nodes.NODES, *reward_nodes.NODES,
                *train_nodes.NODES, *method_nodes.NODES, *chart_nodes.NODES]


async def comfy_entrypoint() -> FlowCPSExtension:
    return FlowCPSExtension()


register_reward_folder = reward_nodes.register_reward_folder

__all__ = ["comfy_entrypoint", "register_ksampler_names", "register_reward_folder"]
