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
# * to load a trained CPM safely from its run folder or a `.keras` file;
# * to tell the network *where* the person is: centre and scale, a box, or the image centre;
# * the inference chain in five lines: crop, predict, decode, map back;
# * to read the belief maps stage by stage, and the paper's multi-scale test;
# * to run the model on any photo or array, from Python and with `cpm-nb predict`;
# * to use weights trained on real MPII images, or convert and run the authors' Caffe release.

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
# A run of `cpm-nb train` (notebook 05) leaves all that inference needs: `model.keras` (architecture
# and weights, nothing executable) and `cpm_config.json` (joints, input size, stages,
# normalisation). `predict.load_predictor` loads it in Keras **safe mode**, so a file cannot run
# code, and checks it is a CPM of the 16 MPII joints matching its configuration. `T.load_or_train`
# gives the profile's model (in `cpu`, a trained preset shipped with the package);
# `CPM_NB_RETRAIN=1` retrains, first printing the expected steps and time.

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
# A synthetic validation image, never seen in training. As in MPII, each person has a rough centre
# `objpos` and a `scale` (`200 * scale` px is about their height), in **1-based** pixels.

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
# * **a box** from a detector or by hand: its centre, `scale = longer side / 200`;
# * **nothing**: the image centre, the person as tall as the image.

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
# With the right centre and scale the crop looks like training data. The default crop holds several
# smaller people; the network follows the one nearest the centre. On real photos CPM needs a
# detector or a hand-drawn box.
#
# ## 3. The crop and the way back
#
# As in training (notebook 02), a 3x3 matrix `M` maps original 1-based pixels to 0-based crop
# pixels; `inv(M)` maps the decoded joints back.

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
# Written out, `predictor(...)`'s chain is five lines: the crop matrix, a bilinear warp, one forward
# pass, each last-stage map's peak (refined within its cell, notebook 03), and `inv(M)`:

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
# Each stage outputs one map per joint on the stride-8 grid; below, a wrist and an ankle. Stage 1
# sees only local appearance; later stages add the other joints' beliefs and sharpen (or move) the
# peak.

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
# The paper averages the belief maps of crops at 0.7 ... 1.3 times the nominal size: a joint missed
# at one scale may be found at another. `scales=` predicts these crops in one batch and averages
# their maps on the scale-1 grid. Crop $f$ shows the person $f$ times larger, so the centre $p$ of a
# scale-1 cell is the point $h + f (p - h)$ of crop $f$ ($h$: the crop's centre). Read bilinearly,
# that gives weights $w_{ia} = \max(0, 1 - |u_i - a|)$ ($u_i$: the point in cells), zero where crop
# $f$ ends; each cell is divided by the weight of the scales covering it:

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
# Each scale costs a forward pass. Whether it pays depends on how well the network already handles
# size (training augments scale by 0.7-1.3 too); resampling coarse maps also blurs the peaks.
#
# ## 6. Any photo: Grace Hopper
#
# Matplotlib ships a photograph. Any file Pillow reads works (as RGB, EXIF rotation applied), as
# does a NumPy array (`[H, W]` or `[H, W, 3]`, uint8 or floats in 0..1).

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
# **Honestly: this goes badly.** Trained on synthetic full-body stick figures (notebook 02), the
# network squeezes a whole figure into a real head-and-shoulders portrait: the skeleton is
# guesswork. A peak says how much a spot looks like a joint *of the training data*, not how likely
# it is right: whatever the printed confidences, no threshold can flag such an image. Section 9:
# weights trained on MPII's real photos.
#
# ## 7. Explore: any joint, any stage
#
# A joint's belief map at a stage, over the crop, with the decoded position (interactive in Jupyter
# and Colab; fixed views when headless).

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
# Per image, an overlay PNG and a JSON file of joints in original-image pixels, **1-based as in
# MPII** (subtract 1 for NumPy), each with its confidence; an unreadable image is reported on one
# line and skipped.
#
# ```bash
# cpm-nb predict photo.jpg other.png --model runs/<run> --out poses/
# cpm-nb predict img.jpg --model runs/<run> --center 594 257 --scale 3.02 --out poses/ --json
# cpm-nb predict img.jpg --model model.keras --box 120 40 330 600 --scales 0.8 1 1.2 --out poses/
# ```
#
# Here in-process, on our validation image:

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
# For real photos, train on MPII on a GPU (notebook 05) and use that run:
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
# `cpm-nb export --model RUN --out DIR` writes a TensorFlow SavedModel and a TFLite file, checked
# against Keras' belief maps.

# %% [markdown]
# ## 10. The authors' own model: the released Caffe weights
#
# The authors released the MPII model that `cpm-mpii-release` rebuilds (notebook 04) as Caffe files
# in [convolutional-pose-machines-release](https://github.com/shihenw/convolutional-pose-machines-release):
# the network as text, a *deploy prototxt* (`model/_trained_MPI/pose_deploy_resize.prototxt`), and
# the weights, a *caffemodel* (`pose_iter_320000.caffemodel`, downloaded by `testing/get_model.sh`).
# Their licence allows only non-commercial use and forbids redistribution: this course ships
# neither, and a converted model keeps that licence. Convert them:
#
# ```bash
# cpm-nb convert-caffe --prototxt pose_deploy_resize.prototxt \
#                      --caffemodel pose_iter_320000.caffemodel --out runs/cpm-release --check
# ```
#
# Without Caffe, the converter checks the prototxt layer by layer against our network, turns Caffe's
# `[out, in, kh, kw]` kernels into Keras' `[kh, kw, in, out]`, reverses `conv1_1`'s input channels
# (trained on BGR) and writes the release's preprocessing into `cpm_config.json`. Point
# `CPM_NB_RELEASE_RUN` at the converted folder:

# %%
# NBVAL_IGNORE_OUTPUT
import os

from cpm_nb.caffe import convert as caffe

release_run = caffe.find_converted(os.environ.get("CPM_NB_RELEASE_RUN"), "../runs/cpm-release",
                                   "/content/drive/MyDrive/cpm_nb/runs/cpm-release")
print("converted release model:", release_run or "none found")

# %% [markdown]
# **The released model on a real photo.** `predict` runs a converted model as the release's
# `testing/src/applyModel.m` did. Per scale it resizes the *whole* photo with MATLAB's bicubic
# `imresize` (antialiased when shrinking), cuts a 368-px box, grey-padded (128), around the rounded
# centre, with a centre map (sigma 21 px) there, and puts the last stage's maps, upsampled 8x, back
# where the box lies. Averaged over scales, each joint is its map's highest photo pixel, never in
# the padding. A box gets 4 scales making it 256, 287, 322 and 361 px tall; an MPII centre and scale
# gets 7, 0.7 ... 1.3 around a 234-px person. The release's 14 joints go to MPII order (pelvis,
# thorax: midpoints of hips, shoulders).

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
# **Scoring it the official way.** With the MPII images (section 9), the converted model predicts
# the validation people at their annotated centre and scale; `cpm-nb evaluate-mpii` scores them like
# the MPII toolkit:
#
# ```python
# gt, pred = caffe.mpii_validation("runs/cpm-release", "scores/", root="/content/mpii")
# ```
# ```bash
# cpm-nb evaluate-mpii --annotations scores/gt_valid.mat --predictions scores/pred.mat
# ```
#
# Published on the MPII *test* set: CPM 88.5 % PCKh@0.5 (MPII+LSP; 87.95 % MPII alone), both with
# the paper's 9x9/11x11 network (notebook 04; the converter builds it from
# `pose_deploy_centerMap.prototxt`), and 90.1 % for the VGG-trunk model converted here (the
# release's README). On validation expect the same region, not the same digits, and perhaps an
# optimistic score: the released models may have been trained on the usual validation people.

# %% [markdown]
# ## Summary
#
# * A run folder (`model.keras` + `cpm_config.json`) is a complete, safely loadable model.
# * CPM must be told where the person is: centre + scale, a box, or (poorly) the image centre.
# * Inference: crop with `M`, predict, decode the last stage's peaks, map back with `inv(M)` to
#   1-based image pixels, each with a confidence.
# * Multi-scale averaging resamples each scale's maps onto the scale-1 grid and averages where the
#   scales reach.
# * A model trained on synthetic figures does not transfer to real photos: train on MPII.
# * The released MPII model converts into a run folder (`cpm-nb convert-caffe`, under its licence;
#   checked against OpenCV) and runs as its authors ran it, each step tested against Pillow, OpenCV
#   and a by-hand re-implementation (`tests/test_release_demo.py`).
#
# ## Exercises
#
# 1. Box one of the *other* people of the validation image and predict their pose. How tight can the
#    box be?
# 2. Plot PCKh@0.5 against a scale error (each true scale times 0.5 ... 2). How much does
#    multi-scale averaging widen the working range?
# 3. Flip testing: mirror the crop, predict, swap left and right back
#    (`skeleton.flip_permutation()`) and average with the unmirrored maps. Does it help?

# %% [markdown]
# ## For practitioners: checking a Caffe conversion without the real file
#
# Random weights in the release's file format check everything but the trained values: a deploy file
# and a caffemodel for a small network with the release's layer names (plus two weightless training
# layers, as in a real snapshot), converted, and both run through OpenCV's *independent* Caffe
# importer: every stage's maps must agree within 1e-4 of their range. The tests do the same for the
# full 368-px network and check that a BGR/RGB mix-up or a transposed kernel is caught.

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
# **What "as the authors ran it" changes.** Each step of cpm-nb's former way, put back alone, shows
# how far it moves the joints:
#
# * *cpm-nb scales*: 0.7 ... 1.3 around the box's longer side as a 234-px person;
# * *bilinear warp*: each box cut by a bilinear warp, not antialiased (OpenCV's
#   `cv2.resize(INTER_CUBIC)` does not antialias either, so it would not match the release);
# * *crop arg-max*: the maps averaged and their maximum read on the scale-1 crop, padding included;
# * *cpm-nb before*: all three.
#
# Here the small random-weight network stands in: with no clear peaks, it shows *which* steps
# matter, not how far a trained model's joints move; rerun with the released weights
# (`CPM_NB_RELEASE_RUN`).

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.inference import effects_table, procedure_effects

model = P.load_predictor(release_run or folder / "run")
rows = procedure_effects(model, photo, box=(60, 40, w - 60, h))
print("released weights" if release_run else "random weights (the small example network)")
print(effects_table(rows, joints=True))

# %% [markdown]
# Each step's effect on the MPII *score* needs the MPII images: run `caffe.mpii_validation` on the
# converted run and again with `"procedure"` deleted from its `cpm_config.json` (the older path),
# scoring both with `cpm-nb evaluate-mpii`.
