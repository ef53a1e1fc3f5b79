"""Staged outputs: counters continue the real folder's, a taken name gets the next number (and the
ui entry follows), and a dead delivery's published files are taken back, never another job's."""
from vidgraph.engine.folders import Folders
from vidgraph.server.output_staging import JobOutputs, has_output_files


def stage(folders, outputs_obj, prefix="clips/run"):
    staged = outputs_obj.folders(folders)
    folder, name, counter, subfolder, _ = staged.get_save_image_path(prefix, staged.output_dir)
    path = f"{folder}/{name}_{counter:05}_.png"
    with open(path, "wb") as f:
        f.write(b"png-bytes-" + str(counter).encode())
    return {"images": [{"filename": f"{name}_{counter:05}_.png", "subfolder": subfolder,
                        "type": "output"}]}


def test_counters_continue_the_real_folder_and_a_taken_name_is_renumbered(tmp_path):
    folders = Folders(base_dir=tmp_path)
    real = folders.output_dir / "clips"
    real.mkdir(parents=True)
    (real / "run_00004_.png").write_bytes(b"older")
    job = JobOutputs(folders.output_dir, "prompt/with/slashes", "w1-1")
    ui = stage(folders, job)
    assert ui["images"][0]["filename"] == "run_00005_.png"  # past the real folder's 4
    assert has_output_files(ui) and not has_output_files({"text": ["x"]})
    (real / "run_00005_.png").write_bytes(b"another worker got here first")
    outputs = {"9": ui}
    assert job.publish(outputs) == {("clips", "run_00005_.png"): "run_00006_.png"}
    assert outputs["9"]["images"][0]["filename"] == "run_00006_.png"
    assert (real / "run_00006_.png").read_bytes() == b"png-bytes-5"
    assert (real / "run_00005_.png").read_bytes() == b"another worker got here first"
    job.discard()
    assert not (folders.output_dir / ".vidgraph-staging").exists() or \
        not any((folders.output_dir / ".vidgraph-staging").rglob("*.png"))
    assert (real / "run_00006_.png").exists()  # the published file outlives its staging folder


def test_the_next_delivery_takes_back_what_a_dead_one_published(tmp_path):
    folders = Folders(base_dir=tmp_path)
    dead = JobOutputs(folders.output_dir, "p", "w1-1")
    ui = stage(folders, dead)
    dead.publish({"1": ui})  # ...and the worker died before writing the history entry
    real = folders.output_dir / "clips"
    assert sorted(p.name for p in real.iterdir()) == ["run_00001_.png"]
    # an identical file another job wrote under a name the dead delivery only tried
    (dead.root / ".published").open("a").write('["clips/run_00001_.png", "%s"]\n'
                                                % (real / "run_00009_.png"))
    (real / "run_00009_.png").write_bytes(b"png-bytes-1")
    retry = JobOutputs(folders.output_dir, "p", "w2-2")
    assert retry.undo_other_deliveries() == 1
    assert sorted(p.name for p in real.iterdir()) == ["run_00009_.png"]
    assert not dead.root.exists()
    ui = stage(folders, retry)
    retry.publish({"1": ui})
    assert sorted(p.name for p in real.iterdir()) == ["run_00009_.png", "run_00010_.png"]
