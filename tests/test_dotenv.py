"""`.env` parsing: every rule of STACKFILE.md, and errors with line numbers."""

from __future__ import annotations

import pytest

from revostack import dotenv
from revostack.errors import ConfigError


def errors(text: str, source: str = ".env") -> list[str]:
    with pytest.raises(ConfigError) as info:
        dotenv.parse(text, source)
    return str(info.value).splitlines()


def test_plain_pairs_keep_file_order():
    assert list(dotenv.parse("B=2\nA=1\nC=3\n").items()) == [("B", "2"), ("A", "1"), ("C", "3")]


def test_later_line_wins():
    assert dotenv.parse("A=1\nA=2\n") == {"A": "2"}


def test_export_prefix():
    assert dotenv.parse("export A=1\nexport   B = 2\n") == {"A": "1", "B": "2"}


def test_export_alone_is_not_a_key():
    assert dotenv.parse("exported=1\n") == {"exported": "1"}


def test_spaces_around_equals():
    assert dotenv.parse("A = 1\nB= 2\nC =3\n  D  =  4  \n") == {"A": "1", "B": "2", "C": "3", "D": "4"}


def test_comment_and_blank_lines_are_ignored():
    assert dotenv.parse("# a comment\n\n   \n  # indented comment\nA=1\n") == {"A": "1"}


def test_unquoted_value_ends_at_space_hash():
    assert dotenv.parse("A=value # comment\n") == {"A": "value"}
    assert dotenv.parse("A=value   # comment\n") == {"A": "value"}


def test_hash_inside_unquoted_value_is_kept():
    assert dotenv.parse("URL=http://x/#frag\nCOLOR=#fff\n")["URL"] == "http://x/#frag"


def test_value_that_is_only_a_comment_is_empty():
    assert dotenv.parse("A= # nothing here\n") == {"A": ""}


def test_unquoted_value_keeps_inner_spaces_and_strips_the_ends():
    assert dotenv.parse("A=  hello   world  \n") == {"A": "hello   world"}


def test_empty_value():
    assert dotenv.parse("A=\nB=\n") == {"A": "", "B": ""}
    assert dotenv.parse('A=""\nB=\'\'\n') == {"A": "", "B": ""}


def test_equals_in_value():
    assert dotenv.parse("A=b=c\n") == {"A": "b=c"}


def test_single_quotes_are_literal():
    assert dotenv.parse(r"A='a\nb \"c\" $HOME # not a comment'" + "\n") == {"A": r'a\nb \"c\" $HOME # not a comment'}


def test_double_quotes_with_escapes():
    assert dotenv.parse(r'A="line1\nline2"' + "\n") == {"A": "line1\nline2"}
    assert dotenv.parse(r'A="say \"hi\""' + "\n") == {"A": 'say "hi"'}
    assert dotenv.parse(r'A="back\\slash\ttab"' + "\n") == {"A": "back\\slash\ttab"}


def test_unknown_escape_is_kept():
    assert dotenv.parse(r'A="\q"' + "\n") == {"A": "\\q"}


def test_hash_inside_quotes_is_kept_and_comment_after_quotes_is_allowed():
    assert dotenv.parse('A="x # y" # comment\nB=\'p # q\'   # c\n') == {"A": "x # y", "B": "p # q"}


def test_double_quotes_span_lines():
    text = 'A="first\nsecond\n  third"\nB=after\n'
    assert dotenv.parse(text) == {"A": "first\nsecond\n  third", "B": "after"}


def test_escaped_quote_does_not_close_a_multiline_value():
    text = 'A="one \\"\ntwo"\nB=2\n'
    assert dotenv.parse(text) == {"A": 'one "\ntwo', "B": "2"}


def test_values_are_not_interpolated():
    assert dotenv.parse("A=1\nB=${A}\nC=\"$A\"\n") == {"A": "1", "B": "${A}", "C": "$A"}


def test_crlf_line_endings():
    assert dotenv.parse("A=1\r\nB='x'\r\n") == {"A": "1", "B": "x"}


def test_malformed_line_names_its_line():
    assert errors("A=1\n\n# comment\nnot a pair\nB=2\n") == [".env:4:1: expected KEY=value"]


def test_every_malformed_line_is_reported():
    assert errors("oops\nA=1\n1BAD=2\n=3\nB-C=4\n", "config/dev.env") == [
        "config/dev.env:1:1: expected KEY=value",
        "config/dev.env:3:1: invalid variable name '1BAD'",
        "config/dev.env:4:1: invalid variable name ''",
        "config/dev.env:5:1: invalid variable name 'B-C'",
    ]


def test_unterminated_double_quote_names_its_line_and_column():
    assert errors('A=1\nB="never closed\nC=3\n') == ['.env:2:3: unterminated " quote']


def test_unterminated_single_quote():
    assert errors("A = 'open\n") == [".env:1:5: unterminated ' quote"]


def test_text_after_closing_quote_is_an_error():
    assert errors('A="x" y\n') == [".env:1:1: unexpected text after the closing quote: 'y'"]


def test_text_after_a_multiline_value_names_the_closing_line():
    assert errors('A="x\ny" z\n') == [".env:2:1: unexpected text after the closing quote: 'z'"]


def test_empty_file():
    assert dotenv.parse("") == {}
    assert dotenv.parse("\n# only comments\n") == {}
