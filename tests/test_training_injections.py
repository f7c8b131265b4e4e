"""Planted injections (beaverguard.training.injections): both labels in every carrier, held-out parts never trained."""

from __future__ import annotations

from beaverguard.training.injections import GOALS, NOTES, OPENERS, injection_rows


def _parts(rows, items, fmt=lambda i: i):
    return {i for i in items for r in rows if fmt(i).split("{")[0].strip().lower() in r.prompt.lower()}


def test_every_carrier_holds_both_labels_and_harm_stays_unknown_on_attacks():
    train, held = injection_rows(400)
    for rows in (train, held):
        by_source = {}
        for r in rows:
            by_source.setdefault(r.source, set()).add(r.injection)
        assert all(labels == {True, False} for labels in by_source.values()), by_source
        assert all(r.is_safe is None for r in rows if r.injection) and all(r.is_safe for r in rows if not r.injection)


def test_held_out_rows_use_no_opener_goal_or_note_that_training_saw():
    train, held = injection_rows(600)
    for items in (GOALS, NOTES):
        seen_train, seen_held = _parts(train, items), _parts(held, items)
        assert seen_held and not seen_train & seen_held
    openers_train = _parts([r for r in train if r.injection], OPENERS)
    openers_held = _parts([r for r in held if r.injection], OPENERS)
    assert openers_held and not openers_train & openers_held


def test_the_split_is_stable():
    assert injection_rows(50)[1] == injection_rows(50)[1]
