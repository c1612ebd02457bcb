"""A safe evaluator for the arithmetic expressions of the Grammar VAE (never Python ``eval``).

Grammar of the strings (tokens as in grammars/expressions.cfg: ``x 1 2 3 + * / ( ) sin( exp(``),
read with the usual precedence (``*`` and ``/`` bind tighter than ``+``; all left-associative),
which is how the paper's code evaluated them:

    expr   := term ('+' term)*
    term   := factor (('*' | '/') factor)*
    factor := 'x' | digit | '(' expr ')' | 'sin(' expr ')' | 'exp(' expr ')'

The value is computed with numpy over an array of x; overflow and division by zero give inf
or nan (no warnings), which callers check with ``np.isfinite``.
"""

from __future__ import annotations

import re

import numpy as np

_TOKEN = re.compile(r"\s*(sin\(|exp\(|[x0-9]|[-+*/()])")
_MAX_TOKENS = 10_000
_MAX_DEPTH = 200


class ExpressionError(ValueError):
    """The text is not an expression of this grammar; the message says where."""


def tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens; raises ExpressionError at the first unknown character."""
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ExpressionError(f"expression {text[:60]!r}: unknown symbol at position {pos}")
        tokens.append(m.group(1))
        pos = m.end()
        if len(tokens) > _MAX_TOKENS:
            raise ExpressionError(f"expression {text[:60]!r}: more than {_MAX_TOKENS} tokens")
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], x: np.ndarray, text: str) -> None:
        self.tokens, self.x, self.text, self.pos = tokens, x, text, 0

    def fail(self, what: str) -> ExpressionError:
        return ExpressionError(f"expression {self.text[:60]!r}: {what} at token {self.pos}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end")
        self.pos += 1
        return tok

    def expr(self, depth: int) -> np.ndarray:
        if depth > _MAX_DEPTH:
            raise self.fail("nesting too deep")
        value = self.term(depth)
        while self.peek() == "+":
            self.take()
            value = value + self.term(depth)
        return value

    def term(self, depth: int) -> np.ndarray:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.factor(depth)
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(self, depth: int) -> np.ndarray:
        tok = self.take()
        if tok == "x":
            return self.x
        if tok.isdigit():
            return np.full_like(self.x, float(tok))
        if tok in ("(", "sin(", "exp("):
            inner = self.expr(depth + 1)
            if self.take() != ")":
                raise self.fail("missing ')'")
            return {"(": inner, "sin(": np.sin(inner), "exp(": np.exp(inner)}[tok]
        raise self.fail(f"unexpected {tok!r}")


def evaluate(text: str, x: np.ndarray) -> np.ndarray:
    """Values of the expression ``text`` at the points ``x`` (float64 array, same shape)."""
    tokens = tokenize(text)
    if not tokens:
        raise ExpressionError("empty expression")
    x = np.asarray(x, dtype=np.float64)
    parser = _Parser(tokens, x, text)
    with np.errstate(all="ignore"):
        value = parser.expr(0)
    if parser.pos != len(tokens):
        raise parser.fail("trailing tokens")
    return np.broadcast_to(value, x.shape).astype(np.float64)


GRID = np.linspace(-10, 10, 1000)


def is_finite_on_grid(text: str, grid: np.ndarray = GRID) -> bool:
    """True when the expression parses and is finite at every point of linspace(-10, 10, 1000)."""
    try:
        return bool(np.isfinite(evaluate(text, grid)).all())
    except ExpressionError:
        return False
