"""Key names of diffusers-format UNets (`unet/diffusion_pytorch_model.safetensors`: SVD's
UNetSpatioTemporalConditionModel, SD's UNet2DConditionModel) mapped to the original checkpoint's
names (without `model.diffusion_model.`), so one module tree loads both."""
import re

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
        "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _resnet_part(rest: str) -> str:
    for old, new in (("spatial_res_block.", ""), ("temporal_res_block.", "time_stack.")):
        if rest.startswith(old):
            name, _, tail = rest[len(old):].partition(".")
            return new + _RESNET[name] + "." + tail
    name, _, tail = rest.partition(".")
    if name in _RESNET:  # an image UNet's plain resnet (UNet2DConditionModel)
        return _RESNET[name] + "." + tail
    return rest  # time_mixer.mix_factor


def _attention_part(rest: str) -> str:
    rest = rest.replace("temporal_transformer_blocks.", "time_stack.")
    return rest.replace("time_pos_embed.linear_1.", "time_pos_embed.0.").replace("time_pos_embed.linear_2.", "time_pos_embed.2.")


def unet_key_map(keys) -> dict[str, str]:
    """{diffusers key: original key} for every key of a diffusers UNetSpatioTemporalConditionModel or
    UNet2DConditionModel."""
    keys = list(keys)
    per_block = 1 + max(int(m.group(1)) for k in keys if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k)))
    up_has_attention = {int(m.group(1)) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    mapping = {}
    for key in keys:
        top = key.rsplit(".", 1)
        if top[0] in _TOP:
            mapping[key] = f"{_TOP[top[0]]}.{top[1]}"
            continue
        m = re.match(r"(down_blocks|up_blocks|mid_block)\.(?:(\d+)\.)?(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", key)
        if not m:
            raise ValueError(f"unknown diffusers UNet key: {key}")
        kind, block, part, index, rest = m.group(1), int(m.group(2) or 0), m.group(3), int(m.group(4)), m.group(5)
        rest = _resnet_part(rest) if part == "resnets" else _attention_part(rest)
        if kind == "mid_block":
            where = "middle_block.0" if part == "resnets" and index == 0 else (
                "middle_block.2" if part == "resnets" else "middle_block.1")
        elif kind == "down_blocks":
            slot = 1 + block * (per_block + 1)
            where = {"resnets": f"input_blocks.{slot + index}.0", "attentions": f"input_blocks.{slot + index}.1",
                     "downsamplers": f"input_blocks.{slot + per_block}.0"}[part]
            rest = rest.replace("conv.", "op.") if part == "downsamplers" else rest
        else:
            slot = block * (per_block + 1)
            upsample_pos = 2 if block in up_has_attention else 1
            where = {"resnets": f"output_blocks.{slot + index}.0", "attentions": f"output_blocks.{slot + index}.1",
                     "upsamplers": f"output_blocks.{slot + per_block}.{upsample_pos}"}[part]
        mapping[key] = f"{where}.{rest}"
    return mapping
