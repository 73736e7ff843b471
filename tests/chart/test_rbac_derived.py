"""The chart's Roles grant exactly the API calls in the source, in both directions: the calls are read from the
operator's, the hook's and the facade's syntax trees (``tests.helpers.kube_calls``), not from a list kept by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.chart import render, rules_of
from tests.helpers.k8s_harness import REPO
from tests.helpers.kube_calls import permissions_of

OPERATOR_PACKAGE = REPO / "operator" / "voicefinetune_operator"
HOOK_MODULE = (
    OPERATOR_PACKAGE / "release.py"
)  # `vft operator --release-finalizers`, run by the pre-delete hook
FACADE_PACKAGE = REPO / "voicefinetune" / "facade"


def operator_files() -> list[Path]:
    return [path for path in sorted(OPERATOR_PACKAGE.glob("*.py")) if path != HOOK_MODULE]


def granted(docs, *names: str) -> set[tuple[str, str, str]]:
    return {rule[:3] for name in names for rule in rules_of(docs, name)}


@pytest.mark.parametrize("scope", ["namespaced", "cluster-wide"])
def test_operator_roles_grant_exactly_the_calls_of_its_source(scope):
    wide = ("--set", "operator.clusterWide=true") if scope == "cluster-wide" else ()
    docs = render(*wide)
    watched = "voices-vft-voicefinetune-operator" if wide else "vft-voicefinetune-operator"
    derived = permissions_of(operator_files(), OPERATOR_PACKAGE)
    assert granted(docs, watched, "vft-voicefinetune-operator-inference") == derived


def test_the_uninstall_hooks_role_grants_exactly_the_calls_of_release_finalizers():
    docs = render()
    derived = permissions_of([HOOK_MODULE], OPERATOR_PACKAGE)
    assert granted(docs, "vft-voicefinetune-operator-release-finalizers") == derived
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert (
        job["spec"]["template"]["spec"]["serviceAccountName"]
        == "vft-voicefinetune-operator-release-finalizers"
    )


def test_the_facades_role_grants_exactly_the_calls_of_its_source():
    derived = permissions_of(sorted(FACADE_PACKAGE.rglob("*.py")), FACADE_PACKAGE.parent)
    assert granted(render(), "vft-voicefinetune-facade") == derived
