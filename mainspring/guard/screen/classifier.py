"""The local injection classifier: a logistic regression over word n-gram features
(``features.py``), its weights shipped as package data
(``mainspring/guard/screen/data/injection_classifier.json.gz``), trained in the project by
``benchmarks/screen_train.py`` from the labelled set in ``benchmarks/screen_data/``.

Nothing is downloaded: the weights load from the installed package on first use
(~20 ms, once per process), and scoring is pure Python (no numpy at run time).
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from .errors import ScreenConfigError
from .features import scale, windows

DATA: Final = "injection_classifier.json.gz"


@dataclass(frozen=True)
class Classifier:
    """Weights by feature, a bias and the threshold a probability is flagged at."""

    weights: dict[str, float]
    bias: float
    threshold: float
    about: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None) -> Classifier:
        """The shipped classifier, or one trained elsewhere by the same script (``path``)."""
        try:
            if path is None:
                raw = resources.files(__package__).joinpath("data").joinpath(DATA).read_bytes()
            else:
                raw = Path(path).read_bytes()
            data = json.loads(gzip.decompress(raw))
            return cls(
                {str(k): float(v) for k, v in data["weights"].items()},
                float(data["bias"]),
                float(data["threshold"]),
                dict(data.get("about", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            where = path or f"the package data {DATA}"
            raise ScreenConfigError(
                f"the injection classifier could not be loaded from {where}: {exc}; reinstall "
                "mainspring, or train one with benchmarks/screen_train.py"
            ) from exc

    def probability(self, text: str) -> float:
        """The highest probability of injection over the text's windows."""
        return max(self._window(w) for w in windows(text))

    def _window(self, feats: set[str]) -> float:
        get = self.weights.get
        total = sum(w for w in map(get, feats) if w is not None)
        z = self.bias + total * scale(feats)
        return 1.0 / (1.0 + math.exp(-z)) if z > -30 else 0.0


_shipped: Classifier | None = None


def shipped() -> Classifier:
    """The package's classifier, loaded once per process."""
    global _shipped
    if _shipped is None:
        _shipped = Classifier.load()
    return _shipped
