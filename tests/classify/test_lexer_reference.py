"""The guard's lexer against a reference written straight from Cassandra's ``src/antlr/Lexer.g`` (5.0).

The reference below transcribes each lexer rule of the grammar as a regular expression, in the
grammar's order, and lexes by ANTLR's rule: the longest match wins, and of equal matches the
rule written first. It shares no code with :mod:`isthmus.cqlguard.classify.lexer`. Hypothesis
builds texts from fragments that stress where lexers part ways (every kind of line ending and
whitespace-looking character, comments of each kind, quoting, dollar strings, numbers) and
checks that:

* the guard never accepts a text the reference rejects (so nothing Cassandra would lex
  differently, or not at all, reaches a policy decision); and
* when the guard accepts a text, its tokens are exactly the reference's tokens.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.cqlguard.classify import LexError, TokenKind, tokenize

_DIGITS = "[0-9]+"
# DURATION_UNIT's alternatives; two-letter ones first, since ANTLR's prediction takes ``ms`` over ``m``.
_UNIT = "(?:[mM][oO]|[mM][sS]|[uU][sS]|\u00b5[sS]|[nN][sS]|[yY]|[wW]|[dD]|[hH]|[mM]|[sS])"
_TIME = f"(?:T{_DIGITS}H(?:{_DIGITS}M)?(?:{_DIGITS}S)?|T{_DIGITS}M(?:{_DIGITS}S)?|T{_DIGITS}S)"
_PERIOD = f"(?:-?P{_DIGITS}Y(?:{_DIGITS}M)?(?:{_DIGITS}D)?|-?P{_DIGITS}M(?:{_DIGITS}D)?|-?P{_DIGITS}D)"
_HEX = "[A-Fa-f0-9]"

#: (token type, pattern) in Lexer.g's order; the types that a classifier cares about are named
#: as Lexer.g names them, the rest keep their rule name. Punctuation comes from Parser.g literals.
RULES: list[tuple[str, re.Pattern[str]]] = [
    ("STRING_LITERAL", re.compile(r"\$\$(?P<v>(?s:.)*?)\$\$|'(?P<w>(?:[^']|'')*)'")),
    ("QUOTED_NAME", re.compile(r'"(?P<v>(?:[^"]|"")+)"')),
    ("EMPTY_QUOTED_NAME", re.compile(r'""')),
    ("INTEGER", re.compile(r"-?[0-9]+")),
    ("QMARK", re.compile(r"\?")),
    ("RANGE", re.compile(r"\.\.")),
    ("FLOAT", re.compile(r"-?[0-9]+(?:\.(?!\.)[0-9]*)?(?:[eE][+-]?[0-9]+)?")),
    ("BOOLEAN", re.compile(r"(?i:true|false)(?![A-Za-z0-9_])")),
    ("DURATION", re.compile(
        rf"-?{_DIGITS}{_UNIT}(?:{_DIGITS}{_UNIT})*"
        r"|-?P[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
        rf"|-?P{_TIME}|-?P{_DIGITS}W|{_PERIOD}{_TIME}?"
    )),
    ("IDENT", re.compile(r"[A-Za-z][A-Za-z0-9_]*")),
    ("HEXNUMBER", re.compile(r"0[xX][A-Fa-f0-9]*")),
    ("UUID", re.compile(f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")),
    ("WS", re.compile(r"[ \t\n\r]+")),
    ("COMMENT", re.compile(r"(?:--|//)[^\n\r]*[\n\r]")),
    ("MULTILINE_COMMENT", re.compile(r"/\*(?s:.)*?\*/")),
    ("PUNCT", re.compile(r"<=|>=|!=|\+=|-=|[()\[\]{},;.:=<>+\-*/%]")),
]
_HIDDEN = {"WS", "COMMENT", "MULTILINE_COMMENT"}
_KIND = {
    "STRING_LITERAL": "string", "QUOTED_NAME": "quoted", "INTEGER": "number", "FLOAT": "number",
    "DURATION": "number", "BOOLEAN": "ident", "IDENT": "ident", "HEXNUMBER": "blob", "UUID": "uuid",
    "QMARK": "punct", "RANGE": "punct", "PUNCT": "punct",
}


class Rejected(Exception):
    pass


#: Prefixes on which ANTLR's prediction commits to one rule: after ``--`` only COMMENT can go on
#: (so ``-- x`` with no line break is an error, not two minus signs), after ``/*`` only
#: MULTILINE_COMMENT, after ``$$`` or a quote only the literal rules.
_COMMITTED = (("--", "COMMENT"), ("//", "COMMENT"), ("/*", "MULTILINE_COMMENT"), ("$$", "STRING_LITERAL"),
              ("'", "STRING_LITERAL"), ('"', "QUOTED_NAME"))


def _explode(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Punctuation compared character by character (where ``::`` or ``...`` splits is no name's business)."""
    return [t for k, v in tokens for t in ([("punct", c) for c in v] if k == "punct" else [(k, v)])]


def reference(text: str) -> list[tuple[str, str]]:
    """``(kind, value)`` per visible token, lexed by Lexer.g's rules; raises :class:`Rejected`."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        best: tuple[int, str, re.Match[str]] | None = None
        for name, rx in RULES:
            m = rx.match(text, pos)
            if m and m.end() > pos and (best is None or m.end() > best[0]):
                best = (m.end(), name, m)
        committed = next((rule for prefix, rule in _COMMITTED if text.startswith(prefix, pos)), None)
        if committed is not None and best is not None and best[1] != committed and best[1] != "EMPTY_QUOTED_NAME":
            best = None
        if best is None or best[1] == "EMPTY_QUOTED_NAME":
            raise Rejected(f"no rule matches at {pos}: {text[pos:pos + 10]!r}")
        end, name, m = best
        if name not in _HIDDEN:
            if name == "STRING_LITERAL":
                value = m.group("v") if m.group("v") is not None else m.group("w").replace("''", "'")
            elif name == "QUOTED_NAME":
                value = m.group("v").replace('""', '"')
            elif name in {"IDENT", "BOOLEAN", "HEXNUMBER", "UUID", "INTEGER", "FLOAT"}:
                value = m.group().lower()
            else:
                value = m.group()
            out.append((_KIND[name], value))
        pos = end
    return _explode(out)


def guard_tokens(text: str) -> list[tuple[str, str]]:
    kinds = {
        TokenKind.IDENT: "ident", TokenKind.QUOTED_IDENT: "quoted", TokenKind.STRING: "string",
        TokenKind.NUMBER: "number", TokenKind.UUID: "uuid", TokenKind.BLOB: "blob", TokenKind.PUNCT: "punct",
    }
    out: list[tuple[str, str]] = []
    for tok in tokenize(text):
        if tok.kind is TokenKind.MARKER:  # ':name' is ':' then a name to the grammar
            out += [("punct", ":"), ("ident", tok.value)]
        elif tok.kind is TokenKind.NUMBER and tok.value.startswith(("p", "-p")):
            out.append(("number", text[tok.pos:tok.pos + len(tok.value)]))  # ISO durations keep their case
        else:
            out.append((kinds[tok.kind], tok.value))
    return _explode(out)


LINE_ENDS = ["\n", "\r", "\r\n", "\n\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"]
SEPARATORS = [" ", "\t", "\n", "\r", "\r\n", "  ", "/**/", "/* x */", "-- c\n", "-- c\r", "// c\r\n"]
FRAGMENTS = [
    "SELECT", "select", "FROM", "from", "DROP", "TABLE", "INSERT", "INTO", "BEGIN", "BATCH", "APPLY",
    "ks", "t", "secret", "Tbl", "true", "FALSE", "k_1", "P1D", "PT2H", "P1W", "p1d",
    '"Q"', '"a""b"', '""', '"', "'s'", "'it''s'", "''", "'", "$$", "$$x$$", "$$a'b$$", "$x$",
    "--", "//", "/*", "*/", "/", "-", "*", ".", "..", ",", ";", "(", ")", "=", "<=", "?", ":", ":n", "%",
    "1", "-1", "1.5", "1.", "1e5", "1e", "1h", "1mo", "1ms", "2d3h", "0x", "0xCAFE", "0xfg", "1from", "12abc",
    "01234567-89ab-cdef-0123-456789abcdef", "deadbeef-dead-beef-dead-beefdeadbeef",
    " ", "\t", "é", "\x00", *LINE_ENDS,
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14), st.lists(st.sampled_from(["", " ", *LINE_ENDS]), max_size=14))
def test_guard_tokens_are_cassandras_tokens(fragments: list[str], glue: list[str]) -> None:
    text = "".join(f + (glue[i] if i < len(glue) else "") for i, f in enumerate(fragments))
    try:
        expected: list[tuple[str, str]] | None = reference(text)
    except Rejected:
        expected = None
    try:
        got = guard_tokens(text)
    except LexError:
        return  # refusing is always safe; what matters is never accepting differently
    assert expected is not None, f"the guard accepted {text!r}, which Cassandra's lexer rejects"
    assert got == expected, text


#: Numbers that run straight into a letter: the guard refuses these on purpose (see the lexer).
AMBIGUOUS = {"0xfg", "1from", "12abc", "1e"}
UNAMBIGUOUS = [f for f in FRAGMENTS if f not in AMBIGUOUS]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(UNAMBIGUOUS), st.sampled_from(SEPARATORS)), max_size=12))
def test_separated_tokens_are_accepted_exactly_when_cassandra_accepts(parts: list[tuple[str, str]]) -> None:
    """With a separator between every fragment there is no ambiguity left to refuse: the guard
    accepts a text exactly when the grammar does."""
    text = "".join(f + s for f, s in parts)
    try:
        expected: list[tuple[str, str]] | None = reference(text)
    except Rejected:
        expected = None
    try:
        got: list[tuple[str, str]] | None = guard_tokens(text)
    except LexError:
        got = None
    assert got == expected, text
