"""An architecture diagram of a CPM, drawn with matplotlib from the layer table.

:func:`draw_architecture` reads :func:`cpm_nb.model.architecture.architecture` (the rows
:func:`cpm_nb.model.cpm.build_cpm` builds), so the picture follows the configuration: the number
of stages, the channel widths, the kernel sizes, the trunk's 3x3 / 1x1 layers and the map
size.  It shows the input, the trunk, stage 1 and every stage t >= 2 with its concatenation
of the previous beliefs and the image features (and the pooled centre map, when the
configuration has one), each stage's belief maps and the loss attached to every one of them
(intermediate supervision).

Every box is a matplotlib patch whose ``gid`` names it (``"input"``, ``"trunk"``,
``"stage1"`` ... ``"stageT"``, ``"beliefs1"`` ..., ``"concat2"`` ..., ``"loss1"`` ...), so tests
and notebooks can find them.
"""

from __future__ import annotations

from itertools import groupby

from cpm_nb.model import architecture

STAGE_COLOR = "#cfe2f3"
TRUNK_COLOR = "#fde9c8"
BELIEF_COLOR = "#d9ead3"
LOSS_COLOR = "#f4cccc"


def _conv_lines(rows) -> list[str]:
    """Runs of equal convolutions: ``"5 x conv 3x3, 32"``."""
    lines = []
    for (k, c, act), run in groupby(rows, key=lambda r: (r.kernel, r.channels, r.activation)):
        n = len(list(run))
        lines.append(f"{f'{n} x ' if n > 1 else ''}conv {k}x{k}, {c}{'' if act else ' (linear)'}")
    return lines


def block_labels(config) -> dict[str, str]:
    """The text of every box, from the layer table (``{"input": ..., "trunk": ...,
    "stage1": ..., "stage2": ..., "concat2": ..., "beliefs1": ...}``)."""
    cfg = architecture.get_config(config)
    rows = architecture.architecture(cfg)
    by_block = {b: list(r) for b, r in groupby(rows, key=lambda r: r.block)}
    labels = {}
    image = next(r for r in rows if r.name == "image")
    labels["input"] = f"image\n{image.size}x{image.size}x{image.channels}"
    if cfg.center_map:
        labels["input"] += f"\n+ centre map\n{image.size}x{image.size}x1"
    trunk = by_block["trunk"]
    convs = [r for r in trunk if r.kind == "conv"]
    pools = [r for r in trunk if r.kind == "maxpool"]
    kernels = sorted({r.kernel for r in convs}, reverse=True)
    counts = ", ".join(f"{sum(r.kernel == k for r in convs)} x {k}x{k}" for k in kernels)
    counts = f"{kernels[0]}x{kernels[0]}" if len(kernels) == 1 else f"({counts})"
    widths = "-".join(str(c) for c, _ in groupby(r.channels for r in convs))
    out = trunk[-1]
    labels["trunk"] = (f"trunk\n{len(convs)} convs {counts}\nwidths {widths}\n"
                       f"{len(pools)} max-pools {pools[0].kernel}x{pools[0].kernel}"
                       f" (stride {2 ** len(pools)})\n"
                       f"features {out.size}x{out.size}x{out.channels}")
    for t in range(1, cfg.stages + 1):
        block = by_block[f"stage{t}"]
        convs = [r for r in block if r.kind == "conv"]
        labels[f"stage{t}"] = f"stage {t}\n" + "\n".join(_conv_lines(convs))
        last = convs[-1]
        labels[f"beliefs{t}"] = f"beliefs $b_{{{t}}}$\n{last.size}x{last.size}x{last.channels}"
        concat = [r for r in block if r.kind == "concat"]
        if concat:
            parts = "+".join(str(dict((r.name, r.channels) for r in rows)[i])
                             for i in concat[0].inputs)
            labels[f"concat{t}"] = f"concat\n{parts}={concat[0].channels}"
    return labels


def draw_architecture(config, ax=None, fontsize: float = 8.5):
    """Draw the CPM of ``config`` (a :class:`~cpm_nb.model.architecture.CPMConfig` or a name) and
    return the figure.  With ``ax`` the diagram goes there (its limits and aspect are set);
    otherwise a new figure sized to the number of stages is made."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyBboxPatch

    cfg = architecture.get_config(config)
    labels = block_labels(cfg)
    T = cfg.stages
    gap, w, h = 3.3, 2.7, 1.7  # stage spacing, stage box width and height
    x_trunk, y_mid = 3.25, 1.5
    x_stage = [x_trunk + 3.0 + (t - 1) * gap for t in range(1, T + 1)]
    y_bus, y_bel, y_loss = 3.5, -0.35, -1.55
    width = x_stage[-1] + w / 2 + 0.3
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(8.0, 0.62 * width), 4.0), layout="constrained")
    fig = ax.figure

    def box(x, y, bw, bh, text, color, gid, **kw):
        patch = FancyBboxPatch((x - bw / 2, y - bh / 2), bw, bh, boxstyle="round,pad=0.04",
                               facecolor=color, edgecolor="0.3", lw=1, gid=gid)
        ax.add_patch(patch)
        ax.text(x, y, text, ha="center", va="center", fontsize=kw.get("fs", fontsize), gid=gid)
        return patch

    def arrow(start, end, style="arc3", color="0.25"):
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(
            arrowstyle="-|>", color=color, lw=1, shrinkA=0, shrinkB=0, connectionstyle=style))

    box(0.75, y_mid, 1.4, 1.0 if not cfg.center_map else 1.5, labels["input"], "white",
        "input")
    box(x_trunk, y_mid, 2.9, 2.0, labels["trunk"], TRUNK_COLOR, "trunk", fs=fontsize - 1)
    arrow((1.45, y_mid), (x_trunk - 1.45, y_mid))
    # the image features run along a bus above the stages
    ax.plot([x_trunk, x_trunk, x_stage[-1] - gap / 2 if T > 1 else x_stage[0]],
            [y_mid + 1.0, y_bus, y_bus], color="tab:orange", lw=1.2)
    ax.text(x_trunk + 0.1, y_bus + 0.12, "image features (shared by every stage)",
            fontsize=fontsize, color="tab:orange", va="bottom")
    arrow((x_stage[0], y_bus), (x_stage[0], y_mid + h / 2), color="tab:orange")
    ax.plot([x_stage[0]], [y_bus], "o", ms=3, color="tab:orange")
    for t, x in enumerate(x_stage, start=1):
        text = labels[f"stage{t}"]
        if t > 1:  # what the concatenation feeds the stage, written across (readable)
            head, _, rest = text.partition("\n")
            channels = labels[f"concat{t}"].partition("\n")[2]  # "16+128=144"
            text = f"{head}\nin: {channels}\n{rest}"
        box(x, y_mid, w, h, text, STAGE_COLOR, f"stage{t}", fs=fontsize - 0.5)
        box(x, y_bel, 1.3, 0.6, labels[f"beliefs{t}"], BELIEF_COLOR, f"beliefs{t}")
        arrow((x, y_mid - h / 2), (x, y_bel + 0.3))
        box(x, y_loss, 1.3, 0.42, f"loss $L_{{{t}}}$ vs targets", LOSS_COLOR, f"loss{t}")
        arrow((x, y_bel - 0.3), (x, y_loss + 0.21), color="tab:red")
        if t == 1:
            continue
        cx, r = x - gap / 2, 0.22  # the concatenation, between stage t-1 and stage t
        ax.add_patch(Circle((cx, y_mid), r, facecolor="white", edgecolor="0.3", gid=f"concat{t}"))
        ax.text(cx, y_mid, "C", ha="center", va="center", fontsize=fontsize, weight="bold")
        ax.plot([cx], [y_bus], "o", ms=3, color="tab:orange")
        arrow((cx, y_bus), (cx, y_mid + r), color="tab:orange")
        arrow((x_stage[t - 2] + 0.65, y_bel), (cx, y_mid - r),
              style="angle,angleA=0,angleB=90,rad=0")
        arrow((cx + r, y_mid), (x - w / 2, y_mid))
    ax.set(xlim=(-0.1, width), ylim=(y_loss - 0.45, y_bus + 0.55), aspect="equal")
    ax.axis("off")
    ax.set_title(f"CPM '{cfg.name}': {cfg.input_size}-px input, {T} stage{'s' * (T > 1)}, "
                 f"{architecture.count_params(cfg):,} parameters; a loss on every stage",
                 fontsize=fontsize + 2)
    return fig
