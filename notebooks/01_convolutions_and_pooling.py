# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,colab,accelerator
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Convolutions and pooling
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cpm-nb/cpm-nb/blob/v0.1.0/notebooks/01_convolutions_and_pooling.ipynb)
#
# **What you will learn**
#
# * what a 2-D convolution computes, written in NumPy and checked against TensorFlow;
# * stride, padding and the output-size formula;
# * hand-made kernels (Sobel, blur) and that a network *learns* such kernels by itself;
# * max pooling: what it keeps, how much translation it absorbs, what it saves;
# * why a fully connected layer is a 1x1 convolution;
# * the receptive field, computed and measured.
#
# Everything here is a building block of the Convolutional Pose Machine we build in notebook 04.

# %%
# NBVAL_IGNORE_OUTPUT
import glob
import re
import subprocess
import sys
from importlib import metadata

CPM_NB_SOURCE = "cpm-nb/cpm-nb@v0.1.0"  # the GitHub repository@release this course installs
if "google.colab" in sys.modules and CPM_NB_SOURCE.split("@v")[-1] not in {
        d.version for d in metadata.distributions(name="cpm-nb")}:  # Colab: once per runtime
    wheels = glob.glob("/content/cpm_nb-*.whl") + glob.glob("cpm_nb-*.whl")  # an uploaded one
    package = max(wheels) if wheels else f"cpm-nb @ git+https://github.com/{CPM_NB_SOURCE}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", package],
                         capture_output=True, text=True)
    if pip.returncode:  # one line and a clean stop: Jupyter shows _render_traceback_ alone
        class InstallFailed(Exception):
            def _render_traceback_(self):
                return [str(self)]
        why = re.findall(r"^\s*((?:fatal|ERROR): .*)", pip.stderr, re.MULTILINE) or ["?"]
        raise InstallFailed(f"pip could not install {package} ({why[0]}): upload the wheel that "
                            "`python -m build` makes to /content, or set CPM_NB_SOURCE to a fork")
    replaced = re.findall(r"Found existing installation: (\S+)", pip.stdout)  # preinstalled
    print(f"restart the runtime (Runtime > Restart session): pip replaced {replaced}"
          if replaced else f"installed {package}; no restart needed")

import cpm_nb

profile = cpm_nb.setup(seed=0)

# %% [markdown]
# ## 1. A photograph to work on
#
# Matplotlib ships a portrait photograph of Grace Hopper. We load it in grayscale and shrink
# it, keeping its aspect ratio, to a height the active profile sets; nothing is downloaded.
# Pixel values are floats in [0, 1].

# %%
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from cpm_nb.course import convolution as C
from cpm_nb.course.viz import save_figure

full = C.sample_photo()  # (600, 512), as shipped
height = 2 * profile.input_size
width = round(height * full.shape[1] / full.shape[0])  # same aspect ratio
photo = np.asarray(Image.fromarray(full).resize((width, height), Image.BILINEAR))
fig, ax = plt.subplots(figsize=(3.6, 3.6 * height / width), layout="constrained")
im = ax.imshow(photo, cmap="gray", vmin=0, vmax=1, aspect="equal")
ax.set(title=f"Input photo ({width} wide, {height} high)", xlabel="x (px)", ylabel="y (px)")
fig.colorbar(im, ax=ax, fraction=0.05, label="intensity (0 black, 1 white)")
save_figure(fig, "01_photo")
plt.show()

# %% [markdown]
# ## 2. Convolution, by hand
#
# A convolution layer slides a small kernel $K$ ($k \times k \times C_{in} \times C_{out}$) over
# the image and takes a weighted sum at every position:
#
# $$ y[i, j, o] = \sum_{u=0}^{k-1} \sum_{v=0}^{k-1} \sum_{c} x[i s + u,\ j s + v,\ c]\; K[u, v, c, o] $$
#
# where $s$ is the stride. Deep-learning libraries do not flip the kernel, so strictly this is a
# cross-correlation. Written out, it is two loops over the output pixels and one over the output
# channels; the sum over $u$, $v$ and $c$ is one `np.sum` of the patch times the kernel:

# %%
def conv2d_by_hand(x, K, stride=1):
    """x (H, W, C_in), K (k, k, C_in, C_out) -> (H_out, W_out, C_out); no padding, no flip."""
    k = K.shape[0]
    h_out = (x.shape[0] - k) // stride + 1
    w_out = (x.shape[1] - k) // stride + 1
    y = np.zeros((h_out, w_out, K.shape[3]))
    for i in range(h_out):
        for j in range(w_out):
            patch = x[i * stride:i * stride + k, j * stride:j * stride + k]  # (k, k, C_in)
            for o in range(K.shape[3]):
                y[i, j, o] = np.sum(patch * K[:, :, :, o])
    return y


# %% [markdown]
# TensorFlow's `padding="same"` first adds zeros around the image (`C.same_padding` says how
# many on each side) so that the output has $\lceil n / s \rceil$ pixels. The package's
# `C.conv2d`, used in the rest of the course, does the same; the asserts fail if they differ.

# %%
rng = np.random.default_rng(0)
x = photo[:, :, None]                                   # (H, W, 1)
kernels = rng.normal(size=(3, 3, 1, 4)).astype("float32")
(top, bottom), (left, right) = (C.same_padding(n, 3, 2) for n in x.shape[:2])
x_padded = np.pad(x, ((top, bottom), (left, right), (0, 0)))
ours = conv2d_by_hand(x_padded, kernels, stride=2)
np.testing.assert_allclose(ours, C.conv2d(x, kernels, stride=2, padding="same"), atol=1e-6)
np.testing.assert_allclose(conv2d_by_hand(x, kernels[..., :1]), C.conv2d(x, kernels[..., :1]),
                           atol=1e-6)
print("conv2d_by_hand == cpm_nb.course.convolution.conv2d ('same' stride 2, 'valid' stride 1)")

# %% [markdown]
# Now the same against TensorFlow's `tf.nn.conv2d` and a Keras `Conv2D` layer holding the same
# weights:

# %%
import keras
import tensorflow as tf

theirs = tf.nn.conv2d(x[None], kernels, strides=2, padding="SAME")[0].numpy()
layer = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)
layer.build((None, None, None, 1))
layer.set_weights([kernels])
keras_out = layer(x[None])[0].numpy()
print("output shape:", ours.shape == theirs.shape == keras_out.shape)
print("numpy == tf.nn.conv2d:", np.allclose(ours, theirs, atol=1e-4))
print("numpy == keras Conv2D:", np.allclose(ours, keras_out, atol=1e-4))

# %% [markdown]
# ### Stride, padding and the output size
#
# Along each axis, an input of length $n$, kernel $k$, stride $s$, padding $p$ on each side and
# dilation $d$ give
#
# $$ n_{out} = \left\lfloor \frac{n + 2p - d(k-1) - 1}{s} \right\rfloor + 1 .$$
#
# TensorFlow's `padding="valid"` means $p = 0$; `"same"` pads just enough that
# $n_{out} = \lceil n / s \rceil$. The table compares the formula with the shape TensorFlow returns.

# %%
print(f"{'n':>3} {'k':>2} {'s':>2} {'padding':>8} {'formula':>8} {'tensorflow':>11}")
for n, k, s, padding in [(7, 3, 1, "valid"), (7, 3, 2, "valid"), (8, 3, 2, "valid"),
                         (7, 3, 1, "same"), (8, 3, 2, "same"), (368, 9, 8, "same")]:
    pad = sum(C.same_padding(n, k, s)) if padding == "same" else 0
    formula = (n + pad - k) // s + 1
    shape = tf.nn.conv2d(tf.zeros((1, n, n, 1)), tf.zeros((k, k, 1, 1)), s, padding.upper()).shape
    print(f"{n:>3} {k:>2} {s:>2} {padding:>8} {formula:>8} {shape[1]:>11}")

# %% [markdown]
# ## 3. Hand-made kernels
#
# Before networks learned their filters, vision engineers designed them. The **Sobel** kernels
# respond to horizontal and vertical intensity changes (edges); a **box blur** averages a
# neighbourhood. Each produces a *feature map*: large values where the image matches the kernel.
# The edge maps are drawn on a dark background (zero response is black) and their colour scale
# ends at the 98th percentile of the response, so thin edges stay visible.

# %%
named = {"Sobel x": C.SOBEL_X, "Sobel y": C.SOBEL_Y, "box blur": C.BOX_BLUR}
fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), layout="constrained")
axes[0].imshow(photo, cmap="gray", vmin=0, vmax=1)
axes[0].set_title("input")
for ax, (name, k) in zip(axes[1:], named.items()):
    response = C.conv2d(x, k[:, :, None, None])[:, :, 0]
    m = np.percentile(np.abs(response), 98)  # a few strong edges would wash out the rest
    im = (ax.imshow(response, cmap="gray", vmin=0, vmax=1) if name == "box blur"
          else ax.imshow(response, cmap="berlin", vmin=-m, vmax=m))
    ax.set_title(f"{name} response")
    fig.colorbar(im, ax=ax, fraction=0.046, label="response (intensity units)")
for ax in axes:
    ax.set(xlabel="x (px)", ylabel="y (px)")
fig.suptitle("Feature maps of hand-set 3x3 kernels (red positive, blue negative, black zero)")
save_figure(fig, "01_hand_kernels")
plt.show()

# %% [markdown]
# ## 4. A network learns the Sobel kernel by itself
#
# We do not have to design kernels: a network finds them. We train a single 3x3 `Conv2D` with
# random initial weights, by gradient descent on the squared error, to reproduce the Sobel-x
# response of the photo. The loss is quadratic in the nine weights with its minimum exactly at
# the Sobel kernel, so training should recover it.
#
# One line matters more than it looks: the photo is **standardised** (zero mean, unit variance).
# Neighbouring pixels are almost equal, so the nine inputs of a 3x3 patch are strongly correlated
# and the squared error is a long, narrow valley in weight space; removing the mean flattens its
# steepest direction. Adam with a cosine-decaying learning rate then walks the valley down.

# %%
def learn_kernel_by_hand(image, target, steps=2000, learning_rate=0.1, epochs=40,
                         standardise=True):
    x = (image - image.mean()) / image.std() if standardise else image
    x = x.astype("float32")[None, :, :, None]                  # a batch of one (1, H, W, 1)
    y = tf.nn.conv2d(x, target[:, :, None, None], 1, "VALID")  # what the target kernel gives
    net = keras.Sequential([keras.Input((None, None, 1)),
                            keras.layers.Conv2D(1, 3, use_bias=False, name="learned")])
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    net.compile(keras.optimizers.Adam(schedule), "mse")
    data = tf.data.Dataset.from_tensors((x, y)).repeat(steps // epochs)
    history = net.fit(data, epochs=epochs, verbose=0, shuffle=False)
    return net.get_layer("learned").kernel.numpy()[:, :, 0, 0], np.array(history.history["loss"])


# %% [markdown]
# From the same seed, the package's `C.learn_kernel` (used by the tests and notebook 04) must
# learn the same kernel through the same losses:

# %%
# NBVAL_IGNORE_OUTPUT
keras.utils.set_random_seed(0)
learned, losses = learn_kernel_by_hand(photo, C.SOBEL_X)
keras.utils.set_random_seed(0)
package_kernel, package_losses = C.learn_kernel(photo, C.SOBEL_X)
np.testing.assert_allclose(learned, package_kernel, atol=1e-5)
np.testing.assert_allclose(losses, package_losses, rtol=1e-4, atol=1e-12)
error = np.abs(learned - C.SOBEL_X).max()
np.set_printoptions(precision=4, suppress=True)
print("learned kernel:\n", learned)
print(f"max |learned - Sobel x| = {error:.2e}  (== C.learn_kernel from the same seed)")

# %% [markdown]
# What does the standardisation buy? The same training on the raw photo (values in [0, 1]):

# %%
# NBVAL_IGNORE_OUTPUT
keras.utils.set_random_seed(0)
raw_kernel, raw_losses = learn_kernel_by_hand(photo, C.SOBEL_X, standardise=False)
raw_error = np.abs(raw_kernel - C.SOBEL_X).max()
print(f"max |learned - Sobel x|: standardised {error:.1e}, raw photo {raw_error:.1e} "
      f"({raw_error / error:.0f} x farther after the same {len(losses) * 50} steps)")

# %% [markdown]
# Both end close to Sobel; the standardised run ends far closer, and its loss falls by more
# orders of magnitude (right panel, each run relative to its first epoch). The `assert` fails if
# the learned weights are not within a thousandth of Sobel.

# %%
assert error < 1e-3, f"learned kernel is {error:.3g} away from Sobel"
fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.6), layout="constrained")
for ax, (title, k) in zip(axes, [("learned", learned), ("Sobel x", C.SOBEL_X)]):
    im = ax.imshow(k, cmap="RdBu_r", vmin=-2, vmax=2)
    for (i, j), v in np.ndenumerate(k):  # white text on the dark cells, black on the pale ones
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=10,
                color="white" if abs(v) > 1.2 else "black")
    ax.set(title=f"{title} kernel", xlabel="kernel column", ylabel="kernel row",
           xticks=range(3), yticks=range(3))
fig.colorbar(im, ax=axes[:2], fraction=0.04, label="weight")
for run, curve in [("standardised input", losses), ("raw input", raw_losses)]:
    axes[2].semilogy(np.arange(1, len(curve) + 1), curve / curve[0], label=run)
axes[2].set(title="training loss", xlabel="epoch (50 steps each)",
            ylabel="MSE / MSE of epoch 1")
axes[2].legend()
fig.suptitle(f"A 3x3 Conv2D trained to imitate Sobel x: max abs error {error:.1e}")
save_figure(fig, "01_learned_kernel")
plt.show()

# %% [markdown]
# ## 5. Max pooling
#
# A 2x2 max-pool keeps the largest value of every 2x2 block and halves each side: it keeps
# *whether* a feature is present in a neighbourhood and forgets *exactly where*. CPM's trunk uses
# three, so its belief maps are 8x smaller than the input. As a loop:

# %%
def max_pool_by_hand(x, size=2):
    """The largest value of every size x size block: (H, W, C) -> (H // size, W // size, C)."""
    h, w = x.shape[0] // size, x.shape[1] // size
    y = np.empty((h, w, x.shape[2]), x.dtype)
    for i in range(h):
        for j in range(w):
            y[i, j] = x[i * size:(i + 1) * size, j * size:(j + 1) * size].max(axis=(0, 1))
    return y


edges = np.abs(C.conv2d(x, C.SOBEL_X[:, :, None, None]))
for pool in (2, 4, 8):
    np.testing.assert_array_equal(max_pool_by_hand(edges, pool), C.max_pool(edges, pool))
print("max_pool_by_hand == cpm_nb.course.convolution.max_pool for 2x2, 4x4 and 8x8")

# %%
fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), layout="constrained")
for ax, pool in zip(axes, (1, 2, 4, 8)):
    pooled = edges if pool == 1 else max_pool_by_hand(edges, pool)
    im = ax.imshow(pooled[:, :, 0], cmap="magma", vmin=0, vmax=edges.max())
    ax.set(title=f"pool {pool}x{pool}: {pooled.shape[0]}x{pooled.shape[1]}",
           xlabel="x (cells)", ylabel="y (cells)")
fig.colorbar(im, ax=axes, fraction=0.02, label="|Sobel x| (intensity units)")
fig.suptitle("|Sobel x| response after max pooling (the map shrinks, strong edges survive)")
save_figure(fig, "01_max_pooling")
plt.show()

# %% [markdown]
# **Translation invariance, measured.** Shift the input by 1 to 8 pixels and compare the pooled
# feature map with the unshifted one (Pearson correlation over the common area). Without pooling
# the correlation drops fast: edges are thin. Pooling slows the drop, more so the larger the
# window, but no pool makes the map invariant: compare the printed correlations at 2 and 4 px.

# %%
# NBVAL_IGNORE_OUTPUT
shifts = np.arange(0, 9)
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for pool, marker in zip((1, 2, 4, 8), "osD^"):
    similarity = C.shift_similarity(edges[:, :, 0], pool, shifts)
    ax.plot(shifts, similarity, marker + "-", label=f"pool {pool}x{pool}")
    print(f"pool {pool}x{pool}: correlation {similarity[2]:.2f} after a 2-px shift, "
          f"{similarity[4]:.2f} after 4 px")
ax.set(title="Pooled maps vs. input shift", xlabel="input shift (px)",
       ylabel="correlation with unshifted map", ylim=(0, 1.02))
ax.legend()
save_figure(fig, "01_translation_invariance")
plt.show()

# %% [markdown]
# **The cost it saves.** A 3x3 convolution from 64 to 64 channels costs $3 \cdot 3 \cdot 64 \cdot 64$
# multiply-adds per output pixel. Every 2x2 pool divides the number of pixels, and the cost of all
# later layers, by 4. For the paper's 368x368 input:

# %%
macs_per_pixel = 3 * 3 * 64 * 64
for pools in range(4):
    side_px = 368 // 2**pools
    print(f"after {pools} pools: {side_px:>3} x {side_px:<3} -> "
          f"{macs_per_pixel * side_px**2 / 1e9:6.3f} GMAC per 3x3 conv layer")

# %% [markdown]
# ## 6. A fully connected layer is a 1x1 convolution
#
# A `Dense` layer applied to an $(H, W, C)$ tensor acts on the last axis: every pixel's
# $C$-vector goes through the same matrix, exactly a convolution with a 1x1 kernel. CPM's first
# stage ends in such a per-pixel classifier (`conv5_1_CPM`, `conv5_2_CPM`). We copy one layer's
# weights into the other and compare.

# %%
features = rng.normal(size=(2, 6, 6, 16)).astype("float32")
dense = keras.layers.Dense(8)
dense.build((None, 16))
conv1x1 = keras.layers.Conv2D(8, 1)
conv1x1.build((None, None, None, 16))
w, b = dense.get_weights()
conv1x1.set_weights([w.reshape(1, 1, 16, 8), b])
difference = np.abs(dense(features).numpy() - conv1x1(features).numpy()).max()
print("Dense kernel", w.shape, "-> Conv2D kernel", conv1x1.get_weights()[0].shape)
print("outputs equal:", difference < 1e-5)

# %% [markdown]
# ## 7. The receptive field
#
# One output cell of a stack of layers depends on a square patch of the input: its **receptive
# field** $r$. With the **jump** $j$ (input pixels between neighbouring cells of a layer), each
# layer of kernel $k$, stride $s$ and dilation $d$ updates them as
#
# $$ r \leftarrow r + (d(k-1)+1 - 1)\, j, \qquad j \leftarrow j\, s, \qquad r = j = 1 \text{ at the input}. $$
#
# `cpm_nb.model.receptive_field` implements this. We check it against a measurement: the gradient
# of the centre output cell with respect to the input is non-zero exactly on the receptive field.

# %%
from cpm_nb.model import receptive_field as RF

net = keras.Sequential([
    keras.Input((64, 64, 1)),
    keras.layers.Conv2D(1, 3, padding="same", name="conv1"),
    keras.layers.Conv2D(1, 3, padding="same", name="conv2"),
    keras.layers.MaxPooling2D(2, name="pool1"),
    keras.layers.Conv2D(1, 3, padding="same", dilation_rate=2, name="conv3_dilated"),
    keras.layers.MaxPooling2D(2, name="pool2"),
    keras.layers.Conv2D(1, 5, padding="same", name="conv4"),
])
for layer in net.layers:  # positive weights: no accidental cancellation in the gradient
    layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
for row in RF.receptive_fields(RF.layers_from_keras(net)):
    print(f"{row.name:<14} k={row.kernel} s={row.stride} d={row.dilation}  "
          f"field={row.receptive_field:>3} px  jump={row.jump} px")
print("measured with gradients:", RF.empirical_receptive_field(net, 64), "px")

# %% [markdown]
# The calculator and the measurement agree. Notebook 04 uses the same calculator on the CPM
# network: the paper designs its stages so that later stages see most of the body.
#
# ## 8. Explore kernels and pooling
#
# Pick a kernel and a pooling size: live controls in JupyterLab or Colab, a few preset
# combinations in the stored notebook.

# %%
from cpm_nb.course.widgets import Choice, explore

KERNELS = {**named, "Laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], "float32"),
           "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], "float32")}


def show_kernel(kernel="Sobel x", pool=2):
    response = C.conv2d(x, KERNELS[kernel][:, :, None, None])
    pooled = response if pool == 1 else C.max_pool(response, pool)
    m = np.abs(response).max()  # one colour scale, centred on zero (white = 0)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), layout="constrained")
    axes[0].imshow(response[:, :, 0], cmap="RdBu_r", vmin=-m, vmax=m)
    axes[0].set(title=f"{kernel} response", xlabel="x (px)", ylabel="y (px)")
    im = axes[1].imshow(pooled[:, :, 0], cmap="RdBu_r", vmin=-m, vmax=m)
    axes[1].set(title=f"after {pool}x{pool} max pool", xlabel="x (cells)", ylabel="y (cells)")
    fig.colorbar(im, ax=axes, fraction=0.04, label="response (intensity units)")
    plt.show()


_ = explore(show_kernel, kernel=Choice(tuple(KERNELS), static=("Laplacian", "sharpen")),
            pool=Choice((1, 2, 4, 8), value=2, static=(4,)))

# %% [markdown]
# ## Summary
#
# * A convolution is a sliding weighted sum; our ten-line NumPy loop equals the package's
#   `conv2d`, `tf.nn.conv2d` and `Conv2D`.
#   The output size follows $\lfloor (n + 2p - d(k-1) - 1)/s \rfloor + 1$.
# * Hand-designed kernels detect edges or smooth; trained by gradient descent, a 3x3 `Conv2D`
#   recovered the Sobel kernel from data alone; standardising the input made it converge much
#   closer.
# * Max pooling keeps strong responses, makes small shifts matter less (not nothing) and cuts the
#   cost of later layers by 4 per 2x2 pool.
# * A `Dense` layer on feature maps is a 1x1 convolution: CPM's stage 1 classifies every pixel.
# * The receptive field grows by $(k_{eff}-1) \cdot j$ per layer, and pooling multiplies the jump.
#
# ## Exercises
#
# 1. Train the single `Conv2D` to imitate the box blur instead. Does it converge faster? Why
#    (hint: look at how correlated the photo's neighbouring pixels are)?
# 2. Replace max pooling with average pooling in the translation experiment. Which is more invariant?
# 3. With the calculator, find the receptive field of ten stacked 3x3 convolutions with and without
#    one 2x2 pool after the fifth. What does the pool buy?
# 4. Use `dilation_rate=2` everywhere in the test network and predict the receptive field before
#    measuring it.
