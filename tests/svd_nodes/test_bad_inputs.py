"""Bad input gives a clear error naming the node and the input, at validation when it can, else at run."""
from __future__ import annotations

import struct
import zlib

import pytest
import torch
from safetensors.torch import save_file

from svd_nodes_support import CHECKPOINT, DEMO_IMAGE, small_prompt
from vidgraph.engine.validation import validate_prompt
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.ksampler import KSampler
from vidgraph.nodes.loaders import CLIPVisionLoader, ImageOnlyCheckpointLoader, UNETLoader, VAELoader
from vidgraph.nodes.sampling import UNSUPPORTED_SAMPLERS


def node_error(svd_env, prompt, node_id):
    """The one validation error of `node_id` (ComfyUI's node_errors entry)."""
    validation = validate_prompt(svd_env.registry, prompt)
    assert not validation.ok
    errors = validation.to_json()["node_errors"][node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def run_error(svd_env, prompt) -> dict:
    result = svd_env.executor().run(prompt)
    assert result.status == "error" and not result.invalid, result.error
    return result.error


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height with no pixel data behind it."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


# -- models ------------------------------------------------------------------------------------

def test_missing_checkpoint_fails_validation_listing_the_choices(svd_env):
    prompt = small_prompt()
    prompt["1"]["inputs"]["ckpt_name"] = "svd_xt.safetensors"
    error = node_error(svd_env, prompt, "1")
    assert error["type"] == "value_not_in_list"
    assert error["extra_info"]["input_name"] == "ckpt_name"
    assert "svd_xt.safetensors" in error["details"] and CHECKPOINT in error["details"]


@pytest.mark.parametrize("loader, method, folder, input_name, extra", [
    (ImageOnlyCheckpointLoader, "load_checkpoint", "checkpoints", "ckpt_name", {}),
    (VAELoader, "load_vae", "vae", "vae_name", {}),
    (CLIPVisionLoader, "load_clip", "clip_vision", "clip_name", {}),
    (UNETLoader, "load_unet", "diffusion_models", "unet_name", {"weight_dtype": "default"}),
])
def test_missing_model_file_names_the_folder_searched_and_its_files(svd_env, loader, method, folder,
                                                                      input_name, extra):
    (svd_env.folders.models_dir / folder).mkdir(parents=True, exist_ok=True)
    (svd_env.folders.models_dir / folder / "present.safetensors").write_bytes(b"x")
    with pytest.raises(NodeInputError) as caught:
        getattr(loader(), method)(**{input_name: "absent.safetensors"}, **extra, context=svd_env.context())
    message = str(caught.value)
    assert message.startswith(f"{loader.__name__}: input '{input_name}': ")
    assert "absent.safetensors" in message
    assert str(svd_env.folders.models_dir / folder) in message
    assert "present.safetensors" in message


def test_truncated_checkpoint_is_a_clear_loader_error(svd_env):
    data = svd_env.tiny_checkpoint.read_bytes()
    svd_env.put_checkpoint("truncated.safetensors", data[: len(data) // 2])
    prompt = small_prompt()
    prompt["1"]["inputs"]["ckpt_name"] = "truncated.safetensors"
    error = run_error(svd_env, prompt)
    assert error["node_id"] == "1" and error["node_type"] == "ImageOnlyCheckpointLoader"
    assert error["exception_message"].startswith("ImageOnlyCheckpointLoader: input 'ckpt_name': ")
    assert "truncated.safetensors" in error["exception_message"]


def test_garbage_checkpoint_is_a_clear_loader_error(svd_env):
    svd_env.put_checkpoint("garbage.safetensors", b"\xff" * 4096)
    with pytest.raises(NodeInputError) as caught:
        ImageOnlyCheckpointLoader().load_checkpoint("garbage.safetensors", svd_env.context())
    assert str(caught.value).startswith("ImageOnlyCheckpointLoader: input 'ckpt_name': ")


@pytest.mark.parametrize("tensors, says", [
    ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
      "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77)},
     "unexpected keys in an SVD checkpoint (1): cond_stage_model."),
    ({"weight": torch.zeros(2, 2)}, "not an SVD checkpoint: no model.diffusion_model.* keys"),
])
def test_non_svd_safetensors_says_what_is_missing(svd_env, tensors, says):
    save_file(tensors, str(svd_env.put_checkpoint("other_model.safetensors", b"")))
    prompt = small_prompt()
    prompt["1"]["inputs"]["ckpt_name"] = "other_model.safetensors"
    error = run_error(svd_env, prompt)
    assert error["node_type"] == "ImageOnlyCheckpointLoader"
    message = error["exception_message"]
    assert message.startswith("ImageOnlyCheckpointLoader: input 'ckpt_name': ")
    assert "other_model.safetensors" in message and says in message


# -- images ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, data", [
    ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
    ("not_an_image.png", b"hello, I am text"),
    ("zero.png", png_claiming(0, 0)),
    ("huge.png", png_claiming(30_000, 30_000)),
])
def test_bad_init_image_is_refused_by_load_image(svd_env, name, data):
    (svd_env.folders.input_dir / name).write_bytes(data)
    prompt = small_prompt()
    prompt["2"]["inputs"]["image"] = name
    result = svd_env.executor().run(prompt)
    assert result.status == "error"
    text = str(result.error)
    assert "LoadImage" in text and "image" in text and name in text
    if not result.invalid:
        assert result.error["node_id"] == "2"
        assert set(result.error["executed"]) <= {"1", "4"}  # nothing downstream of the image ran


def test_huge_image_is_refused_from_its_header_without_decoding(svd_env, monkeypatch):
    from PIL import ImageFile
    (svd_env.folders.input_dir / "huge.png").write_bytes(png_claiming(30_000, 30_000))

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    from vidgraph.nodes.images import LoadImage
    with pytest.raises(NodeInputError) as caught:
        LoadImage().load_image("huge.png", context=svd_env.context())
    assert str(caught.value).startswith("LoadImage: input 'image': ") and "too large" in str(caught.value)


# -- conditioning and sampler widgets ------------------------------------------------------------

@pytest.mark.parametrize("name, value", [("width", 60), ("height", 100)])
def test_size_not_multiple_of_8_fails_validation(svd_env, name, value):
    prompt = small_prompt()
    prompt["3"]["inputs"][name] = value
    error = node_error(svd_env, prompt, "3")
    assert error["type"] == "custom_validation_failed"
    assert name in error["details"] and "multiple of 8" in error["details"] and str(value) in error["details"]


def test_video_frames_zero_is_below_the_minimum(svd_env):
    prompt = small_prompt()
    prompt["3"]["inputs"]["video_frames"] = 0
    error = node_error(svd_env, prompt, "3")
    assert error["type"] == "value_smaller_than_min"
    assert error["extra_info"]["input_name"] == "video_frames"


def test_unknown_sampler_name_is_not_in_the_list(svd_env):
    prompt = small_prompt()
    prompt["5"]["inputs"]["sampler_name"] = "euler_magic"
    error = node_error(svd_env, prompt, "5")
    assert error["type"] == "value_not_in_list"
    assert error["extra_info"]["input_name"] == "sampler_name" and "euler_magic" in error["details"]


@pytest.mark.skipif(not UNSUPPORTED_SAMPLERS, reason="every ComfyUI sampler is implemented")
def test_listed_but_unimplemented_sampler_is_a_clear_error(tiny_models, svd_conditioning):
    positive, negative, latent = svd_conditioning
    with pytest.raises(NodeInputError) as caught:
        KSampler().sample(tiny_models.model, 1, 2, 2.0, UNSUPPORTED_SAMPLERS[0], "karras", positive, negative,
                          latent, context=tiny_models.env.context("KSampler"))
    assert str(caught.value).startswith("KSampler: input 'sampler_name': ")
    assert UNSUPPORTED_SAMPLERS[0] in str(caught.value)


def test_conditioning_made_at_another_size_is_resized_like_comfyui(tiny_models, svd_conditioning):
    positive, negative, _ = svd_conditioning
    larger = {"samples": torch.zeros(3, 4, 10, 8)}  # an 64x80 video for a 64x64 image conditioning
    out = KSampler().sample(tiny_models.model, 1, 1, 2.0, "euler", "karras", positive, negative, larger,
                            context=tiny_models.env.context("KSampler"))[0]["samples"]
    assert out.shape == (3, 4, 10, 8)


def test_text_conditioning_is_refused_by_the_svd_sampler(tiny_models, svd_conditioning):
    _, negative, latent = svd_conditioning
    text_like = [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}]]
    with pytest.raises(NodeInputError) as caught:
        KSampler().sample(tiny_models.model, 1, 2, 2.0, "euler", "karras", text_like, negative, latent,
                          context=tiny_models.env.context("KSampler"))
    assert str(caught.value).startswith("KSampler: input 'positive': ")
    assert "concat_latent_image" in str(caught.value)


def test_missing_checkpoint_at_run_time_names_folder(svd_env):
    """A file deleted between validation and the run: the loader's own error, not a traceback."""
    executor = svd_env.executor()
    prompt = small_prompt()
    (svd_env.folders.models_dir / "checkpoints" / CHECKPOINT).unlink()
    svd_env.put_checkpoint("other.safetensors", b"x")
    with pytest.raises(NodeInputError) as caught:
        ImageOnlyCheckpointLoader().load_checkpoint(CHECKPOINT, svd_env.context())
    assert "other.safetensors" in str(caught.value)
    assert executor.run(prompt).invalid  # and validation catches it before any node runs
    assert (svd_env.folders.input_dir / DEMO_IMAGE).exists()


# -- tensors of the wrong shape reach the model nodes (e.g. from a custom node) -----------------

def _node_error(call) -> str:
    with pytest.raises(NodeInputError) as caught:
        call()
    return str(caught.value)


def _encoder_errors(image, clip_vision, vae, context) -> list[str]:
    """The NodeInputError messages of the three nodes that encode an image, called with these inputs
    ("" for a node that accepts them)."""
    from vidgraph.nodes.conditioning import CLIPVisionEncode, SVD_img2vid_Conditioning
    from vidgraph.nodes.latents import VAEEncode

    def error(call):
        try:
            call()
        except NodeInputError as caught:
            return str(caught)
        return ""
    return [error(lambda: CLIPVisionEncode().encode(clip_vision, image, "center", context)),
            error(lambda: SVD_img2vid_Conditioning().encode(clip_vision, image, vae, 64, 64, 3, 127, 6, 0.0, context)),
            error(lambda: VAEEncode().encode(image, vae, context))]


@pytest.mark.parametrize("image", [torch.rand(1, 64, 64, 1), torch.rand(0, 64, 64, 3), torch.rand(64, 3)])
def test_image_encoders_name_their_image_input(tiny_models, image):
    clip_error, conditioning_error, vae_error = _encoder_errors(
        image, tiny_models.clip_vision, tiny_models.vae, tiny_models.env.context())
    assert clip_error.startswith("CLIPVisionEncode: input 'image': ")
    assert conditioning_error.startswith("SVD_img2vid_Conditioning: input 'init_image': ")
    assert vae_error.startswith("VAEEncode: input 'pixels': ")


@pytest.mark.parametrize("samples", [torch.rand(2, 8, 8, 8), torch.rand(0, 4, 8, 8)])
def test_vae_decode_names_a_latent_the_vae_cannot_take(tiny_models, samples):
    from vidgraph.nodes.latents import VAEDecode, VAEDecodeTiled
    ctx = tiny_models.env.context()
    assert _node_error(lambda: VAEDecode().decode({"samples": samples}, tiny_models.vae, ctx)).startswith(
        "VAEDecode: input 'samples': ")
    assert _node_error(lambda: VAEDecodeTiled().decode({"samples": samples}, tiny_models.vae, 512, 64, 64, 8,
                                                       ctx)).startswith("VAEDecodeTiled: input 'samples': ")


def test_model_nodes_name_a_model_of_the_wrong_kind(tiny_models, demo_image):
    from vidgraph.nodes.latents import VAEDecode
    m, ctx = tiny_models, tiny_models.env.context()
    clip_error, _, _ = _encoder_errors(demo_image, m.vae, m.vae, ctx)
    assert clip_error.startswith("CLIPVisionEncode: input 'clip_vision': ")
    _, conditioning_error, vae_error = _encoder_errors(demo_image, m.clip_vision, m.clip_vision, ctx)
    assert conditioning_error.startswith("SVD_img2vid_Conditioning: input 'vae': ")
    assert vae_error.startswith("VAEEncode: input 'vae': ")
    assert _node_error(lambda: VAEDecode().decode({"samples": torch.zeros(1, 4, 8, 8)}, m.clip_vision,
                                                  ctx)).startswith("VAEDecode: input 'vae': ")


def test_sampler_names_conditioning_and_latents_the_model_cannot_take(tiny_models, svd_conditioning):
    positive, negative, latent = svd_conditioning
    embedding, extra = positive[0]
    ctx = tiny_models.env.context("KSampler")

    def run(pos=positive, lat=latent):
        return KSampler().sample(tiny_models.model, 1, 1, 2.0, "euler", "karras", pos, negative, lat, context=ctx)

    assert _node_error(lambda: run(lat={"samples": torch.zeros(3, 8, 8, 8)})).startswith(
        "KSampler: input 'latent_image': ")
    assert _node_error(lambda: run(pos=[[torch.zeros(1, 1, 77), extra]])).startswith("KSampler: input 'positive': ")
    assert _node_error(lambda: run(pos=[["text", extra]])).startswith("KSampler: input 'positive': ")
    wide_concat = {**extra, "concat_latent_image": torch.zeros(1, 8, 8, 8)}
    assert _node_error(lambda: run(pos=[[embedding, wide_concat]])).startswith("KSampler: input 'positive': ")


def test_video_guidance_names_a_model_that_is_not_svd(tiny_models):
    from vidgraph.nodes.conditioning import VideoLinearCFGGuidance, VideoTriangleCFGGuidance
    for node in (VideoLinearCFGGuidance, VideoTriangleCFGGuidance):
        assert _node_error(lambda: node().patch(tiny_models.vae, 1.0)).startswith(f"{node.__name__}: input 'model': ")


def test_unknown_scheduler_at_run_time_names_the_input(tiny_models, svd_conditioning):
    from vidgraph.nodes.ksampler import KSamplerAdvanced
    positive, negative, latent = svd_conditioning
    ctx = tiny_models.env.context()
    assert _node_error(lambda: KSampler().sample(tiny_models.model, 1, 1, 2.0, "euler", "bogus", positive, negative,
                                                 latent, context=ctx)).startswith("KSampler: input 'scheduler': ")
    assert _node_error(lambda: KSamplerAdvanced().sample(
        tiny_models.model, "enable", 1, 1, 2.0, "euler", "bogus", positive, negative, latent, 0, 10000, "disable",
        context=ctx)).startswith("KSamplerAdvanced: input 'scheduler': ")


def test_svd_conditioning_refuses_a_video_latent_larger_than_the_free_memory(tiny_models, demo_image, monkeypatch):
    from vidgraph.nodes import model_management
    from vidgraph.nodes.conditioning import SVD_img2vid_Conditioning
    monkeypatch.setattr(model_management, "available_memory", lambda device: 1 << 20)
    assert _node_error(lambda: SVD_img2vid_Conditioning().encode(
        tiny_models.clip_vision, demo_image, tiny_models.vae, 64, 64, 4096, 127, 6, 0.0,
        tiny_models.env.context())).startswith("SVD_img2vid_Conditioning: input 'video_frames': ")
