"""VAEDecode streams a clip past the threshold into a frame file, a few frames at a time, with the
same frames as decoding those chunks in memory; the savers downstream take the stream."""
import av
import numpy as np
import torch

from svd_nodes_support import small_prompt
from vidgraph.engine.nodecall import materialized
from vidgraph.nodes import vae_coding
from vidgraph.nodes.frames import FrameFile
from vidgraph.nodes.latents import VAEDecode
from vidgraph.nodes.vae_coding import decode_latent


def test_decode_past_the_threshold_streams_in_chunks(tiny_models, monkeypatch):
    latent = {"samples": torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    vae = tiny_models.vae
    monkeypatch.setattr(vae_coding, "STREAM_DECODE_FRAMES", 2)
    in_memory = VAEDecode().decode(latent, vae, tiny_models.env.context())[0]
    assert isinstance(in_memory, torch.Tensor)
    progress = []
    context = tiny_models.env.context(stream_frames_over_mb=0)
    context.progress = lambda done, total, preview=None: progress.append((done, total))
    streamed = VAEDecode().decode(latent, vae, context)[0]
    assert isinstance(streamed, FrameFile) and streamed.shape == in_memory.shape
    assert progress == [(2, 5), (4, 5), (5, 5)]
    same_chunks = decode_latent(vae, latent["samples"], tiny_models.env.context(), chunk=2, stream=False)
    assert torch.equal(materialized(streamed), same_chunks)


def mp4_frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def test_streamed_workflow_writes_the_same_files(svd_env):
    prompt = small_prompt(frames=4)
    plain = svd_env.executor().run(prompt)
    executor = svd_env.executor(stream_frames_over_mb=0)
    streamed = executor.run(prompt)
    assert plain.status == streamed.status == "success", streamed.error
    # the decoded clip lives in a frame file while the executor caches it
    assert len(list(svd_env.folders.temp_dir.glob("vidgraph-frames-*"))) == 1
    # SaveImage (no stream input) got a tensor; SaveAnimatedWEBP and CreateVideo read the stream
    assert np.array_equal(svd_env.frames(plain), svd_env.frames(streamed))
    webp = [svd_env.output_files(result, "7")[0] for result in (plain, streamed)]
    assert webp[0].read_bytes() == webp[1].read_bytes()
    mp4 = [svd_env.output_files(result, "9")[0] for result in (plain, streamed)]
    a, b = mp4_frames(mp4[0]), mp4_frames(mp4[1])
    # libx264 with threads does not give identical bytes run to run, even for the same frames
    assert a.shape == b.shape == (4, 64, 64, 3) and np.abs(a.astype(int) - b).mean() < 2
