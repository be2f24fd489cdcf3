"""Which of a notebook's statements the grader runs: its imports, assignments of literals
or of arithmetic on numbers, and top-level definitions that run no code while being
defined (``definitions``)."""

from __future__ import annotations

import ast

from ..assignments import is_literal


CELL_PREFIX = "<notebook cell "  # the file name of the student's compiled code
_ALLOWED_DECORATORS = {"staticmethod", "classmethod", "property", "abstractmethod",
                       "torch.no_grad", "torch.inference_mode", "torch.enable_grad"}


def _dotted(node: ast.AST) -> str:
    return _dotted(node.value) + "." + node.attr if isinstance(node, ast.Attribute) else \
        node.id if isinstance(node, ast.Name) else ""


_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)  # no **: 9**9**9


def _is_arithmetic(node: ast.AST) -> bool:
    """True for +, -, *, /, //, % and unary minus on int and float constants, such as a
    question's answer worked out in place (``(191 / 255 - 0.5) / 0.5``)."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, (ast.USub, ast.UAdd)) and _is_arithmetic(node.operand)
    if isinstance(node, ast.BinOp):
        try:  # a chain of thousands of + nests as deep: refused, not a crash of the grader
            return (isinstance(node.op, _ARITHMETIC) and _is_arithmetic(node.left)
                    and _is_arithmetic(node.right))
        except RecursionError:
            return False
    return False


def _definition_runs_code(node: ast.AST) -> bool:
    """True when defining ``node`` (a def or class) would run code: a decorator other
    than ``staticmethod``, ``property``, ``torch.no_grad()`` and the like, a call, a
    lambda, a walrus or a comprehension in a default value, annotation or base class, a
    metaclass, or a class body statement other than a def, a docstring or an assignment
    of a literal value."""
    exprs: list[ast.AST] = []
    for d in node.decorator_list:
        call = isinstance(d, ast.Call)
        if _dotted(d.func if call else d) not in _ALLOWED_DECORATORS or (call and (d.args or d.keywords)):
            return True
    if isinstance(node, ast.ClassDef):
        if node.keywords:  # metaclass=..., or arguments for a base's __init_subclass__
            return True
        exprs += node.bases
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _definition_runs_code(stmt):
                    return True
            elif isinstance(stmt, ast.Pass) or (
                    isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                pass
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and (
                    stmt.value is None or is_literal(stmt.value)):
                if isinstance(stmt, ast.AnnAssign):
                    exprs.append(stmt.annotation)
            else:
                return True
    else:
        a = node.args
        exprs += a.defaults + [d for d in a.kw_defaults if d is not None]
        exprs += [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs if x.annotation]
        exprs += [x.annotation for x in (a.vararg, a.kwarg) if x is not None and x.annotation]
        if node.returns is not None:
            exprs.append(node.returns)
    unsafe = (ast.Call, ast.Lambda, ast.NamedExpr, ast.ListComp, ast.SetComp, ast.DictComp,
              ast.GeneratorExp, ast.Await, ast.Yield, ast.YieldFrom)
    return any(isinstance(n, unsafe) for e in exprs for n in ast.walk(e))


def _python_of(source: str) -> str:
    """A cell's source as plain Python: IPython's magics and shell lines become calls
    of ``get_ipython()``, which the grader does not run."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - IPython's own parser failing on a student's text
        return source


def definitions(cells: list[str], names: set[str] | None = None
                ) -> tuple[list[tuple[int, ast.Module]], list[str]]:
    """The statements of ``cells`` (code cell sources) that the grader runs: imports,
    assignments of literal values (``LATENT = 100``) or of arithmetic on numbers
    (``answer = 1 / 0.001 - 1``), and top-level ``def``/``class``
    statements that run no code while being defined; each as a one-statement module
    with its cell number, in order. Also returns a note per def or class skipped, and
    per assignment skipped that binds one of ``names`` (the exercises' names)."""
    kept, notes = [], []
    for number, source in enumerate(cells, start=1):
        try:
            tree = ast.parse(_python_of(source))
        except SyntaxError as err:
            notes.append(f"code cell {number} is not valid Python ({err.msg}, line {err.lineno}); "
                         "nothing in it was graded")
            continue
        except (ValueError, MemoryError, RecursionError) as err:
            notes.append(f"code cell {number} could not be read ({type(err).__name__}); "
                         "nothing in it was graded")
            continue
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                kept.append((number, stmt))
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if _definition_runs_code(stmt):
                    notes.append(f"code cell {number}: `{stmt.name}` was not run by the grader, "
                                 "since defining it runs code (a decorator, a call in a default "
                                 "value or base class, a metaclass, or statements in the class "
                                 "body)")
                else:
                    kept.append((number, stmt))
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                if isinstance(stmt, ast.Assign) and (
                        is_literal(stmt.value) or _is_arithmetic(stmt.value)) and all(
                        isinstance(t, ast.Name) for t in stmt.targets):
                    kept.append((number, stmt))
                    continue
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                bound = [n.id for t in targets for n in ast.walk(t)
                         if isinstance(n, ast.Name) and n.id in (names or ())]
                if bound:
                    notes.append(f"code cell {number}: the assignment to {', '.join(bound)} was "
                                 "not run by the grader, which runs only imports, def and class "
                                 "statements and assignments of literal values or of arithmetic "
                                 "on numbers")
    return [(n, ast.Module(body=[stmt], type_ignores=[])) for n, stmt in kept], notes


# ----------------------------------------------------------------------- limits
