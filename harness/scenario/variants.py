"""What `compare` varies between runs of one scenario: a variant is a balloon policy and a
set of features, written `mom+intermediate`. Each run gets the scenario with its variant
applied and fresh guests.

    schedule, mom            the balloon policy (none named: the scenario's own)
    intermediate             the Intermediate daemon on in every guest that does not opt out,
                             as the paper has it: a stopped unit stays in RAM (page-out off)
    pageout                  with it, the daemon pages a stopped unit out at once (our extension)
    off, on                  today's pair: the scenario's policy without / with the daemon

A feature is one entry in FEATURES (a name, a column label, how it changes the scenario),
so a new one is one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import ConfigError
from harness.scenario.spec import PolicyKind, Scenario


@dataclass(frozen=True)
class Feature:
    label: str
    apply: Callable[[Scenario], Scenario]


FEATURES: dict[str, Feature] = {
    "intermediate": Feature("Intermediate", lambda sc: sc.with_intermediate(True)),
    "pageout": Feature("page-out", lambda sc: sc.with_page_out(True)),
}
POLICY_LABELS = {PolicyKind.SCHEDULE: "schedule", PolicyKind.MOM: "MOM"}
#: `compare` without --variants, and the names of its two columns.
DEFAULT_VARIANTS = ("off", "on")
ALIASES = {"off": ((), "balloon only"), "on": (("intermediate",), "balloon + Intermediate"),
           "pageout": (("intermediate", "pageout"), "Intermediate + page-out")}


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    policy: PolicyKind | None
    features: tuple[str, ...]

    def apply(self, scenario: Scenario) -> Scenario:
        """The scenario as this variant runs it: its policy, the daemon off unless a
        feature turns it on."""
        # Page-out is off unless asked for, so that "intermediate" is the paper's module alone.
        result = scenario.with_intermediate(False).with_page_out(False)
        if self.policy is not None:
            result = result.with_policy(self.policy)
        for feature in self.features:
            result = FEATURES[feature].apply(result)
        return result

    @property
    def intermediate(self) -> bool:
        return "intermediate" in self.features


def parse_variant(text: str) -> Variant:
    name = text.strip()
    if name in ALIASES:
        features, label = ALIASES[name]
        return Variant(name, label, None, features)
    policy: PolicyKind | None = None
    features: list[str] = []
    policies = {k.value: k for k in PolicyKind}
    for token in name.split("+"):
        token = token.strip()
        if token in policies and policy is None:
            policy = policies[token]
        elif token in FEATURES and token not in features:
            features.append(token)
        else:
            raise ConfigError(f"Unknown or repeated part {token!r} in variant {text!r}.",
                              fix="write a policy (" + ", ".join(policies) + ") and/or features ("
                                  + ", ".join(FEATURES) + ") joined by '+', e.g. mom+intermediate; "
                                  "or off / on.")
    parts = ([POLICY_LABELS[policy]] if policy else []) + [FEATURES[f].label for f in features]
    return Variant(name, " + ".join(parts) or name, policy, tuple(features))


def parse_variants(text: str | None, scenario: Scenario) -> list[Variant]:
    """--variants a,b,c; without it the scenario's [compare] variants, else off,on."""
    names = [t for t in text.split(",") if t.strip()] if text else list(scenario.variants or DEFAULT_VARIANTS)
    variants = [parse_variant(t) for t in names]
    if len({v.name for v in variants}) != len(variants):
        raise ConfigError(f"A variant is named twice in {','.join(names)}.", fix="name each variant once.")
    return variants
