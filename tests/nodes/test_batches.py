"""RebatchImages / RebatchLatents regroup a list of batches (ComfyUI's list semantics)."""
import pytest
import torch

from vidgraph.nodes.batches import RebatchImages, RebatchLatents
from vidgraph.nodes.common import NodeInputError


def test_rebatch_images_regroups_frames_in_order():
    images = [torch.full((2, 4, 4, 3), 0.1), torch.full((1, 4, 4, 3), 0.2), torch.full((2, 4, 4, 3), 0.3)]
    (batches,) = RebatchImages().rebatch(images, [2])
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert [round(float(b[:, 0, 0, 0].mean()), 2) for b in batches] == [0.1, 0.25, 0.3]


def test_rebatch_images_refuses_mixed_sizes_in_one_batch():
    with pytest.raises(NodeInputError, match="RebatchImages.*different sizes"):
        RebatchImages().rebatch([torch.zeros(1, 4, 4, 3), torch.zeros(1, 8, 8, 3)], [2])


def test_rebatch_latents_keeps_sizes_apart_and_carries_masks_and_indices():
    a = {"samples": torch.zeros(3, 4, 8, 8), "batch_index": [5, 6, 7]}
    b = {"samples": torch.ones(1, 4, 16, 16), "noise_mask": torch.full((1, 16, 16), 0.5)}
    (batches,) = RebatchLatents().rebatch([a, b], [2])
    assert [tuple(x["samples"].shape) for x in batches] == [(2, 4, 8, 8), (1, 4, 8, 8), (1, 4, 16, 16)]
    assert [x["batch_index"] for x in batches] == [[5, 6], [7], [0]]
    assert "noise_mask" not in batches[0] and float(batches[2]["noise_mask"].mean()) == 0.5
