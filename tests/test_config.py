import pytest

from dltrack.config import PROFILES, env_param, project_root


def test_project_root_holds_the_layout():
    root = project_root()
    for name in ["pyproject.toml", "notebooks", "src", "data", "Makefile"]:
        assert (root / name).exists(), name


def test_project_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DLTRACK_HOME", str(tmp_path))
    assert project_root() == tmp_path.resolve()


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        ("5", 10, 5),
        ("0.5", 1.0, 0.5),
        ("full", "small", "full"),
        ("yes", False, True),
        ("0", True, False),
    ],
)
def test_env_param_converts_to_the_default_type(monkeypatch, raw, default, expected):
    monkeypatch.setenv("DLTRACK_X", raw)
    value = env_param("DLTRACK_X", default)
    assert value == expected and type(value) is type(default)


def test_env_param_default_when_unset_or_empty(monkeypatch):
    monkeypatch.delenv("DLTRACK_X", raising=False)
    assert env_param("DLTRACK_X", 7) == 7
    monkeypatch.setenv("DLTRACK_X", "")
    assert env_param("DLTRACK_X", 7) == 7


def test_env_param_bad_value_names_variable(monkeypatch):
    monkeypatch.setenv("DLTRACK_EPOCHS", "ten")
    with pytest.raises(ValueError, match=r"DLTRACK_EPOCHS='ten' is not a valid int"):
        env_param("DLTRACK_EPOCHS", 10)


def test_env_param_checks_choices_from_the_environment_and_the_cell(monkeypatch):
    monkeypatch.setenv("DLTRACK_PROFILE", "course")
    assert env_param("DLTRACK_PROFILE", "default", choices=PROFILES) == "course"
    monkeypatch.setenv("DLTRACK_PROFILE", "Course")
    with pytest.raises(ValueError, match=r"DLTRACK_PROFILE='Course' is not one of \('default'"):
        env_param("DLTRACK_PROFILE", "default", choices=PROFILES)
    monkeypatch.delenv("DLTRACK_PROFILE")
    with pytest.raises(ValueError, match="is not one of"):  # a typo typed in the cell
        env_param("DLTRACK_PROFILE", "corse", choices=PROFILES)
