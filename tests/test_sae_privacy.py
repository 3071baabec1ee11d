"""SAE feature examples are windows of the training corpus, which holds every document: a caller
sees an example from a document only if they may read that document."""

from __future__ import annotations

from inference.sae.explain import visible

DOC = {"tokens": ["a"], "source": "doc:d1"}
OTHER = {"tokens": ["b"], "source": "doc:d2"}
SELF = {"tokens": ["c"], "source": "self:3.1"}
REFERENCE = {"tokens": ["d"], "source": "reference"}
OLD = {"tokens": ["e"]}  # an index built before examples kept their origin


def test_examples_follow_the_callers_documents():
    assert [visible(e, {"d1"}) for e in (DOC, OTHER, SELF, REFERENCE, OLD)] == [True, False, True, True, False]
    assert [visible(e, set()) for e in (DOC, OTHER, SELF, REFERENCE, OLD)] == [False, False, True, True, False]
    assert all(visible(e, None) for e in (DOC, OTHER, SELF, REFERENCE, OLD))  # open hub / the operator
