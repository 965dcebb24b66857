import pytest

from firmware_bridge.typed_yaml import ConfigError
from robot_sac.cli import main
from robot_sac.config import TrainConfig, load_run_config, load_train_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env: Pendulum-v1\ntotal_steps: 1e4\nsac:\n  utd: 2\n  actor_hidden: [64, 64]\n")
    cfg = load_train_config(path, ["sac.gamma=0.95", "sac.critic_layer_norm=true"], seed=7, total_steps=None)
    assert isinstance(cfg, TrainConfig)
    assert cfg.total_steps == 10_000 and isinstance(cfg.total_steps, int)
    assert cfg.seed == 7 and cfg.sac.utd == 2 and cfg.sac.actor_hidden == (64, 64)
    assert cfg.sac.gamma == 0.95 and cfg.sac.critic_layer_norm is True


def test_unknown_key_is_named_with_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sac:\n  gama: 0.9\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: sac\.gama: unknown key for SACConfig"):
        load_train_config(path)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_starts: 5.5e3\n")
    with pytest.raises(ConfigError, match="learning_starts: expected an integer, got 5500.5|learning_starts"):
        load_train_config(path, ["learning_starts=5000.5"])
    with pytest.raises(ConfigError, match="sac.critic_layer_norm: expected true or false"):
        load_train_config(None, ["sac.critic_layer_norm=3"])


def test_cli_reports_a_bad_config_key_and_exits_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("total_stepz: 10\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "total_stepz: unknown key for TrainConfig" in capsys.readouterr().err


def test_an_override_that_is_not_yaml_names_its_key():
    with pytest.raises(ConfigError, match=r"--set sac\.utd: value '\[1' is not valid YAML"):
        load_train_config(None, ["sac.utd=[1"])


def test_a_run_written_before_the_simultaneous_update_resumes_in_its_own_order(tmp_path):
    (tmp_path / "config.yaml").write_text("env: Pendulum-v1\nsac:\n  utd: 1\n")
    assert load_run_config(tmp_path).sac.simultaneous_update is False
    (tmp_path / "config.yaml").write_text("env: Pendulum-v1\nsac:\n  simultaneous_update: true\n")
    assert load_run_config(tmp_path).sac.simultaneous_update is True
    (tmp_path / "config.yaml").write_text("env: Pendulum-v1\nsac:\n  gama: 0.9\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: sac\.gama: unknown key"):
        load_run_config(tmp_path)
