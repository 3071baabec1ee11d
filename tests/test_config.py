"""Settings precedence: flags > TINYMORPH_* > config.toml > defaults; bad values are clear errors."""

import pytest

from collab.config import Settings, data_dir
from collab.exceptions import ConfigError


def test_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMORPH_DATA_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text('port = 9000\nauth_mode = "tokens"\nroom_grace_s = 5\n')
    s = Settings.load()
    assert (s.port, s.auth_mode, s.room_grace_s) == (9000, "tokens", 5.0)
    monkeypatch.setenv("TINYMORPH_PORT", "9100")
    monkeypatch.setenv("TINYMORPH_AUTO_CREATE_DOCS", "yes")
    s = Settings.load()
    assert (s.port, s.auto_create_docs) == (9100, True)
    assert Settings.load(port=9200, db=None).port == 9200  # None means "flag not given"
    assert Settings.load().database_url == f"sqlite:///{tmp_path / 'tinymorph.db'}"


def test_xdg_default(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYMORPH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert data_dir() == tmp_path / "tinymorph"


@pytest.mark.parametrize(
    "toml, env",
    [
        ('auth_mode = "everyone"', {}),
        ("colour = 1", {}),
        ("port = [", {}),
        ("", {"TINYMORPH_PORT": "eighty"}),
        ("", {"TINYMORPH_AUTO_CREATE_DOCS": "maybe"}),
    ],
)
def test_bad_settings(tmp_path, monkeypatch, toml, env):
    monkeypatch.setenv("TINYMORPH_DATA_DIR", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError):
        Settings.load()


def test_secret_is_generated_once_and_private(tmp_path):
    s = Settings(data_dir=tmp_path)
    secret = s.signing_secret()
    assert len(secret) > 40 and Settings(data_dir=tmp_path).signing_secret() == secret
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0
