"""Exactly-once output files for jobs that may run more than once (a worker killed mid-job).

Each delivery of a job writes into its own staging folder, `output/.vidgraph-staging/<job>/<delivery>/`.
When the job is done the worker *publishes*: every staged file gets a name in the real output
folder through a hard link (atomic, never replacing a file), each link journaled first. Then the
history entry is written; then the staging folder goes. A delivery that dies before its history
entry exists is undone by the next one: the files its journal says it linked are removed (only
when they are still the very same file), so a job's outputs appear once, whoever finished it.

Counters follow ComfyUI's `<prefix>_NNNNN_` scheme across both folders, so a staged name is normally
the final one; when another worker took that name meanwhile, the file gets the next free number
and the job's ui entries are renamed in place (so the engine's cached copy follows).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from vidgraph.engine.files import claim_name
from vidgraph.engine.folders import Folders, next_counter

STAGING_DIR = ".vidgraph-staging"
JOURNAL = ".published"
NUMBERED = re.compile(r"^(?P<stem>.*)_(?P<n>\d{5,})_(?P<rest>.*)$")


class StagedFolders(Folders):
    """A job's folders: outputs land in its staging folder, numbered past the real folder's."""

    def __init__(self, base: Folders, staging: Path):  # noqa: super().__init__ would rebuild paths
        self.__dict__.update(base.__dict__)
        self.final_output_dir = base.output_dir
        self.output_dir = staging

    def get_save_image_path(self, filename_prefix: str, output_dir=None, image_width: int = 0,
                            image_height: int = 0):
        folder, filename, counter, subfolder, prefix = super().get_save_image_path(
            filename_prefix, output_dir, image_width, image_height)
        if Path(output_dir if output_dir is not None else self.output_dir) == self.output_dir:
            real = self.final_output_dir / subfolder
            if real.is_dir():
                counter = max(counter, next_counter(real, filename))
        return folder, filename, counter, subfolder, prefix


class JobOutputs:
    def __init__(self, output_dir: Path, prompt_id: str, delivery: str):
        job_dir = hashlib.sha256(prompt_id.encode()).hexdigest()[:32]
        self.final = Path(output_dir)
        self.job_root = self.final / STAGING_DIR / job_dir
        self.root = self.job_root / delivery

    def folders(self, base: Folders) -> StagedFolders:
        self.root.mkdir(parents=True, exist_ok=True)
        return StagedFolders(base, self.root)

    def undo_other_deliveries(self) -> int:
        """Remove what earlier, dead deliveries of this job published; returns the files removed."""
        removed = 0
        if self.job_root.is_dir():
            for other in self.job_root.iterdir():
                if other != self.root and other.is_dir():
                    removed += _undo(other)
                    shutil.rmtree(other, ignore_errors=True)
        return removed

    def publish(self, outputs: dict) -> dict[tuple[str, str], str]:
        """Give every staged file its final name; rename ui entries whose name was taken.
        Returns {(subfolder, staged name): final name} for the renamed ones."""
        renamed: dict[tuple[str, str], str] = {}
        if not self.root.is_dir():
            return renamed
        journal_path = self.root / JOURNAL
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and p != journal_path)
        with open(journal_path, "a") as journal:
            for staged in files:
                relative = staged.relative_to(self.root)
                target_dir = self.final / relative.parent
                target_dir.mkdir(parents=True, exist_ok=True)
                for name in _candidates(relative.name, target_dir):
                    journal.write(json.dumps([relative.as_posix(), str(target_dir / name)]) + "\n")
                    journal.flush()
                    os.fsync(journal.fileno())
                    if claim_name(staged, target_dir / name):
                        break
                if name != relative.name:
                    subfolder = "" if relative.parent == Path(".") else relative.parent.as_posix()
                    renamed[(subfolder, relative.name)] = name
        if renamed:
            _rename_ui(outputs, renamed)
        return renamed

    def undo(self) -> int:
        """Take back what this delivery published (it lost its lease to another worker)."""
        return _undo(self.root)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.job_root.rmdir()
        except OSError:
            pass


def has_output_files(ui) -> bool:
    return any(item.get("type") == "output" for item in _file_items(ui))


def _file_items(ui):
    if not isinstance(ui, dict):
        return
    for items in ui.values():
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    yield item


def _rename_ui(outputs: dict, renamed: dict) -> None:
    for ui in outputs.values():
        for item in _file_items(ui):
            key = (item.get("subfolder") or "", item["filename"])
            if item.get("type") == "output" and key in renamed:
                item["filename"] = renamed[key]


def _candidates(name: str, folder: Path):
    yield name
    numbered = NUMBERED.match(name)
    if numbered:
        stem, rest = numbered["stem"], numbered["rest"]
        counter = next_counter(folder, stem)
        while True:
            yield f"{stem}_{counter:05}_{rest}"
            counter += 1
    stem, ext = os.path.splitext(name)
    counter = 1
    while True:
        yield f"{stem}_{counter}{ext}"
        counter += 1


def _undo(delivery_dir: Path) -> int:
    journal = delivery_dir / JOURNAL
    if not journal.is_file():
        return 0
    removed = 0
    for line in journal.read_text().splitlines():
        try:
            relative, target = json.loads(line)
        except ValueError:
            continue  # the line being written when the process died
        staged, target = delivery_dir / relative, Path(target)
        try:
            # Only the very same file: another job may have written an identical one under it.
            same = os.path.samefile(staged, target)
        except OSError:
            continue
        if same:
            target.unlink(missing_ok=True)
            removed += 1
    return removed
