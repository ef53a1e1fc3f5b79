"""Rebatching: a list of image or latent batches regrouped into batches of a given size (ComfyUI's
RebatchImages / RebatchLatents). Both take their whole input list at once and answer a list."""
from __future__ import annotations

import torch

from .common import NodeInputError
from .image_io import check_image_batch

BATCH_SIZE = ("INT", {"default": 1, "min": 1, "max": 4096})


class RebatchImages:
    DESCRIPTION = "Regroup a list of image batches into batches of batch_size images (same-sized images only)."
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_IS_LIST = (True,)
    INPUT_IS_LIST = True
    FUNCTION = "rebatch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "batch_size": BATCH_SIZE}}

    def rebatch(self, images, batch_size):
        size = batch_size[0]
        frames = []
        for index, batch in enumerate(images):
            batch = check_image_batch(batch, "RebatchImages", f"images[{index}]")
            frames.extend(batch[i:i + 1] for i in range(batch.shape[0]))
        batches = []
        for start in range(0, len(frames), size):
            group = frames[start:start + size]
            if any(f.shape[1:] != group[0].shape[1:] for f in group):
                raise NodeInputError("RebatchImages", "images", "images of different sizes cannot share a batch: "
                                     f"{sorted({tuple(f.shape[1:]) for f in group})}")
            batches.append(torch.cat(group, dim=0))
        return (batches,)


class RebatchLatents:
    DESCRIPTION = ("Regroup a list of latent batches into batches of batch_size samples; latents of "
                   "different sizes go to separate batches. Noise masks and batch indices follow their samples.")
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_IS_LIST = (True,)
    INPUT_IS_LIST = True
    FUNCTION = "rebatch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latents": ("LATENT",), "batch_size": BATCH_SIZE}}

    def rebatch(self, latents, batch_size):
        size = batch_size[0]
        groups: dict[tuple, list[dict]] = {}    # sample shape -> one entry per sample, in order
        for index, latent in enumerate(latents):
            samples = latent.get("samples") if isinstance(latent, dict) else None
            if not isinstance(samples, torch.Tensor) or samples.ndim < 3:
                raise NodeInputError("RebatchLatents", f"latents[{index}]", "is not a LATENT with samples")
            mask = latent.get("noise_mask")
            indices = latent.get("batch_index") or list(range(samples.shape[0]))
            for i in range(samples.shape[0]):
                one_mask = None
                if isinstance(mask, torch.Tensor):
                    one_mask = mask[min(i, mask.shape[0] - 1)].unsqueeze(0)
                groups.setdefault(tuple(samples.shape[1:]), []).append(
                    {"samples": samples[i:i + 1], "noise_mask": one_mask, "batch_index": indices[i]})
        batches = []
        for entries in groups.values():
            for start in range(0, len(entries), size):
                part = entries[start:start + size]
                out = {"samples": torch.cat([e["samples"] for e in part]),
                       "batch_index": [e["batch_index"] for e in part]}
                masks = [e["noise_mask"] for e in part]
                if any(m is not None for m in masks):
                    shape = next(m for m in masks if m is not None).shape
                    out["noise_mask"] = torch.cat([m if m is not None and m.shape == shape else
                                                   torch.ones(shape) for m in masks])
                batches.append(out)
        return (batches,)


NODE_CLASS_MAPPINGS = {"RebatchImages": RebatchImages, "RebatchLatents": RebatchLatents}
NODE_DISPLAY_NAME_MAPPINGS = {"RebatchImages": "Rebatch Images", "RebatchLatents": "Rebatch Latents"}
