"""Tests for cpm_nb.model.cpm: named configurations, scaled variants, cost, receptive field,
centre map, the compiled predict function, the JAX backend, the CLI and the benchmark."""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cpm_nb.core import config
from cpm_nb.core.config import resolve_profile
from cpm_nb.model import architecture, inputs
from cpm_nb.model import cpm as model
from cpm_nb.model.receptive_field import receptive_field

REPO = Path(__file__).resolve().parents[1]

# The released CPM MPII model (pose_deploy_centerMap.prototxt), layer by layer:
# (name, kernel, in_channels, out_channels).  Written out by hand from the prototxt.
RELEASE_CONVS = (
    [("conv1_1", 3, 3, 64), ("conv1_2", 3, 64, 64), ("conv2_1", 3, 64, 128),
     ("conv2_2", 3, 128, 128), ("conv3_1", 3, 128, 256), ("conv3_2", 3, 256, 256),
     ("conv3_3", 3, 256, 256), ("conv3_4", 3, 256, 256), ("conv4_1", 3, 256, 512),
     ("conv4_2", 3, 512, 512), ("conv4_3_CPM", 3, 512, 256), ("conv4_4_CPM", 3, 256, 256),
     ("conv4_5_CPM", 3, 256, 256), ("conv4_6_CPM", 3, 256, 256), ("conv4_7_CPM", 3, 256, 128),
     ("conv5_1_CPM", 1, 128, 512), ("conv5_2_CPM", 1, 512, 15)]
    + [row for t in range(2, 7) for row in (
        (f"Mconv1_stage{t}", 7, 15 + 128 + 1, 128), (f"Mconv2_stage{t}", 7, 128, 128),
        (f"Mconv3_stage{t}", 7, 128, 128), (f"Mconv4_stage{t}", 7, 128, 128),
        (f"Mconv5_stage{t}", 7, 128, 128), (f"Mconv6_stage{t}", 1, 128, 128),
        (f"Mconv7_stage{t}", 1, 128, 15))]
)  # fmt: skip


@pytest.fixture(scope="module")
def keras():
    from cpm_nb.core.runtime import import_keras

    return import_keras()


@pytest.fixture(scope="module")
def release_model(keras):
    return model.build_cpm("cpm-mpii-release", seed=0)


@pytest.fixture(scope="module")
def fast_model(keras):
    return model.build_cpm(architecture.from_profile(resolve_profile("fast")), seed=0)


def small_center_config(**changes):
    """A tiny configuration with every feature on (centre map, background)."""
    base = architecture.from_profile(resolve_profile("fast"), base="cpm-mpii-release")
    return base.replace(**changes)


# --- named configurations ------------------------------------------------------------


def test_release_table_matches_the_prototxt_and_its_parameter_count():
    expected = sum(k * k * i * o + o for _, k, i, o in RELEASE_CONVS)
    assert expected == 29_852_058 == architecture.RELEASE_PARAMS
    convs = [r for r in architecture.architecture("cpm-mpii-release") if r.kind == "conv"]
    assert [(r.name, r.kernel, r.in_channels, r.channels) for r in convs] == RELEASE_CONVS
    assert architecture.count_params("cpm-mpii-release") == 29_852_058


def test_release_model_in_keras(release_model):
    m = release_model
    assert m.count_params() == 29_852_058
    assert [t.name for t in m.inputs] == ["image", "center_map"]
    assert [tuple(t.shape) for t in m.inputs] == [(None, 368, 368, 3), (None, 368, 368, 1)]
    assert [tuple(o.shape) for o in m.outputs] == [(None, 46, 46, 15)] * 6
    assert list(m.output_names) == architecture.get_config("cpm-mpii-release").output_names
    assert m.get_layer("pool_center_lower").output.shape == (None, 46, 46, 1)
    assert m.get_layer("concat_stage2").output.shape == (None, 46, 46, 15 + 128 + 1)
    # layer by layer: every convolution of the prototxt, with its exact parameter count
    for name, k, cin, cout in RELEASE_CONVS:
        layer = m.get_layer(name)
        assert tuple(layer.kernel.shape) == (k, k, cin, cout), name
        assert layer.count_params() == k * k * cin * cout + cout, name
    assert m.get_layer("conv5_2_CPM").activation.__name__ == "linear"
    assert m.get_layer("Mconv7_stage6").activation.__name__ == "linear"
    assert m.get_layer("Mconv6_stage6").activation.__name__ == "relu"


def test_source_article_model(keras):
    cfg = architecture.get_config("source-article")
    assert (cfg.input_size, cfg.stages, cfg.num_maps, cfg.center_map) == (368, 6, 16, False)
    m = model.build_cpm(cfg, seed=0)
    # release minus the centre-map channel and with 16 instead of 15 maps
    assert m.count_params() == architecture.count_params(cfg) == 29_853_216
    assert [t.name for t in m.inputs] == ["image"]
    assert [tuple(o.shape) for o in m.outputs] == [(None, 46, 46, 16)] * 6
    names = {layer.name for layer in m.layers}
    assert {n for n, *_ in RELEASE_CONVS} <= names
    assert {"pool1_stage1", "pool2_stage1", "pool3_stage1", "normalize"} <= names
    # every Keras layer has the analytic table's parameter count
    for row in architecture.architecture(cfg):
        assert m.get_layer(row.name).count_params() == row.params, row.name


def test_get_config_names_and_errors():
    assert architecture.get_config("gpu").replace(name="x") == architecture.get_config("source-article").replace(
        name="x")
    with pytest.raises(ValueError, match="source-article, cpm-mpii-release, stage-experiment, fast"):
        architecture.get_config("vgg")
    with pytest.raises(ValueError, match="multiple of 8"):
        architecture.CPMConfig(input_size=100)
    with pytest.raises(ValueError, match="odd"):
        architecture.CPMConfig(stage_kernel=4)


# --- scaled variants -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fast", "cpu", "gpu"])
def test_profile_variants_keep_the_structure(name):
    profile = config.resolve_profile(name)
    cfg = architecture.from_profile(profile)
    assert (cfg.input_size, cfg.stages, cfg.width) == (profile.input_size, profile.stages,
                                                      profile.width)
    rows = architecture.architecture(cfg)
    full = [r.name for r in architecture.architecture("source-article")]
    # same layers in the same order, cut after the profile's last stage
    assert [r.name for r in rows] == full[: len(rows)]
    assert rows[-1].name == cfg.output_names[-1]
    assert all(r.size == profile.map_size for r in rows if r.block.startswith("stage"))
    assert all(r.channels >= 8 for r in rows if r.kind == "conv")


def test_width_rounding():
    cfg = architecture.from_profile(resolve_profile("fast"))  # width 0.125
    assert [cfg.channels(c) for c in (64, 128, 256, 512)] == [8, 16, 32, 64]
    cfg = architecture.CPMConfig(width=0.3)
    assert [cfg.channels(c) for c in (64, 128, 512)] == [16, 40, 152]  # 19.2, 38.4, 153.6 to the nearest 8
    assert architecture.CPMConfig(width=0.01).channels(64) == 8  # min_channels
    assert architecture.from_profile(resolve_profile("cpu")).channels(128) == 32


def test_profile_model_runs(fast_model, keras):
    cfg = fast_model.cpm_config
    x = np.random.default_rng(0).integers(0, 256, (2, cfg.input_size, cfg.input_size, 3))
    out = fast_model(keras.ops.convert_to_tensor(x.astype("float32")))
    assert len(out) == cfg.stages == 2
    assert all(tuple(o.shape) == (2, cfg.map_size, cfg.map_size, 16) for o in out)
    assert fast_model.count_params() == architecture.count_params(cfg)


def test_options_background_center_kernel(keras):
    cfg = small_center_config(stages=3, stage_kernel=5)
    m = model.build_cpm(cfg, seed=1)
    assert m.count_params() == architecture.count_params(cfg)
    assert [tuple(o.shape) for o in m.outputs] == [(None, 8, 8, 15)] * 3
    assert m.get_layer("Mconv3_stage3").kernel.shape[:2] == (5, 5)
    cfg1 = architecture.CPMConfig(input_size=64, stages=1, width=0.125, background=True)
    m1 = model.build_cpm(cfg1)
    assert len(m1.outputs) == 1 and m1.outputs[0].shape == (None, 8, 8, 17)


def test_input_normalisation(fast_model, keras):
    probe = keras.Model(fast_model.input, fast_model.get_layer("normalize").output)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    x[0, 0, :3, 0] = [0.0, 128.0, 255.0]
    y = np.asarray(probe(x))
    np.testing.assert_allclose(y, x / 256 - 0.5, atol=1e-6)


def test_seeded_build_is_deterministic(keras):
    cfg = architecture.from_profile(resolve_profile("fast"))
    a = model.build_cpm(cfg, seed=3).get_layer("Mconv2_stage2").kernel
    b = model.build_cpm(cfg, seed=3).get_layer("Mconv2_stage2").kernel
    c = model.build_cpm(cfg, seed=4).get_layer("Mconv2_stage2").kernel
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    small = model.build_cpm(cfg, seed=3, kernel_initializer="glorot_uniform")
    limit = np.sqrt(6 / (7 * 7 * 16 + 7 * 7 * 16))
    assert np.abs(np.asarray(small.get_layer("Mconv2_stage2").kernel)).max() <= limit


# --- cost -------------------------------------------------------------------------------


def test_flops_formula_and_blocks():
    rows = {r.name: r for r in architecture.architecture("source-article")}
    assert rows["conv1_2"].flops == 2 * 3 * 3 * 64 * 64 * 368 * 368
    assert rows["Mconv1_stage2"].flops == 2 * 7 * 7 * (16 + 128) * 128 * 46 * 46
    total = architecture.flops_per_image("source-article")
    assert 176e9 < total < 178e9
    blocks = architecture.block_summary("source-article")
    assert [b["block"] for b in blocks] == ["trunk"] + [f"stage{t}" for t in range(1, 7)]
    assert sum(b["params"] for b in blocks) == architecture.count_params("source-article")
    assert sum(b["flops"] for b in blocks) == total
    assert blocks[0]["convs"] == 15 and blocks[2]["convs"] == 7
    # FLOPs scale with the input area and (roughly) the square of the width
    fast = architecture.flops_per_image("fast")
    assert fast < total * (64 / 368) ** 2 * 0.125**2 * 1.2


def test_flops_agree_with_tensorflow_profiler(fast_model):
    pytest.importorskip("tensorflow")
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    cfg = fast_model.cpm_config
    fn = tf.function(lambda x: fast_model(x))
    frozen = convert_variables_to_constants_v2(
        fn.get_concrete_function(tf.TensorSpec([1, cfg.input_size, cfg.input_size, 3])))
    opts = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    tf_flops = profile(frozen.graph, options=opts).total_float_ops
    ours = architecture.flops_per_image(cfg)
    # TensorFlow also counts bias adds, pooling and the input scaling: < 1 % more
    assert ours <= tf_flops <= ours * 1.01


# --- receptive field ---------------------------------------------------------------------


def test_receptive_field_per_stage():
    fields = architecture.stage_receptive_fields("source-article")
    assert fields == [164, 404, 644, 884, 1124, 1364]
    assert abs(fields[0] - architecture.PAPER_STAGE1_FIELD) <= 8  # the paper: ~160 px
    # each later stage adds five 7x7 convolutions at stride 8: 5 * 6 * 8 = 240 px
    assert np.all(np.diff(fields) == 240)
    cfg11 = architecture.get_config("source-article").replace(stage_kernel=11)
    assert np.all(np.diff(architecture.stage_receptive_fields(cfg11)) == 5 * 10 * 8)
    # the chain is what the notebook-01 calculator sees
    chain = architecture.receptive_field_chain("source-article", stage=1)
    assert chain[-1].name == "conv5_2_CPM" and receptive_field(chain) == 164
    rows = architecture.receptive_field_rows("fast")
    assert rows[-1].jump == 8 and rows[-1].name == "Mconv7_stage2"


def test_receptive_field_measured_with_a_gradient(keras):
    """Positive weights, no cancellation: the input region that reaches the centre cell
    is (up to max-pool argmax effects) the computed field."""
    for stage, computed in [(1, 164), (2, 404)]:
        measured = model.measure_receptive_field("source-article", stage=stage)
        assert computed - 8 <= measured <= computed, (stage, measured)


# --- centre map ---------------------------------------------------------------------------


def caffe_average_pool(x, kernel=9, stride=8):
    """Caffe's AVE pooling with pad 0 ('ceil' mode: the last window is clipped and
    averaged over its valid pixels)."""
    n = int(np.ceil((x.shape[0] - kernel) / stride)) + 1
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = x[i * stride: i * stride + kernel, j * stride: j * stride + kernel].mean()
    return out


def test_center_map():
    cm = inputs.center_map(368, sigma=21.0)
    assert cm.shape == (368, 368) and cm.dtype == np.float32
    np.testing.assert_allclose(cm, cm[::-1, ::-1], atol=1e-7)  # centred at (183.5, 183.5)
    assert cm.max() < 1.0 and cm[183, 183] == pytest.approx(np.exp(-0.5 / (2 * 21**2)), rel=1e-6)
    # one sigma away from the peak: exp(-1/2)
    off = inputs.center_map(101, sigma=10.0, center=(50, 50))
    assert off[50, 50] == 1.0 and off[50, 60] == pytest.approx(np.exp(-0.5), rel=1e-6)
    batch = inputs.center_maps(3, "cpm-mpii-release")
    assert batch.shape == (3, 368, 368, 1)


def test_pooled_center_map_is_caffe_ceil_mode(release_model, keras):
    cm = inputs.center_map(368, 21.0, center=(100.0, 300.0))
    probe = keras.Model(release_model.inputs[1], release_model.get_layer("pool_center_lower").output)
    pooled = np.asarray(probe(cm[None, :, :, None]))[0, :, :, 0]
    assert pooled.shape == (46, 46)  # padding "valid" would give 45
    np.testing.assert_allclose(pooled, caffe_average_pool(cm), atol=1e-6)


# --- inference ------------------------------------------------------------------------------


def test_predict_fn_matches_eager(fast_model, keras):
    from cpm_nb.model import network

    cfg = fast_model.cpm_config
    images = np.random.default_rng(1).integers(0, 256, (3, cfg.input_size, cfg.input_size, 3),
                                               dtype=np.uint8)
    eager = [np.asarray(o) for o in fast_model(images.astype(np.float32), training=False)]
    for jit in (False, True):
        predict = network.make_predict_fn(fast_model, jit_compile=jit)
        out = predict(images)
        assert [o.shape for o in out] == [(3, 8, 8, 16)] * 2
        for a, b in zip(out, eager):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        one = predict(images[:1])  # another batch size: same maps for the same image
        assert one[0].shape == (1, 8, 8, 16)
        np.testing.assert_allclose(one[-1][0], out[-1][0], rtol=1e-4, atol=1e-4)
    assert network.make_predict_fn(fast_model).compiled == "tf.function"  # CPU default
    with pytest.raises(ValueError, match=r"expected RGB images \[B, 64, 64, 3\]"):
        predict(images[0])


def test_predict_fn_adds_the_center_map(keras):
    from cpm_nb.model import network

    cfg = small_center_config()
    m = model.build_cpm(cfg, seed=0)
    images = np.full((2, 64, 64, 3), 128, np.uint8)
    out = network.make_predict_fn(m)(images)
    assert [o.shape for o in out] == [(2, 8, 8, 15)] * 2
    expected = m([images.astype(np.float32), inputs.center_maps(2, cfg)], training=False)
    np.testing.assert_allclose(out[-1], np.asarray(expected[-1]), rtol=1e-4, atol=1e-4)
    assert cfg.center_sigma == pytest.approx(21.0 * 64 / 368)


def test_the_model_describes_itself_when_saved(tmp_path, keras):
    """A saved CPM comes back from plain Keras (safe mode) as a CPM with its configuration --
    one no shape tells (a shallower trunk, 5x5 stage kernels) -- and the same maps."""
    from cpm_nb.model import network

    cfg = small_center_config(stage_kernel=5, trunk=(1, 2, 2, 3))
    m = model.build_cpm(cfg, seed=0)
    assert isinstance(m, network.CPM) and m.cpm_config == cfg
    path = tmp_path / "cpm.keras"
    m.save(path)
    with zipfile.ZipFile(path) as z:
        saved = json.loads(z.read("config.json"))
    assert saved["registered_name"] == "cpm_nb>CPM"
    assert saved["config"]["cpm_config"] == cfg.to_dict()
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, network.CPM) and loaded.cpm_config == cfg
    assert [v.path for v in loaded.weights] == [v.path for v in m.weights]  # checkpoint names
    images = np.zeros((1, 64, 64, 3), np.uint8)
    np.testing.assert_allclose(loaded.belief_maps(images)[1], m.belief_maps(images)[1],
                               atol=1e-5)
    assert network.load_keras(path).cpm_config == cfg


def test_a_plain_functional_model_becomes_a_cpm(tmp_path, keras):
    """What older versions saved: a plain functional model, wrapped with the configuration of
    its run folder (the same layers and weights), or refused when that does not fit."""
    from cpm_nb.core.errors import ModelError
    from cpm_nb.model import network

    cfg = architecture.get_config("fast")
    m = model.build_cpm(cfg, seed=0)
    plain = keras.Model(m.inputs[0], m.outputs, name="old")
    plain.save(tmp_path / "old.keras")
    loaded = network.load_keras(tmp_path / "old.keras")
    assert not isinstance(loaded, network.CPM)
    wrapped = network.load_keras(tmp_path / "old.keras", cfg)
    assert isinstance(wrapped, network.CPM) and wrapped.cpm_config == cfg
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), np.uint8)
    np.testing.assert_array_equal(wrapped.belief_maps(images)[-1], m.belief_maps(images)[-1])
    with pytest.raises(ModelError, match=r"stages 3 \(network: 2\)"):
        network.load_keras(tmp_path / "old.keras", cfg.replace(stages=3))
    with pytest.raises(ModelError, match="plain Keras model"):
        network.make_predict_fn(plain)


def test_many_models_predict_without_a_retracing_warning(keras):
    """Each new model is traced once; TensorFlow must not read that as retracing one function
    (the warning landed in notebook 05's stored output on CI and failed nbval)."""
    import logging

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the retracing warning is TensorFlow's")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        images = np.zeros((1, 64, 64, 3), np.uint8)
        for seed in range(7):
            model.build_cpm("fast", seed=seed).belief_maps(images)
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r.getMessage()]


# --- intermediate supervision --------------------------------------------------------------


def test_gradient_magnitudes_with_and_without_intermediate_supervision(keras):
    from cpm_nb.course import supervision

    cfg = architecture.from_profile(resolve_profile("fast")).replace(stages=3)
    m = model.build_cpm(cfg, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    targets = rng.uniform(0, 1, (2, 8, 8, 16)).astype(np.float32)
    with_is = supervision.conv_gradient_magnitudes(m, images, targets, intermediate=True)
    final = supervision.conv_gradient_magnitudes(m, images, targets, intermediate=False)
    assert list(with_is)[0] == "conv1_1" and list(with_is)[-1] == "Mconv7_stage3"
    # the last stage's layers do not feed the earlier losses: identical gradients
    for name in [n for n in with_is if n.endswith("stage3")]:
        assert with_is[name] == pytest.approx(final[name], rel=1e-5)
    # the stage-1 output layer only receives the final loss through two stages
    assert with_is["conv5_2_CPM"] != pytest.approx(final["conv5_2_CPM"], rel=1e-3)
    assert all(v > 0 for v in with_is.values())


# --- JAX backend ---------------------------------------------------------------------------

JAX_SCRIPT = """
import sys
import numpy as np
from cpm_nb.core.config import resolve_profile
from cpm_nb.course import supervision
from cpm_nb.model import architecture, inputs, network
from cpm_nb.model import cpm as model
from cpm_nb.core.runtime import import_keras
keras = import_keras()
assert keras.config.backend() == "jax", keras.config.backend()
cfg = architecture.from_profile(resolve_profile("fast"), base="cpm-mpii-release")
m = model.build_cpm(cfg, seed=0)
m.load_weights(sys.argv[1])
data = np.load(sys.argv[2])
predict = network.make_predict_fn(m)
out = predict(data["images"])
assert predict.compiled == "jax.jit", predict.compiled
eager = m([data["images"].astype("float32"), inputs.center_maps(2, cfg)])
for a, b, c in zip(out, eager, [data["stage1"], data["stage2"]]):
    np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)
g = supervision.conv_gradient_magnitudes(m, data["images"], data["targets"])
assert g["conv1_1"] > 0
print("JAX OK", [o.shape for o in out], m.count_params())
"""


def test_runs_under_the_jax_backend(tmp_path, keras):
    from cpm_nb.model import network

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install jax: the dev extra lists it)")
    cfg = small_center_config()
    m = model.build_cpm(cfg, seed=0)
    weights = tmp_path / "cpm.weights.h5"
    m.save_weights(weights)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    out = network.make_predict_fn(m, jit_compile=False)(images)
    data = tmp_path / "data.npz"
    np.savez(data, images=images, stage1=out[0], stage2=out[1],
             targets=rng.uniform(0, 1, (2, 8, 8, 15)).astype(np.float32))
    env = {**os.environ, "KERAS_BACKEND": "jax", "CPM_NB_PROFILE": "fast",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(weights), str(data)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"JAX OK [(2, 8, 8, 15), (2, 8, 8, 15)] {m.count_params()}" in proc.stdout


# --- import cost, CLI, benchmark --------------------------------------------------------------


def test_import_is_cheap():
    code = ("import sys, cpm_nb.model.cpm, cpm_nb.model.architecture as a; a.describe('source-article'); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.stdout.strip() == "False False", out.stderr


def test_cli_model(capsys, tmp_path):
    from cpm_nb.cli import app as cli

    assert cli.main(["model", "--config", "cpm-mpii-release"]) == 0
    text = capsys.readouterr().out
    assert "29,852,058" in text and "164 px, 404 px" in text
    out = tmp_path / "m.json"
    assert cli.main(["--profile", "fast", "model", "--json-out", str(out), "--layers"]) == 0
    info = json.loads(out.read_text())
    assert info["config"]["input_size"] == 64 and info["params"] == architecture.count_params("fast")
    assert info["receptive_field_per_stage"] == [164, 404]
    assert cli.main(["model", "--config", "nope"]) == 2
    assert "valid: source-article" in capsys.readouterr().err
    assert cli.main(["model", "--config", "fast", "--check", "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["check"]
    assert check == {"keras_params": architecture.count_params("fast"), "params_match": True,
                     "output_shapes_match": True}


def test_layer_table_text():
    text = architecture.format_layer_table("cpm-mpii-release")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["layer", "kind", "k/s"]
    assert any(line.startswith("pool_center_lower  avgpool    9/8") for line in lines)
    assert lines[-1].split()[:2] == ["total", "29,852,058"]


def test_benchmark_is_registered_and_runs_small(capsys):
    from cpm_nb import bench
    from cpm_nb.bench.model import bench_model

    assert bench.BENCHMARKS["model"][0] == "cpm_nb.bench.model:bench_model"
    result = bench_model(argparse.Namespace(quick=True, config="fast"))
    assert result["config"] == architecture.from_profile(resolve_profile("fast")).name
    for batch in ("1", "8"):
        timings = result["batches"][batch]
        assert set(timings) == {"eager", "tf.function", "tf.function+XLA"}
        assert all(t["per_s"] > 0 and t["gflops_per_s"] > 0 for t in timings.values())
    text = capsys.readouterr().out
    assert "x eager" in text and "(baseline)" in text
