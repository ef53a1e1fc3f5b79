"""Loading Stable Diffusion checkpoints (SD 1.x, SD 2.x, SDXL base and refiner) and text-encoder files.

The family comes from keys and shapes, never from the file name: the UNet's text width (768 SD 1.x,
1024 SD 2.x, 2048 SDXL, 1280 SDXL refiner) and which text towers are present. Like ComfyUI, an SD 2.x
UNet is taken for v-prediction when the spread of one late norm's bias says so (no key says it),
and a `v_pred` / `ztsnr` marker key switches v-prediction / zero-terminal-SNR on for any family.
Weights stream tensor by tensor (`nodes/weights.py`); text encoders and the VAE keep a 16-bit file's
weights in 16 bits and compute in fp32.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..svd import checkpoint as svd_checkpoint
from ..svd.casting import cast_on_forward
from ..svd.cpu_kernels import use_cpu_kernels
from ..weights import CheckpointError, DictSource, open_source, stream_into, widest_float_dtype
from . import clip_text
from .network import sd_model
from .text_encoder import CLIP, EmbeddingFolders, TextTower
from .tokenizer import END_TOKEN, Tokenizer
from .unet import UNet, config_from_state_dict as unet_config

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# text towers: prefix -> (layout "hf" | "openclip", tower name)
TEXT_PREFIXES = {
    "cond_stage_model.transformer.text_model.": ("hf", "l"),       # SD 1.x
    "cond_stage_model.transformer.": ("hf", "l"),                  # SD 1.x, older files without text_model.
    "cond_stage_model.model.": ("openclip", "h"),                  # SD 2.x
    "conditioner.embedders.0.transformer.text_model.": ("hf", "l"),  # SDXL base
    "conditioner.embedders.1.model.": ("openclip", "g"),           # SDXL base
    "conditioner.embedders.0.model.": ("openclip", "g"),           # SDXL refiner
}
# Keys ComfyUI never reads: ldm's schedule buffers, EMA copies, position ids, markers.
IGNORABLE = re.compile(r"(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_.*|log_one_minus_alphas_cumprod|"
                       r"posterior_.*|model_ema\..*|.*position_ids|v_pred|ztsnr|.*logit_scale|"
                       r"cond_stage_model\.model\.attn_mask|conditioner\.embedders\.\d+\.model\.attn_mask)$")
V_PREDICTION_NORM = "output_blocks.11.1.transformer_blocks.0.norm1.bias"


@dataclass
class SDModels:
    """What an SD checkpoint holds: the MODEL, the CLIP (None without text towers) and the VAE."""
    model: object
    clip: CLIP | None
    vae: object | None
    family: str
    prediction: str
    ignored_keys: list = field(default_factory=list)

    def torch_modules(self) -> list:
        """Every weight-holding module (the model cache sizes and offloads them)."""
        return [self.model.network.module] + (self.clip.modules if self.clip else []) + ([self.vae] if self.vae else [])


def detect_family(unet_cfg, towers: set) -> str:
    """sd1 / sd2 / sdxl / sdxl_refiner from the text towers present (l, h, l+g, g), else from the
    UNet's text width and vector conditioning (a UNet-only file)."""
    by_towers = {("l",): "sd1", ("h",): "sd2", ("g", "l"): "sdxl", ("g",): "sdxl_refiner"}.get(tuple(sorted(towers)))
    context, adm = unet_cfg.context_dim, unet_cfg.adm_in_channels
    by_unet = {(768, None): "sd1", (1024, None): "sd2", (2048, 2816): "sdxl", (1280, 2560): "sdxl_refiner"}.get((context, adm))
    family = by_towers or by_unet
    if family is None or (family.startswith("sdxl") != bool(adm)):
        raise CheckpointError(f"an SD-style UNet of an unknown family: text width {context}, vector conditioning "
                              f"{adm or 'none'}, in channels {unet_cfg.in_channels}, text towers {sorted(towers) or 'none'}")
    return family


def text_prefixes(keys) -> dict[str, tuple[str, str]]:
    """The text-tower prefixes present among `keys` (the longest matching prefix wins)."""
    found = {}
    for key in keys:
        for prefix in sorted(TEXT_PREFIXES, key=len, reverse=True):
            if key.startswith(prefix):
                found[prefix] = TEXT_PREFIXES[prefix]
                break
    return found


def prediction_of(source, family: str) -> tuple[str, bool]:
    """("eps" | "v", zero terminal SNR) as ComfyUI decides them."""
    keys = set(source.keys())
    zsnr = "ztsnr" in keys
    if "v_pred" in keys:
        return "v", zsnr
    norm = UNET_PREFIX + V_PREDICTION_NORM
    if family == "sd2" and norm in keys:
        with source.open() as f:
            bias = source.read(norm, f).float()
        if torch.std(bias, unbiased=False) > 0.09:
            return "v", zsnr
    return "eps", zsnr


def build_text_tower(source, keys, prefix: str, layout: str, name: str, family: str, dtype, device,
                     embeddings=None, activation: str | None = None) -> TextTower:
    local = {k[len(prefix):]: k for k in keys}
    if layout == "openclip":
        shapes = clip_text.openclip_to_hf({k: source.shape(v) for k, v in local.items()})
    else:
        shapes = {k: source.shape(v) for k, v in local.items()}
    shapes = {k: v for k, v in shapes.items() if not IGNORABLE.match(k)}
    try:
        cfg = clip_text.config_from_state_dict(shapes, activation=activation or ("quick_gelu" if layout == "hf" else "gelu"))
    except (KeyError, ValueError, StopIteration) as error:
        raise CheckpointError(f"{source.path}: cannot read the text encoder under {prefix}: {error}") from None
    with torch.device("meta"):
        model = clip_text.CLIPTextModel(cfg)
    storage = svd_checkpoint.run_once_storage(widest_float_dtype(source, list(local.values())), dtype)
    if layout == "openclip":  # q/k/v are packed in the file: convert in memory, then load
        sd = clip_text.openclip_to_hf({k: _read(source, v) for k, v in local.items() if not IGNORABLE.match(k)})
        stream_into(model, DictSource(sd, str(source.path)), {k: k for k in sd}, f"text encoder ({name})", storage, device, prefix)
    else:
        names = {k: v for k, v in local.items() if not IGNORABLE.match(k)}
        stream_into(model, source, names, f"text encoder ({name})", storage, device, prefix)
    if storage != dtype:
        cast_on_forward(model)
    use_cpu_kernels(model)
    return TextTower(name, model, tokenizer_for(name, cfg.width, embeddings), *TOWER_LAYERS[(family, name)])


# (family, tower) -> (layer, final norm on that layer's output)
TOWER_LAYERS = {("sd1", "l"): (None, True), ("sd2", "h"): (-2, True), ("sdxl", "l"): (-2, False),
                ("sdxl", "g"): (-2, False), ("sdxl_refiner", "g"): (-2, False)}


def tokenizer_for(name: str, width: int, embeddings=None) -> Tokenizer:
    """CLIP-L pads with the end token; the OpenCLIP towers pad with 0 (ComfyUI's settings)."""
    return Tokenizer(pad_token=END_TOKEN if name == "l" else 0, embedding_size=width,
                     embedding_key=f"clip_{name}", embeddings=embeddings)


def _read(source, key):
    with source.open() as f:
        return source.read(key, f)


def load_sd_checkpoint(path, *, dtype: torch.dtype = torch.float32, low_memory: bool = False, device="cpu",
                       allow_pickle: bool = False, vae_dtype: torch.dtype | None = None,
                       embedding_folders=(), source=None) -> SDModels:
    """An SD 1.x / 2.x / SDXL single-file checkpoint: MODEL, CLIP and VAE."""
    source = source or open_source(path, allow_pickle)
    keys = list(source.keys())
    unet_keys = [k for k in keys if k.startswith(UNET_PREFIX)]
    if not unet_keys:
        raise CheckpointError(f"{source.path}: no {UNET_PREFIX}* keys: not a Stable Diffusion checkpoint "
                              f"({describe_keys(keys, source.shape)})")
    try:
        unet = svd_checkpoint.build_unet(source, unet_keys, UNET_PREFIX, dtype, low_memory, device,
                                         unet_class=UNet, detect_config=unet_config)
        prefixes = text_prefixes(keys)
        family = detect_family(unet.config, {name for _, name in prefixes.values()})
    except CheckpointError as error:  # say what the file holds, so an unknown architecture can be recognised
        raise CheckpointError(f"{error} (found {describe_unet(unet_keys, source.shape)}; "
                              f"{describe_keys(keys, guess=False)})") from None
    prediction, zsnr = prediction_of(source, family)
    embeddings = EmbeddingFolders(embedding_folders, allow_pickle=True) if embedding_folders else None
    towers = []
    for prefix, (layout, name) in prefixes.items():
        tower_keys = [k for k in keys if k.startswith(prefix) and not any(
            p != prefix and len(p) > len(prefix) and k.startswith(p) for p in prefixes)]
        towers.append(build_text_tower(source, tower_keys, prefix, layout, name, family, dtype, device, embeddings))
    towers.sort(key=lambda t: "lhg".index(t.name))  # SDXL: CLIP-L first, as ComfyUI concatenates
    vae_keys = [k for k in keys if k.startswith(VAE_PREFIX)]
    vae = svd_checkpoint.build_vae(source, vae_keys, VAE_PREFIX, vae_dtype or dtype, device) if vae_keys else None
    if vae is not None:  # VAEEncode marks its latents with it (SDXL's VAE has a latent space of its own)
        vae.latent_space = "sdxl" if family.startswith("sdxl") else "sd"
    known = set(unet_keys) | set(vae_keys) | {k for k in keys if any(k.startswith(p) for p in prefixes)}
    ignored = [k for k in keys if k not in known]
    unexpected = [k for k in ignored if not IGNORABLE.match(k)]
    if unexpected:
        raise CheckpointError(f"{source.path}: unexpected keys in an SD checkpoint ({len(unexpected)}): "
                              + ", ".join(sorted(unexpected)[:10]) + (" ..." if len(unexpected) > 10 else ""))
    model = sd_model(unet, family, prediction, dtype, zsnr)
    clip = CLIP(family, towers) if towers else None
    return SDModels(model, clip, vae, family, prediction, ignored)


# Key markers of architectures vidgraph does not load, so an error can say what a file is.
OTHER_ARCHITECTURES = (("double_blocks.", "Flux"), ("joint_blocks.", "SD3"), ("model.diffusion_model.joint_blocks.", "SD3"),
                       ("model.diffusion_model.double_blocks.", "Flux"), ("down_blocks.", "a diffusers UNet (load it with UNETLoader)"),
                       ("blocks.0.self_attn.", "a DiT video model (Wan / LTX-style)"), ("encoder.down.", "a VAE (load it with VAELoader)"),
                       ("first_stage_model.", "a VAE"), ("text_model.", "a text encoder (CLIPLoader)"))


def describe_keys(keys, shape=None, guess: bool = True) -> str:
    """What a file holds, for error messages: its key prefixes with counts and, given `shape(key)`, an
    example key with its shape per prefix; the architecture when its markers are known."""
    keys = list(keys)
    if not keys:
        return "no tensors"
    counts, examples = {}, {}
    for key in keys:
        parts = key.split(".")
        head = ".".join(parts[:2]) + ".*" if len(parts) > 2 else key
        counts[head] = counts.get(head, 0) + 1
        examples.setdefault(head, key)
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
    text = f"{len(keys)} tensors; key prefixes: " + ", ".join(f"{p} ({n})" for p, n in top)
    if shape is not None:
        text += "; e.g. " + ", ".join(f"{examples[p]} {list(shape(examples[p]))}" for p, _ in top[:4])
    guess = guess and next((name for marker, name in OTHER_ARCHITECTURES if any(k.startswith(marker) for k in keys)), None)
    return text + (f"; this looks like {guess}" if guess else "")


def describe_unet(unet_keys, shape) -> str:
    """The shapes that decide an SD UNet's family: input conv, first cross-attention key, vector
    conditioning, output conv."""
    wanted = [UNET_PREFIX + "input_blocks.0.0.weight",
              next((k for k in unet_keys if k.endswith("attn2.to_k.weight")), None),
              UNET_PREFIX + "label_emb.0.0.weight", UNET_PREFIX + "out.2.weight"]
    present = [k for k in wanted if k in set(unet_keys)]
    if not present:
        return f"{len(unet_keys)} UNet tensors, none of the usual layers"
    return ", ".join(f"{k[len(UNET_PREFIX):]} {list(shape(k))}" for k in present)


def is_sd_checkpoint(keys) -> bool:
    """An SD image checkpoint (not SVD's video UNet) by its keys."""
    keys = list(keys)
    return any(k.startswith(UNET_PREFIX) for k in keys) and not any(".time_stack." in k for k in keys)


def load_text_encoders(paths, *, kind: str | None = None, dtype: torch.dtype = torch.float32, device="cpu",
                       allow_pickle: bool = False, embedding_folders=()) -> CLIP:
    """CLIPLoader / DualCLIPLoader: standalone text-encoder files (HF `text_model.*`, OpenCLIP, or a
    checkpoint's own prefixes). `kind`: ComfyUI's type ("stable_diffusion", "sd2", "sdxl"); without it,
    one CLIP-L file is SD 1.x, one OpenCLIP-H file SD 2.x, CLIP-L + bigG SDXL."""
    embeddings = EmbeddingFolders(embedding_folders, allow_pickle=True) if embedding_folders else None
    loaded = []
    for path in paths:
        source = open_source(path, allow_pickle)
        keys = list(source.keys())
        prefix, layout = _text_file_layout(source, keys)
        name = "l" if layout == "hf" else "g" if prefix + "text_projection" in keys else "h"
        loaded.append((source, [k for k in keys if k.startswith(prefix)], prefix, layout, name))
    names = sorted(item[4] for item in loaded)
    family = {"l": "sd1", "h": "sd2", "g": "sdxl_refiner", "g+l": "sdxl"}.get("+".join(sorted(names, reverse=True)))
    wanted = {"stable_diffusion": "sd1", "sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl"}.get(kind or "", family)
    if family is None or wanted != family:
        raise CheckpointError(f"text encoders {names} do not make a {kind or 'known'} text model "
                              f"(SD 1.x: l; SD 2.x: h; SDXL: l + g)")
    towers = [build_text_tower(source, keys, prefix, layout, name, family, dtype, device, embeddings)
              for source, keys, prefix, layout, name in loaded]
    towers.sort(key=lambda t: "lhg".index(t.name))
    return CLIP(family, towers)


def _text_file_layout(source, keys) -> tuple[str, str]:
    for prefix, (layout, _) in sorted(TEXT_PREFIXES.items(), key=lambda kv: -len(kv[0])):
        if any(k.startswith(prefix) for k in keys):
            return prefix, layout
    for prefix in ("text_model.", ""):
        if prefix + "embeddings.token_embedding.weight" in keys:
            return prefix, "hf"
    for prefix in ("model.", ""):
        if prefix + "token_embedding.weight" in keys and prefix + "transformer.resblocks.0.ln_1.weight" in keys:
            return prefix, "openclip"
    raise CheckpointError(f"{source.path}: not a CLIP text encoder ({describe_keys(keys, source.shape)})")


# -- diffusers folders: model_index.json, unet/, vae/, text_encoder/ (CLIP-L or OpenCLIP-H), text_encoder_2/ (bigG)

DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
TEXT_WEIGHTS = ("model.safetensors", "model.fp16.safetensors")
TOWER_BY_WIDTH = {768: "l", 1024: "h", 1280: "g"}


def is_diffusers_folder(path) -> bool:
    return (Path(path) / "model_index.json").is_file()


def _weights_file(folder: Path, names) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: none of {', '.join(names)} found")


def _diffusers_tower(folder: Path, dtype, device, embeddings, allow_pickle):
    """(name, loader) of a transformers CLIPTextModel(WithProjection) folder; loaded once the family is known."""
    source = open_source(_weights_file(folder, TEXT_WEIGHTS), allow_pickle)
    keys = [k for k in source.keys() if not IGNORABLE.match(k)]
    # transformers 4 writes `text_model.` before the tower's names, transformers 5 leaves it out
    width_key = next((k for k in ("text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight")
                      if k in keys), None)
    if width_key is None:
        raise CheckpointError(f"{folder}: not a CLIP text model ({describe_keys(keys, source.shape)})")
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    # text_encoder_2 is SDXL's bigG; text_encoder is OpenAI's CLIP-L (quick_gelu) or OpenCLIP-H (gelu)
    if folder.name == "text_encoder_2":
        name = "g"
    elif "hidden_act" in config:
        name = "l" if config["hidden_act"] == "quick_gelu" else "h"
    else:
        name = TOWER_BY_WIDTH.get(source.shape(width_key)[1])
    if name is None:
        raise CheckpointError(f"{folder}: a text model of width {source.shape(width_key)[1]} without a config.json "
                              "(SD's are 768, 1024, 1280 wide)")

    def load(family):
        with source.open() as f:  # the projection sits outside text_model.: rename in memory, then load
            sd = {k.removeprefix("text_model."): source.read(k, f) for k in keys}
        return build_text_tower(DictSource(sd, str(folder)), list(sd), "", "hf", name, family, dtype, device,
                                embeddings, activation=config.get("hidden_act"))
    return name, load


def load_diffusers_folder(folder, *, dtype: torch.dtype = torch.float32, low_memory: bool = False, device="cpu",
                          allow_pickle: bool = False, vae_dtype: torch.dtype | None = None,
                          embedding_folders=()) -> SDModels:
    """A diffusers StableDiffusion(XL) pipeline folder (SD 1.x / 2.x / SDXL base / refiner, inpainting):
    the same MODEL, CLIP and VAE as the single file holding those weights. v-prediction and zero terminal
    SNR come from scheduler/scheduler_config.json, as diffusers reads them."""
    folder = Path(folder)
    if not (folder / "unet").is_dir():
        raise CheckpointError(f"{folder}: not a diffusers pipeline folder with a UNet (no unet/ subfolder)")
    source = open_source(_weights_file(folder / "unet", DIFFUSERS_WEIGHTS), allow_pickle)
    keys = list(source.keys())
    if not any(k.startswith("down_blocks.") for k in keys):
        raise CheckpointError(f"{folder}/unet: not a diffusers UNet ({describe_keys(keys, source.shape)})")
    embeddings = EmbeddingFolders(embedding_folders, allow_pickle=True) if embedding_folders else None
    towers = [_diffusers_tower(folder / sub, dtype, device, embeddings, allow_pickle)
              for sub in ("text_encoder", "text_encoder_2") if (folder / sub).is_dir()]
    try:
        unet = svd_checkpoint.build_unet(source, keys, "", dtype, low_memory, device, diffusers=True,
                                         unet_class=UNet, detect_config=unet_config)
        family = detect_family(unet.config, {name for name, _ in towers})
    except (CheckpointError, ValueError) as error:
        raise CheckpointError(f"{error} (found {describe_keys(keys, source.shape)})") from None
    scheduler = folder / "scheduler" / "scheduler_config.json"
    schedule = json.loads(scheduler.read_text()) if scheduler.is_file() else {}
    prediction = "v" if schedule.get("prediction_type") == "v_prediction" else "eps"
    loaded = sorted((load(family) for _, load in towers), key=lambda t: "lhg".index(t.name))
    vae = None
    if (folder / "vae").is_dir():
        vae = svd_checkpoint.load_vae(_weights_file(folder / "vae", DIFFUSERS_WEIGHTS), dtype=vae_dtype or dtype,
                                      device=device)
        vae.latent_space = "sdxl" if family.startswith("sdxl") else "sd"
    model = sd_model(unet, family, prediction, dtype, bool(schedule.get("rescale_betas_zero_snr")))
    return SDModels(model, CLIP(family, loaded) if loaded else None, vae, family, prediction)
