"""``beaverguard eval``: how the guard's real decisions fare on a labelled file.

Rows are scored with :meth:`Guard.score_many` and judged with :meth:`Guard.judge`,
so the numbers are those of the policy as deployed: prompt-only rows on the
input rail, question-answer pairs on the output rail, reported apart.

* ``unsafe``: the policy's decision (any action but ``allow``) against
  ``is_safe``; AUPRC ranks by the ``unsafe`` score.
* each of the 14 categories, where the data labels categories: the category's
  score at the rail's effective threshold (the policy's override, else the
  model's calibrated default). A safe row counts as a negative for every
  category; an unsafe row without category labels is left out of them.
* two false-positive rates on the safe rows that tempt a guard most: QA pairs
  whose *prompt* is harmful (BeaverTails judges the exchange, so a harmful
  question answered harmlessly is safe), and rows that merely mention a harm word.

The metrics are pure functions of arrays (:func:`evaluate`); only
:func:`run_eval` touches the model, the files and the terminal.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from beaverguard._categories import CATEGORY_KEYS, UNSAFE
from beaverguard._types import Action, Exchange, Rail
from beaverguard.training.data import LABELS, Row, _group, read_jsonl
from beaverguard.training.metrics import Binary, binary, decisions, pr_curve

__all__ = ["HARM_WORDS", "mentions_harm", "score_rows", "evaluate", "format_report",
           "by_source", "format_by_source", "plot_report", "run_eval"]

#: Words whose mere mention tempts a guard to flag a safe row. Matched as whole
#: words, case-insensitively, with an optional -s/-es/-ed/-ing ending.
HARM_WORDS: tuple[str, ...] = (
    "kill", "murder", "shoot", "stab", "bomb", "explosive", "weapon", "gun", "knife", "poison",
    "drug", "cocaine", "heroin", "meth", "steal", "rob", "hack", "fraud", "suicide", "sex", "porn",
    "rape", "terrorist", "abuse", "racist",
)
_HARM_RE = re.compile(r"\b(?:" + "|".join(HARM_WORDS) + r")(?:s|es|ed|ing)?\b", re.IGNORECASE)

SECTIONS: dict[str, tuple[str, Rail]] = {"prompt": ("prompt-only rows", "input"), "qa": ("QA pairs", "output")}


def mentions_harm(text: str) -> bool:
    """True when ``text`` contains one of :data:`HARM_WORDS` as a whole word."""
    return _HARM_RE.search(text) is not None


def score_rows(guard, exchanges: Sequence[Exchange], progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, 15) in :data:`LABELS` order, and whether the policy flags each exchange.

    A prompt alone is judged on the input rail, a prompt with a response on the output rail, by
    the harm rules only: the ``injection`` score (where the model has it) is measured apart.
    """
    scores = guard.score_many(list(exchanges), progress=progress)
    probs = np.array([[s[k] for k in LABELS] for s in scores], dtype=np.float64).reshape(len(scores), len(LABELS))
    flagged = np.array([guard.judge("input" if e.response is None else "output",
                                    {k: s[k] for k in LABELS})[0] is not Action.ALLOW
                        for e, s in zip(exchanges, scores)], dtype=bool)
    return probs, flagged


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


def _metrics(b: Binary, flagged: int, threshold: float | None = None) -> dict:
    """JSON-ready metrics; precision, recall, F1 and AUPRC are null (n/a) without positives."""
    has_pos = b.positives > 0
    out = {"n": b.n, "positives": b.positives, "flagged": flagged,
           "precision": _finite(b.precision) if has_pos else None,
           "recall": _finite(b.recall) if has_pos else None,
           "f1": _finite(b.f1) if has_pos else None,
           "fpr": _finite(b.fpr) if b.n > b.positives else None,
           "auprc": _finite(b.auprc) if has_pos else None}
    if threshold is not None:
        out["threshold"] = round(threshold, 6)
    return out


def _labels_all(row: Row) -> bool:
    """Whether a row says yes or no for every category: full labels, or safe (a negative for all)."""
    return (row.categories is not None and not row.partial) or row.is_safe


def _rate(flagged: np.ndarray, sel: np.ndarray) -> dict:
    n = int(sel.sum())
    return {"n": n, "fpr": round(float(flagged[sel].mean()), 6) if n else None}


def evaluate(rows: Sequence[Row], probs: np.ndarray, flagged: np.ndarray,
             thresholds: Mapping[Rail, Mapping[str, float]], harmful_prompts: Iterable[str] = ()) -> dict:
    """The report for scored rows (pure: arrays in, numbers out).

    ``probs`` is (n, 15) in :data:`LABELS` order, ``flagged`` the policy's decision
    per row, ``thresholds`` the effective thresholds per rail, and
    ``harmful_prompts`` the prompts known harmful besides those of unsafe rows
    (e.g. those the input rail flags).
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(len(rows), len(LABELS))
    flagged = np.asarray(flagged, dtype=bool)
    is_qa = np.array([r.response is not None for r in rows], dtype=bool)
    y = np.array([not r.is_safe for r in rows], dtype=bool)
    harmful = {_group(p) for p in harmful_prompts} | {_group(r.prompt) for r in rows if not r.is_safe}
    report: dict = {}
    for name, (_, rail) in SECTIONS.items():
        sel = is_qa if name == "qa" else ~is_qa
        if not sel.any():
            continue
        part = [r for r, s in zip(rows, sel) if s]
        p, f, ys = probs[sel], flagged[sel], y[sel]
        t = thresholds[rail]
        section: dict = {"rail": rail, "rows": int(sel.sum()), "unsafe": _decision_metrics(ys, f, p, t)}
        if any(r.categories is not None for r in part):
            labelled = np.array([_labels_all(r) for r in part], dtype=bool)
            cats = {}
            for i, key in enumerate(CATEGORY_KEYS):
                cy = np.array([bool(r.categories) and key in r.categories for r in part], dtype=bool)[labelled]
                score = p[labelled, i]
                cats[key] = _metrics(binary(cy, score, t[key]), int((score >= t[key]).sum()), t[key])
            section["categories"] = cats
        safe = ~ys
        rates = {}
        if name == "qa":
            rates["safe_pair_harmful_prompt"] = _rate(
                f, safe & np.array([_group(r.prompt) in harmful for r in part], dtype=bool))
        rates["safe_mentions_harm_word"] = _rate(
            f, safe & np.array([mentions_harm(f"{r.prompt}\n{r.response or ''}") for r in part], dtype=bool))
        section["false_positive_rates"] = rates
        report[name] = section
    return report


def _cell(x: float | None, width: int = 9) -> str:
    return f"{'n/a':>{width}}" if x is None else f"{x:>{width}.3f}"


def format_report(report: Mapping) -> str:
    """A plain-text table of :func:`evaluate`'s report."""
    lines = []
    head = f"{'label':<48}{'n':>7}{'pos':>6}{'thresh':>9}{'precision':>10}{'recall':>9}{'F1':>9}{'FPR':>9}{'AUPRC':>9}"
    for name, section in report["sections"].items():
        title, _ = SECTIONS[name]
        summary = f"{title} ({section['rail']} rail): {section['rows']} rows, {section['unsafe']['positives']} unsafe"
        lines += ["", summary, head, "-" * len(head)]
        entries = [("unsafe (policy decision)", section["unsafe"]), *section.get("categories", {}).items()]
        for label, m in entries:
            lines.append(f"{label[:47]:<48}{m['n']:>7}{m['positives']:>6}{m['threshold']:>9.4f}"
                         f"{_cell(m['precision'], 10)}{_cell(m['recall'])}{_cell(m['f1'])}{_cell(m['fpr'])}"
                         f"{_cell(m['auprc'])}")
        lines.append("false-positive rate of the policy decision on safe rows:")
        for label, r in section["false_positive_rates"].items():
            what = {"safe_pair_harmful_prompt": "safe pairs whose prompt is harmful",
                    "safe_mentions_harm_word": "safe rows that mention a harm word"}[label]
            lines.append(f"  {what:<46}{r['n']:>7} rows  FPR {_cell(r['fpr'], 6).strip()}")
    return "\n".join(lines).lstrip("\n")


def plot_report(rows: Sequence[Row], probs: np.ndarray, report: Mapping, out: Path) -> list[Path]:
    """Write precision-recall curves (PNG), one per section: ``unsafe`` with the policy's operating point, and
    each category with positives."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("beaverguard eval --plot needs matplotlib: pip install beaverguard[plot]") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    is_qa = np.array([r.response is not None for r in rows], dtype=bool)
    y = np.array([not r.is_safe for r in rows], dtype=bool)
    written = []
    for name, section in report["sections"].items():
        sel = is_qa if name == "qa" else ~is_qa
        part = [r for r, s in zip(rows, sel) if s]
        curves = [("unsafe", y[sel], probs[sel, -1])]
        if "categories" in section:
            labelled = np.array([_labels_all(r) for r in part], dtype=bool)
            curves += [(key, np.array([bool(r.categories) and key in r.categories for r in part])[labelled],
                        probs[sel][labelled, i]) for i, key in enumerate(CATEGORY_KEYS)]
        fig, ax = plt.subplots(figsize=(11, 6))
        for n, (label, ys, score) in enumerate(curves):
            if not ys.any():
                continue
            precision, recall, _ = pr_curve(ys, score)
            m = section["unsafe"] if label == UNSAFE else section["categories"][label]
            ax.step(recall, precision, where="post", lw=2.5 if label == UNSAFE else 1,
                    color="black" if label == UNSAFE else plt.cm.tab20(n % 20),
                    label=f"{label} (AP {m['auprc']:.3f})")
        u = section["unsafe"]
        if u["recall"] is not None:
            ax.plot([u["recall"]], [u["precision"]], "ro", label="policy decision (unsafe)")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"{SECTIONS[name][0]} ({section['rail']} rail), {section['rows']} rows")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        path = out / f"pr_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _decision_metrics(ys: np.ndarray, flagged: np.ndarray, probs: np.ndarray, t: Mapping[str, float]) -> dict:
    """The policy decision's metrics (AUPRC from the ``unsafe`` score) on one slice of rows."""
    return _metrics(decisions(ys, flagged, probs[:, -1]), int(flagged.sum()), t[UNSAFE])


def by_source(rows: Sequence[Row], probs: np.ndarray, flagged: np.ndarray,
              thresholds: Mapping[Rail, Mapping[str, float]]) -> dict[str, dict]:
    """:func:`evaluate`'s ``unsafe`` metrics for each ``source`` of the rows, per section."""
    probs = np.asarray(probs, dtype=np.float64).reshape(len(rows), len(LABELS))
    flagged = np.asarray(flagged, dtype=bool)
    sources = np.array([r.source or "(none)" for r in rows])
    is_qa = np.array([r.response is not None for r in rows], dtype=bool)
    y = np.array([not r.is_safe for r in rows], dtype=bool)
    out: dict[str, dict] = {}
    for source in sorted(set(sources)):
        out[source] = {}
        for name, (_, rail) in SECTIONS.items():
            sel = (sources == source) & (is_qa if name == "qa" else ~is_qa)
            if sel.any():
                out[source][name] = _decision_metrics(y[sel], flagged[sel], probs[sel], thresholds[rail])
    return out


def equal_recall(rows: Sequence[Row], probs: np.ndarray, source: str, recall: float = 0.9) -> dict:
    """Each source's flagged share at the ``unsafe`` threshold that catches ``recall`` of ``source``'s unsafe rows.

    A model (or a data mix) is better only if it over-blocks less *at the same recall*: a higher
    threshold lowers false positives and recall together, and hides nothing about the ranking. This
    compares two models at the one operating point where they catch the same share of a harmful
    source (best a held-out one). Rows are split into prompts and QA pairs, as the rails are.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(len(rows), len(LABELS))
    unsafe = probs[:, LABELS.index(UNSAFE)]
    target = np.sort(unsafe[[r.source == source and r.is_safe is False for r in rows]])[::-1]
    if not len(target):
        raise ValueError(f"no unsafe rows of source {source!r} to set the threshold on")
    t = float(target[max(0, math.ceil(recall * len(target)) - 1)])
    out: dict = {"source": source, "recall": recall, "threshold": round(t, 6), "rows": len(target), "flagged": {}}
    for src in sorted({r.source for r in rows}):
        for name in SECTIONS:
            sel = np.array([r.source == src and (r.response is not None) == (name == "qa") and r.is_safe is not None
                            for r in rows], dtype=bool)
            if not sel.any():
                continue
            ys = np.array([not r.is_safe for r, s in zip(rows, sel) if s], dtype=bool)
            entry = {"n": int(sel.sum()), "auprc": _finite(binary(ys, unsafe[sel], t).auprc) if ys.any() else None}
            if (~ys).any():
                entry["safe_flagged"] = round(float((unsafe[sel][~ys] >= t).mean()), 4)
            if ys.any():
                entry["unsafe_caught"] = round(float((unsafe[sel][ys] >= t).mean()), 4)
            out["flagged"][f"{src} ({name})"] = entry
    return out


def format_equal_recall(table: Mapping) -> str:
    lines = ["", f"at equal recall: unsafe >= {table['threshold']:.4f} catches {table['recall']:.0%} of "
                 f"{table['source']} ({table['rows']} unsafe rows); per source:",
             f"{'source':<48}{'n':>7}{'safe flagged':>14}{'unsafe caught':>15}{'AUPRC':>9}"]
    for src, m in table["flagged"].items():
        lines.append(f"{src[:47]:<48}{m['n']:>7}{_cell(m.get('safe_flagged'), 14)}{_cell(m.get('unsafe_caught'), 15)}"
                     f"{_cell(m['auprc'])}")
    return "\n".join(lines)


def format_by_source(table: Mapping[str, Mapping]) -> str:
    """One line per source and section: the policy decision's metrics."""
    head = f"{'source':<40}{'rows':>7}{'n':>7}{'pos':>6}{'precision':>10}{'recall':>9}{'F1':>9}{'FPR':>9}{'AUPRC':>9}"
    lines = ["", "by source (policy decision):", head, "-" * len(head)]
    for source, sections in table.items():
        for name, m in sections.items():
            lines.append(f"{source[:39]:<40}{name:>7}{m['n']:>7}{m['positives']:>6}{_cell(m['precision'], 10)}"
                         f"{_cell(m['recall'])}{_cell(m['f1'])}{_cell(m['fpr'])}{_cell(m['auprc'])}")
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from beaverguard._guard import Guard

    try:
        rows = [row for path in args.data for row in read_jsonl(path)]
    except (OSError, ValueError) as exc:
        raise SystemExit(f"beaverguard eval: {exc}") from None
    unlabelled = sum(r.is_safe is None for r in rows)
    rows = [r for r in rows if r.is_safe is not None]  # injection-only rows say nothing about harm
    if unlabelled:
        print(f"beaverguard eval: {unlabelled} rows without is_safe (injection labels only) left out", file=sys.stderr)
    if not rows:
        raise SystemExit("beaverguard eval: the data has no rows")
    guard = Guard(args.policy, model=args.model)
    try:
        exchanges = [Exchange(r.prompt, r.response, r.context) for r in rows]
        # A QA pair's prompt is harmful also when the input rail flags it; score those prompts once each.
        qa_prompts = sorted({r.prompt for r in rows if r.response is not None})
        with tqdm(total=len(exchanges) + len(qa_prompts), desc="scoring", unit="row", disable=None,
                  file=sys.stderr) as bar:
            probs, flagged = score_rows(guard, exchanges, progress=bar.update)
            _, prompt_flagged = score_rows(guard, [Exchange(p) for p in qa_prompts], progress=bar.update)
        thresholds = {rail: guard.thresholds(rail) for rail in ("input", "output")}
        model = getattr(getattr(guard.scorer, "spec", None), "name", type(guard.scorer).__name__)
    finally:
        guard.close()
    report = {"data": [str(p) for p in args.data], "model": model,
              "policy": str(args.policy) if args.policy else None,
              "sections": evaluate(rows, probs, flagged, thresholds,
                                   [p for p, f in zip(qa_prompts, prompt_flagged) if f])}
    if getattr(args, "by_source", False):
        report["by_source"] = by_source(rows, probs, flagged, thresholds)
    if getattr(args, "unseen_from", None):
        from beaverguard.training.mix import Repeats

        seen = Repeats([r.prompt for r in read_jsonl(args.unseen_from)], share=0.5)
        keep = np.array([r.prompt not in seen for r in rows], dtype=bool)
        report["by_source_unseen"] = by_source([r for r, k in zip(rows, keep) if k], probs[keep], flagged[keep],
                                               thresholds)
        report["unseen_rows"] = int(keep.sum())
    if getattr(args, "equal_recall", None):
        source, _, recall = args.equal_recall.partition("=")
        try:
            report["equal_recall"] = equal_recall(rows, probs, source, float(recall or 0.9))
        except ValueError as exc:
            raise SystemExit(f"beaverguard eval: --equal-recall: {exc}") from None
    print(f"beaverguard eval: {len(rows)} rows, model {model}, policy {report['policy'] or '(default)'}")
    print(format_report(report))
    if "by_source" in report:
        print(format_by_source(report["by_source"]))
    if "equal_recall" in report:
        print(format_equal_recall(report["equal_recall"]))
    if "by_source_unseen" in report:
        print(f"\nprompts unseen in {args.unseen_from} ({report['unseen_rows']} rows: no prompt there is the same, "
              "or shares half its 8-word runs):", end="")
        print(format_by_source(report["by_source_unseen"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        for path in plot_report(rows, probs, report, args.plot):
            print(f"wrote {path}")
    return 0
