"""diffusers pipeline folders as a second form: a folder that diffusers / transformers wrote from the weights
of a tiny single file loads (DiffusersLoader, ComfyUI's name and list of models/diffusers) into the same
models, and a graph gives the same latent as from the single file; v-prediction comes from the scheduler."""
import pytest
import torch

from vidgraph.engine.executor import Executor
from vidgraph.nodes.sd.checkpoint import load_diffusers_folder, load_sd_checkpoint
from vidgraph.nodes.sd.tiny import write_tiny_sd_checkpoint
from vidgraph.runtime import build_registry

from sd_shared import model_folders, write_diffusers_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FORMS = {"sd1": ("epsilon", "StableDiffusionPipeline"), "sd2": ("v_prediction", "StableDiffusionPipeline"),
         "sdxl": ("epsilon", "StableDiffusionXLPipeline"), "sdxl_refiner": ("epsilon", "StableDiffusionXLImg2ImgPipeline")}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folders = model_folders(tmp_path_factory.mktemp("sd-diffusers"))
    for family, (prediction, pipeline) in FORMS.items():
        single = write_tiny_sd_checkpoint(folders.models_dir / "checkpoints" / f"tiny_{family}.safetensors", family)
        write_diffusers_folder(load_sd_checkpoint(single), folders.models_dir / "diffusers" / "tiny" / family,
                               prediction, pipeline)
    return folders, build_registry(folders)


@pytest.mark.parametrize("family", sorted(FORMS))
def test_a_diffusers_folder_loads_the_same_models_as_the_single_file(env, family):
    folders, _ = env
    single = load_sd_checkpoint(folders.models_dir / "checkpoints" / f"tiny_{family}.safetensors")
    folder = load_diffusers_folder(folders.models_dir / "diffusers" / "tiny" / family)
    assert (folder.family, folder.prediction) == (single.family, single.prediction)
    assert type(folder.model.sampling) is type(single.model.sampling)
    ours, theirs = single.model.network.module.state_dict(), folder.model.network.module.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k].float(), theirs[k].float()) for k in ours)
    tokens = single.clip.tokenize("a (red:1.2) house")
    a, pa = single.clip.encode_from_tokens(tokens, return_pooled=True)
    b, pb = folder.clip.encode_from_tokens(folder.clip.tokenize("a (red:1.2) house"), return_pooled=True)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(pa, pb, atol=1e-6)
    v1, v2 = single.vae.state_dict(), folder.vae.state_dict()
    assert all(torch.equal(v1[k].float(), v2[k].float()) for k in v1)
    assert folder.vae.latent_space == ("sdxl" if family.startswith("sdxl") else "sd")


def graph(loader: dict, refiner: bool):
    encoder = ({"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {"ascore": 6.0, "width": 64, "height": 64,
                                                                       "text": "a house", "clip": ["1", 1]}}
               if refiner else {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["1", 1]}})
    return {"1": loader, "2": encoder,
            "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "4": {"class_type": "KSampler", "inputs": {
                "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0]}},
            "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
            "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_diffusers_loader_node_gives_the_single_file_s_image(env, family):
    folders, registry = env
    info = registry.object_info("DiffusersLoader")
    info = info.get("DiffusersLoader", info)
    assert f"tiny/{family}" in info["input"]["required"]["model_path"][0]
    executor = Executor(registry, folders, settings={"device": "cpu", "previews": False})
    from_file = executor.run(graph({"class_type": "CheckpointLoaderSimple",
                                    "inputs": {"ckpt_name": f"tiny_{family}.safetensors"}}, False))
    from_folder = executor.run(graph({"class_type": "DiffusersLoader", "inputs": {"model_path": f"tiny/{family}"}}, False))
    assert from_file.status == "success" and from_folder.status == "success", (from_file.error, from_folder.error)
    import numpy as np
    from PIL import Image

    def pixels(result):
        entry = result.outputs["6"]["images"][0]
        return np.asarray(Image.open(folders.temp_dir / entry["subfolder"] / entry["filename"])).astype(int)
    assert np.abs(pixels(from_file) - pixels(from_folder)).max() <= 1


def test_a_folder_that_is_not_a_pipeline_is_an_error_naming_the_input(env):
    folders, registry = env
    (folders.models_dir / "diffusers" / "broken" / "unet").mkdir(parents=True)
    (folders.models_dir / "diffusers" / "broken" / "model_index.json").write_text("{}")
    result = Executor(registry, folders, settings={"device": "cpu"}).run(
        {"1": {"class_type": "DiffusersLoader", "inputs": {"model_path": "broken"}},
         "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert result.status == "error"
    assert result.error["exception_message"].startswith("DiffusersLoader: input 'model_path': ")
    assert "diffusion_pytorch_model.safetensors" in result.error["exception_message"]
