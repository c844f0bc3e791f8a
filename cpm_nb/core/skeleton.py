"""The MPII 16-joint skeleton: joint order, names, left/right pairs and limbs.

Joint ids follow the official MPII annotation (``annopoints.point.id``):

    0 r-ankle   1 r-knee    2 r-hip       3 l-hip       4 l-knee    5 l-ankle
    6 pelvis    7 thorax    8 upper-neck  9 head-top   10 r-wrist  11 r-elbow
   12 r-shoulder 13 l-shoulder 14 l-elbow 15 l-wrist

"Right" and "left" are the person's own sides (a person facing the camera has
the right side on the image's left).
"""

from __future__ import annotations

NUM_JOINTS = 16

JOINT_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
    "pelvis", "thorax", "upper_neck", "head_top",
    "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)  # fmt: skip

# Short names used by the common MPII evaluation files (`dataset_joints`).
SHORT_NAMES = (
    "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip

JOINT = {name: i for i, name in enumerate(JOINT_NAMES)}

# (right, left) joint pairs swapped by a horizontal flip.
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))


def flip_permutation() -> list[int]:
    """Index permutation that swaps left and right joints (for horizontal flips)."""
    perm = list(range(NUM_JOINTS))
    for right, left in FLIP_PAIRS:
        perm[right], perm[left] = left, right
    return perm


# Bones drawn for a skeleton, as (joint, joint).
LIMBS = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5),  # legs through the pelvis
    (6, 7), (7, 8), (8, 9),  # spine, neck, head
    (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15),  # arms through the thorax
)  # fmt: skip

# A colour per joint for overlays: right side warm, left side cool, centre green.
JOINT_COLORS = (
    "#d62728", "#ff7f0e", "#ffbb78", "#aec7e8", "#1f77b4", "#17becf",
    "#2ca02c", "#98df8a", "#bcbd22", "#ffd700",
    "#e377c2", "#f7b6d2", "#ff9896", "#c5b0d5", "#9467bd", "#8c564b",
)  # fmt: skip
