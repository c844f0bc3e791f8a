# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
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
# # 07 · Running the model on any image
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cpm-nb/cpm-nb/blob/v0.1.0/notebooks/07_running_the_model.ipynb)
#
# **What you will learn**
#
# * to load a trained CPM from its run folder (or a `.keras` file) safely, with its configuration;
# * to tell a single-person network *where* the person is: centre and scale, a box, or the image
#   centre by default -- and what the crop then looks like;
# * the inference chain in five lines: crop, predict, decode, map back to the image;
# * to read the belief maps stage by stage;
# * the paper's multi-scale test: averaging the maps of several crop scales, in a few lines;
# * to run the model on any photo or array, from Python and with `cpm-nb predict`;
# * how to use weights trained on real MPII images instead of the synthetic ones;
# * to convert and run the authors' released Caffe model.

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
# ## 1. Loading a trained model
#
# A run of `cpm-nb train` (notebook 05) leaves a folder with `model.keras` (the architecture as
# JSON and the weights, nothing executable) and `cpm_config.json` (joints, input size, stages,
# normalisation). That is all inference needs. `predict.load_predictor` loads it in Keras
# **safe mode**, so a file cannot run code on your machine, and checks that the network is a
# CPM of the 16 MPII joints matching its configuration.
#
# `T.load_or_train` gives the model of the active profile: in the `cpu` profile a trained
# preset shipped with the package, loaded in seconds (one line, "loaded preset ..."). With
# `CPM_NB_RETRAIN=1` it trains again, and first prints the steps and the wall time it expects
# on this machine.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import numpy as np

from cpm_nb.core import errors, skeleton
from cpm_nb.course import viz
from cpm_nb.course.viz import draw_skeleton, save_figure
from cpm_nb.data import synthetic
from cpm_nb.inference import predict as P
from cpm_nb.io import images
from cpm_nb.training import loop as T

TRUTH_STYLE = dict(linewidth=1.5, markersize=0, alpha=0.5)  # ground truth: faint, no markers


def add_legend(ax):
    """Explain the two skeletons drawn on ``ax``: the prediction and the ground truth."""
    ax.legend(handles=[plt.Line2D([], [], color="0.2", lw=2, marker="o", mec="k",
                                  label="prediction"),
                       plt.Line2D([], [], color="0.2", lw=1.5, alpha=0.5,
                                  label="ground truth"),
                       plt.Line2D([], [], color="w", ls="--", label="region the network sees")],
              loc="lower right", fontsize=8, facecolor="0.8")

run = T.load_or_train(profile, progress=False).run_dir
predictor = P.load_predictor(run)
print(predictor)
print("files:", sorted(p.name for p in run.iterdir() if p.suffix in (".keras", ".json")))
print("cpm_config.json:", {k: predictor.meta[k] for k in ("input_size", "stages", "stride")})

# %% [markdown]
# Anything else is refused with a one-line reason, for example a network of another joint set:

# %%
from cpm_nb.model import architecture
from cpm_nb.model import cpm as M

other = M.build_cpm(architecture.get_config("cpm-mpii-release").replace(input_size=64, stages=1,
                                                               width=0.125))
try:
    P.Predictor(other)
except errors.ModelError as err:
    print("ModelError:", err)

# %% [markdown]
# ## 2. An image and its person
#
# We start from a validation image of the synthetic set, never seen in training. Like MPII, its
# annotation gives each person's rough centre `objpos` and `scale` (`200 * scale` pixels is
# about the person's height), in **1-based** pixels.

# %%
# NBVAL_IGNORE_OUTPUT
data = synthetic.load_or_generate(profile)
person = max(data.val[:40], key=lambda p: p.flags["n_others"])  # someone with company
path = data.image_dir / person.image
print(f"{path.name}: {person.image_size[0]}x{person.image_size[1]} px, centre "
      f"{np.round(person.objpos, 1).tolist()}, scale {person.scale:.3f}, "
      f"{person.flags['n_others']} other people")

# %% [markdown]
# CPM expects one person centred in its square input at a known size. Three ways to say where:
#
# * **centre and scale** (MPII's `objpos` and `scale`);
# * **a box** around the person (from a detector or by hand): centre of the box and
#   `scale = longer side / 200`;
# * **nothing**: the image centre, the person as tall as the image.
#
# The white dashed square is the region the network sees in each case.

# %%
# NBVAL_IGNORE_OUTPUT
j = person.joints[~person.missing]
box = (*j.min(0) - 4, *j.max(0) + 4)
ways = {"centre + scale": dict(center=person.objpos, scale=person.scale),
        "box": dict(box=box), "default (image centre)": {}}
preds = {name: predictor(path, **kw) for name, kw in ways.items()}
fig, axes = plt.subplots(1, 3, figsize=(14, 4.8), layout="constrained")
for ax, (name, pred) in zip(axes, preds.items()):
    viz.draw_prediction(ax, pred, title=f"{name}: scale {pred.person.scale:.2f}")
    draw_skeleton(ax, person.joints - 1, ~person.missing, **TRUTH_STYLE)
add_legend(axes[0])
fig.suptitle("Three ways to place the person: predicted skeleton (bold) over the ground truth")
save_figure(fig, "07_three_placements")
plt.show()

# %% [markdown]
# With the right centre and scale the network sees what it was trained on. The default crop
# holds several people at a smaller size: the network follows whoever is nearest the centre. A
# detector, or a hand-drawn box, is what makes CPM work on real photos.
#
# ## 3. The crop and the way back
#
# The crop is the training crop of notebook 02: a 3x3 matrix `M` maps original 1-based pixels to
# 0-based crop pixels, and `inv(M)` maps the decoded joints back to the original image.

# %%
# NBVAL_IGNORE_OUTPUT
pred = preds["centre + scale"]
print("M =\n", np.round(pred.crop_matrix, 3))
truth = person.joints
err = np.linalg.norm(pred.joints - truth, axis=1)[~person.missing]
head = 0.6 * np.linalg.norm(person.head_box[2:] - person.head_box[:2])
print(f"mean error {err.mean():.1f} px = {err.mean() / head:.2f} head sizes; "
      f"{(err <= 0.5 * head).mean():.0%} of the joints within PCKh@0.5")

# %% [markdown]
# That is the whole chain inside `predictor(path, center=..., scale=...)`. Written out, it is
# five lines: the crop matrix, a bilinear warp, one forward pass, the peak of every map of the
# last stage (refined within its cell, notebook 03), and `inv(M)`:

# %%
from PIL import Image

from cpm_nb.data import preprocess
from cpm_nb.model import heatmaps


def predict_pose(model, image, center, scale, size):
    """Crop -> predict -> decode -> inverse crop: the chain inside ``predictor(...)``."""
    m = preprocess.crop_matrix(center, scale, size)  # original 1-based -> crop 0-based
    crop = np.asarray(preprocess.warp_pil(image, m, size))  # bilinear, grey outside the image
    maps = model.belief_maps(crop[None])[-1][0]  # the last stage's maps [M, M, 16 (+1)]
    xy, conf = heatmaps.decode(maps[..., :16])  # each joint map's peak, in crop pixels
    xy = np.c_[xy, np.ones(len(xy))] @ np.linalg.inv(m).T  # back to the original image
    return xy[:, :2], conf


xy, conf = predict_pose(predictor.model, Image.open(path).convert("RGB"), person.objpos,
                        person.scale, predictor.input_size)
same = np.allclose(xy, pred.joints) and np.allclose(conf, pred.confidence)
assert same
print("predict_pose == predictor(...): joints and confidences", same)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
axes[0].imshow(pred.crop)
draw_skeleton(axes[0], pred.joints_crop)
axes[0].set(title=f"network input ({predictor.input_size} px crop)", xlabel="x (crop px)",
            ylabel="y (crop px)")
viz.draw_prediction(axes[1], pred, title="back on the original image")
draw_skeleton(axes[1], truth - 1, ~person.missing, **TRUTH_STYLE)
add_legend(axes[1])
save_figure(fig, "07_crop_and_original")
plt.show()

# %% [markdown]
# ## 4. Belief maps, stage by stage
#
# Each stage outputs one map per joint on the stride-8 grid. Below, the maps of one wrist and one
# ankle after each stage, over the crop: the first stage only sees local appearance; the later
# ones combine it with the other joints' beliefs and sharpen (or move) the peak.

# %%
# NBVAL_IGNORE_OUTPUT
show = [skeleton.JOINT["r_wrist"], skeleton.JOINT["l_ankle"]]
fig, axes = plt.subplots(len(show), predictor.stages, figsize=(2.6 * predictor.stages, 5.2),
                         layout="constrained", squeeze=False)
s = predictor.input_size
for row, joint in zip(axes, show):
    top = max(max(m[..., joint].max() for m in pred.stage_maps), 1e-3)  # one scale per row
    for t, ax in enumerate(row):
        ax.imshow(pred.crop, alpha=0.5)
        im = ax.imshow(pred.stage_maps[t][..., joint], cmap="magma", alpha=0.6, vmin=0, vmax=top,
                       extent=(-0.5, s - 0.5, s - 0.5, -0.5))
        ax.set(xticks=[], yticks=[], title=f"stage {t + 1}: {skeleton.JOINT_NAMES[joint]}")
    fig.colorbar(im, ax=row, fraction=0.03, label="belief")
fig.suptitle(f"Belief maps after each stage, over the {s}-px crop")
save_figure(fig, "07_stage_maps")
plt.show()

# %% [markdown]
# ## 5. Multi-scale averaging
#
# The paper tests at several scales (0.7 ... 1.3 times the nominal size) and averages the belief
# maps: a joint missed at one scale may be found at another. `scales=` crops the person at each
# factor around the same centre, runs all crops in one batch, resamples every map onto the
# scale-1 grid and averages. Crop $f$ shows the person $f$ times larger, so the centre $p$ of a
# scale-1 cell is the point $h + f (p - h)$ of crop $f$ ($h$: the crop's centre). Reading it
# bilinearly gives weights $w_{ia} = \max(0, 1 - |u_i - a|)$ ($u_i$: that point in cells), zero
# where crop $f$ does not reach; each cell is divided by the weight of the scales that cover it:

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.inference import decoding


def merge_scales(maps, factors, stride=8):
    """Average maps [n_scales, M, M, C] of crops at ``factors`` on the scale-1 crop's grid."""
    n = maps.shape[1]
    half, centre = (n * stride - 1) / 2, (stride - 1) / 2
    p = np.arange(n) * stride + centre  # the scale-1 cells' centres (crop px)
    total, cover = 0.0, 0.0
    for f, one in zip(factors, maps):
        u = (half + f * (p - half) - centre) / stride  # the same points, in cells of crop f
        w = np.maximum(0, 1 - np.abs(u[:, None] - np.arange(n)))  # bilinear weights [n, n]
        total = total + np.einsum("ia,jb,abc->ijc", w, w, one)
        cover = cover + np.outer(w.sum(1), w.sum(1))[..., None]  # 0 where crop f ends
    return total / np.maximum(cover, 1e-6)


prep = predictor.prepare(path, center=person.objpos, scale=person.scale, scales=P.PAPER_SCALES)
per_scale = predictor.forward(prep.crops)[-1]  # the last stage, one map set per scale
print("scale factors (1 first):", prep.scales, "-> maps", per_scale.shape)
same = np.allclose(merge_scales(per_scale, prep.scales),
                   decoding.merge_scales(per_scale, prep.scales))
assert same
print("merge_scales == decoding.merge_scales:", same)

# %% [markdown]
# Does it pay? One scale against seven on validation people (their own centre and scale):

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.evaluation import metrics

people = data.val[: min(len(data.val), 4 * profile.batch_size)]
files = [data.image_dir / p.image for p in people]
gt = np.stack([np.where(p.missing[:, None], np.nan, p.joints) for p in people])
boxes = np.stack([p.head_box.reshape(2, 2) for p in people])
for scales in [(1.0,), P.PAPER_SCALES]:
    out = [predictor(f, center=p.objpos, scale=p.scale, scales=scales, keep_image=False)
           for f, p in zip(files, people)]
    score = metrics.pckh(np.stack([o.joints for o in out]), gt, boxes, ~np.isnan(gt[..., 0]))
    print(f"scales {', '.join(f'{f:g}' for f in sorted(scales))}: PCKh@0.5 {score.mean:.1f} %"
          f" over {len(people)} people")

# %% [markdown]
# Averaging costs one forward pass per scale. Whether it pays depends on how well the network
# already handles size (training augments scales by 0.7-1.3 too); resampling the coarse maps
# also blurs the peaks slightly.
#
# ## 6. Any photo: Grace Hopper
#
# Matplotlib ships a photograph. Any file Pillow reads works (converted to RGB, EXIF rotation
# applied), and so does a NumPy array (`[H, W]` or `[H, W, 3]`, uint8 or floats in 0..1).

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.cbook as cbook

photo = images.load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
gray = photo.mean(axis=-1) / 255.0  # a float grayscale array works as well
h, w = photo.shape[:2]
results = {"RGB photo, default placement": predictor(photo),
           "grayscale array, box on the upper body": predictor(gray, box=(60, 40, w - 60, h))}
fig, axes = plt.subplots(1, 2, figsize=(11, 6.2), layout="constrained")
for ax, (name, r) in zip(axes, results.items()):
    viz.draw_prediction(ax, r, title=name)
    ax.text(5, h - 10, f"mean confidence {r.confidence.mean():.2f}", color="w", fontsize=8)
save_figure(fig, "07_grace_hopper")
plt.show()
print(f"mean confidence: the validation person of section 2 {pred.confidence.mean():.2f}, "
      + ", ".join(f"{name} {r.confidence.mean():.2f}" for name, r in results.items()))

# %% [markdown]
# **Honestly: this goes badly.** The model was trained on synthetic full-body stick figures
# (notebook 02). A head-and-shoulders portrait of a real person is far outside that
# distribution: the network squeezes a whole figure into the head and shoulders, and the
# skeleton is guesswork. Compare the printed mean confidences: a belief map's peak says how much
# a spot looks like a joint *of the training data*, not the probability of being right. Whether
# or not the photo's peaks are lower than the validation person's, its skeleton is wrong, so a
# confidence threshold cannot be trusted to flag such an image. Section 9 shows how to use
# weights trained on MPII's real photos.
#
# ## 7. Explore: any joint, any stage
#
# Pick a joint and a stage to see its belief map over the crop with the decoded position
# (interactive in Jupyter and Colab; a few fixed views when run headless).

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.course.widgets import Choice, Slider, explore


def render(joint="r_wrist", stage=predictor.stages):
    j = skeleton.JOINT[joint]
    maps = pred.stage_maps[int(stage) - 1]
    xy, conf = pred.stage_joints(int(stage))
    fig, ax = plt.subplots(figsize=(4.6, 4), layout="constrained")
    ax.imshow(pred.crop)
    im = ax.imshow(maps[..., j], cmap="magma", alpha=0.55, extent=(-0.5, s - 0.5, s - 0.5, -0.5))
    fig.colorbar(im, ax=ax, fraction=0.05, label="belief")
    crop_xy = np.c_[xy, np.ones(16)] @ pred.crop_matrix.T
    ax.plot(*crop_xy[j, :2], "c+", ms=14, mew=2)
    ax.set(xticks=[], yticks=[], title=f"{joint}, stage {int(stage)}: peak {conf[j]:.2f}")
    plt.show()


views = explore(render, joint=Choice(skeleton.JOINT_NAMES, value="r_wrist",
                                   static=("r_wrist", "head_top")),
                stage=Slider(1, predictor.stages, 1, predictor.stages,
                             static=(1, predictor.stages)))

# %% [markdown]
# ## 8. The command line: `cpm-nb predict`
#
# The same from a terminal, for a batch of files: an overlay PNG and a JSON file per image, with
# joints in original-image pixels, **1-based as in MPII** (subtract 1 for NumPy indices), each
# with its confidence. An unreadable image is reported on one line and skipped.
#
# ```bash
# cpm-nb predict photo.jpg other.png --model runs/<run> --out poses/
# cpm-nb predict img.jpg --model runs/<run> --center 594 257 --scale 3.02 --out poses/ --json
# cpm-nb predict img.jpg --model model.keras --box 120 40 330 600 --scales 0.8 1 1.2 --out poses/
# ```
#
# Here we call it in-process on our validation image:

# %%
# NBVAL_IGNORE_OUTPUT
import json
import tempfile
from pathlib import Path

from cpm_nb.cli import app as cli

out_dir = tempfile.mkdtemp(prefix="cpm_nb_predict_")
cx, cy = person.objpos
cli.main(["predict", str(path), "--model", str(run), "--out", out_dir, "--center", str(cx),
          str(cy), "--scale", str(person.scale)])
record = json.loads((Path(out_dir) / f"{path.stem}_pose.json").read_text())
print(record["pixel_convention"])
print(json.dumps(record["joints"][:2], indent=1))

# %% [markdown]
# ## 9. Weights trained on MPII
#
# To run CPM on real photos, train it on MPII on a GPU (notebook 05), then point the same code
# at that run folder:
#
# ```bash
# cpm-nb prepare mpii --root /content/mpii          # downloads MPII, writes the TFRecords
# cpm-nb --profile gpu train --data mpii --data-dir /content/mpii/tfrecords-368
# cpm-nb predict my_photo.jpg --model runs/gpu-6st-mpii-<hash> --box X1 Y1 X2 Y2 --out poses/
# ```
#
# ```python
# predictor = P.load_predictor("runs/gpu-6st-mpii-<hash>")   # or a copied model.keras
# pose = predictor("my_photo.jpg", box=(x1, y1, x2, y2), scales=P.PAPER_SCALES)
# ```
#
# For deployment, `cpm-nb export --model RUN --out DIR` writes a TensorFlow SavedModel and a
# TFLite file and checks that they give the same belief maps as Keras.

# %% [markdown]
# ## 10. The authors' own model: the released Caffe weights
#
# The authors released their trained networks as Caffe files: a *deploy prototxt* (the network,
# as text) and a *caffemodel* (the weights). The MPII model that `cpm-mpii-release` rebuilds
# (notebook 04) is `model/_trained_MPI/pose_deploy_resize.prototxt` with
# `pose_iter_320000.caffemodel` from
# [convolutional-pose-machines-release](https://github.com/shihenw/convolutional-pose-machines-release)
# (`testing/get_model.sh` downloads the weights). Their licence allows non-commercial use only
# and forbids redistribution: this course ships none of these files, and a converted model keeps
# that licence. Bring the two files and convert them:
#
# ```bash
# cpm-nb convert-caffe --prototxt pose_deploy_resize.prototxt \
#                      --caffemodel pose_iter_320000.caffemodel --out runs/cpm-release --check
# ```
#
# The converter reads both files without Caffe, checks the prototxt layer by layer against our
# network, turns Caffe's `[out, in, kh, kw]` kernels into Keras' `[kh, kw, in, out]`, reverses
# `conv1_1`'s input channels (the release was trained on BGR images) and writes the release's
# preprocessing into `cpm_config.json`. Point `CPM_NB_RELEASE_RUN` at the converted folder:

# %%
# NBVAL_IGNORE_OUTPUT
import os

from cpm_nb.caffe import convert as caffe

release_run = caffe.find_converted(os.environ.get("CPM_NB_RELEASE_RUN"), "../runs/cpm-release",
                                   "/content/drive/MyDrive/cpm_nb/runs/cpm-release")
print("converted release model:", release_run or "none found")

# %% [markdown]
# **The released model on a real photo.** `predict` runs a converted model the way the
# release's test code ran it (`testing/src/applyModel.m`). For each scale it resizes the *whole*
# photo with MATLAB's bicubic `imresize` (antialiased when shrinking), then cuts a 368-px box,
# padded with grey (128), around the person's centre rounded to a whole pixel, with a centre map
# (sigma 21 px) on that pixel. The last stage's maps are upsampled 8x, put back where the box
# lies in the photo and averaged over the scales; each joint is the photo pixel where its map is
# highest, never in the padding. A box gets 4 scales that make it 256, 287, 322 and 361 px tall;
# an MPII centre and scale gets 7 scales, 0.7 ... 1.3 around a 234-px person. The release's 14
# joints are put in MPII order, pelvis and thorax as the midpoints of the hips and of the
# shoulders. On the right: belief maps for the head (yellow), left knee (red), right ankle (blue).

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.course import overlays

if release_run:
    release = P.load_predictor(release_run)
    pose = release(photo, box=(60, 40, w - 60, h))  # the release's multi-scale search
    fig = overlays.prediction_figure(pose, title="the released CPM (MPII), Grace Hopper")
    save_figure(fig, "07_released_cpm")
    plt.show()
else:
    print(caffe.WITHOUT_RELEASE)

# %% [markdown]
# **Scoring it the official way.** With the MPII images (`cpm-nb prepare mpii --root
# /content/mpii` on Colab), the converted model predicts the validation people at their
# annotated centre and scale, and `cpm-nb evaluate-mpii` scores them like the MPII toolkit:
#
# ```python
# gt, pred = caffe.mpii_validation("runs/cpm-release", "scores/", root="/content/mpii")
# ```
# ```bash
# cpm-nb evaluate-mpii --annotations scores/gt_valid.mat --predictions scores/pred.mat
# ```
#
# The published reference is CPM's 88.5 % PCKh@0.5 on the MPII *test* set (the MPII+LSP model;
# 87.95 % trained on MPII alone), both with the paper's 9x9/11x11 network (notebook 04), which
# the converter builds from their `pose_deploy_centerMap.prototxt`; for the VGG-trunk model
# converted here the release's README gives 90.1 %. Validation and test scores differ, so expect
# the same region, not the same digits; and the released models may have been trained on the
# people of the usual validation split (the release's tools can build such a training set), so
# a validation score of a converted release model can be optimistic.

# %% [markdown]
# ## Summary
#
# * A run folder (`model.keras` + `cpm_config.json`) is a complete, safely loadable model.
# * CPM needs to know where the person is: centre + scale, a box, or (poorly) the image centre.
# * Inference is five lines: crop with `M`, predict, decode the last stage's peaks, map back
#   with `inv(M)` (joints in 1-based original-image pixels, each with a confidence).
# * Multi-scale averaging resamples each scale's maps onto the scale-1 grid with one bilinear
#   matrix per scale and averages where the scales reach.
# * A model trained on synthetic figures does not transfer to real photographs: train on MPII.
# * The authors' released MPII model converts into a run folder (`cpm-nb convert-caffe`, keeping
#   the release's licence) and runs the way its authors ran it: the whole image resized with
#   antialiased bicubic `imresize` per scale, a box cut around the rounded centre, the maps put
#   back on the image, each joint its map's highest pixel; a box gets the release's 4 scales.
#   Each step is checked against Pillow, OpenCV and a by-hand re-implementation
#   (`tests/test_release_demo.py`); for practitioners, a conversion checked against OpenCV.
#
# ## Exercises
#
# 1. Draw your own box around one of the *other* people of the validation image and predict
#    their pose. How tight can the box be before the prediction breaks?
# 2. Plot PCKh@0.5 against a scale error: multiply each person's true scale by 0.5 ... 2 before
#    predicting. How much does multi-scale averaging widen the range that works?
# 3. Mirror the crop horizontally, predict, swap left and right joints back
#    (`skeleton.flip_permutation()`) and average with the unmirrored maps (flip testing). Does it
#    help on the validation people?

# %% [markdown]
# ## For practitioners: checking a Caffe conversion without the real file
#
# Random weights in the release's file format check everything except the trained values: we
# write a deploy file and a caffemodel for a small network with the release's layer names (and
# two weightless training layers, as a real snapshot has), convert them, and run both through an
# *independent* Caffe implementation, OpenCV's importer. Every stage's belief maps must agree to
# within 1e-4 of their range; the tests do the same for the full 368-px network and check that a
# BGR/RGB mix-up or a transposed kernel would be caught.

# %%
# NBVAL_IGNORE_OUTPUT
small = architecture.get_config("cpm-mpii-release").replace(input_size=64, width=0.125, stages=3)
folder = Path(tempfile.mkdtemp(prefix="cpm_nb_caffe_"))
proto, weights = caffe.example_files(folder, small)
meta = caffe.convert(proto, weights, folder / "run")
print(f"{meta['caffe']['layers_converted']} convolutions converted, training layers ignored: "
      f"{meta['caffe']['layers_ignored']}")
try:
    for row in caffe.parity(folder / "run", proto, weights):
        print(f"{row['stage']:<14} max |Keras - OpenCV| = {row['relative']:.1e} of the map range")
except ImportError:
    print("OpenCV is missing: pip install 'opencv-python-headless<5' to compare")

# %% [markdown]
# **What "as the authors ran it" changes.** cpm-nb used to run the released model its own way:
# a bilinear warp per crop, the box's longer side as a 234-px person searched over 0.7 ... 1.3,
# and the arg-max on the scale-1 crop, grey padding included. Each step can be put back to
# cpm-nb's way, one at a time, to see how far the joints move from the release's procedure:
#
# * *cpm-nb scales*: 0.7 ... 1.3 around the box's longer side, not the release's 4 scales from
#   the box height;
# * *bilinear warp*: each box cut with a bilinear warp and no antialiasing, not the whole photo
#   resized with antialiased bicubic `imresize` (OpenCV's `cv2.resize(INTER_CUBIC)` never
#   antialiases, so it would not match either);
# * *crop arg-max*: the maps averaged on one crop and the maximum read there, padding included;
# * *cpm-nb before*: all three together.
#
# Without the real weights the small converted network above (random weights) stands in. Its
# maps have no clear peak, so the table shows *which* steps matter, not how far they move a
# trained model's joints: with the released weights (`CPM_NB_RELEASE_RUN`), run the cell again.

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.inference import effects_table, procedure_effects

model = P.load_predictor(release_run or folder / "run")
rows = procedure_effects(model, photo, box=(60, 40, w - 60, h))
print("released weights" if release_run else "random weights (the small example network)")
print(effects_table(rows, joints=True))

# %% [markdown]
# The release's procedure never puts a joint in the padding, and for a box it searches scales
# from the box's *height*; cpm-nb searched from the longer side. Whether each step changes the
# MPII *score* needs the MPII images: run `caffe.mpii_validation` once with the converted run
# and once with `"procedure"` deleted from its `cpm_config.json` (the older path), and score
# both with `cpm-nb evaluate-mpii`.
