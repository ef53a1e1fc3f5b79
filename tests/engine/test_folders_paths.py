import os

import pytest

from vidgraph.engine.context import NodeContext, current_context, use_context
from vidgraph.engine.folders import Folders
from vidgraph.engine.interrupt import Interrupted, InterruptFlag
from vidgraph.engine.paths import UnsafePathError, safe_join
from vidgraph.engine.resources import ResourceCache, estimate_nbytes


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "..\\x", "%2e%2e/x", "a%2fb",
                                 "x\x00y", "C:/x"])
def test_safe_join_refuses_escapes(tmp_path, bad):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, bad)


def test_safe_join_follows_symlinks_by_real_path(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path, root / "link")
    with pytest.raises(UnsafePathError):
        safe_join(root, "link", "secret")
    assert safe_join(root, "sub", "a.png") == root / "sub" / "a.png"
    assert safe_join(root, "", "a.png") == root / "a.png"


def test_model_lists_and_full_paths(tmp_path):
    f = Folders(base_dir=tmp_path)
    ckpt = tmp_path / "models" / "checkpoints"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "svd.safetensors").write_bytes(b"")
    (ckpt / "sub" / "b.ckpt").write_bytes(b"")
    (ckpt / "notes.txt").write_text("")
    assert f.get_filename_list("checkpoints") == ["sub/b.ckpt", "svd.safetensors"]
    assert f.get_full_path("checkpoints", "sub/b.ckpt") == str(ckpt / "sub" / "b.ckpt")
    assert f.get_full_path("checkpoints", "../checkpoints/svd.safetensors") is None
    assert f.get_full_path("checkpoints", "missing.safetensors") is None
    with pytest.raises(FileNotFoundError, match="svd.safetensors"):
        f.get_full_path_or_raise("checkpoints", "missing.safetensors")
    assert f.folder_names_and_paths["unet"] is f.folder_names_and_paths["diffusion_models"]


def test_symlinks_inside_model_folders_are_followed_but_names_cannot_climb(tmp_path):
    """A checkpoint shared by symlink (a file, or a whole linked folder) loads; `..`, absolute and
    encoded names are still refused, for every model folder."""
    shared = tmp_path / "shared_models"
    (shared / "more").mkdir(parents=True)
    (shared / "svd_xt.safetensors").write_bytes(b"weights")
    (shared / "more" / "v.safetensors").write_bytes(b"weights")
    (tmp_path / "secret.safetensors").write_bytes(b"")
    f = Folders(base_dir=tmp_path / "main")
    ckpt = f.models_dir / "checkpoints"
    vae = f.models_dir / "vae"
    ckpt.mkdir(parents=True)
    vae.mkdir(parents=True)
    os.symlink(shared / "svd_xt.safetensors", ckpt / "svd_xt.safetensors")
    os.symlink(shared / "more", vae / "linked")
    assert f.get_filename_list("checkpoints") == ["svd_xt.safetensors"]
    assert f.get_full_path_or_raise("checkpoints", "svd_xt.safetensors") == str(ckpt / "svd_xt.safetensors")
    assert f.get_full_path("vae", "linked/v.safetensors") == str(vae / "linked" / "v.safetensors")
    assert "linked/v.safetensors" in f.get_filename_list("vae")
    for bad in ("../../secret.safetensors", "linked/../../../secret.safetensors", str(tmp_path / "secret.safetensors"),
                "%2e%2e/%2e%2e/secret.safetensors", "..\\..\\secret.safetensors"):
        assert f.get_full_path("vae", bad) is None, bad
        with pytest.raises(FileNotFoundError):
            f.get_full_path_or_raise("vae", bad)


def test_symlinks_in_extra_model_paths_roots_are_followed(tmp_path):
    """An extra_model_paths.yaml root that is itself a link, holding links, works the same way."""
    real = tmp_path / "real" / "checkpoints"
    real.mkdir(parents=True)
    (tmp_path / "blob.safetensors").write_bytes(b"weights")
    os.symlink(tmp_path / "blob.safetensors", real / "a.safetensors")
    os.symlink(tmp_path / "real", tmp_path / "comfy")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text("comfyui:\n  base_path: comfy\n  checkpoints: checkpoints\n")
    f = Folders(base_dir=tmp_path / "main")
    f.load_extra_model_paths(yaml_file)
    assert f.get_filename_list("checkpoints") == ["a.safetensors"]
    assert f.get_full_path("checkpoints", "a.safetensors") == str(tmp_path / "comfy" / "checkpoints" / "a.safetensors")
    assert f.get_full_path("checkpoints", "../../blob.safetensors") is None


def test_input_and_output_containment_stays_strict(tmp_path):
    """The model-folder rule does not leak into input/output: a link leading out is refused there."""
    f = Folders(base_dir=tmp_path / "main")
    f.ensure_dirs()
    (tmp_path / "outside.png").write_bytes(b"")
    os.symlink(tmp_path / "outside.png", f.input_dir / "link.png")
    os.symlink(tmp_path, f.output_dir / "out_link")
    with pytest.raises(UnsafePathError):
        f.resolve_input("link.png")
    with pytest.raises(UnsafePathError):
        f.get_annotated_filepath("out_link/outside.png [output]")


def test_extra_model_paths_yaml(tmp_path):
    (tmp_path / "other" / "models" / "vae").mkdir(parents=True)
    (tmp_path / "other" / "models" / "vae" / "v.safetensors").write_bytes(b"")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text("comfyui:\n  base_path: other\n  vae: models/vae\n"
                         "  checkpoints: |\n    a\n    b\n  custom_nodes: nodes_here\n")
    f = Folders(base_dir=tmp_path / "main")
    f.load_extra_model_paths(yaml_file)
    assert "v.safetensors" in f.get_filename_list("vae")
    assert f.get_folder_paths("checkpoints")[-2:] == [str(tmp_path / "other" / "a"), str(tmp_path / "other" / "b")]
    assert str(tmp_path / "other" / "nodes_here") in f.get_folder_paths("custom_nodes")


def test_save_image_path_counter_and_subfolders(tmp_path):
    f = Folders(base_dir=tmp_path)
    folder, name, counter, sub, _ = f.get_save_image_path("vid/clip", f.output_dir, 64, 32)
    assert (name, counter, sub) == ("clip", 1, "vid")
    for n in (1, 7):
        open(os.path.join(folder, f"clip_{n:05}_.png"), "w").close()
    open(os.path.join(folder, "clipper_00099_.png"), "w").close()
    assert f.get_save_image_path("vid/clip", f.output_dir)[2] == 8
    assert f.get_save_image_path("img_%width%x%height%", f.output_dir, 64, 32)[1] == "img_64x32"
    for bad in ("../evil", "/abs/x", "a/../../x"):
        with pytest.raises(UnsafePathError):
            f.get_save_image_path(bad, f.output_dir)


def test_annotated_and_resolve_input(tmp_path):
    f = Folders(base_dir=tmp_path)
    assert f.get_annotated_filepath("a.png [output]") == str(f.output_dir / "a.png")
    assert f.get_annotated_filepath("a.png") == str(f.input_dir / "a.png")
    assert f.resolve_input("a.png", "s", "temp") == f.temp_dir / "s" / "a.png"
    with pytest.raises(UnsafePathError):
        f.resolve_input("../x.png")
    with pytest.raises(ValueError, match="unknown folder type"):
        f.resolve_input("x.png", type="etc")


def test_resource_cache_lru_by_bytes_and_hooks(tensor_like):
    FakeTensor = tensor_like
    released = []
    cache = ResourceCache(max_bytes=100)
    cache.add_release_hook(lambda k, v: released.append(k))
    loads = []
    load = lambda k, n: cache.get_or_load(k, lambda: loads.append(k) or FakeTensor(n))
    load("a", 10)
    load("b", 10)
    load("a", 10)  # a is now the most recent
    assert loads == ["a", "b"]
    load("c", 15)  # 40+40+60 bytes > 100: b goes first
    assert released == ["b"] and cache.keys() == ["a", "c"]
    cache.release("a")
    cache.release()
    assert released == ["b", "a", "c"] and len(cache) == 0
    assert estimate_nbytes({"x": [FakeTensor(2), b"abc"]}) == 11


def test_context_progress_interrupt_and_contextvar(tmp_path):
    events = []
    flag = InterruptFlag()
    ctx = NodeContext("p", "5", "K", Folders(base_dir=tmp_path), ResourceCache(), {}, flag,
                      lambda e, d: events.append((e, d)))
    assert current_context() is None
    with use_context(ctx):
        assert current_context() is ctx
        ctx.progress(1, 10, ("JPEG", b"jpg"))
    assert events[0] == ("progress", {"value": 1, "max": 10, "prompt_id": "p", "node": "5"})
    assert events[1][0] == "preview" and events[1][1]["image"] == b"jpg"
    flag.set()
    assert ctx.interrupted
    with pytest.raises(Interrupted):
        ctx.progress(2, 10)


def test_estimate_nbytes_walks_subclassed_containers_and_wrappers(tensor_like):
    from collections import OrderedDict

    class Wrapper:
        def __init__(self, inner):
            self.model = inner
            self.name = "vae"

    blob = tensor_like(25)  # 100 bytes
    assert estimate_nbytes(OrderedDict(a=blob, b=blob)) == 100  # counted once
    wrapped = Wrapper(Wrapper(blob))
    assert estimate_nbytes(wrapped) == 100 + len("vae")  # the same name string counts once
    assert estimate_nbytes(wrapped, skip_ids={id(blob)}) == 3
    assert estimate_nbytes(Wrapper(Wrapper(Wrapper(blob)))) == 3  # plain objects: two levels only
