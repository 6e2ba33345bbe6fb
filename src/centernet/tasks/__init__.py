"""Tasks: what is particular to 2D boxes (``ctdet``), multi-person pose (``multi_pose``) and 3D (``ddd``).

Concern: a ``base.Task`` holds a task's heads, targets, loss, decoding, test-time merging, result
rows and scoring; ``registry.register_task`` makes one known by name (the public registry; the three built-in
tasks register themselves) and ``registry.get_task`` builds one. Where the paper's equations live:
the Gaussian splat of each centre and its radius (section 3: ``targets.draw_gaussian``,
``targets.gaussian_radius``); the penalty-reduced focal loss (eq. 1: ``losses.focal_loss``); the L1
offset and size losses (eqs. 2-3: ``losses.reg_l1_loss`` on the ``reg`` and ``wh`` heads) and their
weighted sum (eq. 4: ``base.Task.loss`` with each task's ``loss_weights``, 1 / 0.1 / 1); the 3x3
max-pool peak extraction and top-100 decoding (section 4: ``decoding.peak_filter``,
``decoding.topk``); 3D depth ``1 / sigmoid - 1``, the two-bin orientation and back-projection (section
4.1: ``ddd_decoding``, ``losses.bin_rot_loss``); pose joint offsets snapped to joint heat maps
(section 4.2: ``multi_pose_decoding``); flip and multi-scale testing with soft-NMS (``tta``).
"""
from centernet.tasks.base import Task
from centernet.tasks.registry import get_task, register_task, task_class, task_for_heads, task_name_for_heads, task_names

# The built-in tasks register themselves on import.
from centernet.tasks import ctdet, ddd, multi_pose  # noqa: F401,E402  isort: skip

__all__ = ["Task", "get_task", "register_task", "task_class", "task_for_heads", "task_name_for_heads", "task_names"]
