"""The committed tiny model through `Embedder`: loading, vectors, the saved optimised graph."""

from __future__ import annotations

import io
import json
import shutil
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dahell import embedder as embedder_mod
from dahell.embedder import Embedder, ImageRejected, load_manifest, preprocess
from dahell.errors import ModelNotFound
from dahell.image_decode import working_bytes

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-siglip"
CPU = ["CPUExecutionProvider"]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A private copy of the tiny model, so saved optimised graphs stay in tmp_path."""
    folder = tmp_path / "tiny-siglip"
    folder.mkdir()
    for name in ("model.onnx", "manifest.json"):
        shutil.copyfile(TINY / name, folder / name)
    return folder


def photo(seed: int, size: tuple[int, int] = (120, 90)) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def optimized_graphs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.optimized.onnx"))


def test_tiny_model_loads_on_cpu_and_embeds_unit_rows(model_dir: Path) -> None:
    embedder = Embedder.load(model_dir, CPU)
    assert embedder.providers == CPU
    assert embedder.dim == embedder.manifest.dim == 32
    batch = np.stack([preprocess(photo(i), embedder.manifest, 10**8) for i in range(5)])
    vectors = embedder.embed(batch)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Different photos give different vectors.
    assert (vectors @ vectors.T)[np.triu_indices(5, 1)].max() < 0.999


def test_same_image_gives_the_same_vector_alone_or_in_a_batch(model_dir: Path) -> None:
    embedder = Embedder.load(model_dir, CPU)
    one = preprocess(photo(7), embedder.manifest, 10**8)
    other = preprocess(photo(8), embedder.manifest, 10**8)
    alone = embedder.embed(one[None])
    batched = embedder.embed(np.stack([other, one, other]))
    np.testing.assert_allclose(alone[0], batched[1], atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(one[None]), alone)


def test_embed_is_safe_from_several_threads(model_dir: Path) -> None:
    embedder = Embedder.load(model_dir, CPU)
    batch = np.stack([preprocess(photo(i), embedder.manifest, 10**8) for i in range(4)])
    expected = embedder.embed(batch)
    results: list[np.ndarray] = []

    def work() -> None:
        for _ in range(10):
            results.append(embedder.embed(batch))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    for got in results:
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_empty_batch_and_wrong_shape(model_dir: Path) -> None:
    embedder = Embedder.load(model_dir, CPU)
    assert embedder.embed(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 32)
    with pytest.raises(ValueError, match="expected"):
        embedder.embed(np.zeros((1, 3, 64, 64), np.float32))


def test_optimised_graph_is_saved_on_first_load_and_used_on_the_second(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = Embedder.load(model_dir, CPU)
    saved = optimized_graphs(model_dir)
    assert len(saved) == 1 and saved[0].name.startswith("model.cpu.")
    assert "optimized_graph_saved" in capsys.readouterr().out
    mtime = saved[0].stat().st_mtime_ns
    second = Embedder.load(model_dir, CPU)
    assert "optimized_graph_used" in capsys.readouterr().out
    assert saved[0].stat().st_mtime_ns == mtime
    batch = np.stack([preprocess(photo(i), first.manifest, 10**8) for i in range(3)])
    np.testing.assert_allclose(first.embed(batch), second.embed(batch), atol=1e-5)


def test_corrupt_optimised_graph_is_rebuilt(model_dir: Path) -> None:
    Embedder.load(model_dir, CPU)
    (saved,) = optimized_graphs(model_dir)
    saved.write_bytes(b"not a graph")
    embedder = Embedder.load(model_dir, CPU)
    assert embedder.dim == 32
    assert saved.stat().st_size > 1000


def test_read_only_model_folder_saves_into_the_cache_folder(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = embedder_mod._writable
    # chmod does not stop root, so make the model folder look read-only.
    monkeypatch.setattr(embedder_mod, "_writable", lambda f: f != model_dir and real(f))
    cache = tmp_path / "cache"
    embedder = Embedder.load(model_dir, CPU, cache_dir=cache)
    assert embedder.dim == 32
    assert optimized_graphs(model_dir) == []
    assert len(optimized_graphs(cache)) == 1


def test_nowhere_to_save_still_loads(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_mod, "_writable", lambda f: False)
    embedder = Embedder.load(model_dir, CPU, cache_dir=model_dir / "cache")
    assert embedder.dim == 32
    assert optimized_graphs(model_dir) == []


def test_unknown_providers_fall_back_to_cpu(model_dir: Path) -> None:
    embedder = Embedder.load(model_dir, ["NoSuchExecutionProvider"])
    assert embedder.providers == CPU


def test_missing_folder_says_how_to_export(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelNotFound) as info:
        Embedder.load(missing, CPU)
    assert info.value.reason == "model_not_found"
    assert str(missing) in info.value.detail
    assert "python -m dahell export-model" in info.value.detail


def test_missing_manifest_or_graph_raises_model_not_found(model_dir: Path) -> None:
    (model_dir / "model.onnx").unlink()
    with pytest.raises(ModelNotFound, match=r"model\.onnx is missing"):
        Embedder.load(model_dir, CPU)
    (model_dir / "manifest.json").unlink()
    with pytest.raises(ModelNotFound, match=r"manifest\.json is missing") as info:
        load_manifest(model_dir)
    assert "export-model" in info.value.detail


def test_bad_manifest_or_graph_raises_model_not_found(model_dir: Path) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    del manifest["dim"]
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelNotFound, match="not a valid manifest"):
        load_manifest(model_dir)
    shutil.copyfile(TINY / "manifest.json", model_dir / "manifest.json")
    (model_dir / "model.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ModelNotFound, match="cannot be loaded"):
        Embedder.load(model_dir, CPU)


# --- hostile images: bytes, not pixels, bound the memory (issue 17) ---------------------------


def grey_pair(width: int, height: int, seed: int) -> tuple[bytes, bytes]:
    """A greyscale photo as an 8-bit PNG and as a 16-bit PNG whose low byte is noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    eight = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.integers(-128, 129, eight.shape)
    sixteen = np.clip(eight.astype(np.int64) * 257 + noise, 0, 65535).astype(np.uint16)
    return png_bytes(Image.fromarray(eight)), png_bytes(Image.fromarray(sixteen))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_a_sixteen_bit_greyscale_image_embeds_like_its_eight_bit_twin(model_dir: Path) -> None:
    embedder = Embedder.load(model_dir, CPU)
    eight, sixteen = grey_pair(1400, 1000, 3)
    assert Image.open(io.BytesIO(sixteen)).mode == "I;16"
    vectors = embedder.embed(
        np.stack([preprocess(d, embedder.manifest, 10**8) for d in (eight, sixteen)])
    )
    assert float(vectors[0] @ vectors[1]) >= 0.99999


def prepare_batch(datas: list[bytes], embedder: Embedder, max_bytes: int) -> list[object]:
    """What the vectorizer does per image: a tensor, or the reason it was refused."""
    out: list[object] = []
    for data in datas:
        try:
            out.append(preprocess(data, embedder.manifest, 10**8, max_bytes))
        except ImageRejected as exc:
            out.append(exc.reason)
    return out


def test_an_image_over_the_decoded_byte_cap_is_refused_and_its_neighbours_embed(
    model_dir: Path,
) -> None:
    embedder = Embedder.load(model_dir, CPU)
    size = embedder.manifest.image_size
    eight, sixteen = grey_pair(1200, 1000, 4)
    cap = working_bytes("L", (1200, 1000), size)  # the 8-bit twin fits, the 16-bit one does not
    batch = [photo(1), sixteen, eight, photo(2)]
    prepared = prepare_batch(batch, embedder, cap)
    assert prepared[1] == "decoded_too_large"
    survivors = [p for p in prepared if isinstance(p, np.ndarray)]
    assert len(survivors) == 3
    together = embedder.embed(np.stack(survivors))
    alone = [embedder.embed(preprocess(d, embedder.manifest, 10**8)[None])[0] for d in batch[::2]]
    np.testing.assert_allclose(together[[0, 1]], np.stack(alone), atol=1e-5)
    np.testing.assert_allclose(together[2], embedder.embed(survivors[2][None])[0], atol=1e-5)


def test_a_big_sixteen_bit_image_is_preprocessed_without_a_full_size_array(
    model_dir: Path,
) -> None:
    """tracemalloc sees numpy's buffers: the old code's float64 copy alone was 8 bytes a pixel."""
    manifest = load_manifest(model_dir)
    width, height = 4000, 3000
    gradient = np.linspace(0, 65535, width, dtype=np.float32)[None, :].repeat(height, 0)
    data = png_bytes(Image.fromarray(gradient.astype(np.uint16)))
    del gradient
    tracemalloc.start()
    try:
        pixels = preprocess(data, manifest, 10**8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixels.dtype == np.float32 and pixels.shape == (3, 32, 32)
    assert peak < width * height // 2, f"numpy peak {peak / 1e6:.1f} MB"


# --- export-model --preset -----------------------------------------------------------------


def test_the_cpu_preset_is_one_flag_away() -> None:
    import argparse

    from dahell import export

    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    args = export.apply_preset(parser.parse_args(["--preset", "cpu"]))
    assert (args.model, args.precision) == ("google/siglip-so400m-patch14-224", "int8")
    assert Path(args.out) == Path("models/siglip-so400m-patch14-224")
    same = export.apply_preset(parser.parse_args(["--preset", "cpu-384"]))
    assert (same.model, same.precision) == (export.DEFAULT_MODEL, "int8")
    assert Path(same.out) == export.DEFAULT_OUT  # the default vectorizer.model_dir: no edit
    fast = export.apply_preset(parser.parse_args(["--preset", "cpu-fast"]))
    assert (fast.model, fast.precision) == ("google/siglip-base-patch16-224", "int8")
    own = export.apply_preset(parser.parse_args(["--preset", "cpu", "--model", "m", "--out", "o"]))
    assert (own.model, own.precision, own.out) == ("m", "int8", Path("o"))
    assert export.apply_preset(parser.parse_args([])).precision == "fp32"


@pytest.mark.skipif(
    any(
        __import__("importlib").util.find_spec(m) is None
        for m in ("torch", "transformers", "optimum")
    ),
    reason="the [export] extra is not installed",
)
def test_export_model_with_the_cpu_preset_writes_an_int8_model(tmp_path: Path) -> None:
    from dahell import cli, export

    tower = export.build_random_vision_model(tmp_path / "tower", export.TINY_SHAPE, 0)
    out = tmp_path / "out"
    argv = ["export-model", "--preset", "cpu", "--model", str(tower), "--out", str(out)]
    assert cli.main([*argv, "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["dim"] == 32
    assert Embedder.load(out, CPU).embed(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 32)
