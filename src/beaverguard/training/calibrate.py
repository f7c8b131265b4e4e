"""Default thresholds calibrated on the decision the policy makes, not on each label alone.

The default policy flags a row when *any* of its 15 rules fires (a category or
``unsafe``). Calibrating each label to its own false-positive budget and then
taking the union let the real false-positive rate climb well past every single
budget. So the thresholds here are chosen together, per rail:

* every category starts at its best-F1 threshold on rows with category labels
  (never below ``min_category``: rare categories have few calibration positives);
* a shared knob ``alpha`` raises each category to the ``1 - alpha`` quantile of
  its scores on the rail's safe rows, so that together the categories add few
  false positives;
* for each ``alpha`` and each candidate ``unsafe`` threshold, the decision (any
  rule firing) is computed on every calibration row, and its false-positive rate
  is measured *per family* (ordinary chat, benign look-alikes, BeaverTails QA,
  ...). The pair that maximises the rail's objective (recall of harmful
  prompts, or F1 on QA pairs) while every family stays within its budget wins;
  ties go to the stricter thresholds. If no pair fits, the one that overshoots
  its worst budget least wins, and the report says so.

Families and budgets come from the data mix (``calibration:``); without one,
BeaverTails QA pairs and ordinary chat prompts (ToxicChat) are recognised by
their source, with the budgets of :data:`DEFAULT_BUDGETS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from beaverguard._categories import CATEGORY_KEYS
from beaverguard.training.data import Row
from beaverguard.training.metrics import best_f1_threshold

__all__ = ["Budget", "DEFAULT_BUDGETS", "INJECTION_BUDGET", "calibrate", "calibrate_injection", "default_family"]

ALPHAS = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
MIN_FAMILY_ROWS = 20  # a family with fewer safe rows than this is not held to its budget (too noisy)


@dataclass(frozen=True)
class Budget:
    """One rail's calibration target: false-positive budgets per family, and what to maximise within them."""

    fpr: Mapping[str, float]
    maximize: str = "recall"  # "recall" of unsafe rows, or "f1"
    over: Sequence[str] = ()  # families the objective is measured on (empty: all)


DEFAULT_BUDGETS: dict[str, Budget] = {
    "input": Budget({"chat": 0.04}, "recall"),
    "output": Budget({"qa_beavertails": 0.06}, "f1", ("qa_beavertails",)),
}


#: The injection threshold's budget without a mix: few false alarms on benign text handed to a model.
INJECTION_BUDGET = Budget({"injection": 0.03, "chat": 0.01}, "recall")


def calibrate_injection(rows: Sequence[Row], scores: np.ndarray, *, families: Mapping[str, str] | None = None,
                        budget: Budget | None = None) -> tuple[float, dict]:
    """The ``injection`` threshold: the highest recall of injections with every family's benign rows in budget.

    ``rows`` are rows labelled for injection (``row.injection`` not None) and ``scores``
    their ``injection`` scores. Ties go to the higher threshold.
    """
    budget = budget or INJECTION_BUDGET
    scores = np.asarray(scores, dtype=np.float64)
    y = np.array([bool(r.injection) for r in rows], dtype=bool)
    fam = np.array([families.get(r.source, default_family(r)) if families else default_family(r) for r in rows])
    groups = {f: ~y & (fam == f) for f in budget.fpr}
    groups = {f: g for f, g in groups.items() if g.sum() >= MIN_FAMILY_ROWS} or {"all": ~y}
    limits = {f: budget.fpr.get(f, min(budget.fpr.values())) for f in groups}
    best = None
    for t in np.unique(np.r_[np.quantile(scores, np.linspace(0, 1, 801)), 0.5]):
        flagged = scores >= t
        over = max(float(flagged[g].mean()) - limits[f] for f, g in groups.items())
        recall = float(flagged[y].mean()) if y.any() else 0.0
        key = (over <= 0, recall if over <= 0 else -over, t)
        if best is None or key > best[0]:
            best = (key, t, flagged, over, recall)
    _, t, flagged, over, recall = best
    return _round(t), {"objective": "recall", "value": round(recall, 4), "within_budget": over <= 0,
                       "fpr": {f: round(float(flagged[g].mean()), 4) for f, g in groups.items()},
                       "budget": {f: limits[f] for f in groups}}


def default_family(row: Row) -> str:
    """A row's family when no mix names it: BeaverTails QA, ordinary chat, or the rest."""
    if row.response is not None:
        return "qa_beavertails" if row.source.startswith("beavertails") else "qa"
    return "chat" if row.source.startswith(("toxicchat", "alpaca")) else "prompt"


def _round(t: float) -> float:
    return float(np.clip(np.round(t, 4), 0.01, 0.99))


def _objective(y: np.ndarray, flagged: np.ndarray, kind: str) -> float:
    tp = float((flagged & y).sum())
    if kind == "recall":
        return tp / max(float(y.sum()), 1.0)
    fp, fn = float((flagged & ~y).sum()), float((~flagged & y).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1.0)


def _calibrate_rail(probs: np.ndarray, y: np.ndarray, families: np.ndarray, labelled: np.ndarray,
                    cats: np.ndarray, budget: Budget, min_category: float) -> tuple[dict[str, float], dict]:
    safe = ~y
    f1 = np.array([best_f1_threshold(cats[labelled, i], probs[labelled, i]) if cats[labelled, i].any() else 0.5
                   for i in range(len(CATEGORY_KEYS))])
    groups = {f: safe & (families == f) for f in budget.fpr}
    groups = {f: g for f, g in groups.items() if g.sum() >= MIN_FAMILY_ROWS}
    if not groups:  # no budgeted family here: hold all safe rows to the tightest budget
        groups = {"all": safe}
    limits = {f: budget.fpr.get(f, min(budget.fpr.values())) for f in groups}
    scope = np.isin(families, list(budget.over)) if budget.over else np.ones(len(y), dtype=bool)
    if not (scope & y).any():
        scope = np.ones(len(y), dtype=bool)
    unsafe = probs[:, -1]
    candidates = np.unique(np.r_[np.quantile(unsafe, np.linspace(0, 1, 401)), 0.5])
    best = None
    for alpha in ALPHAS:
        if alpha and safe.any():
            floor = np.quantile(probs[safe, :-1], 1 - alpha, axis=0)
        else:
            floor = np.zeros(len(CATEGORY_KEYS))
        t_cat = np.maximum.reduce([f1, floor, np.full(len(CATEGORY_KEYS), min_category)])
        by_category = (probs[:, :-1] >= t_cat).any(axis=1)
        for t_u in candidates:
            flagged = by_category | (unsafe >= t_u)
            over = max(float(flagged[g].mean()) - limits[f] for f, g in groups.items())
            score = _objective(y[scope], flagged[scope], budget.maximize)
            key = (over <= 0, score if over <= 0 else -over, t_u, -alpha)  # within budget first, then best
            if best is None or key > best[0]:
                best = (key, t_u, t_cat, alpha, flagged, over, score)
    _, t_u, t_cat, alpha, flagged, over, score = best
    thresholds = {"unsafe": _round(t_u)} | {k: _round(t) for k, t in zip(CATEGORY_KEYS, t_cat)}
    report = {"objective": budget.maximize, "value": round(score, 4), "alpha": alpha, "within_budget": over <= 0,
              "fpr": {f: round(float(flagged[g].mean()), 4) for f, g in groups.items()},
              "budget": {f: limits[f] for f in groups}}
    return thresholds, report


def calibrate(rows: Sequence[Row], probs: np.ndarray, *, families: Mapping[str, str] | None = None,
              budgets: Mapping[str, Budget] | None = None, min_category: float = 0.05,
              report: dict | None = None) -> dict[str, dict[str, float]]:
    """Return ``{"input": {label: t}, "output": {label: t}}`` from rows and their (n, 15) probabilities.

    ``families`` maps a row's source to its family (default: :func:`default_family`);
    ``budgets`` gives each rail's :class:`Budget` (default: :data:`DEFAULT_BUDGETS`).
    ``report``, if given, receives what each rail reached (objective, FPR per family).
    A rail without rows keeps 0.5 everywhere.
    """
    budgets = budgets or DEFAULT_BUDGETS
    probs = np.asarray(probs, dtype=np.float64)
    if any(r.is_safe is None for r in rows):
        raise ValueError("calibrate() takes rows with a harm label; calibrate injection-only rows with "
                         "calibrate_injection()")
    y = np.array([not r.is_safe for r in rows], dtype=bool)
    qa = np.array([r.response is not None for r in rows], dtype=bool)
    fam = np.array([families.get(r.source, default_family(r)) if families else default_family(r) for r in rows])
    full = np.array([r.categories is not None and not r.partial for r in rows], dtype=bool)
    cats = np.array([[bool(r.categories) and k in r.categories for k in CATEGORY_KEYS] for r in rows],
                    dtype=bool).reshape(len(rows), len(CATEGORY_KEYS))
    out: dict[str, dict[str, float]] = {}
    for rail, sel in (("input", ~qa), ("output", qa)):
        if not sel.any() or rail not in budgets:
            out[rail] = {"unsafe": 0.5} | {k: 0.5 for k in CATEGORY_KEYS}
            continue
        labelled = full[sel] | ~y[sel]  # a safe row is a negative for every category
        out[rail], rail_report = _calibrate_rail(probs[sel], y[sel], fam[sel], labelled, cats[sel],
                                                 budgets[rail], min_category)
        if report is not None:
            report[rail] = rail_report
    return out
