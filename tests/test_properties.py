"""Properties of the policy decision over generated policies and scores (see ``_decision.decide``)."""

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from beaverguard import CATEGORY_KEYS, UNSAFE, Action, Policy
from beaverguard._categories import LABELS
from beaverguard._decision import decide
from beaverguard._policy import RailPolicy, Rule

DEFAULTS = {k: 0.05 + 0.06 * i for i, k in enumerate(LABELS)}  # calibrated-like, differing per label

probability = st.floats(0.0, 1.0, allow_nan=False)


def _rails(actions: list[Action]) -> st.SearchStrategy[RailPolicy]:
    rules = st.builds(Rule, threshold=st.none() | probability, action=st.sampled_from(actions))
    return st.builds(RailPolicy, default=rules, unsafe=rules,
                     categories=st.dictionaries(st.sampled_from(CATEGORY_KEYS), rules, max_size=6))


rails = _rails(list(Action))
# redact needs a plugin, so a policy with it does not validate without one
plugin_free_rails = _rails([a for a in Action if a is not Action.REDACT])
score_maps = st.dictionaries(st.sampled_from(LABELS), probability, min_size=1)
full_scores = st.fixed_dictionaries({k: probability for k in LABELS})


def threshold(rail: RailPolicy, key: str) -> float:
    rule = rail.rule(key)
    return rule.threshold if rule.threshold is not None else DEFAULTS.get(key, 0.5)


def expected(rail: RailPolicy, scores: dict) -> Action:
    """The rule, restated: categories decide when any fired, else the unsafe rule, else allow."""
    fired = [k for k, v in scores.items() if k != UNSAFE and not v < threshold(rail, k)]
    if fired:
        return max((rail.rule(k).action for k in fired), key=lambda a: a.severity)
    if UNSAFE in scores and not scores[UNSAFE] < threshold(rail, UNSAFE):
        return rail.unsafe.action
    return Action.ALLOW


def overridden(rail: RailPolicy, low: dict, high: dict) -> bool:
    """Whether ``high`` fires a category where ``low`` fired only ``unsafe`` (the documented override)."""
    def cats(s: dict) -> bool:
        return any(k != UNSAFE and s[k] >= threshold(rail, k) for k in s)
    return not cats(low) and low.get(UNSAFE, 0) >= threshold(rail, UNSAFE) and cats(high)


@settings(max_examples=300, deadline=None)
@given(input_rail=plugin_free_rails, output_rail=plugin_free_rails, scores=st.dictionaries(
    st.sampled_from(LABELS) | st.text(min_size=1, max_size=8), st.floats(allow_nan=True, allow_infinity=True)))
def test_any_valid_policy_decides_any_scores(input_rail, output_rail, scores):
    policy = Policy.model_validate({"input": input_rail.model_dump(), "output": output_rail.model_dump()})
    for rail in ("input", "output"):
        action, categories = decide(scores, policy.rail(rail), DEFAULTS)
        assert isinstance(action, Action)
        assert set(categories) <= set(scores) - {UNSAFE}
        # A NaN score fails closed: it counts as fired, never as safe.
        assert all(k in categories for k, v in scores.items() if k != UNSAFE and math.isnan(v))


@settings(max_examples=500, deadline=None)
@given(rail=rails, scores=score_maps)
def test_strictest_fired_category_wins_else_the_unsafe_rule(rail, scores):
    action, categories = decide(scores, rail, DEFAULTS)
    assert action is expected(rail, scores)
    assert set(categories) == {k for k, v in scores.items() if k != UNSAFE and v >= threshold(rail, k)}


@settings(max_examples=500, deadline=None)
@given(rail=rails, low=full_scores, bumps=st.fixed_dictionaries({k: probability for k in LABELS}))
def test_raising_scores_never_makes_the_action_milder(rail, low, bumps):
    high = {k: min(1.0, v + bumps[k]) for k, v in low.items()}
    assume(not overridden(rail, low, high))
    assert decide(high, rail, DEFAULTS)[0].severity >= decide(low, rail, DEFAULTS)[0].severity


@settings(max_examples=300, deadline=None)
@given(rail=rails, low=full_scores, bump=probability)
def test_raising_the_unsafe_score_alone_never_makes_the_action_milder(rail, low, bump):
    high = {**low, UNSAFE: min(1.0, low[UNSAFE] + bump)}
    assert decide(high, rail, DEFAULTS)[0].severity >= decide(low, rail, DEFAULTS)[0].severity


@settings(max_examples=300, deadline=None)
@given(rail=rails, scores=full_scores, cut=st.floats(0.0, 1.0))
def test_lowering_thresholds_never_makes_the_action_milder(rail, scores, cut):
    def lower(rule: Rule, key: str) -> Rule:
        return rule.model_copy(update={"threshold": threshold(rail, key) * cut})

    lowered = rail.model_copy(update={
        "default": rail.default, "unsafe": lower(rail.unsafe, UNSAFE),
        "categories": {k: lower(rail.rule(k), k) for k in CATEGORY_KEYS}})
    before, after = decide(scores, rail, DEFAULTS), decide(scores, lowered, DEFAULTS)
    assume(not (not before[1] and after[1] and scores[UNSAFE] >= threshold(rail, UNSAFE)))
    assert after[0].severity >= before[0].severity


def test_the_documented_override_is_the_only_exception():
    """A milder category that fires takes over from the unsafe rule: politics logs instead of blocking."""
    rail = RailPolicy(categories={"politics": Rule(action=Action.LOG)})
    key = next(k for k in CATEGORY_KEYS if k.startswith("controversial"))
    low = {**{k: 0.0 for k in LABELS}, UNSAFE: 0.99}
    high = {**low, key: 0.99}
    assert decide(low, rail, DEFAULTS)[0] is Action.BLOCK
    assert decide(high, rail, DEFAULTS) == (Action.LOG, (key,))
