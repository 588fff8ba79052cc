"""deploy/env.example against the settings classes: no drift either way, and it works as a .env."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    ROOT,
    SETTINGS,
    env_file_entries,
    env_file_values,
    settings_classes,
    settings_modules,
)

# Variables compose reads itself (https://docs.docker.com/compose/environment-variables/).
COMPOSE_OWN = {"COMPOSE_PROFILES"}


def documented() -> set[str]:
    return {name for name, _, _ in env_file_entries(ENV_EXAMPLE)}


def test_settings_are_found_in_engine_and_both_adapters():
    """The settings scan sees engine.config and the Discord and Slack adapters' classes."""
    modules = settings_modules()
    assert "engine.config" in modules
    for adapter in ("bot.discord.config", "bot.slack.config"):
        if (ROOT / (adapter.replace(".", "/") + ".py")).exists():
            assert adapter in modules
    assert {"IMAGINE_DB_URL", "IMAGINE_RENDER_MODEL", "IMAGINE_OPS_PORT"} <= set(SETTINGS)


def test_every_example_variable_is_a_setting():
    """Each IMAGINE_* name in env.example is read by some settings class (no stale names)."""
    stale = sorted(n for n in documented() if n.startswith("IMAGINE_") and n not in SETTINGS)
    assert not stale, f"env.example documents variables no settings class reads: {stale}"


def test_every_setting_is_in_the_example():
    """Each field of every settings class is documented in env.example (no missing names)."""
    missing = sorted(set(SETTINGS) - documented())
    assert not missing, f"settings missing from deploy/env.example: {missing}"


def test_each_variable_is_documented_once():
    """No variable appears twice in env.example (the second would silently win)."""
    names = [name for name, _, _ in env_file_entries(ENV_EXAMPLE)]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_other_variables_are_the_compose_knobs():
    """Non-IMAGINE_ names in env.example are exactly the variables compose.yaml interpolates."""
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    knobs = {n for n in documented() if not n.startswith("IMAGINE_")}
    assert knobs - COMPOSE_OWN == {n for n in interpolated if not n.startswith("IMAGINE_")}


@pytest.fixture
def example_environment(monkeypatch) -> dict[str, str]:
    """The process environment as a container started with env.example as its env file sees it."""
    import os

    for name in list(os.environ):
        if name.startswith("IMAGINE_"):
            monkeypatch.delenv(name)
    values = {k: v for k, v in env_file_values(ENV_EXAMPLE).items() if k.startswith("IMAGINE_")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_example_loads_as_an_env_file(example_environment):
    """Every settings class accepts env.example's values as they stand (copying it is safe)."""
    for cls in settings_classes():
        cls()  # raises on a value its field cannot take (an empty on/off switch, say)


def test_example_values_are_the_defaults(example_environment, monkeypatch):
    """Each value in env.example is its field's default: the file means what it says."""
    built = {cls: cls() for cls in settings_classes()}
    for name in example_environment:
        monkeypatch.delenv(name)
    for cls, from_example in built.items():
        default = cls()
        differing = {field for field in cls.model_fields if getattr(from_example, field) != getattr(default, field)}
        assert not differing, f"{cls.__name__}: env.example differs from the default for {differing}"


def test_unset_lines_are_fields_without_a_plain_default():
    """Only fields whose empty value would not mean the default are left unset (#NAME=)."""
    for name, _, active in env_file_entries(ENV_EXAMPLE):
        if active or not name.startswith("IMAGINE_"):
            continue
        setting = SETTINGS[name]
        assert setting.cls.model_fields[setting.field].default is None, name
