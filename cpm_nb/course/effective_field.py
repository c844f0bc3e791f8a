"""Theoretical and effective receptive fields of the belief cells of a CPM.

The *theoretical* receptive field of a stage (:func:`cpm_nb.model.architecture.stage_receptive_fields`)
is the side of the square of input pixels that can influence one belief cell.  Where that
square lies depends on the cell: belief cell ``(i, j)`` of a stride-8 grid is centred on input
pixel ``(8 j + 3.5, 8 i + 3.5)`` (0-based pixel coordinates, "same" padding and 2x2 pools), so
the field of a cell near the centre covers the crop as soon as it is as large as the crop, but
the field of a corner cell only once it is about *twice* the crop (:func:`field_box`,
:func:`share_seeing_crop`).

The *effective* receptive field (Luo et al., "Understanding the effective receptive field in
deep convolutional neural networks", NeurIPS 2016) is how much each input pixel actually
matters: the magnitude of the gradient of the cell's output with respect to the input.  It is
concentrated near the centre of the theoretical field (roughly Gaussian) and so is much smaller.
:func:`effective_receptive_field` averages ``|d (sum of the cell's maps) / d input|`` over
images and colour channels and normalises it to sum 1; :func:`mass_extent` gives the side of the
smallest square around the cell's centre that holds a given share (e.g. 90 %) of that mass, to
compare with the theoretical field.  The gradient uses the Keras backend's own machinery
(TensorFlow: ``tf.GradientTape``; JAX: ``jax.grad`` of ``model.stateless_call``).
"""

from __future__ import annotations

import numpy as np

from cpm_nb.core.config import OUTPUT_STRIDE
from cpm_nb.core.errors import ModelError
from cpm_nb.model import architecture


def cell_center(cell: tuple[int, int], stride: int = OUTPUT_STRIDE) -> tuple[float, float]:
    """Input-pixel centre ``(y, x)`` (0-based, pixel centres) of belief cell ``(row, col)``."""
    return tuple(stride * c + (stride - 1) / 2 for c in cell)


def center_cell(config) -> tuple[int, int]:
    """The belief cell at the middle of the grid (for an even grid, the lower-right one of
    the four middle cells)."""
    m = architecture.get_config(config).map_size
    return (m // 2, m // 2)


def field_box(config, stage: int, cell: tuple[int, int]) -> tuple[float, float, float, float]:
    """The theoretical field of ``cell`` in stage ``stage`` as pixel *edges*
    ``(x0, x1, y0, y1)`` (``imshow`` coordinates: pixel p spans p - 0.5 .. p + 0.5); it may
    reach beyond the crop (the padding)."""
    side = architecture.stage_receptive_fields(architecture.get_config(config))[stage - 1]
    cy, cx = cell_center(cell)
    return (cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2)


def sees_whole_crop(config, stage: int, cell: tuple[int, int]) -> bool:
    """Whether the theoretical field of ``cell`` covers every pixel of the crop."""
    size = architecture.get_config(config).input_size
    x0, x1, y0, y1 = field_box(config, stage, cell)
    return x0 <= -0.5 and y0 <= -0.5 and x1 >= size - 0.5 and y1 >= size - 0.5


def share_seeing_crop(config, stage: int) -> float:
    """The share of the belief cells of ``stage`` whose theoretical field covers the crop."""
    m = architecture.get_config(config).map_size
    return float(np.mean([[sees_whole_crop(config, stage, (i, j)) for j in range(m)]
                          for i in range(m)]))


def first_stage_seeing_crop(config, where: str = "all") -> int | None:
    """The first stage in which the field of every cell (``where="all"``) or of the centre
    cell (``"center"``) covers the whole crop; None when no stage of ``config`` does."""
    cfg = architecture.get_config(config)
    for t in range(1, cfg.stages + 1):
        ok = (share_seeing_crop(cfg, t) == 1.0 if where == "all"
              else sees_whole_crop(cfg, t, center_cell(cfg)))
        if ok:
            return t
    return None


# --- the effective receptive field ----------------------------------------------------


def _input_gradients(model, images, stage: int, cell: tuple[int, int]) -> np.ndarray:
    """``d (sum over maps of stage's output at cell) / d image`` for every image, [N, S, S, 3]."""
    from cpm_nb.core.runtime import import_keras, keras_backend
    from cpm_nb.model.inputs import model_inputs

    keras = import_keras()
    ops = keras.ops
    inputs = model_inputs(images, model.cpm_config)
    extra = inputs[1:] if isinstance(inputs, list) else []
    x = inputs[0] if isinstance(inputs, list) else inputs
    row, col = cell

    def value(outputs):
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        # the images of a batch are independent: the gradient of the sum over the batch is
        # every image's own gradient
        return ops.sum(outputs[stage - 1][:, row, col, :])

    def model_input(image):
        return [image, *extra] if extra else image

    backend = keras_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = value(model(model_input(x), training=False))
        grad = tape.gradient(out, x)
    elif backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def fn(image):
            out, _ = model.stateless_call(trainable, non_trainable, model_input(image),
                                          training=False)
            return value(out)

        grad = jax.grad(fn)(ops.convert_to_tensor(x))
    else:
        raise ModelError(f"the effective receptive field needs the TensorFlow or JAX backend, "
                         f"not {backend!r}: set KERAS_BACKEND=tensorflow or jax")
    return np.asarray(ops.convert_to_numpy(grad))


def effective_receptive_field(model, images, stage: int,
                              cell: tuple[int, int] | None = None,
                              batch_size: int = 16) -> np.ndarray:
    """The effective receptive field of one belief cell of ``stage``: an ``[S, S]`` map.

    ``model``: a CPM from :func:`cpm_nb.model.cpm.build_cpm` (trained or not); ``images``:
    ``[N, S, S, 3]`` RGB 0..255; ``stage``: 1-based; ``cell``: ``(row, col)`` on the belief
    grid (default: :func:`center_cell`).  The map is the mean over the images of
    ``|d output / d input|``, the output being the cell's value summed over all belief maps
    and the magnitude summed over the colour channels, normalised to sum 1 (a map of where the
    cell's sensitivity lies, after Luo et al. 2016).  All zeros (e.g. every ReLU dead) stays 0.
    """
    from cpm_nb.model.network import ensure_cpm

    cfg = ensure_cpm(model).cpm_config
    if not 1 <= stage <= cfg.stages:
        raise ValueError(f"stage must be in 1..{cfg.stages}, got {stage}")
    cell = center_cell(cfg) if cell is None else tuple(int(c) for c in cell)
    if not all(0 <= c < cfg.map_size for c in cell):
        raise ValueError(f"cell {cell} is outside the {cfg.map_size}x{cfg.map_size} belief grid")
    images = np.asarray(images, np.float32)
    total = np.zeros((cfg.input_size, cfg.input_size), np.float64)
    for start in range(0, len(images), batch_size):
        grad = _input_gradients(model, images[start:start + batch_size], stage, cell)
        total += np.abs(grad).sum(axis=(0, -1))
    mass = total.sum()
    return (total / mass if mass > 0 else total).astype(np.float32)


def mass_extent(erf: np.ndarray, cell: tuple[int, int], fraction: float = 0.9,
                stride: int = OUTPUT_STRIDE) -> int:
    """The side (px) of the smallest square centred on ``cell``'s centre that holds
    ``fraction`` of the mass of ``erf`` (an ``[S, S]`` map from
    :func:`effective_receptive_field`).  Like the theoretical field, the square may reach
    beyond the crop: the side is comparable with :func:`cpm_nb.model.architecture.stage_receptive_fields`.
    """
    erf = np.asarray(erf, np.float64)
    total = erf.sum()
    if total <= 0:
        return 0
    cy, cx = cell_center(cell, stride)
    y, x = np.mgrid[0:erf.shape[0], 0:erf.shape[1]]
    # a square of side 2 d + 1 around the centre holds the pixels at Chebyshev distance <= d
    dist = np.maximum(np.abs(y - cy), np.abs(x - cx)).ravel()
    order = np.argsort(dist, kind="stable")
    cumulative = np.cumsum(erf.ravel()[order]) / total
    k = min(int(np.searchsorted(cumulative, fraction - 1e-9)), len(order) - 1)
    return int(round(2 * dist[order][k] + 1))


# --- drawing ------------------------------------------------------------------------


def draw_field_box(ax, config, stage: int, cell: tuple[int, int], color: str = "white",
                   label: str | None = None, **kwargs):
    """Draw the theoretical field of ``cell`` (a square, dashed) and mark the cell's centre."""
    from matplotlib.patches import Rectangle

    x0, x1, y0, y1 = field_box(config, stage, cell)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, ls="--",
                           lw=1.5, label=label, **kwargs))
    cy, cx = cell_center(cell)
    ax.plot([cx], [cy], "+", color=color, ms=8, mew=1.5)


def draw_crop(ax, config, color: str = "0.5", label: str | None = "crop",
              facecolor: str = "none"):
    """Draw the crop's outline (solid; filled with ``facecolor``)."""
    from matplotlib.patches import Rectangle

    size = architecture.get_config(config).input_size
    ax.add_patch(Rectangle((-0.5, -0.5), size, size, facecolor=facecolor, edgecolor=color,
                           lw=1.5, label=label))


def field_view(config, stage: int, cell: tuple[int, int], pad: float = 0.04):
    """Axis limits ``(xlim, ylim)`` (``imshow`` orientation) that hold both the crop and the
    theoretical field of ``cell``, with ``pad`` of the span around them."""
    size = architecture.get_config(config).input_size
    x0, x1, y0, y1 = field_box(config, stage, cell)
    lo, hi = min(x0, y0, -0.5), max(x1, y1, size - 0.5)
    lo, hi = lo - pad * (hi - lo), hi + pad * (hi - lo)
    return (lo, hi), (hi, lo)


def show_field(ax, erf: np.ndarray, config, stage: int, cell: tuple[int, int],
               margin: float | None = None, vmax: float | None = None, cmap: str = "magma"):
    """An effective receptive field as a heat map, with the crop's outline and the cell's
    theoretical field (cyan, dashed).  By default the view holds the whole theoretical field
    (:func:`field_view`), however far it reaches beyond the crop; ``margin``: a fixed view
    reaching that many px beyond the crop instead.  Returns the image (for a colour bar)."""
    size = architecture.get_config(config).input_size
    ax.set_facecolor("black")
    im = ax.imshow(erf, cmap=cmap, vmin=0, vmax=vmax, extent=(-0.5, size - 0.5, size - 0.5, -0.5))
    if not np.any(np.asarray(erf) > 0):  # every path from the input is cut (ReLUs off)
        ax.text(0.5, 0.5, "no gradient:\nthe cell's value\nignores the input",
                transform=ax.transAxes, ha="center", va="center", color="white", fontsize=8)
    draw_crop(ax, config, color="0.6")
    draw_field_box(ax, config, stage, cell, color="cyan")
    if margin is None:
        xlim, ylim = field_view(config, stage, cell)
    else:
        xlim, ylim = (-0.5 - margin, size - 0.5 + margin), (size - 0.5 + margin, -0.5 - margin)
    ax.set(xlim=xlim, ylim=ylim)
    return im
