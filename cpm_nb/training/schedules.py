"""Learning-rate schedules Keras does not have: a linear warm-up in front of another one.

:class:`WarmUp` is registered with Keras (``cpm_nb>WarmUp``), so an optimizer that uses it
saves with a compiled model and comes back with ``keras.saving.load_model`` (as
:class:`cpm_nb.training.loss.CPMLoss` does for the loss).  Importing this module imports
Keras: it is imported where a model is compiled.
"""

from __future__ import annotations

from cpm_nb.core.runtime import import_keras

keras = import_keras()
ops = keras.ops


@keras.saving.register_keras_serializable(package="cpm_nb")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 1 % of ``peak`` over ``steps`` steps, then ``after``: a schedule,
    or a constant learning rate."""

    def __init__(self, after, steps: int, peak: float):
        self.after = after
        self.steps, self.peak = int(steps), float(peak)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        ramp = self.peak * (0.01 + 0.99 * step / self.steps)
        after = self.after(step) if callable(self.after) else self.after
        return ops.where(step < self.steps, ramp, after)

    def get_config(self) -> dict:
        after = (keras.saving.serialize_keras_object(self.after) if callable(self.after)
                 else float(self.after))
        return {"after": after, "steps": self.steps, "peak": self.peak}

    @classmethod
    def from_config(cls, config: dict):
        after = config["after"]
        if isinstance(after, dict):
            after = keras.saving.deserialize_keras_object(after)
        return cls(after, config["steps"], config["peak"])
