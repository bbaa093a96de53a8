"""The registry of job kinds: kind name -> the job function, its parameters type and optional check.

Each kind has one frozen parameters dataclass, a subclass of :class:`JobParams`: the job row stores
``params.to_json()``, and the worker rebuilds the dataclass with ``from_json`` (which validates it: a job
written by an older version, or by hand, fails with a one-line reason instead of a ``KeyError`` deep in
the job). A job function has the signature ``fn(ctx, params, reporter) -> dict``
(``services.jobs.protocol``); a check ``check(ctx, params) -> params`` refuses bad parameters before a
job is written (raising a ``MedlabelError``) and may return them normalised (e.g. a model pinned to its
version, with ``dataclasses.replace``). A ``project_id`` field names the project the job belongs to:
``jobs.submit`` checks the submitter leads it and records it on the job row.

Kinds are registered as functions, not as import strings, so the import graph shows which use cases
run as jobs; medlabel's own kinds are registered by their nouns and loaded by ``services.job_kinds``,
which the shells import (it sits above the noun packages, so this package never imports the use cases
it runs). A worker gets the function itself (pickled by reference, so it must be a module-level
function).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, Union

from medlabel.errors import InputError

JobFn = Callable[..., dict[str, Any]]
CheckFn = Callable[..., Any]


@dataclass(frozen=True)
class JobParams:
    """The base of every job kind's parameters: a frozen dataclass of JSON-able fields.

    Field types a subclass may use: ``int``, ``float``, ``str``, ``bool``, ``Literal[...]`` of strings,
    ``tuple[str, ...]``, ``tuple[int, ...]``, ``dict[str, Any]`` (a JSON object) and any of these
    ``| None``. ``from_json`` refuses unknown or missing keys and values of the wrong type.
    """

    kind_label: ClassVar[str] = "job"
    """How messages name these parameters (set to the kind by ``register_kind``)."""

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Self:
        """The parameters from their JSON form (a job row's ``params``, or a client's request)."""
        if not isinstance(raw, Mapping):
            raise InputError(None, f"{cls.kind_label} parameters must be a JSON object")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise InputError(None, f"unknown {cls.kind_label} parameter(s): {', '.join(map(str, unknown))} "
                                   f"(known: {', '.join(fields) or 'none'})")
        missing = [name for name, f in fields.items() if name not in raw
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise InputError(None, f"missing {cls.kind_label} parameter(s): {', '.join(missing)}")
        values = {name: _coerce(cls.kind_label, name, hints[name], value) for name, value in raw.items()}
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored on the job row (tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return "a list of " + {str: "strings", int: "integers"}.get(args[0], _describe(args[0]))
    if origin is dict:
        return "a JSON object"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(label: str, name: str, tp: Any, value: Any) -> Any:
    """``value`` as the field's type (JSON lists become tuples); ``InputError`` naming the field."""
    ok, converted = _convert(tp, value)
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InputError(None, f"{label} parameter {name!r} must be {_describe(tp)}, got {shown}")
    return converted


def _convert(tp: Any, value: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, value
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, converted = _convert(arg, value)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in args and type(value) in {type(a) for a in args}, value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(args) != 2 or args[1] is not Ellipsis:
            return False, value
        items = [_convert(args[0], v) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return False, value
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return False, value
        return True, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool), float(value) \
            if isinstance(value, int | float) and not isinstance(value, bool) else value
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"job parameters: unsupported field type {tp!r}")


@dataclass(frozen=True)
class JobKind:
    run: JobFn
    params_type: type[JobParams]
    check: CheckFn | None = None

    def parse(self, params: JobParams | Mapping[str, Any]) -> JobParams:
        """The kind's parameters from a dataclass (checked to be this kind's) or their JSON form."""
        if isinstance(params, JobParams):
            if not isinstance(params, self.params_type):
                raise InputError(None, f"{self.params_type.kind_label} jobs take {self.params_type.__name__}, "
                                       f"not {type(params).__name__}")
            return params
        return self.params_type.from_json(params)


KINDS: dict[str, JobKind] = {}
"""Job kind -> its job function, parameters type and check; filled by :func:`register_kind`."""


def register_kind(kind: str, run: JobFn, params_type: type[JobParams], *, check: CheckFn | None = None) -> None:
    """Add (or replace) a job kind: ``run(ctx, params: params_type, reporter) -> dict`` and the optional
    ``check(ctx, params: params_type) -> params_type``."""
    if not callable(run) or (check is not None and not callable(check)):
        raise TypeError(f"job kind {kind!r}: the job function and the check must be functions")
    if not (isinstance(params_type, type) and issubclass(params_type, JobParams)
            and dataclasses.is_dataclass(params_type)
            and params_type.__dataclass_params__.frozen):  # type: ignore[attr-defined]  # set by @dataclass
        raise TypeError(f"job kind {kind!r}: the parameters type must be a frozen dataclass subclassing JobParams")
    for field in dataclasses.fields(params_type):  # refuse unsupported field types at registration
        _check_supported(kind, field.name, typing.get_type_hints(params_type)[field.name])
    params_type.kind_label = kind
    KINDS[kind] = JobKind(run=run, params_type=params_type, check=check)


def _check_supported(kind: str, name: str, tp: Any) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for arg in args:
            _check_supported(kind, name, arg)
    elif origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"job kind {kind!r}: field {name!r} must be tuple[X, ...]")
        _check_supported(kind, name, args[0])
    elif origin not in (Literal, dict) and tp not in (int, float, str, bool, type(None), Any):
        raise TypeError(f"job kind {kind!r}: field {name!r} has unsupported type {tp!r}")


def kind_of(kind: str) -> JobKind:
    """The registered kind; ``InputError`` naming the known kinds otherwise."""
    if kind not in KINDS:
        raise InputError(None, f"unknown job kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[kind]
