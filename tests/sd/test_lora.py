"""LoRA: vidgraph's LoraLoader against diffusers' `load_lora_weights` on the same random weights (a kohya
file with LoCon convolutions and text-encoder layers, a diffusers/PEFT file), the key mapping against
diffusers' own UNet names, LoHa / LoKr consistency, strength 0, the cached input never changing, and the
errors of a LoRA that matches nothing."""
import logging

import pytest
import torch
from safetensors.torch import save_file

from vidgraph.engine.context import NodeContext
from vidgraph.engine.resources import ResourceCache
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.lora import LoHa, LoKr, LoRA, apply_lora, lora_targets, match_lora, unet_diffusers_names
from vidgraph.nodes.loaders import LoraLoader, LoraLoaderModelOnly
from vidgraph.nodes.loaders import CheckpointLoaderSimple
from vidgraph.nodes.sd.tiny import TINY_L, TINY_SD1_UNET, TINY_SDXL_UNET, write_tiny_sd_checkpoint
from vidgraph.nodes.svd.convert import unet_key_map
from vidgraph.nodes.text_conditioning import CLIPTextEncode

from sd_shared import model_folders

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folders = model_folders(tmp_path_factory.mktemp("lora"))
    for family in ("sd1", "sdxl"):
        write_tiny_sd_checkpoint(folders.models_dir / "checkpoints" / f"tiny_{family}.safetensors", family,
                                 dtype=torch.float32)
    context = NodeContext("p", "1", "LoraLoader", folders, ResourceCache(), {"device": "cpu", "previews": False})
    return folders, context


def loaded(env, family="sd1"):
    _, context = env
    return CheckpointLoaderSimple().load_checkpoint(f"tiny_{family}.safetensors", context)


def diffusers_twin(cfg, xl=False):
    """diffusers' UNet2DConditionModel in the layout of a vidgraph UNet config (random weights)."""
    diffusers = pytest.importorskip("diffusers")
    heads = tuple(cfg.heads(32 * m)[0] for m in cfg.channel_mult)
    kind = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=heads, transformer_layers_per_block=cfg.transformer_depth, use_linear_projection=True,
                addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=cfg.adm_in_channels) if xl else dict(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=heads)
    ref = diffusers.UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=2,
                                         cross_attention_dim=cfg.context_dim, norm_num_groups=32, **kind)
    for name, module in ref.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and not name.endswith(".norm"):
            module.eps = 1e-5
    return ref.eval()


def diffusers_unet(model):
    """diffusers' UNet with the weights of vidgraph's tiny SD 1.x UNet (heads as the loader detected them)."""
    ref = diffusers_twin(model.network.module.config)
    mine = model.network.module.state_dict()
    mapping = unet_key_map(ref.state_dict().keys())
    ref.load_state_dict({d: mine[o].float() for d, o in mapping.items()})
    return ref


def transformers_text_encoder(clip):
    transformers = pytest.importorskip("transformers")
    tower = clip.towers[0].model
    cfg = tower.config
    hf = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, max_position_embeddings=cfg.max_positions, hidden_act=cfg.activation,
        eos_token_id=49407)).eval()
    mine = tower.state_dict()
    hf.load_state_dict({k: mine[k.removeprefix("text_model.")].float() for k in hf.state_dict()
                        if not k.endswith("position_ids")}, strict=False)
    return hf


def kohya_lora(unet_ref, text_ref, rank=4, seed=0):
    """A kohya file on diffusers' module names: attention / feed-forward / projections (LoRA) and resnet
    convolutions (LoCon, 3x3 down), text-encoder attention and MLP; alphas differ from the rank."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def add(name, module):
        if isinstance(module, torch.nn.Conv2d):
            down = torch.randn(rank, module.in_channels, *module.kernel_size, generator=g) * 0.2
            up = torch.randn(module.out_channels, rank, 1, 1, generator=g) * 0.2
        else:
            down = torch.randn(rank, module.in_features, generator=g) * 0.2
            up = torch.randn(module.out_features, rank, generator=g) * 0.2
        sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"] = down, up
        sd[f"{name}.alpha"] = torch.tensor(float(rank) / 2)

    for name, module in unet_ref.named_modules():
        adapted = "attentions" in name or ("resnets" in name and name.endswith(("conv1", "conv2", "time_emb_proj")))
        if adapted and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            add("lora_unet_" + name.replace(".", "_"), module)
    for name, module in text_ref.named_modules():
        if name.startswith("text_model.encoder.layers.") and isinstance(module, torch.nn.Linear):
            add("lora_te_" + name.replace(".", "_"), module)
    return sd


def pipeline(unet_ref, text_ref):
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    vae = diffusers.AutoencoderKL(block_out_channels=(32,), norm_num_groups=32, latent_channels=4)
    return diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_ref, tokenizer=None, unet=unet_ref,
                                             scheduler=diffusers.DDPMScheduler(), safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)


def unet_outputs(model, ref, context_width):
    g = torch.Generator().manual_seed(5)
    x, context, t = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 7, context_width, generator=g), torch.tensor([500.0])
    with torch.no_grad(), model.active(lambda module: _nothing()):
        ours = model.network.module(x, t, context)
    with torch.no_grad():
        theirs = ref(x, t, context).sample
    return ours, theirs


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def text_outputs(clip, ref):
    tokens = torch.tensor([[49406, 320, 1674, 3588, 49407] + [49407] * 72])
    with torch.no_grad():
        theirs = ref(tokens).last_hidden_state
    from contextlib import ExitStack
    from vidgraph.nodes.weight_patches import patched_weights
    tower = clip.towers[0]
    with torch.no_grad(), ExitStack() as stack:
        stack.enter_context(patched_weights(tower.model, {k[2:]: v for k, v in clip.patches.items() if k.startswith("l.")}))
        ours = tower.model(tokens).last
    return ours, theirs


def write_lora(env, name, sd):
    folders, _ = env
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folders.models_dir / "loras" / name))
    return name


def test_kohya_lora_with_locon_matches_diffusers_load_lora_weights(env):
    model, clip, _ = loaded(env)
    unet_ref, text_ref = diffusers_unet(model), transformers_text_encoder(clip)
    lora = kohya_lora(unet_ref, text_ref)
    assert any(v.ndim == 4 and v.shape[-1] == 3 for v in lora.values())  # LoCon 3x3 convolutions are in
    before_unet, _ = unet_outputs(model, unet_ref, TINY_L.width)
    pipe = pipeline(unet_ref, text_ref)
    pipe.load_lora_weights({k: v.clone() for k, v in lora.items()})
    name = write_lora(env, "kohya.safetensors", lora)
    _, context = env
    patched_model, patched_clip = LoraLoader().load_lora(model, clip, name, 1.0, 1.0, context=context)["result"]
    ours, theirs = unet_outputs(patched_model, pipe.unet, TINY_L.width)
    assert (theirs - before_unet).abs().max() > 0.05  # the LoRA changes the output
    assert (ours - theirs).abs().max() <= 1e-4, (ours - theirs).abs().max()
    ours_text, theirs_text = text_outputs(patched_clip, pipe.text_encoder)
    assert (ours_text - theirs_text).abs().max() <= 1e-4, (ours_text - theirs_text).abs().max()
    # the loader's cached MODEL / CLIP are unchanged, and give the un-patched output again
    again, _ = unet_outputs(model, unet_ref, TINY_L.width)
    assert torch.equal(again, before_unet) and not model.weight_patches and not clip.patches


def test_diffusers_peft_format_matches_diffusers(env):
    """The keys diffusers itself writes (`unet.<path>.lora_A.weight`, `text_encoder.text_model...`)."""
    model, clip, _ = loaded(env)
    unet_ref, text_ref = diffusers_unet(model), transformers_text_encoder(clip)
    kohya = kohya_lora(unet_ref, text_ref, seed=1)
    peft_sd = {}
    for name, module in list(unet_ref.named_modules()) + [("te." + n, m) for n, m in text_ref.named_modules()]:
        kohya_name = ("lora_te_" + name[3:] if name.startswith("te.") else "lora_unet_" + name).replace(".", "_")
        if f"{kohya_name}.lora_down.weight" in kohya and isinstance(module, torch.nn.Linear):
            prefix = "text_encoder." + name[3:] if name.startswith("te.") else "unet." + name
            peft_sd[f"{prefix}.lora_A.weight"] = kohya[f"{kohya_name}.lora_down.weight"]
            peft_sd[f"{prefix}.lora_B.weight"] = kohya[f"{kohya_name}.lora_up.weight"]
    pipe = pipeline(unet_ref, text_ref)
    pipe.load_lora_weights({k: v.clone() for k, v in peft_sd.items()})
    patched_model, patched_clip, found = apply_lora(model, clip, peft_sd)
    assert not found.unmatched and found.count() == len(peft_sd) // 2
    ours, theirs = unet_outputs(patched_model, pipe.unet, TINY_L.width)
    assert (ours - theirs).abs().max() <= 1e-4
    ours_text, theirs_text = text_outputs(patched_clip, pipe.text_encoder)
    assert (ours_text - theirs_text).abs().max() <= 1e-4


@pytest.mark.parametrize("xl", [False, True], ids=["sd1", "sdxl"])
def test_unet_names_agree_with_diffusers(xl):
    from dataclasses import replace
    from vidgraph.nodes.sd.unet import UNet
    cfg = replace(TINY_SDXL_UNET, transformer_depth_middle=2) if xl else TINY_SD1_UNET  # diffusers' mid depth = last level's
    ref = diffusers_twin(cfg, xl)
    theirs = {o.rsplit(".", 1)[0]: d.rsplit(".", 1)[0] for d, o in unet_key_map(ref.state_dict().keys()).items()}
    with torch.device("meta"):
        keys = list(UNet(cfg).state_dict())
    assert unet_diffusers_names(keys, cfg.num_res_blocks) == theirs


def test_sdxl_kohya_ldm_names_and_both_text_encoders(env):
    model, clip, _ = loaded(env, "sdxl")
    g = torch.Generator().manual_seed(2)
    lora = {}
    for name, (rows, cols) in {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (64, 64),
                               "lora_unet_middle_block_1_proj_in": (64, 64),
                               "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (64, 64),
                               "lora_te2_text_model_encoder_layers_0_mlp_fc1": (128, 96)}.items():
        lora[f"{name}.lora_up.weight"] = torch.randn(rows, 2, generator=g)
        lora[f"{name}.lora_down.weight"] = torch.randn(2, cols, generator=g)
    lora["lora_unet_nowhere_to_q.lora_up.weight"] = torch.zeros(4, 2)
    found = match_lora(lora, lora_targets(model, clip))
    assert found.count("model") == 2 and found.count("l") == 1 and found.count("g") == 1
    assert found.unmatched == ["lora_unet_nowhere_to_q.lora_up.weight"]
    assert set(found.patches["model"]) == {"input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
                                           "middle_block.1.proj_in.weight"}
    _, context = env
    _, patched_clip = LoraLoader().load_lora(model, clip, write_lora(env, "xl.safetensors", lora), 1.0, 1.0,
                                             context=context)["result"]
    plain = CLIPTextEncode().encode("a cat", clip, context)[0][0][0]
    changed = CLIPTextEncode().encode("a cat", patched_clip, context)[0][0][0]
    width_l = clip.towers[0].model.config.width
    assert (changed[..., :width_l] - plain[..., :width_l]).abs().max() > 1e-3   # CLIP-L half
    assert (changed[..., width_l:] - plain[..., width_l:]).abs().max() > 1e-3   # bigG half


def test_loha_and_lokr_reduce_to_the_lora_they_contain():
    """LoHa with an all-ones second factor and LoKr with a 1x1 first factor are that LoRA."""
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(6, 5)
    up, down = torch.randn(6, 3, generator=g), torch.randn(3, 5, generator=g)
    lora = LoRA(up, down, alpha=1.5).delta(weight)
    loha = LoHa(up, down, torch.ones(6, 1), torch.ones(1, 5), alpha=1.5).delta(weight)
    lokr = LoKr(w1=torch.ones(1, 1), w2a=up, w2b=down, alpha=1.5).delta(weight)
    assert torch.allclose(lora, up @ down * 0.5)
    assert torch.allclose(loha, lora) and torch.allclose(lokr, lora)
    conv = torch.randn(4, 2, 3, 3)  # LoKr on a convolution: kron of a [2,1] and a [2,2,3,3] factor
    w2 = torch.randn(2, 2, 3, 3, generator=g)
    delta = LoKr(w1=torch.tensor([[1.0], [2.0]]), w2=w2).delta(conv)
    assert torch.equal(delta[:2], w2) and torch.equal(delta[2:], 2 * w2)


def test_lycoris_keys_are_read(env):
    model, clip, _ = loaded(env)
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    sd = {f"{base}.hada_w1_a": torch.randn(32, 2), f"{base}.hada_w1_b": torch.randn(2, 32),
          f"{base}.hada_w2_a": torch.randn(32, 2), f"{base}.hada_w2_b": torch.randn(2, 32), f"{base}.alpha": torch.tensor(1.0),
          "lora_te_text_model_encoder_layers_0_mlp_fc2.lokr_w1": torch.randn(2, 2),
          "lora_te_text_model_encoder_layers_0_mlp_fc2.lokr_w2": torch.randn(32, 64)}
    found = match_lora(sd, lora_targets(model, clip))
    assert isinstance(found.patches["model"]["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"], LoHa)
    assert isinstance(found.patches["l"]["encoder.layers.0.mlp.fc2.weight"], LoKr)
    assert found.matched_keys == len(sd)


def test_strength_zero_is_no_lora_and_strengths_scale(env):
    model, clip, _ = loaded(env)
    unet_ref, text_ref = diffusers_unet(model), transformers_text_encoder(clip)
    name = write_lora(env, "scale.safetensors", kohya_lora(unet_ref, text_ref, seed=4))
    _, context = env
    same = LoraLoader().load_lora(model, clip, name, 0.0, 0.0, context=context)
    assert same[0] is model and same[1] is clip
    assert LoraLoaderModelOnly().load_lora_model_only(model, name, 0.0, context=context)[0] is model
    half = LoraLoaderModelOnly().load_lora_model_only(model, name, 0.5, context=context)["result"][0]
    full = LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0, context=context)["result"][0]
    plain, _ = unet_outputs(model, unet_ref, TINY_L.width)
    a, _ = unet_outputs(half, unet_ref, TINY_L.width)
    b, _ = unet_outputs(full, unet_ref, TINY_L.width)
    assert (a - plain).abs().max() > 1e-3 and (b - a).abs().max() > 1e-3
    # only the weights a patch names change, and they come back after the run
    weights = {k: v.clone() for k, v in model.network.module.state_dict().items()}
    with full.active(lambda module: _nothing()):
        inside = model.network.module.state_dict()
        changed = [k for k in weights if not torch.equal(inside[k], weights[k])]
    assert changed and all(k in full.weight_patches for k in changed)
    assert all(torch.equal(v, weights[k]) for k, v in model.network.module.state_dict().items())


def test_a_lora_that_matches_nothing_is_an_error_naming_node_and_file(env, caplog):
    model, clip, _ = loaded(env)
    _, context = env
    name = write_lora(env, "other.safetensors", {"lora_transformer_blocks_0_attn_to_q.lora_up.weight": torch.zeros(4, 2),
                                                 "lora_transformer_blocks_0_attn_to_q.lora_down.weight": torch.zeros(2, 4)})
    with pytest.raises(NodeInputError, match=r"^LoraLoader: input 'lora_name': 'other.safetensors' matches no weight"
                                             r".*0 of 2 keys matched"):
        LoraLoader().load_lora(model, clip, name, 1.0, 1.0, context=context)
    text_only = write_lora(env, "te.safetensors", {
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(128, 2),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 64)})
    with pytest.raises(NodeInputError, match="^LoraLoaderModelOnly: input 'lora_name': .*text encoder"):
        LoraLoaderModelOnly().load_lora_model_only(model, text_only, 1.0, context=context)
    partly = write_lora(env, "partly.safetensors", {
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(128, 2),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 64),
        "lora_unet_nowhere.lora_up.weight": torch.zeros(2, 2)})
    with caplog.at_level(logging.WARNING):
        out = LoraLoader().load_lora(model, clip, partly, 1.0, 1.0, context=context)
    assert "2 of 3 keys matched" in out["ui"]["text"][0] and "1 ignored" in out["ui"]["text"][0]
    assert "lora_unet_nowhere" in caplog.text


def test_model_patcher_add_patches_face_uses_the_same_mechanism(env):
    model, _, _ = loaded(env)
    key = "diffusion_model.input_blocks.1.1.proj_in.weight"
    weight = model.network.module.state_dict()[key[len("diffusion_model."):]]
    twin = model.clone()
    applied = twin.add_patches({key: ("diff", (torch.ones_like(weight),)), "diffusion_model.nothing.weight": torch.ones(1)},
                               strength_patch=0.5, strength_model=2.0)
    assert applied == [key]
    with twin.active(lambda module: _nothing()):
        assert torch.allclose(model.network.module.state_dict()[key[16:]], weight * 2.0 + 0.5)
    assert torch.equal(model.network.module.state_dict()[key[16:]], weight)
    assert not model.weight_patches


def test_a_cached_centre_tap_follows_each_patch():
    """The UNet's 3x3 conv on a 1x1 map caches its centre tap; a second patch whose tensor lands at the freed
    address of the first must not reuse it."""
    from vidgraph.nodes.sd.unet import Conv2d
    from vidgraph.nodes.weight_patches import Diff, PatchEntry, patched_weights
    conv = Conv2d(4, 4, 3, padding=1).requires_grad_(False)
    x = torch.randn(1, 4, 1, 1)
    plain = conv(x)
    outputs = []
    for scale in (1.0, 2.0, 3.0):
        with patched_weights(conv, {"weight": (PatchEntry(Diff(torch.ones(4, 4, 3, 3)), scale),)}):
            assert "_centre" not in conv.__dict__  # the swap forgot the old tap (addresses may be reused)
            outputs.append(conv(x))
            assert "_centre" in conv.__dict__
        assert "_centre" not in conv.__dict__
        assert torch.equal(conv(x), plain)
    expected = [plain + s * x.sum(dim=1, keepdim=True) for s in (1.0, 2.0, 3.0)]  # the centre taps of the ones
    assert all(torch.allclose(o, e, atol=1e-5) for o, e in zip(outputs, expected))


def test_sdxl_kohya_lora_matches_diffusers_load_lora_weights(env):
    """kohya's SDXL file: UNet on the original ldm names (input_blocks / middle_block / output_blocks, LoCon
    on the resnets), CLIP-L as lora_te1_ and bigG as lora_te2_; diffusers' StableDiffusionXLPipeline loads it."""
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    from sd_shared import diffusers_modules
    from vidgraph.nodes.sd.unet import timestep_embedding
    from vidgraph.nodes.sd.checkpoint import load_sd_checkpoint
    folders, context = env
    models = load_sd_checkpoint(folders.models_dir / "checkpoints" / "tiny_sdxl.safetensors")
    model, clip = models.model, models.clip
    refs = diffusers_modules(models)
    g = torch.Generator().manual_seed(6)
    lora = {}
    for name, module in model.network.module.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and (
                ".transformer_blocks." in name or name.endswith(("in_layers.2", "out_layers.3"))):
            shape_down = (2, module.in_features) if isinstance(module, torch.nn.Linear) else (2, module.in_channels, *module.kernel_size)
            shape_up = (module.out_features, 2) if isinstance(module, torch.nn.Linear) else (module.out_channels, 2, 1, 1)
            base = "lora_unet_" + name.replace(".", "_")
            lora.update({f"{base}.lora_down.weight": torch.randn(shape_down, generator=g) * 0.3,
                         f"{base}.lora_up.weight": torch.randn(shape_up, generator=g) * 0.3, f"{base}.alpha": torch.tensor(1.0)})
    for prefix, tower in (("lora_te1_", clip.towers[0]), ("lora_te2_", clip.towers[1])):
        for name, module in tower.model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.startswith("encoder.layers.0."):
                base = prefix + ("text_model." + name).replace(".", "_")
                lora.update({f"{base}.lora_down.weight": torch.randn(2, module.in_features, generator=g) * 0.3,
                             f"{base}.lora_up.weight": torch.randn(module.out_features, 2, generator=g) * 0.3})
    pipe = diffusers.StableDiffusionXLPipeline(vae=refs["vae"], text_encoder=refs["text_encoder"],
                                               text_encoder_2=refs["text_encoder_2"], tokenizer=None, tokenizer_2=None,
                                               unet=refs["unet"], scheduler=diffusers.EulerDiscreteScheduler())
    pipe.load_lora_weights({k: v.clone() for k, v in lora.items()})
    patched_model, patched_clip, found = apply_lora(model, clip, lora)
    assert not found.unmatched and found.count("l") == found.count("g") == 6 and found.count("model") > 40
    x, context_ = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 7, 160, generator=g)
    pooled, time_ids, t = torch.randn(1, 96, generator=g), torch.tensor([[128.0, 128, 0, 0, 128, 128]]), torch.tensor([400.0])
    y = torch.cat([pooled, timestep_embedding(time_ids.flatten(), 256).reshape(1, -1)], dim=1)
    with torch.no_grad():
        theirs = pipe.unet(x, t, context_, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        with patched_model.active(lambda module: _nothing()):
            ours = patched_model.network.module(x, t, context_, y)
        plain = model.network.module(x, t, context_, y)
    assert (theirs - plain).abs().max() > 0.05
    assert (ours - theirs).abs().max() <= 1e-4, (ours - theirs).abs().max()
    from vidgraph.nodes.weight_patches import patched_weights
    tokens = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73])
    for index, (sub, tower) in enumerate((("text_encoder", "l"), ("text_encoder_2", "g"))):
        table = {k[2:]: v for k, v in patched_clip.patches.items() if k.startswith(tower + ".")}
        with torch.no_grad(), patched_weights(patched_clip.towers[index].model, table):
            mine = patched_clip.towers[index].model(tokens).last
        reference = getattr(pipe, sub)(tokens).last_hidden_state
        assert (mine - reference).abs().max() <= 1e-4, sub
