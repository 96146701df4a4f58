"""The df dialect object, a context that knows it, and text print/parse helpers."""

from __future__ import annotations

import io
import re

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.ir import Dialect
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException
from xdsl.utils.mlir_lexer import MLIRLexer

from coec.ir.errors import VerifyError
from coec.ir.ops import ALL_OPS
from coec.ir.types import TensorType

DF = Dialect("df", list(ALL_OPS), [TensorType])

# xDSL 0.75's string-literal pattern nests a `+` inside a `*`, so an unterminated literal
# (a stray `"` in a line of text: a Python file given as IR) backtracks exponentially and
# the parse never ends. The same language without the nesting: its two alternatives cannot
# both match, so a failed match is linear and an unterminated literal is a ParseError.
MLIRLexer._unescaped_characters_regex = re.compile(
    r'"(?:[^"\\\n\v\f]|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*"'
)


def make_context() -> Context:
    ctx = Context()
    for dialect in (Builtin, Func, DF):
        ctx.load_dialect(dialect)
    return ctx


def print_module(module: ModuleOp) -> str:
    out = io.StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue() + "\n"


def parse_module(text: str, source: str = "<ir>") -> ModuleOp:
    """Parse df IR text; a malformed file is one VerifyError naming the place."""
    try:
        module = Parser(make_context(), text, name=source).parse_module()
        module.verify()
    except ParseError as e:  # its text starts 'file:line:col' and ends with the message
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        where = lines[0] if lines and lines[0].startswith(source) else source
        raise VerifyError(f"{where}: {lines[-1] if lines else e}") from e
    except VerifyException as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise VerifyError(f"{source}: {lines[-1] if lines else e}") from e
    return module


def verify(module: ModuleOp) -> None:
    try:
        module.verify()
    except VerifyException as e:
        raise VerifyError(str(e).strip().splitlines()[0]) from e
