"""Ratings CSVs (good and bad), the `agreement` command in-process, and the benchmark command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import agreement
from medlabel.benchmarks import agreement as bench
from medlabel.commands.agreement import command
from medlabel.errors import InputError
from tests.agreement import data


def write(tmp_path: Path, text: str, name: str = "ratings.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def kripp_csv(tmp_path: Path) -> Path:
    lines = ["item,reader,label"] + [f"{i},{r},{lab}" for i, r, lab in data.from_wide(data.KRIPPENDORFF_2011)]
    return write(tmp_path, "\n".join(lines) + "\n")


@pytest.mark.parametrize(("text", "message"), [
    ("", "line 1: empty file; expected a header item,reader,label"),
    ("item,reader\n1,A\n", "line 1: missing column(s) label (header must include item,reader,label)"),
    ("item,reader,label\n", "line 1: no ratings after the header"),
    ("item,reader,label\n1,A,x\n1,B,x\n1,A,y\n", "line 4: reader 'A' rated item '1' again with a different label "
                                                 "('y'; line 2 says 'x')"),
    ("item,reader,label\n1,A,x\n,B,x\n", "line 3: empty item"),
    ("item,reader,label\n1,A,x\n2,B\n", "line 3: 2 field(s), expected at least 3"),
])
def test_bad_csv_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        agreement.read_ratings_csv(path)
    assert str(err.value) == f"{path}: {message}"


def test_csv_details(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffLabel,extra,Reader,Item\nx,1,A,1\nx,1,A,1\n,1,B,1\ny,1,B,1\n")
    assert agreement.read_ratings_csv(path) == [("1", "A", "x"), ("1", "B", "y")]
    with pytest.raises(InputError, match="line 5: label 'y' is not one of the given categories"):
        agreement.read_ratings_csv(path, categories=["x"])
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"item,reader,label\n1,A,\xff\n")
    with pytest.raises(InputError, match="not UTF-8"):
        agreement.read_ratings_csv(binary)
    with pytest.raises(InputError, match="no such file"):
        agreement.read_ratings_csv(tmp_path / "missing.csv")


def test_command_json_matches_published_values(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, [str(kripp_csv(tmp_path)), "--level", "ordinal", "--categories",
                                          "1,2,3,4,5", "--boot", "200", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert round(report["krippendorff_alpha"], 3) == 0.815
    assert round(report["fleiss_kappa"], 5) == 0.76117 and round(report["gwet_ac1"], 5) == 0.77544
    for key in ("n_items", "n_readers", "percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1",
                "gwet_ac2", "pairwise", "per_category", "fleiss_kappa_ci", "krippendorff_alpha_ci"):
        assert key in report
    assert "cohen_kappa" not in report
    assert set(report["pairwise"][0]) == {"reader_a", "reader_b", "n", "cohen_kappa"}


def test_command_json_keeps_full_double_precision(tmp_path: Path) -> None:
    # Fleiss (1971) publishes kappa = .430; the exact value is 0.43024452...: rounding the JSON to 6
    # decimals (0.430245) made it impossible to compare with published values to their 7 digits.
    lines = ["item,reader,label"] + [",".join(r) for r in data.from_rows(data.FLEISS_1971)]
    result = CliRunner().invoke(command, [str(write(tmp_path, "\n".join(lines) + "\n")), "--boot", "50", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    exact = agreement.fleiss_kappa(agreement.RatingTable.from_records(data.from_rows(data.FLEISS_1971)).counts())
    assert report["fleiss_kappa"] == exact.value  # the very double, not a rounded copy
    assert round(report["fleiss_kappa"], 7) == 0.4302445 and report["fleiss_kappa"] != round(report["fleiss_kappa"], 6)
    low, high = report["fleiss_kappa_ci"]
    assert exact.ci is not None and (low, high) == (float(exact.ci[0]), float(exact.ci[1]))


def test_command_two_readers_and_table(tmp_path: Path) -> None:
    categories, table = data.CONT3X3_ABSTRACTORS
    lines = ["item,reader,label"] + [",".join(r) for r in data.from_table(categories, table)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    result = CliRunner().invoke(command, [str(path), "--level", "ordinal", "--categories", ",".join(categories),
                                          "--json"])
    report = json.loads(result.output)
    assert round(report["cohen_kappa"], 3) == 0.796 and round(report["weighted_kappa_quadratic"], 3) == 0.892
    text = CliRunner().invoke(command, [str(path)]).output
    assert "cohen_kappa" in text and "0.796" in text and "first / second" in text


def test_command_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, [])
    assert result.exit_code == 2 and "RATINGS" in result.output
    path = write(tmp_path, "item,reader,label\n1,A,low\n1,B,high\n")
    result = CliRunner().invoke(command, [str(path), "--level", "interval", "--json"])
    assert isinstance(result.exception, InputError) and "numeric" in str(result.exception)


@pytest.mark.bench
def test_bench_command_small() -> None:
    result = CliRunner().invoke(bench.command, ["--items", "2000", "--readers", "3", "--n-boot", "50", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["items"] == 2000 and out["readers"] == 3 and out["seconds"] >= 0
