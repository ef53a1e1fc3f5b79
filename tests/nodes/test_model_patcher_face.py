"""comfy.model_patcher.ModelPatcher: ComfyUI's patching names on vidgraph's MODEL contract."""
from vidgraph.nodes.model import Model
from vidgraph.nodes.model_sampling import EDMV
from vidgraph.runtime import build_registry


def test_comfyui_patch_names_register_on_the_clone_only(folders):
    build_registry(folders, ("vidgraph.nodes",), entry_points=False, report=None)
    from comfy.model_patcher import ModelPatcher

    base = Model(network=None, sampling=EDMV(0.002, 700.0))
    assert isinstance(base, ModelPatcher)
    m = base.clone()
    assert m.is_clone(base)

    def attn1(n, context, value, info):
        return n, context, value

    def replace(q, k, v, info):
        return info["attention"](q, k, v, info["n_heads"])

    def cfg(args):
        return args["uncond"] + args["cond_scale"] * (args["cond"] - args["uncond"])

    m.set_model_attn1_patch(attn1)
    m.set_model_attn2_replace(replace, "output", 3, 1)
    m.set_model_sampler_cfg_function(cfg, disable_cfg1_optimization=True)
    m.set_model_unet_function_wrapper(lambda apply, args: apply(args["input"], args["timestep"], **args["c"]))
    m.set_model_output_block_patch(lambda h, skip, info: (h, skip))
    m.model_options["transformer_options"]["pack_flag"] = 1
    patches = m.patches
    assert [p.fn for p in patches.attention[("attn1", "input")]] == [attn1]
    (swap,) = patches.attention[("attn2", "replace")]
    assert swap.fn is replace and swap.block == ("output", 3) and swap.transformer_index == 1
    assert patches.cfg_function.fn is cfg and patches.disable_cfg1_optimization
    assert len(patches.model_wrappers) == 1 and len(patches.blocks["output_block"]) == 1
    assert m.transformer_options == {"pack_flag": 1}
    # the upstream MODEL is untouched (the result cache stays right)
    assert base.patches.attention == {} and base.patches.cfg_function is None and base.transformer_options == {}
    m.add_object_patch("model_sampling", EDMV(0.01, 100.0))
    assert m.get_model_object("model_sampling").sigma_max != base.sampling.sigma_max
