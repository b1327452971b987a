"""Find tests that compare a measured duration to a bound (tests/test_suite_rules.py runs it on tests/).

A value is *timed* when it comes from a clock: ``time.perf_counter()`` and the other ``time`` clocks
(however imported or aliased: ``from time import monotonic as now``, ``import time as t``,
``clock = time.perf_counter``), ``timeit.default_timer()``, an event loop's ``loop.time()``,
``datetime.now()``; or from a helper function that returns such a value (``def measure(fn): ...; return
time.perf_counter() - t0``); or from a name that says so (``elapsed``, ``*latency*``, ``*duration*``,
``took``, ``wall_s``, ``*_secs``). Timedness follows assignments, ``append``/``extend``, ``for`` targets,
a helper's parameters (``check_fast(time.perf_counter() - t0)`` makes ``check_fast``'s parameter timed)
and tuple returns (``reply, took = timed(...)`` makes only ``took`` timed).

A *stopwatch assert* is an order comparison (or ``== approx(...)``) of a timed value against a bound that
is not timed and not zero, which decides an ``assert``, a ``pytest.fail``/``raise`` branch, a unittest
``assertLess``-style call, or a name such an assert reads (``fast = elapsed < 1; assert fast``).

The one exception is a hang guard: inside a ``while`` loop, a raw clock reading against a deadline
(``assert time.monotonic() < deadline``) only stops a loop that never ends, like pytest-timeout. A
duration measured inside a loop (``time.monotonic() - t0 < 1``, ``elapsed < 1``) is still a stopwatch.
"""

from __future__ import annotations

import ast
import re

CLOCKS = {"perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns", "process_time"}
_TIMED_NAME = re.compile(r"elapsed|latency|duration|took|wall_?s\b|_secs?\b", re.IGNORECASE)
_ORDER = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
_UNITTEST_ORDER = {
    "assertLess",
    "assertLessEqual",
    "assertGreater",
    "assertGreaterEqual",
    "assertAlmostEqual",
}
_UNITTEST_TRUTH = {"assertTrue", "assertFalse"}
_Function = ast.FunctionDef | ast.AsyncFunctionDef


def _walk(node: ast.AST) -> list[ast.AST]:
    """``ast.walk(node)`` as a list, kept on the node: the rule walks the same subtrees many times over
    (taint repeats until nothing changes), and re-walking them was most of its ~3 s on the suite."""
    found: list[ast.AST] | None = getattr(node, "_mf_walk", None)
    if found is None:
        found = list(ast.walk(node))
        node._mf_walk = found  # type: ignore[attr-defined]
    return found


def _name_of(func: ast.AST) -> str | None:
    """``f`` for ``f(...)``, ``m`` for ``obj.m(...)``."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in (0, 0.0) and not isinstance(node.value, bool)


def _calls_fail(stmt: ast.stmt) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "fail"
        for n in _walk(stmt)
    ) or isinstance(stmt, ast.Raise)


def _params(node: _Function) -> list[str]:
    a = node.args
    return [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]]


class _Module:
    """What one module's code knows about clocks, found by iterating to a fixed point."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.time_modules = {"time"}
        self.clock_names = CLOCKS - {"time"} | {"default_timer"}  # bare calls that read a clock
        self.clock_attrs: set[str] = set()  # self.clock = time.monotonic -> obj.clock() reads a clock
        self.attributes: set[str] = set()  # self.sent.append(time.monotonic()) -> any `.sent` is timed
        self.helpers: dict[str, frozenset[int] | None] = {}  # returns a timed value: None = all of it
        self.params: dict[str, set[str]] = {}  # a helper's parameters that callers pass timed values
        self.defs: dict[str, list[_Function]] = {}
        for node in _walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.defs.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "time":
                        self.time_modules.add(alias.asname or "time")
            elif isinstance(node, ast.ImportFrom) and node.module in ("time", "timeit"):
                for alias in node.names:
                    if alias.name in CLOCKS or alias.name == "default_timer":
                        self.clock_names.add(alias.asname or alias.name)
        self._settle()

    # ---------------------------------------------------------------- what reads a clock

    def is_clock_ref(self, node: ast.AST) -> bool:
        """``time.perf_counter`` (not called), or a name already known to be one."""
        if isinstance(node, ast.Attribute):
            return (
                node.attr in CLOCKS
                and isinstance(node.value, ast.Name)
                and node.value.id in self.time_modules
            ) or node.attr in self.clock_attrs
        return isinstance(node, ast.Name) and node.id in self.clock_names

    def is_clock_call(self, node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        func = node.func
        if self.is_clock_ref(func):
            return True
        if isinstance(func, ast.Attribute):
            value = func.value
            if func.attr == "default_timer":  # timeit.default_timer()
                return True
            if func.attr in ("now", "utcnow"):  # datetime.now(), datetime.datetime.now()
                return _name_of(value) == "datetime"
            if func.attr == "time":  # loop.time(), asyncio.get_running_loop().time()
                if isinstance(value, ast.Call):
                    return _name_of(value.func) in ("get_running_loop", "get_event_loop")
                return isinstance(value, ast.Name) and "loop" in value.id.lower()
        name = _name_of(func)
        return name is not None and self.helpers.get(name, frozenset()) is None

    def timed(self, expr: ast.AST, names: set[str]) -> bool:
        for sub in _walk(expr):
            if self.is_clock_call(sub):
                return True
            if isinstance(sub, ast.Name) and (sub.id in names or _TIMED_NAME.search(sub.id)):
                return True
            if isinstance(sub, ast.Attribute) and (
                sub.attr in self.attributes or _TIMED_NAME.search(sub.attr)
            ):
                return True
            if (
                isinstance(sub, ast.Subscript)
                and isinstance(sub.slice, ast.Constant)
                and isinstance(sub.slice.value, str)
                and _TIMED_NAME.search(sub.slice.value)
            ):
                return True
        return False

    # ---------------------------------------------------------------- propagation

    def taint(self, node: _Function) -> set[str]:
        """The names in ``node`` (nested functions included) that hold a timed value."""
        names: set[str] = set()
        for sub in _walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names |= self.params.get(sub.name, set())
        changed = True
        while changed:
            changed = False
            for sub in _walk(node):
                for target in self._timed_targets(sub, names):
                    for name in _walk(target):
                        if isinstance(name, ast.Name) and name.id not in names and name.id != "self":
                            names.add(name.id)
                            changed = True
                        elif (
                            isinstance(target, ast.Attribute)
                            and name is target
                            and target.attr not in self.attributes
                        ):
                            self.attributes.add(target.attr)
                            changed = True
        return names

    def _timed_targets(self, sub: ast.AST, names: set[str]) -> list[ast.AST]:
        if isinstance(sub, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and sub.value is not None:
            targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
            value = sub.value
            indices = self._tuple_helper(value)
            if indices is not None:  # reply, took = timed(...): only the timed positions
                return [
                    elt
                    for t in targets
                    if isinstance(t, (ast.Tuple, ast.List))
                    for i, elt in enumerate(t.elts)
                    if i in indices
                ] + [t for t in targets if not isinstance(t, (ast.Tuple, ast.List))]
            return list(targets) if self.timed(value, names) else []
        if isinstance(sub, (ast.For, ast.AsyncFor, ast.comprehension)) and self.timed(sub.iter, names):
            return [sub.target]
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Attribute)
            and sub.func.attr in ("append", "extend", "add", "insert")
            and any(self.timed(arg, names) for arg in sub.args)
        ):
            return [sub.func.value]
        return []

    def _tuple_helper(self, value: ast.AST) -> frozenset[int] | None:
        if isinstance(value, ast.Call):
            name = _name_of(value.func)
            if name is not None and name in self.helpers:
                return self.helpers[name]
        return None

    def _settle(self) -> None:
        """Grow clock names, helpers, timed parameters and attributes until nothing new is found."""
        functions = [n for ns in self.defs.values() for n in ns]
        while True:
            before = (
                len(self.clock_names),
                len(self.clock_attrs),
                len(self.attributes),
                dict(self.helpers),
                sum(len(p) for p in self.params.values()),
            )
            for sub in _walk(self.tree):  # clock = time.perf_counter; self.now = time.monotonic
                if isinstance(sub, ast.Assign) and self.is_clock_ref(sub.value):
                    for t in sub.targets:
                        if isinstance(t, ast.Name):
                            self.clock_names.add(t.id)
                        elif isinstance(t, ast.Attribute):
                            self.clock_attrs.add(t.attr)
            for fn in functions:
                names = self.taint(fn)
                self._returns(fn, names)
                self._pass_params(fn, names)
            after = (
                len(self.clock_names),
                len(self.clock_attrs),
                len(self.attributes),
                dict(self.helpers),
                sum(len(p) for p in self.params.values()),
            )
            if after == before:
                return

    def _returns(self, fn: _Function, names: set[str]) -> None:
        """Record ``fn`` as a helper whose return value (or some positions of it) is timed."""
        whole, positions = False, set()
        for ret in _own_returns(fn):
            if ret.value is None or not self.timed(ret.value, names):
                continue
            if isinstance(ret.value, ast.Tuple):
                positions |= {i for i, e in enumerate(ret.value.elts) if self.timed(e, names)}
            else:
                whole = True
        if whole:
            self.helpers[fn.name] = None
        elif positions and self.helpers.get(fn.name, frozenset()) is not None:
            self.helpers[fn.name] = frozenset(positions | set(self.helpers.get(fn.name) or ()))

    def _pass_params(self, fn: _Function, names: set[str]) -> None:
        """``check_fast(time.perf_counter() - t0)``: ``check_fast``'s parameter becomes timed."""
        for call in (n for n in _walk(fn) if isinstance(n, ast.Call)):
            name = _name_of(call.func)
            if name is None or name not in self.defs:
                continue
            for target in self.defs[name]:
                params = _params(target)
                if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
                    params = params[1:]
                timed = self.params.setdefault(name, set())
                for i, arg in enumerate(call.args):
                    if i < len(params) and self.timed(arg, names):
                        timed.add(params[i])
                for kw in call.keywords:
                    if kw.arg is not None and kw.arg in params and self.timed(kw.value, names):
                        timed.add(kw.arg)


def _own_returns(fn: _Function) -> list[ast.Return]:
    """The return statements of ``fn`` itself, not of functions nested in it."""
    out: list[ast.Return] = []
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return):
            out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return out


class _Checker:
    def __init__(self, module: _Module, path: str) -> None:
        self.module = module
        self.path = path
        self.found: dict[int, str] = {}

    def check_function(self, node: _Function) -> None:
        names = self.module.taint(node)
        readings = self._readings(node)
        in_loop = {id(n) for loop in _walk(node) if isinstance(loop, ast.While) for n in _walk(loop)}
        # fast = elapsed < 1.0; ...; assert fast
        verdicts: dict[str, list[ast.Compare]] = {}
        for sub in _walk(node):
            if isinstance(sub, ast.Assign):
                bad = self._bad(sub.value, names)
                for t in sub.targets:
                    for n in _walk(t):
                        if bad and isinstance(n, ast.Name):
                            verdicts.setdefault(n.id, []).extend(bad)
        for sub in _walk(node):
            decided: list[ast.AST] = []
            if (
                isinstance(sub, ast.Assert)
                or isinstance(sub, ast.If)
                and any(_calls_fail(s) for s in sub.body)
            ):
                decided = [sub.test]
            elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                if sub.func.attr in _UNITTEST_TRUTH and sub.args:
                    decided = [sub.args[0]]
                elif sub.func.attr in _UNITTEST_ORDER and len(sub.args) >= 2:
                    self._pair(sub, names, in_loop, readings)
            for test in decided:
                for cmp in self._bad(test, names):
                    self._flag(cmp, in_loop, readings)
                for n in _walk(test):
                    if isinstance(n, ast.Name):
                        for cmp in verdicts.get(n.id, []):
                            self._flag(cmp, in_loop, readings)

    def _readings(self, node: _Function) -> set[str]:
        """Names only ever assigned a bare clock reading (``now = time.monotonic()``)."""
        assigned: dict[str, bool] = {}
        for sub in _walk(node):
            if isinstance(sub, ast.Assign):
                for t in sub.targets:
                    if isinstance(t, ast.Name):
                        plain = self.module.is_clock_call(sub.value)
                        assigned[t.id] = assigned.get(t.id, True) and plain
        return {n for n, plain in assigned.items() if plain}

    def _bad(self, test: ast.AST, names: set[str]) -> list[ast.Compare]:
        """The comparisons in ``test`` that put a timed value against a bound."""
        out = []
        for cmp in (n for n in _walk(test) if isinstance(n, ast.Compare)):
            operands = [cmp.left, *cmp.comparators]
            for op, left, right in zip(cmp.ops, operands[:-1], operands[1:], strict=True):
                if isinstance(op, _ORDER) and self._bounded(op, left, right, names):
                    out.append(cmp)
                    break
        return out

    def _bounded(self, op: ast.cmpop, left: ast.AST, right: ast.AST, names: set[str]) -> bool:
        for measured, bound in ((left, right), (right, left)):
            if not self.module.timed(measured, names) or _is_zero(bound) or self.module.timed(bound, set()):
                continue
            # == a constant: a formatting check on fixed data; == approx(...): a bound in disguise
            if isinstance(op, (ast.Eq, ast.NotEq)) and "approx" not in ast.unparse(bound):
                continue
            return True
        return False

    def _pair(self, call: ast.Call, names: set[str], in_loop: set[int], readings: set[str]) -> None:
        """``self.assertLess(elapsed, 1.0)`` and the like: its first two arguments, compared."""
        a, b = call.args[:2]
        if self._bounded(ast.Lt(), a, b, names):
            cmp = ast.Compare(left=a, ops=[ast.Lt()], comparators=[b], lineno=call.lineno, col_offset=0)
            self._flag(
                cmp, in_loop | ({id(cmp)} if id(call) in in_loop else set()), readings, ast.unparse(call)
            )

    def _flag(self, cmp: ast.Compare, in_loop: set[int], readings: set[str], text: str | None = None) -> None:
        if id(cmp) in in_loop and self._deadline_shaped(cmp, readings):
            return
        self.found[cmp.lineno] = f"{self.path}:{cmp.lineno}: {text or ast.unparse(cmp)}"

    def _deadline_shaped(self, cmp: ast.Compare, readings: set[str]) -> bool:
        """A raw clock reading on one side (``time.monotonic() < deadline``): a hang guard."""
        for side in [cmp.left, *cmp.comparators]:
            if self.module.is_clock_call(side) or isinstance(side, ast.Name) and side.id in readings:
                return True
        return False


def _deadlines(tree: ast.AST, path: str) -> list[str]:
    """``settings(deadline=<anything but None>)``: a per-example Hypothesis deadline."""
    out = []
    for node in _walk(tree):
        if isinstance(node, ast.Call) and _name_of(node.func) == "settings":
            for kw in node.keywords:
                if kw.arg == "deadline" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is None
                ):
                    out.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return out


def _top_level_functions(tree: ast.Module) -> list[_Function]:
    """Functions at module level and methods of module-level classes (nested ones go with their parent)."""
    out: list[_Function] = []
    for top in tree.body:
        if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append(top)
        elif isinstance(top, ast.ClassDef):
            out += [n for n in top.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return out


def stopwatch_asserts(source: str, path: str = "<src>") -> list[str]:
    """Each stopwatch assert and Hypothesis deadline in ``source``, as ``path:line: code``."""
    tree = ast.parse(source)
    checker = _Checker(_Module(tree), path)
    for node in _top_level_functions(tree):
        checker.check_function(node)
    return sorted(checker.found.values()) + _deadlines(tree, path)
