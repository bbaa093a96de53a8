"""Typed job parameters (``services.jobs.kinds.JobParams``): one frozen dataclass per kind, validated
from the JSON a job row stores, refused with a one-line reason naming the kind and the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from medlabel.errors import InputError
from services.jobs.kinds import KINDS, JobParams, kind_of, register_kind


@dataclass(frozen=True)
class SampleParams(JobParams):
    project_id: int
    paths: tuple[str, ...]
    mode: Literal["shift", "remove"] = "shift"
    limit: int | None = None
    ratio: float = 0.5
    flag: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def run_sample(ctx: Any, params: SampleParams, reporter: Any) -> dict[str, Any]:
    return {}


register_kind("test_params_sample", run_sample, SampleParams)


def test_json_round_trip_gives_back_the_same_parameters() -> None:
    params = SampleParams(project_id=3, paths=("a", "b"), mode="remove", limit=None, ratio=2.0, flag=True,
                          extra={"k": [1, 2]})
    stored = params.to_json()
    assert stored == {"project_id": 3, "paths": ["a", "b"], "mode": "remove", "limit": None, "ratio": 2.0,
                      "flag": True, "extra": {"k": [1, 2]}}
    assert SampleParams.from_json(stored) == params
    assert kind_of("test_params_sample").parse(stored) == params
    assert kind_of("test_params_sample").parse(params) is params


def test_defaults_fill_what_the_json_leaves_out_and_an_integer_is_a_float() -> None:
    params = SampleParams.from_json({"project_id": 1, "paths": [], "ratio": 1})
    assert params == SampleParams(project_id=1, paths=(), ratio=1.0)
    assert isinstance(params.ratio, float)


@pytest.mark.parametrize(("raw", "message"), [
    ({"paths": []}, "missing test_params_sample parameter(s): project_id"),
    ({"project_id": 1, "paths": [], "pahts": []}, "unknown test_params_sample parameter(s): pahts"),
    ({"project_id": "Chest", "paths": []}, "'project_id' must be an integer, got 'Chest'"),
    ({"project_id": True, "paths": []}, "'project_id' must be an integer, got True"),
    ({"project_id": 1, "paths": "a"}, "'paths' must be a list of strings"),
    ({"project_id": 1, "paths": ["a", 2]}, "'paths' must be a list of strings"),
    ({"project_id": 1, "paths": [], "mode": "keep"}, "'mode' must be 'shift' or 'remove', got 'keep'"),
    ({"project_id": 1, "paths": [], "limit": 1.5}, "'limit' must be an integer or null"),
    ({"project_id": 1, "paths": [], "flag": 1}, "'flag' must be true or false"),
    ({"project_id": 1, "paths": [], "extra": [1]}, "'extra' must be a JSON object"),
    (["project_id"], "test_params_sample parameters must be a JSON object"),
])
def test_bad_json_is_refused_with_one_line_naming_the_kind_and_field(raw: Any, message: str) -> None:
    with pytest.raises(InputError) as caught:
        kind_of("test_params_sample").parse(raw)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_long_bad_value_is_shortened_in_the_message() -> None:
    with pytest.raises(InputError) as caught:
        SampleParams.from_json({"project_id": "x" * 500, "paths": []})
    assert len(str(caught.value)) < 200


def test_another_kinds_dataclass_is_refused() -> None:
    @dataclass(frozen=True)
    class OtherParams(JobParams):
        n: int

    with pytest.raises(InputError, match="test_params_sample jobs take SampleParams, not OtherParams"):
        kind_of("test_params_sample").parse(OtherParams(n=1))


def test_registration_refuses_what_the_json_cannot_carry() -> None:
    @dataclass(frozen=True)
    class WithSet(JobParams):
        items: set[int]

    @dataclass(frozen=True)
    class WithPair(JobParams):
        pair: tuple[int, int]

    for bad in (WithSet, WithPair, dict):
        with pytest.raises(TypeError):
            register_kind("test_params_bad", run_sample, bad)  # type: ignore[arg-type]  # dict is refused on purpose
    assert "test_params_bad" not in KINDS
