"""Theoretical field boxes and the gradient-based effective receptive field."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cpm_nb.course import effective_field as E
from cpm_nb.model import architecture

SMALL = architecture.get_config("stage-experiment").replace(
    name="erf-test", input_size=64, stages=2, width=0.125)


def test_cell_centres_and_boxes():
    assert E.cell_center((0, 0)) == (3.5, 3.5)
    assert E.cell_center((2, 5)) == (19.5, 43.5)
    x0, x1, y0, y1 = E.field_box("stage-experiment", 1, (8, 8))
    assert (x1 - x0, y1 - y0) == (62, 62) and (x0 + x1) / 2 == 67.5


def test_which_cells_see_the_whole_crop():
    cfg = "stage-experiment"  # fields 62, 142, 222, 302, ... px on a 128-px crop
    assert E.share_seeing_crop(cfg, 1) == 0.0
    assert E.sees_whole_crop(cfg, 2, E.center_cell(cfg))  # 142 > 128: the centre does
    assert not E.sees_whole_crop(cfg, 2, (0, 0))  # a corner needs about 2 x 128
    assert not E.sees_whole_crop(cfg, 3, (0, 0))  # 222 < 2 x (128 - 3.5)
    assert E.share_seeing_crop(cfg, 4) == 1.0  # 302 > 249
    assert E.first_stage_seeing_crop(cfg, "center") == 2
    assert E.first_stage_seeing_crop(cfg) == 4
    # the article's network: 164, 404, 644, 884 px on 368 px
    assert E.first_stage_seeing_crop("source-article", "center") == 2
    assert E.first_stage_seeing_crop("source-article") == 4
    assert E.first_stage_seeing_crop(architecture.get_config(cfg).replace(stages=2)) is None


def test_mass_extent():
    erf = np.zeros((64, 64))
    erf[35, 35] = 1.0  # the centre pixel of cell (4, 4) is at 35.5: the 2x2 middle holds it
    assert E.mass_extent(erf, (4, 4)) == 2
    erf[:] = 0
    erf[20:52, 20:52] = 1.0  # a uniform 32x32 square around 35.5
    assert E.mass_extent(erf, (4, 4), fraction=1.0) == 32
    assert 26 <= E.mass_extent(erf, (4, 4), fraction=0.9) <= 32
    assert E.mass_extent(np.zeros((8, 8)), (0, 0)) == 0


@pytest.fixture(scope="module")
def small_model():
    from cpm_nb.model import cpm as M

    return M.build_cpm(SMALL, seed=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)


def test_erf_is_normalised_and_inside_the_theoretical_field(small_model, images):
    cell = E.center_cell(SMALL)
    erf1 = E.effective_receptive_field(small_model, images, 1, cell)
    assert erf1.shape == (64, 64) and erf1.min() >= 0
    assert erf1.sum() == pytest.approx(1.0, abs=1e-5)
    x0, x1, y0, y1 = E.field_box(SMALL, 1, cell)
    ys, xs = np.nonzero(erf1)
    assert ys.min() >= y0 and ys.max() <= y1 and xs.min() >= x0 and xs.max() <= x1
    assert E.mass_extent(erf1, cell) <= architecture.stage_receptive_fields(SMALL)[0]
    erf2 = E.effective_receptive_field(small_model, images, 2, cell)
    assert E.mass_extent(erf2, cell) >= E.mass_extent(erf1, cell)
    assert np.count_nonzero(erf2) > np.count_nonzero(erf1)


def test_erf_of_a_corner_cell_sits_in_the_corner(small_model, images):
    erf = E.effective_receptive_field(small_model, images, 1, (0, 0), batch_size=2)
    x0, x1, y0, y1 = E.field_box(SMALL, 1, (0, 0))
    ys, xs = np.nonzero(erf)
    assert ys.max() <= y1 and xs.max() <= x1
    with pytest.raises(ValueError):
        E.effective_receptive_field(small_model, images, 3)
    with pytest.raises(ValueError):
        E.effective_receptive_field(small_model, images, 1, (8, 0))


def test_same_field_under_jax(small_model, images, tmp_path):
    pytest.importorskip("jax")
    weights = tmp_path / "w.npz"
    np.savez(weights, *small_model.get_weights())
    expected = E.effective_receptive_field(small_model, images, 2, (1, 6))
    np.save(tmp_path / "x.npy", images)
    code = (
        "import numpy as np, keras; from cpm_nb.model import cpm as M; from cpm_nb.course import effective_field as E\n"
        "from cpm_nb.model import architecture\n"
        "assert keras.config.backend() == 'jax'\n"
        "cfg = architecture.get_config('stage-experiment').replace(\n"
        "    name='erf-test', input_size=64, stages=2, width=0.125)\n"
        "net = M.build_cpm(cfg, seed=0)\n"
        f"w = np.load({str(weights)!r}); net.set_weights([w[f'arr_{{i}}'] for i in "
        "range(len(w.files))])\n"
        f"erf = E.effective_receptive_field(net, np.load({str(tmp_path / 'x.npy')!r}), 2, (1, 6))\n"
        f"np.save({str(tmp_path / 'jax.npy')!r}, erf); print('ok')\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), expected, atol=1e-7)


def test_show_field_says_when_a_cell_ignores_the_input():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2)
    E.show_field(a, np.zeros((128, 128)), "stage-experiment", 6, (0, 0), vmax=1)
    erf = np.zeros((128, 128))
    erf[60:70, 60:70] = 1
    E.show_field(b, erf, "stage-experiment", 2, (8, 8), vmax=1)
    assert [t.get_text().startswith("no gradient") for t in a.texts] == [True]
    assert not b.texts
    plt.close(fig)


@pytest.mark.parametrize("stage,cell", [(1, (8, 8)), (3, (8, 8)), (6, (8, 8)), (6, (0, 0)),
                                        (4, (15, 0))])
def test_show_field_keeps_the_theoretical_field_inside_the_axes(stage, cell):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    E.show_field(ax, np.ones((128, 128)), "stage-experiment", stage, cell, vmax=1)
    x0, x1, y0, y1 = E.field_box("stage-experiment", stage, cell)
    (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
    assert left < min(x0, -0.5) and right > max(x1, 127.5)  # the field and the crop
    assert top < min(y0, -0.5) and bottom > max(y1, 127.5)  # y points down
    plt.close(fig)
