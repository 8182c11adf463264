"""ExperimentConfig: TOML presets, overrides, strict keys and types, round trip."""

import glob
import tomllib
from pathlib import Path

import pytest

from spikeguard.config import (
    ExperimentConfig, config_from_dict, config_to_dict, config_to_toml, load_config, parse_value,
)
from spikeguard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_paper_settings():
    cfg = ExperimentConfig().validate()
    o = cfg.optim
    assert (o.lr, o.momentum, o.weight_decay, o.epochs, o.batch_size, o.schedule) == (0.1, 0.9, 5e-4, 300, 128, "cosine")
    assert cfg.neuron.decay == 0.5 and cfg.neuron.v_threshold == 1.0
    assert abs(cfg.neuron.sigma ** 2 - 0.4) < 1e-12
    assert abs(cfg.eval.eps - 8 / 255) < 1e-12


def test_toml_and_overrides(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('strategy = "tet"\n[model]\nname = "wrn16_4"\nT = 4\n[tgo]\nenabled = true\n'
                 '[strategy_kw]\nmse_weight = 0.05\n')
    cfg = load_config(p, ["tgo.lambda_max=0.3", "eval.eps=4/255", "eval.attacks=fgsm,pgd10",
                          "model.kw={width = 0.5}", "data.root=/some/where"])
    assert cfg.strategy == "tet" and cfg.strategy_kw == {"mse_weight": 0.05}
    assert cfg.model.name == "wrn16_4" and cfg.model.T == 4 and cfg.model.kw == {"width": 0.5}
    assert cfg.tgo.enabled and cfg.tgo.lambda_max == 0.3
    assert abs(cfg.eval.eps - 4 / 255) < 1e-12 and cfg.eval.attacks == ["fgsm", "pgd10"]
    assert cfg.data.root == "/some/where"  # bare strings need no quotes
    assert isinstance(cfg.tgo.lambda_max, float) and parse_value("3") == 3


def test_round_trip():
    cfg = load_config(None, ["model.name=wrn16_4", "neuron.kind=noisy_lif", "strategy_kw.mse_weight=0.1",
                             "eval.attacks=[\"fgsm\"]", "seed=7"])
    d = config_to_dict(cfg)
    assert config_from_dict(d) == cfg
    assert config_from_dict(tomllib.loads(config_to_toml(cfg))) == cfg


@pytest.mark.parametrize("override,match", [
    (["tgo.lamda_max=0.3"], r"tgo\.lamda_max.*did you mean tgo\.lambda_max"),
    (["optimizer.lr=0.1"], r"'optimizer'"),
    (["model.T=0"], r"model\.T"),
    (["model.T=2.5"], r"model\.T must be int"),
    (["model.T=\"8\""], r"model\.T must be int"),
    (["tgo.enabled=1"], r"tgo\.enabled must be bool"),
    (["eval.eps=0.5", "eval.eps=1.5"], r"eval\.eps"),
    (["neuron.kind=izhikevich"], r"neuron\.kind"),
    (["tgo.schedule=step"], r"tgo\.schedule"),
    (["model.name=resnet1000"], r"model\.name"),
    (["strategy=nope"], r"strategy"),
    (["tgo=1"], r"tgo must be a table"),
    (["format_version=99"], r"format_version"),
    (["noequals"], r"key=value"),
])
def test_errors_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, override)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_all_presets_load():
    files = sorted(glob.glob(str(ROOT / "configs" / "**" / "*.toml"), recursive=True))
    files = [f for f in files if "/studies/" not in f]  # study files, not presets (tests/test_study.py loads them)
    assert len(files) >= 10
    for f in files:
        cfg = load_config(f)
        assert cfg.optim.epochs >= 1, f
        if "/paper/" in f:
            assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.batch_size) == (0.1, 300, 128), f
            assert cfg.model.T == (8 if cfg.model.name == "vgg11" else 4), f
            tags = set(Path(f).stem.split("-"))
            assert bool(tags & {"tgo", "mc"}) == cfg.tgo.enabled, f  # TGO = MC + NLIF
            assert bool(tags & {"tgo", "nlif"}) == (cfg.neuron.kind == "noisy_lif"), f
