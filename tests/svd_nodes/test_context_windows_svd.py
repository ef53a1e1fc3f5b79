"""ContextWindowsManual on SVD: ComfyUI's inputs (0.3.64's and the newest), a workflow using it runs, the
windows really split the UNet's calls (along frames, or along the width), one window as long as the clip
is the plain sampler exactly, and the MODEL-patch form (model.Model + Guider) behaves the same."""
import pytest
import torch

from svd_nodes_support import CHECKPOINT, small_prompt
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.context_windows import ContextWindows, windowed_rows
from vidgraph.nodes.long_video import ContextWindowsManual

COMFY_INPUTS = ["model", "context_length", "context_overlap", "context_schedule", "context_stride",
                "closed_loop", "fuse_method", "dim"]
# what later ComfyUI versions added, in their order (comfy_extras/nodes_context_windows.py)
NEWER_INPUTS = ["freenoise", "cond_retain_index_list", "split_conds_to_windows", "latent_retain_index_list",
                "causal_window_fix"]


def windows_node(model_link=("1", 0), **overrides):
    inputs = {"model": list(model_link), "context_length": 4, "context_overlap": 1,
              "context_schedule": "standard_static", "context_stride": 1, "closed_loop": False,
              "fuse_method": "pyramid", "dim": 0, **overrides}
    return {"class_type": "ContextWindowsManual", "inputs": inputs}


def test_inputs_are_comfyuis():
    declared = ContextWindowsManual.INPUT_TYPES()
    assert list(declared["required"]) == COMFY_INPUTS and list(declared["optional"]) == NEWER_INPUTS
    assert declared["optional"]["causal_window_fix"][1]["default"] is True
    assert declared["required"]["context_schedule"][0] == [
        "standard_static", "standard_uniform", "looped_uniform", "batched"]
    assert declared["required"]["fuse_method"][0] == ["pyramid", "relative", "flat", "overlap-linear"]


def test_bad_settings_name_the_input(tiny_models):
    node = ContextWindowsManual()
    args = dict(context_length=4, context_overlap=1, context_schedule="standard_static", context_stride=1,
                closed_loop=False, fuse_method="pyramid", dim=0)
    for change, name in (({"context_overlap": 4}, "context_overlap"), ({"dim": 1}, "dim"), ({"dim": 4}, "dim"),
                         ({"fuse_method": "mean"}, "fuse_method"), ({"context_length": 0}, "context_length"),
                         ({"cond_retain_index_list": "0, x"}, "cond_retain_index_list"),
                         ({"latent_retain_index_list": "-1"}, "latent_retain_index_list")):
        with pytest.raises(NodeInputError, match=f"^ContextWindowsManual: input '{name}'"):
            node.apply(tiny_models.model, **{**args, **change})
    with pytest.raises(NodeInputError, match="input 'model'"):
        node.apply("not a model", **args)
    (patched,) = node.apply(tiny_models.model, **args)
    assert patched.transformer_options["context_windows"] == ContextWindows(4, 1)
    (patched,) = node.apply(tiny_models.model, **{**args, "dim": 3}, cond_retain_index_list="0, 2",
                            latent_retain_index_list=" 1", split_conds_to_windows=True, causal_window_fix=False)
    assert patched.transformer_options["context_windows"] == ContextWindows(
        4, 1, dim=3, cond_retain=(0, 2), split_conds=True, latent_retain=(1,), causal_window_fix=False)
    assert "context_windows" not in tiny_models.model.transformer_options and not tiny_models.model.patches.model_wrappers


@pytest.mark.parametrize("overrides", [
    {}, {"context_schedule": "looped_uniform", "closed_loop": True, "fuse_method": "relative"},
    {"context_schedule": "standard_uniform", "context_stride": 2, "fuse_method": "overlap-linear", "freenoise": True},
    {"context_schedule": "batched", "context_overlap": 0, "fuse_method": "flat", "causal_window_fix": False},
    {"freenoise": True, "cond_retain_index_list": "0", "split_conds_to_windows": True,
     "latent_retain_index_list": "0", "causal_window_fix": True},   # the newest ComfyUI's inputs
])
def test_a_comfyui_workflow_with_context_windows_runs(svd_env, overrides, monkeypatch):
    """7 frames in windows of 4: every UNet call sees 4 frames (cond + uncond rows; 5 with the causal fix's
    frame in front), never 7."""
    from vidgraph.nodes.svd import unet as unet_module
    prompt = small_prompt(frames=7, save_frames=False)
    prompt["11"] = windows_node(**overrides)
    prompt["4"]["inputs"]["model"] = ["11", 0]
    seen = []
    forward = unet_module.VideoUNet.forward

    def spy(self, x, timesteps, context, y, num_video_frames, *args, **kwargs):
        seen.append((x.shape[0], num_video_frames))
        return forward(self, x, timesteps, context, y, num_video_frames, *args, **kwargs)
    monkeypatch.setattr(unet_module.VideoUNet, "forward", spy)
    result = svd_env.executor().run(prompt)
    assert result.status == "success", result.error
    window = 4 + (overrides.get("causal_window_fix", True))
    assert seen and all(frames <= window for _, frames in seen), seen
    assert any(frames == window for _, frames in seen), seen
    assert all(rows in (frames, 2 * frames) for rows, frames in seen)


def test_one_window_as_long_as_the_clip_is_the_plain_denoiser_exactly(tiny_models, demo_image):
    from vidgraph.nodes.conditioning import SVD_img2vid_Conditioning
    context = tiny_models.env.context()
    positive, negative, latent = SVD_img2vid_Conditioning().encode(
        tiny_models.clip_vision, demo_image, tiny_models.vae, 64, 64, 6, 127, 6, 0.0, context)
    model = tiny_models.model
    pos, neg = (model.network.conditioning(*c[0], (6, 4, 8, 8), "cpu") for c in (positive, negative))
    rows = {name: torch.cat([pos[name], neg[name]]) for name in ("context", "concat", "y")}
    x = torch.randn(12, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 10
    sigma = torch.full((12,), 10.0)
    with torch.no_grad():
        plain = model.apply(x, sigma, {**rows, "num_video_frames": 6}, cond_or_uncond=[0, 1])

        def run(xr, sr, args, frames):
            return model.apply(xr, sr, {**args, "num_video_frames": frames}, cond_or_uncond=[0, 1])
        for method in ("pyramid", "relative", "flat", "overlap-linear"):
            one = windowed_rows(run, x, sigma, rows, 2, ContextWindows(length=6, overlap=2, fuse_method=method))
            assert torch.equal(one, plain)
        split = windowed_rows(run, x, sigma, rows, 2, ContextWindows(length=4, overlap=2))
    assert split.shape == plain.shape and not torch.equal(split, plain)


def test_context_length_of_the_clip_gives_the_plain_sampler_result(svd_env):
    plain_prompt = small_prompt(frames=5)
    windowed_prompt = small_prompt(frames=5)
    windowed_prompt["11"] = windows_node(context_length=5, context_overlap=2)
    windowed_prompt["4"]["inputs"]["model"] = ["11", 0]
    plain, windowed = (svd_env.executor().run(p) for p in (plain_prompt, windowed_prompt))
    assert plain.status == windowed.status == "success"
    assert (svd_env.frames(plain) == svd_env.frames(windowed)).all()


def test_the_model_patch_form_windows_each_network_call(tiny_checkpoint, demo_image, tiny_models):
    """On a model.Model (the MODEL contract): the model wrapper splits the batched call, the network
    sees the window's frame count, and one window as long as the clip changes nothing."""
    from vidgraph.nodes.conditioning import SVD_img2vid_Conditioning
    from vidgraph.nodes.guidance import Guider
    from vidgraph.nodes.sampling import get_sampler
    from vidgraph.nodes.svd.denoiser import svd_model
    context = tiny_models.env.context()
    positive, negative, latent = SVD_img2vid_Conditioning().encode(
        tiny_models.clip_vision, demo_image, tiny_models.vae, 64, 64, 6, 127, 6, 0.0, context)
    model = svd_model(tiny_models.model.network.module)
    noise = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = torch.tensor([20.0, 5.0, 1.0, 0.0])

    def sample(m):
        return Guider(m, positive, negative, 2.0).sample(get_sampler("euler"), noise, latent["samples"], sigmas, seed=1)
    plain = sample(model)
    node = ContextWindowsManual()
    args = dict(context_overlap=2, context_schedule="standard_uniform", context_stride=1, closed_loop=False,
                fuse_method="pyramid", dim=0)
    (whole,) = node.apply(model, context_length=6, **args)
    assert torch.equal(sample(whole), plain)
    frames_seen = []
    spied = model.clone()  # wrappers added first run innermost: this one sees each window's call
    spied.add_model_wrapper(lambda apply, a: frames_seen.append(a["c"]["num_video_frames"])
                            or apply(a["input"], a["timestep"], **a["c"]))
    (windowed,) = node.apply(spied, context_length=4, freenoise=True, causal_window_fix=False, **args)
    out = sample(windowed)
    assert out.shape == plain.shape and not torch.equal(out, plain) and torch.isfinite(out).all()
    assert frames_seen and set(frames_seen) == {4}
    assert model.patches.model_wrappers == [] and "noise_transforms" not in model.transformer_options


def test_spatial_windows_split_the_unets_calls_along_the_width(svd_env, monkeypatch):
    """dim 3: each UNet call sees a strip of the latent's width (with the causal fix's column in front),
    every frame of the clip, and the sampler's result keeps the clip's full size."""
    from vidgraph.nodes.svd import unet as unet_module
    prompt = small_prompt(frames=3, save_frames=False)
    prompt["11"] = windows_node(context_length=6, context_overlap=2, dim=3)
    prompt["4"]["inputs"]["model"] = ["11", 0]
    seen = []
    forward = unet_module.VideoUNet.forward

    def spy(self, x, timesteps, context, y, num_video_frames, *args, **kwargs):
        seen.append((tuple(x.shape), num_video_frames))
        return forward(self, x, timesteps, context, y, num_video_frames, *args, **kwargs)
    monkeypatch.setattr(unet_module.VideoUNet, "forward", spy)
    result = svd_env.executor().run(prompt)
    assert result.status == "success", result.error
    widths = {shape[-1] for shape, _ in seen}
    assert seen and max(widths) <= 7 and {frames for _, frames in seen} == {3}, seen


def test_split_conds_runs_one_entry_of_a_combined_conditioning_per_window(tiny_models, demo_image):
    """Two positive entries (ConditioningCombine, batched together): split windows give both cond chunks
    of a call the entry for the window's part of the clip; unsplit windows keep the two apart."""
    from vidgraph.nodes.conditioning import SVD_img2vid_Conditioning
    from vidgraph.nodes.guidance import Guider
    from vidgraph.nodes.sampling import get_sampler
    from vidgraph.nodes.svd.denoiser import svd_model
    context = tiny_models.env.context()
    positive, negative, latent = SVD_img2vid_Conditioning().encode(
        tiny_models.clip_vision, demo_image, tiny_models.vae, 64, 64, 6, 127, 6, 0.0, context)
    combined = positive + [[positive[0][0] * 0.5, positive[0][1]]]
    model = svd_model(tiny_models.model.network.module)
    noise = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    node = ContextWindowsManual()
    args = dict(context_length=4, context_overlap=2, context_schedule="standard_static", context_stride=1,
                closed_loop=False, fuse_method="pyramid", dim=0, causal_window_fix=False)
    outputs = {}
    for split in (False, True):
        chunks_seen = []   # per window call: how many different CLIP embeddings its chunks hold

        def distinct(c):
            per_chunk = c["context"].reshape(3, c["num_video_frames"], -1)
            return len({tuple(chunk[0].tolist()) for chunk in per_chunk})
        spied = model.clone()
        spied.add_model_wrapper(lambda apply, a: chunks_seen.append(distinct(a["c"]))
                                or apply(a["input"], a["timestep"], **a["c"]))
        (windowed,) = node.apply(spied, split_conds_to_windows=split, **args)
        outputs[split] = Guider(windowed, combined, negative, 2.0).sample(
            get_sampler("euler"), noise, latent["samples"], torch.tensor([20.0, 1.0, 0.0]), seed=1)
        assert set(chunks_seen) == ({2} if split else {3}), chunks_seen
    assert torch.isfinite(outputs[True]).all() and not torch.equal(outputs[True], outputs[False])
