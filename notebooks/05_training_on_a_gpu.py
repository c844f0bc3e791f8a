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

if "google.colab" in sys.modules:  # on Colab: install the course package first
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "cpm-nb @ git+https://github.com/cpm-nb/cpm-nb"], check=True)

import cpm_nb

profile = cpm_nb.setup(seed=0, wants_gpu=True)

# %% [markdown]
# ## 1. The loss: every stage is supervised
#
# Stage $t$ outputs belief maps $b_t^p$ for every joint $p$; the target $b_*^p$ is the Gaussian
# of notebook 03 at the true joint. CPM puts a loss on *every* stage:
#
# $$ \mathcal{L} = \sum_{t=1}^{T} \underbrace{\frac{1}{N M^2 J}\sum_{n,z,p}
#    \big(b_t^p(z) - b_*^p(z)\big)^2}_{\text{MSE of stage } t}
#    \qquad\text{objective} = \tfrac{M^2 J}{2}\,\mathcal{L} + \tfrac{\lambda}{2}\sum \|W\|^2 $$
#
# The factor $M^2 J / 2$ turns each MSE into Caffe's `EuclideanLoss` (half the summed squared
# error per image) used by the released CPM, so the paper's learning rate ($8\cdot10^{-5}$) and
# weight decay ($\lambda = 5\cdot10^{-4}$) apply unchanged. The targets are rendered *inside* the
# train step from the batch's joints (`heatmaps.render`): no label maps are stored or copied.

# %%
# NBVAL_IGNORE_OUTPUT
from cpm_nb import heatmaps
from cpm_nb import model as M
from cpm_nb import train as T

cfg = T.train_config(profile)
folder = T.data_dir(cfg)
images, joints, vis = next(iter(T.train_dataset(folder, cfg.batch_size, cfg.seed)))
targets = heatmaps.render(joints, vis, cfg.input_size, cfg.sigma)
net = M.build_cpm(cfg.model_config(), seed=0)
outputs = net(images, training=False)
print(f"{len(outputs)} stages, each {tuple(outputs[0].shape)}; targets {tuple(targets.shape)}")

# %% [markdown]
# Before training every stage is far from its target; each term gets its own gradient, so the
# trunk receives signal from all of them (notebook 04, section 7).

# %%
# NBVAL_IGNORE_OUTPUT
import numpy as np

mse = [float(np.mean((np.asarray(o) - np.asarray(targets)) ** 2)) for o in outputs]
print("untrained MSE per stage:", ", ".join(f"{v:.4f}" for v in mse))
print(f"data loss (sum) {sum(mse):.4f}; objective scale M^2 J / 2 = {cfg.loss_scale:g}")

# %% [markdown]
# The optimizer follows the profile: the paper's SGD (momentum 0.9, lr $8\cdot10^{-5}$, step decay
# x0.333 every 13,275 steps, batch 16) for `gpu`; Adam (lr $10^{-3}$, x0.1 for the last fifth) for
# the small profiles, which must converge in a few thousand steps.

# %%
for name in ("fast", "cpu", "gpu"):
    c = T.train_config(name)
    decay = f"x{c.lr_decay_factor:g} every {c.decay_steps} steps" if c.decay_steps else "none"
    print(f"{name:>4}: {c.optimizer:<4} lr {c.learning_rate:g}, decay {decay}, weight decay "
          f"{c.weight_decay:g}, batch {c.batch_size}, {c.steps} steps, {c.input_size} px, "
          f"{c.stages} stages")

# %% [markdown]
# ## 2. Feeding the accelerator
#
# A GPU step on a 368-px CPM takes tens of milliseconds; decoding JPEGs and warping crops for 16
# people must not take longer. `train_dataset` keeps the JPEG *context crops* in memory, decodes and
# augments them on all CPU cores in parallel (`tf.data` `map`), batches, and *prefetches* the
# next batches while the accelerator computes. Example $p = \text{step}\cdot B + i$ is record
# `index_shuffle(p mod N, seed=(seed, p div N))` with augmentation drawn from `(seed, p)`: the
# data order is a pure function of (seed, step), which is what lets a resumed run see exactly the
# batches it would have seen.

# %%
import matplotlib.pyplot as plt

from cpm_nb.viz import draw_skeleton, save_figure

fig, axes = plt.subplots(1, 4, figsize=(8, 2.3))
for ax, im, j, v in zip(axes, images.numpy(), joints.numpy(), vis.numpy()):
    ax.imshow(im)
    draw_skeleton(ax, j, v > 0, linewidth=1, markersize=2)
    ax.set(xticks=[], yticks=[])
fig.suptitle(f"Step 0 of the training stream: augmented {cfg.input_size}-px crops and joints")
save_figure(fig, "05_training_batch")
plt.show()

# %% [markdown]
# Is the pipeline fast enough? We time it alone and the compiled train step alone, in examples
# per second (on a 2-core laptop both compete for the same cores; on a GPU machine the pipeline
# uses the CPU while the step runs on the GPU).

# %%
# NBVAL_IGNORE_OUTPUT
import time

dev = T.devices_for(cfg)
model, optimizer, strategy = T.build_model_and_optimizer(cfg, dev)
step = T.make_train_step(model, optimizer, cfg, strategy, dev)
stream = iter(T.train_dataset(folder, cfg.batch_size, cfg.seed))
batch = next(stream)
step(*batch)  # the first call traces (and compiles) the step
rates = {}
for what, fn in {"input pipeline": lambda: next(stream),
                 "train step": lambda: np.asarray(step(*batch))}.items():
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
# * **mixed precision** (`mixed_float16`): layers compute in float16 but keep float32 weights; the
#   loss is multiplied by a *loss scale* before the backward pass so small float16 gradients do
#   not underflow to zero, and divided again before the update (Keras' `LossScaleOptimizer`). We
#   cast the belief maps to float32 before the loss.
# * **XLA** (`jit_compile=True`): the whole train step -- target rendering, forward, backward,
#   update -- is compiled into fused kernels.
#
# `cpm_nb` switches both on only when a GPU is visible (and `tf.distribute.MirroredStrategy` when
# several are); on a CPU float16 is slow and XLA gains little. A dtype policy shows the split:

# %%
from cpm_nb.runtime import import_keras

keras = import_keras()
policy = keras.DTypePolicy("mixed_float16")
print(f"mixed_float16: compute in {policy.compute_dtype}, weights in {policy.variable_dtype}")

# %%
# NBVAL_IGNORE_OUTPUT
print("on this machine:", T.devices_for(cfg))

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

demo = T.train_config(profile, steps=30, checkpoint_every=10, eval_every=0)
scratch = Path(tempfile.mkdtemp(prefix="cpm_resume_"))
cut = T.train(demo, scratch / "run", stop_after=17, checkpoint_on_stop=False, verbose=False)
state = T.read_checkpoint(scratch / "run" / T.CHECKPOINT)[2]
print(f"disconnected after step {cut.step}; last checkpoint at step {state['step']}")

# %% [markdown]
# The resumed run restarts from step 10 (losing at most one checkpoint interval), with the same
# optimizer state, learning rate and batches:

# %%
resumed = T.train(demo, scratch / "run", resume=True, verbose=False)
straight = T.train(demo, scratch / "straight", verbose=False)
diff = max(float(np.max(np.abs(a - b))) for a, b in
           zip(resumed.model.get_weights(), straight.model.get_weights()))
print(f"resumed from step {resumed.resumed_from} to {resumed.step}; "
      f"max |weight difference| to the uninterrupted run: {diff:.1e}")

# %% [markdown]
# A NaN or infinite loss stops training with a message naming the step and the last good
# checkpoint (which is kept), instead of silently writing NaN weights over it.
#
# ## 5. Training the profile's model
#
# `load_or_train(profile)` trains once and caches the run in `runs/<profile>-<stages>st-<data>-<hash
# of the configuration>/` (on Colab: on Drive); later calls -- and notebooks 06 and 07 -- load it
# in a second while the configuration is unchanged. A progress bar shows the loss and the last
# validation PCKh; TensorBoard logs go to `logs/` in the run folder
# (`tensorboard --logdir runs`).

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

history = json.loads((trained.run_dir / T.HISTORY).read_text())
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
T.plot_history(history, axes, f" ({profile.name} profile)")
save_figure(fig, "05_learning_curves")
plt.show()

# %% [markdown]
# ## 6. Scoring the trained model
#
# `evaluate` predicts every validation person, decodes the last stage's maps (notebook 03), maps
# the joints back to original-image pixels with each crop's matrix, and scores them with the
# official PCKh (the keys of `cpm-nb evaluate-mpii`) and the source article's 25-px metric. The
# same from a terminal: `cpm-nb evaluate --model RUN_DIR --json scores.json`.

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
val_images, val_joints, val_vis = T.validation_examples(folder, 4)
fig, axes = plt.subplots(1, 4, figsize=(8, 2.3))
T.show_predictions(trained.model, val_images, val_joints, val_vis, axes)
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
runs = T.stage_experiment(profile)
rows = T.experiment_table(runs)
print(T.format_experiment(rows))

# %% [markdown]
# Does each stage refine the last? The per-stage accuracy of the 6-stage model, overall and on
# the hard subsets:

# %%
six = runs[max(runs)].meta["metrics"]
curves = {"all joints": six["per_stage"], **six["hard_per_stage"]}
fig, ax = plt.subplots(figsize=(5, 3.2))
for label, values in curves.items():
    ax.plot(range(1, len(values) + 1), values, "o-", label=label.replace("_", " "))
ax.set(xlabel="stage", ylabel="PCKh@0.5 (%)", title="6-stage CPM: accuracy after each stage")
ax.legend(fontsize=8)
save_figure(fig, "05_per_stage")
plt.show()

# %% [markdown]
# How to read it (our `cpu`-profile run, 1,000 steps each): the 6-stage network scored *lower*
# overall than the 2-stage one (about 62 % against 70 %) but *higher* on occluded joints (54 %
# against 47 %), and on occluded joints its accuracy climbs almost stage by stage (45 % after
# stage 1, 54 % after stage 6): the later stages, which see the beliefs of the other joints,
# are what fixes joints that the image alone cannot show. At this small budget, though, two
# thirds more parameters, twice the cost per step and a deeper path for the gradient leave the
# 6-stage network under-trained; the paper trains for about $10^5$ iterations, where the extra
# stages pay off everywhere. A fair follow-up compares equal *compute* (exercise 4).

# %% [markdown]
# ## Summary
#
# * CPM supervises every stage: the objective is the sum of per-stage MSEs to Gaussian targets
#   rendered in the train step, scaled like Caffe's loss, plus L2 weight decay.
# * The data order is a pure function of (seed, step); with atomic checkpoints of weights,
#   optimizer state and step, a run killed at any moment resumes to the same result.
# * On a GPU, mixed precision and XLA are switched on automatically; the `gpu` profile is the
#   paper's SGD configuration at 368 px.
# * `load_or_train(profile)` caches trained runs; notebooks 06 and 07 reuse them.
# * More stages cost more per step and need more training; their context helps most where the
#   image is ambiguous (occluded joints), as the per-stage curves show.
#
# ## Exercises
#
# 1. Train with the loss on the last stage only (edit `make_train_step` in a copy) and compare
#    the per-stage PCKh with the intermediate-supervision run. What happens to stage 1?
# 2. Run `cpm-nb --profile fast train --out /tmp/x --steps 400`, interrupt it with Ctrl-C, then
#    resume with `--resume`. Check `history.json`: is any step missing or repeated?
# 3. On Colab, time `python -m cpm_nb.bench train`: how much do mixed precision and XLA gain?
# 4. Repeat the 2-versus-6 experiment on equal *compute*: give the 2-stage network as many steps
#    as it can run in the 6-stage network's training time (`T.stage_experiment(profile,
#    stages=(2,), steps=...)`). Which one wins now, overall and on occluded joints?
