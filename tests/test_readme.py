"""The README is the user's door: keep its configuration table true."""

from pathlib import Path

from app.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [
        f"PHONE_DET_{name.upper()}"
        for name in Settings.model_fields
        if f"`PHONE_DET_{name.upper()}`" not in README
    ]
    assert missing == []


def test_readme_gives_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README
