"""The architecture diagram follows the configuration's layer table."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from cpm_nb.course import diagram
from cpm_nb.model import architecture  # noqa: E402


def _gids(fig) -> list[str]:
    return [p.get_gid() for ax in fig.axes for p in ax.patches if p.get_gid()]


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


@pytest.mark.parametrize("stages", [1, 2, 6])
def test_one_box_per_stage_with_beliefs_and_loss(stages):
    cfg = architecture.get_config("stage-experiment").replace(stages=stages)
    fig = diagram.draw_architecture(cfg)
    gids = _gids(fig)
    for kind in ("stage", "beliefs", "loss"):
        assert sorted(g for g in gids if g.startswith(kind) and g[len(kind):].isdigit()) == \
            sorted(f"{kind}{t}" for t in range(1, stages + 1))
    assert sorted(g for g in gids if g.startswith("concat")) == \
        sorted(f"concat{t}" for t in range(2, stages + 1))
    assert {"input", "trunk"} <= set(gids)
    plt.close(fig)


def test_two_and_six_stages_differ():
    two = diagram.draw_architecture(architecture.get_config("stage-experiment").replace(stages=2))
    six = diagram.draw_architecture("stage-experiment")
    count = [sum(g.startswith("stage") for g in _gids(f)) for f in (two, six)]
    assert count == [2, 6]
    plt.close("all")


@pytest.mark.parametrize("name", ["stage-experiment", "source-article", "cpm-mpii-release"])
def test_labels_carry_the_table(name):
    rows = architecture.architecture(name)
    cfg = architecture.get_config(name)
    fig, ax = plt.subplots()
    assert diagram.draw_architecture(name, ax=ax) is fig
    text = _texts(fig)
    by = {r.name: r for r in rows}
    assert f"conv 1x1, {by['conv5_1_CPM'].channels}" in text
    assert f"5 x conv {cfg.stage_kernel}x{cfg.stage_kernel}, {by['Mconv1_stage2'].channels}" in text
    assert f"conv 1x1, {cfg.num_maps} (linear)" in text
    assert f"={by['concat_stage2'].in_channels}" in text  # the concatenation's channels
    feat = by["conv4_7_CPM"]
    assert f"features {feat.size}x{feat.size}x{feat.channels}" in text
    assert f"{cfg.map_size}x{cfg.map_size}x{cfg.num_maps}" in text
    assert f"{cfg.input_size}x{cfg.input_size}x3" in text
    assert f"{architecture.count_params(cfg):,} parameters" in ax.get_title()
    plt.close(fig)


def test_trunk_label_counts_3x3_and_1x1_layers():
    label = diagram.block_labels("stage-experiment")["trunk"]
    assert "15 convs (6 x 3x3, 9 x 1x1)" in label
    assert "3 max-pools" in label
    assert "15 convs 3x3" in diagram.block_labels("source-article")["trunk"]


def test_centre_map_enters_the_concatenation():
    labels = diagram.block_labels("cpm-mpii-release")
    assert "centre map" in labels["input"]
    assert labels["concat2"].endswith("15+128+1=144")
