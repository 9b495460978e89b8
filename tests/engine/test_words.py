"""The pure part of blocked words: normalisation of a room's list and the matcher."""

from __future__ import annotations

import pytest

from engine.errors import InvalidBody
from engine.words import MAX_WORD_CHARS, MAX_WORDS, WordFilter, normalize


def test_normalize_strips_folds_dedupes_sorts_and_drops_blanks() -> None:
    assert normalize([" Spoiler ", "SPOILER", "Straße", "  ", "ending"]) == (
        "ending",
        "spoiler",
        "strasse",
    )
    assert normalize([]) == ()


@pytest.mark.parametrize(
    "words",
    [["w"] * (MAX_WORDS + 1), ["x" * (MAX_WORD_CHARS + 1)], [1], [None]],
)
def test_normalize_refuses_what_the_api_declares_invalid(words: list) -> None:
    with pytest.raises(InvalidBody):
        normalize(words)


def test_filter_matches_substrings_of_casefolded_text() -> None:
    f = WordFilter(normalize(["scam", "Buy Now"]))
    assert f.matches("this is a SCAM link".casefold())
    assert f.matches("please BUY NOW!".casefold())
    assert not f.matches("buy later".casefold())
    assert not WordFilter().matches("anything")


def test_setting_is_comma_separated() -> None:
    assert WordFilter.from_setting(" spamword, Scam,,scam ").words == ("spamword", "scam")
    assert WordFilter.from_setting("").words == ()
