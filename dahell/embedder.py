"""SigLIP image embeddings with ONNX Runtime: the model folder, preprocessing, inference.

Blocking, thread-safe functions meant to be called from worker threads; no asyncio, no database.

A model folder (written by `python -m dahell export-model`) holds `model.onnx` and
`manifest.json` (see `ModelManifest`). `preprocess` turns image bytes into the float32 [3, S, S]
tensor the model expects, exactly as transformers' `SiglipImageProcessor` does:

1. decode, check the pixel and decoded-byte caps, convert to 8-bit RGB and resize straight to
   S x S with PIL bicubic (no crop, aspect not kept): `dahell.image_decode.decode_rgb`, which
   does it in strips of rows so that no full-size RGB or float copy is ever made; alpha is
   dropped, not composited (as the reference does); 16-bit greyscale is scaled to 8 bits where
   the reference would clip it; the EXIF orientation is applied (the reference does not);
2. scale by 1/255 and normalise with the manifest's mean and std, channels first, through a
   256-entry float32 lookup table: the only float array of the image's size is the
   float32 [3, S, S] output.

`Embedder` runs the graph with the configured ONNX Runtime providers (those this onnxruntime
offers, in the configured order), saves the optimised graph beside the model on the first load
so that later starts skip optimisation, serialises inference with a lock and returns
L2-normalised rows.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from dahell.errors import ModelNotFound
from dahell.image_decode import (
    DRAFT_MIN_FACTOR,
    MAX_DECODED_BYTES,
    REJECT_REASONS,
    ImageRejected,
    decode_rgb,
    sniff_image,
)
from dahell.log import get_logger

__all__ = [
    "DRAFT_MIN_FACTOR",
    "MAX_DECODED_BYTES",
    "REJECT_REASONS",
    "Embedder",
    "ImageRejected",
    "ModelManifest",
    "load_manifest",
    "preprocess",
    "sniff_image",
]

MANIFEST = "manifest.json"
GRAPH = "model.onnx"
EXPORT_HINT = "export one with `python -m dahell export-model --out {folder}`"
log = get_logger(component="embedder")


@dataclass(frozen=True)
class ModelManifest:
    """`manifest.json` of an exported model folder."""

    format: int
    source_model: str
    model_type: str
    dim: int
    image_size: int
    resample: str
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    opset: int
    precision: str
    input_name: str
    output_name: str
    graph_sha256: str
    exported_at: str
    dahell_version: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelManifest:
        """Validate and convert; raises `ValueError`/`KeyError`/`TypeError` on a bad manifest."""
        mean, std = _three(data["mean"]), _three(data["std"])
        manifest = cls(
            format=int(data["format"]),
            source_model=str(data["source_model"]),
            model_type=str(data["model_type"]),
            dim=int(data["dim"]),
            image_size=int(data["image_size"]),
            resample=str(data["resample"]),
            rescale_factor=float(data["rescale_factor"]),
            mean=mean,
            std=std,
            opset=int(data["opset"]),
            precision=str(data["precision"]),
            input_name=str(data["input_name"]),
            output_name=str(data["output_name"]),
            graph_sha256=str(data["graph_sha256"]),
            exported_at=str(data["exported_at"]),
            dahell_version=str(data["dahell_version"]),
        )
        if manifest.format != 1:
            raise ValueError(f"unsupported manifest format {manifest.format}")
        if manifest.resample != "bicubic":
            raise ValueError(f"unsupported resample {manifest.resample!r}")
        if manifest.dim <= 0 or manifest.image_size <= 0 or 0.0 in manifest.std:
            raise ValueError("dim, image_size and std must be positive")
        return manifest


def _three(value: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return (a, b, c)


def load_manifest(model_dir: Path) -> ModelManifest:
    """Read `model_dir/manifest.json`; `ModelNotFound` with what to do when it is missing or bad."""
    hint = EXPORT_HINT.format(folder=model_dir)
    if not model_dir.is_dir():
        raise ModelNotFound("model_not_found", f"model folder {model_dir} does not exist; {hint}")
    path = model_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelNotFound("model_not_found", f"{path} is missing; {hint}") from None
    except (OSError, ValueError) as exc:
        raise ModelNotFound("model_not_found", f"{path} is unreadable ({exc}); {hint}") from None
    try:
        return ModelManifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"{path} is not a valid manifest ({type(exc).__name__}: {exc}); {hint}"
        raise ModelNotFound("model_not_found", detail) from None


def preprocess(
    data: bytes, manifest: ModelManifest, max_pixels: int, max_bytes: int = MAX_DECODED_BYTES
) -> npt.NDArray[np.float32]:
    """Image bytes -> float32 [3, S, S], as `SiglipImageProcessor` does (see the module doc).

    Raises `ImageRejected` with reason `not_an_image`, `too_many_pixels`, `decoded_too_large`
    or `decode_error`.
    """
    rgb = decode_rgb(data, manifest.image_size, max_pixels, max_bytes)
    return _normalise(np.asarray(rgb, dtype=np.uint8), manifest)


def _normalise(pixels: npt.NDArray[np.uint8], manifest: ModelManifest) -> npt.NDArray[np.float32]:
    """uint8 [S, S, 3] -> float32 [3, S, S]: (v * rescale - mean) / std through a lookup table."""
    table = _lookup_table(manifest)
    out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], pixels[:, :, channel], out=out[channel])
    return out


@functools.lru_cache(maxsize=8)
def _lookup_table(manifest: ModelManifest) -> npt.NDArray[np.float32]:
    """float32 [3, 256]: the normalised value of each byte per channel.

    The rescale is computed in float64 then cast, over these 256 values only, because that is
    the reference's arithmetic (`astype(float64) * scale`, then float32): the table then holds
    exactly the reference's numbers.
    """
    values = np.arange(256, dtype=np.float64) * manifest.rescale_factor
    rescaled = values.astype(np.float32)[None, :]
    mean = np.asarray(manifest.mean, dtype=np.float32)[:, None]
    std = np.asarray(manifest.std, dtype=np.float32)[:, None]
    table = ((rescaled - mean) / std).astype(np.float32)
    table.flags.writeable = False
    return table


class Embedder:
    """One ONNX Runtime session over an exported model folder; `embed` is thread-safe."""

    def __init__(
        self, manifest: ModelManifest, session: ort.InferenceSession, model_dir: Path
    ) -> None:
        self.manifest = manifest
        self.dim = manifest.dim
        self.model_dir = model_dir
        self.providers: list[str] = list(session.get_providers())
        self._session = session
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model_dir: Path,
        providers: list[str],
        *,
        intra_op_threads: int = 0,
        cache_dir: Path | None = None,
    ) -> Embedder:
        """Open the model folder; `ModelNotFound` when the folder, manifest or graph is unusable.

        `providers` are tried in order, keeping those this onnxruntime offers (CPU is added
        last when missing). `intra_op_threads` 0 leaves ONNX Runtime's default. The optimised
        graph is saved beside the model, else under `cache_dir` (default
        `~/.cache/dahell/optimized`) when the folder is read-only, else not at all.
        """
        manifest = load_manifest(model_dir)
        graph = model_dir / GRAPH
        if not graph.is_file():
            hint = EXPORT_HINT.format(folder=model_dir)
            raise ModelNotFound("model_not_found", f"{graph} is missing; {hint}")
        chosen = choose_providers(providers)
        saved = _optimized_path(model_dir, manifest, chosen, cache_dir)
        session = _open_session(graph, saved, chosen, intra_op_threads)
        embedder = cls(manifest, session, model_dir)
        embedder._check_io()
        if embedder.providers != chosen:
            # e.g. the CUDA provider is offered but its libraries or the GPU are missing.
            log.warning("providers_fallback", wanted=chosen, using=embedder.providers)
        return embedder

    def _check_io(self) -> None:
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if self.manifest.input_name not in inputs or self.manifest.output_name not in outputs:
            detail = (
                f"{self.model_dir / GRAPH} has inputs {inputs} and outputs {outputs}, the "
                f"manifest names {self.manifest.input_name} and {self.manifest.output_name}; "
                + EXPORT_HINT.format(folder=self.model_dir)
            )
            raise ModelNotFound("model_not_found", detail)

    def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """float32 [N, 3, S, S] -> float32 [N, dim], each row of unit L2 norm."""
        size = self.manifest.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"expected [N, 3, {size}, {size}] pixels, got {list(pixels.shape)}")
        if pixels.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        with self._lock:
            (raw,) = self._session.run(
                [self.manifest.output_name], {self.manifest.input_name: batch}
            )
        vectors = np.asarray(raw, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit


def choose_providers(wanted: list[str]) -> list[str]:
    """The configured providers this onnxruntime offers, in order; CPU always last."""
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available]
    dropped = [p for p in wanted if p not in available]
    if dropped:
        log.info("providers_unavailable", dropped=dropped, available=sorted(available))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _providers_key(providers: list[str]) -> str:
    short = [p.removesuffix("ExecutionProvider").lower() for p in providers]
    return "-".join(short)


def _optimized_path(
    model_dir: Path, manifest: ModelManifest, providers: list[str], cache_dir: Path | None
) -> Path | None:
    """Where the optimised graph lives: beside the model, else a cache folder, else nowhere.

    The name carries the providers asked for (after a fallback from CUDA to CPU the graph
    optimised for CPU is kept under that name), the onnxruntime version and the graph's hash,
    so a new export or an upgraded onnxruntime never reuses a stale optimised graph.
    """
    version = ort.__version__.replace(".", "")
    name = (
        f"model.{_providers_key(providers)}.ort{version}."
        f"{manifest.graph_sha256[:12]}.optimized.onnx"
    )
    fallback = cache_dir or Path.home() / ".cache" / "dahell" / "optimized"
    for folder in (model_dir, fallback):
        if (folder / name).is_file() or _writable(folder):
            return folder / name
    return None


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _open_session(
    graph: Path, saved: Path | None, providers: list[str], threads: int
) -> ort.InferenceSession:
    if saved is not None and saved.is_file():
        try:
            options = _options(threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
            session = ort.InferenceSession(str(saved), options, providers=providers)
            log.info("optimized_graph_used", path=str(saved))
            return session
        except Exception as exc:  # a corrupt or foreign file: rebuild it
            log.warning("optimized_graph_unusable", path=str(saved), error=str(exc))
    # Layout-independent optimisations only, so the saved graph suits any CPU of the same kind.
    options = _options(threads, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    tmp: Path | None = None
    if saved is not None:
        tmp = saved.with_name(f"{saved.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        options.optimized_model_filepath = str(tmp)
    try:
        session = ort.InferenceSession(str(graph), options, providers=providers)
    except Exception as exc:
        _remove(tmp)
        hint = EXPORT_HINT.format(folder=graph.parent)
        raise ModelNotFound(
            "model_not_found", f"{graph} cannot be loaded ({exc}); {hint}"
        ) from None
    if saved is not None and tmp is not None:
        try:
            os.replace(tmp, saved)
            log.info("optimized_graph_saved", path=str(saved))
        except OSError as exc:
            _remove(tmp)
            log.warning("optimized_graph_not_saved", path=str(saved), error=str(exc))
    return session


def _options(threads: int, level: ort.GraphOptimizationLevel) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    if threads > 0:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def _remove(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()
