"""The ONNX side: optimum's export, the graph pruned to `pooler_output`, fp16 or int8."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from dahell.errors import DahellError

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "pooler_output"


def _optimum_export(tower: Path, folder: Path, opset: int | None, validate: bool) -> Path:
    from optimum.exporters.onnx import main_export

    main_export(
        str(tower),
        output=folder,
        task="feature-extraction",
        opset=opset,
        local_files_only=True,
        do_validation=validate,
    )
    return folder / "model.onnx"


def _keep_pooler_output(path: Path) -> int:
    """Drop every graph output but `pooler_output`; return the graph's default-domain opset."""
    import onnx

    proto = onnx.load(str(path))
    names = [o.name for o in proto.graph.output]
    if OUTPUT_NAME not in names:
        raise DahellError(f"the exported graph has no {OUTPUT_NAME} output (outputs: {names})")
    keep = [o for o in proto.graph.output if o.name == OUTPUT_NAME]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    _drop_dead_nodes(proto.graph)
    onnx.save(proto, str(path))
    return next((op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")), 0)


def _drop_dead_nodes(graph: Any) -> None:
    """Remove nodes whose outputs nothing uses any more (after dropping a graph output)."""
    needed = {o.name for o in graph.output}
    alive = []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            alive.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(alive))
    used = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def _convert(fp32: Path, target: Path, precision: Precision) -> None:
    if precision == "fp32":
        shutil.copyfile(fp32, target)
    elif precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(half, str(target))
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            fp32,
            target,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(_INT8_OPS),
            reduce_range=True,
        )


#: Dynamic int8 quantisation, recorded in the manifest. MatMul/Gemm weights only, 7-bit range:
#: on CPUs without VNNI (AVX2 only) the u8s8 kernels saturate with the full 8-bit range, and the
#: so400m-shaped tower's cosine to fp32 fell to 0.93; with `reduce_range` it is 0.9994, at ~1.6x
#: fp32's images/s there. On a CPU with AVX-512 VNNI/AMX (the 2-core machine of 2026-12-02)
#: bench_models.py measured 4.1x (0.19 -> 0.78 images/s; 0.23 -> 0.95 in a busier run).
_INT8_OPS = ("MatMul", "Gemm")
INT8_SETTINGS: dict[str, object] = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "op_types_to_quantize": list(_INT8_OPS),
    "reduce_range": True,
}
