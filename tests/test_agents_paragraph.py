"""The participant writes whole sentences of one paragraph: it stops at a blank line only after
some text, releases text a sentence at a time, ends at the first sentence end past its budget,
and drops a half sentence left when generation stops."""

import pytest

from agents.participant import _Cut


def cut(pieces: list[str], budget: int | None = None) -> tuple[str, bool]:
    c, out = _Cut(budget), []
    for p in pieces:
        out.append(c.feed(p, 1))  # one token per piece
        if c.done:
            break
    out.append(c.flush())
    return "".join(out), c.done


@pytest.mark.parametrize(
    "pieces, budget, text, done",
    [
        (["\n", "\n", "The", " cat", ".", "\n", "\n", "Next"], None, "\n\nThe cat.", True),  # a new paragraph, then a cut
        ([" It", " was", " late", "."], None, " It was late.", False),
        (["\n\n"], None, "", False),  # nothing but blank lines: nothing written
        (["a\n", "b\n\nc"], None, "a\nb", True),  # no sentence end at all: the paragraph as it is
        (["end", "\n"], None, "end", False),
        ([" One.", " Two", " three.", " Four", " five"], None, " One. Two three.", False),  # the half sentence goes
        ([" One.", " Two", " three.", " Four", " five."], 3, " One. Two three.", True),  # past the budget: next end
        ([" One", " two.", " Three", "?", " Four"], 1, " One two.", True),
        ([' He said "go."', " Then", " left"], None, ' He said "go."', False),  # closing quotes stay
        ([" It cost 3.5", " pounds. And"], None, " It cost 3.5 pounds.", False),  # a decimal point is no end
        ([" Last one.\n\nNext"], None, " Last one.", True),
    ],
)
def test_cut(pieces, budget, text, done):
    assert cut(pieces, budget) == (text, done)


def test_a_paragraph_break_before_the_minimum_length_is_a_space():
    c, out = _Cut(budget=10, min_tokens=4), []
    for piece in [" She left.", "\n\n", "The", " sea was grey.", "\n\n", "Next."]:
        out.append(c.feed(piece, 1))
        if c.done:
            break
    assert "".join(out) + c.flush() == " She left. The sea was grey." and c.done


def test_text_is_released_a_sentence_at_a_time():
    c = _Cut()
    assert c.feed(" The boats", 2) == ""
    assert c.feed(" came back.", 2) == ""  # an end needs the space after it (or the end of the text)
    assert c.feed(" Mara", 1) == " The boats came back."
    assert c.flush() == ""
