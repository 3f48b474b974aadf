"""A CQL lexer that follows Cassandra's own ``src/antlr/Lexer.g`` (5.0), for classification only.

Tokens: identifiers (unquoted ones lower-cased, as Cassandra folds them; quoted ``"Foo"``
keep their case, ``""`` escapes a quote), string literals (``'it''s'`` and ``$$...$$``),
numbers (integers, floats, durations), uuids, blobs (``0x..``), bind markers (``?`` and
``:name``) and punctuation. Comments and whitespace are dropped.

Where Cassandra's grammar decides what is a comment, the guard decides the same way, because
any difference lets text the guard skips be a statement to Cassandra (issue 16):

* ``WS: (' ' | '\\t' | '\\n' | '\\r')+`` — only these four characters are whitespace. A form
  feed, a vertical tab, NEL (U+0085) or U+2028 are *not*: Cassandra's lexer rejects them, and
  so does this one.
* ``COMMENT: ('--' | '//') .* ('\\n' | '\\r')`` — a line comment ends at the first ``\\n`` *or*
  ``\\r`` (a lone carriage return ends it too), and it must end: a line comment that runs to the
  end of the text is a lexer error in Cassandra ("mismatched character '<EOF>'"), so it is one
  here.
* ``MULTILINE_COMMENT: '/*' .* '*/'`` — not nested; ends at the first ``*/``.
* ``STRING_LITERAL`` — ``'...'`` with ``''`` for a quote, or ``$$...$$`` up to the first ``$$``.
* ``QUOTED_NAME`` / ``EMPTY_QUOTED_NAME`` — ``"..."`` with ``""`` for a quote; ``""`` alone is
  not a valid name.
* ``INTEGER``/``FLOAT``/``DURATION``/``HEXNUMBER``/``UUID``: a number directly followed by a
  letter, digit or ``_`` that its own rule does not take (``1from``, ``0xfg``) is where ANTLR's
  prediction and a hand-written lexer can part ways; this lexer refuses it rather than guess.
* ``DURATION`` written ISO-style (``P1Y2M``, ``PT1H``, ``P1W``: upper-case ``P``/``T`` only)
  comes before ``IDENT`` in the grammar, so it is a duration, never a name.

Anything the Cassandra lexer would reject (unterminated strings/comments, stray characters)
raises :class:`LexError`, and the classifier reports the text unclassifiable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["WHITESPACE", "LexError", "Token", "TokenKind", "tokenize"]


class LexError(ValueError):
    """The text is not lexically valid CQL (Cassandra's lexer would reject it too)."""


class TokenKind(Enum):
    IDENT = "ident"
    QUOTED_IDENT = "quoted_ident"
    STRING = "string"
    NUMBER = "number"
    UUID = "uuid"
    BLOB = "blob"
    MARKER = "marker"
    PUNCT = "punct"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    value: str
    pos: int

    def is_word(self, *words: str) -> bool:
        """An unquoted identifier equal to one of ``words`` (keywords are never quoted)."""
        return self.kind is TokenKind.IDENT and self.value in words

    def is_punct(self, *chars: str) -> bool:
        return self.kind is TokenKind.PUNCT and self.value in chars


#: Lexer.g ``WS``: exactly these four characters.
WHITESPACE = " \t\n\r"
_WS = re.compile(r"[ \t\n\r]+")
#: Lexer.g ``COMMENT`` ends at the first of these.
_LINE_END = re.compile(r"[\n\r]")
_HEX = "[0-9a-fA-F]"
_UUID = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")
_BLOB = re.compile(r"0[xX][0-9a-fA-F]*")
# Lexer.g DURATION_UNIT (case-insensitive; longer units first, as ANTLR predicts them).
_UNIT = r"(?:[mM][oO]|[mM][sS]|[uU][sS]|\u00b5[sS]|[nN][sS]|[yYwWdDhHmMsS])"
_DURATION = re.compile(rf"-?(?:[0-9]+{_UNIT})+")
# Lexer.g FLOAT / INTEGER: INTEGER ('.' DIGIT*)? EXPONENT?, but ``1..`` is INTEGER then RANGE.
_FLOAT = re.compile(r"-?[0-9]+(?:\.(?!\.)[0-9]*)?(?:[eE][+-]?[0-9]+)?")
_ISO_DURATION = re.compile(
    r"-?P(?:[0-9]+Y(?:[0-9]+M)?(?:[0-9]+D)?|[0-9]+M(?:[0-9]+D)?|[0-9]+D|[0-9]+W|"
    r"T[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|T[0-9]+M(?:[0-9]+S)?|T[0-9]+S|"
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:T[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|T[0-9]+M(?:[0-9]+S)?|T[0-9]+S)?"
)
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PUNCT3 = ("...",)
_PUNCT2 = ("<=", ">=", "!=", "+=", "-=", "::", "..")
_PUNCT1 = frozenset("()[]{},;.:?=<>+-*/%&|!^@")


def _word_char(text: str, pos: int) -> bool:
    return pos < len(text) and text[pos].isascii() and (text[pos].isalnum() or text[pos] == "_")


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text`` as Cassandra's lexer would produce them (see the module docstring)."""
    tokens: list[Token] = []
    pos, n = 0, len(text)
    while pos < n:
        ch = text[pos]
        if m := _WS.match(text, pos):
            pos = m.end()
            continue
        if text.startswith("--", pos) or text.startswith("//", pos):
            end = _LINE_END.search(text, pos + 2)
            if end is None:
                raise LexError(f"line comment at {pos} is not ended by a line break")
            pos = end.end()
            continue
        if text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            if close < 0:
                raise LexError(f"unterminated comment at {pos}")
            pos = close + 2
            continue
        if ch == "'":
            start = pos
            value, pos = _quoted(text, pos, "'")
            tokens.append(Token(TokenKind.STRING, value, start))
            continue
        if ch == '"':
            start = pos
            value, pos = _quoted(text, pos, '"')
            if not value:
                raise LexError(f"empty quoted identifier at {start}")
            tokens.append(Token(TokenKind.QUOTED_IDENT, value, start))
            continue
        if text.startswith("$$", pos):
            close = text.find("$$", pos + 2)
            if close < 0:
                raise LexError(f"unterminated $$ string at {pos}")
            tokens.append(Token(TokenKind.STRING, text[pos + 2 : close], pos))
            pos = close + 2
            continue
        if m := _UUID.match(text, pos):
            pos = _number(tokens, TokenKind.UUID, m.group().lower(), pos, m.end(), text)
            continue
        if m := _BLOB.match(text, pos):
            pos = _number(tokens, TokenKind.BLOB, m.group().lower(), pos, m.end(), text)
            continue
        if (ch == "P" or (ch == "-" and text.startswith("P", pos + 1))) and (m := _ISO_DURATION.match(text, pos)):
            if not _word_char(text, m.end()):
                tokens.append(Token(TokenKind.NUMBER, m.group(), pos))
                pos = m.end()
                continue
            if ch == "-":  # '-P1Dx': no longer IDENT takes it, so Lexer.g lexes DURATION then IDENT
                raise LexError(f"duration at {pos} runs into {text[m.end()]!r}: ambiguous to Cassandra's lexer")
        if ch.isascii() and (ch.isdigit() or (ch == "-" and pos + 1 < n and text[pos + 1].isascii()
                                              and text[pos + 1].isdigit())):
            # Lexer.g INTEGER: '-'? DIGIT+ — a '-' directly before a digit is the number's sign.
            best = max((m.end() for rx in (_DURATION, _FLOAT) if (m := rx.match(text, pos))), default=pos)
            pos = _number(tokens, TokenKind.NUMBER, text[pos:best].lower(), pos, best, text)
            continue
        if m := _IDENT.match(text, pos):
            tokens.append(Token(TokenKind.IDENT, m.group().lower(), pos))
            pos = m.end()
            continue
        for punct in (*_PUNCT3, *_PUNCT2):
            if text.startswith(punct, pos):
                tokens.append(Token(TokenKind.PUNCT, punct, pos))
                pos += len(punct)
                break
        else:
            if ch in _PUNCT1:
                tokens.append(Token(TokenKind.PUNCT, ch, pos))
                pos += 1
            else:
                raise LexError(f"unexpected character {ch!r} at {pos}")
    return _markers(tokens)


def _markers(tokens: list[Token]) -> list[Token]:
    """Parser.g's named marker ``':' ident``, when the two are adjacent, as one MARKER token."""
    out: list[Token] = []
    for tok in tokens:
        prev = out[-1] if out else None
        if (tok.kind is TokenKind.IDENT and prev is not None and prev.is_punct(":") and prev.pos + 1 == tok.pos):
            out[-1] = Token(TokenKind.MARKER, tok.value, prev.pos)
        else:
            out.append(tok)
    return out


def _number(tokens: list[Token], kind: TokenKind, value: str, start: int, end: int, text: str) -> int:
    if _word_char(text, end):
        raise LexError(f"number at {start} runs into {text[end]!r}: ambiguous to Cassandra's lexer")
    tokens.append(Token(kind, value, start))
    return end


def _quoted(text: str, pos: int, quote: str) -> tuple[str, int]:
    """Read a quote-delimited token starting at ``pos``; a doubled quote is an escaped one."""
    out: list[str] = []
    i = pos + 1
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise LexError(f"unterminated {quote} at {pos}")
        out.append(text[i:end])
        if text.startswith(quote * 2, end):
            out.append(quote)
            i = end + 2
            continue
        return "".join(out), end + 1
