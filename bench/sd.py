"""SDXL bench on the CPU at full size: vidgraph against diffusers holding the same random weights.

    nice -n 10 .venv/bin/python bench/sd.py [--size 512] [--repeat 2] [--rounds 1] [--low-memory]

Files are written once under ~/.cache/vidgraph-bench (outside the repository): `sdxl_random_fp16.safetensors`
in sd_xl_base_1.0's single-file layout at full size (the UNet from vidgraph's SDXL config: 320 channels,
mult (1, 2, 4), depths (0, 2, 10), 2.57 B parameters; CLIP-L, OpenCLIP bigG and the VAE from the reference
layout `tools/sdxl_layout_small.txt`, whose only shrinking is the UNet's), and the same weights as a diffusers
folder (unet/, vae/, text_encoder/, text_encoder_2/). Each side loads everything (UNet, both text encoders,
VAE) in its own subprocess, one at a time, so peak RSS (ru_maxrss, imports included) belongs to one side only.
Printed: load seconds, RSS after load, peak RSS, seconds per guided UNet step (cond + uncond batched, one
--size x --size image, fp32 compute on both sides), and ratios vidgraph / diffusers against the targets
(peak RSS <= 0.7x, step <= 1.0x). Timings are the minimum of --repeat steps; rounds alternate the sides.
vidgraph's step is timed twice: as a later step of a sampling run (one Guider: the prompt's attention keys
and values are kept from its first step, nodes/svd/attention.py) and as a run's first step (a new Guider
each time); diffusers recomputes them at every step, so its one figure serves both.
"""
import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from svd import best_of, random_tensor, rss_gb, write_safetensors  # noqa: E402  (bench/svd.py)

TARGETS = {"peak_rss_gb": 0.7, "step_s": 1.0}
UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_L = "conditioner.embedders.0.transformer."
CLIP_G = "conditioner.embedders.1.model."


def sdxl_unet_config():
    from vidgraph.nodes.sd.unet import UNetConfig
    return UNetConfig(model_channels=320, channel_mult=(1, 2, 4), num_res_blocks=2, transformer_depth=(0, 2, 10),
                      transformer_depth_middle=10, num_heads=-1, num_head_channels=64, context_dim=2048,
                      use_linear_in_transformer=True, adm_in_channels=2816)


def full_layout():
    """[(key, shape)] of sd_xl_base_1.0 at full size."""
    from reference import shared_path
    from vidgraph.nodes.sd.unet import UNet
    path, reason = shared_path("tools/sdxl_layout_small.txt")
    if path is None:
        raise SystemExit(f"needs the SDXL key layout: {reason}")
    layout = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            if not key.startswith(UNET):
                layout.append((key, tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())))
    with torch.device("meta"):
        unet = UNet(sdxl_unet_config())
    return [(UNET + k, tuple(v.shape)) for k, v in unet.state_dict().items()] + layout


def write_checkpoint(path: Path):
    write_safetensors(path, [(k, s, torch.float16, lambda k=k, s=s: random_tensor(k, s)) for k, s in full_layout()])


def diffusers_unet_config():
    return dict(sample_size=128, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
                attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
                addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816, norm_num_groups=32)


def write_diffusers_folder(single: Path, folder: Path):
    """The single file's weights re-laid as a diffusers SDXL folder, streamed tensor by tensor."""
    import diffusers
    import transformers
    from vidgraph.nodes.sd.clip_text import openclip_to_hf
    from vidgraph.nodes.svd import vae as vae_mod
    from vidgraph.nodes.svd.convert import unet_key_map
    from vidgraph.nodes.weights import SafetensorsFile

    source = SafetensorsFile(single)
    read = source.read
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**diffusers_unet_config())
        vae = diffusers.AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                      down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                      scaling_factor=0.13025, sample_size=1024)
    l_cfg = transformers.CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, hidden_act="quick_gelu", eos_token_id=49407)
    g_cfg = transformers.CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                        num_attention_heads=20, hidden_act="gelu", projection_dim=1280, eos_token_id=49407)
    for sub, save in (("unet", unet.save_config), ("vae", vae.save_config), ("text_encoder", l_cfg.save_pretrained),
                      ("text_encoder_2", g_cfg.save_pretrained)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        save(folder / sub)
    mapping = unet_key_map(unet.state_dict().keys())
    write_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors",
                      [(k, tuple(t.shape), torch.float16, lambda o=mapping[k]: read(UNET + o))
                       for k, t in unet.state_dict().items()])

    def vae_key(k):
        return k if k.startswith(("quant_conv.", "post_quant_conv.")) else vae_mod._diffusers_key(k, 4)
    vae_shapes = {k: tuple(t.shape) for k, t in vae.state_dict().items()}  # mid attention: 1x1 convs -> linear
    write_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors",
                      [(k, shape, torch.float16, lambda k=k, shape=shape: read(VAE + vae_key(k)).reshape(shape))
                       for k, shape in vae_shapes.items()])
    l_keys = [k for k in source.keys() if k.startswith(CLIP_L) and "position_ids" not in k]
    write_safetensors(folder / "text_encoder" / "model.safetensors",
                      [(k[len(CLIP_L):], tuple(source.shape(k)), torch.float16, lambda k=k: read(k)) for k in l_keys])
    g = openclip_to_hf({k[len(CLIP_G):]: read(k) for k in source.keys() if k.startswith(CLIP_G)})
    write_safetensors(folder / "text_encoder_2" / "model.safetensors",
                      [(("" if k == "text_projection.weight" else "text_model.") + k, tuple(v.shape), torch.float16,
                        lambda v=v: v) for k, v in g.items()])


# ---------------------------------------------------------------------------------- children

def setup(side: str, path: str, size: int, low_memory: bool):
    """Load one side (UNet, text encoders, VAE); returns (load seconds, RSS after load, step())."""
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    h = size // 8
    start = time.perf_counter()
    cond, pooled = torch.randn(1, 77, 2048), torch.randn(1, 1280)
    x, sigma = torch.randn(1, 4, h, h) * 10, 10.0
    if side == "vidgraph":
        from vidgraph.nodes.guidance import Guider
        from vidgraph.nodes.sd.checkpoint import load_sd_checkpoint
        models = load_sd_checkpoint(path, low_memory=low_memory)
        load_s, after_load = time.perf_counter() - start, rss_gb()
        extra = {"pooled_output": pooled, "width": size, "height": size}
        def guider():
            return Guider(models.model, [[cond, extra]], [[torch.zeros_like(cond), dict(extra)]], cfg=7.0)
        run = guider()
        return (load_s, after_load, lambda: run.predict(x, torch.full((1,), sigma)),
                lambda: guider().predict(x, torch.full((1,), sigma)))
    import diffusers
    import transformers
    folder, fp32 = Path(path), {"torch_dtype": torch.float32}
    unet = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet", **fp32).eval()
    diffusers.AutoencoderKL.from_pretrained(folder / "vae", **fp32).eval()
    transformers.CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
    transformers.CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", dtype=torch.float32)
    load_s, after_load = time.perf_counter() - start, rss_gb()
    scheduler = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    sigmas = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5
    t = torch.argmin((sigmas - sigma).abs()).float()
    emb = torch.cat([cond, torch.zeros_like(cond)])
    added = {"text_embeds": torch.cat([pooled, pooled]), "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)}

    def step():  # the pipeline's denoising step: batched cond/uncond, eps, CFG, x0
        inp = torch.cat([x] * 2) / (sigma ** 2 + 1) ** 0.5
        eps = unet(inp, t, encoder_hidden_states=emb, added_cond_kwargs=added).sample
        c, u = eps.chunk(2)
        return x - sigma * (u + 7.0 * (c - u))
    return load_s, after_load, step, step


def child(side, path, size, repeat, low_memory):
    load_s, after_load, step, first_step = setup(side, path, size, low_memory)
    step()  # warm-up
    step_s = best_of(step, repeat)
    first_s = step_s if first_step is step else best_of(first_step, repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps({"load_s": load_s, "rss_after_load_gb": after_load, "step_s": step_s, "first_step_s": first_s,
                      "peak_rss_gb": peak}))


def run_child(side, path, size, repeat, low_memory=False):
    cmd = ["nice", "-n", "10", sys.executable, __file__, "--child", side, str(path), "--size", str(size),
           "--repeat", str(repeat)] + (["--low-memory"] if low_memory else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vidgraph-bench")
    ap.add_argument("--size", type=int, default=512, help="image size of the step (pixels)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--low-memory", action="store_true", help="also vidgraph's low-memory mode (16-bit weights)")
    ap.add_argument("--child", nargs=2, metavar=("SIDE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.size, args.repeat, args.low_memory)
    args.cache.mkdir(parents=True, exist_ok=True)
    single, folder = args.cache / "sdxl_random_fp16.safetensors", args.cache / "sdxl_diffusers"
    if not single.exists():
        start = time.perf_counter()
        write_checkpoint(single)
        print(f"wrote {single} ({single.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")
    if not (folder / "text_encoder_2" / "model.safetensors").exists():
        write_diffusers_folder(single, folder)
    sides = [("diffusers", folder, False), ("vidgraph", single, False)]
    if args.low_memory:
        sides.append(("vidgraph low-memory", single, True))
    results = {}
    for _ in range(args.rounds):
        for side, path, low in sides:
            r = run_child(side.split()[0], path, args.size, args.repeat, low)
            results[side] = {k: min(results.get(side, r)[k], r[k]) for k in r}
    print(f"\n== SDXL base, full size, fp16 files, fp32 compute; one guided step at {args.size}x{args.size}")
    print(f"{'':22}{'load s':>9}{'RSS load GB':>13}{'peak GB':>9}{'step s':>9}{'first step s':>14}"
          f"   (one side per process, best of {args.rounds})")
    for side, r in results.items():
        print(f"{side:22}{r['load_s']:9.2f}{r['rss_after_load_gb']:13.2f}{r['peak_rss_gb']:9.2f}{r['step_s']:9.2f}"
              f"{r['first_step_s']:14.2f}")
    ref = results["diffusers"]
    for side, r in results.items():
        if side == "diffusers":
            continue
        parts = [f"load {r['load_s'] / ref['load_s']:.2f}x"]
        for key, target in TARGETS.items():
            ratio = r[key] / ref[key]
            parts.append(f"{key.split('_')[0]} {ratio:.2f}x (target <= {target}x{'' if ratio <= target else ', MISSED'})")
        parts.append(f"a run's first step {r['first_step_s'] / ref['step_s']:.2f}x")
        print(f"  {side} / diffusers: " + ", ".join(parts))


if __name__ == "__main__":
    main()
