"""Checkpoint loading: detection, dtypes, low-memory mode, clear errors, other layouts."""
import json

import pytest
import torch
from safetensors.torch import save_file

from vidgraph.nodes.svd.checkpoint import (
    load_checkpoint, load_clip_vision, load_diffusers_folder, load_unet, load_vae,
)
from vidgraph.nodes.weights import CheckpointError, SafetensorsFile
from vidgraph.nodes.svd.denoiser import micro_conditioning
from vidgraph.nodes.svd.tiny import TINY_CLIP, TINY_UNET, TINY_VAE, tiny_state_dict, write_tiny_checkpoint

U = "model.diffusion_model."


@pytest.fixture(scope="module")
def tiny_sd():
    return tiny_state_dict(seed=0, dtype=torch.float16)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "svd_tiny.safetensors", seed=0)


def unet_inputs(frames=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(frames, 8, size, size, generator=g), torch.full((frames,), 0.3),
            torch.randn(frames, 1, TINY_UNET.context_dim, generator=g),
            micro_conditioning(6, 127, 0.0).expand(frames, -1))


def test_tiny_checkpoint_is_small_deterministic_and_in_the_real_layout(tiny_sd, tiny_file):
    import os
    assert os.path.getsize(tiny_file) < 8_000_000
    prefixes = {k.split(".")[0] for k in tiny_sd}
    assert prefixes == {"model", "first_stage_model", "conditioner"}
    again = tiny_state_dict(seed=0)
    assert all(torch.equal(again[k], v) for k, v in tiny_sd.items())
    assert not torch.equal(tiny_state_dict(seed=1)[U + "out.2.weight"], tiny_sd[U + "out.2.weight"])


def test_single_file_loads_with_detected_configs_and_exact_values(tiny_sd, tiny_file):
    models = load_checkpoint(tiny_file)
    assert models.variant == "svd"
    assert models.configs == {"unet": TINY_UNET, "vae": TINY_VAE, "clip_vision": TINY_CLIP}
    assert models.ignored_keys == 1  # the OpenCLIP text-tower leftover
    assert models.unet.out[2].weight.dtype == torch.float32
    assert torch.equal(models.unet.out[2].weight, tiny_sd[U + "out.2.weight"].float())
    assert torch.equal(models.vae.decoder.conv_in.weight, tiny_sd["first_stage_model.decoder.conv_in.weight"].float())
    assert not any(p.is_meta for p in models.unet.parameters())
    assert not any(p.requires_grad for p in models.unet.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp32_and_bf16_files_load(tmp_path, dtype):
    path = write_tiny_checkpoint(tmp_path / "m.safetensors", seed=2, dtype=dtype)
    models = load_checkpoint(path)
    sd = tiny_state_dict(seed=2, dtype=dtype)
    assert torch.equal(models.unet.time_embed[0].weight, sd[U + "time_embed.0.weight"].float())


def test_low_memory_mode_keeps_16_bit_weights_and_computes_the_same(tiny_file):
    full = load_checkpoint(tiny_file)
    lean = load_checkpoint(tiny_file, low_memory=True)
    assert lean.unet.out[2].weight.dtype == torch.float16
    assert full.unet.out[2].weight.dtype == torch.float32  # the UNet runs every step: fp32 unless asked
    args = unet_inputs()
    with torch.no_grad():
        a = full.unet(*args, num_video_frames=2)
        b = lean.unet(*args, num_video_frames=2)
    assert b.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-6)


def rewrite(tmp_path, sd, name="bad.safetensors"):
    path = tmp_path / name
    save_file(sd, str(path))
    return path


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    del sd[U + "out.2.bias"]
    sd[U + "input_blocks.1.0.emb_layers.1.weight"] = torch.zeros(3, 3, dtype=torch.float16)
    sd[U + "input_blocks.1.0.extra.weight"] = torch.zeros(2, dtype=torch.float16)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(rewrite(tmp_path, sd))
    message = str(error.value)
    assert f"missing (1): {U}out.2.bias" in message
    assert f"unexpected (1): {U}input_blocks.1.0.extra.weight" in message
    assert f"wrong shape (1): {U}input_blocks.1.0.emb_layers.1.weight [3, 3] (expected [32, 128])" in message
    assert "bad.safetensors" in message


def test_unknown_prefix_is_an_error_but_known_leftovers_are_ignored(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    sd["conditioner.embedders.3.encoder.quant_conv.weight"] = torch.zeros(8, 8, 1, 1, dtype=torch.float16)
    sd["conditioner.embedders.0.open_clip.model.text_projection"] = torch.zeros(4, 4, dtype=torch.float16)
    assert load_checkpoint(rewrite(tmp_path, sd)).ignored_keys == 3
    sd["model_ema.decay"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys in an SVD checkpoint \(1\): model_ema.decay"):
        load_checkpoint(rewrite(tmp_path, sd, "ema.safetensors"))


def test_truncated_and_corrupt_files_give_clear_errors(tmp_path, tiny_file):
    data = open(tiny_file, "rb").read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated file"):
        load_checkpoint(cut)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_checkpoint(garbage)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_checkpoint(huge)
    header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    bad = tmp_path / "badsize.safetensors"
    bad.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match="needs 16 bytes, offsets give 8"):
        SafetensorsFile(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_pickle_files_need_explicit_permission(tmp_path, tiny_sd):
    path = tmp_path / "svd.ckpt"
    torch.save({"state_dict": tiny_sd}, path)
    with pytest.raises(CheckpointError, match="pickle-based checkpoints .* refused"):
        load_checkpoint(path)
    models = load_checkpoint(path, allow_pickle=True)
    assert models.configs["unet"] == TINY_UNET
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": object()}}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(evil, allow_pickle=True)


def test_standalone_unet_vae_and_clip_files(tmp_path, tiny_sd):
    def part(prefix, strip=True):
        return {(k[len(prefix):] if strip else k): v for k, v in tiny_sd.items() if k.startswith(prefix)}
    unet = load_unet(rewrite(tmp_path, part(U), "unet.safetensors"))
    assert unet.config == TINY_UNET
    vae = load_vae(rewrite(tmp_path, part("first_stage_model."), "vae.safetensors"))
    assert vae.config == TINY_VAE
    clip = load_clip_vision(rewrite(tmp_path, part("conditioner.embedders.0.open_clip.model.visual."), "clip.safetensors"))
    assert clip.config.width == 64 and clip.config.output_dim == 64
    with pytest.raises(CheckpointError, match="looks like a VAE file"):
        load_checkpoint(tmp_path / "vae.safetensors")


def test_diffusers_folder(tmp_path, tiny_file):
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    from vidgraph.nodes.svd.convert import unet_key_map
    original = load_checkpoint(tiny_file)
    ref = diffusers.UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=768,
        cross_attention_dim=64, num_attention_heads=(1, 1), num_frames=2)
    mine = original.unet.state_dict()
    ref.load_state_dict({d: mine[o] for d, o in unet_key_map(ref.state_dict().keys()).items()})
    ref.save_pretrained(tmp_path / "svd" / "unet")
    vae = diffusers.AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32, 32), layers_per_block=2,
                                                 down_block_types=("DownEncoderBlock2D",) * 4)
    vae.save_pretrained(tmp_path / "svd" / "vae")
    clip = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
        image_size=224, patch_size=14, projection_dim=64))
    clip.save_pretrained(tmp_path / "svd" / "image_encoder")
    models = load_diffusers_folder(tmp_path / "svd")
    assert models.configs["unet"] == TINY_UNET
    assert models.configs["vae"].ch_mult == (1, 1, 1, 1)
    assert models.configs["clip_vision"].width == 64
    args = unet_inputs()
    with torch.no_grad():
        assert torch.equal(models.unet(*args, num_video_frames=2), original.unet(*args, num_video_frames=2))
    with pytest.raises(CheckpointError, match="no unet/ subfolder"):
        load_checkpoint(tmp_path)


def meta_source(layout):
    from vidgraph.nodes.weights import DictSource
    return DictSource({k: torch.empty(s, device="meta") for k, s in layout.items()}, "layout")


def loaded_keys(models):
    from vidgraph.nodes.svd.checkpoint import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
    keys = {}
    for prefix, module in ((UNET_PREFIX, models.unet), (VAE_PREFIX, models.vae), (CLIP_PREFIX, models.clip_vision)):
        keys.update({prefix + k: tuple(v.shape) for k, v in module.state_dict().items()})
    return keys


def test_full_size_svd_xt_loads_every_key_of_the_real_file_on_meta(shared_file, layout):
    """The loader's whole path (grouping, detection, building, key checks) on the 2,446 real keys."""
    from vidgraph.nodes.svd.checkpoint import group_keys, load_from_source
    from vidgraph.nodes.svd.unet import UNetConfig
    ref = layout(shared_file("reference/svd_keys.txt"))
    assert len(ref) == 2446
    groups = group_keys(ref)
    assert {g: len(k) for g, k in groups.items()} == {"unet": 1428, "vae": 372, "clip": 392, "ignored": 254, "unexpected": 0}
    # The ignorable keys are exactly the conditioner's legacy VAE copy and six OpenCLIP text-tower leftovers.
    legacy = [k for k in groups["ignored"] if k.startswith("conditioner.embedders.3.")]
    text = sorted(k.rsplit("model.", 1)[1] for k in groups["ignored"] if not k.startswith("conditioner.embedders.3."))
    assert len(legacy) == 248
    assert text == ["ln_final.bias", "ln_final.weight", "logit_scale", "positional_embedding", "text_projection",
                    "token_embedding.weight"]
    models = load_from_source(meta_source(ref), device="meta")
    assert models.variant == "svd" and models.ignored_keys == 254
    assert models.configs["unet"] == UNetConfig()
    assert models.configs["clip_vision"].layers == 32 and models.configs["clip_vision"].width == 1280
    mine = loaded_keys(models)
    assert len(mine) == 2446 - 254
    assert mine == {k: v for k, v in ref.items() if k not in set(groups["ignored"])}


def test_parity_small_layout_loads_as_channel_mult_1111_on_meta(shared_file, layout):
    from vidgraph.nodes.svd.checkpoint import load_from_source
    ref = layout(shared_file("tools/svd_layout_small.txt"))
    models = load_from_source(meta_source(ref), device="meta")
    assert models.configs["unet"].channel_mult == (1, 1, 1, 1)
    assert models.configs["vae"].ch == 128 and models.configs["vae"].temporal
    legacy_encoder = {k for k in ref if k.startswith("conditioner.embedders.3.encoder.encoder.")}
    assert models.ignored_keys == len(legacy_encoder) == 106
    assert loaded_keys(models) == {k: v for k, v in ref.items() if k not in legacy_encoder}


def test_run_once_models_keep_16_bit_weights_and_compute_exactly_as_fp32(tiny_file):
    """VAE and CLIP vision run once per prompt: a 16-bit file stays 16-bit in memory, and since
    widening is exact, they compute exactly what fp32 copies of the weights compute."""
    models = load_checkpoint(tiny_file)
    for module in (models.vae, models.clip_vision):
        assert {p.dtype for p in module.parameters()} == {torch.float16}
        assert module.dtype == torch.float32
    widened = load_checkpoint(tiny_file)
    for module in (widened.vae, widened.clip_vision):
        module.float()
        module.compute_dtype = None
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    image = torch.rand(1, 64, 80, 3)
    with torch.no_grad():
        assert torch.equal(models.vae.encode(pixels), widened.vae.encode(pixels))
        latent = widened.vae.encode(pixels)
        assert torch.equal(models.vae.decode(latent), widened.vae.decode(latent))
        assert torch.equal(models.clip_vision.encode_image(image).image_embeds,
                           widened.clip_vision.encode_image(image).image_embeds)


def test_tiny_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    """`vidgraph demo` writes it once into models/checkpoints and skips it when it exists: an
    interrupted write must not leave a truncated file under the final name."""
    import vidgraph.nodes.svd.tiny as tiny

    def save_half_then_fail(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "save_file", save_half_then_fail)
    target = tmp_path / "tiny.safetensors"
    with pytest.raises(KeyboardInterrupt):
        write_tiny_checkpoint(target)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert write_tiny_checkpoint(target) == str(target) and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_an_interrupt_stops_a_load_between_tensors(tiny_file):
    """ComfyUI #1920: an interrupt while models load waits for the whole load; here it stops it."""
    from vidgraph.engine.context import NodeContext, use_context
    from vidgraph.engine.folders import Folders
    from vidgraph.engine.interrupt import Interrupted, InterruptFlag
    from vidgraph.engine.resources import ResourceCache

    flag = InterruptFlag()
    context = NodeContext("p", "1", "ImageOnlyCheckpointLoader", Folders(), ResourceCache(), {}, flag)
    reads = []
    original = SafetensorsFile.read

    def counting_read(self, key, *args, **kwargs):
        reads.append(key)
        if len(reads) == 5:
            flag.set()  # the user presses cancel while the UNet streams in
        return original(self, key, *args, **kwargs)

    SafetensorsFile.read = counting_read
    try:
        with use_context(context), pytest.raises(Interrupted):
            load_checkpoint(tiny_file)
    finally:
        SafetensorsFile.read = original
    total = len(SafetensorsFile(tiny_file).keys())
    assert len(reads) < 10 < total  # stopped within a tensor or two (one is read ahead)
    load_checkpoint(tiny_file)  # outside a node (no context) nothing is checked


def test_cast_layers_run_inside_and_then_outside_inference_mode():
    """The widening scratch buffer is shared by every cast layer of a thread: one first made under
    inference_mode (a VAE encode) must still take writes under no_grad (the samplers)."""
    from vidgraph.nodes.svd import casting
    from vidgraph.nodes.svd.casting import cast_on_forward

    casting._scratch.__dict__.clear()  # this thread's buffers are made afresh, under inference_mode
    layer = cast_on_forward(torch.nn.Linear(8, 8).half())
    x = torch.randn(2, 8)
    with torch.inference_mode():
        inside = layer(x)
    with torch.no_grad():
        outside = layer(x)
    assert outside.dtype == torch.float32 and torch.equal(inside, outside)


def test_fp32_compute_from_a_16_bit_file_keeps_the_lowest_stage_16_bit_and_computes_the_same(tiny_file):
    """The lowest-resolution blocks keep the file's fp16 weights and widen them as they run; the rest
    is fp32. The UNet's output is bitwise that of the same weights all in fp32."""
    import copy

    unet = load_checkpoint(tiny_file).unet
    dtypes = {name: p.dtype for name, p in unet.named_parameters()}
    lowest = [name for name in dtypes if name.startswith(("middle_block.", "output_blocks.0."))]
    assert lowest and all(dtypes[name] == torch.float16 for name in lowest)
    assert dtypes["input_blocks.0.0.weight"] == torch.float32 and dtypes["out.2.weight"] == torch.float32
    reference = copy.deepcopy(unet).float()
    cfg = unet.config
    torch.manual_seed(0)
    x = torch.randn(2, cfg.in_channels, 8, 8)
    t = torch.tensor([0.3, 0.3])
    context = torch.randn(2, 1, cfg.context_dim)
    y = torch.randn(2, cfg.adm_in_channels)
    with torch.no_grad():
        assert torch.equal(unet(x, t, context, y, 2), reference(x, t, context, y, 2))
    full = load_checkpoint(tiny_file, low_memory=True).unet
    assert {p.dtype for p in full.parameters()} == {torch.float16}  # low-memory: everything stays 16-bit
