"""Widgets' static fallback, figure saving, seeding and the quiet import."""

import numpy as np

from cpm_nb.core import paths, runtime
from cpm_nb.course import viz
from cpm_nb.course.widgets import Choice, Slider, explore, static_settings


def test_static_settings_are_the_product_of_presets():
    controls = {"k": Choice(("a", "b", "c"), static=("a", "c")),
                "s": Slider(1, 9, 1, 3, static=(1, 9)), "p": Choice((1, 2), value=2)}
    assert static_settings(controls) == [
        {"k": "a", "s": 1, "p": 2}, {"k": "a", "s": 9, "p": 2},
        {"k": "c", "s": 1, "p": 2}, {"k": "c", "s": 9, "p": 2}]


def test_explore_static_calls_render_for_each_setting(monkeypatch):
    monkeypatch.setenv(runtime.STATIC_ENV, "1")
    seen = []
    explore(lambda sigma, joint: seen.append((sigma, joint)),
            sigma=Slider(1.0, 8.0, 0.5, 2.0, static=(1.0, 4.0)), joint=Choice(("head", "knee")))
    assert seen == [(1.0, "head"), (4.0, "head")]


def test_save_figure_goes_to_env_folder(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path))
    fig, ax = plt.subplots()
    viz.draw_skeleton(ax, np.random.default_rng(0).uniform(0, 10, (16, 2)))
    path = viz.save_figure(fig, "demo")
    plt.close(fig)
    assert path == tmp_path / "demo.png" and path.stat().st_size > 1000


def test_seed_everything_is_repeatable():
    import keras

    runtime.seed_everything(7)
    a = (np.random.rand(3), keras.random.uniform((3,)).numpy())
    runtime.seed_everything(7)
    b = (np.random.rand(3), keras.random.uniform((3,)).numpy())
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_setup_prints_environment_and_gpu_hint(capsys):
    import cpm_nb

    profile = cpm_nb.setup(seed=0, wants_gpu=True)
    out = capsys.readouterr().out
    assert f"profile: {profile.name}" in out and "Keras backend" in out
    from cpm_nb.core import runtime as rt

    if rt.gpu_available():  # on a GPU machine there is no hint to give
        assert "Runtime > Change runtime type" not in out
    else:
        assert "Runtime > Change runtime type" in out


def test_setup_draws_figures_for_the_screen():
    import matplotlib as mpl

    import cpm_nb

    cpm_nb.setup(seed=0, verbose=False)
    assert mpl.rcParams["figure.dpi"] >= 100 and mpl.rcParams["savefig.dpi"] >= 100
