"""The participant writes one paragraph: it stops at a blank line only after some text."""

import pytest

from agents.participant import _ParagraphCut

pytestmark = pytest.mark.model  # not in `make test-fast`


def cut(pieces: list[str]) -> tuple[str, bool]:
    c, out = _ParagraphCut(), []
    for p in pieces:
        out.append(c.feed(p))
        if c.done:
            break
    out.append(c.flush())
    return "".join(out), c.done


@pytest.mark.parametrize(
    "pieces, text, done",
    [
        (["\n", "\n", "The", " cat", ".", "\n", "\n", "Next"], "\n\nThe cat.", True),  # a new paragraph, then a cut
        ([" It", " was", " late", "."], " It was late.", False),
        (["\n\n"], "", False),  # nothing but blank lines: nothing written
        (["a\n", "b\n\nc"], "a\nb", True),  # a single line break is kept, a blank line ends it
        (["end", "\n"], "end", False),
    ],
)
def test_paragraph_cut(pieces, text, done):
    assert cut(pieces) == (text, done)
