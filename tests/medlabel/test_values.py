"""medlabel.values: the one parser of model references and the one reader of project and round settings."""

from __future__ import annotations

import datetime as dt

import pytest

from medlabel.errors import ConfigError, InputError
from medlabel.values import (
    DEFAULT_BATCH_SIZE,
    ActiveLearningSettings,
    ModelRef,
    ProjectSettings,
    RoundSettings,
    ref_of,
)


@pytest.mark.parametrize(("text", "name", "version"), [
    ("chest", "chest", None),
    ("chest:3", "chest", 3),
    ("  chest:12 ", "chest", 12),
    ("chest:", "chest", None),  # as before: an empty version means the newest
])
def test_model_ref_parses_name_and_version(text: str, name: str, version: int | None) -> None:
    ref = ModelRef.parse(text)
    assert (ref.name, ref.version) == (name, version)
    assert ModelRef.parse(str(ref)) == ref


@pytest.mark.parametrize(("text", "message"), [
    ("chest:v2", "the version after ':' must be a number"),
    ("chest:-1", "the version after ':' must be a number"),
    (":3", "give NAME or NAME:VERSION"),
    ("   ", "give NAME or NAME:VERSION"),
])
def test_a_malformed_model_ref_is_one_input_error(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ModelRef.parse(text)


def test_model_ref_text_and_title() -> None:
    assert ref_of("chest", 2) == str(ModelRef.of("chest", 2)) == "chest:2"
    assert ModelRef.of("chest", 2).title == "chest v2"
    assert ModelRef.parse("chest").matches("chest", 7) and not ModelRef.parse("chest:6").matches("chest", 7)


def test_project_settings_defaults_and_round_trip_keep_unknown_keys() -> None:
    empty = ProjectSettings.from_json(None)
    assert empty.model is None and empty.active_learning.batch_size == DEFAULT_BATCH_SIZE
    stored = {"model": "chest-al:4", "future": [1, 2],
              "active_learning": {"batch_size": 10, "retrain_every": 5, "model_name": "chest-al", "phase": "typical",
                                  "label_counts": {"normal": 3}, "later": True}}
    settings = ProjectSettings.from_json(stored)
    assert settings.model == ModelRef("chest-al", 4)
    assert settings.active_learning == ActiveLearningSettings(10, 5, "chest-al", "typical", {"normal": 3},
                                                              {"later": True})
    assert settings.to_json() == stored
    changed = settings.with_active_learning(batch_size=7).replace(model=ModelRef.of("chest-al", 5)).to_json()
    assert changed["model"] == "chest-al:5" and changed["active_learning"]["batch_size"] == 7
    assert changed["future"] == [1, 2]


@pytest.mark.parametrize(("stored", "message"), [
    ({"model": 3}, "model: expected NAME:VERSION"),
    ({"model": "chest:x"}, "must be a number"),
    ({"active_learning": []}, "active_learning: expected an object"),
    ({"active_learning": {"batch_size": 0}}, "batch_size: must be at least 1"),
    ({"active_learning": {"retrain_every": "often"}}, "retrain_every: expected a whole number"),
    ({"active_learning": {"batch_size": True}}, "batch_size: expected a whole number"),
])
def test_malformed_project_settings_name_the_key(stored: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProjectSettings.from_json(stored)


def test_round_settings_of_each_kind_round_trip() -> None:
    inter = {"fraction": 10, "readers": ["rad1", "rad2"], "arms": {"rad1": "assisted", "rad2": "blinded"},
             "explicit_items": True}
    assert RoundSettings.from_json(inter).to_json() == inter
    until = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    intra = RoundSettings(reader="rad1", washout_days=14, spacing=5, washout_until=until)
    assert intra.to_json() == {"reader": "rad1", "washout_days": 14, "spacing": 5,
                               "washout_until": "2026-01-02T03:04:00+00:00"}
    assert RoundSettings.from_json(intra.to_json()) == intra
    assert RoundSettings.from_json({}).spacing == 3 and RoundSettings.from_json(None).arms == {}


@pytest.mark.parametrize(("stored", "message"), [
    ({"washout_until": "soon"}, "washout_until: not a date and time"),
    ({"readers": "rad1"}, "readers: expected a list"),
    ({"spacing": -1}, "spacing: must be at least 0"),
    ({"arms": ["rad1"]}, "arms: expected an object"),
])
def test_malformed_round_settings_name_the_key(stored: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RoundSettings.from_json(stored)
