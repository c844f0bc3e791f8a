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
# # 03 · Gaussian label maps
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cpm-nb/cpm-nb/blob/v0.1.0/notebooks/03_gaussian_label_maps.ipynb)
#
# **What you will learn**
#
# * why CPM regresses *belief maps* rather than joint coordinates (the multi-person argument);
# * the 2-D Gaussian target, written out, and exactly where an output cell sits in the image;
# * how sigma and the stride trade precision against learnability (with a live sigma slider);
# * the background map of the released CPM models, and the same maps inside the training graph;
# * decoding: argmax, sub-pixel refinement, and back to original-image pixels;
# * the metrics: the article's 25-px radius, PCK, the official MPII PCKh, strict PCP.
#
# The maps built here are the training targets of the CPM of notebook 04; the metrics score every
# model from then on.

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
# ## 1. Coordinates or maps?
#
# A network could output the 32 numbers $(x_j, y_j)$ directly, as DeepPose did. But an image
# often holds **several people**. A coordinate regressor must pick one, and when the label is
# ambiguous the squared error is minimised by the **average** of the possible answers, a point on
# nobody. A belief map has one value per image location, so it can hold one peak per person and
# leave the choice to a later step (for CPM: the crop of notebook 02 and the person-centre map).
#
# We draw a synthetic image with two people and build the head-top map of the whole image: the
# maximum of the two people's Gaussians.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import numpy as np

from cpm_nb.core import config, skeleton
from cpm_nb.course.viz import draw_skeleton, save_figure
from cpm_nb.data import synthetic
from cpm_nb.evaluation import metrics
from cpm_nb.model import heatmaps as H

stride = config.OUTPUT_STRIDE


def two_heads_apart(s):  # two people whose head tops are well inside the image, apart
    image, people, _ = synthetic.render_image(np.random.default_rng(s), profile.input_size)
    heads = np.array([p["joints"][skeleton.JOINT["head_top"]] for p in people])
    inside = (heads >= 2 * stride).all() and (heads <= np.array(image.size) - 2 * stride).all()
    return len(people) == 2 and inside and abs(heads[0, 0] - heads[1, 0]) > 4 * stride


seed = next(s for s in range(200) if two_heads_apart(s))
image, people, _ = synthetic.render_image(np.random.default_rng(seed), profile.input_size)
image = np.asarray(image)
height, width = (np.array(image.shape[:2]) // stride) * stride  # whole cells only
image = image[:height, :width]
joints = np.stack([p["joints"] for p in people])  # [2, 16, 2], 0-based image px
visible = np.stack([p["inside"] for p in people]).astype(int)
maps = H.render_numpy(joints, visible, (height, width), profile.sigma)  # [2, h/8, w/8, 16]
scene = maps.max(axis=0)  # one map per joint for the whole image
print("image", image.shape, "-> maps", scene.shape, f"(stride {stride})")

# %%
head = skeleton.JOINT["head_top"]
extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # cell c covers input px 8c-0.5 .. 8c+7.5
mean_head = joints[:, head].mean(axis=0)
fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
axes[0].imshow(image)
for person in joints:
    draw_skeleton(axes[0], person, markersize=3)
axes[0].set(title="Two people, their annotated skeletons", xlabel="x (px)", ylabel="y (px)")
axes[1].imshow(scene[..., head], cmap="magma", extent=extent, vmin=0, vmax=1)
for person in joints:
    draw_skeleton(axes[1], person, linewidth=1, markersize=0, alpha=0.5)
axes[1].plot(*joints[:, head].T, "c+", ms=12, mew=2, label="true head tops")
axes[1].plot(*mean_head, "wX", ms=10, mec="k", label="L2-optimal single (x, y)")
axes[1].legend(loc="lower right", fontsize=8)
axes[1].set(title="Head-top belief map: one peak per person", xlabel="x (px)", ylabel="y (px)")
save_figure(fig, "03_multi_person")
plt.show()

# %% [markdown]
# The map keeps both answers; a regressor trained on images where either person may be the
# labelled one is pulled towards the white cross between them. Finding every peak is easy: a cell
# that is the largest in its 3x3 neighbourhood, and large enough.

# %%
from scipy.ndimage import maximum_filter

head_map = scene[..., head]
peaks = np.argwhere((head_map == maximum_filter(head_map, size=3)) & (head_map > 0.3))
print("peaks found:", len(peaks), "(people in the image: 2)")

# %% [markdown]
# ## 2. The Gaussian target, and where a cell sits
#
# For joint $j$ at $\mathbf{p}_j = (x_j, y_j)$ (input pixels), the target belief map is an
# unnormalised Gaussian evaluated at the centre $\mathbf{z}$ of every output cell:
#
# $$ b^*_j(\mathbf{z}) = \exp\!\left(-\frac{\lVert \mathbf{z} - \mathbf{p}_j \rVert^2}{2\sigma^2}\right),
# \qquad \text{peak value } 1 \text{ at } \mathbf{z} = \mathbf{p}_j, $$
#
# with $\sigma$ in input pixels; a joint that is not annotated gets an all-zero map. Input pixel
# $(i, j)$ has its centre at $(x{=}j, y{=}i)$, and output cell $c$ pools input pixels
# $8c \ldots 8c{+}7$, so its centre is at
#
# $$ x = 8c + 3.5 . $$
#
# Put it half a pixel off and every decoded joint moves by that half pixel. The figure shows a
# 16x16-pixel corner of the input: pixel centres (dots), output cells (lines), their centres
# (crosses).

# %%
fig, ax = plt.subplots(figsize=(4, 4))
px = np.arange(16)
ax.plot(*np.meshgrid(px, px), "k.", ms=2)
for edge in (-0.5, 7.5, 15.5):
    ax.axvline(edge, color="tab:blue")
    ax.axhline(edge, color="tab:blue")
centres = H.cell_centres(2)
ax.plot(*np.meshgrid(centres, centres), "rx", ms=10, mew=2)
ax.set(title="Output cells (stride 8) over input pixels", xlabel="x (input px)",
       ylabel="y (input px)", xlim=(-1, 16), ylim=(16, -1))
save_figure(fig, "03_grid_convention")
plt.show()
print("cell centres:", centres, "input px")

# %% [markdown]
# The formula, written out for one person: the cell centres on both axes, then one exponential
# per cell and joint. It must equal the package's `H.render_numpy` (which does the same for a
# batch at once, and appends the background channel of section 4 on request):

# %%
def gaussian_maps_by_hand(joints, visible, size, sigma, stride=stride):
    """joints [J, 2] (x, y) in 0-based input px, visible [J] -> maps [size/stride, size/stride, J]."""
    n = size // stride
    centres = np.arange(n) * stride + (stride - 1) / 2  # x = 8c + 3.5
    zx, zy = np.meshgrid(centres, centres)  # the centre of every cell; x along the columns
    maps = np.zeros((n, n, len(joints)))
    for j, (x, y) in enumerate(joints):
        if visible[j]:  # a joint that is not annotated keeps its all-zero map
            maps[..., j] = np.exp(-((zx - x) ** 2 + (zy - y) ** 2) / (2 * sigma**2))
    return maps


rng = np.random.default_rng(0)
test_joints = rng.uniform(-8, profile.input_size + 8, (16, 2))  # some outside the crop
test_visible = rng.integers(0, 3, 16)  # 0: missing
ours = gaussian_maps_by_hand(test_joints, test_visible, profile.input_size, profile.sigma)
package = H.render_numpy(test_joints, test_visible, profile.input_size, profile.sigma,
                         background=True)
np.testing.assert_allclose(ours, package[..., :16], atol=1e-6)
np.testing.assert_allclose(1 - ours.max(axis=-1), package[..., 16], atol=1e-6)
print("gaussian_maps_by_hand == cpm_nb.model.heatmaps.render_numpy (16 joints, some missing;"
      " background = 1 - max):", np.allclose(ours, package[..., :16], atol=1e-6))

# %% [markdown]
# A joint placed exactly on a cell centre must give a map whose maximum, 1.0, sits on that cell
# with equal left/right and up/down neighbours:

# %%
r, c = 3, 5
m = H.render_numpy([[c * stride + 3.5, r * stride + 3.5]], [2], profile.input_size,
                   profile.sigma)[..., 0]
print("peak at cell", tuple(int(i) for i in np.unravel_index(m.argmax(), m.shape)),
      "value", m.max())
print("left == right:", m[r, c - 1] == m[r, c + 1], " up == down:", m[r - 1, c] == m[r + 1, c])

# %% [markdown]
# ## 3. Sigma and stride
#
# **Sigma** sets how wide the target is. Well under one cell and the map is nearly one-hot: few
# positive cells to learn from, and a joint between two cell centres gets a low peak. Too large
# and nearby joints (wrist and elbow, or two people) blur into one blob, and small errors cost
# little. The released CPM uses $\sigma = 7$ px at a 368-px input, just under one cell. **The
# stride** (8) sets the resolution: a 46x46 map is 64x cheaper than a 368x368 one, but an argmax
# alone is off by up to half a cell.
#
# Move the slider (three preset values in the stored notebook). Left: the cells around the joint
# with their values; right: a cut along the joint's row, the Gaussian and the cell values.

# %%
from cpm_nb.course.widgets import Slider, explore

joint = np.array([[0.43 * profile.input_size, 0.55 * profile.input_size]])


def show_sigma(sigma):
    m = H.render_numpy(joint, [2], profile.input_size, sigma)[..., 0]
    side = profile.input_size
    r0, c0 = (int(v) // stride for v in joint[0, ::-1])  # the joint's cell
    rows, cols = (np.arange(max(0, k - 4), min(m.shape[0], k + 5)) for k in (r0, c0))
    zoom = m[np.ix_(rows, cols)]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), layout="constrained")
    extent = (cols[0] * stride - 0.5, (cols[-1] + 1) * stride - 0.5,
              (rows[-1] + 1) * stride - 0.5, rows[0] * stride - 0.5)
    im = axes[0].imshow(zoom, cmap="magma", vmin=0, vmax=1, extent=extent)
    for (i, j), v in np.ndenumerate(zoom):
        if v >= 0.005:  # each cell's target value, dark text on the bright cells
            axes[0].text(cols[j] * stride + 3.5, rows[i] * stride + 5.5, f"{v:.2f}", ha="center",
                         va="center", fontsize=7, color="black" if v > 0.6 else "white")
    axes[0].plot(*joint[0], "c+", ms=8, mew=1.5, label="the joint")
    axes[0].set(title=f"sigma = {sigma:g} px ({sigma / stride:.2f} cells): top cell {m.max():.2f}",
                xlabel="x (input px)", ylabel="y (input px)")
    axes[0].legend(loc="upper right", fontsize=7)
    fig.colorbar(im, ax=axes[0], fraction=0.046, label="cell value")
    xs = np.linspace(0, side - 1, 400)
    row = int(np.argmax(m.max(axis=1)))
    axes[1].plot(xs, np.exp(-((xs - joint[0, 0]) ** 2 + (H.cell_centres(m.shape[0])[row]
                 - joint[0, 1]) ** 2) / (2 * sigma**2)), label="Gaussian")
    axes[1].plot(H.cell_centres(m.shape[1]), m[row], "o", label="cell values")
    axes[1].set(title="cut through the peak row", xlabel="x (input px)", ylabel="target value",
                ylim=(0, 1.05))
    axes[1].legend(fontsize=8)
    plt.show()


_ = explore(show_sigma, sigma=Slider(1.0, 4 * profile.sigma, 0.5, profile.sigma,
                                     static=(profile.sigma / 2, profile.sigma, 2 * profile.sigma)))

# %% [markdown]
# ## 4. The background map
#
# The released CPM models predict one extra channel, the **background**: $1 - \max_j b^*_j$, high
# wherever there is no joint. It gives the network a dense, easy target. `background=True` appends
# it as the last channel.

# %%
with_bg = H.render_numpy(joints, visible, (height, width), profile.sigma, background=True)
scene_bg = with_bg.max(axis=0)[..., :-1].max(axis=-1)  # all joints, both people
background = with_bg.min(axis=0)[..., -1]  # 1 - max over all joints of both people
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for ax, data, title in [(axes[0], scene_bg, "max over the 16 joint maps"),
                        (axes[1], background, "background channel = 1 - max")]:
    im = ax.imshow(data, cmap="magma", vmin=0, vmax=1, extent=extent)
    ax.set(title=title, xlabel="x (px)", ylabel="y (px)")
fig.colorbar(im, ax=axes, fraction=0.03, label="target value")
save_figure(fig, "03_background")
plt.show()
print("channels with background:", with_bg.shape[-1], "= 16 joints + 1")

# %% [markdown]
# ## 5. The same maps inside the training graph
#
# During training the maps are made on the fly from the augmented joints, on the accelerator, so
# `cpm_nb.model.heatmaps.render` is written with `keras.ops` only: it runs eagerly, inside
# `tf.data`, under XLA (`compiled_render`) and with the JAX backend. It uses the separability of
# the Gaussian, $e^{-(dx^2+dy^2)/2\sigma^2} = e^{-dx^2/2\sigma^2}\,e^{-dy^2/2\sigma^2}$, so it
# computes $2M$ exponentials per joint instead of $M^2$. It must equal the NumPy reference:

# %%
rng = np.random.default_rng(0)
batch = rng.uniform(0, profile.input_size - 1, (profile.batch_size, 16, 2)).astype("float32")
vis = rng.integers(0, 3, (profile.batch_size, 16))  # some joints missing (0)
reference = H.render_numpy(batch, vis, profile.input_size, profile.sigma, background=True)
in_graph = H.compiled_render(profile.input_size, profile.sigma, background=True)(batch, vis)
print("same shape:", reference.shape == tuple(in_graph.shape))
print("max |keras.ops - numpy| < 1e-5:", float(np.abs(np.asarray(in_graph) - reference).max()) < 1e-5)

# %% [markdown]
# ## 6. Decoding: from maps back to joints
#
# The prediction for joint $j$ is the location of the maximum of its map; the confidence is the
# maximum value. The argmax is a cell index, off by up to half a cell ($4\sqrt{2} \approx 5.7$ px
# diagonally). Three refinements use the peak $c$ and its neighbours $l, r$ along x (then y):
#
# * **quarter**: move a quarter cell towards the larger neighbour (Stacked Hourglass);
# * **quadratic**: the vertex of the parabola through the three values,
#   $\delta = \frac{1}{2}\frac{l - r}{l - 2c + r}$;
# * **gaussian**: the same parabola through $\log l, \log c, \log r$. The log of a Gaussian *is* a
#   parabola, so on a clean target this is exact (the default of `decode`).
#
# The default decoder, written out: an argmax per joint, the log-parabola offset along x and y
# (at most half a cell), and the cell centre $8c + 3.5$. A peak in a border cell is not refined
# along the axis where it lacks a neighbour.

# %%
def log_parabola_offset(left, centre, right):
    """Vertex of the parabola through the logs of three neighbouring values, in cells."""
    log_l, log_c, log_r = np.log(np.maximum([left, centre, right], 1e-10))
    curvature = log_l - 2 * log_c + log_r
    return float(np.clip(0.5 * (log_l - log_r) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def decode_by_hand(maps, stride=stride):
    """maps [M, M, J] -> joints [J, 2] (x, y in input px) and confidence [J]."""
    h, w, n_joints = maps.shape
    joints, confidence = np.zeros((n_joints, 2)), np.zeros(n_joints)
    for j in range(n_joints):
        m = maps[..., j]
        r, c = np.unravel_index(np.argmax(m), m.shape)
        dx = log_parabola_offset(m[r, c - 1], m[r, c], m[r, c + 1]) if 0 < c < w - 1 else 0.0
        dy = log_parabola_offset(m[r - 1, c], m[r, c], m[r + 1, c]) if 0 < r < h - 1 else 0.0
        joints[j] = ((c + dx) * stride + (stride - 1) / 2, (r + dy) * stride + (stride - 1) / 2)
        confidence[j] = m[r, c]
    return joints, confidence

# %% [markdown]
# It must give exactly what the package's `H.decode` gives, on clean maps and on noisy ones (where
# peaks can land on the border or the parabola can open upwards):

# %%
rng = np.random.default_rng(0)
for noise in (0.0, 0.2):
    test_joints = rng.uniform(-8, profile.input_size + 8, (16, 2))  # some outside the crop
    test_maps = H.render_numpy(test_joints, np.full(16, 2), profile.input_size, profile.sigma)
    test_maps = test_maps + noise * rng.random(test_maps.shape)
    for ours, theirs in zip(decode_by_hand(test_maps), H.decode(test_maps)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
print("decode_by_hand == cpm_nb.model.heatmaps.decode (refine='gaussian'), clean and noisy maps")

# %% [markdown]
# The experiment: encode random joints, decode them, measure the error in input pixels, for several
# sigmas. The border cells have no neighbour on one side and are not refined, so we also report
# joints at least one cell from the border ("interior").

# %%
# NBVAL_IGNORE_OUTPUT
sigmas = np.arange(2.0, 12.5, 1.0)
errors, interior = {}, {}
for m in H.REFINE_METHODS:
    errors[m] = np.array([H.round_trip_errors(2000, profile.input_size, s, refine=m, seed=1)
                          for s in sigmas])
    interior[m] = np.array([H.round_trip_errors(2000, profile.input_size, s, refine=m, seed=1,
                                                margin=stride) for s in sigmas])
k = int(np.argmin(np.abs(sigmas - profile.sigma)))
print(f"input {profile.input_size} px, sigma {sigmas[k]:g} px, 2000 random joints (errors in px)")
print(f"{'refinement':<11}{'mean':>7}{'max':>7}{'interior mean':>15}{'interior max':>14}"
      f"{'mean / cell':>13}")
for m in H.REFINE_METHODS:
    e, ei = errors[m][k], interior[m][k]
    print(f"{m:<11}{e.mean():>7.3f}{e.max():>7.3f}{ei.mean():>15.3f}{ei.max():>14.3f}"
          f"{e.mean() / stride:>13.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for m in H.REFINE_METHODS:
    line, = axes[0].plot(sigmas, errors[m].mean(axis=1), "o-", label=f"{m}, all joints")
    axes[0].plot(sigmas, interior[m].mean(axis=1), "--", color=line.get_color(), lw=1)
    axes[1].plot(sigmas, interior[m].max(axis=1), "o-", color=line.get_color(), label=m)
axes[0].set(title="Mean error (dashed: joints off the border cells)", ylabel="error (input px)")
axes[1].set(title="Max error, joints off the border cells", ylabel="error (input px)")
for ax in axes:
    ax.axvline(profile.sigma, color="gray", lw=0.8)
    ax.set(xlabel="sigma (input px)", ylim=(0, None))
    ax.legend(fontsize=8)
fig.suptitle(f"Encode -> decode round trip, {profile.input_size}-px input, stride {stride}")
save_figure(fig, "03_decoding_error")
plt.show()

# %% [markdown]
# Argmax alone is off by over a third of a cell on average, whatever sigma (last column). The
# quarter-cell shift removes much of that; the parabola on raw values is biased towards the cell
# centre when sigma is small and improves as it grows; the parabola on log values is exact away
# from the border. The remaining maximum error comes from the outermost cells. A *trained*
# network's maps are not perfect Gaussians, so expect smaller gains there (exercise 1).
#
# **Back to the original image.** The data pipeline cuts each person out of the photograph with a
# 3x3 affine matrix $M$ (original 1-based pixels $\to$ crop 0-based pixels, notebook 02).
# `to_original` applies $M^{-1}$:

# %%
from cpm_nb.data import preprocess

# a person at objpos (500, 300) with MPII scale 2, rotated by 15 degrees
M = preprocess.crop_matrix((500, 300), 2.0, profile.input_size, rotation=15.0)
original = np.array([[520.0, 280.0], [450.5, 390.4]])
crop = preprocess.apply_matrix(M, original)
decoded, confidence = H.decode(H.render_numpy(crop, [2, 2], profile.input_size, profile.sigma))
print("back in the original image:", np.round(H.to_original(decoded, M), 1).tolist())
print("error below 0.05 px:", bool(np.abs(H.to_original(decoded, M) - original).max() < 0.05))

# %% [markdown]
# ## 7. The metrics, on a worked example
#
# We take the first person of the image as ground truth and fake a prediction: small noise on
# every joint, a large error on the left wrist and a swapped pair of ankles (a typical mistake).
#
# * **The article's metric**: correct if within a **fixed radius of 25 px**. Simple, but it depends
#   on the image scale: 25 px is generous for a small person and strict for a large one.
# * **PCK@alpha**: correct if within $\alpha \cdot L$, with a per-person length $L$; PCK@0.2 uses
#   the torso (left shoulder to right hip).
# * **PCKh@0.5** (MPII): $L$ = the head size = 0.6 x the head-box diagonal, $\alpha = 0.5$.
# * **Strict PCP**: a *limb* is correct if *both* predicted ends lie within half the true limb
#   length of their true positions, so short limbs (forearms) are judged harshly.

# %%
# NBVAL_IGNORE_OUTPUT
rng = np.random.default_rng(3)
truth = joints[0]
pred = truth + rng.normal(0, 0.02 * profile.input_size, truth.shape)
pred[skeleton.JOINT["l_wrist"]] += 0.25 * profile.input_size
pred[[0, 5]] = pred[[5, 0]]  # right and left ankle swapped
x1, y1, x2, y2 = people[0]["head_box"]
head_box = np.array([[[x1, y1], [x2, y2]]])
head_size = metrics.head_sizes(head_box)[0]
torso = metrics.torso_size(truth[None])[0]
print(f"head size {head_size:.1f} px, torso {torso:.1f} px, 25-px radius")

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
for ax, (name, tol) in zip(axes, [("fixed 25 px", 25.0), ("PCK@0.2 (torso)", 0.2 * torso),
                                  ("PCKh@0.5", 0.5 * head_size)]):
    draw_skeleton(ax, truth, linewidth=1, markersize=0, alpha=0.3)
    ok = metrics.draw_tolerances(ax, pred, truth, tol, title=f"{name}: tolerance {tol:.1f} px")
    lo, hi = truth.min(axis=0), truth.max(axis=0)
    pad = 0.35 * (hi - lo).max()
    ax.set(xlabel="x (px)", ylabel="y (px)", xlim=(lo[0] - pad, hi[0] + pad),
           ylim=(hi[1] + pad, lo[1] - pad))
    ax.set_title(f"{name}: {ok.sum()}/16 correct (tol. {tol:.1f} px)")
axes[0].legend(loc="lower right", fontsize=8)
fig.suptitle("The same prediction under three joint metrics (green: correct)")
save_figure(fig, "03_metrics_example")
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
P, T = pred[None], truth[None]
print(f"fixed radius 25 px : {metrics.fixed_radius(P, T).total:5.1f} %")
print(f"PCK@0.2 (torso)    : {metrics.pck(P, T, metrics.torso_size(T), 0.2).total:5.1f} %")
result = metrics.pckh(P, T, head_box)
print(f"PCKh@0.5           : {result.mean:5.1f} %  (14 joints, pelvis and thorax left out)")
pcp = metrics.pcp(P, T)
print(f"strict PCP         : {pcp.total:5.1f} %  of {len(pcp.per_limb)} limbs;",
      "wrong:", [k for k, v in pcp.per_limb.items() if v == 0])

# %% [markdown]
# ### The official PCKh, exactly
#
# MPII numbers are only comparable when computed the same way. The official MATLAB toolkit:
#
# * head size $= 0.6 \times$ head-box diagonal; correct iff $d \le 0.5 \times$ head size;
# * joints that are not annotated are excluded (neither right nor wrong);
# * **Mean** pools every counted joint of the 14 types other than pelvis and thorax, so it is a
#   *count-weighted* mean: joints that are often missing (ankles) weigh less;
# * the table's Head is the mean of upper neck and head top; the other columns average left and
#   right;
# * **Mean@0.1** is the total at threshold exactly 0.10.
#
# Those rules fit in a few lines; `metrics.pckh`, which the notebooks and `cpm-nb evaluate-mpii`
# call, must give the same:

# %%
def pckh_by_hand(pred, gt, head_boxes, valid, threshold=0.5):
    """Official MPII PCKh (%): the total and the 16 per-joint values. pred, gt [N, 16, 2];
    head_boxes [N, 2, 2] (corners x1 y1, x2 y2); valid [N, 16] marks annotated joints."""
    head_size = 0.6 * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=-1)  # [N]
    correct = np.linalg.norm(pred - gt, axis=-1) <= threshold * head_size[:, None]  # [N, 16]
    with np.errstate(invalid="ignore"):  # a joint nobody annotated: NaN
        per_joint = 100 * (correct & valid).sum(axis=0) / valid.sum(axis=0)
    counted = valid.copy()
    counted[:, [skeleton.JOINT["pelvis"], skeleton.JOINT["thorax"]]] = False
    return 100 * (correct & counted).sum() / counted.sum(), per_joint

# %% [markdown]
# Checked against the package on the worked example and on 200 random people with missing joints:

# %%
rng = np.random.default_rng(1)
many_gt = rng.uniform(0, 400, (200, 16, 2))
many_pred = many_gt + rng.normal(0, 12, many_gt.shape)
corner = rng.uniform(0, 300, (200, 2))
many_boxes = np.stack([corner, corner + rng.uniform(20, 60, (200, 2))], axis=1)
many_valid = rng.random((200, 16)) > 0.2
for args in [(P, T, head_box, np.ones((1, 16), bool)),
             (many_pred, many_gt, many_boxes, many_valid)]:
    total, per_joint = pckh_by_hand(*args)
    package = metrics.pckh(*args)
    np.testing.assert_allclose([total, *per_joint], [package.mean, *package.per_joint])
print("pckh_by_hand == cpm_nb.evaluation.metrics.pckh (total and per joint)")

# %% [markdown]
# Open-source evaluators differ in small ways: Head = head top only, the plain average of the 14
# joints, and a "Mean@0.1" that indexes the threshold array one step too far. On the MPII
# validation people with Tompson et al.'s predictions (`detections_our_format.mat`, where it is
# available) the differences are visible:

# %%
# NBVAL_IGNORE_OUTPUT
from pathlib import Path

from cpm_nb.core.paths import checkout_root
from cpm_nb.evaluation import mpii_mat

reference = (checkout_root() or Path.cwd()).parent / "shared/mpii_reference/detections_our_format.mat"
if reference.is_file():
    official, _ = mpii_mat.evaluate_mpii(reference, reference)
    print(official.format_table("Tompson et al. predictions, MPII validation (2958 people)"))
    plain = np.mean(np.delete(official.per_joint, metrics.PCKH_EXCLUDED))
    print(f"\nHead as head top only: {official.per_joint[skeleton.JOINT['head_top']]:.2f}"
          f"   plain mean of 14: {plain:.2f}"
          f"   total at 0.11: {official.curve_total[11]:.2f}")
else:
    official = None
    print("MPII reference file not available here: skipping the real-data table")

# %%
# NBVAL_IGNORE_OUTPUT
if official is not None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(official.thresholds, official.curve_total, "k-", lw=2.5, label="Mean (total)")
    for (name, ids), color in zip(metrics.PCKH_GROUPS.items(), plt.cm.tab10.colors):
        ax.plot(official.thresholds, official.curve_per_joint[:, list(ids)].mean(axis=1),
                lw=1.5, color=color, label=name)  # tab10: seven clearly different colours
    ax.set(title="PCKh curve, Tompson et al. on MPII validation", xlabel="threshold (head size)",
           ylabel="PCKh (%)", xlim=(0, 0.5), ylim=(0, 100))
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, "03_pckh_curve")
    plt.show()

# %% [markdown]
# The same numbers from the command line, for any predictions file in the common layout:
#
# ```
# cpm-nb evaluate-mpii --annotations gt_valid.mat --predictions pred.mat --json-out scores.json
# ```

# %% [markdown]
# ## Summary
#
# * A belief map can hold one peak per person; a coordinate regressor cannot, and under an L2 loss
#   it drifts to the average of the possible answers.
# * The target is $\exp(-\lVert z - p\rVert^2 / 2\sigma^2)$ at cell centres $8c + 3.5$ (ten
#   lines, equal to `H.render_numpy`); missing joints get zero maps; the background channel is
#   $1 - \max_j$.
# * The `keras.ops` version equals the NumPy reference and runs inside the training graph.
# * Argmax decoding is off by over a third of a cell on average; a log-parabola refinement (ten
#   lines, equal to `H.decode`) recovers the exact position of a clean Gaussian; `to_original`
#   maps joints back through $M^{-1}$.
# * Fixed-radius accuracy depends on image scale; PCK and PCKh normalise by body size; strict PCP
#   scores limbs; the official PCKh total is count-weighted and leaves out pelvis and thorax
#   (ten lines, equal to `metrics.pckh`).
#
# ## Exercises
#
# 1. Add Gaussian noise to the maps before decoding (`maps + rng.normal(0, sd, maps.shape)`). How
#    do the four decoders rank as `sd` grows, and from which `sd` on does the argmax itself start
#    to jump to wrong cells?
# 2. Change the stride to 4 in the round-trip experiment. How do the argmax and refined errors
#    scale?
# 3. Compute PCKh@0.5 of the worked example with the ankles *not* swapped. How many points is one
#    left/right confusion worth?
# 4. On the MPII reference file, plot the total PCKh against the plain mean of the 14 joints over
#    all thresholds. Where is the gap largest?
