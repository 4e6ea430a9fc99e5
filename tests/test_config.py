"""Configuration: TOML < environment < options, with errors that name the key."""

from __future__ import annotations

import pytest

from pipeline.config import (
    Config,
    check_api_url,
    is_loopback_url,
    load_config,
    read_api_key,
)
from pipeline.errors import EXIT_USAGE, ConfigError


def _write(tmp_path, text):
    path = tmp_path / "gpucost.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_follow_design_thresholds():
    config = Config()
    assert config.thresholds.idle_threshold_pct == 5.0
    assert config.thresholds.drift_flag_pct == 15.0
    assert config.thresholds.hours_per_month == 720
    assert config.store.db == "gpucost.duckdb"


def test_file_then_env_then_options_override_each_other(tmp_path):
    path = _write(tmp_path, '[store]\ndb = "from-file.duckdb"\n[api]\nconcurrency = 4\n')
    assert load_config(path, env={}).store.db == "from-file.duckdb"
    assert load_config(path, env={}).api.concurrency == 4
    env = {"GPUCOST_DB": "from-env.duckdb"}
    assert load_config(path, env=env).store.db == "from-env.duckdb"
    opts = {"store": {"db": "from-option.duckdb"}}
    assert load_config(path, env=env, overrides=opts).store.db == "from-option.duckdb"


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = _write(tmp_path, "[api]\nconcurency = 4\n")
    with pytest.raises(ConfigError, match=r"api\.concurency") as info:
        load_config(path, env={})
    assert info.value.exit_code == EXIT_USAGE


def test_unknown_section_is_an_error_naming_it(tmp_path):
    path = _write(tmp_path, "[thresholdz]\nidle_threshold_pct = 4\n")
    with pytest.raises(ConfigError, match=r"\[thresholdz\]"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[api]\nconcurrency = "eight"\n', r"api\.concurrency must be an integer, got 'eight'"),
        ("[thresholds]\nidle_threshold_pct = true\n", r"thresholds\.idle_threshold_pct must be a"),
        ("[thresholds]\nidle_threshold_pct = 150\n", r"at most 100"),
        ("[api]\npage_size = 0\n", r"api\.page_size must be at least 1"),
        ("[api]\nparse_processes = -1\n", r"api\.parse_processes must be at least 0"),
        ("[store]\nsnapshot_memory_mb = 64\n", r"store\.snapshot_memory_mb must be at least 128"),
        ('[log]\nformat = "xml"\n', r"log\.format must be one of text, json"),
    ],
)
def test_wrong_type_or_range_is_an_error_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text), env={})


def test_integer_is_accepted_where_a_number_is_expected(tmp_path):
    config = load_config(_write(tmp_path, "[thresholds]\nidle_threshold_pct = 3\n"), env={})
    assert config.thresholds.idle_threshold_pct == 3.0


def test_invalid_toml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[api\n"), env={})


def test_missing_named_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_default_file_is_read_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, '[report]\nout_dir = "elsewhere"\n')
    assert load_config(env={}).report.out_dir == "elsewhere"


def test_api_key_in_a_config_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="GPUCOST_API_KEY"):
        load_config(_write(tmp_path, '[api]\napi_key = "secret"\n'), env={})


def test_api_key_comes_from_env_before_the_key_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n", encoding="utf-8")
    assert read_api_key(str(key_file), env={}) == "from-file"
    assert read_api_key(str(key_file), env={"GPUCOST_API_KEY": "from-env"}) == "from-env"
    assert read_api_key(None, env={}) is None


def test_empty_or_missing_key_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "key"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        read_api_key(str(empty), env={})
    with pytest.raises(ConfigError, match="cannot be read"):
        read_api_key(str(tmp_path / "missing"), env={})


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://localhost/v1", True),
        ("http://[::1]:9/v1", True),
        ("http://10.0.0.5/v1", False),
        ("https://api.example-gpu.cloud/v1", False),
    ],
)
def test_loopback_detection(url, loopback):
    assert is_loopback_url(url) is loopback


def test_plain_http_only_to_loopback_unless_allowed():
    assert check_api_url("http://127.0.0.1:1/v1/") == "http://127.0.0.1:1/v1"
    assert check_api_url("https://api.example-gpu.cloud/v1") == "https://api.example-gpu.cloud/v1"
    with pytest.raises(ConfigError, match="plain http"):
        check_api_url("http://api.example-gpu.cloud/v1")
    assert check_api_url("http://api.example-gpu.cloud/v1", allow_insecure_http=True)
    with pytest.raises(ConfigError, match="credentials"):
        check_api_url("https://user:pw@api.example-gpu.cloud/v1")
    with pytest.raises(ConfigError, match="no API URL"):
        check_api_url(None)
