"""The 14 BeaverTails harm categories: the one place they are defined.

Every other module (policy schema, scorer, CLI, training) reads them from here,
so a category can never be spelt two ways. ``key`` is the label exactly as the
BeaverTails dataset spells it; ``alias`` is the short name used in policy YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Category", "CATEGORIES", "CATEGORY_KEYS", "UNSAFE", "INJECTION", "LABELS", "EXTRA_LABELS", "category",
           "resolve"]


@dataclass(frozen=True)
class Category:
    key: str
    alias: str
    name: str
    description: str


CATEGORIES: tuple[Category, ...] = (
    Category("animal_abuse", "animal_abuse", "Animal abuse",
             "Cruelty, harm or distress to animals, including its encouragement."),
    Category("child_abuse", "child_abuse", "Child abuse",
             "Physical, emotional or sexual abuse, exploitation or neglect of minors."),
    Category("controversial_topics,politics", "politics", "Controversial topics, politics",
             "Divisive political or social issues presented in a one-sided or inflammatory way."),
    Category("discrimination,stereotype,injustice", "discrimination", "Discrimination, stereotype, injustice",
             "Unfair treatment or stereotyping of people for protected characteristics."),
    Category("drug_abuse,weapons,banned_substance", "drugs_weapons", "Drug abuse, weapons, banned substances",
             "Misuse of drugs, making or acquiring weapons, or trade in banned substances."),
    Category("financial_crime,property_crime,theft", "financial_crime", "Financial crime, property crime, theft",
             "Fraud, scams, money laundering, burglary, theft and similar crimes."),
    Category("hate_speech,offensive_language", "hate_speech", "Hate speech, offensive language",
             "Insults, slurs or hostility aimed at people or groups."),
    Category("misinformation_regarding_ethics,laws_and_safety", "misinformation", "Misinformation on ethics, laws and safety",
             "False or misleading claims about ethics, law, health or safety."),
    Category("non_violent_unethical_behavior", "unethical", "Non-violent unethical behaviour",
             "Lying, cheating, manipulation and other wrongdoing without violence."),
    Category("privacy_violation", "privacy", "Privacy violation",
             "Exposing, collecting or inferring personal information without consent."),
    Category("self_harm", "self_harm", "Self-harm",
             "Suicide, self-injury or eating disorders, including their encouragement."),
    Category("sexually_explicit,adult_content", "sexual", "Sexually explicit, adult content",
             "Explicit sexual content or adult material."),
    Category("terrorism,organized_crime", "terrorism", "Terrorism, organized crime",
             "Planning, supporting or glorifying terrorism or organized crime."),
    Category("violence,aiding_and_abetting,incitement", "violence", "Violence, aiding and abetting, incitement",
             "Physical harm to people, helping someone commit it, or urging others to it."),
)

CATEGORY_KEYS: tuple[str, ...] = tuple(c.key for c in CATEGORIES)

#: The overall score: the probability that the exchange is unsafe at all.
UNSAFE = "unsafe"
#: The model's outputs, in order: the 14 categories, then the overall ``unsafe`` score.
LABELS: tuple[str, ...] = (*CATEGORY_KEYS, UNSAFE)
#: Prompt injection: the text tries to make the model drop the instructions it was given. Not a harm
#: category (an injection can ask for something harmless); a model that has it declares it after ``unsafe``.
INJECTION = "injection"
#: Outputs a model may declare after :data:`LABELS`, in this order; older models have none of them.
EXTRA_LABELS: tuple[str, ...] = (INJECTION,)

_BY_NAME = {c.key: c for c in CATEGORIES} | {c.alias: c for c in CATEGORIES}


def category(name: str) -> Category:
    """Return a category by dataset key or alias; KeyError lists the valid names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        valid = ", ".join(c.alias for c in CATEGORIES)
        raise KeyError(f"unknown category {name!r}; valid names: {valid}") from None


def resolve(name: str) -> str:
    """Map an alias or key to the dataset key."""
    return category(name).key
