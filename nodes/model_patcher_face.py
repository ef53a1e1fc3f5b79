"""ComfyUI's ModelPatcher method names on vidgraph's MODEL (nodes/model.py), for node packs.

Each name maps one to one onto a registration of the MODEL-with-patches contract
(docs/ARCHITECTURE.md, "MODEL"): same arguments, same callable signatures, registered on the
MODEL it is called on (packs clone first, as in ComfyUI). `comfy.model_patcher.ModelPatcher` is
vidgraph's `Model` class itself, so `isinstance(model, ModelPatcher)` holds for every MODEL.
"""
from __future__ import annotations


class ComfyModelPatcher:
    """Mixed into `Model`; uses only its public registration methods."""

    @property
    def model_options(self) -> dict:
        """ComfyUI's `model_options`; its `transformer_options` is the MODEL's own dict (edits stick)."""
        return {"transformer_options": self.transformer_options}

    @property
    def load_device(self):
        return self.network.device()

    @property
    def offload_device(self):
        import torch
        return torch.device("cpu")

    @property
    def model(self) -> "BaseModelView":
        """ComfyUI's `ModelPatcher.model` (its BaseModel), as far as packs read it."""
        return BaseModelView(self)

    def is_clone(self, other) -> bool:
        return getattr(other, "network", None) is self.network

    def model_dtype(self):
        weights = getattr(self.network, "module", self.network)
        return next(iter(weights.parameters())).dtype if hasattr(weights, "parameters") else None

    def set_model_unet_function_wrapper(self, fn):
        self.add_model_wrapper(fn)

    def set_model_sampler_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.set_cfg_function(fn, disable_cfg1_optimization=disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.add_pre_cfg(fn, disable_cfg1_optimization=disable_cfg1_optimization)

    def set_model_sampler_post_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.add_post_cfg(fn, disable_cfg1_optimization=disable_cfg1_optimization)

    def set_model_attn1_patch(self, fn):
        self.add_attention_patch("attn1", "input", fn)

    def set_model_attn2_patch(self, fn):
        self.add_attention_patch("attn2", "input", fn)

    def set_model_attn1_replace(self, fn, block_name, number, transformer_index=None):
        self.add_attention_patch("attn1", "replace", fn, (block_name, number), transformer_index)

    def set_model_attn2_replace(self, fn, block_name, number, transformer_index=None):
        self.add_attention_patch("attn2", "replace", fn, (block_name, number), transformer_index)

    def set_model_attn1_output_patch(self, fn):
        self.add_attention_patch("attn1", "output", fn)

    def set_model_attn2_output_patch(self, fn):
        self.add_attention_patch("attn2", "output", fn)

    def set_model_input_block_patch(self, fn):
        self.add_block_patch("input_block", fn)

    def set_model_input_block_patch_after_skip(self, fn):
        self.add_block_patch("input_block_after_skip", fn)

    def set_model_output_block_patch(self, fn):
        self.add_block_patch("output_block", fn)

    def add_object_patch(self, name: str, obj) -> None:
        if name != "model_sampling":
            raise NotImplementedError(f"ModelPatcher.add_object_patch({name!r}): only 'model_sampling' maps onto "
                                      "vidgraph's MODEL")
        self.set_sampling(obj)

    def get_model_object(self, name: str):
        if name == "model_sampling":
            return self.sampling
        if name == "latent_format":
            return self.latent_format
        raise AttributeError(f"ModelPatcher.get_model_object({name!r}) has no counterpart on vidgraph's MODEL")

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        """ComfyUI's weight patches (LoRA): {key: patch} on `diffusion_model.*` keys (or the network's own
        names); a patch is an object with `delta(weight)`, a tensor or ("diff", (tensor,)). Returns the
        keys that named a weight, as ComfyUI does."""
        return self.add_weight_patches(patches, strength_patch=strength_patch, strength_model=strength_model)


class BaseModelView:
    """What packs read off ComfyUI's BaseModel: the latent format, the sigma table (`model_sampling`),
    the network module (`diffusion_model`) and its dtype."""

    def __init__(self, model):
        self.latent_format = model.latent_format
        self.model_sampling = model.sampling
        self.diffusion_model = getattr(model.network, "module", model.network)
        self._dtype = model.model_dtype()

    def get_dtype(self):
        return self._dtype
