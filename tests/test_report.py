"""Tests of 'spikeguard report': a self-contained HTML page, checked in headless Chromium if present."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from spikeguard.analysis.plotting import new_figure, save_figure
from spikeguard.analysis.report import build_report
from spikeguard.cli.main import main
from spikeguard.errors import DataError


def _png(path: Path) -> None:
    fig, axes = new_figure((2, 1.5), 60)
    axes[0, 0].plot([0, 1], [1, 0], color="red", linewidth=4)
    save_figure(fig, path)


@pytest.fixture()
def runs(tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "results.json").write_text(json.dumps({
        "config": {"delta": 0.5, "lambda_max": 0.4},
        "models": {"vanilla": {"clean": 0.97, "near_threshold": 0.29, "attacks": {"fgsm": {"8/255": 0.91, "16/255": 0.8}}},
                   "tgo": {"clean": 0.92, "near_threshold": 0.23, "attacks": {"fgsm": {"8/255": 0.87, "16/255": 0.73}}}}}))
    _png(demo / "potentials.png")
    train = tmp_path / "train"
    train.mkdir()
    (train / "config.json").write_text(json.dumps({"param_count": 123, "config": {
        "model": {"name": "small_conv", "T": 2}, "tgo": {"enabled": True, "lambda_max": 0.3}, "seed": 1}}))
    (train / "log.jsonl").write_text("\n".join(json.dumps({"epoch": e, "loss": 1 / e, "accuracy": 0.5 + e / 10,
                                                            "near_threshold": 0.3, "lam": 0.1 * e}) for e in (1, 2, 3)))
    (train / "results.json").write_text(json.dumps({"test_accuracy": 0.9123, "test_samples": 360}))
    an = tmp_path / "analysis"
    an.mkdir()
    (an / "membrane.json").write_text(json.dumps({
        "analysis": "membrane", "delta": 0.5, "baseline": "vanilla",
        "models": {"vanilla": {"near_threshold": 0.3, "layer_near_threshold": {"body.0": 0.31}, "num_potentials": 10},
                   "tgo": {"near_threshold": 0.18, "layer_near_threshold": {"body.0": 0.2}, "num_potentials": 10}},
        "reduction_vs_baseline": {"tgo": {"overall": 0.4, "layers": {"body.0": 0.35}}}}))
    (an / "flip.json").write_text(json.dumps({"analysis": "flip", "theory": {"sigmas": {"0.5": {
        "max_abs_error": 0.003, "max_z": 1.2}}}}))
    (an / "broken.json").write_text("{not json")
    sub = an / "figs"
    sub.mkdir()
    _png(sub / "extra.png")
    return [demo, train, an]


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v and not (v.startswith("data:") or v.startswith("#")):
                self.external.append(v)

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained(runs, tmp_path):
    out = build_report(runs, tmp_path / "r" / "report.html", title="My <runs>")
    doc = out.read_text(encoding="utf-8")
    p = _Collector()
    p.feed(doc)
    assert p.external == []  # nothing to fetch: opens from disk with no server
    # potentials.png, extra.png, the training curves and the eps-sweep figure (overview + demo section),
    # all as PNG data URIs
    assert len(p.imgs) == 5 and all(s.startswith("data:image/png;base64,") for s in p.imgs)
    for s in p.imgs:
        raw = base64.b64decode(s.split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(p.text)
    assert "My <runs>" in text  # title escaped, not injected
    for expected in ("97.00%", "73.00%", "91.23%", "40.00%", "tgo.lambda_max", "broken.json is not valid JSON",
                     "figs/extra.png", "max |MC - Phi|"):
        assert expected in text, expected


def test_report_reads_evaluations_in_sub_folders(runs, tmp_path):
    train = runs[1]
    for eps, acc in (("2/255", 0.4567), ("8/255", 0.1234)):
        ev = train / f"eval-{eps.split('/')[0]}"
        ev.mkdir()
        (ev / "robustness.json").write_text(json.dumps({
            "checkpoint": str(train), "command": "evaluate",
            "report": {"eps": eps, "clean": {"accuracy": 0.9}, "attacks": {"pgd10": {"accuracy": acc}}}}))
    journal = train / "evaluation" / ".evaluate-abc"  # an interrupted run's journal is not a result
    journal.mkdir(parents=True)
    (journal / "batch0.json").write_text(json.dumps({"eps": 0.1, "attacks": {"x": 0.99}}))
    out = build_report([train], tmp_path / "report.html")
    p = _Collector()
    p.feed(out.read_text(encoding="utf-8"))
    text = " ".join(p.text)
    for expected in ("45.67%", "12.34%", "eval-2/, eval-8/", "pgd10 @ 2/255", "pgd10 @ 8/255"):
        assert expected in text, expected
    assert "99.00%" not in text


def test_report_cli_and_errors(runs, tmp_path, capsys):
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 1000
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "x.html")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
    with pytest.raises(DataError):
        build_report([], tmp_path / "y.html")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium installed")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    out = build_report(runs, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--dump-dom", out.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Overview: accuracy of every model found" in dom.stdout and "91.23%" in dom.stdout
    r = subprocess.run(base + ["--window-size=1000,1400", f"--screenshot={shot}", out.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1000, 1400)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    # a rendered page (text, tables, the embedded figures), not a blank or error page
    assert colours is not None and len(colours) > 50
    assert re.search(r"data:image/png;base64,", dom.stdout)
