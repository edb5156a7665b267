"""The shipped toy digit model as ComfyUI objects: a flow MODEL, a VAE that maps its 1-channel 16×16 latent to
128×128 images (so EmptyLatentImage 128×128 → KSampler → VAEDecode → Preview works with stock nodes), and a
prompt encoder giving CONDITIONING."""
from __future__ import annotations

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models_base
import torch
from comfy_api.latest import io

from ..training.toy.model import (PIXELS_PER_LATENT, ToyDiT, image_to_latent, latent_to_image,
                                   read_toy_checkpoint)
from ..training.toy.prompts import encode_prompts

CATEGORY = "flow-cps/toy"


class ToyLatentFormat(comfy.latent_formats.LatentFormat):
    latent_channels = 1
    latent_rgb_factors = [[-0.5, -0.5, -0.5]]
    latent_rgb_factors_bias = [0.5, 0.5, 0.5]


class ToyDigitsConfig(comfy.supported_models_base.BASE):
    unet_extra_config = {}
    sampling_settings = {"shift": 1.0, "multiplier": 1000}
    latent_format = ToyLatentFormat
    supported_inference_dtypes = [torch.float32]
    memory_usage_factor = 0.05

    def get_model(self, state_dict, prefix="", device=None):
        return comfy.model_base.BaseModel(self, model_type=comfy.model_base.ModelType.FLOW, device=device,
                                          unet_model=ToyDiT)


class ToyPixelCodec(torch.nn.Module):
    """VAE stand-in: latent ink in [−1, 1] ↔ images in [−1, 1] (ComfyUI's VAE maps those to/from [0, 1])."""

    def __init__(self):
        super().__init__()
        self.register_buffer("unused", torch.zeros(1))

    def decode(self, latent, *args, **kwargs):
        return latent_to_image(latent, scale=PIXELS_PER_LATENT).movedim(-1, 1) * 2 - 1

    def encode(self, pixels, *args, **kwargs):
        images = ((pixels + 1) / 2).movedim(1, -1)
        return image_to_latent(images, size=pixels.shape[-1] // PIXELS_PER_LATENT)


def load_toy_model_patcher():
    state, config, _ = read_toy_checkpoint()
    model_config = ToyDigitsConfig(config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(state, "")
    model.load_model_weights({f"diffusion_model.{k}": v.float() for k, v in state.items()}, "diffusion_model.")
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def make_toy_vae():
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    codec = ToyPixelCodec().eval()
    vae.first_stage_model = codec
    vae.patcher = comfy.model_patcher.ModelPatcher(codec, load_device=vae.device,
                                                   offload_device=comfy.model_management.vae_offload_device())
    vae.latent_channels = 1
    vae.downscale_ratio = vae.upscale_ratio = PIXELS_PER_LATENT
    vae.working_dtypes = [torch.float32]
    vae.vae_dtype = torch.float32
    return vae


class ToyDigitModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_ToyDigitModel",
            display_name="Toy Digit Flow Model",
            category=CATEGORY,
            description="Loads the tiny rectified-flow digit model that ships with flow-cps (no download). Use an "
                        "Empty Latent Image of 128×128 (its latent is 16×16×1), the Toy Digit Prompt node for "
                        "conditioning and VAE Decode with this VAE.",
            inputs=[],
            outputs=[io.Model.Output(tooltip="The toy digit flow model (16×16×1 latents)."),
                     io.Vae.Output(tooltip="Maps its 16×16 latent to a 128×128 image and back.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(load_toy_model_patcher(), make_toy_vae())


class ToyDigitPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_ToyDigitPrompt",
            display_name="Toy Digit Prompt",
            category=CATEGORY,
            description="Encodes a prompt such as 'a handwritten 7' or 'seven' for the toy digit model. Leave it "
                        "empty for the negative (unconditional) prompt.",
            inputs=[io.String.Input("text", default="a handwritten 7",
                                    tooltip="Names one digit (numeral or word); empty = unconditional.")],
            outputs=[io.Conditioning.Output(tooltip="Conditioning for the toy digit model.")],
        )

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        context = encode_prompts([text])
        # pooled_output = the same one-hot, so the conditioning also drives models with a pooled vector (e.g. a
        # tiny SD3 MMDiT in the host tests); the toy model itself ignores it
        return io.NodeOutput([[context, {"pooled_output": context[:, 0]}]])


NODES = [ToyDigitModel, ToyDigitPrompt]
