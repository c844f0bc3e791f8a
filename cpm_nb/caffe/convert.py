"""Running the released CPM Caffe models: a converter to cpm-nb run folders, without Caffe.

The authors of CPM released trained Caffe models: a deploy ``.prototxt`` (the network,
protobuf text format) and a ``.caffemodel`` (the weights, protobuf binary format) each.
:func:`convert` turns such a pair into a run folder (``model.keras`` + ``cpm_config.json``)
that :func:`cpm_nb.inference.predict.load_predictor` loads like a trained run:

1. **The prototxt** is parsed (:func:`read_prototxt`, a small parser of the text format)
   and compared layer by layer with :func:`cpm_nb.model.cpm.architecture`: names, kinds,
   kernels, padding, strides, channels and inputs.  The configuration (input size,
   stages, width, maps, centre map) is derived from it (:func:`config_from_net`); the
   MPII model's ``pose_deploy_resize.prototxt`` gives exactly ``cpm-mpii-release``.
2. **The caffemodel** is read with a hand-written protobuf wire-format reader
   (:func:`read_caffemodel`) that knows the few fields of Caffe's ``caffe.proto`` it
   needs (layer name and type, blobs, blob shape and data; see the tables below) and
   skips everything else -- including the extra training layers of a snapshot, whose
   types BVLC's ``caffe.proto`` does not define.  Layers are matched by name.
3. **Kernels** go from Caffe's ``[out, in, kh, kw]`` to Keras' ``[kh, kw, in, out]``;
   ``conv1_1``'s input channels are reversed, so the Keras model takes **RGB** whereas
   the Caffe model takes BGR.  Nothing else changes: the model's ``normalize`` layer
   computes the release's ``x / 256 - 0.5``, and crops are padded with 128 as in the
   release.
4. **The run folder** is written atomically: ``model.keras`` holds a
   :class:`~cpm_nb.model.network.CPM` (it carries its configuration), and
   ``cpm_config.json`` a ``preprocessing`` block (:func:`release_preprocessing`) that
   :mod:`cpm_nb.inference.predict` reads: the release's joint order and its mapping to the
   16 MPII joints, the centre map, the multi-scale search of the release's test code and
   its decoding (:data:`cpm_nb.inference.decoding.RELEASE`), and ``"procedure":
   "release"``: predict runs the model as the release's test code did
   (:mod:`cpm_nb.inference.release_demo`).

For tests, and for anyone who wants to check the numerics without the real files,
:func:`deploy_prototxt` writes the deploy file of any cpm-nb configuration with the
release's layer names and :func:`write_caffemodel` writes weights in the same binary
format, so that OpenCV's Caffe importer -- an independent implementation -- can run the
same network (:func:`opencv_stage_maps`, :func:`parity`).

Which released files fit: the VGG-trunk network of the MPII model
(``_trained_MPI/pose_deploy_resize.prototxt`` with ``pose_iter_320000.caffemodel``, the
one of the release's Python demo) is checked against and built as ``cpm-mpii-release``.
The release's other pose models (MPII 630000, MPII+LSP, LSP: ``pose_deploy_centerMap.prototxt``;
FLIC: ``pose_deploy.prototxt``) use the original CPM architecture with 9x9 and 11x11
convolutions and an image branch per stage; any prototxt without the table's ``conv1_1`` /
``conv5_2_CPM`` is built layer by layer from the prototxt itself (:mod:`cpm_nb.caffe.plan`:
:func:`plan_prototxt`, :func:`build_prototxt_keras`), its convolutions that read the image
reversed to RGB, its stage outputs the convolutions that no ReLU follows.  A layer type it
does not build, or a network whose outputs are not square ``S/8`` maps (the person-centre
detector), is a one-line error.  ``predict`` takes the 14-joint models; FLIC's 9 joints
include ``head``, which is not an MPII joint, so ``predict`` refuses that run (one line).

**Licence.**  The released prototxts, code and weights carry a non-commercial,
no-redistribution licence; a converted model is a derivative of the weights and keeps
that licence.  Nothing from the release is part of this project.

**Modules.**  This module converts, checks parity and predicts the MPII validation set
(the figure of notebook 07 is :func:`cpm_nb.course.overlays.prediction_figure`);
it re-exports the public names of the modules it builds on: :mod:`cpm_nb.caffe.proto`
(reading/writing the two file formats, :class:`CaffeError`), :mod:`cpm_nb.caffe.net`
(the released MPII network as a cpm-nb configuration), :mod:`cpm_nb.caffe.plan` (any
other deploy file, built layer by layer) and :mod:`cpm_nb.caffe.release` (the release's
joint orders and test-time procedure).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

# The public names of the caffe_* modules are re-exported: cpm_nb.caffe.convert is the entry point.
from cpm_nb.caffe.net import (
    build_keras,
    caffe_conv_shapes,
    config_from_net,
    deploy_prototxt,
    keras_weights,
    random_weights,
)
from cpm_nb.caffe.plan import (
    NetPlan,
    build_prototxt_keras,
    config_from_plan,
    plan_prototxt,
    prototxt_weights,
)
from cpm_nb.caffe.proto import (
    CaffeError,
    read_caffemodel,
    read_prototxt,
    write_caffemodel,
)
from cpm_nb.caffe.release import (
    RELEASE_BOX,
    RELEASE_TARGET_DIST,
    release_preprocessing,
)
from cpm_nb.core import files
from cpm_nb.core.progress import Progress
from cpm_nb.training.runs import CONFIG_FILE, MODEL_FILE  # the run folder's file names

LICENCE = ("converted from the CPM release (convolutional-pose-machines-release): the weights "
           "keep the release's licence (non-commercial use, no redistribution)")


# --- conversion -------------------------------------------------------------------------------


def _save_model(model, path: Path) -> None:
    """``model.save(path)`` atomically.  Not :func:`cpm_nb.core.files.atomic_output`: Keras
    saves only to a name that ends in ``.keras``, so the temporary name keeps the suffix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _center_pooling(plan: NetPlan) -> str:
    pools = [op for op in plan.ops if op.kind == "pool" and plan.center_blob in op.bottoms]
    return "; ".join(f"{op.name}: {'average' if op.params['pool'] == 'AVE' else 'max'} "
                     f"{op.params['kernel'][0]}x{op.params['kernel'][1]} stride "
                     f"{op.params['stride'][0]}, Caffe's ceil mode, padding not counted"
                     for op in pools) or "none"


def _metadata(cfg, joints, prototxt: Path, caffemodel: Path, weights, seconds,
              plan: NetPlan | None = None) -> dict:
    import dataclasses

    from cpm_nb.core import skeleton
    from cpm_nb.core.runtime import versions

    named = [j for j in joints if j != "background"]
    short = dict(zip(skeleton.JOINT_NAMES, skeleton.SHORT_NAMES))
    used = set(plan.conv_shapes() if plan else caffe_conv_shapes(cfg))
    extra = {} if plan is None else {
        "architecture": "prototxt",
        "architecture_note": "built layer by layer from the prototxt (cpm_nb.caffe.convert."
                             "build_prototxt_keras): cpm_config gives the input, stages, maps "
                             "and centre map; its width and stage_kernel do not describe "
                             "the layers, model.keras does",
        "params": plan.param_count()}
    preprocessing = release_preprocessing(joints, cfg) if plan is None else \
        release_preprocessing(joints, cfg, plan.image_convs, _center_pooling(plan))
    return {
        "format": "cpm-nb-model",
        "version": 1,
        "model_file": MODEL_FILE,
        "cpm_config": dataclasses.asdict(cfg),
        "joints": named,
        "joint_short_names": [short.get(j, j) for j in named],
        "input_size": cfg.input_size,
        "map_size": cfg.map_size,
        "stride": 8,
        "stages": cfg.stages,
        "outputs": plan.outputs if plan else cfg.output_names,
        "input": f"RGB uint8/float32 0..255, [B, S, S, 3], person centred, 200*scale px = "
                 f"{RELEASE_TARGET_DIST * 200 / RELEASE_BOX:.3f} x S (see cpm_nb.data.preprocess)",
        "normalisation": "inside the model: layer 'normalize' computes x / 256 - 0.5",
        "sigma": None,
        "training": None,
        "profile": None,
        "data": "the CPM release's trained weights",
        "steps": None,
        "wall_s": round(seconds, 1),
        "metrics": {},
        "source": "caffe",
        "caffe": {"prototxt": prototxt.name, "caffemodel": caffemodel.name,
                  "caffemodel_bytes": caffemodel.stat().st_size,
                  "caffemodel_sha256": _sha256(caffemodel),
                  "layers_converted": len(used),
                  "layers_ignored": sorted(n for n, w in weights.items() if n not in used)},
        "licence": LICENCE,
        "preprocessing": preprocessing,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def convert(prototxt, caffemodel, out, joints=None, force: bool = False) -> dict:
    """Convert a released CPM (deploy ``prototxt`` + ``caffemodel``) into the run folder
    ``out`` (``model.keras`` + ``cpm_config.json``, each written atomically).  Returns the
    ``cpm_config.json`` contents.  Raises :class:`CaffeError` (one line) for a file that
    is not a CPM caffemodel or does not match the prototxt, or an ``out`` that already
    holds a model (unless ``force``)."""
    start = time.perf_counter()
    prototxt, caffemodel, out = Path(prototxt), Path(caffemodel), Path(out)
    if (out / MODEL_FILE).exists() and not force:
        raise CaffeError(f"{out} already holds a {MODEL_FILE}; convert into another folder "
                         "or pass force=True to replace it")
    net = read_prototxt(prototxt)
    plan = None
    if net.get("conv1_1") is not None and net.get("conv5_2_CPM") is not None:
        cfg, names = config_from_net(net, str(prototxt), joints)  # cpm_nb.model.cpm's network
    else:  # e.g. the original architecture: built from the prototxt itself
        plan = plan_prototxt(net, str(prototxt))
        cfg, names = config_from_plan(plan, str(prototxt), joints)
    weights = read_caffemodel(caffemodel)
    if plan is None:
        model = build_keras(cfg, keras_weights(weights, cfg, str(caffemodel)))
    else:
        from cpm_nb.model.network import as_cpm

        model = as_cpm(build_prototxt_keras(plan, prototxt_weights(weights, plan,
                                                                   str(caffemodel))), cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CaffeError(f"cannot create the run folder {out}: {err}") from None
    _save_model(model, out / MODEL_FILE)
    meta = _metadata(cfg, names, prototxt, caffemodel, weights, time.perf_counter() - start,
                     plan)
    files.atomic_write_json(out / CONFIG_FILE, meta, indent=1)
    return meta


# --- the independent reference: OpenCV's Caffe importer --------------------------------------


def caffe_input(images: np.ndarray, center_maps: np.ndarray | None) -> np.ndarray:
    """The release's input blob ``[B, 4, S, S]`` (``[B, 3, S, S]`` without a centre map)
    for RGB images 0..255 ``[B, S, S, 3]``: BGR, ``x / 256 - 0.5``, then the centre map."""
    x = np.asarray(images, np.float32)[..., ::-1] / 256.0 - 0.5
    if center_maps is not None:
        x = np.concatenate([x, np.asarray(center_maps, np.float32)], axis=-1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def opencv_stage_maps(prototxt, caffemodel, images, center_maps=None, outputs=None):
    """Run the Caffe files with OpenCV's importer (``cv2.dnn.readNetFromCaffe``, OpenCV 4)
    and return the blobs ``outputs`` (default: each stage's belief maps) as ``[B, M, M, C]``.
    For a convolution followed by a ReLU, ask for the ReLU's name to get the activated
    value (OpenCV returns a convolution's own blob before its in-place ReLU)."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    blob = caffe_input(images, center_maps)
    net.setInput(blob, "data" if center_maps is not None else "image")
    if outputs is None:
        stages = read_prototxt(prototxt)
        outputs = [n for n in ["conv5_2_CPM"] + [f"Mconv7_stage{t}" for t in range(2, 100)]
                   if stages.get(n) is not None]
    outs = net.forward(list(outputs))
    return [np.asarray(o).transpose(0, 2, 3, 1) for o in outs]


PARITY_TOLERANCE = 1e-3  # max |Keras - OpenCV| per stage, relative to the map range


def parity_misses(rows: list[dict], tolerance: float = PARITY_TOLERANCE) -> list[dict]:
    """The rows of :func:`parity` beyond ``tolerance`` (NaN counts as beyond)."""
    return [r for r in rows if not r["relative"] <= tolerance]


def parity(run, prototxt, caffemodel, images=None, seed: int = 0) -> list[dict]:
    """Compare a converted run with OpenCV on the same images, stage by stage: the largest
    absolute difference of the belief maps, and that difference relative to the maps'
    range.  ``images`` default: two random RGB images."""
    from cpm_nb.model.inputs import center_maps
    from cpm_nb.training.runs import load_run

    trained = load_run(run)
    cfg = trained.model.cpm_config
    names = trained.meta.get("outputs") or cfg.output_names
    if images is None:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (2, cfg.input_size, cfg.input_size, 3)).astype(np.float32)
    ours = trained.model.belief_maps(images)
    centers = center_maps(len(images), cfg) if cfg.center_map else None
    ref = opencv_stage_maps(prototxt, caffemodel, images, centers, names)
    rows = []
    for name, a, b in zip(names, ours, ref):
        diff = float(np.abs(a - b).max())
        span = float(b.max() - b.min()) or 1.0
        rows.append({"stage": name, "max_abs_diff": diff, "map_range": span,
                     "relative": diff / span})
    return rows


# --- MPII validation predictions ---------------------------------------------------------------


def _split_order(split_file) -> list[tuple[int, int]]:
    from cpm_nb.data import mpii

    mat = mpii._load_mat(Path(split_file))
    if "RELEASE_img_index" not in mat or "RELEASE_person_index" not in mat:
        raise CaffeError(f"{split_file}: no RELEASE_img_index / RELEASE_person_index; "
                         "expected Tompson et al.'s detections.mat")
    img = np.asarray(mat["RELEASE_img_index"]).ravel().astype(int)
    per = np.asarray(mat["RELEASE_person_index"]).ravel().astype(int)
    return list(zip(img.tolist(), per.tolist()))


def _under(root, name: str, what: str) -> Path:
    hits = sorted(Path(root).expanduser().rglob(name)) if root else []
    if not hits:
        raise CaffeError(f"no {name} under {root}: give the {what} (or run "
                         "`cpm-nb prepare mpii --root DIR` first)")
    return hits[0]


def mpii_validation(run, out, root=None, annotations=None, split_file=None, images=None,
                    scales=None, limit=None, batch_size: int = 8,
                    progress: bool = True) -> tuple[Path, Path]:
    """Predict the standard 2,958 MPII validation people with a run folder (each person's
    ``objpos`` and ``scale``, the model's multi-scale search) and write the two files
    ``cpm-nb evaluate-mpii`` scores: ``out/gt_valid.mat`` (ground truth, ``pos_gt_src``
    16x2xN, ``jnt_missing``, ``headboxes_src``, ``dataset_joints``) and ``out/pred.mat``
    (``preds`` Nx16x2, 1-based original pixels), people in the order of the split file
    (Tompson et al.'s ``detections.mat``).  The annotation file, the split file and the
    ``images/`` folder are found under ``root`` (the folder of ``cpm-nb prepare mpii``)
    unless given.  ``limit``: only the first N people (a quick look)."""
    import scipy.io

    from cpm_nb.core import skeleton
    from cpm_nb.data import mpii
    from cpm_nb.inference.predict import load_predictor
    from cpm_nb.io.images import ImageError

    annotations = annotations or _under(root, "mpii_human_pose_v1_u12_1.mat", "annotations")
    split_file = split_file or _under(root, "detections.mat", "split file")
    images = images or Path(root).expanduser() / "images"
    predictor = load_predictor(run)
    people = {p.key: p for p in mpii.read_annotations(annotations)}
    order = _split_order(split_file)[:limit]
    missing = [k for k in order if k not in people]
    if missing:
        raise CaffeError(f"{annotations}: {len(missing)} validation people of {split_file} "
                         f"are not in it (first: image {missing[0][0]}, person "
                         f"{missing[0][1]})")
    chosen = [people[k] for k in order]
    preds = np.zeros((len(chosen), skeleton.NUM_JOINTS, 2))
    with Progress(len(chosen), "predicting", unit="person", mode=progress) as bar:
        for start in range(0, len(chosen), batch_size):
            group = chosen[start:start + batch_size]
            prepared = []
            for p in group:
                try:
                    prepared.append(predictor.prepare(Path(images) / p.image, center=p.objpos,
                                                      scale=p.scale, scales=scales))
                except ImageError as err:
                    raise CaffeError(str(err)) from None
            for k, pred in enumerate(predictor.run(prepared)):
                preds[start + k] = pred.joints
            bar.update(len(group))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gt = np.stack([np.where(p.missing[:, None], 0.0, p.joints) for p in chosen])
    boxes = np.stack([np.asarray(p.head_box, float).reshape(2, 2) for p in chosen])
    names = np.array(skeleton.SHORT_NAMES, dtype=object)[None]
    gt_path, pred_path = out / "gt_valid.mat", out / "pred.mat"
    scipy.io.savemat(gt_path, {"pos_gt_src": gt.transpose(1, 2, 0),
                               "jnt_missing": np.stack([p.missing for p in chosen]).T
                               .astype(np.uint8),
                               "headboxes_src": boxes.transpose(1, 2, 0),
                               "dataset_joints": names})
    scipy.io.savemat(pred_path, {"preds": preds})
    return gt_path, pred_path


# --- notebook 07: finding a converted model, an example without it, a figure -----------------


WITHOUT_RELEASE = """\
No converted release model was found, so there is nothing to draw here.  To see it:
  1. get the MPII model of the CPM release: model/_trained_MPI/pose_deploy_resize.prototxt
     from github.com/shihenw/convolutional-pose-machines-release, and
     pose_iter_320000.caffemodel (120 MB; the release's testing/get_model.sh downloads it);
  2. cpm-nb convert-caffe --prototxt pose_deploy_resize.prototxt \\
         --caffemodel pose_iter_320000.caffemodel --out runs/cpm-release --check
  3. set CPM_NB_RELEASE_RUN to that folder (on Colab: keep it in MyDrive/cpm_nb/runs/).
This cell then draws the released network's pose of the photo above, found with the
release's own multi-scale search (4 scales for a box), next to its head (yellow), left knee
(red) and right ankle (blue) belief maps.  What to expect: a network trained on real MPII photos should put the
head, neck and shoulders on the person -- unlike our synthetic-data model in section 6 --
while the hips, knees and ankles, below the edge of this portrait, are guesses with low
confidence.  The weights keep the release's licence (non-commercial, no redistribution)."""


def find_converted(*candidates) -> Path | None:
    """The first of ``candidates`` (folders; None entries are skipped) that holds a model
    converted by :func:`convert`, or None."""
    for folder in candidates:
        if not folder:
            continue
        config = Path(folder).expanduser() / CONFIG_FILE
        try:
            meta = files.read_json(config)
        except files.DataError:
            continue
        if isinstance(meta, dict) and meta.get("source") == "caffe":
            return config.parent
    return None


def example_files(folder, config="cpm-mpii-release", seed: int = 0) -> tuple[Path, Path]:
    """A deploy prototxt and a caffemodel with random weights for ``config``, in the
    release's layer names and binary format, plus two weightless training layers as a
    real snapshot has them: what can be converted when the real files are absent."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    proto = folder / "deploy.prototxt"
    proto.write_text(deploy_prototxt(config))
    extra = [("data", "CPMData", []), ("loss_stage1", "EuclideanLoss", [])]
    weights = write_caffemodel(folder / "random.caffemodel", extra + random_weights(config, seed))
    return proto, weights
