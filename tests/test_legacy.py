"""Run folders and converted models written by the previous layout (tests/fixtures/legacy:
plain functional models, the configuration only in cpm_config.json) load with today's code
as CPM models and predict exactly what the code that wrote them predicted."""

import json
from pathlib import Path

import numpy as np
import pytest

from cpm_nb.inference import predict as P
from cpm_nb.training import runs

RUNS = ("fast-run", "release-small")
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def legacy():
    folder = FIXTURES
    with np.load(folder / "predictions.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return folder, arrays, json.loads((folder / "predictions.json").read_text())


@pytest.mark.parametrize("run", RUNS)
def test_a_legacy_model_loads_as_a_cpm_with_its_configuration(legacy, run):
    from cpm_nb.model.architecture import CPMConfig
    from cpm_nb.model.network import CPM

    folder, arrays, _ = legacy
    trained = runs.load_run(folder / run)
    assert isinstance(trained.model, CPM)
    meta = json.loads((folder / run / "cpm_config.json").read_text())
    assert trained.model.cpm_config == CPMConfig.from_dict(meta["cpm_config"])
    for t, maps in enumerate(trained.model.belief_maps(arrays[f"{run}/crop"]), 1):
        np.testing.assert_array_equal(maps, arrays[f"{run}/forward_stage{t}"])


@pytest.mark.parametrize("call", ["default", "three_scales"])
@pytest.mark.parametrize("run", RUNS)
def test_a_legacy_model_predicts_what_it_predicted(legacy, run, call):
    """The whole predict path -- crop, forward pass, multi-scale merge, decoding (the
    release's upsampled argmax for the converted model), joint order -- as before."""
    folder, arrays, info = legacy
    predictor = P.load_predictor(folder / run)
    scales = info["calls"][f"{run}/{call}"]["scales"]
    pred = predictor(folder / "image.png", scales=None if call == "default" else scales,
                     **info["person"])
    assert list(pred.scales) == scales
    key = f"{run}/{call}"
    np.testing.assert_array_equal(pred.joints, arrays[f"{key}/joints"])
    np.testing.assert_array_equal(pred.joints_crop, arrays[f"{key}/joints_crop"])
    np.testing.assert_allclose(pred.confidence, arrays[f"{key}/confidence"], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(pred.stage_maps[-1], arrays[f"{key}/last_stage_maps"],
                               atol=1e-6)


def test_a_legacy_model_saved_again_describes_itself(legacy, tmp_path):
    """Loaded through its run folder and saved again, a legacy model is a CPM file: plain
    Keras loads it with its configuration, no cpm_config.json needed."""
    from cpm_nb.model.network import CPM, load_keras

    folder, arrays, _ = legacy
    trained = runs.load_run(folder / "release-small")
    trained.model.save(tmp_path / "again.keras")
    again = load_keras(tmp_path / "again.keras")
    assert isinstance(again, CPM) and again.cpm_config == trained.model.cpm_config
    for a, b in zip(again.belief_maps(arrays["release-small/crop"]),
                    trained.model.belief_maps(arrays["release-small/crop"])):
        np.testing.assert_array_equal(a, b)
