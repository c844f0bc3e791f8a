"""The receptive-field calculator agrees with theory and with gradients."""

import numpy as np
import pytest

from cpm_nb.core.runtime import import_keras
from cpm_nb.model import receptive_field as RF

keras = None  # imported by the fixture below, not at collection


@pytest.fixture(autouse=True, scope="module")
def _backend():
    """Keras is imported when these tests run, not when pytest collects them."""
    global keras
    keras = import_keras()


def test_known_stacks():
    assert RF.receptive_field([RF.Layer("a", 3), RF.Layer("b", 3)]) == 5  # VGG's argument
    assert RF.receptive_field([RF.Layer("a", 3, dilation=2)]) == 5
    rows = RF.receptive_fields([RF.Layer("c", 3), RF.Layer("p", 2, 2), RF.Layer("c2", 3)])
    assert [(r.receptive_field, r.jump) for r in rows] == [(3, 1), (4, 2), (8, 2)]
    assert RF.receptive_field([]) == 1


@pytest.mark.parametrize("seed", range(4))
def test_calculator_matches_gradient_measurement(seed):
    rng = np.random.default_rng(seed)
    layers = [keras.Input((96, 96, 1))]
    for i in range(rng.integers(2, 5)):
        if rng.random() < 0.4:
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
        layers.append(keras.layers.Conv2D(1, int(rng.choice([1, 3, 5])), padding="same",
                                          dilation_rate=int(rng.choice([1, 2])), name=f"conv{i}"))
    net = keras.Sequential(layers)
    for layer in net.layers:
        layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
    assert RF.empirical_receptive_field(net, 96) == RF.receptive_field(RF.layers_from_keras(net))
