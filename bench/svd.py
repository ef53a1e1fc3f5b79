"""SVD model bench on the CPU: vidgraph against diffusers' modules holding the same weights.

    .venv/bin/python bench/svd.py            # tiny config only (seconds)
    .venv/bin/python bench/svd.py --full     # plus a full-size random SVD-XT fp16 file (minutes, ~10 GB disk)

Files are written once under ~/.cache/vidgraph-bench (outside the repository): the single file in the
original layout, and the same weights as a diffusers folder (unet/, vae/, image_encoder/). Every load
runs in a fresh subprocess, so peak RSS (ru_maxrss, imports included on both sides) belongs to one
side only. Printed: load seconds, RSS after load, peak RSS, seconds per guided UNet step
(cond + uncond, 64x64, 4 frames), VAE decode of those 4 frames, and ratios vidgraph / diffusers
against the targets (load <= 0.5x, step <= 0.9x, peak RSS <= 0.7x). Timings are the minimum of
--repeat runs; on a shared machine, compare ratios, not seconds.
"""
import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
import zlib
from pathlib import Path

import torch

FRAMES, SIZE = 4, 64
TARGETS = {"load_s": 0.5, "step_s": 0.9, "peak_rss_gb": 0.7}
ST_DTYPE = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}


# ------------------------------------------------------------------------------ file writing

def write_safetensors(path: Path, entries):
    """entries: [(key, shape, dtype, make_tensor)] written one tensor at a time (no full state dict)."""
    header, offset = {}, 0
    for key, shape, dtype, _ in entries:
        n = math.prod(shape) * dtype.itemsize
        header[key] = {"dtype": ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for key, shape, dtype, make in entries:
            t = make().to(dtype).contiguous().reshape(shape)
            f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    tmp.rename(path)


def random_tensor(key, shape, seed=0):
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()) ^ seed)
    if len(shape) >= 2:
        bound = 1 / math.sqrt(math.prod(shape[1:]))
        return torch.empty(shape).uniform_(-bound, bound, generator=g)
    if re.search(r"(norm|ln_|ln\.|in_layers\.0|out_layers\.0|out\.0)[^.]*\.weight$", key):
        return torch.ones(shape)
    return torch.empty(shape).uniform_(-0.02, 0.02, generator=g)


def write_full_checkpoint(path: Path):
    from reference import shared_path  # bench/ is this script's folder
    keys_file, reason = shared_path("reference/svd_keys.txt")
    if keys_file is None:
        raise SystemExit(f"--full needs the real SVD-XT key layout: {reason}")
    layout = []
    for line in keys_file.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            layout.append((key, tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())))
    write_safetensors(path, [(k, s, torch.float16, lambda k=k, s=s: random_tensor(k, s)) for k, s in layout])


def diffusers_configs(models):
    """diffusers / transformers configs matching the detected vidgraph configs."""
    import transformers
    u, v, c = models.configs["unet"], models.configs["vae"], models.configs["clip_vision"]
    levels = len(u.channel_mult)
    attn = [2 ** i in u.attention_resolutions for i in range(levels)]
    unet = dict(block_out_channels=tuple(m * u.model_channels for m in u.channel_mult), layers_per_block=u.num_res_blocks,
                down_block_types=tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attn),
                up_block_types=tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in attn[::-1]),
                addition_time_embed_dim=u.adm_in_channels // 3, projection_class_embeddings_input_dim=u.adm_in_channels,
                cross_attention_dim=u.context_dim, num_frames=FRAMES,
                num_attention_heads=tuple(u.heads(m * u.model_channels)[0] for m in u.channel_mult))
    vae = dict(block_out_channels=tuple(m * v.ch for m in v.ch_mult), layers_per_block=v.num_res_blocks,
               down_block_types=("DownEncoderBlock2D",) * len(v.ch_mult), latent_channels=v.z_channels)
    clip = transformers.CLIPVisionConfig(hidden_size=c.width, intermediate_size=c.mlp_dim, num_hidden_layers=c.layers,
                                         num_attention_heads=c.heads, image_size=c.image_size, patch_size=c.patch_size,
                                         projection_dim=c.output_dim, hidden_act="gelu", layer_norm_eps=c.eps)
    return unet, vae, clip


def openclip_key(hf_key: str):
    """transformers CLIPVisionModelWithProjection key -> (OpenCLIP visual key, how to cut it)."""
    rest = hf_key.removeprefix("vision_model.")
    top = {"embeddings.class_embedding": "class_embedding", "embeddings.patch_embedding.weight": "conv1.weight",
           "embeddings.position_embedding.weight": "positional_embedding", "visual_projection.weight": "proj"}
    if rest in top:
        return top[rest], "t" if rest == "visual_projection.weight" else None
    if m := re.fullmatch(r"(pre_layrnorm|post_layernorm)\.(weight|bias)", rest):
        return f"{'ln_pre' if m.group(1) == 'pre_layrnorm' else 'ln_post'}.{m.group(2)}", None
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", rest)
    layer, name, param = m.groups()
    base = f"transformer.resblocks.{layer}."
    if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
        return f"{base}attn.in_proj_{param}", "qkv".index(name[10])
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    return f"{base}{names[name]}.{param}", None


def write_diffusers_folder(single: Path, folder: Path):
    """The single file's weights re-laid as a diffusers SVD folder, streamed tensor by tensor."""
    import diffusers
    import transformers
    from vidgraph.nodes.svd import vae as vae_mod
    from vidgraph.nodes.svd.checkpoint import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
    from vidgraph.nodes.weights import SafetensorsFile
    from vidgraph.nodes.svd.convert import unet_key_map

    source = SafetensorsFile(single)
    models = _configs_only(single)
    unet_cfg, vae_cfg, clip_cfg = diffusers_configs(models)
    with torch.device("meta"):
        unet = diffusers.UNetSpatioTemporalConditionModel(**unet_cfg)
        vae = diffusers.AutoencoderKLTemporalDecoder(**vae_cfg)
        clip = transformers.CLIPVisionModelWithProjection(clip_cfg)
    for sub, model in (("unet", unet), ("vae", vae), ("image_encoder", clip)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (clip_cfg.save_pretrained if sub == "image_encoder" else model.save_config)(folder / sub)

    read = lambda key: source.read(key)  # noqa: E731
    mapping = unet_key_map(unet.state_dict().keys())
    write_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors",
                      [(k, tuple(t.shape), torch.float16, lambda o=mapping[k]: read(UNET_PREFIX + o))
                       for k, t in unet.state_dict().items()])
    levels = len(vae_cfg["block_out_channels"])

    def vae_tensor(k, shape):
        if k.startswith("quant_conv."):  # diffusers has a 1x1 conv the original first stage lacks: identity
            return torch.eye(shape[0]).reshape(shape) if k.endswith("weight") else torch.zeros(shape)
        return read(VAE_PREFIX + vae_mod._diffusers_key(k, levels))
    write_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors",
                      [(k, tuple(t.shape), torch.float16, lambda k=k, s=tuple(t.shape): vae_tensor(k, s))
                       for k, t in vae.state_dict().items()])
    width = clip_cfg.hidden_size

    def clip_tensor(k):
        key, cut = openclip_key(k)
        t = read(CLIP_PREFIX + key)
        return t.t() if cut == "t" else t if cut is None else t[cut * width:(cut + 1) * width]
    write_safetensors(folder / "image_encoder" / "model.safetensors",
                      [(k, tuple(t.shape), torch.float16, lambda k=k: clip_tensor(k))
                       for k, t in clip.state_dict().items() if "position_ids" not in k])


def _configs_only(path):
    """Detected configs of a checkpoint without loading weights (meta tensors only)."""
    from types import SimpleNamespace
    from vidgraph.nodes.svd import clip_vision, unet, vae
    from vidgraph.nodes.svd.checkpoint import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
    from vidgraph.nodes.weights import SafetensorsFile, shapes_as_meta
    source = SafetensorsFile(path)
    part = lambda p: shapes_as_meta(source, [k for k in source.keys() if k.startswith(p)], p)  # noqa: E731
    return SimpleNamespace(configs={"unet": unet.config_from_state_dict(part(UNET_PREFIX)),
                                    "vae": vae.config_from_state_dict(part(VAE_PREFIX)),
                                    "clip_vision": clip_vision.config_from_state_dict(part(CLIP_PREFIX))})


# ---------------------------------------------------------------------------------- children

def rss_gb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1e6


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def setup(side: str, path: str, low_memory: bool, clip: bool = True):
    """Load one side; returns (load seconds, RSS after load, step(), decode())."""
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    start = time.perf_counter()
    h = SIZE // 8
    if side == "vidgraph":
        from vidgraph.nodes.svd import checkpoint
        from vidgraph.nodes.guidance import Guider
        from vidgraph.nodes.svd.denoiser import svd_model, video_cfg_function
        if clip:
            models = checkpoint.load_checkpoint(path, low_memory=low_memory)
            unet, vae = models.unet, models.vae
        else:
            unet = checkpoint.load_unet(path, low_memory=low_memory)
            vae = checkpoint.load_vae(path)
        load_s = time.perf_counter() - start
        after_load = rss_gb()
        dim = unet.config.context_dim
        micro = {"fps": 6, "motion_bucket_id": 127, "augmentation_level": 0.02}
        pos = [[torch.randn(1, 1, dim), {**micro, "concat_latent_image": torch.randn(1, 4, h, h)}]]
        neg = [[torch.zeros(1, 1, dim), {**micro, "concat_latent_image": torch.zeros(1, 4, h, h)}]]
        model = svd_model(unet, torch.float32)
        model.set_cfg_function(video_cfg_function("linear", 1.0))
        guided = Guider(model, pos, neg, cfg=2.5)
        x = torch.randn(FRAMES, 4, h, h) * 10
        z = torch.randn(FRAMES, 4, h, h)
        return load_s, after_load, lambda: guided.predict(x, torch.full((FRAMES,), 10.0)), lambda: vae.decode(z, num_frames=FRAMES)
    import diffusers
    import transformers
    folder = Path(path)
    fp32 = {"torch_dtype": torch.float32}  # the same compute dtype as vidgraph's default on the CPU
    unet = diffusers.UNetSpatioTemporalConditionModel.from_pretrained(folder / "unet", **fp32).eval()
    vae = diffusers.AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae", **fp32).eval()
    if clip:
        transformers.CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", dtype=torch.float32)
    load_s = time.perf_counter() - start
    after_load = rss_gb()
    dim = unet.config.cross_attention_dim
    emb = torch.cat([torch.randn(1, 1, dim), torch.zeros(1, 1, dim)])
    concat = torch.cat([torch.randn(1, 1, 4, h, h), torch.zeros(1, 1, 4, h, h)]).expand(2, FRAMES, 4, h, h)
    ids = torch.tensor([[5.0, 127.0, 0.02]] * 2)
    latents = torch.randn(1, FRAMES, 4, h, h) * 10
    scale = torch.linspace(1.0, 2.5, FRAMES).reshape(1, FRAMES, 1, 1, 1)
    sigma = torch.tensor(10.0)

    def step():  # the pipeline's denoising step: batched cond/uncond, per-frame guidance on v
        inp = torch.cat([latents] * 2) / (sigma ** 2 + 1) ** 0.5
        v = unet(torch.cat([inp, concat], dim=2), 0.25 * sigma.log(), encoder_hidden_states=emb,
                 added_time_ids=ids).sample
        cond, uncond = v.chunk(2)
        return uncond + scale * (cond - uncond)
    z = torch.randn(FRAMES, 4, h, h)
    return load_s, after_load, step, lambda: vae.decode(z, num_frames=FRAMES).sample


def child(side: str, path: str, repeat: int, low_memory: bool):
    """Load, then run: peak RSS of one side alone."""
    load_s, after_load, step, decode = setup(side, path, low_memory)
    with torch.inference_mode():
        step_s, decode_s = best_of(step, repeat), best_of(decode, repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps({"load_s": load_s, "rss_after_load_gb": after_load, "step_s": step_s,
                      "decode_s": decode_s, "peak_rss_gb": peak}))


def speed_child(single: str, folder: str, repeat: int, low_memory: bool):
    """Both sides in one process (no CLIP), timed alternately: machine load hits both alike."""
    *_, step_a, decode_a = setup("vidgraph", single, low_memory, clip=False)
    *_, step_b, decode_b = setup("diffusers", folder, False, clip=False)
    times = {"step_s": ([], []), "decode_s": ([], [])}
    with torch.inference_mode():
        step_a(), step_b(), decode_a(), decode_b()  # warm-up
        for _ in range(repeat):
            for key, fa, fb in (("step_s", step_a, step_b), ("decode_s", decode_a, decode_b)):
                times[key][0].append(best_of(fa, 1))
                times[key][1].append(best_of(fb, 1))
    print(json.dumps({k: [min(a), min(b)] for k, (a, b) in times.items()}))


def run_child(side, path, repeat, low_memory=False, extra=()):
    cmd = [sys.executable, __file__, "--child", side, str(path), "--repeat", str(repeat), *extra]
    if low_memory:
        cmd.append("--low-memory")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ report

def compare(title, single, folder, repeat, rounds):
    print(f"\n== {title} ({FRAMES} frames at {SIZE}x{SIZE})")
    results = {}
    for _ in range(rounds):  # fresh processes, sides alternating: load time and peak RSS of one side alone
        for side, path, low in (("diffusers", folder, False), ("vidgraph", single, False), ("vidgraph low-memory", single, True)):
            r = run_child(side.split()[0], path, repeat, low)
            results[side] = {k: min(results.get(side, r)[k], r[k]) for k in r}
    # Step and decode ratios come from one process holding both sides, timed alternately (no CLIP loaded there).
    paired = {side: run_child("speed", single, repeat, low, extra=("--folder", str(folder)))
              for side, low in (("vidgraph", False), ("vidgraph low-memory", True))}
    print(f"{'':22}{'load s':>9}{'RSS load GB':>13}{'peak GB':>9}   (one side per process, best of {rounds})")
    for side, r in results.items():
        print(f"{side:22}{r['load_s']:9.2f}{r['rss_after_load_gb']:13.2f}{r['peak_rss_gb']:9.2f}")
    print(f"{'':22}{'step s':>9}{'diffusers':>11}{'decode s':>10}{'diffusers':>11}   (same process, alternating, best of {repeat})")
    for side, p in paired.items():
        print(f"{side:22}{p['step_s'][0]:9.3f}{p['step_s'][1]:11.3f}{p['decode_s'][0]:10.3f}{p['decode_s'][1]:11.3f}")
    ref = results["diffusers"]
    for side, p in paired.items():
        r = results[side]
        ratios = {"load_s": r["load_s"] / ref["load_s"], "step_s": p["step_s"][0] / p["step_s"][1],
                  "peak_rss_gb": r["peak_rss_gb"] / ref["peak_rss_gb"]}
        parts = [f"{k.split('_')[0]} {ratios[k]:.2f}x (target <= {t}x{'' if ratios[k] <= t else ', MISSED'})"
                 for k, t in TARGETS.items()]
        parts.append(f"decode {p['decode_s'][0] / p['decode_s'][1]:.2f}x")
        print(f"  {side} / diffusers: " + ", ".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also the full-size SVD-XT (writes ~10 GB once)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vidgraph-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("SIDE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--low-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child and args.child[0] == "speed":
        return speed_child(args.child[1], args.folder, args.repeat, args.low_memory)
    if args.child:
        return child(args.child[0], args.child[1], args.repeat, args.low_memory)
    try:
        import accelerate  # noqa: F401 - diffusers loads on the meta device only with it
    except ImportError:
        print("note: accelerate is not installed, so diffusers initialises random weights before loading")
    from vidgraph.nodes.svd.tiny import write_tiny_checkpoint
    args.cache.mkdir(parents=True, exist_ok=True)
    tiny = args.cache / "svd_tiny_fp16.safetensors"
    if not tiny.exists():
        write_tiny_checkpoint(tiny)
    if not (args.cache / "tiny_diffusers" / "unet").exists():
        write_diffusers_folder(tiny, args.cache / "tiny_diffusers")
    compare("tiny config", tiny, args.cache / "tiny_diffusers", max(args.repeat, 5), args.rounds)
    if args.full:
        full = args.cache / "svd_xt_random_fp16.safetensors"
        if not full.exists():
            start = time.perf_counter()
            write_full_checkpoint(full)
            print(f"wrote {full} ({full.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")
        if not (args.cache / "full_diffusers" / "unet" / "diffusion_pytorch_model.safetensors").exists():
            write_diffusers_folder(full, args.cache / "full_diffusers")
        compare("full-size SVD-XT, fp16 file, fp32 compute", full, args.cache / "full_diffusers", args.repeat, args.rounds)


if __name__ == "__main__":
    main()
