"""The CLIP type between nodes: one or two text towers with their tokenizers, ComfyUI's encoding rules.

- SD 1.x: CLIP-L, last layer after the final norm (CLIPSetLastLayer picks an earlier one, still normed).
- SD 2.x: OpenCLIP ViT-H, penultimate layer, normed; padding 0.
- SDXL: CLIP-L penultimate (not normed) and bigG penultimate (not normed) side by side [1, 77k, 2048];
  the pooled output is bigG's projected pooled output. SDXL refiner: bigG alone.
Weighted tokens are pulled away from the empty prompt's encoding: z = z_empty + w (z - z_empty);
long prompts are chunks of 77 encoded separately and joined along the tokens.
"""
from __future__ import annotations

import copy
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..weight_patches import add_to_table, patched_weights
from ..weights import CheckpointError, open_source, read_all
from .clip_text import CLIPTextModel
from .tokenizer import END_TOKEN, START_TOKEN, Tokenizer

log = logging.getLogger(__name__)
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


@dataclass
class TextTower:
    name: str                    # "l", "g" or "h": the key of its tokens
    model: CLIPTextModel
    tokenizer: Tokenizer
    layer: int | None = None     # None: the last layer after the final norm; else a negative layer index
    norm_hidden: bool = True     # final norm on an earlier layer's output

    def encode(self, chunks, layer: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunks of (token or vector, weight) -> ([1, 77 * chunks, D], pooled [1, P]) in float32."""
        device = next(self.model.parameters()).device
        sequences = [list(chunk) for chunk in chunks]
        weighted = any(w != 1.0 for chunk in chunks for _, w in chunk)
        if weighted or not sequences:
            length = max((len(c) for c in sequences), default=self.tokenizer.max_length)
            sequences.append([(START_TOKEN, 1.0), (END_TOKEN, 1.0)] + [(self.tokenizer.pad_token, 1.0)] * (length - 2))
        ids = torch.tensor([[t if isinstance(t, int) else 0 for t, _ in seq] for seq in sequences], device=device)
        extra = {(b, i): t for b, seq in enumerate(sequences) for i, (t, _) in enumerate(seq) if not isinstance(t, int)}
        layer = self.layer if layer is None else layer
        if layer is not None and abs(layer) > self.model.config.layers:
            layer = None
        with torch.no_grad():
            out = self.model(ids, extra, layer, self.norm_hidden)
        z = (out.last if layer is None else out.hidden).float()
        pooled = out.pooled[:1].float()
        parts = []
        for k, chunk in enumerate(chunks):
            part = z[k:k + 1].clone()
            if weighted:
                empty = z[-1]
                for j, (_, weight) in enumerate(chunk):
                    if weight != 1.0:
                        part[0, j] = (part[0, j] - empty[j]) * weight + empty[j]
            parts.append(part)
        cond = torch.cat(parts, dim=1) if parts else z[-1:]
        return cond.cpu(), pooled.cpu()


@dataclass
class CLIP:
    """ComfyUI's CLIP: `tokenize(text)` -> {tower: chunks}; `encode_from_tokens(tokens, return_pooled)`.

    `patches`: weight patches {"<tower>.<parameter>": (PatchEntry, ...)} (weight_patches.py), applied
    while encoding; `add_patches` takes them on those names or ComfyUI's (`clip_l.transformer.text_model.*`)."""
    family: str
    towers: list
    layer_idx: int | None = None            # CLIPSetLastLayer's choice, for every tower
    patches: dict = field(default_factory=dict)

    @property
    def modules(self) -> list:
        return [t.model for t in self.towers]

    def torch_modules(self) -> list:
        return self.modules

    def clone(self) -> "CLIP":
        twin = copy.copy(self)
        twin.towers = [copy.copy(t) for t in self.towers]
        twin.patches = dict(self.patches)
        return twin

    def clip_layer(self, layer_idx: int):
        self.layer_idx = layer_idx

    def tokenize(self, text: str) -> dict:
        return {tower.name: tower.tokenizer.tokenize(text) for tower in self.towers}

    def parameter_names(self) -> set:
        return {f"{tower.name}.{key}" for tower in self.towers for key in tower.model.state_dict()}

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        """Add weight patches (on a clone); returns the keys that named a weight of a tower."""
        self.patches, matched = add_to_table(self.patches, patches, self.parameter_names(), strength_patch,
                                             strength_model, rename=clip_parameter_name)
        return matched

    def encode_from_tokens(self, tokens: dict, return_pooled: bool = False):
        outs = []
        with ExitStack() as stack:
            for tower in self.towers:
                if tower.name not in tokens:
                    raise ValueError(f"tokens for the '{tower.name}' text encoder are missing (got {sorted(tokens)})")
                prefix = tower.name + "."
                table = {k[len(prefix):]: v for k, v in self.patches.items() if k.startswith(prefix)}
                stack.enter_context(patched_weights(tower.model, table))
                outs.append(tower.encode(tokens[tower.name], self.layer_idx))
        if len(outs) == 1:
            cond, pooled = outs[0]
        else:  # SDXL: CLIP-L and bigG side by side, cut to the shorter
            length = min(o[0].shape[1] for o in outs)
            cond = torch.cat([o[0][:, :length] for o in outs], dim=-1)
            pooled = outs[-1][1]
        return (cond, pooled) if return_pooled else cond

    def encode(self, text: str):
        return self.encode_from_tokens(self.tokenize(text))


def clip_parameter_name(key: str) -> str:
    """ComfyUI's CLIP weight names (`clip_l.transformer.text_model.encoder...`) as "<tower>.<parameter>"."""
    tower, _, rest = key.partition(".")
    if tower.startswith("clip_") and rest.startswith("transformer."):
        rest = rest[len("transformer."):]
        rest = rest[len("text_model."):] if rest.startswith("text_model.") else rest
        return f"{tower[len('clip_'):]}.{rest}"
    return key


class EmbeddingFolders:
    """Textual-inversion files by name from the embeddings folders (`name`, or name + a known suffix).
    Names never leave the folders; pickle files are read only as weights (`torch.load(weights_only=True)`)."""

    def __init__(self, folders: list, allow_pickle: bool = True):
        self.folders = [Path(f) for f in folders]
        self.allow_pickle = allow_pickle

    def find(self, name: str) -> Path | None:
        for folder in self.folders:
            root = folder.resolve()
            for candidate in [name] + [name + suffix for suffix in EMBEDDING_SUFFIXES]:
                path = (folder / candidate).resolve()
                if root not in path.parents or not path.is_file():
                    continue
                return path
        return None

    def __call__(self, name: str, size: int, key: str) -> torch.Tensor | None:
        path = self.find(name)
        if path is None:
            return None
        try:
            sd = read_all(open_source(path, allow_pickle=self.allow_pickle))
        except CheckpointError as error:
            log.warning("embedding %s: %s", name, error)
            return None
        return pick_embedding(sd, size, key)


def pick_embedding(sd: dict, size: int, key: str) -> torch.Tensor | None:
    """The vectors [n, size] of an embedding file: its `key` entry (SDXL's clip_l / clip_g), A1111's
    `string_to_param`, or the first tensor of the right width."""
    if key in sd:
        tensor = sd[key]
    elif "string_to_param" in sd and isinstance(sd["string_to_param"], dict):
        tensor = next(iter(sd["string_to_param"].values()))
    else:
        tensors = [v for v in sd.values() if isinstance(v, torch.Tensor) and v.shape[-1] == size]
        tensor = tensors[0] if tensors else None
    if tensor is None or tensor.shape[-1] != size:
        return None
    return tensor.reshape(-1, size).float()
