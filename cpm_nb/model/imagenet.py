"""ImageNet initialisation of the trunk, as in the paper: VGG-19's first ten convolutions.

CPM's trunk begins with VGG-19's layers up to ``conv4_2`` (:data:`VGG19_TRUNK` pairs them
with ``keras.applications.VGG19``'s ``block1_conv1`` ... ``block4_conv2``); the paper and the
released model started training from VGG-19's ImageNet weights.  :func:`init_trunk_from_vgg19`
copies them into a freshly built network of the full trunk at width 1 (``source-article``,
the ``gpu`` profile) and refuses any other trunk in one line.

**The input convention.**  A cpm-nb network takes RGB 0..255 and normalises it inside
(``x/256 - 0.5``); VGG-19 was trained on Caffe-style input, BGR with the ImageNet mean
subtracted and no scaling (``keras.applications.vgg19.preprocess_input``).  By default
(``match_input=True``) ``conv1_1`` is converted so that the network computes VGG-19's
features of the image it is given: its kernel is VGG-19's with the input channels reversed
(BGR -> RGB) and multiplied by 256, and its bias absorbs the mean,
``b' = b + sum W_rgb (128 - mean_rgb)``.  Exactly: for an RGB image ``x``, the output of
``conv<k>`` on ``x`` equals VGG-19's ``block<k>`` output on ``preprocess_input(x)`` at every
cell that the convolutions' zero padding does not reach (:func:`exact_border`: the two
models pad different values at the image border, 128 grey for cpm-nb and the mean colour
for VGG-19).  ``match_input=False`` copies every kernel unchanged, as the released Caffe
training did (its network saw ``x/256 - 0.5`` BGR through ImageNet's filters and adapted);
then the two convolution stacks agree everywhere when fed the same tensor directly.

``weights``: ``"imagenet"`` downloads VGG-19's ImageNet weights through
``keras.applications`` (80 MB, cached in ``~/.keras``; Colab can, an offline machine
cannot: then one line on stderr and the random initialisation stays); a path to a VGG-19
weights file (``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` or a Keras
``.weights.h5`` of ``VGG19(include_top=False)``); or a Keras model with VGG-19's layer names.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cpm_nb.core.errors import ModelError
from cpm_nb.model.architecture import FULL_TRUNK

VGG19_TRUNK = (  # (CPM layer, keras.applications.VGG19 layer)
    ("conv1_1", "block1_conv1"), ("conv1_2", "block1_conv2"),
    ("conv2_1", "block2_conv1"), ("conv2_2", "block2_conv2"),
    ("conv3_1", "block3_conv1"), ("conv3_2", "block3_conv2"),
    ("conv3_3", "block3_conv3"), ("conv3_4", "block3_conv4"),
    ("conv4_1", "block4_conv1"), ("conv4_2", "block4_conv2"),
)  # fmt: skip
# keras.applications' "caffe" preprocessing subtracts this ImageNet mean (here in RGB order)
IMAGENET_MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float64)
CPM_SCALE, CPM_GREY = 256.0, 128.0  # the network's normalize layer: x / 256 - 0.5


def check_trunk(model) -> None:
    """A :class:`ModelError` (one line) unless ``model`` has VGG-19's trunk: width 1 and
    every convolution of the full trunk."""
    from cpm_nb.model.network import ensure_cpm

    cfg = ensure_cpm(model, "the model to initialise from VGG-19").cpm_config
    if cfg.width != 1.0 or tuple(cfg.trunk) != FULL_TRUNK:
        raise ModelError(f"VGG-19's weights fit only the full trunk at width 1 (source-article, "
                         f"the gpu profile); {cfg.name} has width {cfg.width:g} and trunk "
                         f"{tuple(cfg.trunk)} (full: {FULL_TRUNK}): train it from random weights")


def vgg19(weights="imagenet"):
    """VGG-19 without its classifier: ``"imagenet"`` (download), a weights file, or a model
    (returned as it is).  Download failures propagate (see :func:`init_trunk_from_vgg19`)."""
    from cpm_nb.core.runtime import import_keras

    keras = import_keras()
    if not isinstance(weights, str | Path):
        return weights
    if weights == "imagenet":
        return keras.applications.VGG19(weights="imagenet", include_top=False)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(f"no VGG-19 weights file at {path}: give 'imagenet' or the file "
                         "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
    model = keras.applications.VGG19(weights=None, include_top=False)
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError) as err:
        raise ModelError(f"{path} holds no weights of VGG19(include_top=False) "
                         f"({' '.join(str(err).split())[:120]})") from None
    return model


def converted_trunk(vgg, match_input: bool = True) -> dict[str, list[np.ndarray]]:
    """``{CPM layer: [kernel, bias]}`` from a VGG-19 model; with ``match_input``, ``conv1_1``
    converted to cpm-nb's input (see the module docstring).  NumPy, float32."""
    out = {}
    for cpm_name, vgg_name in VGG19_TRUNK:
        try:
            kernel, bias = (np.asarray(w, np.float64) for w in vgg.get_layer(vgg_name).get_weights())
        except ValueError:
            raise ModelError(f"the VGG-19 model has no layer {vgg_name} with a kernel and a "
                             "bias: is it keras.applications.VGG19?") from None
        if match_input and cpm_name == "conv1_1":
            rgb = kernel[:, :, ::-1, :]  # VGG-19 reads BGR
            bias = bias + np.einsum("hwco,c->o", rgb, CPM_GREY - IMAGENET_MEAN_RGB)
            kernel = rgb * CPM_SCALE
        out[cpm_name] = [kernel.astype(np.float32), bias.astype(np.float32)]
    return out


def init_trunk_from_vgg19(model, weights="imagenet", match_input: bool = True) -> bool:
    """Copy VGG-19's ``block1_conv1`` ... ``block4_conv2`` into ``model``'s ``conv1_1`` ...
    ``conv4_2`` (a network from :func:`cpm_nb.model.cpm.build_cpm`, freshly built: the rest
    keeps its initialisation).  Returns True when copied; False when the ImageNet weights
    could not be downloaded, after one line on stderr (the trunk stays random).  A trunk
    that is not VGG-19's, or a bad weights file, is a :class:`ModelError`."""
    check_trunk(model)
    try:
        vgg = vgg19(weights)
    except ModelError:
        raise
    except Exception as err:  # keras' get_file raises a bare Exception when offline
        reason = " ".join(str(err).split()).rpartition(" -- ")[2][:160]  # past keras' URL
        print(f"ImageNet weights for VGG-19 could not be downloaded ({reason}); the trunk keeps "
              "its random initialisation (pass weights= a local "
              "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 to use them)",
              file=sys.stderr, flush=True)
        return False
    for name, (kernel, bias) in converted_trunk(vgg, match_input).items():
        layer = model.get_layer(name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [kernel.shape, bias.shape]:
            raise ModelError(f"{name} has weights of shapes {shapes}, VGG-19's "
                             f"{[kernel.shape, bias.shape]}: not VGG-19's trunk")
        layer.set_weights([kernel, bias])
    return True


def exact_border(layer: str) -> int:
    """Cells at each edge of ``layer``'s output (a trunk layer) that the convolutions' zero
    padding reaches: with ``match_input`` the two models agree inside this border."""
    from cpm_nb.model.architecture import TRUNK

    border = 0
    for name, kind, kernel, _ in TRUNK:
        border = border + kernel // 2 if kind == "conv" else -(-border // kernel)
        if name == layer:
            return border
    raise ModelError(f"{layer} is not a layer of the trunk")
