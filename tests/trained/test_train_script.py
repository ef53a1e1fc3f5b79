"""tools/train_tiny_svd.py on tiny data (seconds): it writes a checkpoint the normal loader takes, and
the same seed writes the same weights."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidgraph.nodes.svd.checkpoint import load_checkpoint
from vidgraph.nodes.svd.trained import training_record

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "train_tiny_svd.py"


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("train_tiny_svd", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_tiny_svd"] = module
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)  # the script pins the thread count


def test_smoke_run_writes_a_loadable_single_file(train, tmp_path):
    out = tmp_path / "smoke.safetensors"
    assert train.main(["--smoke", "--out", str(out)]) == 0
    models = load_checkpoint(out)
    assert models.variant == "svd"
    assert models.vae.downscale == 4 and models.vae.config.temporal
    assert models.unet.config.channel_mult == train.TINY_TRAINED_UNET.channel_mult
    assert models.clip_vision.config.image_size == train.TINY_TRAINED_CLIP.image_size
    record = training_record(out)
    assert record["seed"] == 0 and record["args"]["smoke"] is True and record["train_seconds"] >= 0
    # the VAE stage is kept beside it, for a UNet-only rerun (--vae-from)
    assert (tmp_path / "smoke.vae-stage.safetensors").exists()


def test_same_seed_same_weights_other_seed_other_weights(train, tmp_path):
    paths = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        paths.append(tmp_path / f"{name}.safetensors")
        assert train.main(["--smoke", "--seed", str(seed), "--out", str(paths[-1])]) == 0
    a, b, c = (load_file(str(p)) for p in paths)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_rerun_of_the_last_stage_repeats_the_whole_run(train, tmp_path):
    """--vae-from / --unet-from rerun only the decoder stage: the file equals the one-process run's."""
    whole, staged = tmp_path / "whole.safetensors", tmp_path / "staged.safetensors"
    assert train.main(["--smoke", "--out", str(whole)]) == 0
    assert train.main(["--smoke", "--out", str(staged), "--vae-from", str(tmp_path / "whole.vae-stage.safetensors"),
                       "--unet-from", str(whole)]) == 0
    a, b = load_file(str(whole)), load_file(str(staged))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def tiny_unet_and_batch(train):
    """A fresh tiny UNet and one fixed batch: x0 [2,3,4,6,6], its first frame as concat, context, y."""
    torch.manual_seed(0)
    unet = train.VideoUNet(train.TINY_TRAINED_UNET)
    x0 = torch.randn(2, 3, 4, 6, 6)
    return unet, x0, x0[:, 0] / 0.18215, torch.randn(2, 1, 64), torch.randn(2, 768)


def test_training_step_lowers_the_loss_on_a_fixed_batch(train):
    """The objective is wired the right way round: a few optimiser steps on one batch reduce it."""
    unet, x0, concat, context, y = tiny_unet_and_batch(train)
    sigma = torch.tensor([0.5, 2.0])
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = train.unet_loss(unet, x0, concat, context, y, sigma, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_the_training_attention_kernel_computes_the_same_loss_and_gradients(train):
    """The UNet stage swaps SDPA's kernel for speed (attention_kernel): the objective must not change."""
    unet, x0, concat, context, y = tiny_unet_and_batch(train)
    sigma = torch.tensor([0.5, 20.0])

    def loss_and_grads():
        unet.zero_grad()
        loss = train.unet_loss(unet, x0, concat, context, y, sigma, torch.Generator().manual_seed(1))
        loss.backward()
        return loss.item(), [p.grad.clone() for p in unet.parameters() if p.grad is not None]

    default_loss, default_grads = loss_and_grads()
    with train.attention_kernel():
        loss, grads = loss_and_grads()
    assert loss == pytest.approx(default_loss, rel=1e-5)
    assert len(grads) == len(default_grads) > 0
    assert all(torch.allclose(g, d, rtol=1e-3, atol=1e-6) for g, d in zip(grads, default_grads))
    assert any(g.abs().sum() > 0 for g in grads[-4:])  # the comparison is not between zeros


def clip_pool(seed: int, count: int, **scene):
    """tools/tiny_training.py's ClipPool of `count` clips (SceneConfig's defaults, or `scene`)."""
    sys.path.insert(0, str(SCRIPT.parent))
    from tiny_training import ClipPool
    from vidgraph.nodes.svd.moving_shapes import SceneConfig
    return ClipPool(seed, count, SceneConfig(**scene))


def test_object_weights_raise_the_cells_the_shapes_cover(train):
    pool = clip_pool(3, 6)
    weights = train.object_weights(pool, (12, 12), 4.0)
    assert weights.shape == (6, 8, 1, 12, 12)
    covered = pool.coverage.reshape(6, 8, 1, 12, 4, 12, 4).amax((4, 6)) > 0
    assert torch.all(weights[covered] > 1) and torch.all(weights[~covered] == 1)
    assert torch.isclose(weights.max(), torch.tensor(4.0))
    assert 0.03 < covered.float().mean() < 0.3  # the shapes are a minority of the cells


def test_the_weighted_loss_is_the_even_loss_at_even_weights_and_follows_the_weights(train):
    unet, x0, concat, context, y = tiny_unet_and_batch(train)
    sigma = torch.tensor([0.5, 20.0])

    def loss(weights):
        with torch.no_grad():
            return train.unet_loss(unet, x0, concat, context, y, sigma, torch.Generator().manual_seed(1),
                                   weights=weights).item()

    even = loss(None)
    assert loss(torch.full((2, 3, 1, 6, 6), 3.0)) == pytest.approx(even, rel=1e-5)
    # the per-cell error is not uniform, so moving the weight onto one half changes the loss both ways
    left, right = torch.ones(2, 3, 1, 6, 6), torch.ones(2, 3, 1, 6, 6)
    left[..., :3] = 5
    right[..., 3:] = 5
    a, b = loss(left), loss(right)
    assert a != pytest.approx(b, rel=1e-3) and min(a, b) < even < max(a, b)


def test_object_weights_apply_from_their_noise_level_up(train):
    weights = torch.full((3, 2, 1, 4, 4), 5.0)
    gated = train.weights_from(1.0, weights, torch.tensor([0.5, 1.0, 30.0]))
    assert torch.all(gated[0] == 1) and torch.all(gated[1:] == 5)


def test_clips_are_drawn_evenly_or_more_often_with_more_shapes(train):
    pool = clip_pool(5, 30, width=16, height=16, frames=2)
    counts = pool.object_counts.double()
    assert set(counts.tolist()) == {1, 2, 3}

    def mean_count(power):
        idx = train.draw_clips(pool, 4000, torch.Generator().manual_seed(0), power)
        return counts[idx].mean().item()
    even = counts.mean().item()
    weighted_by_square = ((counts ** 2) * counts).sum().item() / (counts ** 2).sum().item()
    assert mean_count(0.0) == pytest.approx(even, abs=0.05)
    assert mean_count(2.0) == pytest.approx(weighted_by_square, abs=0.05)
    assert mean_count(2.0) > even + 0.3
