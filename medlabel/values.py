"""Typed domain values: what used to travel as "NAME:VERSION" strings and free JSON dicts.

- :class:`ModelRef`: a model version named by the user or stored in a project's settings. The one
  parser of the ``NAME`` / ``NAME:VERSION`` syntax, and the one place that writes it back.
- :class:`ProjectSettings` (with :class:`ActiveLearningSettings`): the one reader of the
  ``projects.settings`` JSON column, and the one writer (:meth:`ProjectSettings.to_json`).
- :class:`RoundSettings`: the one reader and writer of ``verification_rounds.settings``.

Readers validate: a stored value of the wrong type raises ``ConfigError`` naming the key, never a
``KeyError`` or ``TypeError`` deep inside a service. Keys this code does not know are kept as they are
(``extra``), so a newer version's settings survive a round trip through an older one.

The module sits at the bottom of the layers beside ``medlabel.errors``: plain data, no database, so
``db``, the pure packages, the services and the shells may all use it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medlabel.errors import ConfigError, InputError

DEFAULT_BATCH_SIZE = 20
DEFAULT_RETRAIN_EVERY = 0
DEFAULT_REREAD_SPACING = 3


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model version: ``name`` and ``version``; ``version=None`` means the newest active one."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``NAME`` or ``NAME:VERSION`` (blanks ignored; ``NAME:`` is ``NAME``); ``InputError`` when malformed."""
        name, sep, version = str(text).strip().partition(":")
        name = name.strip()
        if not name:
            raise InputError(None, f"model {text!r}: give NAME or NAME:VERSION")
        version = version.strip()
        if version and not version.isdigit():
            raise InputError(None, f"model {text!r}: the version after ':' must be a number")
        return cls(name, int(version) if version else None)

    @classmethod
    def of(cls, name: str, version: int) -> ModelRef:
        """The reference of a registered version (e.g. a ``ModelVersion`` row's name and version)."""
        return cls(name, int(version))

    def __str__(self) -> str:
        """``NAME:VERSION`` (``NAME`` alone for the newest version): what the CLI prints and settings store."""
        return self.name if self.version is None else f"{self.name}:{self.version}"

    @property
    def title(self) -> str:
        """``NAME vVERSION``, for people."""
        return self.name if self.version is None else f"{self.name} v{self.version}"

    def matches(self, name: str, version: int) -> bool:
        """Whether the registered version ``name``:``version`` is the one this reference names."""
        return self.name == name and (self.version is None or self.version == version)


def ref_of(name: str, version: int) -> str:
    """``NAME:VERSION`` of a registered version: the one builder of the string form."""
    return str(ModelRef.of(name, version))


def _int(where: str, value: Any, default: int, *, minimum: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{where}: expected a whole number, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}, got {number}")
    return number


def _number(where: str, value: Any) -> float | None:
    """A stored number as it was written (an int stays an int), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return value


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class ActiveLearningSettings:
    """``projects.settings["active_learning"]``."""

    batch_size: int = DEFAULT_BATCH_SIZE
    retrain_every: int = DEFAULT_RETRAIN_EVERY  # 0: retrain on demand only
    model_name: str | None = None  # retrained versions are registered under this project-specific name
    phase: str | None = None  # the adaptive strategy's current phase
    label_counts: Mapping[str, int] = field(default_factory=dict)  # labels seen at the last scoring
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("batch_size", "retrain_every", "model_name", "phase", "label_counts")

    @classmethod
    def from_json(cls, value: Any) -> ActiveLearningSettings:
        data = _mapping("project settings: active_learning", value)
        where = "project settings: active_learning."
        counts = _mapping(where + "label_counts", data.get("label_counts"))
        return cls(batch_size=_int(where + "batch_size", data.get("batch_size"), DEFAULT_BATCH_SIZE, minimum=1),
                   retrain_every=_int(where + "retrain_every", data.get("retrain_every"), DEFAULT_RETRAIN_EVERY),
                   model_name=None if data.get("model_name") in (None, "") else str(data["model_name"]),
                   phase=None if data.get("phase") is None else str(data["phase"]),
                   label_counts={str(k): _int(where + "label_counts", v, 0) for k, v in counts.items()},
                   extra={k: v for k, v in data.items() if k not in cls._KEYS})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["batch_size"] = self.batch_size
        out["retrain_every"] = self.retrain_every
        if self.model_name is not None:
            out["model_name"] = self.model_name
        if self.phase is not None:
            out["phase"] = self.phase
        if self.label_counts:
            out["label_counts"] = dict(self.label_counts)
        return out

    def replace(self, **changes: Any) -> ActiveLearningSettings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ProjectSettings:
    """``projects.settings``: the project's model and its active-learning settings."""

    model: ModelRef | None = None  # the version that scores the queue ("NAME:VERSION" in the JSON)
    active_learning: ActiveLearningSettings = field(default_factory=ActiveLearningSettings)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Any) -> ProjectSettings:
        """The settings stored in the column (``None`` or ``{}`` give the defaults)."""
        data = _mapping("project settings", value)
        model = data.get("model")
        if model not in (None, "") and not isinstance(model, str):
            raise ConfigError(f"project settings: model: expected NAME:VERSION, got {model!r}")
        try:
            ref = ModelRef.parse(model) if model else None
        except InputError as exc:
            raise ConfigError(f"project settings: {exc.reason}") from None
        return cls(model=ref, active_learning=ActiveLearningSettings.from_json(data.get("active_learning")),
                   extra={k: v for k, v in data.items() if k not in ("model", "active_learning")})

    def to_json(self) -> dict[str, Any]:
        """What the column stores."""
        out: dict[str, Any] = dict(self.extra)
        if self.model is not None:
            out["model"] = str(self.model)
        out["active_learning"] = self.active_learning.to_json()
        return out

    def replace(self, **changes: Any) -> ProjectSettings:
        return dataclasses.replace(self, **changes)

    def with_active_learning(self, **changes: Any) -> ProjectSettings:
        return dataclasses.replace(self, active_learning=self.active_learning.replace(**changes))


@dataclass(frozen=True)
class RoundSettings:
    """``verification_rounds.settings``: what each kind of round records about itself.

    Inter-reader rounds: ``fraction`` (percent sampled), ``readers``, ``explicit_items``; automation-bias
    rounds add ``arms`` (reader -> arm); intra-reader rounds: ``reader``, ``washout_days``,
    ``washout_until`` and ``spacing`` (other items between a re-read and the last one).
    """

    fraction: float | None = None
    readers: tuple[str, ...] = ()
    explicit_items: bool = False
    arms: Mapping[str, str] = field(default_factory=dict)
    reader: str | None = None
    washout_days: float | None = None
    washout_until: dt.datetime | None = None
    spacing: int = DEFAULT_REREAD_SPACING
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("fraction", "readers", "explicit_items", "arms", "reader", "washout_days", "washout_until", "spacing")

    @classmethod
    def from_json(cls, value: Any) -> RoundSettings:
        data = _mapping("round settings", value)
        fraction = data.get("fraction")
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, int | float | str)):
            raise ConfigError(f"round settings: fraction: expected a number, got {fraction!r}")
        readers = data.get("readers") or ()
        if not isinstance(readers, list | tuple):
            raise ConfigError(f"round settings: readers: expected a list, got {readers!r}")
        until = data.get("washout_until")
        try:
            washout_until = dt.datetime.fromisoformat(until) if until else None
        except (TypeError, ValueError):
            raise ConfigError(f"round settings: washout_until: not a date and time: {until!r}") from None
        return cls(fraction=fraction if fraction is None or isinstance(fraction, int | float) else float(fraction),
                   readers=tuple(str(r) for r in readers),
                   explicit_items=bool(data.get("explicit_items", False)),
                   arms={str(k): str(v) for k, v in _mapping("round settings: arms", data.get("arms")).items()},
                   reader=None if data.get("reader") is None else str(data["reader"]),
                   washout_days=_number("round settings: washout_days", data.get("washout_days")),
                   washout_until=washout_until,
                   spacing=_int("round settings: spacing", data.get("spacing"), DEFAULT_REREAD_SPACING),
                   extra={k: v for k, v in data.items() if k not in cls._KEYS})

    def to_json(self) -> dict[str, Any]:
        """What the column stores: only the keys that apply to the round."""
        out: dict[str, Any] = dict(self.extra)
        if self.fraction is not None:
            out["fraction"] = self.fraction
        if self.readers:
            out["readers"] = list(self.readers)
        if self.explicit_items:
            out["explicit_items"] = True
        if self.arms:
            out["arms"] = dict(self.arms)
        if self.reader is not None:
            out["reader"] = self.reader
            out["spacing"] = self.spacing
        if self.washout_days is not None:
            out["washout_days"] = self.washout_days
        if self.washout_until is not None:
            out["washout_until"] = self.washout_until.isoformat()
        return out
