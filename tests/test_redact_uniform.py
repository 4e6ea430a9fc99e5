"""The redaction walk's fast paths (issue 12) cannot let a secret through.

A long list of records that all have the same keys (a metrics window's points, their GPU
entries) is checked column by column, a numeric column by one `sum`, and strings seen clean are
remembered: every case below plants a secret where one of those shortcuts looks, and every
result must equal that of the plain walk (the shortcuts switched off)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import redact
from pipeline.redact import REDACTED, forget_secrets, redact_document, register_secret

CANARY = "CANARY-7f3a9c"


def _points(n: int = 40) -> list[dict[str, Any]]:
    # Every record has the same keys, as the simulator and real providers send them.
    return [
        {
            "timestamp": f"2026-11-20T{i % 24:02d}:00:00Z",
            "status": "running",
            "gpu_utilization": 50.5 + i,
            "memory_utilization": 20,
            "cost": "1.2000",
            "gpus": [
                {"gpu_id": str(g), "utilization": 12.5, "memory_used_gb": 1.0, "power_draw_w": 300}
                for g in range(4)
            ],
        }
        for i in range(n)
    ]


def _plain_walk(doc: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`redact_document` with the list check and the clean-string memory switched off."""
    with monkeypatch.context() as m:
        m.setattr(redact, "_RECORDS_MIN", 10**9)
        m.setattr(redact, "_CLEAN", set())
        m.setattr(redact, "_CLEAN_MAX", 0)
        return redact_document(doc)


def _both(doc: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    return redact_document(copy.deepcopy(doc)), _plain_walk(copy.deepcopy(doc), monkeypatch)


def _set(points: list[dict[str, Any]], path: tuple[Any, ...], value: Any) -> None:
    node: Any = points
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


# (where in the points, what is planted there, the secret that must go)
PLANTS = [
    ((17, "gpus", 2, "gpu_id"), "ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_abcdefghij"),
    ((5, "status"), "Bearer zzzzzz-token-42", "zzzzzz-token-42"),
    ((39, "cost"), "postgres://app:pg-pass-77@db/x", "pg-pass-77"),
    # a string in a numeric column: the column's `sum` must not wave it through
    ((23, "gpu_utilization"), f"99 {CANARY}-x", CANARY),
    ((23, "gpus", 1, "utilization"), f"{CANARY}-y", CANARY),
    ((3, "gpus", 0, "power_draw_w"), "sk-proj-1234567890abcdefXYZ", "sk-proj-1234567890"),
    # a None, then a secret, in a numeric column
    ((0, "memory_utilization"), None, None),
    ((30, "memory_utilization"), "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    # containers where numbers were
    ((8, "gpu_utilization"), {"password": "hunter55x"}, "hunter55x"),
    ((9, "gpus", 3, "memory_used_gb"), ["ok", "xoxb-123456789012-abcdefghij"], "xoxb-1234567"),
    ((11, "gpus"), [{"gpu_id": "0", "token": "plain-value-1"}], "plain-value-1"),
]


@pytest.mark.parametrize(("path", "value", "secret"), PLANTS, ids=[str(p[0]) for p in PLANTS])
def test_a_secret_planted_in_uniform_records_is_redacted(path, value, secret, monkeypatch) -> None:
    points = _points()
    _set(points, path, value)
    if path[0] == 30:  # with the None of the case before it
        _set(points, (0, "memory_utilization"), None)
    doc = {"metrics": {"historical": {"data_points": points}}}
    fast, plain = _both(doc, monkeypatch)
    assert fast == plain
    if secret is not None:
        assert secret not in json.dumps(fast)
        assert REDACTED in json.dumps(fast)


@pytest.mark.parametrize("key", ["api_key", "db_password", "ssh_key", "a_p_i_k_e_y", "environment"])
def test_a_secret_key_in_every_record_clears_its_values(key, monkeypatch) -> None:
    # The same keys in every record: the uniform path checks the first record's keys.
    points = _points()
    value: Any = {"variables": {"X": "plain-value-1"}} if key == "environment" else "plain-value-1"
    for p in points:
        p["gpus"][1][key] = copy.deepcopy(value)
    fast, plain = _both({"data_points": points}, monkeypatch)
    assert fast == plain
    assert "plain-value-1" not in json.dumps(fast)


def test_a_key_carrying_a_secret_in_every_record_is_renamed(monkeypatch) -> None:
    points = _points()
    for p in points:
        p["gpus"][1]["GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123"] = 1.0
    fast, plain = _both({"data_points": points}, monkeypatch)
    assert fast == plain
    assert "ghp_abcdefghij" not in json.dumps(fast)


def test_a_unicode_escaped_secret_key_in_the_raw_body_is_redacted(monkeypatch) -> None:
    # `\u0074oken` is `token` once parsed: the key is judged by its parsed text.
    body = json.dumps({"data_points": _points()})
    body = body.replace('"power_draw_w": 300', '"power_draw_w": 300, "\\u0074oken": "tkv-0001x"')
    fast, plain = _both(json.loads(body), monkeypatch)
    assert fast == plain
    assert "tkv-0001x" not in json.dumps(fast)
    # and escaped text inside a value
    body = json.dumps({"data_points": _points()}).replace(
        '"running"', '"\\u0067hp_abcdefghijklmnopqrstuvwxyz0123"', 1
    )
    assert "ghp_abcdefghij" not in json.dumps(redact_document(json.loads(body)))


def test_a_secret_registered_after_its_text_was_seen_clean_is_redacted() -> None:
    # The walk remembers strings it saw clean; registering a secret must forget them.
    secret = "RuntimeKey-55xq"
    points = _points()
    points[12]["status"] = secret
    points[13]["gpus"][2]["gpu_id"] = secret
    doc = {"name": secret, "data_points": points}
    assert json.dumps(redact_document(copy.deepcopy(doc))).count(secret) == 3  # not yet secret
    register_secret(secret)
    try:
        out = json.dumps(redact_document(copy.deepcopy(doc)))
        assert secret not in out
        assert out.count(REDACTED) == 3
    finally:
        forget_secrets()


def test_uniform_clean_records_are_left_exactly_as_they_were() -> None:
    points = _points()
    doc = redact_document({"data_points": copy.deepcopy(points)})
    assert doc["data_points"] == points


def test_numbers_that_sum_to_an_overflow_or_a_nan_are_still_plain(monkeypatch) -> None:
    points = _points()
    points[1]["gpu_utilization"] = 10**400  # OverflowError in a float sum
    points[2]["gpus"][0]["utilization"] = float("nan")
    points[3]["gpus"][1]["utilization"] = True
    fast, plain = _both({"data_points": points}, monkeypatch)
    assert fast == plain
    assert fast["data_points"][1]["gpu_utilization"] == 10**400


SECRETS = st.sampled_from(
    [
        "ghp_abcdefghijklmnopqrstuvwxyz0123",
        f"x{CANARY}y",
        "Bearer abcdefgh123",
        "https://u:pw12345@h/x",
        "AKIAIOSFODNN7EXAMPLE",
        "password=hunter22",
    ]
)
VALUES = st.one_of(
    st.floats(allow_nan=False),
    st.integers(-(10**30), 10**30),
    st.none(),
    st.booleans(),
    st.sampled_from(["running", "0", "2026-11-20T01:00:00Z", "1.2000"]),
    SECRETS,
    st.lists(SECRETS, max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.lists(
        st.sampled_from(["a", "status", "utilization", "token", "gpu_id", "note"]),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    rows=st.integers(16, 40),
    planted=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 3), VALUES), max_size=4),
)
def test_the_fast_paths_redact_exactly_as_the_plain_walk(keys, rows, planted) -> None:
    records = [{k: 1.5 for k in keys} for _ in range(rows)]
    for row, column, value in planted:
        records[row % rows][keys[column % len(keys)]] = value
    doc = {"data_points": [{"t": i, "gpus": records} for i in range(16)]}
    with pytest.MonkeyPatch.context() as m:
        fast, plain = _both(doc, m)
    assert fast == plain or json.dumps(fast, sort_keys=True) == json.dumps(plain, sort_keys=True)
    for secret in ("ghp_abcdef", CANARY, "abcdefgh123", "pw12345", "AKIAIOSFODNN7", "hunter22"):
        assert secret not in json.dumps(fast)


def test_a_string_checked_while_its_secret_is_registered_is_not_remembered_clean(
    monkeypatch,
) -> None:
    # A worker checks a string with the rule of before while another thread registers the
    # secret it holds: the string must not stay in the memory of clean strings.
    secret = "RaceKey-81zz"
    before = redact._SUSPECT

    class RegistersMidCheck:
        def search(self, text: str):
            register_secret(secret)  # lands between the check and the remembering
            return before.search(text)

    monkeypatch.setattr(redact, "_SUSPECT", RegistersMidCheck())
    try:
        assert redact._string_is_clean(f"job {secret}")  # the old rule's verdict
        assert f"job {secret}" not in redact._CLEAN
        monkeypatch.undo()  # the rule of before is back: register again, for real
        forget_secrets()
        register_secret(secret)
        doc = {"data_points": _points(), "note": f"job {secret}"}
        assert secret not in json.dumps(redact_document(doc))
    finally:
        forget_secrets()
