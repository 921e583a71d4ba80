"""The run folder: the one on-disk format of a tuned run, shared by the CLI, the app and batch jobs.

::

    <run>/
      tuned.safetensors             trained parameters only (names as in the UNet state dict)
      tuned.json                    the record: store version, base model + fingerprint, prompt, video
                                    spec, tune config, seed, clip facts (fps, audio), losses, versions
      source.mp4                    the clip tuned on, trimmed and resized (with its audio when contiguous)
      source.npz                    the same frames, exact (uint8 (f, h, w, 3)): inversion re-reads these
      inversions/<key>.safetensors  DDIM-inverted latents (b, 4, f, h/8, w/8), one per InvertConfig
      edits/ generated/ control/    outputs the CLI writes (never part of the archive)

Every write is atomic (a temporary sibling, then a rename): a run folder is complete or absent, and an
existing one is replaced only once its replacement is complete. Every load validates the store
version, that tensors are finite, their shapes against the UNet, and the base model's fingerprint.
:class:`RunStore` keeps content-keyed run folders under one root (the app's persistent cache), and
archives (the app's downloads and uploads) hold exactly the files of one run folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import InvertConfig, config_hash
from .errors import InputError, ModelLoadError

STORE_VERSION = 2  # 1: the first release's folders (no version field, one inverted.safetensors)
DELTA_FORMAT = "tuneavideo-delta-v1"  # safetensors metadata of tuned.safetensors (unchanged since v1)
DELTA_FILE = "tuned.safetensors"
RECORD_FILE = "tuned.json"
SOURCE_FILE = "source.mp4"
FRAMES_FILE = "source.npz"
INVERSIONS_DIR = "inversions"
LEGACY_INVERTED_FILE = "inverted.safetensors"
ARCHIVE_MEMBERS = (DELTA_FILE, RECORD_FILE, SOURCE_FILE, FRAMES_FILE)  # plus inversions/*.safetensors

MAX_ARCHIVE_MEMBERS = 64
MAX_ARCHIVE_BYTES = 2 * 1024**3  # an SD-1.x run is ~150-300 MB of weights plus a few MB of clip
MAX_COMPRESSION_RATIO = 50  # weights are stored, not compressed: a higher ratio is a zip bomb


# ------------------------------------------------------------------------------------------ atomic files
@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; it replaces ``path`` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create 0600 files: shareable like any file
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: Path, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str, allow_nan=False))
    return path


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FileHashes:
    """sha256 of files, remembered by (path, size, mtime) so an unchanged upload is hashed once (thread-safe)."""

    def __init__(self, limit: int = 4096) -> None:
        self._memo: dict[tuple[str, int, int], str] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        st = path.stat()
        memo = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            found = self._memo.get(memo)
        if found is None:
            found = sha256_file(path)
            with self._lock:
                if len(self._memo) >= self._limit:  # a long-running app sees many uploads: the memo only saves time
                    self._memo.clear()
                self._memo[memo] = found
        return found


def _check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelLoadError(f"{what} holds non-finite values (NaN or inf) in {len(bad)} tensors, e.g. {bad[0]}")


def _load_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ModelLoadError(f"{what} ({path.name}) is not a readable safetensors file: {exc}") from exc


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    _check_finite(tensors, path.name)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


# ------------------------------------------------------------------------------------------ the delta
def base_fingerprint(unet: torch.nn.Module) -> str:
    """A short hash of a few *frozen* base weights, to refuse applying a delta to another base."""
    h = hashlib.sha256()
    state = unet.state_dict()
    for key in ("conv_in.weight", "conv_out.weight", "time_embedding.linear_1.weight"):
        if key in state:
            h.update(state[key].detach().float().cpu().numpy().round(4).tobytes())
    return h.hexdigest()[:16]


@dataclass
class TunedDelta:
    """The tuned parameters (names as in the UNet state dict), a JSON-able record and the loss curve."""

    state_dict: dict[str, torch.Tensor]
    record: dict[str, Any] = field(default_factory=dict)
    losses: tuple[float, ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict.values())

    def save(self, folder: str | Path, dtype: torch.dtype | None = torch.float16) -> Path:
        """Write ``tuned.safetensors`` + ``tuned.json`` into ``folder`` atomically (fp16 by default, as the first
        release did; ``dtype=None`` keeps the exact dtype, which run folders use so that reloads are bit-exact)."""
        folder = Path(folder)
        tensors = {k: (v.to(dtype) if dtype else v) for k, v in self.state_dict.items()}
        _save_safetensors(folder / DELTA_FILE, tensors, {"format": DELTA_FORMAT})
        write_json(folder / RECORD_FILE, {**self.record, "store_version": STORE_VERSION})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TunedDelta:
        """Read a delta from a run folder (or its ``tuned.safetensors``); checks the version and finiteness."""
        folder = Path(folder)
        tensor_file = folder if folder.is_file() else folder / DELTA_FILE
        if not tensor_file.is_file():
            raise ModelLoadError(f"{folder}: no {DELTA_FILE} (is this a folder written by `tuneavideo tune`?)")
        record = read_record(tensor_file.parent) if (tensor_file.parent / RECORD_FILE).is_file() else {}
        state, _ = _load_safetensors(tensor_file, "tuned weights")
        if not state:
            raise ModelLoadError(f"{tensor_file.name} holds no tensors")
        _check_finite(state, "the tuned weights")
        losses = tuple(float(x) for x in record.get("losses") or ())
        return cls(state, record, losses)

    def check_fits(self, unet: torch.nn.Module, name: str = "the tuned weights") -> None:
        """Raise :class:`ModelLoadError` unless every tensor names a UNet parameter of the same shape and base."""
        fp = self.record.get("base_fingerprint")
        if fp is not None and fp != base_fingerprint(unet):
            raise ModelLoadError(
                f"{name} were tuned on the base model '{self.record.get('base_model')}', whose weights differ from "
                "the loaded base: load the same base model."
            )
        params = dict(unet.named_parameters())
        unknown = [k for k in self.state_dict if k not in params]
        bad = [k for k, v in self.state_dict.items() if k in params and tuple(v.shape) != tuple(params[k].shape)]
        if unknown or bad or not self.state_dict:
            raise ModelLoadError(
                f"{name} do not fit this model's UNet ({len(unknown)} unknown and {len(bad)} mis-shaped tensors, "
                f"e.g. {(unknown + bad)[:2]}): they were tuned on a different base model."
            )

    def apply(self, unet: torch.nn.Module, check_base: bool = True) -> dict[str, torch.Tensor]:
        """Copy the tuned values into ``unet`` in place; return the previous values (for :meth:`restore`)."""
        if check_base:
            self.check_fits(unet)
        params = dict(unet.named_parameters())
        saved = {}
        with torch.no_grad():
            for name, value in self.state_dict.items():
                p = params[name]
                if p.shape != value.shape:
                    raise ModelLoadError(f"{name}: tuned shape {tuple(value.shape)} != UNet {tuple(p.shape)}")
                saved[name] = p.detach().clone()
                p.copy_(value.to(p.device, p.dtype))
        return saved

    @staticmethod
    def restore(unet: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
        params = dict(unet.named_parameters())
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)

    @contextmanager
    def applied(self, unet: torch.nn.Module, check_base: bool = True) -> Iterator[torch.nn.Module]:
        """``with delta.applied(unet): ...`` runs with the tuned weights and restores the base after."""
        saved = self.apply(unet, check_base)
        try:
            yield unet
        finally:
            self.restore(unet, saved)


def read_record(folder: str | Path) -> dict[str, Any]:
    """``tuned.json`` of a run folder, checked: a mapping from a store version this code can read."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        raise ModelLoadError(f"{Path(folder)} is not a tuned-run folder (no {RECORD_FILE}); run `tune` first")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is damaged (not JSON: {exc}); tune again or restore it") from exc
    if not isinstance(record, dict):
        raise ModelLoadError(f"{path} is damaged: expected a JSON object")
    version = record.get("store_version", 1)
    if not isinstance(version, int) or version > STORE_VERSION:
        raise ModelLoadError(
            f"{path} was written by a newer tuneavideo (store version {version}, this one reads <= "
            f"{STORE_VERSION}): upgrade with `pip install -U tuneavideo`"
        )
    return record


def save_inverted(
    latents: torch.Tensor, folder: str | Path, meta: dict[str, Any], name: str = LEGACY_INVERTED_FILE
) -> Path:
    """Save inverted latents ``(b, 4, f, h, w)`` as one file with JSON metadata (the first release's helper;
    run folders keep theirs with :meth:`RunFolder.save_inversion`). Exact dtype, written atomically."""
    meta_json = {k: json.dumps(v, default=str) for k, v in meta.items()}
    return _save_safetensors(Path(folder) / name, {"latents": latents}, meta_json)


def load_inverted(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(latents, metadata)`` of a file written by :func:`save_inverted` (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / LEGACY_INVERTED_FILE
    if not path.is_file():
        raise ModelLoadError(f"no inverted latents at {path}")
    tensors, meta = _load_safetensors(path, "inverted latents")
    if "latents" not in tensors:
        raise ModelLoadError(f"{path.name} holds no 'latents' tensor")
    _check_finite(tensors, path.name)
    return tensors["latents"], {k: json.loads(v) for k, v in meta.items()}


# ------------------------------------------------------------------------------------------ run folders
def inversion_key(config: InvertConfig) -> str:
    """File stem of the inversion made with ``config`` (readable steps + a hash of the whole config)."""
    return f"steps{config.num_inference_steps}-{config_hash('invert', config)[:8]}"


class RunFolder:
    """One tuned run on disk (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return (Path(path) / DELTA_FILE).is_file() and (Path(path) / RECORD_FILE).is_file()

    @classmethod
    def check_target(cls, path: str | Path) -> Path:
        """``path`` if a run may be written there: not a file, and empty or an earlier run (which it replaces)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"output {path} is a file, not a folder: choose another -o")
        if path.is_dir() and any(path.iterdir()) and not cls.is_run(path):
            raise InputError(f"output folder {path} is not empty and holds no tuned run: choose a new or empty folder")
        return path

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        run = cls(path)
        run.record  # noqa: B018 - validates that it is a readable run folder
        if not (run.path / DELTA_FILE).is_file():
            raise ModelLoadError(f"{run.path}: no {DELTA_FILE}; the run is incomplete: tune again")
        return run

    @property
    def record(self) -> dict[str, Any]:
        return read_record(self.path)

    @classmethod
    def write(
        cls, path: str | Path, delta: TunedDelta, frames: np.ndarray, fps: float, audio: tuple[str, float] | None = None
    ) -> RunFolder:
        """Write a complete run folder at ``path`` (replacing an earlier run there only once this one is complete).

        ``frames`` are the exact uint8 frames ``(f, h, w, 3)`` tuned on; ``audio`` is ``(source file, start)``
        when the clip is contiguous, so ``source.mp4`` keeps its sound.
        """
        from .video import write_mp4

        path = cls.check_target(path)
        tmp = _staging(path)
        try:
            record = {**delta.record, "losses": list(delta.losses), "clip_fps": float(fps), "run_id": uuid.uuid4().hex}
            TunedDelta(delta.state_dict, record, delta.losses).save(tmp, dtype=None)
            np.savez_compressed(tmp / FRAMES_FILE, frames=np.ascontiguousarray(frames, dtype=np.uint8))
            src, start = audio if audio else (None, 0.0)
            write_mp4(frames, tmp / SOURCE_FILE, fps=fps, audio_source=src, audio_start=start)
            _swap_in(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(path)

    # ---------------------------------------------------------------- contents
    def load_delta(self, unet: torch.nn.Module | None = None) -> TunedDelta:
        """The tuned weights, checked against ``unet`` when given."""
        delta = TunedDelta.load(self.path)
        if unet is not None:
            delta.check_fits(unet, f"the tuned weights in {self.path}")
        return delta

    def source_frames(self) -> np.ndarray:
        """The exact frames tuned on, uint8 ``(f, h, w, 3)`` (first-release folders: decoded from source.mp4)."""
        exact = self.path / FRAMES_FILE
        if exact.is_file():
            with np.load(exact) as data:
                return data["frames"]
        from .config import VideoSpec
        from .video import read_video

        rec = self.record
        if not (self.path / SOURCE_FILE).is_file():
            raise ModelLoadError(f"{self.path}: the source clip ({SOURCE_FILE}) is missing; tune again")
        spec = VideoSpec(int(rec["num_frames"]), int(rec["width"]), int(rec["height"]), resize="squash")
        return read_video(self.path / SOURCE_FILE, spec)[0]

    def inversion_path(self, config: InvertConfig) -> Path:
        return self.path / INVERSIONS_DIR / f"{inversion_key(config)}.safetensors"

    def load_inversion(self, config: InvertConfig, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """The saved inversion made with ``config`` (None when there is none, or it does not fit ``shape``)."""
        path = self.inversion_path(config)
        if not path.is_file():
            return None
        tensors, meta = _load_safetensors(path, "inverted latents")
        latents = tensors.get("latents")
        if latents is None or meta.get("run_id") != self.run_id:
            return None  # made for other weights (the run was replaced): recompute
        if shape is not None and tuple(latents.shape) != tuple(shape):
            return None
        _check_finite({"latents": latents}, path.name)
        return latents

    def save_inversion(self, config: InvertConfig, latents: torch.Tensor) -> Path:
        """Save inverted latents ``(b, 4, f, h, w)`` exactly (their dtype), tied to these tuned weights."""
        meta = {"invert_config": json.dumps(config.__dict__), "run_id": self.run_id}
        return _save_safetensors(self.inversion_path(config), {"latents": latents}, meta)

    @property
    def run_id(self) -> str:
        """Identity of the tuned weights in this folder (new for every tune), so inversions follow their run."""
        return str(self.record.get("run_id") or "first-release")

    # ---------------------------------------------------------------- archives
    def pack(self, archive: str | Path) -> Path:
        """A zip of the run's files (weights stored, not compressed), written atomically."""
        archive = Path(archive)
        with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in ARCHIVE_MEMBERS:
                if (self.path / name).is_file():
                    zf.write(self.path / name, name)
            for inv in sorted((self.path / INVERSIONS_DIR).glob("*.safetensors")):
                zf.write(inv, f"{INVERSIONS_DIR}/{inv.name}")
        return archive

    @classmethod
    def unpack(cls, upload: str | Path, dest: str | Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> RunFolder:
        """A run folder at ``dest`` from an archive, a run folder or a bare ``tuned.safetensors``.

        Archives are read member by member with limits on count, declared and actual size and compression
        ratio, into a temporary folder that is removed on any failure; only known names are kept.
        """
        upload, dest = Path(upload), Path(dest)
        if upload.is_dir():
            if not (upload / DELTA_FILE).is_file():
                raise ModelLoadError(f"{upload.name}: no {DELTA_FILE} in this folder")
            files = [upload / n for n in ARCHIVE_MEMBERS] + sorted((upload / INVERSIONS_DIR).glob("*.safetensors"))
            return _copy_members({str(f.relative_to(upload)): f for f in files if f.is_file()}, dest)
        if not upload.is_file():
            raise InputError(f"uploaded file not found: {upload.name}")
        if upload.stat().st_size > max_bytes:
            raise InputError(f"{upload.name} is larger than {max_bytes / 1e9:.1f} GB: not a tuned-run archive")
        if zipfile.is_zipfile(upload):
            return _unzip(upload, dest, max_bytes)
        if upload.suffix.lower() == ".safetensors":
            return _copy_members({DELTA_FILE: upload}, dest)
        raise InputError(
            f"{upload.name}: upload the .zip downloaded from the app (or a tuned.safetensors / run folder)"
        )


def _swap_in(tmp: Path, path: Path) -> None:
    """Move the complete folder ``tmp`` to ``path``; an old folder there is removed only after the move."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        if old is not None:
            os.replace(old, path)  # put the earlier run back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _allowed_member(name: str) -> str | None:
    """The run-folder name of an archive member, or None (unknown names are skipped, never joined as paths)."""
    parts = name.replace("\\", "/").strip("/").split("/")
    if len(parts) >= 1 and parts[-1] in ARCHIVE_MEMBERS:
        return parts[-1]
    if len(parts) >= 2 and parts[-2] == INVERSIONS_DIR and parts[-1].endswith(".safetensors"):
        stem = parts[-1][: -len(".safetensors")]
        if stem.replace("-", "").isalnum() and len(stem) <= 64:
            return f"{INVERSIONS_DIR}/{parts[-1]}"
    return None


def _unzip(upload: Path, dest: Path, max_bytes: int) -> RunFolder:
    with zipfile.ZipFile(upload) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise InputError(f"{upload.name}: {len(infos)} files in the archive; a run has at most a handful")
        chosen = {}
        for info in infos:
            name = _allowed_member(info.filename)
            if name is None:
                continue
            if name == DELTA_FILE or name not in chosen:
                chosen[name] = info
        if DELTA_FILE not in chosen:  # older downloads may name the weights otherwise
            other = next((i for i in infos if i.filename.endswith(".safetensors") and "/" not in i.filename), None)
            if other is None:
                raise ModelLoadError(f"{upload.name}: the archive holds no {DELTA_FILE} (download it from the app)")
            chosen[DELTA_FILE] = other
        declared = sum(i.file_size for i in chosen.values())
        packed = sum(max(i.compress_size, 1) for i in chosen.values())
        if declared > max_bytes or declared > MAX_COMPRESSION_RATIO * packed + (1 << 20):
            raise InputError(f"{upload.name}: the archive unpacks to {declared / 1e6:.0f} MB: refused")
        tmp = _staging(dest)
        try:
            budget = max_bytes
            for name, info in chosen.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                budget -= _copy_limited(zf, info, target, min(budget, info.file_size))
            return _finish(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_limited(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> int:
    """Stream one member to ``target``, failing as soon as it is longer than it declared (or than ``limit``)."""
    written = 0
    with zf.open(info) as src, open(target, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise InputError(f"{info.filename}: larger than it declares: refused")
            out.write(chunk)
    return written


def _copy_members(files: dict[str, Path], dest: Path) -> RunFolder:
    tmp = _staging(dest)
    try:
        for name, src in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / name)
        return _finish(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _staging(dest: Path) -> Path:
    """A temporary sibling folder of ``dest`` with the permissions a plain ``mkdir`` would give (mkdtemp: 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=_parent(dest)))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _parent(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent


def _finish(tmp: Path, dest: Path) -> RunFolder:
    """Validate an unpacked folder (weights readable and finite, record readable), then move it to ``dest``."""
    delta = TunedDelta.load(tmp)  # raises on damaged or non-finite weights
    if not (tmp / RECORD_FILE).is_file():  # a bare tensor file: a minimal record
        write_json(tmp / RECORD_FILE, {"store_version": STORE_VERSION, "prompt": "uploaded tuned model"})
    del delta
    _swap_in(tmp, dest)
    return RunFolder(dest)


# ------------------------------------------------------------------------------------------ the store
class RunStore:
    """Run folders under one root, named by their content key (the app's persistent tuned-model cache)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not key.replace("-", "").isalnum() or len(key) > 80:
            raise InputError(f"invalid run key {key!r}")
        return self.root / key

    def get(self, key: str) -> RunFolder | None:
        """The complete run stored under ``key``, or None."""
        path = self.path(key)
        return RunFolder(path) if RunFolder.is_run(path) else None

    def keys(self) -> list[str]:
        """Stored run keys, newest first."""
        runs = [p for p in self.root.iterdir() if not p.name.startswith(".") and RunFolder.is_run(p)]
        return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    def remove(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)
