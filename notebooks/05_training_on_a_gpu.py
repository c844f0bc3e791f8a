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
# # 05 · Training on a GPU
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cpm-nb/cpm-nb/blob/v0.1.0/notebooks/05_training_on_a_gpu.ipynb)
#
# **What you will learn**
#
# * the CPM loss with **intermediate supervision**: one target per stage, summed, and one
#   training step written out;
# * the optimizer settings, and what **ImageNet initialisation** of the trunk buys;
# * reading **learning curves** (loss per stage, validation PCKh) and scoring a trained model;
# * the source article's experiment done fairly: **1, 2, 3, 4 and 6 stages** at equal compute,
#   three seeds each, checked with longer runs, and a joint followed through the stages.
#
# We train the network of notebook 04 on the synthetic people of notebook 02, with the targets
# of notebook 03. On a CPU the `cpu` profile loads a trained preset; on a Colab GPU the `gpu`
# profile is the paper's network. Input pipelines, mixed precision and checkpoints are in
# "For practitioners" at the end.

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

profile = cpm_nb.setup(seed=0, wants_gpu=True)

# %% [markdown]
# ## 1. The loss: every stage is supervised
#
# Stage $t$ outputs belief maps $b_t^p$ for every joint $p$; the target $b_*^p$ is the Gaussian
# of notebook 03 at the true joint. CPM puts a loss on *every* stage, the same one the released
# CPM was trained with (Caffe's `EuclideanLoss`: half the summed squared error per image):
#
# $$ L_t = \frac{1}{N}\sum_{n}\tfrac{1}{2}\sum_{z,p}\big(b_t^p(z) - b_*^p(z)\big)^2,
#    \qquad \text{objective} = \sum_{t=1}^{T} L_t + \tfrac{\lambda}{2}\sum \|W\|^2 $$
#
# With this scale the paper's learning rate ($8\cdot10^{-5}$) and weight decay
# ($\lambda = 5\cdot10^{-4}$, an L2 loss on every kernel) apply unchanged. In code it is one Keras
# loss, `cpm_nb.training.loss.CPMLoss`, applied to each stage's output. Its ground truth is the
# joints and visibility packed into one `[B, 48]` tensor; the target maps are rendered *inside*
# the compiled step, so no label maps are stored.

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.data import batches as data
from cpm_nb.model import cpm as M
from cpm_nb.model import heatmaps
from cpm_nb.model.targets import pack_targets_numpy
from cpm_nb.training import config as TC
from cpm_nb.training import loop as T
from cpm_nb.training import loss as L
from cpm_nb.training import runs

cfg = TC.train_config(profile)
folder = T.data_dir(cfg)
stream = data.tf_training_dataset(folder, cfg.batch_size, cfg.seed).as_numpy_iterator()
images, joints, vis = next(stream)
targets = heatmaps.render(joints, vis, cfg.input_size, cfg.sigma)
net = M.build_cpm(cfg.model, seed=0)
outputs = net(images, training=False)
print(f"{len(outputs)} stages, each {tuple(outputs[0].shape)}; targets {tuple(targets.shape)}")

# %% [markdown]
# Where the losses attach: the diagram of notebook 04, drawn from the layer table of this
# profile's network. Every stage ends in belief maps, and every belief map has its loss.

# %%
import matplotlib.pyplot as plt

from cpm_nb.course import diagram
from cpm_nb.course.viz import save_figure

fig = diagram.draw_architecture(cfg.model)
fig.suptitle(f"The {profile.name} profile's CPM: a loss on every stage's belief maps")
plt.show()

# %% [markdown]
# Each stage's term sends its own gradient into the trunk (notebook 04, section 7). `CPMLoss`
# on the packed joints equals the loss computed by hand from the rendered maps:

# %%
import numpy as np


def stage_loss(belief, target):
    """Caffe's EuclideanLoss: half the summed squared error per image, mean over the batch."""
    return np.mean(0.5 * np.sum((np.asarray(belief) - np.asarray(target)) ** 2, axis=(1, 2, 3)))


def cpm_objective(beliefs, target):
    """Intermediate supervision: the same target for every stage, the losses summed."""
    return sum(stage_loss(b, target) for b in beliefs)


# %%
# NBVAL_IGNORE_OUTPUT
cpm_loss = L.CPMLoss(cfg.input_size, cfg.sigma)
packed = pack_targets_numpy(joints, vis)
per_stage = [float(cpm_loss(packed, o)) for o in outputs]
by_hand = [stage_loss(o, targets) for o in outputs]
np.testing.assert_allclose(per_stage, by_hand, rtol=1e-4)  # the package's loss == ours
print("untrained loss per stage:", ", ".join(f"{v:.2f}" for v in per_stage))
print(f"objective (sum over stages): {cpm_objective(outputs, targets):.2f}")
print(f"as a mean squared error: divide by M^2 J / 2 = {L.mse_scale(cfg.map_size):g}")

# %% [markdown]
# The optimizer follows the profile and the data. On real MPII the `gpu` profile uses the
# released model's solver (SGD, momentum 0.9, the paper's learning rate, a step decay, an
# ImageNet-initialised trunk); on synthetic people every profile uses Adam after a warm-up:

# %%
from cpm_nb.core.config import resolve_profile

for name, source in (("fast", "synthetic"), ("cpu", "synthetic"), ("gpu", "synthetic"),
                     ("gpu", "mpii")):
    c = TC.train_config(resolve_profile(name), data=source)
    print(f"{name:>4} on {source:<9}: {c.optimizer:<4} lr {c.learning_rate:g}, {c.schedule} "
          f"schedule (warm-up {c.warmup_steps}, decay every {c.lr_decay_steps or '-'}), "
          f"batch {c.batch_size}, {c.steps:,} steps, {c.input_size} px, {c.stages} stages, "
          f"trunk init {c.init}")

# %% [markdown]
# **ImageNet initialisation.** The paper does not train its trunk from scratch: the first ten
# convolutions start from the weights VGG-19 learned on ImageNet's million photographs (edges,
# textures, parts of objects), so pose training only *adjusts* features that already describe
# real images. The paper's learning rate, $8\cdot10^{-5}$, is such a fine-tuning rate; from
# random weights it barely moves in a short budget, hence Adam for the small profiles.
# `cpm_nb.model.imagenet.init_trunk_from_vgg19(model)` copies VGG-19's `block1_conv1` ...
# `block4_conv2` into `conv1_1` ... `conv4_2` (through `keras.applications`; offline it says so
# and the trunk stays random); `init="imagenet"` does it before the first step, the default of
# the `gpu` profile on MPII. Our synthetic people look nothing like ImageNet, so the synthetic
# runs start from random weights.

# %% [markdown]
# **One training step, by hand.** Run the network, compute the objective (every stage's loss
# plus the L2 terms in `net.losses`), take its gradient with respect to every weight, and move
# each weight against it. With plain SGD (TensorFlow backend, `tf.GradientTape`):

# %%
import tensorflow as tf


def train_step(net, images, target, lr):
    with tf.GradientTape() as tape:
        beliefs = net(images, training=True)
        total = tf.add_n([tf.reduce_mean(0.5 * tf.reduce_sum((b - target) ** 2, axis=(1, 2, 3)))
                          for b in beliefs]) + tf.add_n(net.losses)
    grads = tape.gradient(total, net.trainable_weights)
    for w, g in zip(net.trainable_weights, grads):
        w.assign_sub(lr * g)
    return float(total)


# %% [markdown]
# Keras' `fit` does the same in a compiled step. The check: one step of ours and one
# `train_on_batch` of a model compiled with `CPMLoss` and SGD, from the same initial weights,
# end at the same weights.

# %%
from cpm_nb.core.runtime import import_keras

keras = import_keras()
ours = M.build_cpm(cfg.model, seed=0, weight_decay=cfg.weight_decay)
theirs = M.build_cpm(cfg.model, seed=0, weight_decay=cfg.weight_decay)
theirs.compile(optimizer=keras.optimizers.SGD(1e-4), loss=[cpm_loss] * cfg.stages)
train_step(ours, images, targets, lr=1e-4)
theirs.train_on_batch(images, (packed,) * cfg.stages)
for a, b in zip(ours.get_weights(), theirs.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)
print("one step by hand == one Keras step: every weight tensor equal")

# %% [markdown]
# ## 2. Training the profile's model
#
# `load_or_train(profile)` gives the profile's trained model. In the `cpu` profile that is a
# **preset** shipped with the package: it loads in seconds (`CPM_NB_RETRAIN=1` trains it
# again). Any other configuration trains once and is cached in
# `runs/<profile>-<stages>st-<data>-<hash>/` (on Colab: on Drive) for notebooks 06 and 07; a
# progress bar shows the steps, the loss and the last validation PCKh.
#
# Nothing long starts unannounced: the next cell says what will happen for the active profile
# on this machine, and for how long. To try the notebook quickly on a Colab GPU, set
# `CPM_NB_PROFILE=cpu` before `cpm_nb.setup`.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"profile {profile.name}:", T.training_plan(TC.train_config(profile)))

# %%
# NBVAL_IGNORE_OUTPUT
trained = T.load_or_train(profile)
meta = trained.meta
print(f"{meta['steps']} steps, {meta['wall_s']:.0f} s of training; validation PCKh@0.5 "
      f"{meta['metrics']['mean']:.1f} %")

# %% [markdown]
# The learning curves: the loss of every stage, and the validation PCKh@0.5 of every stage
# measured during training.

# %%
import json

from cpm_nb.course.viz import plot_history

history = json.loads((trained.run_dir / runs.HISTORY).read_text())
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_history(history, axes, f" ({profile.name} profile)")
save_figure(fig, "05_learning_curves")
plt.show()

# %% [markdown]
# ## 3. Scoring the trained model
#
# `evaluation.evaluate` predicts every validation person, decodes the last stage's maps, maps
# the joints back to image pixels and scores them with the official PCKh and the article's
# 25-px metric (notebook 06 takes the score apart). From a terminal:
# `cpm-nb evaluate --model RUN_DIR --json-out scores.json`.

# %%
# NBVAL_IGNORE_OUTPUT
scores = meta["metrics"]
print("  ".join(f"{k} {v:.1f}" for k, v in scores["pckh"].items()))
print(f"PCKh@0.5 {scores['mean']:.1f} %, PCKh@0.1 {scores['mean_at_0.1']:.1f} %, "
      f"article 25-px metric {scores['article_25px']:.1f} %, {scores['n_examples']} people")
print("per stage:", " -> ".join(f"{v:.1f}" for v in scores["per_stage"]))
print("hard subsets:", ", ".join(f"{k} {'-' if v is None else f'{v:.1f}'}"
                                 for k, v in scores["hard"].items()))

# %% [markdown]
# What the trained network sees on validation people it never trained on (faint: ground truth):

# %%
from cpm_nb.course import overlays
from cpm_nb.evaluation import evaluate as evaluation

val_images, val_joints, val_vis = evaluation.validation_examples(folder, 4)
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
overlays.show_predictions(trained.model, val_images, val_joints, val_vis, axes)
fig.suptitle(f"Predictions of the last stage on validation crops ({profile.name} profile)")
save_figure(fig, "05_predictions")
plt.show()

# %% [markdown]
# ## 4. Do more stages help? The stage experiment
#
# The source article says "6 stages beat 2"; the paper trains every depth for the same number
# of iterations (equal steps). We ask two questions: at equal compute, is a stage the best use
# of a fixed budget? And at equal steps, do 6 stages beat 2? A fair test needs:
#
# * **a stage 1 that does not already see everything**: the `stage-experiment` network of
#   notebook 04 (the `cpu` profile's), with the paper's proportions of receptive field to crop;
# * **equal compute**: every net gets the 6-stage net's forward FLOPs x steps, so the 1-stage
#   net trains 1.4x as many steps (same data, batch and schedule);
# * **several seeds**, to tell a difference from the noise between runs;
# * **a budget long enough** for the curves to flatten (checked below with longer runs).
#
# `cpm-nb --profile cpu experiment stages` trains 1, 2, 3, 4 and 6 stages x 3 seeds; its
# committed result, `cpm_nb/results/stage_experiment.json`, is read without training:

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.training import experiments

result = experiments.load_committed()
made = result["provenance"]
train_min = sum(run["train_s"] for run in result["runs"]) / 60
print(f"made by `{made['command']}` at commit {str(made['commit'])[:10]} on "
      f"{made['machine']['cpus']} CPU cores ({made['date']}); a fresh run trains "
      f"{len(result['runs'])} networks in about {train_min:.0f} min of training")
print("receptive field / crop, stage by stage:", result["receptive_field_over_crop"])
print(experiments.format_summary(result))

# %% [markdown]
# The columns: PCKh@0.5 over all joints, then on the subsets where context should decide
# (**occluded** joints, **another person's joints inside the crop**, **crossed limbs**); then
# the share of joints predicted *on the other person* and of left/right joints *swapped*; mean
# ± standard deviation over the seeds. The same as curves:

# %%
summary = result["summary"]
counts = [int(k) for k in summary]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
for key, label in (("pckh", "all joints"), ("occluded_joints", "occluded joints"),
                   ("with_distractors", "distractor in the crop"),
                   ("limbs_crossed", "crossed limbs")):
    stats = [summary[str(n)]["pckh"] if key == "pckh" else summary[str(n)]["subsets"][key]
             for n in counts]
    axes[0].errorbar(counts, [s["mean"] for s in stats], [s["std"] for s in stats], marker="o",
                     capsize=3, label=label)
axes[0].set(xlabel="stages in the network", ylabel="PCKh@0.5 (%), mean ± std over seeds",
            title="Equal compute: accuracy by number of stages", xticks=counts)
axes[0].legend(fontsize=8)
for n in counts:
    curve = summary[str(n)]["per_stage_mean"]
    axes[1].plot(range(1, len(curve) + 1), curve, "o-", label=f"{n}-stage net")
axes[1].set(xlabel="stage", ylabel="PCKh@0.5 (%), mean over seeds",
            title="Inside each net: accuracy after every stage", xticks=range(1, max(counts) + 1))
axes[1].legend(fontsize=8)
save_figure(fig, "05_stage_experiment")
plt.show()

# %% [markdown]
# The comparisons the text below reads, from the same file (means over the seeds):

# %%
def stat(r, n, key="pckh"):
    """Mean over seeds: PCKh@0.5, a subset's PCKh@0.5 or an error share (%), n stages."""
    s = r["summary"][str(n)]
    return (s["pckh"] if key == "pckh" else {**s["subsets"], **s["errors"]}[key])["mean"]


KEYS = ("pckh", "occluded_joints", "with_distractors", "limbs_crossed", "on_other_person")


def compare(r, a, b):
    return ", ".join(f"{k} {stat(r, a, k):.1f} -> {stat(r, b, k):.1f}" for k in KEYS)


print("1 -> 2 stages:", compare(result, 1, 2))
print("2 -> 6 stages:", compare(result, 2, 6))
print("ranking by PCKh@0.5:", " > ".join(str(n) for n in sorted(counts, key=lambda n: -stat(
    result, n))), "stages")
print(f"6-stage net after each stage: {', '.join(f'{v:.1f}' for v in summary['6']['per_stage_mean'])}"
      f"; a 1-stage net: {stat(result, 1):.1f}; steps at equal compute: "
      + ", ".join(f"{n} stages {summary[str(n)]['steps']:,}" for n in counts))

# %% [markdown]
# Runs with the same seed share their data order and, where the layers coincide, their
# initial weights, so we compare **by seed**: each seed's difference, their mean with a 95 % $t$
# interval, and a paired $t$-test; where the interval covers 0, "no detectable difference".
# Beside it, the validation set's own binomial standard error.

# %%
from scipy import stats


def paired(r, a, b, key="pckh"):
    """a minus b stages, paired by seed: the differences, their mean's 95 % t interval, p."""
    by = {(run["stages"], run["seed"]): run for run in r["runs"]}
    seeds = sorted(seed for n, seed in by if n == a and (b, seed) in by)
    score = (lambda run: run["pckh"]) if key == "pckh" else (lambda run: run["hard"][key])
    d = np.array([score(by[a, seed]) - score(by[b, seed]) for seed in seeds])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d, (d.mean() - half, d.mean() + half), stats.ttest_1samp(d, 0).pvalue


def show_paired(r, a, b, keys=KEYS[:4]):
    for key in keys:
        d, (lo, hi), p = paired(r, a, b, key)
        verdict = "no detectable difference" if lo <= 0 <= hi else "the interval excludes 0"
        print(f"  {key:<17} {d.mean():+5.1f} [{lo:+5.1f}, {hi:+5.1f}]  p = {p:.3f}  "
              f"per seed {' '.join(f'{v:+.1f}' for v in d)}  -> {verdict}")


for n in (1, 3, 4, 6):
    print(f"{n} minus 2 stages, paired by seed (mean [95 % CI]):")
    show_paired(result, n, 2)
counts_2 = next(run["hard_counts"] for run in result["runs"] if run["stages"] == 2)
joints_2 = {"pckh": counts_2["occluded_joints"] + counts_2["visible_joints"], **counts_2}
print("binomial standard error of the 2-stage score (points): " + ", ".join(
    f"{k} {100 * np.sqrt(stat(result, 2, k) / 100 * (1 - stat(result, 2, k) / 100) / joints_2[k]):.1f}"
    f" ({joints_2[k]:,} joints)" for k in KEYS[:4]))

# %% [markdown]
# What the committed result shows:
#
# * **A second stage helps, clearly** (the 1 -> 2 line), most where context decides: occluded
#   joints, another person in the crop, fewer joints put on the other person. Stage 1 sees
#   under half of the crop; stage 2 sees all of it from its central cells.
# * **Beyond two or three stages, nothing more at this budget** (the paired lines): 6 stages
#   score lower than 2; 3 and 4 stages show no detectable difference overall. At equal compute
#   a stage beyond the second is not the best use of this budget.
# * **Inside each network the stages do refine**, but a deep network's early stages are weaker
#   than a shallow network's, and at equal compute it trains fewer steps.
# * **Limits.** The curves look flat after the learning-rate decay, but the longer runs below
#   show that is the decay's doing. The synthetic people are easier to see than real
#   photographs, and the networks are thin (width 1/4).
#
# **Equal steps**, the paper's comparison: runs of one network and seed follow the same
# trajectory until their learning-rate decay, so the committed curves of every budget hold
# equal-step points (read below, after the longer runs).

# %% [markdown]
# ### Ablations: what does the second stage add?
#
# Going from 1 to 2 stages changes four things at once: the receptive field (62 to 142 px), the
# depth, a quarter more parameters, and the belief maps stage 2 reads. And stage 1, seeing 62 px
# of the 128-px crop, cannot see the crop's border, so it cannot tell the centred person from a
# distractor. Four ablations take these apart, each at the double budget's equal compute with 3
# seeds, paired with the run of the same seed (`cpm-nb --profile cpu experiment ablations
# --which a,b,c,d --seeds 3 --train-missing-baselines`):
#
# * (a) 1 stage with the 2-stage network's receptive field and parameters;
# * (b) 2 stages, stage 2 **without the belief maps** (only the image features);
# * (c) 2 stages with the loss on the **last stage only** (section 1 showed what the loss on
#   every stage does at initialisation: does it matter once trained?);
# * (d) 1 and 2 stages with a **centre map** in every stage, as the release has: the position
#   cue handed over.
#
# Beside each difference its 95 % interval and the baseline's binomial standard error. Stage 1
# of network (c) is never asked for beliefs: its rows show what such a stage outputs.

# %%
from cpm_nb.training import ablations

ablation = experiments.load_committed("ablations_2x")
print(ablations.format_variants(ablation))
print(ablations.format_paired(ablation, stages="last"))
print("the stages before the output:")
print(ablations.format_paired(ablation, stages="earlier"))

# %% [markdown]
# The final stage's rows as a picture: each dot is a variant minus a baseline, averaged over
# the seeds, with its 95 % interval; an interval that crosses 0 is no detectable difference.

# %%
from cpm_nb.course.forest import plot_forest

fig = plot_forest(ablation)
save_figure(fig, "05_ablations")
plt.show()

# %% [markdown]
# What the four ablations say, in these small networks on synthetic people:
#
# * **The field, not the stages (a).** One stage with the second stage's field and parameters
#   shows no detectable difference from two stages on any PCKh score (overall -1.4 [-5.0,
#   +2.1]; it even puts fewer joints on the other person, -0.4), and against one stage it gains +21.9 on occluded joints and +5.5 with another
#   person in the crop (overall +2.5: seed 2 gained only +0.6, no detectable difference).
# * **Not the beliefs (b).** Without the belief maps stage 2 ends with no detectable difference
#   from the full network on any measure, and keeps the second stage's gain over one stage
#   (+3.5 overall, +22.2 on occluded joints).
# * **Not only a position cue (d).** A centre map lifts one stage (+1.6 overall, +8.8 on
#   occluded joints) but leaves it behind two stages on every measure, -3.9 with another person
#   in the crop. In the 2-stage net it helps stage 1 (+11.1 on occluded joints) and not the
#   output (+0.3 [-1.3, +1.9]): a 142-px field already sees the crop's border.
# * **Intermediate supervision pays (c).** Without it the final stage ends lower overall (-1.8)
#   and with another person in the crop, on every seed; unsupervised, stage 1 becomes an
#   arbitrary feature map (its near-zero rows), not a detector that stage 2 refines.
#
# So the second stage's gain here is what a larger field sees of the image. The paper's
# argument, that later stages read context from the beliefs, is not what these thin networks
# need on flat-coloured people; real MPII images and wider networks may differ.

# %% [markdown]
# ### Had the curves flattened? Longer runs
#
# A network still learning at the end is judged too early, deep networks (slower starters)
# hardest. A learning-rate decay *always* levels a curve off; only a longer run says whether the
# network had finished. So we trained again for longer (`--budget X` multiplies every run's
# steps, `--validations 8` validates eight times):
#
# * twice the compute, every stage count, seed 0 (`--stages 6,3,2,4,1 --budget 2 --seeds 1`);
# * twice the compute, 2 against 6 stages -- the article's comparison -- with all 3 seeds
#   (`--stages 6,2 --budget 2`);
# * four times the compute, 2 against 6 stages, seed 0 (`--stages 6,2 --budget 4 --seeds 1`).
#
# Until the shorter run's learning-rate decay, a longer run *is* the first run (same seed, data
# order and learning rate).

# %%
# NBVAL_IGNORE_OUTPUT
longer = {name: experiments.load_committed(name) for name in experiments.SCALED_RESULTS}
for name, r in longer.items():
    hours = sum(run["train_s"] for run in r["runs"]) / 3600
    print(f"{name}: made by `{r['provenance']['command']}` ({hours:.1f} h of training)")
    print(experiments.format_summary(r))
    print(experiments.format_per_stage(r), end="\n\n")

# %% [markdown]
# The learning curves of every budget against the compute spent (1 = the first experiment's
# budget), seed 0 of each network; the first experiment's curves are dotted:

# %%
runs_by_budget = {1: result, 2: longer["stage_experiment_2x"], 4: longer["stage_experiment_4x_2v6"]}
fig, ax = plt.subplots(figsize=(8.5, 4.4), constrained_layout=True)
for i, n in enumerate(counts):
    for budget, r in runs_by_budget.items():
        curve = r["learning_curves"].get(f"{n}/0")
        if curve:
            ax.plot(np.array(curve["val_step"]) / summary[str(n)]["steps"], curve["val_pckh"],
                    ":" if budget == 1 else "-", marker="o", ms=3, color=f"C{i}",
                    label=f"{n} stage{'s' * (n > 1)}" if budget == 2 else None)
ax.set(xlabel="training compute (multiples of the first experiment's budget)",
       ylabel="validation PCKh@0.5 (%)", title="Learning curves at 1x, 2x and 4x the compute",
       xticks=[0, 1, 2, 3, 4])
for style, label in ((":", "first experiment (1x)"), ("-", "longer runs (2x; 4x for 2, 6)")):
    ax.plot([], [], style, color="k", label=label)
ax.legend(fontsize=8, title="seed 0", ncol=2)
save_figure(fig, "05_stage_experiment_curves")
plt.show()

# %% [markdown]
# Seed 0 of every network at each budget, the gain of every doubling, and the 2-stage lead over
# 6 stages; then the 3-seed comparison at twice the compute:

# %%
def seed0(r, n):
    return next((run["pckh"] for run in r["runs"] if run["stages"] == n and run["seed"] == 0),
                None)


for n in counts:
    values = [seed0(r, n) for r in runs_by_budget.values()]
    shown = [v for v in values if v is not None]
    print(f"{n} stage{'s' * (n > 1):<1}: " + " -> ".join(f"{v:.1f}" for v in shown)
          + "   gains per doubling: " + ", ".join(f"{b - a:+.1f}" for a, b in zip(shown, shown[1:])))
print("2 stages minus 6 stages, seed 0, at 1x, 2x, 4x:", ", ".join(
    f"{seed0(r, 2) - seed0(r, 6):+.1f}" for r in runs_by_budget.values()))
print("2x, 3 seeds, 2 -> 6 stages:", compare(longer["stage_experiment_2x_2v6"], 2, 6))
print("4x, seed 0, 2 -> 6 stages:", compare(longer["stage_experiment_4x_2v6"], 2, 6))
print("2x, 6 minus 2 stages, paired by seed (mean [95 % CI]):")
show_paired(longer["stage_experiment_2x_2v6"], 6, 2)
for n in (2, 6):  # if every doubling's gain shrinks by the ratio of the last two
    a, b, c = (seed0(r, n) for r in runs_by_budget.values())
    print(f"{n} stages at 8x, extrapolated: {c + (c - b) ** 2 / (b - a):.1f}")

# %% [markdown]
# And the equal-step points of the committed curves: for each seed, every validation step at
# which both the 2- and the 6-stage run (of any budget) had not yet decayed their learning rate.

# %%
def full_rate_curve(n, seed):
    """Validation PCKh by step of n stages and one seed, before each run's decay."""
    points = {}
    for r in (result, *longer.values()):
        curve = r["learning_curves"].get(f"{n}/{seed}")
        if curve:
            decay = int(0.8 * r["summary"][str(n)]["steps"])  # the step decay at 80 % of a run
            points.update((s, v) for s, v in zip(curve["val_step"], curve["val_pckh"]) if s <= decay)
    return points


shared = {}
for seed in result["experiment"]["seeds"]:
    two, six = full_rate_curve(2, seed), full_rate_curve(6, seed)
    shared[seed] = {s: six[s] - two[s] for s in sorted(set(two) & set(six))}
    print(f"seed {seed}, 6 minus 2 stages at equal steps: "
          + ", ".join(f"{d:+.1f} at {s:,}" for s, d in shared[seed].items()))
for step in sorted(set.intersection(*(set(d) for d in shared.values()))):  # every seed has it
    d = np.array([shared[seed][step] for seed in shared])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    print(f"at {step:,} steps, {len(d)} seeds: {d.mean():+.1f} [{d.mean() - half:+.1f}, "
          f"{d.mean() + half:+.1f}], p = {stats.ttest_1samp(d, 0).pvalue:.3f}")

# %% [markdown]
# New runs settle it at the first budget: `cpm-nb --profile cpu experiment stages --equal steps
# --stages 6,2` trains the 2-stage network for the 6-stage run's steps, with its own
# learning-rate decay (the 6-stage runs are the first experiment's, retrained to the same
# scores). Equal compute beside equal steps, then 6 minus 2 stages paired by seed:

# %%
steps_result = experiments.load_committed("stage_experiment_equal_steps")
print(experiments.format_side_by_side([result, steps_result]))
print("equal steps, 6 minus 2 stages, paired by seed (mean [95 % CI]):")
show_paired(steps_result, 6, 2)

# %% [markdown]
# What the longer runs show:
#
# * **The curves had not flattened.** Each doubling of the compute raised every network by
#   several points; before each decay the curves still climb. The 2-stage network's gains shrink
#   from one doubling to the next, the 6-stage network's much less.
# * **At twice the compute the order holds** with 3 seeds: paired by seed, 2 stages are still
#   ahead of 6, by a smaller gap; the subsets' lines say where the gap is detectable.
# * **At four times the compute: no detectable difference, one seed.** The gap shrank again;
#   one seed gives no interval, and its subset scores (a few hundred joints) are noise. If the
#   gains keep shrinking as they did, the extrapolation puts 6 stages ahead at 8x; 3 seeds at 8x
#   is the least that decides it (exercise 6).
# * **Equal steps**: at every shared step of the committed curves, and in the new equal-step
#   runs, the 6-stage network is not ahead: 2 stages lead on every seed, by no detectable
#   difference over 3 seeds. Within these budgets 6 stages do not win at equal steps either.
# * **At every budget** a second stage is the big step, on occluded joints and joints put on
#   the other person most of all, and inside a deep network every stage improves on the last.

# %% [markdown]
# ## 5. Beliefs refining, visibly
#
# Which joints do the later stages fix? We run the 6-stage net trained at twice the budget
# (seed 0) on the validation people and pick, *by measurement*, the joints wrong after stage 1
# (more than half a head size off) and right after the last, with the largest gain
# (`refinement.refined_joints`), and follow each belief map through the stages; the dashed
# square is the receptive field of the map's peak cell, which grows by 80 px a stage.

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb.course import refinement
from cpm_nb.model import architecture

exp = experiments.EXPERIMENTS[profile.name].doubled()
deep = experiments.trained_run(exp, max(exp.stage_counts), seed=0, progress=False)
vp = evaluation.collect(deep.model, experiments.data_folder(exp))
picked = refinement.refined_joints(vp, k=2)
print(f"{len(vp.gt)} validation people; joints wrong at stage 1 and right at the end: "
      f"{picked}")

# %%
# NBVAL_IGNORE_OUTPUT
fields = architecture.stage_receptive_fields(deep.model.cpm_config)
for person, joint, _, _ in picked:
    fig = refinement.plot_refinement(deep.model, vp, person, joint, fields)
    save_figure(fig, f"05_refinement_{person}")
    plt.show()

# %% [markdown]
# Follow the error in the panel titles. Stage 1 sees a small window, so a look-alike (often on
# a neighbouring person) wins its map; the later stages, whose fields span the crop, move the
# ambiguous one to where the rest of the body says it must be (with the beliefs of all joints
# as input, though ablation (b) found the image features alone do as well in 2 stages).

# %% [markdown]
# ## Summary
#
# * CPM supervises every stage: one Keras loss (`CPMLoss`, Caffe's half summed squared error)
#   on every stage's output, summed, plus L2 weight decay; `keras.Model.fit` trains it.
#   Trained with the loss on the last stage only, the final stage ends lower.
# * The paper's small learning rate suits a trunk initialised from ImageNet (`init="imagenet"`,
#   the `gpu` profile on MPII); the synthetic runs use Adam from random weights.
# * `load_or_train(profile)` loads a shipped preset (`cpu`) or a cached run, or trains once.
# * A fair stage experiment needs a stage 1 that cannot see the whole crop, equal compute,
#   seeds compared by seed, and a long enough budget. A second stage is the big step, above all
#   on occluded joints. 6 stages score lower at the first budget; more compute helps the deep
#   network most, to no detectable difference at 4x (one seed); at equal steps 6 stages are not
#   ahead either. A plateau after a learning-rate decay does not mean learning has finished.
# * Ablations at twice the budget, 3 seeds: one stage with the second stage's field matches two
#   stages; stage 2 does as well without the belief maps; a centre map does not close one
#   stage's gap; without intermediate supervision the final stage ends lower.
# * For practitioners: batches that are a pure function of (seed, step), mixed precision and
#   XLA, and atomic checkpoints that resume a run to the same result.
#
# ## Exercises
#
# 1. Ablation (d) hands the position over as a centre map; coordinate channels (two ramps, x
#    and y, added to every stage's input, as in CoordConv) are the other way. Which
#    `CPMConfig` fields would you add, and would you expect one stage with them to catch up with
#    two on people with another person in the crop? Ablation (a) suggests what decides it.
# 2. Run `cpm-nb --profile fast train --out /tmp/x --steps 400`, interrupt it with Ctrl-C, then
#    resume with `--resume`. Check `history.json`: is any step missing or repeated?
# 3. On Colab, run `python -m cpm_nb.bench train`: what share of the GPU's peak does `fit` reach,
#    and how close is it to the bare compiled step?
# 4. Equal steps instead of equal compute: `cpm-nb --profile cpu experiment stages --equal steps
#    --stages 2,6 --seeds 1` trains 2 stages for the 6-stage run's steps (the 6-stage run is the
#    same run in both modes, so it is cached), and `--report side-by-side --results A.json
#    B.json` prints both modes side by side. Does 6 beat 2 at equal steps? Compare with
#    `cpm-nb experiment stages --report equal-steps` (the committed curves).
# 5. In section 5, pick the joints the other way round: right after stage 1 and wrong after the
#    last stage. How many are there, and what do their belief maps show?
# 6. Go further than this machine could: on a Colab GPU run
#    `cpm-nb --profile cpu experiment stages --stages 6,2 --budget 8 --validations 8` (the same
#    networks and data at 8 times the first budget, 3 seeds: the least that decides it; hours on
#    a CPU, much less on a GPU). Do 6 stages pull ahead of 2?

# %% [markdown]
# ## For practitioners
#
# ### Feeding the accelerator
#
# A GPU step on a 368-px CPM takes tens of milliseconds; preparing 16 crops must not take
# longer. `data.tf_training_dataset` keeps the JPEG *context crops* in memory, decodes and
# augments them on all CPU cores in parallel, and *prefetches* the next batches while the
# accelerator computes. Example $p = \text{step}\cdot B + i$ is record
# `index_shuffle(p mod N, seed=(seed, p div N))` with augmentation drawn from `(seed, p)`: the
# data order is a pure function of (seed, step), so a resumed run sees exactly the batches it
# would have seen. (`data.NumpyBatches` does the same without TensorFlow.)

# %%
from cpm_nb.course.viz import draw_skeleton, save_figure

fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
for ax, im, j, v in zip(axes, images, joints, vis):
    ax.imshow(im)
    draw_skeleton(ax, j, v > 0, linewidth=1, markersize=2)
    ax.set(xlim=(-0.5, im.shape[1] - 0.5), ylim=(im.shape[0] - 0.5, -0.5), xticks=[], yticks=[])
fig.suptitle(f"Step 0 of the training stream: augmented {cfg.input_size}-px crops and joints")
save_figure(fig, "05_training_batch")
plt.show()

# %% [markdown]
# `compile_model` builds the network with its L2 terms and compiles it with `CPMLoss`, the
# profile's optimizer and the machine's precision. Is the pipeline fast enough? We time it and
# one compiled training step, each alone, in examples per second (on a laptop both share the
# CPU; on a GPU machine they overlap). `python -m cpm_nb.bench train` measures the whole `fit`
# loop against a bare compiled step.

# %%
# NBVAL_IGNORE_OUTPUT
import time

model = T.compile_model(cfg)
y = (packed,) * cfg.stages  # one (identical) packed target per stage output
model.train_on_batch(images, y)  # the first call traces (and compiles) the step
rates = {}
for what, fn in {"input pipeline": lambda: next(stream),
                 "train step": lambda: model.train_on_batch(images, y)}.items():
    t0 = time.perf_counter()
    for _ in range(5):
        fn()
    rates[what] = 5 * cfg.batch_size / (time.perf_counter() - t0)
print(", ".join(f"{k}: {v:,.0f} examples/s" for k, v in rates.items()))

# %% [markdown]
# ### Mixed precision and XLA
#
# On a GPU with tensor cores (T4, A100, H100) two switches roughly double the throughput:
#
# * **mixed precision** (a Keras dtype policy): layers compute in 16 bits but keep float32
#   weights. `mixed_bfloat16` (A100, L4, H100) needs nothing else; `mixed_float16` (T4, V100)
#   scales the loss so small float16 gradients do not underflow (`LossScaleOptimizer`).
# * **XLA** (`jit_compile=True`): the whole train step is compiled into fused kernels.
#
# `cpm_nb` switches both on when a GPU is visible (and data parallelism when several are). On a
# CPU it uses `mixed_bfloat16` only where the CPU has bfloat16 instructions (AVX512-BF16 or
# AMX), float32 elsewhere, and no XLA. A dtype policy shows the split:

# %%
policy = keras.DTypePolicy("mixed_float16")
print(f"mixed_float16: compute in {policy.compute_dtype}, weights in {policy.variable_dtype}")

# %%
# NBVAL_IGNORE_OUTPUT
print("on this machine:", TC.devices_for(cfg))

# %% [markdown]
# ### Checkpoints that survive a disconnect
#
# A Colab session can end at any moment. `cpm-nb train` writes a checkpoint every
# `checkpoint_every` steps (weights, optimizer state, step, history) to a temporary file and
# renames it over the old one (atomic): a run killed mid-write keeps the previous checkpoint.
# On Colab the run folder lives on Google Drive:
#
# ```python
# from google.colab import drive
# drive.mount("/content/drive")      # runs then default to MyDrive/cpm_nb/runs
# ```
# ```bash
# cpm-nb --profile gpu train --data mpii --data-dir /content/mpii/tfrecords-368 \
#        --out /content/drive/MyDrive/cpm_nb/gpu --resume
# ```
#
# After a disconnect, run the same command again: `--resume` continues from the last checkpoint.
# Here we simulate it: train a few steps, "disconnect", resume, and compare with a run that was
# never interrupted.

# %%
import tempfile
from pathlib import Path

demo = TC.train_config(profile, steps=30, checkpoint_every=10, eval_every=0)
scratch = Path(tempfile.mkdtemp(prefix="cpm_resume_"))
cut = T.train(demo, scratch / "run", stop_after=17, checkpoint_on_stop=False, verbose=False,
              progress=False)
state = runs.read_checkpoint(scratch / "run" / runs.CHECKPOINT)[1]
print(f"disconnected after step {cut.step}; last checkpoint at step {state['step']}")

# %% [markdown]
# The resumed run restarts from step 10 (losing at most one checkpoint interval), with the same
# optimizer state, learning rate and batches:

# %%
resumed = T.train(demo, scratch / "run", resume=True, verbose=False, progress=False)
straight = T.train(demo, scratch / "straight", verbose=False, progress=False)
diff = max(float(np.max(np.abs(a - b))) for a, b in
           zip(resumed.model.get_weights(), straight.model.get_weights()))
print(f"resumed from step {resumed.resumed_from} to {resumed.step}; "
      f"max |weight difference| to the uninterrupted run: {diff:.1e}")

# %% [markdown]
# Everything around the steps is a Keras *callback*: one Keras epoch is one checkpoint
# interval, at whose end the callbacks record the curves, check the loss (a NaN stops training
# with a message naming the last good checkpoint, which is kept), validate, and write
# TensorBoard scalars and the checkpoint. The loss is read once per interval, so the host never
# waits for the accelerator in between.
