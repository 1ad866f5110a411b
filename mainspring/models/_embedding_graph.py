"""The local embedding model's fast graph: int8 matrix products, built once per user.

The packaged model stores its weights in int8 but computes in fp32: ONNX Runtime
folds each ``Cast -> Mul`` into an fp32 matrix at load, so one forward pass streams
~90 MB of weights through the caches, and a 12-token text takes ~3 ms on one core.
This module rewrites every ``MatMul`` over a constant weight into ONNX Runtime's
``MatMulNBits`` (8 bits, blocks of 16 along K, symmetric, ``accuracy_level=4``:
activations quantised per block of 16 too, products in int8): ~1.4 ms, and cosine
>= 0.995 to the fp32 reference vectors (``tests/test_embeddings_local.py``).
Per-tensor dynamic quantisation (``quantize_dynamic``) was faster (0.8 ms) but lost
too much (cosine 0.90-0.97 on short texts): BERT activations have outliers that a
single scale per tensor cannot hold.

The rewrite needs the ``onnx`` package and takes a few seconds, so its result is
saved in a per-user cache (``$MAINSPRING_CACHE_DIR``, else ``$XDG_CACHE_HOME`` or
``~/.cache``, under ``mainspring/``) keyed by the source model, the ONNX Runtime
version and :data:`RECIPE`; later processes load the saved file directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

RECIPE = "matmulnbits-8bit-block16-sym-acc4-v1"  # change it when the rewrite changes
BLOCK = 16
ACCURACY_INT8 = 4  # MatMulNBits: quantise activations too and multiply in int8


class FastGraphUnavailable(RuntimeError):
    """The int8 graph cannot be built here (``onnx`` missing or ONNX Runtime too old)."""


def cache_dir() -> Path:
    """Where built models are kept: ``$MAINSPRING_CACHE_DIR`` or the user's cache dir."""
    explicit = os.environ.get("MAINSPRING_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mainspring"


def fast_model(source: Path, source_id: str) -> str | bytes:
    """The int8 graph of ``source``: a cached file's path, or the model's bytes when
    the cache cannot be written (a read-only home, say)."""
    key = hashlib.sha256(f"{source_id}|{ort.__version__}|{RECIPE}".encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.onnx"
    if target.is_file():
        return str(target)
    model = _build(source)
    return str(target) if store(target, model) else model


def store(target: Path, data: bytes) -> bool:
    """Write ``data`` to ``target`` whole, or not at all; False if it cannot be written."""
    part: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: a process reading the cache never sees half a file,
        # and two processes building at once both end with a whole one.
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as f:
            part = f.name
            f.write(data)
        os.replace(part, target)
    except OSError:
        if part is not None:
            with contextlib.suppress(OSError):
                os.unlink(part)
        return False
    return True


def _build(source: Path) -> bytes:
    try:
        import onnx
        from onnxruntime.capi._pybind_state import quantize_matmul_8bits
    except ImportError as exc:
        raise FastGraphUnavailable(
            f"{exc}; install the 'onnx' package and onnxruntime >= 1.20 "
            "(pip install 'mainspring[embeddings]')"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="mainspring-embed-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        # ONNX Runtime's basic level folds the stored int8 weights into fp32 constants:
        # the matrices the rewrite below quantises again, in blocks.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folded))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes = []
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        matrix = onnx.numpy_helper.to_array(weight).astype(np.float32)
        rows, cols = matrix.shape
        k_blocks = -(-rows // BLOCK)
        matrix = np.pad(matrix, ((0, k_blocks * BLOCK - rows), (0, 0)))
        packed = np.zeros((cols, k_blocks, BLOCK), dtype=np.uint8)
        scales = np.zeros((cols, k_blocks), dtype=np.float32)
        zero_points = np.zeros((cols, k_blocks), dtype=np.uint8)  # unused: symmetric
        quantize_matmul_8bits(packed, matrix, scales, zero_points, BLOCK, cols, rows, True)
        graph.initializer.extend(
            [
                onnx.numpy_helper.from_array(packed, f"{weight.name}_q8"),
                onnx.numpy_helper.from_array(scales, f"{weight.name}_scales"),
            ]
        )
        nodes.append(
            onnx.helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{weight.name}_q8", f"{weight.name}_scales"],
                list(node.output),
                name=f"{node.name}_q8",
                domain="com.microsoft",
                K=rows,
                N=cols,
                bits=8,
                block_size=BLOCK,
                accuracy_level=ACCURACY_INT8,
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    data: bytes = model.SerializeToString()
    return data
