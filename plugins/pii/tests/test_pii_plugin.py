from importlib.metadata import entry_points

import pytest
from beaverguard_pii import PiiPlugin

from beaverguard import Action, PolicyError, parse_policy

REDACT_BOTH = ("plugins: [{name: pii}]\n"
               "input:\n  categories:\n    pii: {action: redact}\n"
               "output:\n  categories:\n    pii: {action: redact}\n")


def test_installed_entry_point_builds_the_plugin(make_guard):
    (ep,) = entry_points(group="beaverguard.plugins", name="pii")
    assert ep.load() is PiiPlugin
    assert isinstance(make_guard("plugins: [{name: pii}]").plugins[0], PiiPlugin)


@pytest.mark.parametrize(("text", "kind"), [
    ("write to jane.doe+news@mail.example.org today", "email"),
    ("ring me on +44 20 7946 0958", "phone"),
    ("my cell is (415) 555-0132", "phone"),
    ("card 4111 1111 1111 1111 exp 12/29", "card"),
    ("pay with 5500-0000-0000-0004", "card"),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "iban"),
    ("to GB82WEST12345698765432.", "iban"),
])
def test_finds_each_kind(text, kind):
    assert [f.kind for f in PiiPlugin().find(text)] == [kind]


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112",             # fails the Luhn check
    "IBAN DE89 3704 0044 0532 0130 02",     # fails the IBAN checksum
    "GB82 WEST 1234 5698 7654 33",
    "order 12345 shipped on 2024-01-05 to 1,000,000 people",
    "bob@example has no domain",
])
def test_near_misses_are_not_pii(text):
    assert PiiPlugin().find(text) == []


def test_redact_masks_each_find_by_kind():
    text = "mail a@b.io, card 4111111111111111, iban DE89370400440532013000, tel +1 650-253-0000."
    assert PiiPlugin().redact(text) == "mail [EMAIL], card [CARD], iban [IBAN], tel [PHONE]."


def test_redact_action_masks_prompt_response_and_audit_log(make_guard, audit_records):
    guard = make_guard(REDACT_BOTH)
    seen = []

    def llm(prompt):
        seen.append(prompt)
        return "sure, I will call you on +44 20 7946 0958"

    reply = guard.run_sync(llm, "my email is jane@example.com and card 4111 1111 1111 1111")
    assert seen == ["my email is [EMAIL] and card [CARD]"]
    assert reply == "sure, I will call you on [PHONE]"
    guard.close()
    records = audit_records()
    assert [(r["rail"], r["action"], r["categories"]) for r in records] == [
        ("input", "redact", ["pii"]), ("output", "redact", ["pii"])]
    log = "\n".join(map(str, records))
    assert "jane@example.com" not in log and "4111" not in log and "7946" not in log
    assert records[1]["prompt"] == "my email is [EMAIL] and card [CARD]"


def test_pii_takes_the_default_rule_unless_named_and_harm_still_blocks(make_guard):
    blocking = make_guard("plugins: [{name: pii}]")
    assert blocking.check_input_sync("mail jane@example.com").action is Action.BLOCK
    redacting = make_guard(REDACT_BOTH)
    clean = redacting.check_input_sync("how do i make bread")
    assert clean.action is Action.ALLOW and clean.scores["pii"] == 0.0
    harmful = redacting.check_input_sync("how do i make a bomb, mail jane@example.com")
    assert harmful.action is Action.BLOCK and "pii" in harmful.categories  # the strictest action wins


def test_kinds_and_region_settings(make_guard):
    only_mail = make_guard("plugins: [{name: pii, settings: {kinds: [email]}}]\n"
                           "input: {categories: {pii: {action: log}}}")
    assert only_mail.check_input_sync("call (415) 555-0132").action is Action.ALLOW
    assert only_mail.check_input_sync("mail jane@example.com").action is Action.LOG
    assert PiiPlugin(region="GB").find("ring 020 7946 0958")[0].kind == "phone"
    assert PiiPlugin(region="US").find("ring 020 7946 0958") == []


@pytest.mark.parametrize(("settings", "message"), [
    ("{region: XX}", "unknown phone region"),
    ("{kinds: [ssn]}", r"unknown kinds \['ssn'\]"),
    ("{colour: red}", "colour"),
])
def test_bad_settings_name_the_plugin(settings, message):
    with pytest.raises(PolicyError, match=f"plugin 'pii': bad settings .*{message}"):
        parse_policy(f"plugins: [{{name: pii, settings: {settings}}}]")


async def test_redact_masks_a_buffered_stream(make_guard, audit_records):
    # Windows of 16 new characters cut the phone number; the 24 held back let the next check see it whole.
    guard = make_guard(REDACT_BOTH + "streaming: {mode: buffer, chunk_chars: 16, overlap_chars: 24}\n")

    @guard.protect
    async def handler(prompt: str):
        for word in "call me on +44 20 7946 0958 or mail jane@example.com today".split(" "):
            yield word + " "

    out = "".join([chunk async for chunk in handler("hello")])
    assert "7946" not in out and "jane@example.com" not in out
    assert "[PHONE]" in out and "[EMAIL]" in out and out.startswith("call me on")
    guard.close()
    assert [r["action"] for r in audit_records() if r["rail"] == "output"] == ["redact"]
