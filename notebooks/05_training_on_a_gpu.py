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
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Training on a GPU
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cpm-nb/cpm-nb/blob/main/notebooks/05_training_on_a_gpu.ipynb)
#
# **What you will learn**
#
# * the CPM loss with **intermediate supervision**: one target per stage, summed;
# * an input pipeline that keeps an accelerator busy, and whose batches are a pure function of
#   (seed, step);
# * **mixed precision** and **XLA**: what they change and when `cpm_nb` switches them on;
# * **checkpoints** that survive a Colab disconnect: atomic writes, Google Drive, resuming with
#   the same step counter, optimizer state and learning-rate schedule;
# * reading **learning curves** (loss per stage, validation PCKh) and scoring a trained model;
# * the source article's experiment: **2 versus 6 stages** on the same training budget.
#
# We train the network of notebook 04 on the synthetic people of notebook 02, with the target maps
# of notebook 03. On a laptop CPU the `cpu` profile trains in minutes; on a Colab GPU the `gpu`
# profile is the paper's configuration.

# %%
# NBVAL_IGNORE_OUTPUT
import subprocess
import sys
from importlib import metadata

CPM_NB_REF = "v0.1.0"  # the cpm-nb release (git tag) this course runs on: its one pin
if "google.colab" in sys.modules and CPM_NB_REF[1:] not in {  # Colab: once per runtime
        d.version for d in metadata.distributions(name="cpm-nb")}:
    old = {(d.name, d.version) for d in metadata.distributions()}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"cpm-nb @ git+https://github.com/cpm-nb/cpm-nb@{CPM_NB_REF}"], check=True)
    new = {(d.name, d.version) for d in metadata.distributions()} - old
    replaced = sorted(name for name, _ in new if name in dict(old))  # preinstalled ones
    print(f"restart the runtime (Runtime > Restart session): pip replaced {replaced}"
          if replaced else f"installed cpm-nb {CPM_NB_REF}; no restart needed")

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
# loss, `cpm_nb.loss.CPMLoss`: Keras applies it to each stage's output and sums the terms. Its
# ground truth is the batch's joints and visibility packed into one `[B, 48]` tensor; the target
# maps are rendered *inside* the compiled step (`heatmaps.render`, `keras.ops`), so no label maps
# are stored or copied.

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb import data, heatmaps, runs
from cpm_nb import loss as L
from cpm_nb import model as M
from cpm_nb import train as T
from cpm_nb import train_config as TC

cfg = TC.train_config(profile)
folder = T.data_dir(cfg)
stream = data.tf_training_dataset(folder, cfg.batch_size, cfg.seed).as_numpy_iterator()
images, joints, vis = next(stream)
targets = heatmaps.render(joints, vis, cfg.input_size, cfg.sigma)
net = M.build_cpm(cfg.model, seed=0)
outputs = net(images, training=False)
print(f"{len(outputs)} stages, each {tuple(outputs[0].shape)}; targets {tuple(targets.shape)}")

# %% [markdown]
# Before training every stage is far from its target; each term gets its own gradient, so the
# trunk receives signal from all of them (notebook 04, section 7). `CPMLoss` on the packed joints
# equals the loss computed by hand from the rendered maps:

# %%
# NBVAL_IGNORE_OUTPUT
import numpy as np

cpm_loss = L.CPMLoss(cfg.input_size, cfg.sigma)
packed = L.pack_targets_numpy(joints, vis)
per_stage = [float(cpm_loss(packed, o)) for o in outputs]
by_hand = [float(np.mean(0.5 * np.sum((np.asarray(o) - np.asarray(targets)) ** 2, axis=(1, 2, 3))))
           for o in outputs]
print("untrained loss per stage:", ", ".join(f"{v:.2f}" for v in per_stage))
print("by hand:                 ", ", ".join(f"{v:.2f}" for v in by_hand))
print(f"as a mean squared error: divide by M^2 J / 2 = {L.mse_scale(cfg.map_size):g}")

# %% [markdown]
# The optimizer follows the profile: the paper's SGD (momentum 0.9, lr $8\cdot10^{-5}$, step decay
# x0.333 every 13,275 steps, batch 16) for `gpu`; Adam with a short linear warm-up and a cosine
# decay for the small profiles, which must reach a good model in minutes.

# %%
for name in ("fast", "cpu", "gpu"):
    c = TC.train_config(name)
    print(f"{name:>4}: {c.optimizer:<4} lr {c.learning_rate:g}, {c.schedule} schedule "
          f"(warm-up {c.warmup_steps}), weight decay {c.weight_decay:g}, batch {c.batch_size}, "
          f"{c.steps:,} steps, {c.input_size} px, {c.stages} stages, sigma {c.sigma:g} px")

# %% [markdown]
# ## 2. Feeding the accelerator
#
# A GPU step on a 368-px CPM takes tens of milliseconds; decoding JPEGs and warping crops for 16
# people must not take longer. `data.tf_training_dataset` keeps the JPEG *context crops* in
# memory, decodes and augments them on all CPU cores in parallel (`tf.data` `map`), batches, and
# *prefetches* the next batches while the accelerator computes. Example
# $p = \text{step}\cdot B + i$ is record `index_shuffle(p mod N, seed=(seed, p div N))` with
# augmentation drawn from `(seed, p)`: the data order is a pure function of (seed, step), which
# is what lets a resumed run see exactly the batches it would have seen. (Without TensorFlow,
# `data.NumpyBatches` does the same with NumPy and PIL in worker threads.)

# %%
import matplotlib.pyplot as plt

from cpm_nb.viz import draw_skeleton, save_figure

fig, axes = plt.subplots(1, 4, figsize=(8, 2.3))
for ax, im, j, v in zip(axes, images, joints, vis):
    ax.imshow(im)
    draw_skeleton(ax, j, v > 0, linewidth=1, markersize=2)
    ax.set(xticks=[], yticks=[])
fig.suptitle(f"Step 0 of the training stream: augmented {cfg.input_size}-px crops and joints")
save_figure(fig, "05_training_batch")
plt.show()

# %% [markdown]
# `compile_model` builds the network with its L2 terms and compiles it with `CPMLoss`, the
# profile's optimizer and the machine's precision; `fit` then runs compiled steps. Is the
# pipeline fast enough? We time it alone and one compiled training step alone, in examples per
# second (on a 2-core laptop both compete for the same cores; on a GPU machine the pipeline uses
# the CPU while the step runs on the GPU). `python -m cpm_nb.bench train` measures the whole
# `fit` loop against a bare compiled step.

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
# ## 3. Mixed precision and XLA
#
# On a GPU with tensor cores (T4, A100, H100) two switches roughly double the throughput:
#
# * **mixed precision** (a Keras dtype policy): layers compute in 16 bits but keep float32
#   weights. `mixed_bfloat16` where bfloat16 is fast (Ampere and newer: A100, L4, H100) needs
#   nothing else; `mixed_float16` (T4, V100) multiplies the loss by a *loss scale* before the
#   backward pass so small float16 gradients do not underflow to zero, and divides it again before
#   the update (Keras wraps the optimizer in a `LossScaleOptimizer`). `CPMLoss` casts the belief
#   maps to float32.
# * **XLA** (`jit_compile=True`): the whole train step -- target rendering, forward, backward,
#   update -- is compiled into fused kernels (on the JAX backend every step is compiled anyway).
#
# `cpm_nb` switches both on only when a GPU is visible (and data parallelism when several are:
# `tf.distribute.MirroredStrategy` on TensorFlow, `keras.distribution.DataParallel` on JAX); on
# a CPU 16-bit compute is slow and XLA gains little. A dtype policy shows the split:

# %%
from cpm_nb.runtime import import_keras

keras = import_keras()
policy = keras.DTypePolicy("mixed_float16")
print(f"mixed_float16: compute in {policy.compute_dtype}, weights in {policy.variable_dtype}")

# %%
# NBVAL_IGNORE_OUTPUT
print("on this machine:", TC.devices_for(cfg))

# %% [markdown]
# ## 4. Checkpoints that survive a disconnect
#
# A Colab session can end at any moment. `cpm-nb train` writes a checkpoint every
# `checkpoint_every` steps: weights, optimizer state (its step counter, moments and loss scale),
# the step and the history, as one file. It is written to a temporary file *in the same folder*,
# flushed to disk (`fsync`) and renamed over the old one (`os.replace`, atomic): a run killed in
# the middle of a write leaves the previous checkpoint intact. On Colab the run folder lives on
# Google Drive, which survives the session:
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
# Everything around the steps is a Keras *callback* (`train.make_callbacks`): one Keras epoch
# is one checkpoint interval, and at its end the callbacks record the learning curves, check the
# loss (a NaN or infinite loss stops training with a message naming the steps and the last good
# checkpoint, which is kept), run the periodic validation, write TensorBoard scalars and the
# checkpoint. The loss is read once per interval, not after every step, so the host never
# waits for the accelerator in between.
#
# ## 5. Training the profile's model
#
# `load_or_train(profile)` trains once and caches the run in
# `runs/<profile>-<stages>st-<data>-<hash of the configuration>/` (on Colab: on Drive); later
# calls -- and notebooks 06 and 07 -- load it in a second while the configuration is unchanged.
# Before training it prints an estimate of the wall time; a progress bar shows the steps, the
# loss and the last validation PCKh; TensorBoard logs go to `logs/` in the run folder
# (`tensorboard --logdir runs`). On a Colab GPU with the synthetic data the `gpu` profile trains
# a 6,000-step schedule (about half an hour on a T4), not the paper's 100,000 steps, which are
# meant for real MPII.

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

from cpm_nb.viz import plot_history

history = json.loads((trained.run_dir / runs.HISTORY).read_text())
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_history(history, axes, f" ({profile.name} profile)")
save_figure(fig, "05_learning_curves")
plt.show()

# %% [markdown]
# ## 6. Scoring the trained model
#
# `evaluation.evaluate` predicts every validation person, decodes the last stage's maps
# (notebook 03), maps the joints back to original-image pixels with each crop's matrix, and scores them with the
# official PCKh (the keys of `cpm-nb evaluate-mpii`) and the source article's 25-px metric. The
# same from a terminal: `cpm-nb evaluate --model RUN_DIR --json-out scores.json`.

# %%
# NBVAL_IGNORE_OUTPUT
scores = meta["metrics"]
print("  ".join(f"{k} {v:.1f}" for k, v in scores["pckh"].items()))
print(f"PCKh@0.5 {scores['mean']:.1f} %, PCKh@0.1 {scores['mean_at_0.1']:.1f} %, "
      f"article 25-px metric {scores['article_25px']:.1f} %, {scores['n_examples']} people")
print("per stage:", " -> ".join(f"{v:.1f}" for v in scores["per_stage"]))
print("hard subsets:", ", ".join(f"{k} {v:.1f}" for k, v in scores["hard"].items()))

# %% [markdown]
# What the trained network sees on validation people it never trained on (faint: ground truth):

# %%
from cpm_nb import evaluation

val_images, val_joints, val_vis = evaluation.validation_examples(folder, 4)
fig, axes = plt.subplots(1, 4, figsize=(8, 2.3))
evaluation.show_predictions(trained.model, val_images, val_joints, val_vis, axes)
fig.suptitle(f"Predictions of the last stage on validation crops ({profile.name} profile)")
save_figure(fig, "05_predictions")
plt.show()

# %% [markdown]
# ## 7. The source article's experiment: 2 versus 6 stages
#
# Does stacking stages help, at the same training budget? We train the same network with 2 and
# with 6 stages -- same data, input size, batch and number of steps -- and compare PCKh@0.5
# overall and on the hard cases: **occluded joints** and **people with other people in the
# image** (distractors), where context from the other joints should help most. (Both runs are
# cached like the model above.)

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb import experiments

stage_runs = experiments.stage_experiment(profile, progress=False)
rows = experiments.experiment_table(stage_runs)
print(experiments.format_experiment(rows))

# %% [markdown]
# Does each stage refine the last? The per-stage accuracy of the 6-stage model, overall and on
# the hard subsets:

# %%
six = stage_runs[max(stage_runs)].meta["metrics"]
curves = {"all joints": six["per_stage"], **six["hard_per_stage"]}
fig, ax = plt.subplots(figsize=(5, 3.2))
for label, values in curves.items():
    ax.plot(range(1, len(values) + 1), values, "o-", label=label.replace("_", " "))
ax.set(xlabel="stage", ylabel="PCKh@0.5 (%)", title="6-stage CPM: accuracy after each stage")
ax.legend(fontsize=8)
save_figure(fig, "05_per_stage")
plt.show()

# %% [markdown]
# How to read it (our stored `cpu`-profile run: 400 steps each, a smoke run that keeps this
# notebook short): both networks are far from trained (the 3-stage model of section 5 needed
# 3,600 steps for 90.6 %). The 6-stage network scored *lower* than the 2-stage one overall
# (43.7 % against 56.3 %) and on occluded joints too (39.7 % against 45.9 %). Inside it, stage 1
# is at 15.3 %, stage 2 jumps to 40.9 %, and stages 3 to 6 stay between 40 and 44 %: after 400
# steps the later stages have not learned to add anything. Nothing here shows the article's
# "6 stages beat 2"; with 2.3x the parameters and about twice the cost per step, the deeper
# network would need far more steps, and in the `cpu` profile stage 1 already sees more than the
# whole 128-px crop (a 164-px receptive field, notebook 04), so extra context cannot appear. A
# fair test needs equal compute, several seeds, and a configuration whose stage-1 field is
# smaller than the crop (exercise 4).

# %% [markdown]
# ## Summary
#
# * CPM supervises every stage: one Keras loss (`CPMLoss`, Caffe's half summed squared error per
#   image against Gaussian targets rendered in the compiled step) on every stage's output,
#   summed, plus L2 weight decay on the kernels; `keras.Model.fit` trains it on TensorFlow or JAX.
# * The data order is a pure function of (seed, step); with atomic checkpoints of weights,
#   optimizer state and step, a run killed at any moment resumes to the same result.
# * On a GPU, mixed precision (bfloat16 or float16 with loss scaling) and XLA are switched on
#   automatically; the `gpu` profile is the paper's SGD configuration at 368 px.
# * `load_or_train(profile)` caches trained runs; notebooks 06 and 07 reuse them.
# * More stages cost more per step and need more training: at a 400-step budget on the CPU the
#   6-stage network is worse than the 2-stage one, and the experiment cannot show the article's
#   result (see section 7 for what a fair test needs).
#
# ## Exercises
#
# 1. Train with the loss on the last stage only -- compile with
#    `loss=[None] * (cfg.stages - 1) + [L.CPMLoss(cfg.input_size, cfg.sigma)]` -- and compare the
#    per-stage PCKh with the intermediate-supervision run. What happens to stage 1?
# 2. Run `cpm-nb --profile fast train --out /tmp/x --steps 400`, interrupt it with Ctrl-C, then
#    resume with `--resume`. Check `history.json`: is any step missing or repeated?
# 3. On Colab, run `python -m cpm_nb.bench train`: what share of the GPU's peak does `fit` reach,
#    and how close is it to the bare compiled step?
# 4. Repeat the 2-versus-6 experiment on equal *compute*: give the 2-stage network as many steps
#    as it can run in the 6-stage network's training time (`experiments.stage_experiment(
#    profile, stages=(2,), steps=...)`). Which one wins now, overall and on occluded joints?
