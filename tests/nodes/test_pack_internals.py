"""ComfyUI's model internals for packs (nodes/comfy_internals.py, engine/compat/stand_ins.py),
through a small pack of our own (tests/fixtures_packs/comfy_internals_pack)."""
import contextlib
from pathlib import Path

import pytest
import torch

from vidgraph.engine.compat.stand_ins import is_stand_in
from vidgraph.engine.executor import Executor
from vidgraph.runtime import build_folders, build_registry

PACKS = Path(__file__).resolve().parents[1] / "fixtures_packs"


@pytest.fixture
def internals(tmp_path):
    folders = build_folders(tmp_path)
    folders.ensure_dirs()
    registry = build_registry(folders, ("vidgraph.nodes",), [], entry_points=False, report=None)
    registry.load_pack_path(PACKS / "comfy_internals_pack")
    assert not registry.load_errors, registry.load_errors
    return registry


def test_stand_ins_import_and_real_faces_are_real(internals):
    import comfy_internals_pack as pack
    from comfy.model_patcher import ModelPatcher
    facts = pack.INTERNALS_FACTS
    assert is_stand_in(facts["attention"]) and is_stand_in(facts["hooks"]) and is_stand_in(facts["cond_batch"])
    assert not is_stand_in(facts["guider"])
    assert facts["temporal_blocks"] == {"time_mixer.weight"}
    assert "attn1.to_q.weight" in facts["blocks"] and "ff.net.2.bias" in facts["blocks"] and len(facts["blocks"]) == 20
    assert facts["sampling_types"]["eps"].value == 1 and is_stand_in(facts["sampling_types"]["lcm"])
    assert issubclass(facts["patcher"], ModelPatcher) and not is_stand_in(facts["patcher"])
    import comfy.model_management
    import comfy.utils
    assert not hasattr(comfy.utils, "no_such_comfy_name")   # only ComfyUI's names get stand-ins
    assert not hasattr(comfy.model_management, "no_such_comfy_name")
    with pytest.raises(ImportError):
        import comfy_aimdo  # noqa: F401  (other distributions are never stood in for)


def test_the_pack_routes_added_to_the_app_at_import_are_recorded(internals):
    from server import PromptServer
    statics = [entry for entry in PromptServer.instance.routes.routes if entry[0] == "STATIC"]
    assert [entry[1] for entry in statics] == ["/internals_static"]


@pytest.mark.parametrize("name, expected", [
    ("SD15", lambda x: x * 0.18215),
    ("SDXL", lambda x: x * 0.13025),
])
def test_latent_formats_scale_as_comfyui(internals, name, expected):
    samples = torch.randn(1, 4, 3, 3)
    scale_in, cast = internals.classes["InternalsScaleIn"](), internals.classes["InternalsCastLinear"]()
    (scaled,) = scale_in.run({"samples": samples}, name)
    assert torch.allclose(scaled["samples"], expected(samples))
    (cast_back,) = cast.run(scaled)   # an identity fp16 layer run in the input's float32
    assert cast_back["samples"].dtype == torch.float32
    assert torch.allclose(cast_back["samples"], scaled["samples"], atol=1e-3)
    import comfy.latent_formats
    assert torch.allclose(getattr(comfy.latent_formats, name)().process_out(scaled["samples"]), samples, atol=1e-6)


def test_wan21_normalises_each_channel_and_round_trips():
    from vidgraph.nodes.comfy_internals import Wan21
    latent = torch.randn(1, 16, 2, 3, 3)
    fmt = Wan21()
    assert torch.allclose(fmt.process_out(fmt.process_in(latent)), latent, atol=1e-5)
    assert torch.allclose(fmt.process_in(torch.full_like(latent, -0.7571))[:, 0], torch.zeros(1, 2, 3, 3), atol=1e-6)


def test_manual_cast_layers_compute_in_the_input_dtype():
    from vidgraph.nodes.comfy_internals import disable_weight_init, manual_cast, pick_operations
    layer = manual_cast.Linear(3, 2, dtype=torch.float16)
    with torch.no_grad():   # ComfyUI's layers skip weight init: weights are always loaded
        layer.weight.copy_(torch.randn(2, 3))
        layer.bias.copy_(torch.randn(2))
    x = torch.randn(5, 3, dtype=torch.float32)
    out = layer(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, x @ layer.weight.float().T + layer.bias.float(), atol=1e-6)
    assert pick_operations(torch.float16, torch.float32) is manual_cast
    assert pick_operations(torch.float32, torch.float32) is disable_weight_init
    conv = disable_weight_init.conv_nd(2, 1, 1, 1)
    assert isinstance(conv, torch.nn.Conv2d) and not conv.comfy_cast_weights


def test_a_stand_in_fails_when_the_node_runs_and_names_it(internals):
    prompt = {"1": {"class_type": "InternalsAdvancedControl", "inputs": {"strength": 1.0}}}
    result = Executor(internals).run(prompt)
    assert result.status == "error"
    message = str(result.error)
    assert "comfy.controlnet.ControlBase is not available in vidgraph" in message
    assert "AdvancedControl" in message


def test_a_v3_node_makes_vidgraph_video_through_comfy_api_types(internals):
    from vidgraph.nodes.video import Video
    images = torch.rand(3, 8, 8, 3)
    assert internals.classes["InternalsVideo"].INPUT_TYPES()["required"]["format"][0] == ["auto", "mp4"]
    cls = internals.classes["InternalsVideo"]
    answer = getattr(cls(), cls.FUNCTION)(images=images, format="mp4")
    (video,) = answer["result"] if isinstance(answer, dict) else answer
    assert isinstance(video, Video) and video.frame_rate == 12
    assert torch.equal(video.get_components().images, images)


def test_a_v3_schema_that_fails_fails_its_pack_with_the_reason(internals):
    from comfy_api.latest import io

    class Broken(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="Broken", inputs=[io.NoSuchV3Type.Input("x")])

    assert internals.register_pack("broken_pack", {"Broken": Broken}) is False
    (error,) = internals.load_errors
    assert error.pack == "broken_pack" and "NoSuchV3Type" in error.reason and "Broken" not in internals.classes


def test_whole_stand_in_modules_answer_public_names_only(internals):
    import comfy_extras.nodes_hooks as hooks
    assert is_stand_in(hooks) and is_stand_in(hooks.CreateHookLora)
    with pytest.raises(AttributeError):
        hooks._private
    with pytest.raises(NotImplementedError, match="comfy_extras.nodes_hooks.CreateHookLora is not available"):
        hooks.CreateHookLora()


@pytest.fixture
def tiny_sd(tmp_path):
    """A tiny random-weight SD 1.5 checkpoint, loaded: (folders, context, model, clip)."""
    from vidgraph.engine.context import NodeContext
    from vidgraph.engine.folders import Folders
    from vidgraph.engine.resources import ResourceCache
    from vidgraph.nodes.loaders import CheckpointLoaderSimple
    from vidgraph.nodes.sd.tiny import write_tiny_sd_checkpoint

    folders = Folders(base_dir=tmp_path / "tiny")
    folders.ensure_dirs()
    (folders.models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_tiny_sd_checkpoint(folders.models_dir / "checkpoints" / "tiny.safetensors", "sd1", dtype=torch.float32)
    context = NodeContext("p", "1", "CheckpointLoaderSimple", folders, ResourceCache(), {"device": "cpu", "previews": False})
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny.safetensors", context)
    return folders, context, model, clip


def test_comfy_lora_faces_patch_as_vidgraph_lora_does(tiny_sd, internals):
    from vidgraph.engine.context import use_context
    import comfy.lora
    import comfy.sd

    folders, context, model, clip = tiny_sd
    path = "input_blocks.1.1.proj_in"
    weight = model.network.module.state_dict()[path + ".weight"]
    torch.manual_seed(0)
    base = "lora_unet_" + path.replace(".", "_")
    lora = {f"{base}.lora_up.weight": torch.randn(weight.shape[0], 2),
            f"{base}.lora_down.weight": torch.randn(2, weight.shape[1])}

    patched, same_clip = comfy.sd.load_lora_for_models(model, clip, lora, 0.5, 1.0)
    assert patched is not model and same_clip is clip   # nothing matched the text encoder
    keys = comfy.lora.model_lora_keys_unet(model)
    assert keys[base] == f"diffusion_model.{path}.weight"
    assert "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1" in comfy.lora.model_lora_keys_clip(clip)
    patches = comfy.lora.load_lora(lora, keys)
    twin = model.clone()
    assert twin.add_patches(patches, 0.5) == [f"diffusion_model.{path}.weight"]
    expected = weight + 0.5 * (lora[f"{base}.lora_up.weight"] @ lora[f"{base}.lora_down.weight"]).reshape(weight.shape)
    for candidate in (patched, twin):
        with candidate.active(lambda module: contextlib.nullcontext()):
            assert torch.allclose(model.network.module.state_dict()[path + ".weight"], expected, atol=1e-5)
    assert torch.equal(model.network.module.state_dict()[path + ".weight"], weight)

    from safetensors.torch import save_file
    (folders.models_dir / "loras").mkdir(parents=True, exist_ok=True)
    save_file(lora, str(folders.models_dir / "loras" / "one.safetensors"))
    node = internals.classes["InternalsLoraThroughCore"]()
    with use_context(context):
        through_core, core_clip = node.run(model, clip, "one.safetensors")
    assert core_clip is clip and set(through_core.weight_patches) == set(patched.weight_patches)


def test_an_optional_section_claiming_every_name_gets_undeclared_constants(internals):
    prompt = {"1": {"class_type": "InternalsFlexible",
                    "inputs": {"base": 3, "lora_1": {"on": True, "lora": "x.safetensors", "strength": 0.5}}}}
    result = Executor(internals).run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["1"]["text"] == [repr((3, [("lora_1", {"on": True, "lora": "x.safetensors", "strength": 0.5})]))]
    plain = {"1": {"class_type": "PreviewAny", "inputs": {"source": "a", "undeclared": 5}}}
    assert Executor(internals).run(plain).status == "success"   # elsewhere undeclared constants are dropped


@pytest.mark.usefixtures("one_torch_thread")
def test_common_ksampler_is_ksampler_and_ksampler_advanced(tiny_sd, internals):
    from vidgraph.engine.context import use_context
    from vidgraph.nodes.ksampler import KSampler, KSamplerAdvanced
    from vidgraph.nodes.text_conditioning import CLIPTextEncode
    import nodes

    _, context, model, clip = tiny_sd
    positive, negative = (CLIPTextEncode().encode(text, clip, context)[0] for text in ("a cat", ""))
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    args = (model, 3, 3, 5.0, "euler", "normal", positive, negative, latent)
    with use_context(context):
        (plain,) = nodes.common_ksampler(*args, denoise=0.7)
        (partial,) = nodes.common_ksampler(*args, disable_noise=True, start_step=1, last_step=2, force_full_denoise=True)
    (expected_plain,) = KSampler().sample(*args, denoise=0.7, context=context)
    (expected_partial,) = KSamplerAdvanced().sample(model, "disable", 3, 3, 5.0, "euler", "normal", positive, negative,
                                                    latent, 1, 2, "disable", context=context)
    assert torch.equal(plain["samples"], expected_plain["samples"])
    assert torch.equal(partial["samples"], expected_partial["samples"])
    assert not torch.equal(plain["samples"], partial["samples"])


def test_comfy_api_ui_previews_write_temp_images(internals):
    from PIL import Image
    result = Executor(internals).run({"1": {"class_type": "InternalsMaskPreview", "inputs": {"size": 6}}})
    assert result.status == "success", result.error
    (saved,) = result.outputs["1"]["images"]
    assert saved["type"] == "temp" and list(result.outputs["1"]["animated"]) == [False]
    with Image.open(internals.folders.temp_dir / saved["subfolder"] / saved["filename"]) as image:
        assert image.size == (6, 6) and image.getpixel((0, 0))[0] == 0 and image.getpixel((5, 5))[0] == 255


# -- the sampling API packs call (nodes/comfy_sampling_faces.py) and comfy.sd's loader ----------------

def _prompts(tiny_sd):
    from vidgraph.nodes.text_conditioning import CLIPTextEncode
    _, context, model, clip = tiny_sd
    return [CLIPTextEncode().encode(text, clip, context)[0] for text in ("a cat", "")]


@pytest.mark.usefixtures("one_torch_thread")
def test_comfy_sample_is_ksampler_with_the_packs_noise_and_reports_each_step(tiny_sd, internals):
    import comfy.sample
    from vidgraph.engine.context import use_context
    from vidgraph.nodes.ksampler import KSampler

    _, context, model, _ = tiny_sd
    positive, negative = _prompts(tiny_sd)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    noise = comfy.sample.prepare_noise(latent["samples"], 3)
    seen = []
    with use_context(context):
        out = comfy.sample.sample(model, noise, 3, 5.0, "euler", "normal", positive, negative, latent["samples"],
                                  denoise=0.7, callback=lambda step, x0, x, total: seen.append((step, total)), seed=3)
        unchanged = comfy.sample.sample(model, noise, 3, 5.0, "euler", "normal", positive, negative,
                                        latent["samples"], start_step=3)
    (expected,) = KSampler().sample(model, 3, 3, 5.0, "euler", "normal", positive, negative, latent, denoise=0.7,
                                    context=context)
    assert torch.equal(out, expected["samples"])
    assert seen == [(0, 3), (1, 3), (2, 3)]
    assert torch.equal(unchanged, latent["samples"])   # nothing left to sample


@pytest.mark.usefixtures("one_torch_thread")
def test_a_packs_k_diffusion_sampler_runs_through_ksampler_face(tiny_sd, internals):
    import comfy.sample
    from comfy.samplers import KSAMPLER
    from vidgraph.engine.context import use_context

    def pack_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, stretch=1.0):
        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * x.new_ones([x.shape[0]]), **(extra_args or {}))
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i]) * stretch
        return x

    _, context, model, _ = tiny_sd
    positive, negative = _prompts(tiny_sd)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    noise = comfy.sample.prepare_noise(latent, 5)
    sigmas = torch.tensor([14.6, 3.0, 0.6, 0.0])
    with use_context(context):
        ours = comfy.sample.sample(model, noise, 3, 4.0, "euler", "normal", positive, negative, latent, sigmas=sigmas)
        theirs = comfy.sample.sample_custom(model, noise, 4.0, KSAMPLER(pack_euler), sigmas, positive, negative, latent)
        stretched = comfy.sample.sample_custom(model, noise, 4.0, KSAMPLER(pack_euler, {"stretch": 0.5}), sigmas,
                                               positive, negative, latent)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(theirs, stretched, atol=1e-2)   # the pack's options reach its function


@pytest.mark.usefixtures("one_torch_thread")
def test_a_packs_cfg_guider_subclass_steers_each_step(tiny_sd, internals):
    from vidgraph.nodes.custom_sampling import RandomNoiseSource, Sampler, SamplerCustomAdvanced
    from vidgraph.nodes.guidance import Guider

    _, context, model, _ = tiny_sd
    positive, negative = _prompts(tiny_sd)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    sigmas = torch.tensor([14.6, 3.0, 0.6, 0.0])
    scheduled = internals.classes["InternalsScheduledGuidance"]()

    def run(guider):
        return SamplerCustomAdvanced().sample(RandomNoiseSource(7), guider, Sampler("euler"), sigmas, latent,
                                              context=context)[0]["samples"]

    everywhere, = scheduled.run(model, positive, negative, 5.0, 0.0, 1.0)
    nowhere, = scheduled.run(model, positive, negative, 5.0, 2.0, 2.0)
    assert torch.equal(run(everywhere), run(Guider(model, positive, negative, 5.0)))
    assert everywhere.steps_seen == [0, 1, 2]   # predict_noise saw the run's schedule
    assert torch.equal(run(nowhere), run(Guider(model, positive, negative, 1.0)))
    assert not torch.allclose(run(everywhere), run(nowhere), atol=1e-3)


def test_load_checkpoint_guess_config_is_the_checkpoint_loader(tiny_sd, internals):
    import comfy.sd
    from vidgraph.engine.context import use_context
    from vidgraph.nodes.common import NodeInputError

    folders, context, model, clip = tiny_sd
    path = folders.models_dir / "checkpoints" / "tiny.safetensors"
    with use_context(context):
        loaded = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True,
                                                       embedding_directory=[])
        bare = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=False, output_model=False)
        (folders.models_dir / "checkpoints" / "junk.safetensors").write_bytes(b"not a checkpoint")
        with pytest.raises(NodeInputError) as error:
            comfy.sd.load_checkpoint_guess_config(str(folders.models_dir / "checkpoints" / "junk.safetensors"))
    assert loaded[0] is model and loaded[1] is clip and loaded[2] is not None and loaded[3] is None
    assert bare == (None, None, None, None)
    assert "ckpt_path" in str(error.value)


def test_comfy_sd_vae_and_clip_are_vidgraphs_own(tiny_sd, internals):
    import comfy.sd
    from vidgraph.nodes.loaders import CheckpointLoaderSimple

    folders, context, model, clip = tiny_sd
    _, _, vae = CheckpointLoaderSimple().load_checkpoint("tiny.safetensors", context)
    assert isinstance(vae, comfy.sd.VAE) and isinstance(clip, comfy.sd.CLIP)
    assert not isinstance(clip, comfy.sd.VAE) and not isinstance(model, comfy.sd.CLIP)
    rebuilt = comfy.sd.VAE(sd=vae.state_dict())
    assert isinstance(rebuilt, comfy.sd.VAE) and rebuilt is not vae
    pixels = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.allclose(rebuilt.encode(pixels), vae.encode(pixels), atol=1e-5)
    with pytest.raises(NotImplementedError, match="CLIPLoader"):
        comfy.sd.CLIP()


def test_model_patcher_model_is_what_packs_read_off_comfyuis_base_model(tiny_sd, internals):
    _, _, model, _ = tiny_sd
    base = model.model
    assert base.latent_format is model.latent_format and base.model_sampling is model.sampling
    assert base.diffusion_model is model.network.module and base.get_dtype() == torch.float32
