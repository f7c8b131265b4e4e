"""Per-rail, per-category default thresholds, calibrated on a held-out split with the shipped (int8) model.

Rules (written into ``beaverguard.json``; a policy may override any of them):

* output rail, ``unsafe``: the best-F1 threshold on QA pairs whose false-positive
  rate stays at or under ``max_fpr_output`` (BeaverTails pairs when present). The
  default budget (0.06) is well under the 0.15 we promise, leaving headroom for
  the categories' own false positives and for drift from calibration to new data;
* input rail, ``unsafe``: the lowest threshold that flags at most
  ``max_fpr_input`` of ordinary safe prompts (ToxicChat safe rows when present),
  which maximises recall of harmful requests under that budget;
* each category: its best-F1 threshold on rows with category labels, raised
  where needed so that the category alone flags at most ``max_added_fpr`` of
  the safe rows that ``unsafe`` lets through (categories say *what* is wrong;
  they may not quietly undo the false-positive budget set by ``unsafe``), and
  never below ``min_category`` (rare categories have few calibration positives;
  a near-zero threshold would list them on noise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from beaverguard._categories import CATEGORY_KEYS
from beaverguard.training.data import Row
from beaverguard.training.metrics import best_f1_threshold

__all__ = ["calibrate"]


def _round(t: float) -> float:
    return float(np.clip(np.round(t, 4), 0.01, 0.99))


def calibrate(rows: Sequence[Row], probs: np.ndarray, *, max_fpr_output: float = 0.06,
              max_fpr_input: float = 0.04, max_added_fpr: float = 0.005,
              min_category: float = 0.05) -> dict[str, dict[str, float]]:
    """Return ``{"input": {label: t}, "output": {label: t}}`` from rows and their (n, 15) probabilities."""
    y = np.array([not r.is_safe for r in rows])
    qa = np.array([r.response is not None for r in rows])
    bt = np.array([r.source.startswith("beavertails") for r in rows])
    toxicchat = np.array([r.source.startswith("toxicchat") for r in rows])
    unsafe = probs[:, -1]
    out: dict[str, dict[str, float]] = {}

    sel = qa & bt if (qa & bt).any() else qa
    t_out = best_f1_threshold(y[sel], unsafe[sel], max_fpr=max_fpr_output) if sel.any() else 0.5

    safe_chat = ~qa & ~y & (toxicchat if (~qa & ~y & toxicchat).any() else True)
    t_in = float(np.quantile(unsafe[safe_chat], 1 - max_fpr_input)) if safe_chat.any() else 0.5

    for rail, rail_rows, t_unsafe in (("output", qa, t_out), ("input", ~qa, t_in)):
        labelled = rail_rows & np.array([r.categories is not None for r in rows])
        passed = rail_rows & ~y & (unsafe < t_unsafe)
        thresholds = {"unsafe": _round(t_unsafe)}
        for i, key in enumerate(CATEGORY_KEYS):
            cy = np.array([bool(r.categories) and key in r.categories for r in rows])[labelled]
            t = best_f1_threshold(cy, probs[labelled, i]) if cy.any() else 0.5
            floor = float(np.quantile(probs[passed, i], 1 - max_added_fpr)) if passed.any() else 0.0
            thresholds[key] = _round(max(t, floor, min_category))
        out[rail] = thresholds
    return out
