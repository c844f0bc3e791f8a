"""cpm_nb.caffe.convert: the prototxt and caffemodel readers, the converter checked stage by stage
against an independent Caffe implementation (OpenCV's importer), its one-line errors, and
predict / MPII scoring with a converted model.

No released file is used: deploy files come from the project's own architecture table
(same layer names and shapes as the release) and caffemodels hold random weights.  Run
with ``-s`` to see the parity figures.
"""

import json
import math
import time

import numpy as np
import pytest
from PIL import Image

from cpm_nb.caffe import convert as C
from cpm_nb.caffe import net as caffe_net
from cpm_nb.caffe import plan as caffe_plan
from cpm_nb.caffe import proto as caffe_proto
from cpm_nb.caffe import release
from cpm_nb.cli import app as cli
from cpm_nb.core import errors, skeleton
from cpm_nb.inference import decoding
from cpm_nb.io import protowire
from cpm_nb.model import architecture, heatmaps, inputs

TOLERANCE = 1e-4  # max |Keras - OpenCV| per stage, relative to the map range
SIGMA_64 = 21.0 * 64 / 368  # the centre-map sigma scaled to a 64-px crop
RELEASE_SMALL = architecture.get_config("cpm-mpii-release").replace(name="release-small", input_size=64,
                                                          width=0.125, stages=3,
                                                          center_sigma=SIGMA_64)
# a FLIC-like network: 9 joints + background, 4 stages (the release's FLIC map order)
FLIC_LIKE = RELEASE_SMALL.replace(name="flic-like", num_joints=9, stages=4)
# the source article's layer set: 16 MPII joints, no background, no centre map
NO_CENTER = architecture.get_config("source-article").replace(name="no-center", input_size=64,
                                                  width=0.125, stages=2, center_sigma=SIGMA_64)
TRAINING_LAYERS = [("data", "CPMData", []), ("label_slice", "Slice", []),
                   ("loss_stage1", "EuclideanLoss", [])]  # what a real snapshot adds


def _cv2():
    return pytest.importorskip("cv2", reason="OpenCV 4 (opencv-python-headless<5, the dev "
                                             "extra) is the independent Caffe implementation")


def _files(folder, config, seed=0, **kwargs):
    """A deploy prototxt and a random-weight caffemodel for ``config`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    proto = folder / "deploy.prototxt"
    proto.write_text(caffe_net.deploy_prototxt(config))
    model = caffe_proto.write_caffemodel(folder / "weights.caffemodel",
                               TRAINING_LAYERS + caffe_net.random_weights(config, seed), **kwargs)
    return proto, model


@pytest.fixture(scope="module")
def keras():
    from cpm_nb.core.runtime import import_keras

    return import_keras()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras):
    """Each test configuration as prototxt + caffemodel + converted run folder."""
    out = {}
    root = tmp_path_factory.mktemp("caffe")
    for cfg, kwargs, joints in [(RELEASE_SMALL, {}, None),
                                (FLIC_LIKE, dict(v1=True, legacy_shape=True), None),
                                (NO_CENTER, {}, skeleton.JOINT_NAMES)]:
        proto, weights = _files(root / cfg.name, cfg, **kwargs)
        C.convert(proto, weights, root / cfg.name / "run", joints=joints)
        out[cfg.name] = (proto, weights, root / cfg.name / "run")
    return out


def _print_parity(label, rows):
    for r in rows:
        print(f"  {label:<22} {r['stage']:<14} max |Keras - OpenCV| {r['max_abs_diff']:.2e}  "
              f"map range {r['map_range']:6.2f}  relative {r['relative']:.1e}")


# --- the prototxt ----------------------------------------------------------------------------


def test_prototxt_parser_reads_the_text_format():
    msg = caffe_proto.parse_prototxt("""
        name: "net"  # a comment
        input: "data" input_dim: 1 input_dim: 4
        layer { name: 'a\\'b' type: "Pooling" pooling_param { pool: AVE kernel_size: 9 }
                bottom: "x" bottom: "y" }
        layers < name: "old" type: CONVOLUTION blobs_lr: 1.5 flag: true list: [1, 2, 3] >
    """)
    assert msg["name"] == ["net"] and msg["input_dim"] == [1, 4]
    layer = msg["layer"][0]
    assert layer["name"] == ["a'b"] and layer["bottom"] == ["x", "y"]
    assert layer["pooling_param"][0] == {"pool": ["AVE"], "kernel_size": [9]}
    old = msg["layers"][0]
    assert old["type"] == ["CONVOLUTION"] and old["blobs_lr"] == [1.5]
    assert old["flag"] == [True] and old["list"] == [1, 2, 3]


def test_prototxt_inputs_and_v1_layers(tmp_path):
    path = tmp_path / "v1.prototxt"
    path.write_text('input: "image"\ninput_shape { dim: 1 dim: 3 dim: 64 dim: 64 }\n'
                    'layers { name: "conv1_1" type: CONVOLUTION bottom: "image" top: "conv1_1" }\n'
                    'layer { name: "in2" type: "Input" top: "c" '
                    'input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n')
    net = caffe_proto.read_prototxt(path)
    assert net.inputs == {"image": (1, 3, 64, 64), "c": (1, 1, 8, 8)}
    assert net.get("conv1_1").type == "Convolution" and net.get("conv1_1").bottom == ("image",)


@pytest.mark.parametrize("text, message", [
    ('layer { name: "a"', "a '}' is missing"),
    ('layer { name: "a" } }', "line 1: expected a field name"),
    ('name: "a"\nlayer { name: "b" type: }', "line 2: field 'type': unexpected '}'"),
    ("input_dim: [1, 4", "field 'input_dim': a ']' is missing"),
    ('layer: "conv1_1"', "is not a Caffe deploy prototxt"),
    ('input: "data" input_dim: "four"', "input_dim must be an integer"),
])
def test_prototxt_syntax_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(caffe_proto.CaffeError, match=message.replace("(", r"\(")):
        caffe_proto.read_prototxt(path)


def test_release_deploy_file_has_the_release_layers():
    """The generated deploy file of cpm-mpii-release has the release's layer set: 108 layers
    (Slice, pool_center_lower, 52 convolutions, 46 ReLUs, 3 max-pools, 5 concats) and
    29,852,058 parameters, and it is read back as exactly that configuration."""
    net = caffe_proto._net_from_message(caffe_proto.parse_prototxt(caffe_net.deploy_prototxt("cpm-mpii-release")))
    kinds = [layer.type for layer in net.layers]
    assert len(net.layers) == 108
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "Slice": 1, "Pooling": 4, "Convolution": 52, "ReLU": 46, "Concat": 5}
    assert net.inputs == {"data": (1, 4, 368, 368)}
    assert net.get("image").top == ("image", "center_map")
    assert net.get("relu4_3_CPM").bottom == ("conv4_3_CPM",)
    assert net.get("Mrelu6_stage6").top == ("Mconv6_stage6",)
    assert net.get("concat_stage2").bottom == ("conv5_2_CPM", "conv4_7_CPM", "pool_center_lower")
    assert net.get("pool_center_lower").params["pooling_param"][0] == {
        "pool": ["AVE"], "kernel_size": [9], "stride": [8]}
    shapes = caffe_net.caffe_conv_shapes("cpm-mpii-release")
    assert shapes["conv1_1"] == ((64, 3, 3, 3), (64,))
    assert shapes["Mconv1_stage2"] == ((128, 128 + 15 + 1, 7, 7), (128,))
    assert sum(math.prod(w) + b[0] for w, b in shapes.values()) == architecture.RELEASE_PARAMS
    cfg, joints = caffe_net.config_from_net(net)
    assert cfg == architecture.NAMED_CONFIGS["cpm-mpii-release"]
    assert joints == release.RELEASE_JOINTS[15] and joints[0] == "head_top" and joints[-1] == "background"


@pytest.mark.parametrize("cfg", [RELEASE_SMALL, FLIC_LIKE, NO_CENTER], ids=lambda c: c.name)
def test_configuration_is_derived_from_the_prototxt(cfg):
    net = caffe_proto._net_from_message(caffe_proto.parse_prototxt(caffe_net.deploy_prototxt(cfg)))
    joints = skeleton.JOINT_NAMES if cfg is NO_CENTER else None
    derived, names = caffe_net.config_from_net(net, joints=joints)
    assert derived == cfg.replace(name="caffe")
    assert len(names) == cfg.num_maps


# --- the caffemodel ------------------------------------------------------------------------------


@pytest.mark.parametrize("v1, legacy", [(False, False), (True, True), (False, True)])
def test_caffemodel_round_trip(v1, legacy):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3, 3, 3), dtype=np.float32), np.arange(4, dtype=np.float32)
    data = caffe_proto.caffemodel_bytes([("data", "Data", []), ("conv", "Convolution", [w, b]),
                               ("relu", "ReLU", [])], v1=v1, legacy_shape=legacy)
    layers = caffe_proto.parse_caffemodel(data)
    assert set(layers) == {"data", "conv", "relu"}
    assert layers["conv"].type == "Convolution" and not layers["relu"].blobs
    got_w, got_b = layers["conv"].blobs
    assert np.array_equal(got_w, w)
    assert np.array_equal(got_b.reshape(-1), b)


def test_caffemodel_reader_skips_unknown_fields_and_types():
    """A real snapshot holds fields and layer types the reader does not know: skipped."""
    blob = caffe_proto.blob_bytes(np.ones((2, 2), np.float32))
    unknown = (protowire.field_bytes(33, 7) + protowire.field_bytes(300, b"\x01\x02")  # varint, bytes
               + bytes([0x0D << 3 | 5]) + b"\0\0\x80?")  # a fixed32 field 13
    layer = (protowire.field_bytes(1, b"w") + protowire.field_bytes(2, b"CPMData") + unknown
             + protowire.field_bytes(7, blob))
    data = protowire.field_bytes(5, 1) + protowire.field_bytes(100, layer) + unknown
    got = caffe_proto.parse_caffemodel(data)
    assert got["w"].type == "CPMData" and np.array_equal(got["w"].blobs[0], np.ones((2, 2)))


# --- parity with OpenCV, stage by stage ------------------------------------------------------


@pytest.mark.parametrize("name", [RELEASE_SMALL.name, FLIC_LIKE.name, NO_CENTER.name])
def test_parity_with_opencv_per_stage(converted, name):
    _cv2()
    proto, weights, run = converted[name]
    rows = C.parity(run, proto, weights)
    print()
    _print_parity(name, rows)
    cfg = architecture.CPMConfig(**json.loads((run / C.CONFIG_FILE).read_text())["cpm_config"])
    assert [r["stage"] for r in rows] == cfg.output_names
    assert all(r["map_range"] > 0.5 for r in rows)  # real maps, not a dead network
    assert all(r["relative"] <= TOLERANCE for r in rows), rows


def test_full_release_network_at_368_px(tmp_path, keras):
    """The full cpm-mpii-release network (29.9 M random weights): conversion size and speed,
    and one 368-px forward pass through OpenCV and Keras."""
    _cv2()
    proto, weights = _files(tmp_path, "cpm-mpii-release")
    start = time.perf_counter()
    meta = C.convert(proto, weights, tmp_path / "run")
    seconds = time.perf_counter() - start
    mb = weights.stat().st_size / 1e6
    assert meta["cpm_config"]["name"] == "cpm-mpii-release"
    assert meta["caffe"]["layers_converted"] == 52
    assert meta["caffe"]["layers_ignored"] == sorted(n for n, _, _ in TRAINING_LAYERS)
    assert 119 < mb < 120  # 29,852,058 float32 values + framing
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1, 368, 368, 3)).astype(np.float32)
    rows = C.parity(tmp_path / "run", proto, weights, images=image)
    print(f"\n  cpm-mpii-release: caffemodel {mb:.1f} MB, converted in {seconds:.1f} s")
    _print_parity("cpm-mpii-release 368", rows)
    assert len(rows) == 6 and all(r["relative"] <= TOLERANCE for r in rows), rows


# --- the original CPM architecture: a network built from the prototxt itself ---------------------

# Our own miniature of the original CPM layout (an image branch of 9x9 convolutions and 3x3
# stride-2 ceil-mode max pooling per stage 1 and 2, later stages reusing stage 2's branch;
# 11x11 stage convolutions; the centre map average-pooled 9x9 stride 8), with small widths.
# (kernel, channels) per layer; 'maps' is replaced by the number of maps.
ORIGINAL_BRANCH = [(9, 8), (9, 8), (9, 8), (5, 4)]  # conv1..3 (each then pooled), conv4
ORIGINAL_HEAD = [(9, 16), (1, 16), (1, "maps")]  # conv5..7 of stage 1
ORIGINAL_STAGE = [(11, 8), (11, 8), (11, 8), (1, 8), (1, "maps")]  # Mconv1..5
ORIGINAL = {  # name: (input side, stages, maps)
    "lsp-orig": (64, 3, 15),  # 14 joints + background, the release's LSP/MPII order
    "flic-orig": (72, 4, 10),  # 9 joints + background, FLIC's order; 9x9 maps
}


def _conv(name, bottom, kernel, channels, relu=True):
    lines = caffe_net._layer_text(name, "Convolution", [bottom], [name], "convolution_param",
                          num_output=channels, pad=kernel // 2, kernel_size=kernel)
    if relu:
        lines += caffe_net._layer_text(caffe_net.relu_name(name), "ReLU", [name], [name])
    return lines


def original_prototxt(size, stages, maps):
    """A deploy file with the original CPM's layer names, types and wiring (our table)."""
    lines = ['input: "data"'] + [f"input_dim: {d}" for d in (1, 4, size, size)]
    lines += caffe_net._layer_text("image", "Slice", ["data"], ["image", "center_map"], "slice_param",
                           slice_point=3, axis=1)
    lines += caffe_net._layer_text("pool_center_lower", "Pooling", ["center_map"],
                           ["pool_center_lower"], "pooling_param", pool="AVE", kernel_size=9,
                           stride=8)
    for branch in (1, 2) if stages > 1 else (1,):
        bottom = "image"
        for i, (k, c) in enumerate(ORIGINAL_BRANCH, 1):
            lines += _conv(f"conv{i}_stage{branch}", bottom, k, c)
            bottom = f"conv{i}_stage{branch}"
            if i < len(ORIGINAL_BRANCH):
                lines += caffe_net._layer_text(f"pool{i}_stage{branch}", "Pooling", [bottom],
                                       [f"pool{i}_stage{branch}"], "pooling_param", pool="MAX",
                                       kernel_size=3, stride=2)
                bottom = f"pool{i}_stage{branch}"
        if branch == 1:
            for i, (k, c) in enumerate(ORIGINAL_HEAD, 5):
                last = c == "maps"
                lines += _conv(f"conv{i}_stage1", bottom, k, maps if last else c, not last)
                bottom = f"conv{i}_stage1"
    previous = "conv7_stage1"
    for t in range(2, stages + 1):
        feature = "conv4_stage2"
        if t > 2:
            feature = f"conv1_stage{t}"
            lines += _conv(feature, "pool3_stage2", 5, 4)
        lines += caffe_net._layer_text(f"concat_stage{t}", "Concat",
                               [feature, previous, "pool_center_lower"], [f"concat_stage{t}"],
                               "concat_param", axis=1)
        bottom = f"concat_stage{t}"
        for i, (k, c) in enumerate(ORIGINAL_STAGE, 1):
            last = c == "maps"
            lines += _conv(f"Mconv{i}_stage{t}", bottom, k, maps if last else c, not last)
            bottom = f"Mconv{i}_stage{t}"
        previous = bottom
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def original(tmp_path_factory, keras):
    """Each original-style configuration as prototxt + caffemodel + converted run folder."""
    out = {}
    root = tmp_path_factory.mktemp("original")
    for k, (name, (size, stages, maps)) in enumerate(ORIGINAL.items()):
        folder = root / name
        folder.mkdir()
        proto = folder / "deploy.prototxt"
        proto.write_text(original_prototxt(size, stages, maps))
        plan = caffe_plan.plan_prototxt(caffe_proto.read_prototxt(proto))
        weights = caffe_proto.write_caffemodel(folder / "weights.caffemodel",
                                     TRAINING_LAYERS + caffe_plan.random_prototxt_weights(plan, seed=k),
                                     v1=k == 1, legacy_shape=k == 1)
        meta = C.convert(proto, weights, folder / "run")
        out[name] = (proto, weights, folder / "run", meta)
    return out


@pytest.mark.parametrize("name", list(ORIGINAL))
def test_original_architecture_parity_with_opencv(original, name):
    _cv2()
    proto, weights, run, meta = original[name]
    size, stages, maps = ORIGINAL[name]
    rows = C.parity(run, proto, weights)
    print()
    _print_parity(name, rows)
    outputs = ["conv7_stage1"] + [f"Mconv5_stage{t}" for t in range(2, stages + 1)]
    assert [r["stage"] for r in rows] == outputs == meta["outputs"]
    assert all(r["map_range"] > 0.5 for r in rows)  # real maps, not a dead network
    assert all(r["relative"] <= TOLERANCE for r in rows), rows
    cfg = meta["cpm_config"]
    assert (cfg["input_size"], cfg["stages"], cfg["num_joints"], cfg["background"],
            cfg["center_map"]) == (size, stages, maps - 1, True, True)
    assert meta["architecture"] == "prototxt" and meta["caffe"]["layers_ignored"] == \
        sorted(n for n, _, _ in TRAINING_LAYERS)
    pre = meta["preprocessing"]
    assert "conv1_stage1 and conv1_stage2" in pre["channel_order"]  # both image branches
    assert pre["joints"] == list(release.RELEASE_JOINTS[maps])
    assert "pool_center_lower: average 9x9 stride 8" in pre["center_map"]["pooling"]
    model = caffe_plan.build_prototxt_keras(caffe_plan.plan_prototxt(caffe_proto.read_prototxt(proto)))
    assert model.count_params() == meta["params"]
    assert {"conv1_stage1", "conv1_stage2", "pool3_stage2", "concat_stage2",
            f"Mconv5_stage{stages}"} <= {layer.name for layer in model.layers}


def test_original_architecture_without_bgr_reversal_differs(original):
    """Each image branch's channel reversal matters: convert without it and compare."""
    _cv2()
    proto, weights, run, meta = original["lsp-orig"]
    plan = caffe_plan.plan_prototxt(caffe_proto.read_prototxt(proto))
    caffe_w = caffe_proto.read_caffemodel(weights)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (1, 64, 64, 3)).astype(np.float32)
    centers = inputs.center_maps(1, architecture.CPMConfig(**meta["cpm_config"]))
    ref = C.opencv_stage_maps(proto, weights, images, centers, plan.outputs)
    for skip in plan.image_convs:
        w = caffe_plan.prototxt_weights(caffe_w, plan)
        w[skip][0] = w[skip][0][:, :, ::-1]  # undo one branch's BGR -> RGB
        ours = caffe_plan.build_prototxt_keras(plan, w).predict([images, centers], verbose=0)
        stage = 0 if skip.endswith("stage1") else 1
        diff = np.abs(ours[stage] - ref[stage]).max() / np.ptp(ref[stage])
        assert diff > 100 * TOLERANCE, (skip, diff)


def _odd_pooling_prototxt():
    """A small net (not a CPM) whose poolings meet odd sizes, padding and partial windows."""
    lines = ['input: "image"'] + [f"input_dim: {d}" for d in (1, 3, 37, 37)]
    lines += caffe_net._layer_text("conv_a", "Convolution", ["image"], ["conv_a"], "convolution_param",
                           num_output=4, pad=1, kernel_size=3)  # no ReLU: negative values
    pools = [("pool_a", "conv_a", "MAX", 3, 2, 0),  # 37 -> 18, ceil mode
             ("pool_b", "pool_a", "AVE", 3, 2, 1),  # 18 -> 10, padding counted inside
             ("pool_c", "pool_b", "MAX", 2, 2, 1),  # 10 -> 6
             ("pool_d", "pool_c", "AVE", 5, 3, 0)]  # 6 -> 2, a clipped last window
    for name, bottom, pool, k, s, p in pools:
        lines += caffe_net._layer_text(name, "Pooling", [bottom], [name], "pooling_param", pool=pool,
                               kernel_size=k, stride=s, pad=p)
    lines += caffe_net._layer_text("leaky", "ReLU", ["pool_b"], ["leaky"], "relu_param",
                           negative_slope=0.1)
    lines += caffe_net._layer_text("conv_b", "Convolution", ["leaky"], ["conv_b"], "convolution_param",
                           num_output=3, pad=1, kernel_size=3, stride=2)  # 10 -> 5
    lines += caffe_net._layer_text("pool_e", "Pooling", ["conv_a"], ["pool_e"], "pooling_param",
                           pool="AVE", kernel_size=9, stride=8)  # 37 -> 5
    return "\n".join(lines) + "\n"


def test_pooling_at_odd_sizes_matches_caffe(tmp_path, keras):
    _cv2()
    proto = tmp_path / "odd.prototxt"
    proto.write_text(_odd_pooling_prototxt())
    plan = caffe_plan.plan_prototxt(caffe_proto.read_prototxt(proto))
    weights = caffe_proto.write_caffemodel(tmp_path / "odd.caffemodel", caffe_plan.random_prototxt_weights(plan))
    blobs = ["pool_a", "pool_b", "pool_c", "pool_d", "leaky", "conv_b", "pool_e"]
    assert [plan.shapes[b][1:] for b in blobs] == [(18, 18), (10, 10), (6, 6), (2, 2),
                                                    (10, 10), (5, 5), (5, 5)]
    model = caffe_plan.build_prototxt_keras(plan, caffe_plan.prototxt_weights(caffe_proto.read_caffemodel(weights), plan),
                                   outputs=blobs)
    images = np.random.default_rng(0).integers(0, 256, (2, 37, 37, 3)).astype(np.float32)
    ours = model.predict(images, verbose=0)
    ref = C.opencv_stage_maps(proto, weights, images, None, blobs)
    for name, a, b in zip(blobs, ours, ref):
        assert a.shape == b.shape, name
        rel = np.abs(a - b).max() / max(np.ptp(b), 1e-6)
        print(f"\n  {name}: {list(a.shape[1:])} relative {rel:.1e}", end="")
        assert rel <= TOLERANCE, (name, rel)


def test_predict_with_an_original_architecture_model(original, tmp_path):
    from cpm_nb.inference import predict as P

    predictor = P.load_predictor(original["lsp-orig"][2])  # Keras safe mode
    assert predictor.num_joints == 14 and predictor.stages == 3
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 70, 3), np.uint8)).save(photo)
    pred = predictor(photo, center=(35, 45), scale=0.4, scales=(1.0, 0.8))
    assert pred.joints.shape == (16, 2) and np.isfinite(pred.joints).all()
    assert pred.stage_maps[-1].shape == (8, 8, 17)
    # FLIC's 'head' is not an MPII joint: predict refuses in one line
    with pytest.raises(errors.ModelError, match=r"joints that MPII does not have \(head\)"):
        P.load_predictor(original["flic-orig"][2])


def _e(values) -> str:
    return " ".join(f"{v:.1e}" for v in values)


def _keras_and_opencv(converted, mutate=None, bgr_to_rgb=True, outputs=None, centers=None):
    proto, weights_file, _ = converted[RELEASE_SMALL.name]
    weights = caffe_net.keras_weights(caffe_proto.read_caffemodel(weights_file), RELEASE_SMALL,
                              bgr_to_rgb=bgr_to_rgb)
    if mutate:
        weights = {k: mutate(k, v) for k, v in weights.items()}
    model = caffe_net.build_keras(RELEASE_SMALL, weights)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    centers = inputs.center_maps(2, RELEASE_SMALL) if centers is None else centers
    outputs = outputs or RELEASE_SMALL.output_names
    keras_model = model
    if outputs != RELEASE_SMALL.output_names:
        import keras

        keras_model = keras.Model(model.inputs, [model.get_layer(n).output for n in outputs])
    ours = keras_model([images, centers])
    ours = [np.asarray(o) for o in (ours if isinstance(ours, (list, tuple)) else [ours])]
    caffe_names = [caffe_net.relu_name(n) if n.startswith(("conv1", "conv2", "conv3", "conv4"))
                   else n for n in outputs]
    ref = C.opencv_stage_maps(proto, weights_file, images, centers, caffe_names)
    return [float(np.abs(a - b).max() / (b.max() - b.min())) for a, b in zip(ours, ref)]


def test_a_channel_swap_or_a_transposed_kernel_is_caught(converted, keras):
    _cv2()
    good = _keras_and_opencv(converted)
    swapped = _keras_and_opencv(converted, bgr_to_rgb=False)  # BGR weights fed RGB
    transposed = _keras_and_opencv(converted, mutate=lambda k, v: [v[0].transpose(1, 0, 2, 3),
                                                                   v[1]])  # kh <-> kw
    print(f"\n  relative difference per stage: converted {_e(good)}, BGR/RGB swapped "
          f"{_e(swapped)}, kernels transposed {_e(transposed)}")
    assert max(good) <= TOLERANCE
    assert min(swapped) > 100 * TOLERANCE and min(transposed) > 100 * TOLERANCE


def test_padding_and_ceil_mode_pooling_match_caffe(converted, keras):
    """Intermediate blobs: the trunk (3x3 convolutions padded by 1, three 2x2 max-pools)
    and pool_center_lower, Caffe's ceil-mode average pooling (kernel 9, stride 8: 8x8 cells
    on 64 px, the last row and column averaged over their 8 valid pixels, not 9)."""
    _cv2()
    noise = np.random.default_rng(3).uniform(0, 1, (2, 64, 64, 1)).astype(np.float32)
    diffs = _keras_and_opencv(converted, outputs=["conv1_1", "pool1_stage1", "conv4_7_CPM",
                                                  "pool_center_lower"], centers=noise)
    print(f"\n  relative difference conv1_1, pool1, conv4_7_CPM, pool_center_lower: "
          f"{_e(diffs)}")
    assert max(diffs) <= TOLERANCE
    ones = np.ones((1, 64, 64, 1), np.float32)
    proto, weights, _ = converted[RELEASE_SMALL.name]
    pooled = C.opencv_stage_maps(proto, weights, np.zeros((1, 64, 64, 3)), ones,
                                 ["pool_center_lower"])[0]
    assert pooled.shape == (1, 8, 8, 1)  # ceil((64 - 9) / 8) + 1 = 8, as Keras "same"
    assert np.allclose(pooled, 1.0)  # padding not counted: still 1 at the border


def test_centre_map_branch_matches_off_centre(converted, keras):
    """A centre map away from the crop centre changes stages >= 2 (not stage 1), alike in
    Keras and OpenCV."""
    _cv2()
    centre = inputs.center_map(64, RELEASE_SMALL.center_sigma, center=(12.0, 50.0))
    off = np.broadcast_to(centre[None, :, :, None], (2, 64, 64, 1)).copy()
    diffs = _keras_and_opencv(converted, centers=off)
    assert max(diffs) <= TOLERANCE, diffs
    proto, weights, _ = converted[RELEASE_SMALL.name]
    image = np.full((1, 64, 64, 3), 100.0)
    a = C.opencv_stage_maps(proto, weights, image, off[:1])
    b = C.opencv_stage_maps(proto, weights, image, inputs.center_maps(1, RELEASE_SMALL))
    assert np.array_equal(a[0], b[0]) and not np.allclose(a[1], b[1])


def test_caffe_input_is_bgr_scaled_with_the_centre_map_last():
    red = np.zeros((1, 8, 8, 3))
    red[..., 0] = 255
    blob = C.caffe_input(red, np.full((1, 8, 8, 1), 0.25))
    assert blob.shape == (1, 4, 8, 8)
    assert np.allclose(blob[0, :, 0, 0], [-0.5, -0.5, 255 / 256 - 0.5, 0.25])


# --- the run folder and the command line -------------------------------------------------------


def test_run_folder_records_the_release_preprocessing(converted):
    _, _, run = converted[RELEASE_SMALL.name]
    meta = json.loads((run / C.CONFIG_FILE).read_text())
    assert sorted(p.name for p in run.iterdir()) == [C.CONFIG_FILE, C.MODEL_FILE]
    assert meta["format"] == "cpm-nb-model" and meta["source"] == "caffe"
    assert "non-commercial" in meta["licence"]
    pre = meta["preprocessing"]
    assert pre["pad_value"] == 128 and pre["box_size"] == 368 and pre["stride"] == 8
    assert pre["center_map"]["sigma"] == pytest.approx(21 * 64 / 368)
    assert pre["channel_order"].startswith("RGB") and "x / 256 - 0.5" in pre["value_scaling"]
    assert pre["scales"] == list(release.RELEASE_SCALES) and pre["decoding"] == "release"
    # the release's own test procedure (cpm_nb.inference.release_demo), its box scales
    assert pre["procedure"] == "release" and "imresize" in pre["resampling"]
    assert {k: pre["box_scales"][k] for k in ("octave", "range", "margin")} == \
        {"octave": 6, "range": [0.8, 1.2], "margin": 1.2}
    assert pre["joints"] == list(release.RELEASE_JOINTS[15])
    # head top -> MPII 9, neck -> 8, right shoulder -> 12 ... left ankle -> 5
    assert pre["joints_to_mpii"] == [9, 8, 12, 11, 10, 13, 14, 15, 2, 1, 0, 3, 4, 5]
    assert meta["joints"] == list(release.RELEASE_JOINTS[15][:14])
    assert meta["caffe"]["layers_ignored"] == ["data", "label_slice", "loss_stage1"]


def _convert_cli(monkeypatch, capsys, *argv):
    """``cpm-nb convert-caffe ARGV`` in-process: (exit status, stdout, stderr lines)."""
    from cpm_nb.cli.commands.convert_caffe import COMMAND

    monkeypatch.setattr(cli, "COMMANDS", [COMMAND])
    code = cli.main(["convert-caffe", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err.strip().splitlines()


def test_cli_converts_and_reports(converted, tmp_path, monkeypatch, capsys):
    proto, weights, _ = converted[RELEASE_SMALL.name]
    code, out, err = _convert_cli(monkeypatch, capsys, "--prototxt", proto, "--caffemodel",
                                  weights, "--out", tmp_path / "run", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["layers_converted"] == 31 and info["params"] == architecture.count_params(RELEASE_SMALL)
    code, _, err = _convert_cli(monkeypatch, capsys, "--prototxt", proto, "--caffemodel",
                                weights, "--out", tmp_path / "run")
    assert code == 2 and len(err) == 1 and "pass --force" in err[0]


def _vgg16_like():
    """Weights named like VGG-16's first layers: a Caffe model, but not a CPM."""
    rng = np.random.default_rng(0)
    chans = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128),
             ("conv2_2", 128, 128), ("conv3_1", 128, 256), ("conv3_2", 256, 256),
             ("conv3_3", 256, 256)]
    return [(n, "Convolution", [rng.standard_normal((o, i, 3, 3), dtype=np.float32),
                                np.zeros(o, np.float32)]) for n, i, o in chans]


def _original_architecture_prototxt():
    lines = ['input: "data"', "input_dim: 1", "input_dim: 4", "input_dim: 368", "input_dim: 368"]
    lines += caffe_net._layer_text("image", "Slice", ["data"], ["image", "center_map"], "slice_param",
                           slice_point=3, axis=1)
    lines += caffe_net._layer_text("conv1_stage1", "Convolution", ["image"], ["conv1_stage1"],
                           "convolution_param", num_output=128, pad=4, kernel_size=9)
    return "\n".join(lines)


def test_cli_errors_are_one_line_naming_the_layer(converted, tmp_path, monkeypatch, capsys,
                                                  request):
    proto, weights, _ = converted[RELEASE_SMALL.name]
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(photo)
    text = tmp_path / "notes.caffemodel"
    text.write_text("name: 'this is a prototxt, not weights'\n")
    vgg = caffe_proto.write_caffemodel(tmp_path / "vgg16.caffemodel", _vgg16_like())
    wider_proto = tmp_path / "wider.prototxt"
    wider_proto.write_text(caffe_net.deploy_prototxt(RELEASE_SMALL.replace(width=0.25)))
    original = tmp_path / "original.prototxt"
    original.write_text(_original_architecture_prototxt())
    unsupported = tmp_path / "lrn.prototxt"
    unsupported.write_text(_original_architecture_prototxt() + '\nlayer { name: "norm1" '
                           'type: "LRN" bottom: "conv1_stage1" top: "norm1" }\n')
    no_pad = tmp_path / "nopad.prototxt"
    no_pad.write_text(proto.read_text().replace(
        'name: "conv3_2"\n  type: "Convolution"\n  bottom: "conv3_1"\n  top: "conv3_2"\n'
        '  convolution_param {\n    num_output: 32\n    pad: 1',
        'name: "conv3_2"\n  type: "Convolution"\n  bottom: "conv3_1"\n  top: "conv3_2"\n'
        '  convolution_param {\n    num_output: 32\n    pad: 0'))
    cases = [
        (proto, photo, "is not a Caffe model (a binary NetParameter)"),
        (proto, text, "is not a Caffe model"),
        (proto, vgg, "no weights for layer 'conv3_4'"),
        (wider_proto, weights, "layer 'conv1_1' has weights of shape 8x3x3x3, the prototxt "
                               "needs 16x3x3x3: the caffemodel does not match the prototxt"),
        (original, weights, "the stage outputs conv1_stage1 are [[128, 368, 368]]; a pose "
                            "CPM gives [maps, 46, 46] at every stage"),
        (unsupported, weights, "layer 'norm1' (LRN) is not supported by the converter"),
        (no_pad, weights, "first layer mismatch at 'conv3_2': convolution pad 0, but cpm-nb's "
                          "network has pad 1"),
        (proto, tmp_path / "missing.caffemodel", "caffemodel not found"),
        (weights, weights, "is not a text prototxt"),
    ]
    for k, (p, w, message) in enumerate(cases):
        code, _, err = _convert_cli(monkeypatch, capsys, "--prototxt", p, "--caffemodel", w,
                                    "--out", tmp_path / f"run{k}")
        if request.config.getoption("capture") == "no":  # -s: show the messages
            with capsys.disabled():
                print("\n  " + err[0].replace(str(tmp_path) + "/", ""), end="")
        assert code == 2 and len(err) == 1 and message in err[0], err
        assert not (tmp_path / f"run{k}" / C.MODEL_FILE).exists()


def test_convert_help_teaches_and_does_not_import_tensorflow():
    import subprocess
    import sys

    from cpm_nb.cli.commands.convert_caffe import COMMAND

    code = ("import sys; from cpm_nb.cli import app as cli; from cpm_nb.caffe import convert as caffe\n"
            "from cpm_nb.cli.commands.convert_caffe import COMMAND\n"
            "p = cli.build_parser([COMMAND])\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    text = COMMAND.description
    assert "pose_deploy_resize.prototxt" in text and "licence" in text and "examples:" in text


# --- predict with a converted model ----------------------------------------------------------------


def test_release_merge_moves_each_scale_onto_the_scale1_crop():
    """Maps of crops at several scales (same centre), each with a Gaussian at the point where
    that crop sees the joint: the merged argmax is that point of the scale-1 crop."""
    size, m = 64, 8
    half = (size - 1) / 2
    target = np.array([20.0, 41.0])  # x, y in the scale-1 crop
    factors = (1.0, 0.7, 1.3)
    cells = np.arange(m) * 8 + 3.5
    maps = []
    for f in factors:
        x, y = half + f * (target - half)
        g = np.exp(-((cells[None, :] - x) ** 2 + (cells[:, None] - y) ** 2) / (2 * 6.0 ** 2))
        maps.append(g[..., None])
    joints, conf = decoding.upsampled_argmax(np.stack(maps).astype(np.float32), factors)
    assert np.abs(joints[0] - target).max() <= 1.0 and 0.5 < conf[0] <= 1.05


def test_the_release_upsampling_reproduces_a_ramp():
    ramp = np.tile(np.arange(8, dtype=np.float32)[None, :, None], (8, 1, 1))
    up = heatmaps.upsample(ramp, method="bicubic")[..., 0]
    x = np.arange(64)
    interior = (x > 12) & (x < 52)
    assert np.allclose(up[:, interior], ((x + 0.5) / 8 - 0.5)[interior][None], atol=1e-4)


def test_predict_with_a_converted_model(converted, tmp_path):
    from cpm_nb.inference import predict as P

    _, _, run = converted[RELEASE_SMALL.name]
    predictor = P.load_predictor(run)
    assert predictor.default_scales == release.RELEASE_SCALES and predictor.num_joints == 14
    assert predictor.release is not None  # the release's procedure
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 70, 3), np.uint8)).save(photo)
    pred = predictor(photo, center=(35, 45), scale=0.4)
    assert pred.scales == release.RELEASE_SCALES
    j = skeleton.JOINT
    assert pred.joints.shape == (16, 2) and np.isfinite(pred.joints).all()
    assert np.allclose(pred.joints[j["pelvis"]], pred.joints[[j["r_hip"], j["l_hip"]]].mean(0))
    assert np.allclose(pred.joints[j["thorax"]],
                       pred.joints[[j["r_shoulder"], j["l_shoulder"]]].mean(0))
    maps = pred.stage_maps[-1]
    assert maps.shape == (8, 8, 17) and not maps[..., j["pelvis"]].any()
    assert pred.stage_joints(3)[0].shape == (16, 2)
    # the release's arg-max: whole pixels of the image (1-based), never outside it
    own = [k for k in range(16) if k not in (j["pelvis"], j["thorax"])]
    assert np.array_equal(pred.joints[own], np.round(pred.joints[own]))
    assert (pred.joints[own] >= 1).all() and (pred.joints[own] <= [70, 90]).all()
    np.testing.assert_allclose(pred.joints_crop,
                               pred.joints * pred.crop_matrix[0, 0] + pred.crop_matrix[:2, 2])
    single = predictor(photo, center=(35, 45), scale=0.4, scales=(1.0,))
    assert single.scales == (1.0,)
    boxed = predictor(photo, box=(10, 5, 60, 85))
    np.testing.assert_allclose(boxed.scales, 2 ** (np.arange(4) / 6) / 1.2)


def _sample_photo(tmp_path):
    """matplotlib's sample photo (a real portrait, 512 x 600) as an RGB PNG."""
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        rgb = np.asarray(Image.open(f).convert("RGB"))
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    return tmp_path / "photo.png", rgb


def _demo_reference(proto, weights, rgb, size, sigma, box=None, center=None, scale=None):
    """The release's test code (applyModel.m / run_benchmark.m) written out step by step,
    with OpenCV's Caffe importer as the network: joints (1-based x, y) in the map order.
    Only MATLAB's imresize comes from the package (its reference, imresize_numpy, itself
    checked against Pillow and OpenCV in tests/test_release_demo.py)."""
    import math

    from cpm_nb.inference.release_demo import imresize_numpy as imresize

    cv2 = _cv2()
    height, width = rgb.shape[:2]
    if box is not None:
        x1, y1, x2, y2 = box
        xs, xe, ys, ye = max(x1, 1), min(x2, width), max(y1, 1), min(y2, height)
        center = ((xs + xe) / 2, (ys + ye) / 2)
        middle = (ye - ys) / height * 1.2  # person height / image height, with margin
        lo = size / (height * middle * 1.2)
        hi = size / (height * middle * 0.8)
        multipliers = 2 ** np.arange(math.log2(lo), math.log2(hi) + 1e-12, 1 / 6)
    else:
        multipliers = (41 / 35) / scale * size / 368 * np.array([0.7, 0.8, 0.9, 1.0, 1.1,
                                                                  1.2, 1.3])
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    grid = np.arange(1, size + 1) - size / 2  # produceCenterLabelMap(size, size/2, size/2)
    centre_map = np.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) / 2 / sigma ** 2)
    total = 0.0
    for s in multipliers:
        scaled = imresize(rgb, s)
        h, w = scaled.shape[:2]
        cx, cy = (int(math.floor(v * s + 0.5)) for v in center)  # round(center * scale)
        padded = np.pad(scaled, ((size, size), (size, size), (0, 0)), constant_values=128)
        crop = padded[size + cy - size // 2: size + cy + size // 2,
                      size + cx - size // 2: size + cx + size // 2]
        blob = np.concatenate([crop[..., ::-1] / 256 - 0.5, centre_map[..., None]], -1)
        net.setInput(blob.transpose(2, 0, 1)[None].astype(np.float32), "data")
        maps = net.forward(RELEASE_SMALL.output_names[-1])[0].transpose(1, 2, 0)[..., :14]
        score = imresize(maps.astype(np.float64), size / maps.shape[0])
        # resizeIntoScaledImg: the box's rows/cols cy - size/2 .. (0-based) onto the image
        up, left = size // 2 - cy, size // 2 - cx
        down, right = size // 2 - (h - cy), size // 2 - (w - cx)
        score = np.pad(score, ((max(-up, 0), max(-down, 0)), (max(-left, 0), max(-right, 0)),
                               (0, 0)))
        score = score[max(up, 0): score.shape[0] - max(down, 0),
                      max(left, 0): score.shape[1] - max(right, 0)]
        assert score.shape[:2] == (h, w)
        total = total + imresize(score, size=(height, width))
    final = total / len(multipliers)
    joints = []
    for k in range(final.shape[-1]):  # findMaximum: max(map(:)), column-major, 1-based
        i = int(np.argmax(final[..., k].T))
        x, y = divmod(i, height)
        joints.append((x + 1, y + 1))
    return np.array(joints, float)


@pytest.mark.parametrize("person", [dict(box=(150, 60, 420, 600)), dict(box=(-40, 100, 300, 700)),
                                    dict(center=(256, 330), scale=2.6)],
                         ids=["box", "box-over-the-edge", "centre-scale"])
def test_the_release_procedure_matches_a_straight_reimplementation(converted, tmp_path, person):
    """End to end on a real photo: the converted release-style model (random weights) through
    the project's path equals the release's steps done by hand with OpenCV's Caffe net."""
    from cpm_nb.inference import predict as P

    proto, weights, run = converted[RELEASE_SMALL.name]
    photo, rgb = _sample_photo(tmp_path)
    predictor = P.load_predictor(run)
    pred = predictor(photo, **person)
    ref = _demo_reference(proto, weights, rgb, RELEASE_SMALL.input_size,
                          RELEASE_SMALL.center_sigma, **person)
    ours = pred.joints[predictor.to_mpii]  # back to the map order
    print(f"\n  {person}: max |ours - reference| {np.abs(ours - ref).max():.3g} px")
    np.testing.assert_array_equal(ours, ref)


def test_procedure_effects_on_the_sample_photo(converted, tmp_path):
    """The table notebook 07 shows: each of the three steps put back to cpm-nb's way moves
    the joints; with all three it is cpm-nb's earlier path exactly (a run converted before
    the procedure existed, like tests/fixtures/legacy/release-small)."""
    from cpm_nb.inference import predict as P
    from cpm_nb.inference import release_effects

    _, _, run = converted[RELEASE_SMALL.name]
    photo, _ = _sample_photo(tmp_path)
    predictor = P.load_predictor(run)
    box = (150, 60, 420, 600)
    rows = release_effects.procedure_effects(predictor, photo, box=box)
    print("\n" + release_effects.effects_table(rows, joints=True))
    by = {r["variant"]: r for r in rows}
    assert list(by) == list(release_effects.VARIANTS)
    assert by["release"]["shift_max_px"] == 0
    np.testing.assert_array_equal(by["release"]["joints"], predictor(photo, box=box).joints)
    meta = json.loads((run / C.CONFIG_FILE).read_text())
    del meta["preprocessing"]["procedure"]
    old = P.Predictor(predictor.model, meta)(photo, box=box)
    assert old.scales == (1.0, *[f for f in release.RELEASE_SCALES if f != 1.0])
    np.testing.assert_array_equal(by["cpm-nb before"]["joints"], old.joints)
    assert all(by[v]["moved"] > 0 for v in ("cpm-nb scales", "bilinear warp", "crop arg-max",
                                            "cpm-nb before"))


def test_predict_refuses_a_model_without_the_mpii_joints(converted):
    from cpm_nb.inference import predict as P

    with pytest.raises(errors.ModelError, match=r"joints that MPII does not have \(head\)"):
        P.load_predictor(converted[FLIC_LIKE.name][2])
    assert P.load_predictor(converted[NO_CENTER.name][2]).num_joints == 16


def test_mpii_validation_files_score_with_evaluate_mpii(converted, tmp_path):
    """The scoring path: a tiny MPII-layout annotation file, Tompson-style split file and
    images -> gt_valid.mat + pred.mat -> cpm_nb.evaluation.mpii_mat.evaluate_mpii."""
    import scipy.io

    from cpm_nb.data import mpii
    from cpm_nb.evaluation import mpii_mat

    images = tmp_path / "images"
    images.mkdir()
    people = []
    for k in range(3):
        Image.fromarray(np.full((120, 100, 3), 40 * k, np.uint8)).save(images / f"{k}.jpg")
        people.append({"name": f"{k}.jpg", "people": [{
            "objpos": (50, 60), "scale": 0.5, "head_box": (40, 10, 60, 30),
            "points": [(j, 30.0 + j, 20.0 + 5 * j, 1) for j in range(16)]}]})
    ann = mpii.write_release_mat(tmp_path / "ann.mat", people)
    split = tmp_path / "detections.mat"
    scipy.io.savemat(split, {"RELEASE_img_index": np.array([[3, 1]]),
                             "RELEASE_person_index": np.array([[1, 1]])})
    gt, pred = C.mpii_validation(converted[RELEASE_SMALL.name][2], tmp_path / "scores",
                                 annotations=ann, split_file=split, images=images,
                                 progress=False)
    result, name = mpii_mat.evaluate_mpii(gt, pred)
    assert name == "preds" and result.n_people == 2
    truth = scipy.io.loadmat(gt)["pos_gt_src"]
    assert truth.shape == (16, 2, 2) and truth[9, :, 0].tolist() == [39.0, 65.0]


def test_notebook_helpers_find_and_draw_a_converted_model(converted, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from cpm_nb.course import overlays
    from cpm_nb.inference import predict as P

    run = converted[RELEASE_SMALL.name][2]
    (tmp_path / C.CONFIG_FILE).write_text(json.dumps({"format": "cpm-nb-model"}))  # trained
    assert C.find_converted(None, tmp_path / "nothing", tmp_path, run) == run
    assert C.find_converted(None, tmp_path) is None
    proto, weights = C.example_files(tmp_path / "example", RELEASE_SMALL)
    assert caffe_net.config_from_net(caffe_proto.read_prototxt(proto))[0] == RELEASE_SMALL.replace(name="caffe")
    assert set(caffe_proto.read_caffemodel(weights)) >= {"data", "conv1_1", "Mconv7_stage3"}
    pred = P.load_predictor(run)(np.full((80, 60, 3), 120, np.uint8), scales=(1.0,))
    fig = overlays.prediction_figure(pred, title="t")
    assert len(fig.axes) == 2 and "left knee (red)" in fig.axes[1].get_title()


def test_a_converted_model_exports_with_parity(converted, tmp_path):
    """A centre-map model (two inputs) through `cpm-nb export`'s path: SavedModel and TFLite
    give the Keras maps (the TFLite signature lists center_map before image)."""
    from cpm_nb.inference import export
    from cpm_nb.inference import predict as P

    predictor = P.load_predictor(converted[RELEASE_SMALL.name][2])
    report = export.export_model(predictor.model, tmp_path / "exported", n_check=2,
                                 meta=predictor.meta)
    assert report["parity"], report
    assert all(r["ok"] for r in report["parity"].values()), report["parity"]
