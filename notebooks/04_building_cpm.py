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
# # 04 · Building a Convolutional Pose Machine: the released network and the paper's
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cpm-nb/cpm-nb/blob/v0.1.0/notebooks/04_building_cpm.ipynb)
#
# **What you will learn**
#
# * the authors' *released* MPII network as code and as a diagram: a VGG trunk, a stage that looks
#   at the image, and stages that refine the beliefs with more context;
# * to check an implementation against a released model, to the last parameter;
# * the paper's own Fig. 2 network beside it, and why the release moved to a VGG trunk that starts
#   from ImageNet;
# * where the parameters and the FLOPs go;
# * the receptive field of every stage, and how much of it a trained network uses;
# * the centre map that tells the released model *which* person to look at;
# * what an untrained network predicts, and a compiled predict function;
# * why intermediate supervision matters: the gradient reaching the trunk with and without it.

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
# ## 1. The architecture as code
#
# A Convolutional Pose Machine (Wei et al., CVPR 2016) predicts, for every joint $p$, a *belief map*
# $b_t^p$: a score for "joint $p$ is here" at every cell of a grid 8 times coarser than the input,
# in $T$ **stages**. This course builds the network the authors **released** for MPII
# (`pose_deploy_resize.prototxt`), a variant of the paper's Fig. 2 network (section 2 builds that
# one too):
#
# * a **trunk** of 3x3 convolutions and three 2x2 max-pools (VGG-19's first ten layers plus five CPM
#   layers) turns the 368x368 image into 128 feature channels at stride 8;
# * **stage 1** classifies every cell from these local features alone (two 1x1 convolutions);
# * **stage t ≥ 2** refines stage $t-1$'s beliefs, read with the image features, by five 7x7 and two
#   1x1 convolutions. A 7x7 kernel on the stride-8 grid spans 56 input pixels: stage $t$ can use
#   where the *other* joints were believed to be.
#
# `architecture.architecture(config)` is the network as a table of layers with the release's names;
# `build_cpm` turns it into Keras layers and `diagram.draw_architecture` draws it, for any
# configuration. The released network as the course trains it (`source-article`: 16 MPII joints, 6
# stages, 368 px):

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np

from cpm_nb.course import diagram
from cpm_nb.course.viz import save_figure
from cpm_nb.model import architecture, cpm, inputs, network

fig = diagram.draw_architecture("source-article")
save_figure(fig, "04_architecture")
plt.show()

# %% [markdown]
# The image features (orange) go to every stage; each stage's beliefs go to the next stage's
# concatenation (C) *and* to a loss against notebook 03's targets (red, section 7).
#
# ### One refinement stage in Keras
#
# A stage $t \geq 2$ in Keras: concatenate the previous beliefs with the image features, five
# $k \times k$ convolutions, a 1x1 convolution, and a last 1x1 convolution down to one map per
# joint, *linear* because a belief is a score. `cfg.channels(128)` scales a width by the
# configuration's multiplier.

# %%
from keras import layers


def cpm_stage(t, beliefs, features, cfg):
    """Stage t >= 2: refine the beliefs of stage t-1 using the image features."""
    x = layers.Concatenate(name=f"concat_stage{t}")([beliefs, features])
    for i in range(1, 6):
        x = layers.Conv2D(cfg.channels(128), cfg.stage_kernel, padding="same",
                          activation="relu", name=f"Mconv{i}_stage{t}")(x)
    x = layers.Conv2D(cfg.channels(128), 1, activation="relu", name=f"Mconv6_stage{t}")(x)
    return layers.Conv2D(cfg.num_maps, 1, name=f"Mconv7_stage{t}")(x)  # linear

# %% [markdown]
# The trunk and stage 1 are as short. The trunk's layers are the (name, kind, kernel, width) rows of
# `architecture.trunk_layers(cfg)`, all 3x3 in the article's network (section 5 meets some 1x1). The
# first layer, `normalize`, applies CPM's input scaling $x/256 - 0.5$: the model takes raw RGB
# values in 0..255.

# %%
def trunk(image, cfg):
    x = layers.Rescaling(1 / 256, offset=-0.5, name="normalize")(image)
    for name, kind, kernel, width in architecture.trunk_layers(cfg):
        if kind == "conv":
            x = layers.Conv2D(cfg.channels(width), kernel, padding="same", activation="relu",
                              name=name)(x)
        else:  # a 2x2 max-pool: half the resolution
            x = layers.MaxPooling2D(kernel, padding="same", name=name)(x)
    return x


def stage1(features, cfg):
    x = layers.Conv2D(cfg.channels(512), 1, activation="relu", name="conv5_1_CPM")(features)
    return layers.Conv2D(cfg.num_maps, 1, name="conv5_2_CPM")(x)  # linear

# %% [markdown]
# The builder is then a loop: trunk, stage 1, and stages 2..T, each fed the previous stage's
# beliefs. It returns *every* stage's beliefs, so training can attach a loss to each.

# %%
def build_cpm_inline(cfg):
    image = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
    features = trunk(image, cfg)
    beliefs = [stage1(features, cfg)]
    for t in range(2, cfg.stages + 1):
        beliefs.append(cpm_stage(t, beliefs[-1], features, cfg))
    return keras.Model(image, beliefs)  # one output per stage

# %% [markdown]
# `cpm.build_cpm` builds the same network from the layer table (plus the released model's centre-map
# input, section 3). Both must agree in layer names, output shapes and parameter count and, with the
# weights copied across, in the belief maps of a random batch. We check the article's network up to
# the parameter count (30 M) and the stage experiment's small network (section 5), whose trunk mixes
# 3x3 and 1x1 layers, down to the outputs.

# %%
def layer_shapes(model):
    return [(layer.name, tuple(layer.output.shape)) for layer in model.layers]


for name in ["source-article", "stage-experiment"]:
    cfg = architecture.get_config(name)
    mine, ref = build_cpm_inline(cfg), cpm.build_cpm(cfg, seed=0)
    assert layer_shapes(mine) == layer_shapes(ref)
    assert mine.count_params() == ref.count_params() == architecture.count_params(cfg)
    print(f"{name}: {len(mine.layers)} layers, {mine.count_params():,} parameters: identical")
mine.set_weights(ref.get_weights())  # the stage-experiment pair
x = np.random.default_rng(0).uniform(0, 255, (2, cfg.input_size, cfg.input_size, 3))
for a, b in zip(mine(x), ref(x)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
print(f"stage-experiment: the {len(ref.outputs)} stages' belief maps agree on a random batch")

# %% [markdown]
# The layer table gives every layer's kernel, channels, map size, parameters and FLOPs. Stages from
# 3 on repeat stage 2, so we print it up to stage 2:

# %%
table = architecture.format_layer_table("source-article").splitlines()
end = next(i for i, line in enumerate(table) if line.startswith("Mconv7_stage2"))
print("\n".join(table[:end + 1] + ["...  (stages 3 to 6 repeat stage 2)", table[-1]]))

# %% [markdown]
# Each stage's last layer (`conv5_2_CPM`, `Mconv7_stage2`, ...) is an output with its own loss.
#
# ## 2. Checking against the released model
#
# The released MPII model differs from `source-article` in two details: **15 maps** (MPII's joints
# without pelvis and thorax, plus a *background* map, "no joint here"), and a **fourth input
# channel**, a centre map (section 3). The configuration `cpm-mpii-release` reproduces it; both are
# built in Keras and counted against the table and the release:

# %%
for name in ["source-article", "cpm-mpii-release"]:
    net = cpm.build_cpm(name)
    print(f"{name:<17} Keras: {net.count_params():>10,} parameters  table: "
          f"{architecture.count_params(name):>10,}  inputs: {[tuple(t.shape) for t in net.inputs]}")
    print(f"{'':<17} outputs: {len(net.outputs)} x {tuple(net.outputs[0].shape)}, "
          f"named {net.output_names[0]}, ..., {net.output_names[-1]}")
release = net  # the cpm-mpii-release model, used in section 3
print(f"released CPM MPII model: {architecture.RELEASE_PARAMS:,} parameters; match: "
      f"{release.count_params() == architecture.RELEASE_PARAMS}")

# %% [markdown]
# Where does the difference come from? The centre-map channel takes the place of the 16th
# belief map in the input of every `Mconv1` (16 + 128 = 15 + 128 + 1), so only the belief
# *outputs* differ: one map fewer in `conv5_2_CPM` (512 weights + 1 bias) and in each of the
# five `Mconv7` layers (128 + 1).

# %%
print("source-article - release =", architecture.count_params("source-article") - architecture.RELEASE_PARAMS,
      "=", (512 + 1) + 5 * (128 + 1))

# %% [markdown]
# ### The paper's own network (Fig. 2)
#
# The paper's Fig. 2 draws a different network, which the release also ships
# (`pose_deploy_centerMap.prototxt`, its LSP and MPII+LSP models):
#
# * **stage 1** reads the image with its own branch: three **9x9** convolutions, each followed by a
#   3x3 max-pool of stride 2, a 5x5 convolution to 32 channels, then a 9x9 and two 1x1 convolutions
#   to the belief maps;
# * **stages t ≥ 2** take image features $x'$ from a **second branch** of that shape (shared, with a
#   last 5x5 layer per stage), concatenate them with $b_{t-1}$ and the pooled centre map, and refine
#   with three **11x11** convolutions and two 1x1 ones.
#
# In Keras, with the release's layer names (`width` scales the hidden widths; `pool` swaps the
# max-pools for a measurement below):

# %%
def paper_branch(x, t, c, pool):
    """Fig. 2's image branch up to its third pool: 9x9 convolutions, 3x3 pools of stride 2."""
    for i in (1, 2, 3):
        x = layers.Conv2D(c(128), 9, padding="same", activation="relu", name=f"conv{i}_stage{t}")(x)
        x = pool(3, 2, padding="same", name=f"pool{i}_stage{t}")(x)
    return x


def build_paper_cpm(size=368, stages=6, maps=15, width=1.0, pool=layers.MaxPooling2D):
    """The paper's Fig. 2 network, wired as the release's pose_deploy_centerMap.prototxt."""
    def c(n):
        return max(1, round(n * width))

    image = keras.Input((size, size, 3), name="image")
    centre = keras.Input((size, size, 1), name="center_map")
    x = layers.Rescaling(1 / 256, offset=-0.5, name="normalize")(image)
    pooled_centre = layers.AveragePooling2D(9, 8, padding="same", name="pool_center_lower")(centre)
    f = paper_branch(x, 1, c, pool)  # stage 1's own image branch
    f = layers.Conv2D(c(32), 5, padding="same", activation="relu", name="conv4_stage1")(f)
    f = layers.Conv2D(c(512), 9, padding="same", activation="relu", name="conv5_stage1")(f)
    f = layers.Conv2D(c(512), 1, activation="relu", name="conv6_stage1")(f)
    beliefs = [layers.Conv2D(maps, 1, name="conv7_stage1")(f)]
    shared = paper_branch(x, 2, c, pool)  # the second branch, for stages 2..T
    for t in range(2, stages + 1):
        features = layers.Conv2D(c(32), 5, padding="same", activation="relu",
                                 name="conv4_stage2" if t == 2 else f"conv1_stage{t}")(shared)
        y = layers.Concatenate(name=f"concat_stage{t}")([features, beliefs[-1], pooled_centre])
        for i in (1, 2, 3):
            y = layers.Conv2D(c(128), 11, padding="same", activation="relu",
                              name=f"Mconv{i}_stage{t}")(y)
        y = layers.Conv2D(c(128), 1, activation="relu", name=f"Mconv4_stage{t}")(y)
        beliefs.append(layers.Conv2D(maps, 1, name=f"Mconv5_stage{t}")(y))
    return keras.Model([image, centre], beliefs, name="paper_cpm")


def conv_cost(model):
    """Parameters and forward FLOPs (2 k^2 C_in C_out H W per convolution) of a Keras model."""
    params = flops = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            k, c_in, c_out = layer.kernel_size[0], layer.input.shape[-1], layer.filters
            params += k * k * c_in * c_out + c_out
            flops += 2 * k * k * c_in * c_out * layer.output.shape[1] * layer.output.shape[2]
    return params, flops

# %% [markdown]
# Its receptive fields follow from notebook 01's rule, $r \leftarrow r + (k - 1)\,j$ and
# $j \leftarrow j \cdot s$, along the longest path: stage 1's branch, then three 11x11 convolutions
# per later stage at a jump of 8 px ($3 \cdot 10 \cdot 8 = 240$ px a stage). The package's
# calculator (`model.receptive_field`) must agree with a measurement: in a thin copy with positive
# weights and average pools, the centre belief cell's input gradient is non-zero exactly over the
# field.

# %%
import tensorflow as tf

from cpm_nb.model import receptive_field as RF

branch = [RF.Layer("conv1", 9), RF.Layer("pool1", 3, 2), RF.Layer("conv2", 9),
          RF.Layer("pool2", 3, 2), RF.Layer("conv3", 9), RF.Layer("pool3", 3, 2)]
stage1_path = branch + [RF.Layer("conv4", 5), RF.Layer("conv5", 9), RF.Layer("conv6", 1),
                        RF.Layer("conv7", 1)]
later_stage = [RF.Layer(f"Mconv{i}", 11) for i in (1, 2, 3)] + [RF.Layer("Mconv4", 1),
                                                                RF.Layer("Mconv5", 1)]
paper_fields = [RF.receptive_field(stage1_path + later_stage * (t - 1)) for t in range(1, 7)]


def measured_fields(stages=2, size=448):
    """The side of the input region whose gradient reaches the centre cell of each stage."""
    probe = build_paper_cpm(size, stages, width=1 / 16, pool=layers.AveragePooling2D)
    probe.set_weights([np.full(w.shape, 1 / np.prod(w.shape[:-1]), "float32")
                       for w in probe.get_weights()])  # positive: every ReLU on, nothing cancels
    x = tf.Variable(np.random.default_rng(0).uniform(200, 255, (1, size, size, 3)), dtype="float32")
    sides = []
    for t in range(stages):
        with tf.GradientTape() as tape:
            out = probe([x, tf.zeros((1, size, size, 1))])[t]
            centre_cell = tf.reduce_sum(out[0, size // 16, size // 16])
        g = np.abs(tape.gradient(centre_cell, x).numpy()[0]).sum(-1) > 0
        rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
        sides.append(int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1))
    return sides


measured = measured_fields()
assert measured == paper_fields[:2]
print("Fig. 2 fields per stage (px):", paper_fields, "| measured, stages 1-2:", measured)

# %% [markdown]
# The two networks side by side, both with the release's 15 maps and centre map:

# %%
paper = build_paper_cpm()
paper_params, paper_flops = conv_cost(paper)
assert paper_params == paper.count_params()
rows = [("paper, Fig. 2 (9x9, 11x11)", paper_params, paper_flops, paper_fields),
        ("release, VGG trunk (3x3, 7x7)", architecture.count_params("cpm-mpii-release"),
         architecture.flops_per_image("cpm-mpii-release"),
         architecture.stage_receptive_fields("cpm-mpii-release"))]
print(f"{'network':<31} {'parameters':>11} {'GFLOPs':>7}  receptive field per stage (px)")
for name, params, flops, fields in rows:
    print(f"{name:<31} {params:>11,} {flops / 1e9:>7.1f}  {'/'.join(map(str, fields))}")

# %% [markdown]
# The fields are almost the same: the release kept what each stage sees and changed the trunk. Its
# files do not say why; the numbers and the code show two reasons:
#
# * **One trunk instead of two branches.** The paper runs two 9x9 image branches at full resolution;
#   the release computes one trunk for all stages, whose 3x3 stacks reach the same field with more
#   non-linearities and about half the FLOPs.
# * **ImageNet initialisation.** The trunk's first ten layers *are* VGG-19's, so they can start from
#   its ImageNet weights: edge, texture and part detectors that pose training only adjusts.
#   `imagenet.init_trunk_from_vgg19(model)` copies them into `conv1_1` ... `conv4_2`; the `gpu`
#   profile does so when it trains on MPII (notebook 05: what this means for the learning rate). A
#   9x9 branch has no such weights.
# * **Accuracy.** On the MPII test set the release's README reports 90.1 % PCKh@0.5 for the
#   VGG-trunk model, the paper 88.5 % for its Fig. 2 network; training data and schedules differ, so
#   this is no controlled comparison.

# %% [markdown]
# ## 3. The centre map
#
# An MPII image can show several people; a fourth input channel tells the released model which one:
# a Gaussian of $\sigma = 21$ px at the person's centre (the crop centre), a second Keras input
# `center_map`. `pool_center_lower` average-pools it (kernel 9, stride 8) and the result is
# concatenated into every stage from 2 on.
#
# Caffe pools in "ceil" mode: $\lceil (368 - 9)/8 \rceil + 1 = 46$ windows, the last one cut by the
# border. Keras' `padding="same"` gives the same 46x46 grid; `"valid"` would give 45x45.

# %%
rel = architecture.get_config("cpm-mpii-release")
center = inputs.center_map(rel.input_size, rel.center_sigma)
pool = keras.Model(release.inputs[1], release.get_layer("pool_center_lower").output)
pooled = np.asarray(pool(center[None, :, :, None]))[0, :, :, 0]
print("centre map:", center.shape, " pooled:", pooled.shape)

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
axes[0].imshow(center, cmap="magma")
axes[0].set(title=f"Centre map (sigma {rel.center_sigma:g} px)", xlabel="x (px)", ylabel="y (px)")
im = axes[1].imshow(pooled, cmap="magma")
axes[1].set(title="pool_center_lower (46 x 46)", xlabel="x (cells)", ylabel="y (cells)")
fig.colorbar(im, ax=axes[1], label="value")
save_figure(fig, "04_center_map")
plt.show()

# %% [markdown]
# ## 4. Where the parameters and the FLOPs go
#
# The cost of a convolution is $2 \, k^2 \, C_{in} \, C_{out} \, H_{out} W_{out}$ floating-point
# operations (a multiply and an add per weight and output pixel). Per block:

# %%
print(f"{'block':<7} {'convs':>5} {'parameters':>12} {'share':>7} {'GFLOPs':>8} {'share':>7}")
blocks = architecture.block_summary("source-article")
for b in blocks:
    print(f"{b['block']:<7} {b['convs']:>5} {b['params']:>12,} {b['params_share']:>7.1%} "
          f"{b['flops'] / 1e9:>8.2f} {b['flops_share']:>7.1%}")
print(f"total {architecture.count_params('source-article'):>20,} "
      f"{architecture.flops_per_image('source-article') / 1e9:>16.2f}")

# %% [markdown]
# The trunk holds under a third of the parameters but half of the FLOPs (its early layers run at
# full resolution); each refinement stage has about 4 M parameters, mostly in its five 7x7 layers.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
names = [b["block"] for b in blocks]
axes[0].bar(names, [b["params"] / 1e6 for b in blocks], color="tab:blue")
axes[0].set(title="Parameters per block (source-article)", xlabel="block",
            ylabel="parameters (millions)")
axes[1].bar(names, [b["flops"] / 1e9 for b in blocks], color="tab:orange")
axes[1].set(title="Forward FLOPs per image, 368 px", xlabel="block", ylabel="GFLOPs")
save_figure(fig, "04_cost_per_block")
plt.show()

# %% [markdown]
# The course's profiles scale these networks down (input size, stage count, and a width multiplier
# on every hidden channel count, rounded to a multiple of 8): same layer names, far fewer FLOPs. The
# `gpu` profile is the full network; the `cpu` profile uses section 5's `stage-experiment` layers.
# The receptive field depends only on the layers, not on width or input size.

# %%
print(f"{'configuration':<20} {'input':>5} {'stages':>6} {'width':>5} {'params':>11} "
      f"{'GFLOPs/img':>10}  receptive field per stage (px)")
for name in architecture.config_names():
    c = architecture.get_config(name)
    fields = "/".join(str(f) for f in architecture.stage_receptive_fields(c))
    print(f"{c.name:<20} {c.input_size:>5} {c.stages:>6} {c.width:>5} "
          f"{architecture.count_params(c):>11,} {architecture.flops_per_image(c) / 1e9:>10.3f}  {fields}")

# %% [markdown]
# ## 5. The receptive field of every stage
#
# With notebook 01's calculator we follow the longest path from the image to each stage's output.
# Stage $t \geq 2$ sees stage $t-1$'s beliefs, so the path runs through all earlier stages: each
# stage adds five 7x7 convolutions at a jump of 8 px, i.e. $5 \cdot 6 \cdot 8 = 240$ px of field.

# %%
fields = architecture.stage_receptive_fields("source-article")
for t, (f, grow) in enumerate(zip(fields, np.diff([0, *fields])), start=1):
    print(f"stage {t}: receptive field {f:>5} px  (+{grow} px)")
print(f"the paper: stage 1 sees about {architecture.PAPER_STAGE1_FIELD} px")

# %% [markdown]
# As in section 2 and notebook 01, `measure_receptive_field` *measures* a field on a thin copy of
# the network: every weight positive (so nothing cancels and no ReLU switches off), the field is
# where the centre belief cell's input gradient is non-zero.

# %%
for stage in (1, 2, 3):
    print(f"stage {stage}: computed {fields[stage - 1]} px, "
          f"measured {cpm.measure_receptive_field('source-article', stage)} px")

# %% [markdown]
# Stage 1 sees less than half of a 368-px crop: a wrist's neighbourhood, not the whole arm. Stage 2
# sees more than the crop, but not from every cell: a field is centred on its own cell. The centre
# cell sees all of the crop once the field is as wide as the crop; a corner cell sees the opposite
# corner only once *half* its field spans the crop, i.e. at about **twice** the crop.
# `cpm_nb.course.effective_field` does this geometry (cell $(i, j)$ is centred on input pixel
# $(8i + 3.5, 8j + 3.5)$):

# %%
from cpm_nb.course import effective_field as rf

for t, f in enumerate(fields, start=1):
    print(f"stage {t}: {f:>5} px = {f / 368:4.2f} crops; belief cells whose field covers the "
          f"whole crop: {rf.share_seeing_crop('source-article', t):6.1%}")

# %% [markdown]
# So only the very central cells see the whole crop in stage 2, about half of them in stage 3, and
# *every* cell from stage 4 on. The plot follows the field layer by layer.

# %%
rows = architecture.receptive_field_rows("source-article")
depth = np.arange(1, len(rows) + 1)
fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
ax.plot(depth, [r.receptive_field for r in rows], ".-", label="receptive field")
for t, name in enumerate(architecture.get_config("source-article").output_names, start=1):
    i = [r.name for r in rows].index(name)
    ax.annotate(f"stage {t}", (depth[i], rows[i].receptive_field), textcoords="offset points",
                xytext=(-30, 8))
ax.axhline(368, color="gray", ls="--", label="crop (368 px): the centre cell sees all of it")
ax.axhline(2 * 368, color="gray", ls="-.", label="twice the crop: every cell sees all of it")
ax.axhline(architecture.PAPER_STAGE1_FIELD, color="tab:red", ls=":", label="paper, stage 1 (160 px)")
ax.set(title="Receptive field along the network (source-article)", xlabel="layer (depth)",
       ylabel="receptive field (px)", ylim=(0, 1.12 * rows[-1].receptive_field))
ax.legend()
save_figure(fig, "04_receptive_field")
plt.show()

# %% [markdown]
# The stage kernel sets the growth (the paper's network: 11x11). Try `stage_kernel` with the
# control (headless runs show 7 and 11).

# %%
from cpm_nb.course.widgets import Slider, explore


def show_fields(stage_kernel=7):
    c = architecture.get_config("source-article").replace(stage_kernel=stage_kernel)
    f = architecture.stage_receptive_fields(c)
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.bar(range(1, len(f) + 1), f)
    ax.axhline(368, color="gray", ls="--")
    ax.axhline(2 * 368, color="gray", ls="-.")
    ax.set(title=f"Stage kernel {stage_kernel}x{stage_kernel}: "
           f"{architecture.count_params(c) / 1e6:.1f} M parameters", xlabel="stage",
           ylabel="receptive field (px)")
    plt.show()


_ = explore(show_fields, stage_kernel=Slider(3, 13, 2, 7, static=(7, 11)))

# %% [markdown]
# ### The stage experiment's network
#
# Later stages can only add something if stage 1 does *not* already see the whole person. A small
# model with a 128-px crop but the released layers would break this, since fields in pixels stay the
# same:

# %%
article = architecture.get_config("source-article")
for c in (article, article.replace(input_size=128, name="source-article@128px")):
    f = architecture.stage_receptive_fields(c)
    print(f"{c.name:<22} crop {c.input_size:>3} px, stage 1 sees {f[0]} px = "
          f"{f[0] / c.input_size:.2f} crops")

# %% [markdown]
# On a 128-px crop those layers' stage 1 would see more than the whole crop; the released network's
# stage 1 sees less than half of it. So the stage experiment (1 to 6 stages compared, notebook 05)
# and the `cpu` profile use their own configuration, `stage-experiment`: a 128-px crop with the
# released network's *proportions*. `cpm-nb model --config stage-experiment` describes it:

# %%
from cpm_nb.cli import app as cli

_ = cli.main(["model", "--config", "stage-experiment"])

# %% [markdown]
# Stage 1 sees 0.48 of the crop (the paper: about 160/368 = 0.43), and every further stage adds 80
# px of 128 as the released network's stages add 240 px of 368. Two changes give these proportions.
# The stages use 3x3 kernels: five at a jump of 8 px add $5 \cdot 2 \cdot 8 = 80$ px. The trunk
# keeps all its 15 convolutions, names and widths, but only (1, 1, 2, 2) of them per block are 3x3,
# the others 1x1. A 1x1 convolution adds depth (and a ReLU) but no receptive field:

# %%
small = architecture.get_config("stage-experiment")
print(small.trunk, "3x3 convolutions per trunk block:")
print(", ".join(f"{name} {k}x{k}" for name, kind, k, _ in architecture.trunk_layers(small)
                if kind == "conv"))

# %% [markdown]
# What these fields cover on the crop, for the centre and a corner cell of every stage:

# %%
centre, corner = rf.center_cell(small), (0, 0)
lo, hi = rf.field_box(small, small.stages, corner)[0], rf.field_box(small, small.stages, centre)[1]
fig, axes = plt.subplots(1, small.stages, figsize=(2.3 * small.stages, 3), layout="constrained")
for t, ax in enumerate(axes, start=1):
    rf.draw_crop(ax, small, color="k", facecolor="0.85", label="crop (128 px)")
    rf.draw_field_box(ax, small, t, centre, color="tab:blue", label="field: centre cell")
    rf.draw_field_box(ax, small, t, corner, color="tab:red", label="field: corner cell")
    f = architecture.stage_receptive_fields(small)[t - 1]
    ax.set(title=f"stage {t}: {f} px", xlabel="x (px)", ylabel="y (px)" if t == 1 else "",
           xlim=(lo - 8, hi + 8), ylim=(hi + 8, lo - 8), aspect="equal")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
fig.suptitle("Theoretical receptive fields of the stage-experiment network (128-px crop)")
save_figure(fig, "04_field_boxes")
plt.show()

# %% [markdown]
# ### The effective receptive field
#
# The theoretical field says which pixels *can* change a belief cell, not how much they *do*: Luo et
# al. (NeurIPS 2016) showed that a cell's gradient with respect to the input is roughly Gaussian, so
# the *effective* receptive field is much smaller.
# `rf.effective_receptive_field(model, images, stage, cell)` is the mean over validation crops of
# $|\partial(\text{cell's beliefs, summed over the joints}) / \partial\,\text{input}|$, summed over
# the colour channels and normalised to sum 1.
#
# The network is the stage experiment's reference net, seed 0, at twice the experiment's budget
# (`exp.doubled()`; 6 stages in the `cpu` profile, 2 in `fast`):

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.evaluation import evaluate as evaluation
from cpm_nb.training import experiments

exp = experiments.EXPERIMENTS[profile.name].doubled()
run = experiments.trained_run(exp, exp.reference_stages, seed=0)
trained_cfg = exp.config(exp.reference_stages)  # the network as trained (trunk, kernels)
crops, _, _ = evaluation.validation_examples(experiments.data_folder(exp), 16)
print(f"{run.run_dir.name}: {trained_cfg.stages} stages, {len(crops)} validation crops")

# %% [markdown]
# For every stage and both cells, the field and the side of the smallest square around the cell
# holding 50 % and 90 % of the gradient (`rf.mass_extent`):

# %%
# NBVAL_IGNORE_OUTPUT
cells = {"centre": rf.center_cell(trained_cfg), "corner": (0, 0)}
T = trained_cfg.stages
erfs = {(t, where): rf.effective_receptive_field(run.model, crops, t, cell)
        for t in range(1, T + 1) for where, cell in cells.items()}
theory = architecture.stage_receptive_fields(trained_cfg)
for t in range(1, T + 1):
    e50, e90 = (rf.mass_extent(erfs[t, "centre"], cells["centre"], q) for q in (0.5, 0.9))
    print(f"stage {t}: theoretical {theory[t - 1]:>3} px; centre cell: 50 % of the gradient "
          f"within {e50:>3} px, 90 % within {e90:>3} px ({e90 / theory[t - 1]:.0%})")

# %% [markdown]
# Each heat map is relative to its own maximum; dashed cyan: the theoretical field (each panel
# framed to hold it all); grey: the crop; cross: the cell's centre.

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(2, T, figsize=(2.5 * T + 1.2, 5.4), layout="constrained",
                         squeeze=False)
for r, (where, cell) in enumerate(cells.items()):
    for t in range(1, T + 1):
        m = erfs[t, where]  # shown relative to its maximum (an all-zero map stays zero)
        im = rf.show_field(axes[r, t - 1], m / max(m.max(), 1e-30), trained_cfg, t, cell, vmax=1)
        axes[r, t - 1].set(title=f"stage {t}, {where} cell", xlabel="x (px)", ylabel="y (px)")
fig.colorbar(im, ax=axes, shrink=0.8, label="|d belief / d input| (relative to max)")
fig.suptitle("Effective receptive field of the trained stage-experiment network")
save_figure(fig, "04_effective_field")
plt.show()
print("cells whose value does not depend on the input at all:",
      [f"stage {t}, {where}" for (t, where), m in erfs.items() if not m.any()] or "none")

# %% [markdown]
# The effective field is a bright core well inside the theoretical square. In the printed extents:
# does the core grow from stage 1 to stage 2, and keep growing with the theoretical field after
# that? The percentage column is the share of the theoretical field holding 90 % of the gradient.
# The corner cell's square reaches past the crop into zero padding, so its gradient piles up in the
# crop's corner. A cell named in the last line has no gradient on these crops: every ReLU on its
# paths to the input is off, so its beliefs there are constant.

# %% [markdown]
# ## 6. Our model, and what it predicts before training
#
# The rest of the notebook uses the active profile's network (in the `cpu` profile the
# stage-experiment network with 2 stages):

# %%
# NBVAL_IGNORE_OUTPUT
cfg = architecture.from_profile(profile)
net = cpm.build_cpm(cfg)
print(f"{cfg.name}: input {cfg.input_size} px, {cfg.stages} stages, width {cfg.width}, "
      f"{net.count_params():,} parameters, {architecture.flops_per_image(cfg) / 1e6:,.0f} MFLOPs/image")
print("outputs:", {n: tuple(o.shape) for n, o in zip(net.output_names, net.outputs)})

# %% [markdown]
# `make_predict_fn` wraps the model in a compiled function (`tf.function`, optionally with XLA;
# `jax.jit` on JAX) that takes RGB images and returns NumPy belief maps, one array per stage (the
# model has one too: `net.belief_maps(images)`). A batch of synthetic people goes through the
# untrained network:

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.data.pipeline import make_dataset
from cpm_nb.data.synthetic_set import SyntheticSpec, prepare_synthetic
from cpm_nb.model import heatmaps

folder = prepare_synthetic(SyntheticSpec.from_profile(profile)).folder
batches = make_dataset(folder, "val", batch_size=profile.batch_size)
images, joints, visibility = (np.asarray(t) for t in next(iter(batches)))
predict = network.make_predict_fn(net)
beliefs = predict(images)
print(predict.compiled, "->", [b.shape for b in beliefs])

# %% [markdown]
# Eager calls run the model layer by layer from Python; the compiled function runs one graph.
# (`python -m cpm_nb.bench model` measures both on the paper-size model.)

# %%
# NBVAL_IGNORE_OUTPUT
import time

for label, fn in [("eager", lambda x: net(x, training=False)), ("compiled", predict)]:
    fn(images)  # warm-up (tracing)
    start = time.perf_counter()
    for _ in range(3):
        fn(images)
    print(f"{label:>8}: {3 * len(images) / (time.perf_counter() - start):7.1f} images/s")

# %% [markdown]
# Untrained, the belief maps are noise: random filters respond to colour and texture, not to
# joints. Training has to turn them into the targets of notebook 03.

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.core.skeleton import JOINT

joint = JOINT["r_wrist"]
targets = np.asarray(heatmaps.render(joints, visibility, profile.input_size, profile.sigma))
panels = [("input crop", images[0]), ("target", targets[0, ..., joint])] + [
    (f"stage {t + 1}, untrained", b[0, ..., joint]) for t, b in enumerate(beliefs)]
fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 4.4), layout="constrained")
for ax, (title, img) in zip(axes, panels):
    im = ax.imshow(img, cmap=None if img.ndim == 3 else "viridis")
    ax.set_title(title, fontsize=10)
    ax.set(xlabel="x (px)" if img.ndim == 3 else "x (cells)",
           ylabel="y (px)" if img.ndim == 3 else "y (cells)")
    if img.ndim == 2:  # a map: its colour is a value; the bar goes below, clear of the titles
        fig.colorbar(im, ax=ax, location="bottom", shrink=0.85,
                     label="target value" if "target" in title else "belief (a.u.)")
fig.suptitle("The right wrist: its target and the untrained network's belief maps")
save_figure(fig, "04_untrained_beliefs")
plt.show()

# %% [markdown]
# ## 7. Why intermediate supervision matters
#
# CPM's loss is a sum over stages: $F = \sum_{t=1}^{T} \sum_p \lVert b_t^p - b_*^p \rVert^2$.
# Without it, the error signal reaching the early layers must traverse all later stages; the paper
# argues that it then *vanishes*, and shows histograms of gradient magnitudes.
#
# We measure the mean absolute gradient of every convolution kernel over a few batches, with the
# full CPM loss and with the last stage's loss only, on the profile's network with the paper's **six
# stages**: same weights, same batches, only the loss differs.

# %%
from cpm_nb.course import supervision

deep = cpm.build_cpm(cfg.replace(stages=6, name=cfg.name + "-6stages"), seed=0)
grads = {True: [], False: []}
for images, joints, visibility in batches.take(3):
    targets = heatmaps.render(joints, visibility, profile.input_size, profile.sigma)
    for intermediate in grads:
        grads[intermediate].append(supervision.conv_gradient_magnitudes(
            deep, np.asarray(images), np.asarray(targets), intermediate=intermediate))
layer_names = list(grads[True][0])
mean = {k: np.array([np.mean([g[n] for g in v]) for n in layer_names])
        for k, v in grads.items()}

# %%
fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
ax.semilogy(mean[True], ".-", label="all stages supervised (CPM)")
ax.semilogy(mean[False], ".-", label="last stage only")
in_trunk = [i for i, n in enumerate(layer_names) if not n.startswith(("conv5", "Mconv"))]
ax.axvspan(-0.5, in_trunk[-1] + 0.5, color="gray", alpha=0.15, label="trunk")
ax.set(title="Gradient magnitude per layer at initialisation (6 stages)",
       xlabel="convolution layer (depth order: trunk, stage 1, stage 2, ...)",
       ylabel="mean |dL/dW|")
ax.legend()
save_figure(fig, "04_gradients")
plt.show()

# %% [markdown]
# The numbers (profile-dependent, so not compared in CI):

# %%
# NBVAL_IGNORE_OUTPUT
stage_of = {n: ("trunk" if i in in_trunk else "stage " + (n[-1] if n.startswith("M") else "1"))
            for i, n in enumerate(layer_names)}
for part in dict.fromkeys(stage_of.values()):
    idx = [i for i, n in enumerate(layer_names) if stage_of[n] == part]
    w, wo = mean[True][idx].mean(), mean[False][idx].mean()
    print(f"{part:<8} with: {w:.2e}   last stage only: {wo:.2e}   ratio {w / wo:6.1f}x")

# %% [markdown]
# With the last stage's loss alone, the gradient reaching stage 1 and the early refinement stages is
# far smaller, while the last stage's layers get exactly the same gradient (no earlier loss depends
# on them). The trunk fares better than stage 1, because every stage reads its features directly.
# Intermediate supervision gives each stage its own error signal, so all stages train from the
# start. (Whether this changes the *trained* accuracy is another experiment: exercise 1 of notebook
# 05.)

# %% [markdown]
# ## Summary
#
# * The released CPM is a table of layers with the release's names (`cpm_nb.model.architecture`)
#   built from Keras layers alone; `cpm-mpii-release` has exactly the release's 29,852,058
#   parameters. A stage is a few lines of Keras and the builder a loop, equal to `build_cpm` layer
#   for layer.
# * The paper's Fig. 2 network (9x9 image branches, 11x11 stages) sees almost the same fields for
#   about twice the FLOPs; the release's VGG trunk is shared by all stages and can start from
#   ImageNet weights (`init_trunk_from_vgg19`).
# * Half of the FLOPs go to the trunk. Stage 1 sees 164 px (the paper: about 160), each further
#   stage 240 px more; a corner cell sees the whole crop only once the field is about twice the
#   crop. `stage-experiment` (the `cpu` profile's network) keeps these proportions on a 128-px crop.
# * The effective receptive field is a core much smaller than the theoretical field, and stops
#   growing long before it.
# * A pooled Gaussian centre map tells the released model which person to look at; `make_predict_fn`
#   compiles inference; intermediate supervision keeps the early stages' gradient large.
#
# ## Exercises
#
# 1. Build a 3-stage model with `stage_kernel=11`. What does it cost in parameters and FLOPs against
#    6 stages of 7x7, and which sees more?
# 2. Work out by hand why `AveragePooling2D(9, 8, padding="valid")` gives 45x45 on a 368 input, and
#    what the last cell of the `"same"` version averages.
# 3. Repeat the gradient experiment with `stages=2` and `stages=8`. How does the ratio between the
#    two losses at stage 1 change with depth?
# 4. Compute `rf.effective_receptive_field` for the *untrained* stage-experiment network
#    (`cpm.build_cpm("stage-experiment")`) and compare its 90 % extents with the trained ones. Does
#    training widen or narrow the effective field?
# 5. At which stage does every cell of the `cpu` profile's model see the whole crop
#    (`rf.first_stage_seeing_crop`)? And with `stage_kernel=11` in the article's network?
# 6. Compare `cpm-nb model --config cpm-mpii-release --layers` with the released
#    `pose_deploy_resize.prototxt`.
