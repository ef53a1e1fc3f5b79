"""VAE, latent-file, batch and CLIP-vision nodes on the tiny checkpoint (and a stub VAE for tiling)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from svd_nodes_support import FPS, FRAMES, SIZE
from vidgraph.nodes.conditioning import CLIPVisionEncode
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.latents import (FORMAT_MARKER, LatentFromBatch, LoadLatent, RepeatLatentBatch, SaveLatent,
                                    VAEDecode, VAEDecodeTiled, VAEEncode)
from vidgraph.nodes.svd.vae import SCALE_FACTOR


def smooth_video(frames: int, height: int, width: int) -> torch.Tensor:
    """Gradients, not noise: something a VAE's tiles can agree on."""
    y = torch.linspace(0, 1, height)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width)[None, :].expand(height, width)
    frame = torch.stack([y, x, (x + y) / 2], dim=-1)
    return torch.stack([frame * (0.6 + 0.4 * t / max(1, frames - 1)) for t in range(frames)])


class LocalStubVAE(torch.nn.Module):
    """Decodes each latent pixel to an 8x8 block on its own, plus an offset that depends on the whole
    input (as the real decoder's GroupNorm statistics do): tiles of it disagree only by that offset."""

    def __init__(self, tile_offset: float = 0.0):
        super().__init__()
        self.tile_offset = tile_offset
        self.calls = []

    def decode(self, z, chunk=None, **_):
        self.calls.append(tuple(z.shape))
        pixels = torch.tanh(z[:, :3])
        pixels = pixels + self.tile_offset * z[:, 3].mean()
        return F.interpolate(pixels, scale_factor=8, mode="nearest")


# -- VAE -----------------------------------------------------------------------------------------

def test_vae_encode_decode_shapes(tiny_models):
    context = tiny_models.env.context()
    pixels = smooth_video(2, 72, 128)
    latent = VAEEncode().encode(pixels, tiny_models.vae, context)[0]
    assert latent["samples"].shape == (2, 4, 9, 16) and latent["samples"].dtype == torch.float32
    images = VAEDecode().decode(latent, tiny_models.vae, context)[0]
    assert images.shape == (2, 72, 128, 3)
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0


def test_vae_encode_refuses_sizes_not_multiple_of_8(tiny_models):
    with pytest.raises(NodeInputError) as caught:
        VAEEncode().encode(torch.rand(1, 60, 64, 3), tiny_models.vae, tiny_models.env.context())
    assert str(caught.value).startswith("VAEEncode: input 'pixels': ") and "64x60" in str(caught.value)


def test_vae_decode_refuses_a_non_latent(tiny_models):
    with pytest.raises(NodeInputError) as caught:
        VAEDecode().decode({"samples": torch.zeros(4, 8, 8)}, tiny_models.vae, tiny_models.env.context())
    assert str(caught.value).startswith("VAEDecode: input 'samples': ")


def test_tiled_decode_within_one_tile_is_the_plain_decode(tiny_models):
    latent = VAEEncode().encode(smooth_video(2, SIZE, SIZE), tiny_models.vae, tiny_models.env.context())[0]
    plain = VAEDecode().decode(latent, tiny_models.vae, tiny_models.env.context())[0]
    tiled = VAEDecodeTiled().decode(latent, tiny_models.vae, 64, 32, 64, 8, tiny_models.env.context())[0]
    assert torch.equal(tiled, plain)


def test_tiled_decode_of_a_large_latent_is_close_to_the_plain_decode(tiny_models):
    context = tiny_models.env.context()
    latent = VAEEncode().encode(smooth_video(2, 128, 128), tiny_models.vae, context)[0]
    plain = VAEDecode().decode(latent, tiny_models.vae, context)[0]
    tiled = VAEDecodeTiled().decode(latent, tiny_models.vae, 96, 32, 64, 8, context)[0]
    assert tiled.shape == plain.shape == (2, 128, 128, 3)
    # Random weights with whole-tile normalization: tiles differ somewhat, never wildly.
    assert (tiled - plain).abs().mean() < 0.1


@pytest.mark.parametrize("tile_size, overlap", [(64, 32), (64, 0), (96, 64)])
def test_tiles_cover_the_latent_exactly_once_in_effect(tile_size, overlap, tiny_models):
    """With a decoder that is purely local, any tiling must give exactly the untiled result."""
    vae = LocalStubVAE()
    latent = {"samples": torch.randn(2, 4, 20, 28, generator=torch.Generator().manual_seed(0))}
    plain = VAEDecode().decode(latent, vae, tiny_models.env.context())[0]
    vae.calls.clear()
    tiled = VAEDecodeTiled().decode(latent, vae, tile_size, overlap, 64, 8, tiny_models.env.context())[0]
    assert len(vae.calls) > 1 and all(shape[2] <= tile_size // 8 and shape[3] <= tile_size // 8 for shape in vae.calls)
    assert torch.allclose(tiled, plain, atol=1e-6)


def test_tile_seams_are_feathered_not_cut(tiny_models):
    """Tiles that disagree by a constant must fade into each other across the overlap."""
    latent = {"samples": torch.zeros(1, 4, 8, 16)}
    latent["samples"][:, 3, :, 8:] = 4.0  # the right half shifts the offset of any tile that sees it
    steps = {}
    for overlap in (0, 32):
        out = VAEDecodeTiled().decode(latent, LocalStubVAE(tile_offset=0.25), 64, overlap, 64, 8,
                                      tiny_models.env.context())[0]
        row = out[0, 0]  # [W, 3]
        steps[overlap] = (row[1:] - row[:-1]).abs().max().item()  # the largest jump between columns
    assert steps[0] > 0.2  # hard seam without overlap
    assert steps[32] < steps[0] / 3  # the same jump spread over the feathered overlap


def fitting_two_frames(real, chunks: list):
    """`real` (VAE.encode / decode) as on a GPU with room for two frames: larger chunks run out of memory."""
    def call(tensor, chunk=None, **kwargs):
        chunks.append(chunk)
        if chunk is None or chunk > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(tensor, chunk=chunk, **kwargs)
    return call


def test_decode_retries_with_smaller_chunks_after_out_of_memory(tiny_models, monkeypatch):
    vae = tiny_models.vae
    chunks = []
    decode_that_fits_two_frames = fitting_two_frames(vae.decode, chunks)
    latent = VAEEncode().encode(smooth_video(FRAMES, SIZE, SIZE), vae, tiny_models.env.context())[0]
    expected = VAEDecode().decode(latent, vae, tiny_models.env.context())[0]
    monkeypatch.setattr(vae, "decode", decode_that_fits_two_frames)
    decoded = VAEDecode().decode(latent, vae, tiny_models.env.context())[0]
    assert chunks[0] > 2 and chunks[-1] <= 2 and chunks == sorted(chunks, reverse=True)
    assert decoded.shape == expected.shape
    # Smaller chunks change what the temporal layers see: close, but not bit-identical.
    assert (decoded - expected).abs().mean() < 0.1


def test_encode_of_a_long_clip_goes_in_chunks_that_fit_and_shrinks_on_out_of_memory(tiny_models, monkeypatch):
    """VAEEncode of many frames must not build every frame's encoder activations at once."""
    vae = tiny_models.vae
    chunks = []
    encode_that_fits_two_images = fitting_two_frames(vae.encode, chunks)
    video = smooth_video(5, SIZE, SIZE)
    expected = VAEEncode().encode(video, vae, tiny_models.env.context())[0]["samples"]
    monkeypatch.setattr(vae, "encode", encode_that_fits_two_images)
    latent = VAEEncode().encode(video, vae, tiny_models.env.context())[0]["samples"]
    assert chunks[0] > 2 and chunks[-1] <= 2 and chunks == sorted(chunks, reverse=True)
    torch.testing.assert_close(latent, expected)  # the encoder sees one image at a time anyway


def test_decode_maps_to_0_1_in_place_without_copies_of_the_clip(tiny_models, monkeypatch):
    """A long clip's frames are the biggest tensor of a run: the [-1, 1] -> [0, 1] mapping must not
    hold three more copies of it."""
    decoded = torch.linspace(-1.5, 1.5, 2 * 3 * 16 * 16).reshape(2, 3, 16, 16)
    expected = ((decoded + 1) / 2).clamp(0, 1).movedim(1, -1)
    monkeypatch.setattr(tiny_models.vae, "decode", lambda samples, chunk=None, **_: decoded)
    image = VAEDecode().decode({"samples": torch.zeros(2, 4, 2, 2)}, tiny_models.vae, tiny_models.env.context())[0]
    assert image.data_ptr() == decoded.data_ptr()
    assert torch.equal(image, expected)


@pytest.mark.parametrize("node", ["VAEEncode", "VAEDecode"])
def test_a_long_encode_or_decode_stops_on_interrupt_between_chunks(tiny_models, node):
    """A long clip takes minutes on a CPU: the VAE reports progress per chunk, which also honours
    an interrupt, instead of running to the end."""
    from vidgraph.engine.interrupt import Interrupted
    context = tiny_models.env.context()
    context.interrupt_flag.set()
    with pytest.raises(Interrupted):
        if node == "VAEEncode":
            VAEEncode().encode(smooth_video(2, SIZE, SIZE), tiny_models.vae, context)
        else:
            VAEDecode().decode({"samples": torch.zeros(2, 4, 8, 8)}, tiny_models.vae, context)


# -- .latent files -------------------------------------------------------------------------------

def test_save_latent_then_load_latent_round_trips(tiny_models):
    env = tiny_models.env
    samples = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    prompt = {"1": {"class_type": "SaveLatent", "inputs": {}}}
    ui = SaveLatent().save({"samples": samples}, "latents/svd", env.context(), prompt=prompt,
                           extra_pnginfo={"workflow": {"nodes": []}})["ui"]["latents"][0]
    path = env.output_path(ui)
    assert path.suffix == ".latent" and ui["subfolder"] == "latents"
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"latent_tensor", FORMAT_MARKER}
        assert json.loads(f.metadata()["prompt"]) == prompt
        assert json.loads(f.metadata()["workflow"]) == {"nodes": []}
        assert torch.equal(f.get_tensor("latent_tensor"), samples)

    shutil.copyfile(path, env.folders.input_dir / "svd.latent")
    loaded = LoadLatent().load("svd.latent", env.context())[0]
    assert torch.equal(loaded["samples"], samples)


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/abs", "a/../../b", ""])
def test_save_latent_refuses_a_prefix_outside_the_output_folder_naming_the_input(tiny_models, prefix):
    with pytest.raises(NodeInputError) as caught:
        SaveLatent().save({"samples": torch.zeros(1, 4, 2, 2)}, prefix, tiny_models.env.context())
    assert str(caught.value).startswith("SaveLatent: input 'filename_prefix': ")


def test_load_latent_reads_pre_marker_files_as_scaled(tiny_models):
    env = tiny_models.env
    samples = torch.randn(2, 4, 8, 8)
    save_file({"latent_tensor": samples * SCALE_FACTOR}, str(env.folders.input_dir / "old.latent"))
    loaded = LoadLatent().load("old.latent", env.context())[0]
    assert torch.allclose(loaded["samples"], samples, atol=1e-6)


@pytest.mark.parametrize("name, data, says", [
    ("missing.latent", None, "no file"),
    ("garbage.latent", b"\x00" * 100, "not a readable safetensors file"),
    ("../escape.latent", None, ""),
])
def test_load_latent_bad_files(tiny_models, name, data, says):
    env = tiny_models.env
    if data is not None:
        (env.folders.input_dir / name).write_bytes(data)
    with pytest.raises(NodeInputError) as caught:
        LoadLatent().load(name, env.context())
    assert str(caught.value).startswith("LoadLatent: input 'latent': ") and says in str(caught.value)


def test_load_latent_without_latent_tensor(tiny_models):
    env = tiny_models.env
    save_file({"samples": torch.zeros(1, 4, 8, 8)}, str(env.folders.input_dir / "other.latent"))
    with pytest.raises(NodeInputError, match="has no 'latent_tensor'"):
        LoadLatent().load("other.latent", env.context())


# -- batches -------------------------------------------------------------------------------------

def test_latent_from_batch_slices_and_clamps():
    samples = torch.arange(5.0)[:, None, None, None].expand(5, 4, 2, 2).clone()
    middle = LatentFromBatch().frombatch({"samples": samples}, 1, 2)[0]
    assert middle["samples"][:, 0, 0, 0].tolist() == [1.0, 2.0] and middle["batch_index"] == [1, 2]
    past_end = LatentFromBatch().frombatch({"samples": samples}, 9, 3)[0]
    assert past_end["samples"][:, 0, 0, 0].tolist() == [4.0] and past_end["batch_index"] == [4]
    middle["samples"][0] = -1  # a copy, not a view of the input
    assert samples[1, 0, 0, 0] == 1.0


def test_repeat_latent_batch_repeats_and_offsets_batch_index():
    samples = torch.arange(2.0)[:, None, None, None].expand(2, 4, 2, 2).clone()
    repeated = RepeatLatentBatch().repeat({"samples": samples}, 3)[0]
    assert repeated["samples"][:, 0, 0, 0].tolist() == [0.0, 1.0] * 3 and "batch_index" not in repeated
    sliced = LatentFromBatch().frombatch({"samples": torch.zeros(6, 4, 2, 2)}, 2, 2)[0]
    again = RepeatLatentBatch().repeat(sliced, 2)[0]
    assert again["batch_index"] == [2, 3, 4, 5]
    with pytest.raises(NodeInputError, match="RepeatLatentBatch: input 'amount'"):
        RepeatLatentBatch().repeat({"samples": torch.zeros(100, 4, 1, 1)}, 64)


# -- CLIP vision and SVD conditioning ---------------------------------------------------------------

def test_clip_vision_encode_output_shapes(tiny_models, demo_image):
    out = CLIPVisionEncode().encode(tiny_models.clip_vision, demo_image, "center", tiny_models.env.context())[0]
    width = 64  # the tiny tower: width 64, patch 14 at 224 -> 16 x 16 patches + class token
    assert out.image_embeds.shape == (1, 64)
    assert out.last_hidden_state.shape == (1, 257, width)
    assert out["penultimate_hidden_states"].shape == (1, 257, width)


def test_clip_vision_output_comes_back_to_the_cpu(tiny_models, demo_image, monkeypatch):
    """On a GPU the encoder's outputs are GPU tensors; a cached CLIP_VISION_OUTPUT / CONDITIONING must
    not pin GPU memory (intermediates live on the CPU, as ComfyUI's)."""
    from unittest import mock

    from vidgraph.nodes.svd.clip_vision import CLIPVisionOutput
    on_gpu = mock.Mock(spec=torch.Tensor)
    on_gpu.to.return_value = torch.ones(1, 32)
    monkeypatch.setattr(tiny_models.clip_vision, "encode_image",
                        lambda image, crop=True: CLIPVisionOutput(image_embeds=on_gpu))
    out = CLIPVisionEncode().encode(tiny_models.clip_vision, demo_image, "center", tiny_models.env.context())[0]
    on_gpu.to.assert_called_once_with("cpu")
    assert torch.equal(out.image_embeds, torch.ones(1, 32))


def test_clip_vision_crop_matters_for_a_wide_image(tiny_models):
    wide = smooth_video(1, 64, 192)
    context = tiny_models.env.context()
    center = CLIPVisionEncode().encode(tiny_models.clip_vision, wide, "center", context)[0].image_embeds
    squashed = CLIPVisionEncode().encode(tiny_models.clip_vision, wide, "none", context)[0].image_embeds
    assert not torch.allclose(center, squashed)


def test_svd_conditioning_outputs(svd_conditioning):
    positive, negative, latent = svd_conditioning
    (embedding, extra), = positive
    assert embedding.shape == (1, 1, 64)
    assert extra["concat_latent_image"].shape == (1, 4, SIZE // 8, SIZE // 8)
    assert (extra["fps"], extra["motion_bucket_id"], extra["augmentation_level"]) == (FPS, 127, 0.0)
    (neg_embedding, neg_extra), = negative
    assert not neg_embedding.any() and not neg_extra["concat_latent_image"].any()
    assert neg_extra["fps"] == FPS and neg_extra["motion_bucket_id"] == 127
    assert latent["samples"].shape == (FRAMES, 4, SIZE // 8, SIZE // 8) and not latent["samples"].any()


def test_latent_from_batch_of_a_slice_keeps_the_original_indices():
    """As ComfyUI: the indices select each frame's noise draw, so slicing twice must not renumber."""
    first = LatentFromBatch().frombatch({"samples": torch.zeros(8, 4, 2, 2)}, 3, 4)[0]
    assert first["batch_index"] == [3, 4, 5, 6]
    second = LatentFromBatch().frombatch(first, 1, 2)[0]
    assert second["batch_index"] == [4, 5]


def test_load_latent_lists_input_files_and_notices_a_replaced_file(svd_env):
    """The editor's dropdown lists the .latent files (as ComfyUI's does); a file replaced under the
    same name runs again instead of coming from the cache."""
    latent_path = svd_env.folders.input_dir / "clip.latent"
    save_file({"latent_tensor": torch.zeros(1, 4, 8, 8), FORMAT_MARKER: torch.tensor([])}, str(latent_path))
    (svd_env.folders.input_dir / "notes.txt").write_text("not a latent")
    listed = svd_env.registry.object_info("LoadLatent")["LoadLatent"]["input"]["required"]["latent"][0]
    assert listed == ["clip.latent"]

    prompt = {"1": {"class_type": "LoadLatent", "inputs": {"latent": "clip.latent"}},
              "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "copy"}}}
    executor = svd_env.executor()
    assert executor.run(prompt).executed == ["1", "2"]
    assert executor.run(prompt).executed == []
    save_file({"latent_tensor": torch.ones(1, 4, 8, 8), FORMAT_MARKER: torch.tensor([])}, str(latent_path))
    rerun = executor.run(prompt)
    assert rerun.executed == ["1", "2"]
    saved = svd_env.output_path(rerun.outputs["2"]["latents"][0])
    with safe_open(str(saved), framework="pt") as f:
        assert torch.equal(f.get_tensor("latent_tensor"), torch.ones(1, 4, 8, 8))


def test_vae_decode_sees_a_long_clip_whole_like_comfyui(tiny_models):
    """Past 14 frames the temporal layers must see the whole clip (ComfyUI decodes it in one call
    when memory allows), not sgm's 14-frame chunks."""
    frames = 16
    latent = {"samples": torch.randn(frames, 4, 4, 4, generator=torch.Generator().manual_seed(5))}
    decoded = VAEDecode().decode(latent, tiny_models.vae, tiny_models.env.context())[0]
    whole = tiny_models.vae.decode(latent["samples"], chunk=None)
    chunked = tiny_models.vae.decode(latent["samples"], chunk=14)
    assert not torch.equal(whole, chunked)  # the chunk size matters for this VAE
    assert torch.equal(decoded, ((whole + 1) / 2).clamp(0, 1).movedim(1, -1))


def test_repeat_latent_batch_with_an_empty_batch_index():
    from vidgraph.nodes.latents import RepeatLatentBatch

    out = RepeatLatentBatch().repeat({"samples": torch.zeros(2, 4, 8, 8), "batch_index": []}, 3)[0]
    assert out["samples"].shape == (6, 4, 8, 8)
