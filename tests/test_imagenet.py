"""The VGG-19 ImageNet trunk (cpm_nb.model.imagenet), tested with a seeded random VGG-19
(``VGG19(weights=None)``, non-zero biases) in place of the ImageNet download: after the copy,
the trunk's features equal VGG-19's block outputs.  What "equal" means is stated in each test:
through each model's own preprocessing on the cells the padding does not reach
(``match_input=True``), or everywhere when both convolution stacks get the same tensor
(``match_input=False``)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpm_nb.core.errors import ModelError
from cpm_nb.model import architecture, imagenet
from cpm_nb.model import cpm as M

REPO = Path(__file__).resolve().parents[1]
SIZE = 128  # conv4_2 is 16 x 16: 6 x 6 cells inside its 5-cell padding border
CONFIG = architecture.get_config("source-article").replace(name="vgg-test", input_size=SIZE,
                                                           stages=1)


@pytest.fixture(scope="module")
def keras():
    from cpm_nb.core.runtime import import_keras

    return import_keras()


@pytest.fixture(scope="module")
def vgg(keras):
    """VGG-19 with seeded random kernels and seeded non-zero biases (so the biases and the
    mean folded into conv1_1's are tested too)."""
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG19(weights=None, include_top=False,
                                     input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(0)
    for _, name in imagenet.VGG19_TRUNK:
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    return model


def images(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def outputs(keras, model, names, x):
    probe = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    return [np.asarray(y) for y in probe(x)]


def test_trunk_features_equal_vgg19_on_each_models_own_input(keras, vgg):
    """The default (``match_input=True``): the CPM fed an RGB image (normalised inside to
    x/256 - 0.5) and VGG-19 fed ``preprocess_input`` of the same image (BGR, mean
    subtracted) agree at every trunk layer on the cells the zero padding does not reach."""
    model = M.build_cpm(CONFIG, seed=1)
    after_trunk = [w.copy() for w in model.get_layer("conv4_3_CPM").get_weights()]
    assert imagenet.init_trunk_from_vgg19(model, vgg) is True
    for name, vgg_name in imagenet.VGG19_TRUNK[1:]:  # copied unchanged
        for ours, theirs in zip(model.get_layer(name).get_weights(),
                                vgg.get_layer(vgg_name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    for ours, before in zip(model.get_layer("conv4_3_CPM").get_weights(), after_trunk):
        np.testing.assert_array_equal(ours, before)  # the CPM layers keep their init

    x = images()
    cpm_names, vgg_names = zip(*imagenet.VGG19_TRUNK)
    ours = outputs(keras, model, cpm_names, x)
    theirs = outputs(keras, vgg, vgg_names,
                     keras.applications.vgg19.preprocess_input(x.copy()))
    report = []
    for name, a, b in zip(cpm_names, ours, theirs):
        k = imagenet.exact_border(name)
        inner = (slice(None), slice(k, a.shape[1] - k), slice(k, a.shape[2] - k))
        scale = float(np.max(np.abs(b[inner])))
        assert scale > 0 and a[inner].size > 0
        error = float(np.max(np.abs(a[inner] - b[inner]))) / scale
        border = float(np.max(np.abs(a - b))) / scale
        report.append(f"{name}: border {k}, interior error {error:.1e}, with border {border:.1e}")
        assert error < 1e-5, report[-1]
    assert border > 1e-3  # the padding does differ at the edge: hence the interior
    print("\n" + "\n".join(report))


def test_unchanged_copy_equals_vgg19s_conv_stack_fed_the_same_tensor(keras, vgg):
    """``match_input=False`` (the release's way): kernels copied unchanged, and the two
    convolution stacks fed one tensor directly (no preprocessing) agree everywhere."""
    model = M.build_cpm(CONFIG, seed=1)
    assert imagenet.init_trunk_from_vgg19(model, vgg, match_input=False) is True
    vgg_layers = dict(imagenet.VGG19_TRUNK) | {f"pool{i}_stage1": f"block{i}_pool"
                                               for i in (1, 2, 3)}
    ours = theirs = np.random.default_rng(1).normal(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    for name, *_ in architecture.TRUNK[:13]:  # conv1_1 ... conv4_2
        ours = np.asarray(model.get_layer(name)(ours))
        theirs = np.asarray(vgg.get_layer(vgg_layers[name])(theirs))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.max(np.abs(theirs)),
                                   err_msg=name)
    assert name == "conv4_2" and ours.shape == (2, SIZE // 8, SIZE // 8, 512)


def test_conv1_1_conversion_written_out(vgg):
    """The NumPy reference of the converted first layer: on any pixel patch, kernel' .
    (x/256 - 0.5) + b' equals kernel . (BGR(x) - mean) + b."""
    (kernel, bias), = [vgg.get_layer("block1_conv1").get_weights()]
    new_kernel, new_bias = imagenet.converted_trunk(vgg)["conv1_1"]
    patch = np.random.default_rng(2).uniform(0, 255, (3, 3, 3))  # RGB
    caffe = patch[:, :, ::-1] - imagenet.IMAGENET_MEAN_RGB[::-1]  # preprocess_input
    expected = np.einsum("hwc,hwco->o", caffe, kernel.astype(np.float64)) + bias
    got = np.einsum("hwc,hwco->o", patch / 256 - 0.5, new_kernel.astype(np.float64)) + new_bias
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_weights_from_a_file(keras, vgg, tmp_path):
    path = tmp_path / "vgg19_notop.weights.h5"
    vgg.save_weights(path)
    model = M.build_cpm(CONFIG, seed=1)
    assert imagenet.init_trunk_from_vgg19(model, path) is True
    expected = imagenet.converted_trunk(vgg)
    for name, weights in expected.items():
        for ours, theirs in zip(model.get_layer(name).get_weights(), weights):
            np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ModelError, match="no VGG-19 weights file at"):
        imagenet.init_trunk_from_vgg19(model, tmp_path / "missing.h5")


@pytest.mark.parametrize("config, trunk", [("fast", "width 0.125"),
                                           ("stage-experiment", "trunk (1, 1, 2, 2)")])
def test_another_trunk_is_refused_in_one_line(keras, vgg, config, trunk):
    cfg = architecture.get_config(config).replace(stages=1)
    if config == "stage-experiment":
        cfg = cfg.replace(width=1.0)  # width 1, but the shallower trunk
    model = M.build_cpm(cfg, seed=1)
    with pytest.raises(ModelError) as err:
        imagenet.init_trunk_from_vgg19(model, vgg)
    message = str(err.value)
    assert "\n" not in message and trunk in message and "train it from random weights" in message


OFFLINE = """
import sys, numpy as np
from cpm_nb.model import architecture, imagenet
from cpm_nb.model import cpm as M
cfg = architecture.get_config("source-article").replace(input_size=64, stages=1)
model, fresh = M.build_cpm(cfg, seed=3), M.build_cpm(cfg, seed=3)
copied = imagenet.init_trunk_from_vgg19(model)  # weights="imagenet"
same = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), fresh.get_weights()))
print("copied", copied, "random init kept", same)
"""


def test_offline_imagenet_is_one_line_and_random_init(tmp_path):
    """No network: an empty Keras cache and a proxy that refuses every connection. The
    download fails, one line says so, the trunk keeps its random initialisation."""
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "NO_PROXY": "", "no_proxy": ""}
    done = subprocess.run([sys.executable, "-c", OFFLINE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "copied False random init kept True"
    lines = [x for x in done.stderr.splitlines() if "VGG-19" in x]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("ImageNet weights for VGG-19 could not be downloaded (")
    assert lines[0].endswith("the trunk keeps its random initialisation (pass weights= a local "
                             "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 to use them)")
    print(f"\n{lines[0]}")
