"""Interactive explorers with a static fallback for headless runs.

``explore(render, slider=Slider(...), ...)`` shows ipywidgets controls in
JupyterLab and Colab.  With ``CPM_NB_STATIC=1`` (CI, ``cpm-nb notebooks``) it
instead calls ``render`` for a few preset settings, so that stored notebooks
and GitHub readers see real figures instead of a dead widget.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cpm_nb.core.runtime import static_mode


@dataclass(frozen=True)
class Slider:
    """A numeric control; ``static`` lists the values drawn in headless runs."""

    min: float
    max: float
    step: float
    value: float
    static: tuple = ()
    description: str = ""

    def widget(self, name):
        import ipywidgets as w

        is_int = all(float(v).is_integer() for v in (self.min, self.max, self.step, self.value))
        cls = w.IntSlider if is_int else w.FloatSlider
        return cls(min=self.min, max=self.max, step=self.step, value=self.value,
                   description=self.description or name, continuous_update=False)


@dataclass(frozen=True)
class Choice:
    """A drop-down control; ``static`` lists the options drawn in headless runs."""

    options: tuple
    value: Any = None
    static: tuple = ()
    description: str = ""

    def widget(self, name):
        import ipywidgets as w

        value = self.options[0] if self.value is None else self.value
        return w.Dropdown(options=list(self.options), value=value,
                          description=self.description or name)


def default_value(control) -> Any:
    if isinstance(control, Choice) and control.value is None:
        return control.options[0]
    return control.value


def static_settings(controls: dict) -> list[dict]:
    """The settings drawn in static mode: the product of each control's ``static``
    values (its default when it has none)."""
    names = list(controls)
    values = [controls[n].static or (default_value(controls[n]),) for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def explore(render: Callable[..., Any], static: bool | None = None, **controls):
    """Call ``render(**values)`` under interactive controls, or for the static presets.

    ``render`` should draw (and show) one figure for one setting.  Returns the
    ipywidgets box in interactive mode, the list of static settings otherwise.
    """
    if static is None:
        static = static_mode()
    if static:
        settings = static_settings(controls)
        for values in settings:
            render(**values)
        return settings
    import ipywidgets as w
    from IPython.display import display

    widgets = {name: control.widget(name) for name, control in controls.items()}
    out = w.interactive_output(render, widgets)
    box = w.VBox([w.HBox(list(widgets.values())), out])
    display(box)
    return box
