"""Replay an audit log under another policy: what would change, decided again from the recorded scores.

Every audit record keeps all of a decision's scores with its rail and channel, so a candidate
policy can be tried on past traffic without a model: each record is decided again by the rules
of :func:`beaverguard._decision.decide` and compared with what was recorded. The file is read
line by line, never whole, so a log of millions of records replays in bounded memory.
``rescore`` scores the kept text again with the policy's model instead (a new model version);
``labels`` (reviewers' ``request_id`` -> ``is_safe``) adds precision, recall and false-positive
rates. ``beaverguard replay`` and ``beaverguard policy diff`` print what this module computes.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beaverguard._categories import INJECTION, UNSAFE, category
from beaverguard._decision import threshold
from beaverguard._exceptions import PolicyError
from beaverguard._model import ModelSpec, default_model_dir
from beaverguard._policy import AuditPolicy, Policy, RailPolicy
from beaverguard._types import CHANNELS, Action, Channel, Exchange, Rail
from beaverguard._yaml import load_policy

try:  # several times faster on audit lines; used when it happens to be installed, never required
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the environment
    from json import loads as _loads

__all__ = ["Rules", "Replay", "replay", "load_replay_policy", "read_labels", "policy_diff", "run_replay",
           "run_policy_diff"]

RAILS: tuple[Rail, ...] = ("input", "output")
#: Audit records round scores to 6 digits: a stored score this close to a threshold may have been on either side.
ROUNDING = 0.5e-6 + 1e-12  # records keep 6 digits (4 before 2026-12-07)
EXAMPLES_PER_CHANGE = 3
RESCORE_CHUNK = 1024  # exchanges handed to Guard.score_many at a time: bounded memory, full batches
BINS = 50
_HASHED = re.compile(r"sha256:[0-9a-f]{64}")
_ACTIONS = sorted(Action, key=lambda a: a.severity)  # severity -> action


# -- deciding -----------------------------------------------------------------------------------


class Rules:
    """One rail's rules for one channel, resolved once per label instead of once per record and label.

    Decides exactly as :func:`beaverguard._decision.decide` (a test holds them equal); what it saves
    is the policy lookups, which are most of the cost when a million records are decided again.
    """

    HARM, OVERALL, INJECTED = 0, 1, 2

    def __init__(self, rail: RailPolicy, defaults: Mapping[str, float], channel: Channel = "user",
                 unverified: Action | None = None) -> None:
        self.rail, self.defaults, self.channel = rail, defaults, channel
        self.unsafe_severity = rail.unsafe.action.severity
        self.unverified_severity = -1 if unverified is None else unverified.severity
        self.table: dict[str, tuple[float, int, int]] = {}  # label -> (threshold, severity, kind)

    def entry(self, key: str) -> tuple[float, int, int]:
        """The threshold, action severity and kind of ``key``'s rule (a plugin's label too: the rail's default)."""
        found = self.table.get(key)
        if found is None:
            rule = self.rail.rule(key, self.channel)
            kind = self.OVERALL if key == UNSAFE else self.INJECTED if key == INJECTION else self.HARM
            found = self.table[key] = (threshold(rule, key, self.defaults), rule.action.severity, kind)
        return found

    def decide(self, scores: Mapping[str, float], unverified: bool = False) -> tuple[str, list[str]]:
        """The action (its value) and the labels that fired, as ``decide()`` gives them.

        ``unverified``: the guard found the text in a language its model does not read, and the
        policy's ``languages`` action applies on top (the stricter wins), as in the guard.
        """
        fired: list[str] = []
        strictest = 0
        unsafe_fired = harm_fired = False
        table = self.table
        for key, score in scores.items():
            t, severity, kind = table.get(key) or self.entry(key)
            if score < t:
                continue
            if kind == self.OVERALL:
                unsafe_fired = True
                continue
            fired.append(key)
            harm_fired = harm_fired or kind == self.HARM
            if severity > strictest:
                strictest = severity
        if not harm_fired and unsafe_fired and self.unsafe_severity > strictest:
            strictest = self.unsafe_severity
        if unverified and self.unverified_severity > strictest:
            strictest = self.unverified_severity
        return _ACTIONS[strictest].value, fired

    def near_threshold(self, scores: Mapping[str, float]) -> bool:
        """Whether a stored (rounded) score is within rounding of its threshold, so its side is not known."""
        return any(abs(score - self.entry(key)[0]) <= ROUNDING for key, score in scores.items())


def load_replay_policy(path: str | Path, model: str | Path | None = None) -> tuple[Policy, ModelSpec]:
    """The candidate policy (``model`` overrides its model) and its model's spec, for the default thresholds."""
    policy = load_policy(path)
    if model is not None:
        policy = policy.model_copy(update={"model": Path(model).resolve(), "remote": None})
    if policy.model is None and policy.remote is not None:
        raise PolicyError(f"{path}: this policy scores on a remote tier, whose model's calibrated thresholds "
                          "replay needs: pass --model with that model's directory")
    return policy, ModelSpec.load(policy.model or default_model_dir(), verify=False)


# -- reading ------------------------------------------------------------------------------------


def read_audit(path: str | Path) -> Iterator[dict | None]:
    """Each record of an audit file, streamed; None for a line that is not a JSON object (a torn last write)."""
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = _loads(line)
            except ValueError:
                yield None
                continue
            yield rec if isinstance(rec, dict) else None


def read_labels(path: str | Path) -> dict[str, bool]:
    """Reviewers' verdicts, ``{"request_id": ..., "is_safe": true|false}`` per line; errors name the line."""
    labels: dict[str, bool] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rid, safe = row["request_id"], row["is_safe"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}:{n}: each line needs a JSON object with request_id and is_safe") from None
            if not isinstance(safe, bool):
                raise ValueError(f"{path}:{n}: is_safe must be true or false")
            labels[str(rid)] = safe
    return labels


def _verbatim(text: Any) -> bool:
    """Whether a record kept this text as it was (not hashed, not dropped)."""
    return isinstance(text, str) and not _HASHED.fullmatch(text)


def _unreplayable(rec: dict | None) -> str | None:
    """Why a record cannot be decided again from its scores, or None when it can."""
    if rec is None:
        return "not a JSON object"
    if rec.get("error") is not None:
        return "scoring failed (error)"
    if not rec.get("scores"):
        return "no scores"
    if rec.get("rail") not in RAILS or (rec.get("channel") or "user") not in CHANNELS:
        return "unknown rail or channel"
    return None


# -- tallying -----------------------------------------------------------------------------------


@dataclass
class RailTally:
    records: int = 0
    changed: int = 0
    old_flagged: int = 0
    new_flagged: int = 0


@dataclass
class Replay:
    """What a replay found, tallied record by record; :meth:`report` turns it into plain data."""

    policy: Policy
    spec: ModelSpec
    rules: dict[tuple[Rail, Channel], Rules]
    labels: dict[str, bool] | None = None
    plots: bool = False
    rescore: bool = False
    fingerprint: str = ""
    skipped: Counter = field(default_factory=Counter)
    recorded_under: Counter = field(default_factory=Counter)  # (policy fingerprint, model) -> records
    rails: dict[Rail, RailTally] = field(default_factory=lambda: {r: RailTally() for r in RAILS})
    transitions: Counter = field(default_factory=Counter)  # (rail, old action, new action) -> changed records
    categories: Counter = field(default_factory=Counter)  # (rail, label, "fires"|"stops") -> records
    involved: Counter = field(default_factory=Counter)  # (rail, label) -> changed records it took part in
    borderline: int = 0  # changes that hinge on a rounded score within rounding of its threshold
    rounding: int = 0  # ... of records decided under this very policy: the recorded decision stands
    examples: list[dict] = field(default_factory=list)
    histograms: dict[tuple[str, Rail, str], list[int]] = field(default_factory=dict)  # (old|new, rail, label)
    lowest_fired: dict[tuple[Rail, str], float] = field(default_factory=dict)  # bounds on the recorded thresholds
    highest_quiet: dict[tuple[Rail, str], float] = field(default_factory=dict)
    labelled: list[tuple[Rail, bool, bool, bool, Mapping[str, float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fingerprint = self.policy.fingerprint()

    def add(self, rec: dict, scores: Mapping[str, float]) -> None:
        """Decide one record again (on ``scores``: recorded or rescored) and count what changed."""
        rail: Rail = rec["rail"]
        rules = self.rules[rail, rec.get("channel") or "user"]
        action, fired = rules.decide(scores, rec.get("unverified") is True)
        old_action, old_fired = rec["action"], rec.get("categories") or []
        changed = action != old_action or (fired != old_fired and set(fired) != set(old_fired))
        lineage = (rec.get("policy"), rec.get("model"))
        if changed and not self.rescore and rules.near_threshold(scores):
            if lineage == (self.fingerprint, self.spec.name):  # same policy, same model, same (unrounded) scores
                action, fired, changed = old_action, old_fired, False
                self.rounding += 1
            else:
                self.borderline += 1
        tally = self.rails[rail]
        tally.records += 1
        tally.old_flagged += old_action != "allow"
        tally.new_flagged += action != "allow"
        self.recorded_under[lineage] += 1
        if changed:
            tally.changed += 1
            self._changed(rec, rail, old_action, old_fired, action, fired)
        if self.plots:
            self._histogram(rail, rec, scores)
        if self.labels is not None:
            safe = self.labels.get(str(rec.get("request_id")))
            if safe is not None:
                self.labelled.append((rail, not safe, old_action != "allow", action != "allow", scores))

    def _changed(self, rec: dict, rail: Rail, old_action: str, old_fired: list[str], action: str,
                 fired: list[str]) -> None:
        self.transitions[rail, old_action, action] += 1
        old, new = set(old_fired), set(fired)
        for key in new - old:
            self.categories[rail, key, "fires"] += 1
        for key in old - new:
            self.categories[rail, key, "stops"] += 1
        for key in (old ^ new) or (old | new) or (set() if rec.get("unverified") else {UNSAFE}):  # what it turned on
            self.involved[rail, key] += 1
        kind = (rail, old_action, action)
        if _verbatim(rec.get("prompt")) and sum(e["_kind"] == kind for e in self.examples) < EXAMPLES_PER_CHANGE:
            self.examples.append({"_kind": kind, "request_id": rec.get("request_id"), "rail": rail,
                                  "from": old_action, "to": action, "categories_from": old_fired,
                                  "categories_to": fired, "prompt": rec["prompt"][:500],
                                  "response": rec["response"][:500] if _verbatim(rec.get("response")) else None})

    def _histogram(self, rail: Rail, rec: dict, scores: Mapping[str, float]) -> None:
        """Score distributions for the plots: the recorded scores, and the rescored ones when they differ."""
        pairs = [("old", rec["scores"])] + ([("new", scores)] if self.rescore else [])
        for which, values in pairs:
            for key, score in values.items():
                counts = self.histograms.get((which, rail, key))
                if counts is None:
                    counts = self.histograms[which, rail, key] = [0] * BINS
                counts[min(int(score * BINS), BINS - 1)] += 1
        # The recorded thresholds are not in the records; the scores at which rules fired or not bound them.
        fired = set(rec.get("categories") or ())
        for key, score in rec["scores"].items():
            if key == UNSAFE:
                continue  # whether unsafe fired is not recorded
            if key in fired:
                if score < self.lowest_fired.get((rail, key), 2.0):
                    self.lowest_fired[rail, key] = score
            elif score > self.highest_quiet.get((rail, key), -1.0):
                self.highest_quiet[rail, key] = score

    def report(self, fpr_budget: float = 0.05) -> dict[str, Any]:
        """Plain data (what ``--json`` prints): counts by rail, action change, category; examples; label metrics."""
        replayed = sum(t.records for t in self.rails.values())
        out: dict[str, Any] = {
            "policy": {"fingerprint": self.fingerprint, "model": self.spec.name},
            "records": replayed + sum(self.skipped.values()),
            "replayed": replayed,
            "changed": sum(t.changed for t in self.rails.values()),
            "borderline": self.borderline,
            "kept_as_recorded_rounding": self.rounding,
            "not_replayable": dict(self.skipped.most_common()),
            "recorded_under": [{"policy": p, "model": m, "records": n}
                               for (p, m), n in self.recorded_under.most_common()],
            "rails": {rail: {"records": t.records, "changed": t.changed,
                             "flag_rate": {"old": _rate(t.old_flagged, t.records),
                                           "new": _rate(t.new_flagged, t.records)}}
                      for rail, t in self.rails.items() if t.records},
            "transitions": [{"rail": r, "from": a, "to": b, "records": n}
                            for (r, a, b), n in self.transitions.most_common()],
            "categories": _category_rows(self.categories),
            "examples": [{k: v for k, v in e.items() if k != "_kind"} for e in self.examples],
            "warnings": self.warnings(),
        }
        if self.labels is not None:
            out["labels"] = self._label_report(fpr_budget)
        return out

    def warnings(self) -> list[str]:
        others = sorted({m for (_, m), _ in self.recorded_under.items() if m not in (None, self.spec.name)})
        if others and not self.rescore:
            return [f"records were scored by {', '.join(others)}, the policy's model is {self.spec.name}: stored "
                    f"scores are decided with {self.spec.name}'s thresholds; --rescore scores the kept text again"]
        return []

    def _label_report(self, budget: float) -> dict[str, Any]:
        """Precision, recall and FPR per rail for the recorded and the new decisions, and per label the
        threshold with the best F1 whose FPR on these labels is within ``budget`` (the calibration's choice)."""
        import numpy as np

        from beaverguard.training.metrics import best_f1_threshold, binary, decisions

        out: dict[str, Any] = {"labels": len(self.labels or {}), "fpr_budget": budget, "rails": {}}
        for rail in RAILS:
            rows = [r for r in self.labelled if r[0] == rail]
            if not rows:
                continue
            y = np.array([r[1] for r in rows], dtype=bool)
            old, new = (np.array([r[i] for r in rows], dtype=bool) for i in (2, 3))
            metrics = {}
            for name, pred in (("old", old), ("new", new)):
                m = decisions(y, pred, pred.astype(float))
                metrics[name] = {"precision": round(m.precision, 4), "recall": round(m.recall, 4),
                                 "fpr": round(m.fpr, 4)}
            keys = [k for k in rows[0][4] if k != INJECTION]  # the labels judge harm, not injection
            thresholds = {}
            for key in keys:
                score = np.array([r[4].get(key, 0.0) for r in rows], dtype=float)
                t = best_f1_threshold(y, score, max_fpr=budget)
                m = binary(y, score, t)
                thresholds[key] = {"threshold": round(t, 4), "policy": round(self.rules[rail, "user"].entry(key)[0], 4),
                                   "precision": round(m.precision, 4), "recall": round(m.recall, 4),
                                   "fpr": round(m.fpr, 4), "within_budget": m.fpr <= budget}
            out["rails"][rail] = {"records": len(rows), "unsafe": int(y.sum()), **metrics, "thresholds": thresholds}
        return out


def _rate(n: int, total: int) -> float:
    return round(n / total, 6) if total else 0.0


def _category_rows(counts: Counter) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (rail, key, how), n in counts.items():
        rows.setdefault((rail, key), {"rail": rail, "category": key, "fires": 0, "stops": 0})[how] = n
    return sorted(rows.values(), key=lambda r: -(r["fires"] + r["stops"]))


# -- replaying ----------------------------------------------------------------------------------


def replay(audit: str | Path, policy: Policy, spec: ModelSpec, *, rescore: bool = False,
           labels: dict[str, bool] | None = None, plots: bool = False) -> Replay:
    """Decide every record of ``audit`` again under ``policy`` and tally what changes.

    Thresholds a policy leaves unset are ``spec``'s calibrated defaults, as in a guard on that
    model. With ``rescore``, records whose text was kept verbatim are scored again by a guard on
    the policy's model; the others are counted as not replayable. A record keeps the last user
    message (and the response), not the turns before it, so a rescored record is judged without them.
    """
    rules = {(rail, ch): Rules(policy.rail(rail), spec.thresholds[rail], ch, _unverified_action(policy, rail))
             for rail in RAILS for ch in CHANNELS}
    result = Replay(policy, spec, rules, labels=labels, plots=plots, rescore=rescore)
    records = (rec for rec in read_audit(audit) if not _skip(result, _unreplayable(rec)))
    if not rescore:
        for rec in records:
            result.add(rec, rec["scores"])
        return result
    from beaverguard._guard import Guard

    guard = Guard(policy.model_copy(update={"audit": AuditPolicy(log=False), "shadow": None}))
    try:
        for rec, scores in _rescored(records, guard, result):
            result.add(rec, scores)
    finally:
        guard.close()
    return result


def _unverified_action(policy: Policy, rail: Rail) -> Action | None:
    """What the policy does with text its model cannot read (records marked ``unverified``); None: nothing."""
    languages = getattr(policy, "languages", None)  # policies of guards without language identification lack it
    return languages.action(rail) if languages is not None and languages.enabled else None


def _skip(result: Replay, why: str | None) -> bool:
    if why is not None:
        result.skipped[why] += 1
    return why is not None


def _rescored(records: Iterator[dict], guard: Any, result: Replay) -> Iterator[tuple[dict, Mapping[str, float]]]:
    """Records whose text was kept, with their new scores; chunked, so a large log never sits in memory."""
    chunk: list[tuple[dict, Exchange]] = []
    for rec in records:
        prompt, response = rec.get("prompt"), rec.get("response")
        texts = [prompt] if rec["rail"] == "input" else [prompt, response]
        if any(t is None for t in texts):
            _skip(result, "text not kept (content: none)")
        elif not all(_verbatim(t) for t in texts):
            _skip(result, "text hashed (content: hash)")
        else:
            chunk.append((rec, Exchange(prompt, response if rec["rail"] == "output" else None)))
        if len(chunk) >= RESCORE_CHUNK:
            yield from zip((r for r, _ in chunk), guard.score_many([e for _, e in chunk]))
            chunk = []
    if chunk:
        yield from zip((r for r, _ in chunk), guard.score_many([e for _, e in chunk]))


# -- policy diff --------------------------------------------------------------------------------

_UNSET = "(not set)"


def policy_diff(old: Policy, new: Policy) -> list[tuple[str, Any, Any]]:
    """``(key path, old value, new value)`` for every key whose value differs between the two validated policies."""
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    keys = list(b) + [k for k in a if k not in b]  # the new file's order; keys it dropped last
    return [(k, a.get(k, _UNSET), b.get(k, _UNSET)) for k in keys if a.get(k, _UNSET) != b.get(k, _UNSET)]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a policy dump by dotted path; lists stay whole, an empty mapping has no leaves."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_policy_diff(args: argparse.Namespace) -> int:
    """``beaverguard policy diff OLD NEW``: one line per changed key, then the two fingerprints."""
    old, new = load_policy(args.old), load_policy(args.new)
    for key, a, b in policy_diff(old, new):
        note = "  (decides nothing)" if key.split(".")[0] in ("audit", "shadow") else ""
        print(f"{key}: {_show(a)} → {_show(b)}{note}")
    same = old.fingerprint() == new.fingerprint()
    print(f"fingerprint: {old.fingerprint()} → {new.fingerprint()}"
          + ("  (same decisions)" if same else ""))
    return 0


# -- the command --------------------------------------------------------------------------------


def run_replay(args: argparse.Namespace) -> int:
    """``beaverguard replay``: replay, then print a table (or JSON), and write the HTML plots if asked."""
    if args.html is not None:
        try:
            import matplotlib  # noqa: F401  (before a long replay, not after)
        except ImportError:
            print("beaverguard replay --html needs matplotlib: pip install \"beaverguard[plot]\"", file=sys.stderr)
            return 2
    policy, spec = load_replay_policy(args.policy, args.model)
    try:
        labels = read_labels(args.labels) if args.labels else None
        result = replay(args.audit, policy, spec, rescore=args.rescore, labels=labels, plots=args.html is not None)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"beaverguard replay: {exc}") from None
    report = result.report(args.fpr_budget)
    report["audit"], report["policy"]["file"] = str(args.audit), str(args.policy)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    if args.html is not None:
        write_html(result, report, args.html)
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def _name(key: str) -> str:
    try:
        return category(key).alias
    except KeyError:  # unsafe, injection, a plugin's label
        return key


def print_report(report: dict[str, Any]) -> None:
    """The report as rich tables on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    p = report["policy"]
    console.print(f"Replayed [bold]{report['replayed']:,}[/] of {report['records']:,} records of {report['audit']} "
                  f"under {p['file']} (policy {p['fingerprint']}, model {p['model']}): "
                  f"[bold]{report['changed']:,} would change[/].")
    under = ", ".join(f"{r['policy']} / {r['model']}: {r['records']:,}" for r in report["recorded_under"])
    console.print(f"Recorded under: {under or 'nothing replayable'}")
    if report["borderline"]:
        console.print(f"{report['borderline']:,} of the changes hinge on a score within rounding (0.0000005) of "
                      "its threshold: audit records keep 6 digits.")
    if report["kept_as_recorded_rounding"]:
        console.print(f"{report['kept_as_recorded_rounding']:,} records decided under this same policy differ only "
                      "through such rounding: their recorded decisions stand.")

    t = Table(title="By rail")
    for col in ("rail", "replayed", "changed", "flag rate before", "flag rate after", "change"):
        t.add_column(col, justify="left" if col == "rail" else "right")
    for rail, r in report["rails"].items():
        old, new = r["flag_rate"]["old"], r["flag_rate"]["new"]
        t.add_row(rail, f"{r['records']:,}", f"{r['changed']:,}", f"{old:.2%}", f"{new:.2%}", f"{new - old:+.2%}")
    console.print(t)
    if report["transitions"]:
        t = Table(title="Action changes")
        for col in ("rail", "before", "after", "records"):
            t.add_column(col, justify="right" if col == "records" else "left")
        for r in report["transitions"]:
            t.add_row(r["rail"], r["from"], r["to"] if r["to"] != r["from"] else f"{r['to']} (other categories)",
                      f"{r['records']:,}")
        console.print(t)
    if report["categories"]:
        t = Table(title="Categories")
        for col in ("rail", "category", "now fires", "stops firing"):
            t.add_column(col, justify="left" if col in ("rail", "category") else "right")
        for r in report["categories"]:
            t.add_row(r["rail"], _name(r["category"]), f"{r['fires']:,}", f"{r['stops']:,}")
        console.print(t)
    if report["not_replayable"]:
        t = Table(title="Not replayable")
        t.add_column("why")
        t.add_column("records", justify="right")
        for why, n in report["not_replayable"].items():
            t.add_row(why, f"{n:,}")
        console.print(t)
    if report["examples"]:
        t = Table(title="Examples (content: full)")
        for col in ("rail", "change", "categories after", "text"):
            t.add_column(col)
        for e in report["examples"]:
            text = e["prompt"] if e["response"] is None else f"{e['prompt']} ⇒ {e['response']}"
            t.add_row(e["rail"], f"{e['from']} → {e['to']}", ", ".join(map(_name, e["categories_to"])) or "-",
                      text[:160])
        console.print(t)
    if "labels" in report:
        _print_labels(console, report["labels"])
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")


def _print_labels(console: Any, labels: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"Against {labels['labels']:,} reviewer labels")
    for col in ("rail", "labelled", "unsafe", "precision before/after", "recall before/after", "FPR before/after"):
        t.add_column(col, justify="left" if col == "rail" else "right")
    for rail, r in labels["rails"].items():
        t.add_row(rail, f"{r['records']:,}", f"{r['unsafe']:,}",
                  *(f"{r['old'][m]:.3f} / {r['new'][m]:.3f}" for m in ("precision", "recall", "fpr")))
    console.print(t)
    for rail, r in labels["rails"].items():
        t = Table(title=f"{rail}: thresholds with FPR <= {labels['fpr_budget']} on these labels (best F1)")
        for col in ("category", "policy", "at budget", "precision", "recall", "FPR"):
            t.add_column(col, justify="left" if col == "category" else "right")
        for key, m in r["thresholds"].items():
            t.add_row(_name(key), f"{m['policy']:.4f}", f"{m['threshold']:.4f}" + ("" if m["within_budget"] else " *"),
                      f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['fpr']:.3f}")
        console.print(t)
    if any(not m["within_budget"] for r in labels["rails"].values() for m in r["thresholds"].values()):
        console.print("* no threshold that flags any of these records keeps within the budget: the one shown "
                      "overshoots it least")


def write_html(result: Replay, report: dict[str, Any], path: str | Path) -> None:
    """One HTML file, one plot per label a change turned on: its score distribution and the old and new thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [f"<h1>beaverguard replay: {report['changed']:,} of {report['replayed']:,} records would change</h1>",
             f"<p>{html.escape(report['audit'])} under {html.escape(report['policy']['file'])} "
             f"(policy {report['policy']['fingerprint']}, model {html.escape(report['policy']['model'])}). "
             "The recorded policy's thresholds are not in its records: the grey band runs from the highest "
             "recorded score at which a label did not fire to the lowest at which it did, so the old threshold "
             "lies in it (whether unsafe fired is not recorded).</p>"]
    edges = [i / BINS for i in range(BINS + 1)]
    for (rail, key), n in result.involved.most_common():
        fig, ax = plt.subplots(figsize=(7, 3.2))
        if ("old", rail, key) not in result.histograms:
            continue  # a label no record scored
        for which, colour in (("old", "tab:blue"), ("new", "tab:orange")):
            counts = result.histograms.get((which, rail, key))
            if counts:
                label = "scores" if not result.rescore else f"{which} model's scores"
                ax.stairs(counts, edges, fill=which == "old", alpha=0.5, color=colour, label=label)
        low, high = result.highest_quiet.get((rail, key), 0.0), result.lowest_fired.get((rail, key))
        if high is not None:
            ax.axvspan(min(low, high), high, color="grey", alpha=0.25, label=f"old: in ({low:.4f}, {high:.4f}]")
            ax.axvline(high, color="black", linestyle="--")
        news = sorted({ch_rules.entry(key)[0] for (r, _), ch_rules in result.rules.items() if r == rail})
        for t in news:
            ax.axvline(t, color="tab:red", label=f"new {t:.4f}")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{_name(key)} score ({rail} rail)")
        ax.set_ylabel("records")
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        png = base64.b64encode(buf.getvalue()).decode()
        parts.append(f"<h2>{rail}: {html.escape(_name(key))} (in {n:,} changed records)</h2>"
                     f'<img alt="{html.escape(key)}" src="data:image/png;base64,{png}">')
    Path(path).write_text("<!doctype html><meta charset=utf-8><title>beaverguard replay</title>\n"
                          + "\n".join(parts) + "\n", encoding="utf-8")
