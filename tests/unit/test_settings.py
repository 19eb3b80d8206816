"""Settings come from STREAMREC_* variables, and docs/configuration.md documents every one of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.harness.worker_process import settings_env
from streams.settings import Settings, env_var_names

CONFIGURATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("STREAMREC_K", "25")
    monkeypatch.setenv("STREAMREC_POLICY", "relevance")
    s = Settings()
    assert (s.kafka_bootstrap, s.k, s.policy) == ("broker-1:9092,broker-2:9092", 25, "relevance")


@pytest.mark.parametrize(("name", "value"), [("STREAMREC_K", "0"), ("STREAMREC_POLICY", "nope"),
                                             ("STREAMREC_MMR_LAMBDA", "1.5"),
                                             ("STREAMREC_CANDIDATES", "similar=10,bogus=3")])
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_env_reproduces_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(k=7, topic_events="ev", mmr_lambda=0.3)
    for key, value in settings_env(original).items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_configuration_doc_documents_every_variable() -> None:
    text = CONFIGURATION_DOC.read_text()
    missing = [name for name in env_var_names() if f"`{name}`" not in text]
    assert not missing, f"docs/configuration.md table lacks {missing}"
