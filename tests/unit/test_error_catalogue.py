"""docs/errors.md catalogues every error code the code base can produce, with its HTTP status.

The codes are found by reading the source (``ast`` over every module of ``cbdc/`` and ``api/``),
never from a list kept by hand:

* every call of a :class:`~cbdc.domain.errors.CbdcError` subclass: its ``code=...`` keyword, or
  the class's default ``code`` without one, with the class's ``status``. A code passed through
  a name is followed to its literal: a module constant (imported or not), a local assignment, or
  a parameter of the enclosing function (then to the argument at each call of that function);
* every error class's default ``code`` and ``status``, raised bare or not;
* the HTTP layer's own problems: each ``problem(status, code, ...)`` call of ``api/``, and a
  code looked up by status in a dict (``HTTP_CODES.get(status, ...)``) with each key as status.

An f-string code is a pattern (``f"wallet_{row.status}"`` is ``wallet_*``): the catalogue must
name at least one code of it (a concrete one such as ``wallet_frozen``, whose filler must be a
string literal of the code base, or the placeholder form ``http_<status>``). A code read from
data (a server's answer, ``error.code``) is passed through, not made, and is not collected.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cbdc", "api")
CATALOGUE = ROOT / "docs" / "errors.md"
ERROR_ROOT = "CbdcError"
#: The HTTP layer's builder of problem documents: ``problem(status, code, detail, ...)``.
PROBLEM_BUILDER = "problem"

#: A code as the source spells it: literal text, with ``None`` for a part only known at run
#: time (an f-string's ``{...}`` that could not be followed to literals).
Template = tuple[str | None, ...]
#: An HTTP status; ``None`` when it is only known at run time.
Status = int | None
#: A code the source reads from data (``error.code``, ``answer["code"]``) and passes on: made
#: elsewhere, so not collected here.
PASSED: Template = ()

_FILLER = r"[a-z0-9_]+"
_PLACEHOLDER = r"<[a-z0-9_]+>"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"


@dataclass(frozen=True)
class ErrorClass:
    name: str
    code: str
    status: int


@dataclass
class Found:
    """What the source can produce: literal codes and patterns, each with its statuses."""

    exact: dict[str, set[Status]] = field(default_factory=lambda: defaultdict(set))
    patterns: dict[Template, set[Status]] = field(default_factory=lambda: defaultdict(set))
    where: dict[Template, list[str]] = field(default_factory=lambda: defaultdict(list))
    passed_through: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)

    def add(self, template: Template, status: Status, where: str) -> None:
        if template == PASSED:
            self.passed_through.append(where)
            return
        if all(part is None for part in template):
            self.unresolved.append(where)
            return
        self.where[template].append(where)
        if None in template:
            self.patterns[template].add(status)
        else:
            self.exact["".join(part for part in template if part is not None)].add(status)


# -- reading the source ----------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            parents = {
                child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
            }
            name = _module_name(path)
            found[name] = Module(name, path, tree, parents)
    return found


def _name_of(node: ast.expr) -> str | None:
    """``f`` of ``f(...)`` or of ``x.f(...)``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _class_constants(node: ast.ClassDef) -> dict[str, ast.expr]:
    constants: dict[str, ast.expr] = {}
    for statement in node.body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value
        elif (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
              and statement.value is not None):
            constants[statement.target.id] = statement.value
    return constants


@cache
def error_classes() -> dict[str, ErrorClass]:
    """Every subclass of CbdcError (and CbdcError itself), with its inherited code and status."""
    definitions = {
        node.name: node
        for module in modules().values()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.ClassDef)
    }
    found: dict[str, ErrorClass] = {}

    def define(name: str) -> ErrorClass | None:
        if name in found:
            return found[name]
        node = definitions.get(name)
        if node is None:
            return None
        parent: ErrorClass | None = None
        if name != ERROR_ROOT:
            for base in node.bases:
                base_name = _name_of(base)
                parent = define(base_name) if base_name is not None else None
                if parent is not None:
                    break
            if parent is None:
                return None
        constants = _class_constants(node)
        code = constants.get("code")
        status = constants.get("status")
        own_code = code.value if isinstance(code, ast.Constant) else None
        own_status = status.value if isinstance(status, ast.Constant) else None
        assert isinstance(own_code, str) or parent is not None, f"{name} has no code"
        assert isinstance(own_status, int) or parent is not None, f"{name} has no status"
        found[name] = ErrorClass(
            name,
            own_code if isinstance(own_code, str) else parent.code if parent else "",
            own_status if isinstance(own_status, int) else parent.status if parent else 0,
        )
        return found[name]

    for name in definitions:
        define(name)
    assert ERROR_ROOT in found, f"no class {ERROR_ROOT} under {PACKAGES}"
    return found


def _calls() -> Iterator[tuple[Module, ast.Call]]:
    for module in modules().values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call):
                yield module, node


def _enclosing_functions(
    module: Module, node: ast.AST
) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    current: ast.AST | None = module.parents.get(node)
    while current is not None:
        if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef):
            yield current
        current = module.parents.get(current)


def _is_method(module: Module, function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return isinstance(module.parents.get(function), ast.ClassDef)


@cache
def _literal_words() -> frozenset[str]:
    """Every string constant of the code base that could fill a part of a code."""
    return frozenset(
        node.value
        for module in modules().values()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and re.fullmatch(_FILLER, node.value)
    )


class Resolver:
    """Follows an expression that makes a code to the literals it can take."""

    def __init__(self) -> None:
        self._visiting: set[tuple[int, str]] = set()

    def values(self, node: ast.expr, module: Module) -> set[Template]:
        """The templates ``node`` can take; ``PASSED`` for a code read from data."""
        if isinstance(node, ast.Constant):
            if node.value is None:  # ``code or "default"``: no code of its own
                return set()
            return {(node.value,)} if isinstance(node.value, str) else {(None,)}
        if isinstance(node, ast.JoinedStr):
            return self._concatenated(node.values, module)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._concatenated([node.left, node.right], module)
        if isinstance(node, ast.FormattedValue):
            return self.values(node.value, module)
        if isinstance(node, ast.IfExp):
            return self.values(node.body, module) | self.values(node.orelse, module)
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.values(value, module) for value in node.values))
        if isinstance(node, ast.Call):
            return self._call_values(node, module)
        if isinstance(node, ast.Name):
            return self.name_values(node.id, node, module)
        if isinstance(node, ast.Attribute):
            return self._attribute_values(node, module)
        if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                and node.slice.value == "code"):
            return {PASSED}  # ``answer["code"]``
        return {(None,)}

    def _concatenated(self, parts: list[ast.expr], module: Module) -> set[Template]:
        """An f-string or ``a + b``: a code read from data inside it is only a run-time part."""
        pieces = [
            {(None,) if value == PASSED else value for value in self.values(part, module)}
            or {(None,)}
            for part in parts
        ]
        return {_joined(combination) for combination in itertools.product(*pieces)}

    def _attribute_values(self, node: ast.Attribute, module: Module) -> set[Template]:
        """``module.NAME``, ``Class.NAME`` (an enum member, say); ``x.code`` is passed on."""
        owner = node.value
        if isinstance(owner, ast.Name):
            imported = _imported_module(module, owner.id)
            if imported is not None:
                return self.name_values(node.attr, imported.tree, imported)
            constant = _class_constant(owner.id, node.attr)
            if constant is not None:
                return {(constant,)}
        return {PASSED} if node.attr == "code" else {(None,)}

    def _call_values(self, node: ast.Call, module: Module) -> set[Template]:
        if _name_of(node.func) == "str" and len(node.args) == 1:
            return self.values(node.args[0], module)
        mapping = self.dict_of_get(node, module)
        if mapping is not None:
            default = self.values(node.args[1], module) if len(node.args) > 1 else set()
            return {(value,) for _, value in mapping} | default
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == "code"):
            return {PASSED}  # ``answer.get("code")``
        return {(None,)}

    def dict_of_get(self, node: ast.Call, module: Module) -> list[tuple[object, str]] | None:
        """The (key, value) pairs of ``D`` in ``D.get(...)`` if ``D`` is a literal dict of
        string values, else None."""
        if not (isinstance(node.func, ast.Attribute) and node.func.attr == "get"):
            return None
        target = node.func.value
        if isinstance(target, ast.Name):
            found = self._definition(target.id, module)
            target = found[0] if found else target
        if not isinstance(target, ast.Dict):
            return None
        pairs: list[tuple[object, str]] = []
        for key, value in zip(target.keys, target.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)):
                return None
            pairs.append((key.value, value.value))
        return pairs

    @staticmethod
    def _definition(name: str, module: Module) -> list[ast.expr]:
        """The value(s) assigned to ``name`` at the top level of ``module``."""
        values: list[ast.expr] = []
        for statement in module.tree.body:
            if isinstance(statement, ast.Assign | ast.AnnAssign):
                values += _assigned_to(statement, name)
        return values

    def name_values(self, name: str, at: ast.AST, module: Module) -> set[Template]:
        for function in _enclosing_functions(module, at):
            if name in _parameters(function):
                return self._parameter_values(module, function, name)
            local = list(_local_values(function, name))
            if local:
                return set().union(*(self.values(value, module) for value in local))
        definitions = self._definition(name, module)
        if definitions:
            return set().union(*(self.values(value, module) for value in definitions))
        for statement in module.tree.body:
            if isinstance(statement, ast.ImportFrom) and statement.module in modules():
                for alias in statement.names:
                    if (alias.asname or alias.name) == name:
                        source = modules()[statement.module]
                        return self.name_values(alias.name, source.tree, source)
        return {(None,)}

    def _parameter_values(
        self, module: Module, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str
    ) -> set[Template]:
        """What every call of ``function`` passes as its parameter ``name``."""
        key = (id(function), name)
        if key in self._visiting:
            return set()
        self._visiting.add(key)
        try:
            positional = [arg.arg for arg in (*function.args.posonlyargs, *function.args.args)]
            if _is_method(module, function) and positional and positional[0] in ("self", "cls"):
                positional = positional[1:]
            index = positional.index(name) if name in positional else None
            found: set[Template] = set()
            calls = list(_calls_of(module, function))
            for caller, call in calls:
                keyword = next((k.value for k in call.keywords if k.arg == name), None)
                if keyword is not None:
                    found |= self.values(keyword, caller)
                elif (index is not None and index < len(call.args)
                      and not any(isinstance(a, ast.Starred) for a in call.args[: index + 1])):
                    found |= self.values(call.args[index], caller)
                else:
                    default = _default(function, name)
                    found |= self.values(default, module) if default else {(None,)}
            return found if calls else {(None,)}
        finally:
            self._visiting.discard(key)


def _imported_module(module: Module, alias: str) -> Module | None:
    """The module of the code base that ``alias`` names in ``module`` (``from cbdc.domain
    import tiers``, ``import cbdc.domain.tiers as tiers``), if any."""
    for statement in module.tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.module:
            for name in statement.names:
                target = f"{statement.module}.{name.name}"
                if (name.asname or name.name) == alias and target in modules():
                    return modules()[target]
        elif isinstance(statement, ast.Import):
            for name in statement.names:
                if name.asname == alias and name.name in modules():
                    return modules()[name.name]
    return None


def _class_constant(owner: str, attribute: str) -> str | None:
    """``owner.attribute`` for a class of the code base whose attribute is a string literal."""
    for module in modules().values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef) and node.name == owner:
                value = _class_constants(node).get(attribute)
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value
    return None


def _joined(pieces: tuple[Template, ...]) -> Template:
    """Concatenate templates, merging adjacent literal text."""
    parts: list[str | None] = []
    for piece in pieces:
        for part in piece:
            if part is not None and parts and parts[-1] is not None:
                parts[-1] = f"{parts[-1]}{part}"
            elif not (part is None and parts and parts[-1] is None):
                parts.append(part)
    return tuple(part for part in parts if part != "")


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    arguments = function.args
    return {
        arg.arg for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)
    }


def _default(function: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> ast.expr | None:
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    for arg, default in zip(positional[len(positional) - len(arguments.defaults):],
                            arguments.defaults, strict=True):
        if arg.arg == name:
            return default
    for arg, kw_default in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True):
        if arg.arg == name:
            return kw_default
    return None


def _local_values(
    function: ast.FunctionDef | ast.AsyncFunctionDef, name: str
) -> Iterator[ast.expr]:
    """Values assigned to ``name`` in ``function`` (``x = ...``, ``x, y = a, b``, ``for x in
    (a, b)``); a value that cannot be split is unknown (``...``)."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            yield from _assigned_to(node, name)
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple | ast.List):
            for element in node.iter.elts:
                yield from _assigned(node.target, element, name)


def _assigned_to(statement: ast.Assign | ast.AnnAssign, name: str) -> list[ast.expr]:
    if isinstance(statement, ast.AnnAssign):
        value = statement.value
        return [] if value is None else list(_assigned(statement.target, value, name))
    return [found for target in statement.targets
            for found in _assigned(target, statement.value, name)]


def _assigned(target: ast.expr, value: ast.expr, name: str) -> Iterator[ast.expr]:
    if isinstance(target, ast.Name) and target.id == name:
        yield value
    elif isinstance(target, ast.Tuple):
        names = [t.id if isinstance(t, ast.Name) else None for t in target.elts]
        if name in names:
            if isinstance(value, ast.Tuple) and len(value.elts) == len(names):
                yield value.elts[names.index(name)]
            else:
                yield ast.Constant(value=...)


def _calls_of(
    module: Module, function: ast.FunctionDef | ast.AsyncFunctionDef
) -> Iterator[tuple[Module, ast.Call]]:
    """Calls that may call ``function``: by its name in its module or where it is imported;
    ``x.name(...)`` anywhere for a method or for ``module.name(...)``."""
    method = _is_method(module, function)
    for caller, call in _calls():
        func = call.func
        if isinstance(func, ast.Name) and func.id == function.name:
            if caller is module or _imports(caller, module.name, function.name):
                yield caller, call
        elif isinstance(func, ast.Attribute) and func.attr == function.name and (
            method or (isinstance(func.value, ast.Name)
                       and module.name.rsplit(".", 1)[-1] == func.value.id)
        ):
            yield caller, call


def _imports(caller: Module, source: str, name: str) -> bool:
    return any(
        isinstance(node, ast.ImportFrom) and node.module == source
        and any(alias.name == name for alias in node.names)
        for node in ast.walk(caller.tree)
    )


@cache
def produced() -> Found:
    found = Found()
    classes = error_classes()
    resolver = Resolver()
    for error in classes.values():  # (b) every class's default code
        found.add((error.code,), error.status, f"class {error.name}")
    for module, call in _calls():
        callee = _name_of(call.func)
        if callee in classes:  # (a) a code given where an error is made
            error = classes[callee]
            keyword = next((k.value for k in call.keywords if k.arg == "code"), None)
            templates: set[Template] = {(error.code,)}
            if keyword is not None and not (
                isinstance(keyword, ast.Constant) and keyword.value is None
            ):
                templates = resolver.values(keyword, module) or {(None,)}
            if any(k.arg is None for k in call.keywords):  # ``**members`` may hold a code
                templates.add((None,))
            for template in templates:
                found.add(template, error.status, module.where(call))
        elif callee == PROBLEM_BUILDER and module.name.startswith("api") and len(call.args) >= 2:
            for template, status in _problem_codes(resolver, module, call):  # (c)
                found.add(template, status, module.where(call))
    return found


def _problem_codes(
    resolver: Resolver, module: Module, call: ast.Call
) -> Iterator[tuple[Template, Status]]:
    status_node, code_node = call.args[0], call.args[1]
    if isinstance(status_node, ast.Constant) and isinstance(status_node.value, int):
        for template in resolver.values(code_node, module):
            yield template, status_node.value
        return
    # The status is a variable: the code may be looked up by it (``HTTP_CODES.get(status,
    # default)``), each key being the status of its code; the default's status is unknown.
    lookups: list[ast.expr] = [code_node]
    if isinstance(code_node, ast.Name):
        functions = list(_enclosing_functions(module, call))
        if functions:
            lookups = list(_local_values(functions[0], code_node.id)) or lookups
    for lookup in lookups:
        pairs = resolver.dict_of_get(lookup, module) if isinstance(lookup, ast.Call) else None
        if pairs is None or not isinstance(lookup, ast.Call):
            for template in resolver.values(lookup, module):
                yield template, None
            continue
        for key, value in pairs:
            yield (value,), key if isinstance(key, int) else None
        for default in lookup.args[1:2]:
            for template in resolver.values(default, module):
                yield template, None


# -- reading the catalogue -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    code: str
    statuses: frozenset[int]
    line: int


def catalogue_rows() -> list[Row]:
    """Rows of the catalogue's tables: the first cell is a code in backticks; the second holds
    its status(es) as three-digit numbers (none for a status only known at run time)."""
    rows: list[Row] = []
    for number, line in enumerate(CATALOGUE.read_text(encoding="utf-8").splitlines(), 1):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 3:
            continue
        code = re.fullmatch(r"`([a-z0-9_<>]+)`", cells[0])
        if code is None:
            continue
        statuses = frozenset(int(s) for s in re.findall(r"\b[1-5]\d\d\b", cells[1]))
        rows.append(Row(code.group(1), statuses, number))
    return rows


def _regex(template: Template) -> re.Pattern[str]:
    return re.compile("".join(
        f"({_FILLER}|{_PLACEHOLDER})" if part is None else re.escape(part) for part in template
    ))


def _spelled(template: Template) -> str:
    return "".join("*" if part is None else part for part in template)


def _statuses(statuses: set[Status]) -> str:
    return ", ".join(str(s) if s is not None else "(run time)" for s in sorted(
        statuses, key=lambda s: -1 if s is None else s))


# -- the test --------------------------------------------------------------------------------


def catalogue_problems() -> list[str]:
    found = produced()
    rows = catalogue_rows()
    problems = [
        f"{where}: cannot follow this code to its literal(s); make it one, or teach this test"
        for where in sorted(set(found.unresolved))
    ]
    by_code: dict[str, Row] = {}
    for row in rows:
        if row.code in by_code:
            problems.append(f"line {row.line}: `{row.code}` has a row already "
                            f"(line {by_code[row.code].line})")
        by_code.setdefault(row.code, row)

    for code, statuses in sorted(found.exact.items()):
        expected = {s for s in statuses if s is not None}
        listed = by_code.get(code)
        if listed is None:
            problems.append(f"missing: `{code}` ({_statuses(statuses)}), made at "
                            + ", ".join(found.where[(code,)]))
        elif listed.statuses != expected:
            problems.append(f"line {listed.line}: `{code}` lists status "
                            f"{sorted(listed.statuses) or 'none'}; the code makes it with "
                            f"{_statuses(statuses)} (" + ", ".join(found.where[(code,)]) + ")")

    words = _literal_words()
    for template, statuses in sorted(found.patterns.items(), key=lambda p: _spelled(p[0])):
        regex = _regex(template)
        named = [
            row for row in rows
            if row.code not in found.exact and regex.fullmatch(row.code)
            and (None in statuses or row.statuses & {s for s in statuses if s is not None})
        ]
        if not named:
            problems.append(f"missing: no row names a code of the pattern `{_spelled(template)}`"
                            f" ({_statuses(statuses)}), made at "
                            + ", ".join(found.where[template]))

    for row in rows:
        if row.code in found.exact:
            continue
        matching = [
            (match, statuses) for template, statuses in found.patterns.items()
            if (match := _regex(template).fullmatch(row.code)) is not None
        ]
        fillers_known = any(
            all(re.fullmatch(_PLACEHOLDER, group) or group in words for group in match.groups())
            for match, _ in matching
        )
        if not matching or not fillers_known:
            problems.append(f"line {row.line}: `{row.code}` is not a code the code base makes")
            continue
        allowed: set[Status] = set().union(*(statuses for _, statuses in matching))
        if None not in allowed and not row.statuses <= allowed:
            problems.append(f"line {row.line}: `{row.code}` lists status {sorted(row.statuses)};"
                            f" its pattern is made with {_statuses(allowed)}")
    return problems


def test_the_source_is_read() -> None:
    """A guard for the reader itself: it finds codes of each kind of source."""
    found = produced()
    assert {"InvalidRequest", "OfflineRefused", "SchemaOutOfDate"} <= set(error_classes())
    assert found.exact["invalid_request"] == {400}  # a class default
    assert found.exact["insufficient_funds"] == {422}
    assert found.exact["body_too_large"] == {413}  # problem(413, "body_too_large", ...)
    assert found.exact["method_not_allowed"] == {405}  # HTTP_CODES
    assert found.exact["request_invalid"] == {422}
    assert len(found.exact) > 100
    assert found.patterns, "no f-string code was found"


def test_every_code_has_a_row_with_its_status() -> None:
    problems = catalogue_problems()
    assert not problems, (
        f"docs/errors.md is out of step with the code ({len(problems)}):\n  "
        + "\n  ".join(problems)
    )
