"""A CQL lexer (after Cassandra's ``Lexer.g``), for classification only.

Tokens: identifiers (unquoted ones lower-cased, as Cassandra folds them; quoted ``"Foo"``
keep their case, ``""`` escapes a quote), string literals (``'it''s'`` and ``$$...$$``),
numbers, uuids, blobs (``0x..``), bind markers (``?`` and ``:name``) and punctuation.
Comments (``--``, ``//``, ``/* */``) and whitespace are dropped. Anything the Cassandra
lexer would reject (unterminated strings/comments, stray characters) raises :class:`LexError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["LexError", "Token", "TokenKind", "tokenize"]


class LexError(ValueError):
    """The text is not lexically valid CQL."""


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


_WS = re.compile(r"[ \t\r\n\f]+")
_HEX = "[0-9a-fA-F]"
_UUID = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?![0-9A-Za-z_])")
_BLOB = re.compile(r"0[xX][0-9a-fA-F]*(?![0-9A-Za-z_])")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)[A-Za-z0-9_]*")
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_MARKER = re.compile(r":[A-Za-z][A-Za-z0-9_]*")
_PUNCT3 = ("...",)
_PUNCT2 = ("<=", ">=", "!=", "+=", "-=", "::")
_PUNCT1 = set("()[]{},;.:?=<>+-*/%&|!^@")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos, n = 0, len(text)
    while pos < n:
        ch = text[pos]
        if m := _WS.match(text, pos):
            pos = m.end()
            continue
        if text.startswith("--", pos) or text.startswith("//", pos):
            end = text.find("\n", pos)
            pos = n if end < 0 else end + 1
            continue
        if text.startswith("/*", pos):
            end = text.find("*/", pos + 2)
            if end < 0:
                raise LexError(f"unterminated comment at {pos}")
            pos = end + 2
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
            end = text.find("$$", pos + 2)
            if end < 0:
                raise LexError(f"unterminated $$ string at {pos}")
            tokens.append(Token(TokenKind.STRING, text[pos + 2 : end], pos))
            pos = end + 2
            continue
        if m := _UUID.match(text, pos):
            tokens.append(Token(TokenKind.UUID, m.group().lower(), pos))
            pos = m.end()
            continue
        if m := _BLOB.match(text, pos):
            tokens.append(Token(TokenKind.BLOB, m.group().lower(), pos))
            pos = m.end()
            continue
        if ch.isascii() and (ch.isdigit() or (ch == "-" and pos + 1 < n and text[pos + 1].isdigit())):
            # like Cassandra's INTEGER/FLOAT rules, a '-' directly before a digit is a sign
            m = _NUMBER.match(text, pos)
            assert m is not None
            tokens.append(Token(TokenKind.NUMBER, m.group().lower(), pos))
            pos = m.end()
            continue
        if m := _IDENT.match(text, pos):
            tokens.append(Token(TokenKind.IDENT, m.group().lower(), pos))
            pos = m.end()
            continue
        if m := _MARKER.match(text, pos):
            tokens.append(Token(TokenKind.MARKER, m.group()[1:].lower(), pos))
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
    return tokens


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
