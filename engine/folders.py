"""Model, input, output and temp folders: ComfyUI's folder_paths as an object, not module globals.

The compatibility module `folder_paths` (see compat.py) is a thin face over one of these.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .paths import UnsafePathError, join_below, safe_join

MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

# folder name -> sub-folders of models_dir (ComfyUI's layout and defaults)
MODEL_FOLDERS: dict[str, tuple[list[str], set[str]]] = {
    "checkpoints": (["checkpoints"], MODEL_EXTENSIONS),
    "configs": (["configs"], {".yaml"}),
    "loras": (["loras"], MODEL_EXTENSIONS),
    "vae": (["vae"], MODEL_EXTENSIONS),
    "text_encoders": (["text_encoders", "clip"], MODEL_EXTENSIONS),
    "diffusion_models": (["unet", "diffusion_models"], MODEL_EXTENSIONS),
    "clip_vision": (["clip_vision"], MODEL_EXTENSIONS),
    "style_models": (["style_models"], MODEL_EXTENSIONS),
    "embeddings": (["embeddings"], MODEL_EXTENSIONS),
    "diffusers": (["diffusers"], {"folder"}),
    "vae_approx": (["vae_approx"], MODEL_EXTENSIONS),
    "controlnet": (["controlnet", "t2i_adapter"], MODEL_EXTENSIONS),
    "gligen": (["gligen"], MODEL_EXTENSIONS),
    "upscale_models": (["upscale_models"], MODEL_EXTENSIONS),
    "hypernetworks": (["hypernetworks"], MODEL_EXTENSIONS),
    "photomaker": (["photomaker"], MODEL_EXTENSIONS),
    "classifiers": (["classifiers"], {""}),
    "model_patches": (["model_patches"], MODEL_EXTENSIONS),
    "audio_encoders": (["audio_encoders"], MODEL_EXTENSIONS),
}
# Old names that ComfyUI still accepts; they share the list of the new name.
LEGACY_FOLDER_NAMES = {"clip": "text_encoders", "unet": "diffusion_models"}

ANNOTATIONS = ("input", "output", "temp")


class Folders:
    def __init__(self, base_dir=None, models_dir=None, input_dir=None, output_dir=None,
                 temp_dir=None, user_dir=None):
        base = Path(base_dir if base_dir is not None else os.getcwd()).absolute()
        self.base_dir = base
        self.models_dir = Path(models_dir).absolute() if models_dir else base / "models"
        self.input_dir = Path(input_dir).absolute() if input_dir else base / "input"
        self.output_dir = Path(output_dir).absolute() if output_dir else base / "output"
        self.temp_dir = Path(temp_dir).absolute() if temp_dir else base / "temp"
        self.user_dir = Path(user_dir).absolute() if user_dir else base / "user"
        self.folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
        for name, (subdirs, extensions) in MODEL_FOLDERS.items():
            self.folder_names_and_paths[name] = (
                [str(self.models_dir / s) for s in subdirs], set(extensions))
        for old, new in LEGACY_FOLDER_NAMES.items():
            self.folder_names_and_paths[old] = self.folder_names_and_paths[new]
        self.folder_names_and_paths["custom_nodes"] = ([str(base / "custom_nodes")], set())

    # -- directories -------------------------------------------------------------------------

    def ensure_dirs(self) -> None:
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir):
            d.mkdir(parents=True, exist_ok=True)

    def directory_for(self, kind: str) -> Path:
        if kind not in ANNOTATIONS:
            raise ValueError(f"unknown folder type {kind!r}; expected one of {', '.join(ANNOTATIONS)}")
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}[kind]

    def get_input_directory(self) -> str:
        return str(self.input_dir)

    def get_output_directory(self) -> str:
        return str(self.output_dir)

    def get_temp_directory(self) -> str:
        return str(self.temp_dir)

    def get_user_directory(self) -> str:
        return str(self.user_dir)

    # -- model folders -----------------------------------------------------------------------

    def _entry(self, folder: str) -> tuple[list[str], set[str]]:
        folder = LEGACY_FOLDER_NAMES.get(folder, folder)
        try:
            return self.folder_names_and_paths[folder]
        except KeyError:
            known = ", ".join(sorted(self.folder_names_and_paths))
            raise KeyError(f"unknown model folder {folder!r}; known folders: {known}") from None

    def get_folder_paths(self, folder: str) -> list[str]:
        return list(self._entry(folder)[0])

    def add_model_folder_path(self, name: str, path: str, is_default: bool = False) -> None:
        name = LEGACY_FOLDER_NAMES.get(name, name)
        path = str(path)
        if name not in self.folder_names_and_paths:
            self.folder_names_and_paths[name] = ([path], set())
            return
        paths = self.folder_names_and_paths[name][0]
        if path in paths:
            if is_default:
                paths.remove(path)
                paths.insert(0, path)
        elif is_default:
            paths.insert(0, path)
        else:
            paths.append(path)

    def get_filename_list(self, folder: str) -> list[str]:
        """Files under every path of `folder` with a matching extension, as sorted "a/b.ext" names."""
        paths, extensions = self._entry(folder)
        names: set[str] = set()
        for root in paths:
            if not os.path.isdir(root):
                continue
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel_dir = os.path.relpath(dirpath, root)
                if "folder" in extensions:  # e.g. diffusers: the entries are directories
                    names.update(_rel(rel_dir, d) for d in dirnames)
                for f in filenames:
                    if not extensions or "" in extensions or os.path.splitext(f)[1].lower() in extensions:
                        names.add(_rel(rel_dir, f))
        return sorted(names)

    def get_full_path(self, folder: str, filename: str) -> str | None:
        """The first root of `folder` holding `filename`. The name cannot climb out of the root, but
        a symlink the owner placed inside it (a shared checkpoint, a linked folder) is followed."""
        paths, _ = self._entry(folder)
        for root in paths:
            try:
                candidate = join_below(root, filename)
            except UnsafePathError:
                return None
            if candidate.is_file() or (candidate.is_dir() and filename):
                return str(candidate)
        return None

    def get_full_path_or_raise(self, folder: str, filename: str) -> str:
        found = self.get_full_path(folder, filename)
        if found is not None:
            return found
        paths = self.get_folder_paths(folder)
        present = self.get_filename_list(folder)
        shown = ", ".join(present[:20]) + (" ..." if len(present) > 20 else "") or "(none)"
        raise FileNotFoundError(
            f"model file {filename!r} not found in folder {folder!r}; searched {', '.join(paths)}; "
            f"files there: {shown}")

    def load_extra_model_paths(self, yaml_path: str | os.PathLike) -> None:
        """ComfyUI's extra_model_paths.yaml: sections of base_path + folder: path(s) lines."""
        import yaml

        with open(yaml_path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        yaml_dir = os.path.dirname(os.path.abspath(yaml_path))
        for section_name, section in config.items():
            if not isinstance(section, dict):
                raise ValueError(f"{yaml_path}: section {section_name!r} must be a mapping")
            base = section.get("base_path")
            if base:
                base = os.path.expandvars(os.path.expanduser(str(base)))
                if not os.path.isabs(base):
                    base = os.path.join(yaml_dir, base)
            is_default = bool(section.get("is_default", False))
            for key, value in section.items():
                if key in ("base_path", "is_default", "download_model_base") or value is None:
                    continue
                for line in str(value).splitlines():
                    line = line.strip()
                    if not line:
                        continue
                    path = os.path.expandvars(os.path.expanduser(line))
                    if base and not os.path.isabs(path):
                        path = os.path.join(base, path)
                    self.add_model_folder_path(key, os.path.normpath(path), is_default)

    # -- input / output files ----------------------------------------------------------------

    def annotated_filepath(self, name: str) -> tuple[str, Path | None]:
        """Split ComfyUI's "file.png [output]" annotation: (bare name, directory or None)."""
        for kind in ANNOTATIONS:
            suffix = f" [{kind}]"
            if name.endswith(suffix):
                return name[: -len(suffix)], self.directory_for(kind)
        return name, None

    def get_annotated_filepath(self, name: str, default_dir=None) -> str:
        bare, directory = self.annotated_filepath(name)
        if directory is None:
            directory = Path(default_dir) if default_dir is not None else self.input_dir
        return str(safe_join(directory, bare))

    def exists_annotated_filepath(self, name: str) -> bool:
        try:
            return os.path.exists(self.get_annotated_filepath(name))
        except UnsafePathError:
            return False

    def resolve_input(self, filename: str, subfolder: str = "", type: str = "input") -> Path:
        """A file the user refers to by (filename, subfolder, type), contained in its folder."""
        bare, directory = self.annotated_filepath(filename)
        if directory is None:
            directory = self.directory_for(type or "input")
        return safe_join(directory, subfolder or "", bare)

    def get_save_image_path(self, filename_prefix: str, output_dir=None, image_width: int = 0,
                            image_height: int = 0):
        """ComfyUI's contract: (full_output_folder, filename, counter, subfolder, filename_prefix).

        Callers write f"{filename}_{counter:05}_.png"; the counter is one past the highest
        existing "<filename>_NNNNN_" in that folder. The prefix may hold sub-folders and
        %width% / %height% / %year% ... placeholders.
        """
        output_dir = Path(output_dir) if output_dir is not None else self.output_dir
        filename_prefix = _expand_placeholders(filename_prefix, image_width, image_height)
        parts = filename_prefix.replace("\\", "/").split("/")
        filename = parts[-1]
        subfolder = "/".join(parts[:-1])
        if filename in ("", ".", ".."):
            raise UnsafePathError(f"no file name in prefix {filename_prefix!r}")
        try:
            folder = safe_join(output_dir, subfolder, filename).parent
        except UnsafePathError as e:
            raise UnsafePathError(
                f"Saving image outside the output folder is not allowed: {filename_prefix!r} ({e})") from None
        subfolder = "/".join(p for p in parts[:-1] if p not in ("", "."))
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder), filename, next_counter(folder, filename), subfolder, filename_prefix


def next_counter(folder: str | os.PathLike, filename: str) -> int:
    """One past the highest NNNNN of the "<filename>_NNNNN_..." files in `folder` (1 if none)."""
    taken = (_counter_of(existing, filename) for existing in os.listdir(folder))
    return 1 + max((n for n in taken if n is not None), default=0)


def _rel(rel_dir: str, name: str) -> str:
    return name if rel_dir in (".", "") else f"{rel_dir}/{name}".replace(os.sep, "/")


_COUNTER = re.compile(r"(\d+)_")


def _counter_of(existing: str, filename: str) -> int | None:
    """The NNNNN of "<filename>_NNNNN_..." or None when the file belongs to another prefix."""
    if not os.path.normcase(existing).startswith(os.path.normcase(filename) + "_"):
        return None
    m = _COUNTER.match(existing, len(filename) + 1)
    return int(m.group(1)) if m else None


def _expand_placeholders(prefix: str, width: int, height: int) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02}",
              "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix
