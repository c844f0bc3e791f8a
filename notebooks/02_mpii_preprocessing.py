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
# # 02 · MPII and preprocessing
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cpm-nb/cpm-nb/blob/v0.1.0/notebooks/02_mpii_preprocessing.ipynb)
#
# **What you will learn**
#
# * what an MPII Human Pose annotation holds (joints, visibility, head box, `objpos`, `scale`);
# * the statistics that shape the learning problem: people per image, missing and occluded
#   joints, person sizes; and how the synthetic people differ from MPII's;
# * why CPM crops around one person, and the crop as one 3x3 matrix, written out;
# * the paper's augmentation (scale, rotation, flip with the left/right swap), applied
#   consistently to pixels and joints;
# * TFRecords and the `tf.data` pipeline that feeds training.
#
# Real MPII is a 12.9 GB download, so everything here runs on an embedded **synthetic** dataset in
# the same format; `cpm-nb prepare mpii` fetches the real one. **For practitioners**, at the end:
# `cpm-nb prepare mpii` converting a real photograph, and the pipeline's throughput.

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
# ## 1. The annotation format
#
# The official file `mpii_human_pose_v1_u12_1.mat` is one MATLAB struct, `RELEASE`. For every
# image it lists the people (`annorect`), and for every person:
#
# | field | meaning |
# |---|---|
# | `annopoints.point` | one entry per *annotated* joint: `x`, `y`, `id` (0 r-ankle ... 15 l-wrist), `is_visible` |
# | `x1 y1 x2 y2` | the head box; PCKh measures errors in units of its size |
# | `objpos` | a rough centre of the person |
# | `scale` | person height / 200 px |
#
# plus per image the train/test flag and an activity. `mpii.read_annotations` flattens this into
# one record per person and keeps the file's **1-based** pixels (MATLAB: the top-left pixel's
# centre is (1, 1)). The synthetic set, generated on first use and cached, shows one to three
# articulated figures per image on a cluttered background, sometimes behind occluding objects.

# %%
# NBVAL_IGNORE_OUTPUT
import time

from cpm_nb.data import mpii, synthetic

start = time.perf_counter()
data = synthetic.load_or_generate(profile)
made = mpii.read_json_meta(data.root / "train.json")["seconds"]
print(f"{len(data.train)} training and {len(data.val)} validation people in "
      f"{profile.n_train + profile.n_val} images, ready in {time.perf_counter() - start:.1f} s "
      f"(generated once in {made} s, cached in {data.root})")

# %% [markdown]
# One record, as the reader returns it for real MPII too; the synthetic generator adds `flags`,
# the ground truth of what it drew (other people in the image, occluded joints):

# %%
# NBVAL_IGNORE_OUTPUT
import numpy as np

np.set_printoptions(precision=3, suppress=True, linewidth=100)
person = data.train[0]
print("image", person.image, "| objpos", person.objpos, "| scale", round(person.scale, 3))
print("head box", person.head_box, "| activity", person.activity["name"])
print("visibility (0 missing, 1 occluded, 2 visible):", person.visibility)
print("flags", person.flags)

# %% [markdown]
# Drawn on the image: skeletons, head boxes (white), `objpos` (+) and occluded joints (x).

# %%
import matplotlib.pyplot as plt
from PIL import Image

from cpm_nb.course.viz import draw_people, save_figure

by_image = {}
for p in data.train:
    by_image.setdefault(p.image, []).append(p)
names = [n for n, ps in by_image.items() if len(ps) > 1][:3]
fig, axes = plt.subplots(1, 3, figsize=(10.5, 2.9), layout="constrained")
for ax, name in zip(axes, names):
    draw_people(ax, Image.open(data.image_dir / name), by_image[name],
                title=f"{name}: {len(by_image[name])} people")
save_figure(fig, "02_annotations")
plt.show()

# %% [markdown]
# ### Real MPII, when it is here
#
# The repository's tests use a real slice of the official format: the 2,958 validation people of
# Tompson et al., the split most papers report on, in the file `detections.mat`. If it, or the
# official file fetched by `cpm-nb prepare mpii`, is present, we read it with the same function.
# Its quirks: `is_visible` comes as a number, an empty array or a string; unannotated joints are
# simply absent; coordinates are integers for most joints and floats for neck and head.

# %%
# NBVAL_IGNORE_OUTPUT
from pathlib import Path

from cpm_nb.core.paths import checkout_root

candidates = [*(synthetic.data_dir() / "mpii").glob("**/mpii_human_pose_v1_u12_1.mat"),
              (checkout_root() or Path.cwd()).parent / "shared" / "mpii_reference" / "detections.mat"]
real_file = next((f for f in candidates if f.is_file()), None)
real = [p for p in mpii.read_annotations(real_file) if p.num_annotated] if real_file else []
print(f"real MPII: {len(real)} people from {real_file}" if real
      else "real MPII annotations not found: showing the synthetic set only")
if real:
    print("missing joints per joint:", mpii.missing_counts(real))

# %% [markdown]
# ## 2. Statistics
#
# Four things shape the learning problem: how many people share an image (the crop must pick
# one), how often each joint is annotated and visible, how large people are, and what they do.
# In the real validation set, the frame cuts off ankles and knees most often, and hips, wrists,
# ankles, pelvis and thorax are often marked occluded. The synthetic set is gentler (fewer
# occluded joints in all: the table's last row), its difficulty coming instead from clutter and
# the people around each person. The table under the figure gives the shares per joint.

# %%
# NBVAL_IGNORE_OUTPUT
from matplotlib.patches import Patch

from cpm_nb.core import skeleton

stats = {"synthetic": mpii.statistics(data.train)}
if real:
    stats[f"real MPII ({real_file.name})"] = mpii.statistics(real)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
x = np.arange(16)
for k, (label, s) in enumerate(stats.items()):
    w = 0.4
    axes[0].bar(x + (k - 0.5) * w, s["annotated_per_joint"] / s["people"], w, label=f"{label}: annotated")
    axes[0].bar(x + (k - 0.5) * w, s["visible_per_joint"] / s["people"], w * 0.5, color="k", alpha=0.4)
    axes[1].hist(s["scales"] * 200, bins=np.geomspace(10, 3000, 40), alpha=0.6, label=label)
handles = axes[0].get_legend_handles_labels()[0]
handles.append(Patch(color="k", alpha=0.4, label="visible (dark, inside each bar)"))
axes[0].set(xticks=x, title="Annotated and visible, per joint", ylabel="fraction of people",
            xlabel="joint", ylim=(0, 1.45), yticks=np.linspace(0, 1, 6))
axes[0].set_xticklabels(skeleton.SHORT_NAMES, rotation=90)
axes[0].legend(handles=handles, fontsize=7, loc="upper center")  # above the bars (at most 1)
axes[1].set(title="Person size", xlabel="200 x scale (px, ~ person height)", ylabel="people",
            xscale="log")
axes[1].legend(fontsize=8)
ppi = stats["synthetic"]["people_per_image"]
axes[2].bar(list(ppi), list(ppi.values()))
axes[2].set(title="People per image (synthetic)", xlabel="people in the image",
            ylabel="images", xticks=list(ppi))
save_figure(fig, "02_statistics")
plt.show()

print(f"{'joint':<11}" + "".join(f"{name.split(' (')[0] + ' ' + what:>24}" for name in stats
                                 for what in ("missing", "occluded")))
for j, joint in enumerate(skeleton.JOINT_NAMES):
    cells = []
    for s in stats.values():
        annotated, visible = s["annotated_per_joint"][j], s["visible_per_joint"][j]
        cells += [1 - annotated / s["people"], (annotated - visible) / max(annotated, 1)]
    print(f"{joint:<11}" + "".join(f"{share:>24.0%}" for share in cells))
cells = []
for s in stats.values():
    annotated, visible = s["annotated_per_joint"].sum(), s["visible_per_joint"].sum()
    cells += [1 - annotated / (16 * s["people"]), (annotated - visible) / annotated]
print(f"{'all joints':<11}" + "".join(f"{share:>24.0%}" for share in cells))
print("missing: share of people without the joint; occluded: share of its annotations")

# %% [markdown]
# Real MPII records also carry an activity (20 categories, 410 activities); the synthetic
# figures carry the pose family they were drawn from:

# %%
# NBVAL_IGNORE_OUTPUT
print(stats["synthetic"]["activities"])

# %% [markdown]
# ### Do synthetic people look like MPII people, to the network?
#
# The network sees only the crop around each person, so we compare people *in their crops*
# (`cpm_nb.data.pose_stats`): the joints' extent, limb lengths in units of `200 x scale`, the
# spread of limb directions (circular standard deviation, degrees), elbow and knee bends, joints
# not annotated, and how often another person's joints fall inside the crop. The generator's
# first version drew people too large, upright, straight-limbed, never cut by the frame and
# crowded; version 2 closed those gaps. Measured once (`pose_stats.load_measured()`):

# %%
from cpm_nb.data import pose_stats

measured = pose_stats.load_measured()
print("measured:", measured["about"])
sets = measured["statistics"]
print(f"{'statistic':<34}" + "".join(f"{name:>24}" for name in sets))
for key in ("extent_height median", "extent_width median", "upper arm length median",
            "thigh length median", "elbow bend median", "knee bend median",
            "torso angle spread (deg)", "thigh angle spread (deg)",
            "forearm angle spread (deg)", "not_annotated (share of joints)", "others_in_crop",
            "occluded (share of joints)", "occluded_body (share of joints)",
            "centre offset median"):
    if any(key in sets[name] for name in sets):  # the later keys: not measured for v1
        print(f"{key:<34}" + "".join(f"{sets[name][key]:>24.3f}" if key in sets[name]
                                     else f"{'-':>24}" for name in sets))

# %% [markdown]
# What remains different (last column against the first): synthetic people are wider in the
# crop, their forearms point in fewer directions, their size varies less, and another person's
# joints are in far more crops. The last is on purpose, so that notebook 06's distractor cases
# are frequent enough to measure (MPII's share counts only the other *validation* people, a lower
# bound). None of this measures appearance: flat-coloured figures on clutter are far easier to
# see than people in photographs.
#
# Two more differences are kept on purpose, and they matter for what notebooks 05 and 06
# measure. **Occlusion**: MPII flags far more of its annotated joints as not visible (the
# per-joint table's last row), and the synthetic generator flags a joint only when another
# person or an occluder object covers it, never when the person's own body does (a far arm
# behind the torso). So the "occluded joints" of notebooks 05 and 06 are hidden by *something
# else*: the image shows nothing of the joint and context from the other parts must stand in. It
# is a smaller, purer subset than MPII's, whose occluded joints are often half-visible behind the
# person's own limbs. **Centres**: MPII's `objpos` is a rough centre; the synthetic centre lies
# much closer to the midpoint of pelvis and thorax (the table's `centre offset median`, in person
# heights, where the measurement has it). Every crop is centred on its person, so the crop centre
# is a strong cue to *which* person is meant; a stage 1 that sees about half the crop (notebook
# 05) cannot see where the centre is, a later stage can. The attribution ablation (d) of issue 22
# (`cpm-nb experiment ablations --which d`: a centre map in every stage, as the released model
# has) measures what that cue gives. Changing either would change every trained number of this
# course, so version 2 of the generator keeps both.
#
# With the real annotations at hand, the distributions side by side:

# %%
# NBVAL_IGNORE_OUTPUT
if real:
    fig = pose_stats.plot_comparison(pose_stats.pose_statistics(real),
                                     pose_stats.pose_statistics(data.train))
    save_figure(fig, "02_synthetic_vs_mpii")
    plt.show()
else:
    print("real MPII annotations not found: the table above is the stored measurement")

# %% [markdown]
# ## 3. One person per crop
#
# An image may hold several people, and the network must answer for one of them (notebook 03
# shows why a coordinate regressor cannot, and a belief map can). CPM makes every example a crop
# **centred on one person** (its `objpos`), and gives the network a Gaussian "centre map" saying
# which person is meant. Other people still appear in the crop as distractors, which the network
# must learn to ignore. Below, one image cropped around each of its people.

# %%
from cpm_nb.course.viz import show_crop
from cpm_nb.data import preprocess

name = max(by_image, key=lambda n: len(by_image[n]))
image = np.asarray(Image.open(data.image_dir / name).convert("RGB"))
people = by_image[name]
fig, axes = plt.subplots(1, len(people) + 1, figsize=(2.6 * (len(people) + 1), 2.6),
                         layout="constrained")
draw_people(axes[0], image, people, title="the image")
for ax, p in zip(axes[1:], people):
    crop, j, v, _ = preprocess.crop_person_numpy(image, p.joints, p.visibility, p.objpos,
                                                 p.scale, profile.input_size)
    show_crop(ax, crop, j, v, title=f"crop around person {p.person_index}")
save_figure(fig, "02_multi_person")
plt.show()

# %% [markdown]
# ## 4. The crop as one matrix
#
# A crop is an affine map from original pixels to crop pixels. Following CPM's released training
# code (`target_dist = 1.171` at 368 px), `200 x scale` original pixels become
# `PERSON_FRACTION = 1.171 x 200 / 368 = 0.636` of the crop side, and `objpos` lands in the
# centre. With crop side $S$, scale factor $f$, rotation $\theta$ and an optional mirror $F$:
#
# $$M = T\!\left(\tfrac{S-1}{2}\right)\, F\, s\,R(\theta)\, T(-\mathbf{c}), \qquad
#   s = \frac{S \cdot 0.636 \cdot f}{200\,\mathrm{scale}}$$
#
# $T(\mathbf{c})$ is the translation by $\mathbf{c}$ = `objpos`. $M$ maps the file's 1-based
# pixels to the crop's 0-based pixel centres. The 1-based shift needs no term of its own: a point
# and `objpos` are both 1-based, and only their difference is scaled and rotated; the centre of
# the 0-based crop is $(S-1)/2$. So the translation column of $M$ (no rotation, no flip) is
# $(S-1)/2 - s\,\mathbf{c}$. Written out, with the person fraction as a parameter:

# %%
def translation(tx, ty):
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def crop_matrix_by_hand(center, scale, size, rotation=0.0, scale_factor=1.0, flip=False,
                        person_fraction=preprocess.PERSON_FRACTION):
    """3x3 matrix: original 1-based (x, y, 1) -> 0-based crop (x, y, 1) of side ``size``."""
    s = size * person_fraction * scale_factor / (200.0 * scale)  # crop px per original px
    t = np.radians(rotation)
    rotate = np.array([[s * np.cos(t), s * np.sin(t), 0],  # y points down: counter-clockwise
                       [-s * np.sin(t), s * np.cos(t), 0],  # on screen
                       [0, 0, 1]])
    mirror = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    half = (size - 1) / 2
    return translation(half, half) @ mirror @ rotate @ translation(-center[0], -center[1])


rng = np.random.default_rng(0)
for _ in range(100):
    args = (rng.uniform(1, 1000, 2), rng.uniform(0.3, 5), int(rng.choice([128, 368])),
            rng.uniform(-40, 40), rng.uniform(0.7, 1.3), bool(rng.integers(2)))
    assert np.allclose(crop_matrix_by_hand(*args), preprocess.crop_matrix(*args), atol=1e-9)
print("crop_matrix_by_hand == cpm_nb.data.preprocess.crop_matrix on 100 random crops:", True)

M = crop_matrix_by_hand(center=(100, 80), scale=1.0, size=368)
s = preprocess.pixel_scale(1.0, 368)
print(M.round(4))
print(f"translation (S-1)/2 - s*c = {183.5 - s * 100:.4f}, {183.5 - s * 80:.4f} (s = {s:.4f})")
print("objpos ->", preprocess.apply_matrix(M, (100, 80)), "(the crop centre, (368-1)/2)")

# %% [markdown]
# Going back: a point mapped by `M` and then by `inv(M)` returns exactly, up to float rounding,
# so `inv(M)` maps a prediction in the crop to the original file's pixels.

# %%
rng = np.random.default_rng(0)
pts = rng.uniform(1, 1000, (16, 2))
back = preprocess.apply_matrix(np.linalg.inv(M), preprocess.apply_matrix(M, pts))
print("round trip exact to 1e-9 px:", bool(np.abs(back - pts).max() < 1e-9))

# %% [markdown]
# ## 5. Augmentation
#
# The paper augments every training example with a random **scale** factor in [0.7, 1.3], a
# **rotation** in [-40, 40] degrees and a horizontal **flip** with probability 1/2. They are all
# parameters of the same matrix $M$, so pixels and joints move together. A flip needs one more
# step: the person's right wrist now appears where a left wrist would, so the joint *labels* are
# swapped (`skeleton.FLIP_PAIRS`). Each augmentation on its own:

# %%
p = next((q for q in data.train if q.num_annotated == 16 and len(q.flags["occluded"]) == 1),
         data.train[0])  # a fully annotated person with one occluded joint (x)
img = np.asarray(Image.open(data.image_dir / p.image).convert("RGB"))
settings = {"no augmentation": preprocess.Augmentation(),
            "scale x0.7": preprocess.Augmentation(scale_factor=0.7),
            "scale x1.3": preprocess.Augmentation(scale_factor=1.3),
            "rotation +40 deg": preprocess.Augmentation(rotation=40),
            "horizontal flip": preprocess.Augmentation(flip=True)}
fig, axes = plt.subplots(1, 5, figsize=(12.5, 2.7), layout="constrained")
for ax, (label, aug) in zip(axes, settings.items()):
    crop, j, v, _ = preprocess.crop_person_numpy(img, p.joints, p.visibility, p.objpos,
                                                 p.scale, profile.input_size, aug)
    show_crop(ax, crop, j, v, title=label)
save_figure(fig, "02_augmentations")
plt.show()

# %% [markdown]
# Combine them with the sliders (in a static rendering: one setting).

# %%
from cpm_nb.course.widgets import Choice, Slider, explore


def render(rotation=0.0, scale_factor=1.0, flip="no"):
    aug = preprocess.Augmentation(rotation, scale_factor, flip == "yes")
    crop, j, v, _ = preprocess.crop_person_numpy(img, p.joints, p.visibility, p.objpos,
                                                 p.scale, profile.input_size, aug)
    fig, ax = plt.subplots(figsize=(3.0, 3.0), layout="constrained")
    show_crop(ax, crop, j, v, f"rotation {rotation:+.0f} deg, scale x{scale_factor}, "
              f"flip {flip}")
    save_figure(fig, "02_augment_explorer")
    plt.show()


_ = explore(render, rotation=Slider(-40, 40, 5, 0, static=(-30,)),
            scale_factor=Slider(0.7, 1.3, 0.1, 1.0, static=(1.2,)),
            flip=Choice(("no", "yes"), static=("yes",)))

# %% [markdown]
# Check the colours: after a flip, the warm-coloured (right-side) limbs are still the person's
# right limbs, now on the image's right. Without the label swap the network would be taught that
# a right wrist sometimes looks like a left one.
#
# ## 6. TFRecords
#
# Decoding a whole photo for every example is what makes simple loaders slow. `cpm-nb prepare`
# stores, per person, a JPEG **context crop**: the person at training resolution, in a crop wide
# enough for every augmentation (zoom out 0.7 and rotate 40 degrees, printed below). Bad input is
# counted, never silently kept: missing images, bad scales, people without joints, joints outside
# the image, grayscale and CMYK JPEGs (converted).

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.data import pipeline
from cpm_nb.data.synthetic_set import SyntheticSpec, prepare_synthetic

widest = 1 / 0.7 * (np.cos(np.radians(40)) + np.sin(np.radians(40)))
print(f"zoom out 0.7 and rotate 40 deg: the crop needs {widest:.2f} crop widths of context; "
      f"stored: {preprocess.CONTEXT:g}")
start = time.perf_counter()
prepared = prepare_synthetic(SyntheticSpec.from_profile(profile))
tfrecord_dir = prepared.folder
print(f"TFRecords ready in {time.perf_counter() - start:.1f} s: {tfrecord_dir}")
for split, s in prepared.splits.items():
    size = sum((tfrecord_dir / f).stat().st_size for f in s["files"]) / 2**20
    print(f"  {split:<5} kept {s['kept']:>5}  skipped {s['skipped'] or 'none'}  "
          f"{len(s['files'])} shard(s), {size:.1f} MB")

# %% [markdown]
# Each record is a `tf.train.Example`: the JPEG bytes, joints and visibility in context-crop
# pixels, and what evaluation needs to go back to the original image.

# %%
import tensorflow as tf

raw = next(iter(tf.data.TFRecordDataset(sorted(map(str, tfrecord_dir.glob("val-*"))))))
example = tf.train.Example.FromString(raw.numpy())
for key, feature in sorted(example.features.feature.items()):
    kind = feature.WhichOneof("kind")
    n = len(getattr(feature, kind).value)
    print(f"{key:<13} {kind:<10} {n:>3} value(s)")

# %% [markdown]
# ## 7. The `tf.data` pipeline
#
# `pipeline.make_dataset` interleaves the shards, shuffles, decodes only the part of the context
# crop that the drawn augmentation needs, warps it with one bilinear resampling, transforms the
# joints, batches and prefetches, all in parallel. Random draws are keyed by the seed and the
# example's position, so `deterministic=True` gives the same batches every run. A batch is
# `(images uint8 [B,S,S,3], joints float32 [B,16,2], visibility int32 [B,16])`, joints in 0-based
# crop pixels; the label maps are drawn from the joints later, on the accelerator (notebook 03).

# %%
train = pipeline.make_dataset(tfrecord_dir, "train", batch_size=profile.batch_size,
                              seed=profile.seed, deterministic=True)
images, joints, visibility = next(iter(train))
print("images", images.dtype.name, "| joints", joints.dtype.name, joints.shape[1:],
      "| visibility", visibility.dtype.name, visibility.shape[1:])

# %%
fig, axes = plt.subplots(1, 5, figsize=(12.5, 2.8), layout="constrained")
for k, ax in enumerate(axes.ravel()):
    show_crop(ax, images[k].numpy(), joints[k].numpy(), visibility[k].numpy(),
              title=f"training example {k}")
fig.suptitle("An augmented training batch (random scale, rotation and flip)")
save_figure(fig, "02_batch")
plt.show()

# %% [markdown]
# For evaluation, the validation split is read once, in order, without augmentation, and with
# `with_meta=True` each example also carries its crop matrix, so predictions can be mapped back
# with `inv(M)` and scored against the original joints and head box:

# %%
val = pipeline.make_dataset(tfrecord_dir, "val", batch_size=4, with_meta=True)
*_, meta = next(iter(val))
print(sorted(meta))

# %% [markdown]
# ## Summary
#
# * An MPII record is a list of joints with visibility, a head box, a rough centre and a scale;
#   missing joints are common (ankles), and the file's 1-based pixels are handled once, in one
#   place: the crop matrix.
# * CPM trains on person-centric crops: `objpos` at the centre, `200 x scale` at
#   `PERSON_FRACTION` of the side. Distractor people remain in the crop.
# * Measured in their crops, synthetic people match MPII's size, limb lengths, bent limbs and
#   truncation; they remain wider, less varied in forearm direction, more crowded, and far easier
#   to see; occlusion (fewer occluded joints, no self-occlusion) and centre precision (tighter
#   than MPII's `objpos`) are kept different on purpose (section 2).
# * Scale, rotation and flip are parameters of one 3x3 matrix (a dozen lines, equal to
#   `preprocess.crop_matrix`), so pixels and joints stay consistent; a flip also swaps left and
#   right labels. `inv(M)` maps predictions back.
# * Context crops in TFRecords and augmentation in `tf.data` keep the input pipeline fast.
#
# ## Exercises
#
# 1. Crop the image of section 3 around each person with a smaller person fraction:
#    `M = crop_matrix_by_hand(p.objpos, p.scale, S, person_fraction=0.4)`, then
#    `preprocess.warp_numpy(image, M, S)` and `preprocess.transform_joints(p.joints,
#    p.visibility, M)`, and draw it with `show_crop`. What happens to the distractors? What would
#    a network gain and lose?
# 2. Remove the left/right swap from `transform_joints` and look at a flipped crop's colours.
#    What would the network learn about right wrists?
# 3. Find the fraction of synthetic people with at least one occluded joint, per number of other
#    people in the image (`flags["n_others"]`). Does crowding hide joints?
# 4. Time `make_dataset` with `deterministic=True` and `False`. Why can the non-deterministic
#    order be faster?

# %% [markdown]
# ## For practitioners: converting real MPII
#
# The synthetic set skips what real MPII needs: reading the official `.mat` file, finding each
# person's photo, cropping it. To watch `cpm-nb prepare mpii` do that on real pixels without the
# 12.9 GB download, we build a **miniature MPII**: matplotlib's photograph, annotated by hand in
# the official layout, next to the files the command expects. Two images: the photo as it is, and
# a grayscale copy (MPII contains a few grayscale JPEGs; they must be converted, and counted).
# The commands for the full dataset are in the README ("Real MPII").

# %%
# NBVAL_IGNORE_OUTPUT
import shutil
import tempfile

import matplotlib.cbook as cbook

root = Path(tempfile.mkdtemp(prefix="mini_mpii_"))
(root / "images").mkdir()
photo_file = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
shutil.copy(photo_file, root / "images" / "grace_hopper.jpg")
Image.open(photo_file).convert("L").save(root / "images" / "grace_hopper_gray.jpg")
print("working in", root)

# %% [markdown]
# **The annotation, by hand**, in 1-based pixels: head top, upper neck, thorax, both shoulders,
# and a right elbow guessed *below* the frame (y = 660), which the converter must drop, as in real
# MPII. `objpos` is the middle of the visible person, `scale` its height / 200 px. The first image
# also gets a person without joints, and a third image is listed that is not in `images/`.
# `mpii.write_release_mat` stores it as an official `RELEASE` struct; `detections.mat` names the
# validation person (image 2, person 1), like Tompson et al.'s split file.

# %%
from scipy.io import savemat

J = skeleton.JOINT
hopper = {"objpos": (258, 330), "scale": 3.0, "head_box": (150, 20, 375, 345),
          "points": [(J["head_top"], 262, 24, 1), (J["upper_neck"], 258, 345, 1),
                     (J["thorax"], 258, 415, 1), (J["r_shoulder"], 100, 425, 1),
                     (J["l_shoulder"], 415, 415, 1), (J["r_elbow"], 60, 660, 0)]}
no_joints = {"objpos": (60, 300), "scale": 1.5}
mini = [{"name": "grace_hopper.jpg", "people": [hopper, no_joints]},
        {"name": "grace_hopper_gray.jpg", "people": [hopper]},
        {"name": "lost.jpg", "people": [hopper]}]  # listed, but not on disk
annotation_file = mpii.write_release_mat(root / "mpii_human_pose_v1_u12_1.mat", mini)
savemat(root / "detections.mat", {"RELEASE_img_index": [[2]], "RELEASE_person_index": [[1]]})
mini_people = mpii.read_annotations(annotation_file)
print(f"{len(mini_people)} people read back from {annotation_file.name}")

# %% [markdown]
# Read back with the same `mpii.read_annotations` as the real file, and drawn (head box white,
# `objpos` +):

# %%
fig, ax = plt.subplots(figsize=(4.2, 4.8), layout="constrained")
draw_people(ax, Image.open(root / "images" / "grace_hopper.jpg"), mini_people[:1],
            title="grace_hopper.jpg, annotated by hand")
ax.set(xlabel="x (px, 1-based)", ylabel="y (px, 1-based)")
save_figure(fig, "02_mini_mpii_annotation")
plt.show()

# %% [markdown]
# **The conversion**: the command itself, called in-process with `cli.main`, the same code path
# as typing it in a terminal. `--annotations`, `--images` and `--split-file` point at our files
# and `--no-download` makes sure nothing is fetched. It prints its summary:

# %%
# NBVAL_IGNORE_OUTPUT
import json

from cpm_nb.cli import app as cli

start = time.perf_counter()
status = cli.main(["prepare", "mpii", "--root", str(root), "--annotations", str(annotation_file),
                   "--images", str(root / "images"), "--split-file", str(root / "detections.mat"),
                   "--input-size", str(profile.input_size), "--no-download", "--quiet",
                   "--json-out", str(root / "summary.json")])
print(f"exit status {status}, {time.perf_counter() - start:.1f} s")

# %% [markdown]
# The same summary as JSON (`--json-out`): every person is accounted for, kept or skipped with
# its reason, and every repair is counted.

# %%
summary = json.loads((root / "summary.json").read_text())
assert status == 0 and summary["people_read"] == 4
for split, s in summary["splits"].items():
    print(f"{split:<5} kept {s['kept']}  skipped {dict(sorted(s['skipped'].items())) or 'none'}")
    print(f"{'':<5} fixed {dict(sorted(s['fixed'].items())) or 'none'}")

# %% [markdown]
# Train kept one person (the rectangle without joints and the person of the missing photo were
# skipped), validation kept the grayscale copy (converted to RGB); in both, the elbow below the
# frame was dropped. Each kept person is now one record: the context crop as JPEG, its joints in
# crop pixels, and what evaluation needs to map back. We read the shards with
# `cpm_nb.io.records` (plain Python, no TensorFlow) and draw them, then the validation person as
# the training pipeline hands it to the network. Like every person, the photo's visible height
# spans `PERSON_FRACTION` of the crop side (printed); where the crop reaches beyond the photo it
# is grey.

# %%
# NBVAL_IGNORE_OUTPUT
import io

from cpm_nb.io import records

out = Path(summary["out"])
fig, axes = plt.subplots(1, 3, figsize=(11, 3.9), layout="constrained")
for ax, split in zip(axes, ("train", "val")):
    record = records.read_examples(next(out.glob(f"{split}-*.tfrecord")))[0]
    crop = np.asarray(Image.open(io.BytesIO(record["image"])))
    show_crop(ax, crop, record["joints"].reshape(16, 2), record["visibility"],
              title=f"{split} record: {record['image_name'].decode()}, "
                    f"{crop.shape[0]} px context crop")
net_in, net_joints, net_vis = next(iter(pipeline.make_dataset(out, "val", batch_size=1)))
show_crop(axes[2], net_in[0].numpy(), net_joints[0].numpy(), net_vis[0].numpy(),
          title=f"val: network input, {profile.input_size} px")
fig.suptitle("From the photo to the records: crops centred on objpos, joints carried along")
save_figure(fig, "02_mini_mpii_records")
plt.show()
visible_height = hopper["scale"] * 200
share = preprocess.pixel_scale(hopper["scale"], profile.input_size) * visible_height
print(f"{visible_height:.0f} px of visible height -> {share / profile.input_size:.3f} of the "
      f"{profile.input_size}-px crop side (PERSON_FRACTION = {preprocess.PERSON_FRACTION:.3f})")

# %% [markdown]
# ## For practitioners: throughput
#
# How fast is the pipeline? We time it against what common PyTorch pose loaders do, one example
# at a time: open the photo with PIL, warp the crop with SciPy (`preprocess.warp_numpy`, the reference)
# or with PIL's C resampler, transform the joints. Wall-clock rates depend on what else the
# machine is doing, so the table also shows the CPU time per example and the rate it implies on
# idle cores. The paper's 368 px case is measured by `python -m cpm_nb.bench pipeline`.

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb import bench
from cpm_nb.bench import pipeline as pipeline_bench

result = pipeline_bench.compare_throughput(data.train, data.image_dir, tfrecord_dir,
                                           batch_size=profile.batch_size, seconds=2.0)
bench.print_table(f"augmented {profile.input_size}-px examples per second on this machine",
                  pipeline_bench.throughput_rows(result))

# %% [markdown]
# At small crops from small photos all of them outrun what a CPU can train on, and a per-sample
# PIL loader costs about as much CPU per example as our pipeline: the gain is parallelism. At the
# paper's 368 px from MPII-sized photos the pipeline also needs less CPU per example, because it
# decodes a small context crop instead of the whole photo (`python -m cpm_nb.bench pipeline`;
# figures in the README).
