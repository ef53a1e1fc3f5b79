"""Fixtures every test area may use."""
import pytest
import torch


@pytest.fixture
def load_into_diffusers_unet():
    """Give a diffusers UNet (SVD's or SD's) the weights of one of ours, with ldm's GroupNorm eps
    (1e-5 in ResBlocks and the output norm; 1e-6 only in the transformers' input norm)."""
    from vidgraph.nodes.svd.convert import unet_key_map

    def load(ref, unet):
        for name, module in ref.named_modules():
            if isinstance(module, torch.nn.GroupNorm) and not name.endswith(".norm"):
                module.eps = 1e-5
        mine = unet.state_dict()
        mapping = unet_key_map(ref.state_dict().keys())
        assert sorted(mapping.values()) == sorted(mine)
        ref.load_state_dict({d: mine[o] for d, o in mapping.items()})
        return ref.eval()
    return load


@pytest.fixture(scope="module")
def one_torch_thread():
    """The CPU is shared: one torch thread per test module is faster than an oversubscribed pool and
    makes float reductions run in one fixed order (use with pytestmark usefixtures)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
