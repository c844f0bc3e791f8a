"""Random figures on the MPII skeleton: the poses of the synthetic generator.

A figure is drawn from an *activity* (standing, walking, arms up, reaching,
crouching, kicking, dancing, sitting, bending): each sets the ranges of the limb
angles, measured in degrees from straight down, with 'outward' positive for the
right side and mirrored for the left.  :func:`make_skeleton` turns the angles and
random limb lengths (+-18 %, foreshortened sometimes, shoulders and hips narrowed
when the person turns away) into the 16 joints of :mod:`cpm_nb.core.skeleton`, with the
pelvis at the origin, plus the widths :mod:`cpm_nb.data.synthetic` draws the limbs with.
"""

from __future__ import annotations

import math

import numpy as np

from cpm_nb.core import skeleton

ACTIVITIES = ("standing", "walking", "arms up", "reaching", "crouching", "kicking", "dancing",
              "sitting", "bending")
ACTIVITY_PROBS = (0.17, 0.17, 0.07, 0.15, 0.1, 0.08, 0.1, 0.1, 0.06)

J = skeleton.JOINT


def _unit(deg: float) -> np.ndarray:
    """Unit vector at ``deg`` degrees from straight down, positive towards image +x."""
    t = math.radians(deg)
    return np.array([math.sin(t), math.cos(t)])


def _pose_angles(rng: np.random.Generator, activity: str) -> dict:
    """Limb directions in degrees from 'down' (+ towards image +x), before mirroring.

    Arms/legs are given for the person's *right* side with 'outward' positive;
    the left side is mirrored.  Angle limits keep poses anatomically plausible in 2-D.
    """
    u = rng.uniform
    a = {
        "torso": u(-20, 20), "neck": u(-15, 15),
        "r_upper_arm": u(5, 45), "l_upper_arm": u(5, 45),
        "r_elbow": u(-30, 120), "l_elbow": u(-30, 120),
        "r_thigh": u(0, 15), "l_thigh": u(0, 15), "r_knee": u(-25, 8), "l_knee": u(-25, 8),
    }
    if activity == "walking":
        swing = u(10, 30)
        a.update(r_thigh=swing, l_thigh=u(-8, 5), r_upper_arm=u(-25, 10),
                 l_upper_arm=u(15, 45), r_knee=u(-30, 0), l_knee=u(-5, 20))
    elif activity == "arms up":
        a.update(r_upper_arm=u(120, 175), l_upper_arm=u(120, 175),
                 r_elbow=u(-30, 30), l_elbow=u(-30, 30))
    elif activity == "reaching":
        side = "r" if rng.random() < 0.5 else "l"
        a[f"{side}_upper_arm"] = u(60, 130)
        a[f"{side}_elbow"] = u(-20, 20)
        a["torso"] = u(-25, 25)
    elif activity == "crouching":
        a.update(r_thigh=u(40, 80), l_thigh=u(40, 80), r_knee=u(-150, -100),
                 l_knee=u(-150, -100), r_upper_arm=u(20, 70), l_upper_arm=u(20, 70),
                 r_elbow=u(40, 110), l_elbow=u(40, 110))
    elif activity == "kicking":
        side = "r" if rng.random() < 0.5 else "l"
        a[f"{side}_thigh"] = u(50, 100)
        a[f"{side}_knee"] = u(-40, 10)
        a.update(r_upper_arm=u(30, 100), l_upper_arm=u(30, 100), torso=u(-20, 20))
    elif activity == "dancing":
        for side in "rl":
            a[f"{side}_upper_arm"] = u(-20, 120)
            a[f"{side}_elbow"] = u(-60, 120)
            a[f"{side}_thigh"] = u(-10, 45)
            a[f"{side}_knee"] = u(-60, 20)
        a["torso"] = u(-25, 25)
    elif activity == "sitting":  # thighs towards the camera's side, shins down
        for side in "rl":
            a[f"{side}_thigh"] = u(55, 100)
            a[f"{side}_knee"] = -u(45, 100)
    elif activity == "bending":
        a["torso"] = u(25, 75) * (1 if rng.random() < 0.5 else -1)
    return a


def make_skeleton(rng: np.random.Generator, height: float, activity: str) -> dict:
    """Joints (16, 2, pelvis at the origin, image axes) and drawing sizes of one figure."""
    var = lambda: rng.uniform(0.82, 1.18)  # noqa: E731
    L = {
        "head": 0.15 * var(), "neck": 0.05 * var(), "torso": 0.30 * var(),
        "hip_w": 0.075 * var(), "shoulder_w": 0.13 * var(),
        "upper_arm": 0.17 * var(), "forearm": 0.15 * var(),
        "thigh": 0.24 * var(), "shin": 0.24 * var(),
    }
    L = {k: v * height for k, v in L.items()}
    turn = rng.uniform(0.35, 1.0)  # turned away from the camera: narrower shoulders, hips
    L["hip_w"] *= turn
    L["shoulder_w"] *= turn
    # Foreshortening (a limb pointing towards the camera looks shorter), sometimes.
    for k in ("upper_arm", "forearm", "thigh", "shin"):
        if rng.random() < 0.3:
            L[k] *= rng.uniform(0.5, 0.9)
    a = _pose_angles(rng, activity)
    up = -_unit(a["torso"])  # the torso points up
    side = np.array([-up[1], up[0]])  # towards image +x when upright
    j = np.zeros((16, 2))
    j[J["thorax"]] = up * L["torso"]
    j[J["upper_neck"]] = j[J["thorax"]] - _unit(a["torso"] + a["neck"]) * L["neck"]
    j[J["head_top"]] = j[J["upper_neck"]] - _unit(a["torso"] + a["neck"]) * L["head"]
    for s, sign in (("r", -1.0), ("l", 1.0)):  # facing the camera: right side on image left
        hip = sign * side * L["hip_w"]
        shoulder = j[J["thorax"]] + sign * side * L["shoulder_w"] - up * 0.02 * height
        # angles measured from 'down' in the torso frame, outward positive
        ua = a["torso"] + sign * a[f"{s}_upper_arm"]
        fa = ua + sign * a[f"{s}_elbow"]
        th = a["torso"] + sign * a[f"{s}_thigh"]
        sh = th + sign * a[f"{s}_knee"]
        j[J[f"{s}_hip"]] = hip
        j[J[f"{s}_shoulder"]] = shoulder
        j[J[f"{s}_elbow"]] = shoulder + _unit(ua) * L["upper_arm"]
        j[J[f"{s}_wrist"]] = j[J[f"{s}_elbow"]] + _unit(fa) * L["forearm"]
        j[J[f"{s}_knee"]] = hip + _unit(th) * L["thigh"]
        j[J[f"{s}_ankle"]] = j[J[f"{s}_knee"]] + _unit(sh) * L["shin"]
    widths = {
        "upper_arm": 0.060 * height * var(), "forearm": 0.048 * height * var(),
        "thigh": 0.085 * height * var(), "shin": 0.065 * height * var(),
        "neck": 0.05 * height, "head_w": 0.38 * L["head"] * var(),
    }
    return {"joints": j, "widths": widths, "head_len": L["head"]}
