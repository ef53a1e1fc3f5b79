"""Numbered output files: ComfyUI's names, sub-folders, no overwrite, atomic writes."""
import os

import pytest

from vidgraph.engine.paths import UnsafePathError
from vidgraph.nodes.outputs import OutputFiles


def write_text(text):
    def write(path):
        with open(path, "w") as f:
            f.write(text)
    return write


def test_names_count_up_from_existing_files(folders):
    (folders.output_dir / "clip_00007_.png").write_text("old")
    (folders.output_dir / "other_00042_.png").write_text("another prefix")
    files = OutputFiles(folders, "clip")
    first = files.save(write_text("a"), "png")
    second = files.save(write_text("b"), "png")
    assert first == {"filename": "clip_00008_.png", "subfolder": "", "type": "output"}
    assert second["filename"] == "clip_00009_.png"
    assert (folders.output_dir / "clip_00008_.png").read_text() == "a"
    assert (folders.output_dir / "clip_00007_.png").read_text() == "old"


def test_subfolders_in_prefix_and_temp_kind(folders):
    entry = OutputFiles(folders, "svd/run1/frame", kind="temp").save(write_text("x"), "png")
    assert entry == {"filename": "frame_00001_.png", "subfolder": "svd/run1", "type": "temp"}
    assert (folders.temp_dir / "svd" / "run1" / "frame_00001_.png").is_file()


def test_never_overwrites_a_file_created_after_numbering(folders):
    files = OutputFiles(folders, "race")
    # Another writer takes the number this call picked, between numbering and writing.
    (folders.output_dir / "race_00001_.png").write_text("theirs")
    entry = files.save(write_text("ours"), "png")
    assert entry["filename"] == "race_00002_.png"
    assert (folders.output_dir / "race_00001_.png").read_text() == "theirs"
    assert (folders.output_dir / "race_00002_.png").read_text() == "ours"


def test_failed_write_leaves_nothing_behind(folders):
    def crash(path):
        with open(path, "w") as f:
            f.write("half")
        raise RuntimeError("encoder died")

    files = OutputFiles(folders, "broken")
    with pytest.raises(RuntimeError, match="encoder died"):
        files.save(crash, "mp4")
    assert os.listdir(folders.output_dir) == []


def test_batch_number_placeholder(folders):
    files = OutputFiles(folders, "img_%batch_num%")
    names = [files.save(write_text(str(i)), "png", batch_number=i)["filename"] for i in range(2)]
    assert names == ["img_0_00001_.png", "img_1_00002_.png"]


@pytest.mark.parametrize("prefix", ["../escape", "/etc/evil", "a/../../b", "sub\\..\\x"])
def test_prefix_cannot_leave_the_output_folder(folders, prefix):
    with pytest.raises(UnsafePathError):
        OutputFiles(folders, prefix)
    assert not (folders.base_dir / "escape_00001_.png").exists()
