"""Property-based: generated documents with planted secrets of every family, nested at random
depths, in keys and in values, whole or as broken JSON: no planted secret survives redaction,
and redaction never raises on any JSON-like input."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from pipeline.redact import redact_document, redact_text

# Hypothesis keeps caches in ./.hypothesis by default: tests write only in temporary folders.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="gpucost-hypothesis-"))

UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
HEX = "0123456789abcdef"
# Noise is lower-case words: it can never contain a planted secret (which holds upper case
# or digits), so a secret found in the output was not redacted, not re-created by chance.
WORD = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
NOISE = st.lists(WORD, max_size=4).map(" ".join)


def _s(alphabet: str, size: int, extra: int = 12) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=size + extra)


def _valued(fmt: str) -> st.SearchStrategy[tuple[str, str]]:
    """A carrier text from `fmt` with `{v}` a generated secret value; (carrier, secret)."""
    return _s(ALNUM, 10).map(lambda b: "Q7" + b).map(lambda v: (fmt.format(v=v), v))


def _token(prefix: st.SearchStrategy[str], body: st.SearchStrategy[str]) -> st.SearchStrategy:
    return st.tuples(prefix, body).map(lambda pb: (pb[0] + pb[1],) * 2)


KV_NAMES = ["password", "DB_PASSWORD", "api_key", "apiKey", "token", "client_secret", "AUTH"]
SIGNED = [
    "sig",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "key",
    "code",
    "session",
    "token",
    "access_token",
]

FAMILIES: dict[str, st.SearchStrategy[tuple[str, str]]] = {
    "aws": _token(st.sampled_from(["AKIA", "ASIA", "AROA", "AIDA"]), _s(UPPER, 16, 0)),
    "github": _token(st.sampled_from(["ghp_", "gho_", "ghs_", "ghu_", "ghr_"]), _s(ALNUM, 36)),
    "github_pat": _token(st.just("github_pat_"), _s(ALNUM + "_", 40)),
    "slack": _token(st.sampled_from(["xoxb-", "xoxp-", "xoxa-", "xoxs-"]), _s(ALNUM + "-", 20)),
    "stripe": _token(st.sampled_from(["sk_live_", "rk_live_", "sk_test_"]), _s(ALNUM, 24)),
    "google": _token(st.just("AIza"), _s(ALNUM + "_-", 35, 0)),
    "openai": _token(st.sampled_from(["sk-", "sk-proj-", "sk-ant-"]), _s(ALNUM, 20)),
    "huggingface": _token(st.just("hf_"), _s(ALNUM, 30)),
    "gitlab": _token(st.just("glpat-"), _s(ALNUM, 20)),
    "npm": _token(st.just("npm_"), _s(ALNUM, 36)),
    "sendgrid": st.tuples(_s(ALNUM, 22, 0), _s(ALNUM, 43, 0)).map(
        lambda p: (f"SG.{p[0]}.{p[1]}",) * 2
    ),
    "twilio": _token(st.just("SK"), _s(HEX, 32, 0)),
    "jwt": st.tuples(_s(ALNUM, 12), _s(ALNUM, 20), _s(ALNUM + "_-", 20)).map(
        lambda p: (f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}",) * 2
    ),
    "pem": _s(ALNUM + "+/", 40).map(
        lambda b: (f"-----BEGIN RSA PRIVATE KEY-----\n{b}\n-----END RSA PRIVATE KEY-----", b)
    ),
    "bearer": _valued("Authorization: Bearer {v}"),
    "basic_auth_url": _valued("https://deploy:{v}@git.example.com/repo.git"),
    "connection_string": _valued("postgres://app:{v}@db.internal:5432/prod"),
    "dsn": _valued("Server=tcp:db;User ID=app;Password={v};Encrypt=yes"),
    "password_words": _valued("login with password {v} now"),
    "password_option": _valued("mysql --password {v} -h db"),
    "sshpass": _valued("sshpass -p {v} ssh root@host"),
    "key_value": st.tuples(st.sampled_from(KV_NAMES), st.sampled_from(["=", ": ", " = "])).flatmap(
        lambda ns: _valued(ns[0] + ns[1] + "{v}")
    ),
    "signed_url": st.sampled_from(SIGNED).flatmap(
        lambda p: _valued("https://store.example.com/o/x?a=1&" + p + "={v}&b=2")
    ),
}
SECRET = st.one_of(*FAMILIES.values())
SEPARATORS = st.sampled_from([" ", "\n", "\t", ", ", "; ", " | "])
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), NOISE)
NOISE_DOC = st.recursive(
    SCALAR,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(WORD, children, max_size=3),
    max_leaves=8,
)


@st.composite
def planted_documents(draw: st.DrawFn) -> tuple[Any, str]:
    """A JSON-like document with one planted secret, as a value or a key, at a random depth."""
    carrier, secret = draw(SECRET)
    sep = draw(SEPARATORS)
    text = sep.join(p for p in (draw(NOISE), carrier, draw(NOISE)) if p)
    node: Any = {text: draw(NOISE_DOC)} if draw(st.booleans()) else text
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.booleans()):
            siblings = draw(st.dictionaries(WORD, NOISE_DOC, max_size=2))
            node = {**siblings, draw(WORD) + "_x": node}
        else:
            node = [draw(NOISE_DOC), node, draw(NOISE_DOC)]
    return node, secret


# No example database: tests write only in temporary folders (it would be .hypothesis/ here).
PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@PROPERTY
@given(planted_documents())
def test_no_planted_secret_survives_document_redaction(planted: tuple[Any, str]) -> None:
    doc, secret = planted
    out = json.dumps(redact_document(doc), ensure_ascii=False)
    assert secret not in out


@PROPERTY
@given(planted_documents(), st.floats(0.0, 1.0))
def test_no_planted_secret_survives_in_a_broken_json_body(
    planted: tuple[Any, str], cut: float
) -> None:
    doc, secret = planted
    text = json.dumps({"success": True, "data": {"environment": {"x": doc}}}, ensure_ascii=False)
    broken = text[: int(len(text) * cut)] + text[int(len(text) * cut) :][:0]
    assert secret not in redact_text(broken)
    assert secret not in redact_text(text[:-1])  # cut just before the last brace


@PROPERTY
@given(SECRET, NOISE, NOISE, SEPARATORS)
def test_no_planted_secret_survives_in_a_log_line(
    planted: tuple[str, str], before: str, after: str, sep: str
) -> None:
    carrier, secret = planted
    assert secret not in redact_text(sep.join((before, carrier, after)))


JSON_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text()),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, database=None)
@given(JSON_ANY)
def test_redaction_never_raises_on_any_document(doc: Any) -> None:
    redact_document(doc)


@settings(max_examples=500, deadline=None, database=None)
@given(st.text())
def test_redaction_never_raises_on_any_text(text: str) -> None:
    out = redact_text(text)
    assert isinstance(out, str)
