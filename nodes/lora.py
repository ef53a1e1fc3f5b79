"""LoRA files onto a MODEL and a CLIP: the key formats people download, and the weight change each makes.

Formats (a LoRA file is a flat state dict; each adapted layer is a group of keys sharing a base name):
- kohya / LoCon: `<base>.lora_down.weight`, `.lora_up.weight`, optional `.alpha` and `.lora_mid.weight`
  (LoCon's Tucker form for 3x3 convolutions); base names `lora_unet_<module path with _>` (the
  diffusers path for SD 1.x, the original ldm path for SDXL: both are accepted), `lora_te_<...>` for the
  text encoder, SDXL's `lora_te1_` (CLIP-L) and `lora_te2_` (bigG).
- LyCORIS LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, optional `hada_t1`/`hada_t2`) and
  LoKr (`lokr_w1` or `lokr_w1_a`/`_b`, `lokr_w2` or `lokr_w2_a`/`_b`, optional `lokr_t2`), same base names.
- diffusers / PEFT: `unet.<diffusers path>.lora_A.weight` / `.lora_B.weight` (also `.lora.down/.up`,
  the older attention-processor names `...attn1.processor.to_q_lora.down.weight`), `text_encoder.` and
  `text_encoder_2.` + `text_model.<path>`.
- full differences: `<base>.diff` (weight) and `<base>.diff_b` (bias); ComfyUI's own names
  (`diffusion_model.<path>`, `clip_l.transformer.text_model.<path>`) as base names.

The change to a weight W (scale = alpha / rank, 1 without alpha): LoRA up @ down * scale; LoHa
(w1a @ w1b) * (w2a @ w2b) * scale; LoKr kron(w1, w2) * scale. Applied as weight patches through the
MODEL / CLIP contract (`weight_patches.py`): LoraLoader returns clones, the inputs never change.

API: `lora_targets(model, clip)` -> {base name: (part, weight name)}; `match_lora(sd, targets)` ->
`LoraMatch` (patches per part, what matched and what did not); `apply_lora(model, clip, sd, strength_model,
strength_clip)` -> (model, clip, LoraMatch). `unet_diffusers_names(unet_keys, num_res_blocks)` maps
the ldm UNet's module paths to diffusers'.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .svd import convert
from .weight_patches import Diff

MODEL_PART = "model"   # the MODEL's network; CLIP parts are the tower names ("l", "h", "g")

# suffix -> role, longest first when matched
ROLES = {
    ".lora_up.weight": "up", ".lora_down.weight": "down", ".lora_mid.weight": "mid",
    ".lora_B.weight": "up", ".lora_A.weight": "down",
    ".lora.up.weight": "up", ".lora.down.weight": "down",
    ".lora_linear_layer.up.weight": "up", ".lora_linear_layer.down.weight": "down",
    "_lora.up.weight": "up", "_lora.down.weight": "down",
    ".alpha": "alpha", ".dora_scale": "dora_scale",
    ".hada_w1_a": "w1a", ".hada_w1_b": "w1b", ".hada_w2_a": "w2a", ".hada_w2_b": "w2b",
    ".hada_t1": "t1", ".hada_t2": "t2",
    ".lokr_w1": "k1", ".lokr_w1_a": "k1a", ".lokr_w1_b": "k1b", ".lokr_w2": "k2", ".lokr_w2_a": "k2a",
    ".lokr_w2_b": "k2b", ".lokr_t2": "kt2",
    ".diff": "diff", ".diff_b": "diff_b",
}
_SUFFIXES = sorted(ROLES, key=len, reverse=True)
# diffusers' older attention-processor names -> the module they adapt
_PROCESSOR = {".processor.to_q": ".to_q", ".processor.to_k": ".to_k", ".processor.to_v": ".to_v",
              ".processor.to_out": ".to_out.0"}


def _f32(t: torch.Tensor, device) -> torch.Tensor:
    return t.to(device, torch.float32)


def _scale(alpha, rank: int | None) -> float:
    return float(alpha) / rank if alpha is not None and rank else 1.0


def _tucker(core, wb, wa):
    """LyCORIS's Tucker rebuild: core [a, b, kh, kw], wb [b, in], wa [a, out] -> [out, in, kh, kw]."""
    return torch.einsum("abhw,bi,ao->oihw", core, wb, wa)


@dataclass(frozen=True)
class LoRA:
    """kohya LoRA / LoCon (with `mid`: the Tucker form of a 3x3 convolution) and diffusers/PEFT LoRA."""
    up: torch.Tensor
    down: torch.Tensor
    alpha: float | None = None
    mid: torch.Tensor | None = None

    def delta(self, weight):
        up, down = _f32(self.up, weight.device), _f32(self.down, weight.device)
        scale = _scale(self.alpha, down.shape[0])
        if self.mid is not None:  # x -> down (1x1) -> mid (kh x kw) -> up (1x1)
            down = torch.einsum("abhw,bi->aihw", _f32(self.mid, weight.device), down.flatten(1))
        return (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * scale


@dataclass(frozen=True)
class LoHa:
    """LyCORIS LoHa: the Hadamard product of two low-rank products."""
    w1a: torch.Tensor
    w1b: torch.Tensor
    w2a: torch.Tensor
    w2b: torch.Tensor
    alpha: float | None = None
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    def delta(self, weight):
        d = weight.device
        w1a, w1b, w2a, w2b = (_f32(t, d) for t in (self.w1a, self.w1b, self.w2a, self.w2b))
        scale = _scale(self.alpha, w1b.shape[0])
        m1 = _tucker(_f32(self.t1, d), w1b.flatten(1), w1a) if self.t1 is not None else w1a @ w1b.flatten(1)
        m2 = _tucker(_f32(self.t2, d), w2b.flatten(1), w2a) if self.t2 is not None else w2a @ w2b.flatten(1)
        return (m1 * m2).reshape(weight.shape) * scale


@dataclass(frozen=True)
class LoKr:
    """LyCORIS LoKr: the Kronecker product of two factors, each full or a low-rank product."""
    w1: torch.Tensor | None = None
    w1a: torch.Tensor | None = None
    w1b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2a: torch.Tensor | None = None
    w2b: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None

    def delta(self, weight):
        d = weight.device
        w1 = _f32(self.w1, d) if self.w1 is not None else _f32(self.w1a, d) @ _f32(self.w1b, d)
        if self.w2 is not None:
            w2 = _f32(self.w2, d)
        elif self.t2 is not None:
            w2 = _tucker(_f32(self.t2, d), _f32(self.w2b, d).flatten(1), _f32(self.w2a, d))
        else:
            w2 = _f32(self.w2a, d) @ _f32(self.w2b, d).flatten(1)
        rank = self.w1b.shape[0] if self.w1b is not None else self.w2b.shape[0] if self.w2b is not None else None
        if w2.ndim == 4 and w1.ndim == 2:
            w1 = w1[:, :, None, None]
        if w2.ndim == 2 and weight.ndim == 4:
            w2 = w2.reshape(w2.shape[0], -1, *weight.shape[2:])
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2).reshape(weight.shape) * _scale(self.alpha, rank)


# ---------------------------------------------------------------------------- key mapping

# ldm -> diffusers names of a resnet's layers and of the UNet's top-level layers: the inverse of the
# diffusers-folder loader's tables (one source for both directions)
_RESNET = {ldm: diffusers for diffusers, ldm in convert._RESNET.items()}
_TOP = {ldm: diffusers for diffusers, ldm in convert._TOP.items()}


def _resnet(rest: str) -> str:
    for old, new in _RESNET.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_diffusers_names(unet_keys, num_res_blocks: int) -> dict[str, str]:
    """{ldm module path: diffusers UNet2DConditionModel module path} for the UNet's weight keys
    (`input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight` -> its module path mapped); paths with
    no diffusers counterpart (SVD's temporal layers) are left out."""
    keys = set(unet_keys)
    per_level = num_res_blocks + 1
    with_attention = {int(m.group(1)) for k in keys if (m := re.match(r"output_blocks\.(\d+)\.1\.transformer_blocks\.", k))}
    names = {}
    for key in keys:
        path = key.rsplit(".", 1)[0]
        if path in _TOP:
            names[path] = _TOP[path]
            continue
        if ".time_stack." in path or ".time_mixer" in path or "time_pos_embed" in path:
            continue
        m = re.match(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.*)$", path)
        mid = re.match(r"middle_block\.(\d)\.(.*)$", path)
        if mid:
            slot, rest = int(mid.group(1)), mid.group(2)
            names[path] = ("mid_block.attentions.0." + rest if slot == 1
                           else f"mid_block.resnets.{slot // 2}." + _resnet(rest))
        elif m:
            kind, number, layer, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
            if kind == "input_blocks":
                level, index = divmod(number - 1, per_level)
                if index == num_res_blocks:
                    names[path] = f"down_blocks.{level}.downsamplers.0." + rest.replace("op", "conv", 1)
                elif layer == 0:
                    names[path] = f"down_blocks.{level}.resnets.{index}." + _resnet(rest)
                else:
                    names[path] = f"down_blocks.{level}.attentions.{index}." + rest
            else:
                level, index = divmod(number, per_level)
                attention = number in with_attention
                if layer == 0:
                    names[path] = f"up_blocks.{level}.resnets.{index}." + _resnet(rest)
                elif layer == 1 and attention:
                    names[path] = f"up_blocks.{level}.attentions.{index}." + rest
                else:
                    names[path] = f"up_blocks.{level}.upsamplers.0." + rest
    return names


def _kohya(prefix: str, path: str) -> str:
    return prefix + path.replace(".", "_")


def lora_targets(model=None, clip=None) -> dict[str, tuple[str, str]]:
    """{LoRA base name: (part, module path)} for every weight of the MODEL's network and the CLIP's towers,
    under every naming a LoRA file may use (see the module docstring)."""
    targets = {}
    if model is not None:
        module = model.network.module
        keys = [k for k in module.state_dict() if k.endswith((".weight", ".bias"))]
        paths = {k.rsplit(".", 1)[0] for k in keys}
        for path in paths:
            for name in (_kohya("lora_unet_", path), "diffusion_model." + path):
                targets[name] = (MODEL_PART, path)
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_res_blocks"):
            for path, diffusers in unet_diffusers_names(keys, config.num_res_blocks).items():
                for name in (_kohya("lora_unet_", diffusers), "unet." + diffusers, diffusers):
                    targets.setdefault(name, (MODEL_PART, path))
    if clip is not None:
        names = [t.name for t in clip.towers]
        for tower in clip.towers:
            if len(names) == 1:
                kohya, diffusers = ["lora_te_"], ["text_encoder."]
            else:  # SDXL: CLIP-L is the first encoder, bigG the second
                first = tower.name == names[0]
                kohya, diffusers = (["lora_te1_"], ["text_encoder."]) if first else (["lora_te2_"], ["text_encoder_2."])
            paths = {k.rsplit(".", 1)[0] for k in tower.model.state_dict()}
            for path in paths:
                full = "text_model." + path
                for name in [_kohya(p, full) for p in kohya] + [p + full for p in diffusers] + [
                        f"clip_{tower.name}.transformer.{full}", f"clip_{tower.name}.transformer.{path}"]:
                    targets[name] = (tower.name, path)
    return targets


@dataclass
class LoraMatch:
    """What one LoRA file does to a MODEL / CLIP: {part: {weight name: patch}} and the bookkeeping."""
    patches: dict = field(default_factory=dict)
    matched_keys: int = 0
    unmatched: list = field(default_factory=list)      # LoRA keys that name no weight of the model
    unsupported: list = field(default_factory=list)    # matched keys of a kind not applied (DoRA scales)
    total_keys: int = 0

    def count(self, part=None) -> int:
        """How many weights are patched (in `part`, or in all)."""
        return sum(len(p) for name, p in self.patches.items() if part is None or name == part)

    def summary(self) -> str:
        text = (f"{self.matched_keys} of {self.total_keys} keys matched ({self.count()} weights patched: "
                + ", ".join(f"{_PART_NAMES.get(p, 'text encoder ' + p)} {len(v)}" for p, v in sorted(self.patches.items()))
                + f"); {len(self.unmatched)} ignored")
        if self.unmatched:
            text += " (e.g. " + ", ".join(sorted(self.unmatched)[:3]) + ")"
        if self.unsupported:
            text += f"; {len(self.unsupported)} not applied (DoRA scales are not supported)"
        return text


_PART_NAMES = {MODEL_PART: "diffusion model"}


def split_key(key: str) -> tuple[str, str] | None:
    """(base name, role) of a LoRA key, or None when no known suffix ends it."""
    for suffix in _SUFFIXES:
        if key.endswith(suffix):
            base = key[:-len(suffix)]
            for old, new in _PROCESSOR.items():
                if base.endswith(old):
                    base = base[:-len(old)] + new
            return base, ROLES[suffix]
    return None


def _value(t):
    return float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else (None if t is None else float(t))


def _patch_of(roles: dict):
    """(weight patch, bias patch) of one group of keys (None where absent)."""
    alpha = _value(roles.get("alpha"))
    weight = None
    if "up" in roles and "down" in roles:
        weight = LoRA(roles["up"], roles["down"], alpha, roles.get("mid"))
    elif all(r in roles for r in ("w1a", "w1b", "w2a", "w2b")):
        weight = LoHa(roles["w1a"], roles["w1b"], roles["w2a"], roles["w2b"], alpha, roles.get("t1"), roles.get("t2"))
    elif ("k1" in roles or "k1a" in roles) and ("k2" in roles or "k2a" in roles):
        weight = LoKr(roles.get("k1"), roles.get("k1a"), roles.get("k1b"), roles.get("k2"), roles.get("k2a"),
                      roles.get("k2b"), roles.get("kt2"), alpha)
    elif "diff" in roles:
        weight = Diff(roles["diff"])
    bias = Diff(roles["diff_b"]) if "diff_b" in roles else None
    return weight, bias


def match_lora(sd: dict, targets: dict) -> LoraMatch:
    """Group a LoRA state dict's keys by layer, build each layer's patch, and place it on `targets`."""
    groups, keys_of, unknown = {}, {}, []
    for key, tensor in sd.items():
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        base, role = split
        groups.setdefault(base, {})[role] = tensor
        keys_of.setdefault(base, []).append(key)
    result = LoraMatch(total_keys=len(sd), unmatched=list(unknown))
    for base, roles in groups.items():
        target = targets.get(base)
        weight, bias = _patch_of(roles)
        if target is None or (weight is None and bias is None):
            result.unmatched.extend(keys_of[base])
            continue
        part, path = target
        patches = result.patches.setdefault(part, {})
        if weight is not None:
            patches[path + ".weight"] = weight
        if bias is not None:
            patches[path + ".bias"] = bias
        result.matched_keys += len(keys_of[base])
        if "dora_scale" in roles:
            result.unsupported.extend(k for k in keys_of[base] if k.endswith(".dora_scale"))
    return result


def apply_lora(model, clip, sd: dict, strength_model: float = 1.0, strength_clip: float = 1.0):
    """(patched clone of `model`, patched clone of `clip`, LoraMatch). Keys are matched against every part
    given; a part that is None, matched nothing or has strength 0 is returned as given (not cloned)."""
    found = match_lora(sd, lora_targets(model, clip))
    if model is not None and strength_model != 0 and MODEL_PART in found.patches:
        model = model.clone()
        model.add_weight_patches(found.patches[MODEL_PART], strength_patch=strength_model)
    clip_patches = {f"{part}.{name}": patch for part, patches in found.patches.items() if part != MODEL_PART
                    for name, patch in patches.items()}
    if clip is not None and strength_clip != 0 and clip_patches:
        clip = clip.clone()
        clip.add_patches(clip_patches, strength_patch=strength_clip)
    return model, clip, found
