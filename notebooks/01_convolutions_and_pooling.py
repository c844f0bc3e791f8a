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
# # 01 · Convolutions and pooling
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cpm-nb/cpm-nb/blob/main/notebooks/01_convolutions_and_pooling.ipynb)
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
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install the course package first
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "cpm-nb @ git+https://github.com/cpm-nb/cpm-nb"], check=True)

import cpm_nb

profile = cpm_nb.setup(seed=0)
