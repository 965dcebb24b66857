"""URDF for PyBullet, generated from the compiled MuJoCo model: one robot description (the MJCF in
``sim/assets``) serves both engines.

Reading MuJoCo's *compiled* model, rather than the XML, gives PyBullet exactly the masses, inertias and
frames MuJoCo simulates (default classes resolved, inertias computed from geoms, capsules from ``fromto``).
PyBullet's own ``loadMJCF`` handles neither default classes nor ``freejoint``, so it cannot read our models.

The world body and every body welded or hinged to it form one fixed-base tree; each body with a free joint
roots a floating tree of its own. Contact classes (``contype``/``conaffinity``), friction and joint
properties PyBullet's URDF cannot express are left to the backend, which reads them from the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import mujoco
import numpy as np

WORLD = "world"


@dataclass(frozen=True)
class UrdfTree:
    """One PyBullet multibody: its URDF text and the MuJoCo bodies it holds (its root first)."""

    root: str
    floating: bool
    bodies: list[int]
    urdf: str


def quat_to_rpy(quat: np.ndarray) -> tuple[float, float, float]:
    """MuJoCo (w, x, y, z) -> URDF roll-pitch-yaw (R = Rz(yaw) Ry(pitch) Rx(roll)), exact at +/-90 deg pitch."""
    r = np.zeros(9)
    mujoco.mju_quat2Mat(r, np.asarray(quat, dtype=np.float64))
    r = r.reshape(3, 3)
    pitch = math.atan2(-r[2, 0], math.hypot(r[0, 0], r[1, 0]))
    if math.hypot(r[0, 0], r[1, 0]) > 1e-9:
        return math.atan2(r[2, 1], r[2, 2]), pitch, math.atan2(r[1, 0], r[0, 0])
    # Gimbal lock: only roll -/+ yaw is defined; with yaw 0 both signs of pitch give the same roll.
    return math.atan2(-r[1, 2], r[1, 1]), pitch, 0.0


def _origin(pos: np.ndarray, quat: np.ndarray) -> str:
    rpy = quat_to_rpy(quat)
    return f'<origin xyz="{pos[0]:.17g} {pos[1]:.17g} {pos[2]:.17g}" rpy="{rpy[0]:.17g} {rpy[1]:.17g} {rpy[2]:.17g}"/>'


def _geometry(m: mujoco.MjModel, g: int, collision: bool) -> str:
    kind, size = m.geom_type[g], m.geom_size[g]
    if kind == mujoco.mjtGeom.mjGEOM_PLANE:
        # PyBullet draws no plane; MuJoCo's size 0 means an infinite plane, drawn 20 m wide.
        visual_size = 2 * size[0] or 20.0
        return '<plane normal="0 0 1"/>' if collision else f'<box size="{visual_size:g} {visual_size:g} 0.001"/>'
    if kind == mujoco.mjtGeom.mjGEOM_SPHERE:
        return f'<sphere radius="{size[0]:.17g}"/>'
    if kind == mujoco.mjtGeom.mjGEOM_BOX:
        return f'<box size="{2 * size[0]:.17g} {2 * size[1]:.17g} {2 * size[2]:.17g}"/>'
    if kind == mujoco.mjtGeom.mjGEOM_CAPSULE:  # MuJoCo: radius, half-length of the cylinder part, along z
        return f'<capsule radius="{size[0]:.17g}" length="{2 * size[1]:.17g}"/>'
    if kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
        return f'<cylinder radius="{size[0]:.17g}" length="{2 * size[1]:.17g}"/>'
    name = m.geom(g).name or f"#{g}"
    raise ValueError(f"geom {name!r} of body {m.body(int(m.geom_bodyid[g])).name!r}: type {kind} has no URDF twin")


def collides(m: mujoco.MjModel, g: int) -> bool:
    return bool(m.geom_contype[g] or m.geom_conaffinity[g])


def _link(m: mujoco.MjModel, b: int) -> str:
    name = WORLD if b == 0 else m.body(b).name
    parts = [f"<link name={quoteattr(name)}>"]
    if b != 0 and m.body_mass[b] > 0:
        ixx, iyy, izz = m.body_inertia[b]
        parts.append(
            f"<inertial>{_origin(m.body_ipos[b], m.body_iquat[b])}<mass value=\"{m.body_mass[b]:.17g}\"/>"
            f'<inertia ixx="{ixx:.17g}" iyy="{iyy:.17g}" izz="{izz:.17g}" ixy="0" ixz="0" iyz="0"/></inertial>'
        )
    else:  # massless: fixed to the world, or a frame only
        parts.append('<inertial><mass value="0"/><inertia ixx="0" iyy="0" izz="0" ixy="0" ixz="0" iyz="0"/></inertial>')
    for g in np.flatnonzero(m.geom_bodyid == b):
        origin = _origin(m.geom_pos[g], m.geom_quat[g])
        rgba = " ".join(f"{c:.4g}" for c in m.geom_rgba[g])
        parts.append(
            f"<visual>{origin}<geometry>{_geometry(m, g, collision=False)}</geometry>"
            f'<material name="geom{g}"><color rgba="{rgba}"/></material></visual>'
        )
        if collides(m, g):
            parts.append(f"<collision>{origin}<geometry>{_geometry(m, g, collision=True)}</geometry></collision>")
    parts.append("</link>")
    return "\n".join(parts)


def _joint(m: mujoco.MjModel, b: int) -> str:
    parent = int(m.body_parentid[b])
    parent_name = WORLD if parent == 0 else m.body(parent).name
    body = m.body(b).name
    origin = _origin(m.body_pos[b], m.body_quat[b])
    count = int(m.body_jntnum[b])
    if count == 0:
        return (
            f'<joint name={quoteattr(body + "_weld")} type="fixed"><parent link={quoteattr(parent_name)}/>'
            f"<child link={quoteattr(body)}/>{origin}</joint>"
        )
    if count > 1:
        raise ValueError(f"body {body!r}: {count} joints; PyBullet links carry one joint each")
    j = int(m.body_jntadr[b])
    kinds = {int(mujoco.mjtJoint.mjJNT_HINGE): "revolute", int(mujoco.mjtJoint.mjJNT_SLIDE): "prismatic"}
    kind = kinds.get(int(m.jnt_type[j]))
    if kind is None:
        raise ValueError(f"joint {m.joint(j).name!r} of body {body!r}: type {m.jnt_type[j]} has no URDF twin here")
    if np.any(m.jnt_pos[j] != 0.0):
        raise ValueError(f"joint {m.joint(j).name!r}: anchored off its body's origin, which URDF joints cannot be")
    if m.jnt_limited[j]:
        low, high = m.jnt_range[j]
    else:  # unlimited: URDF wants limits, lower > upper tells PyBullet there are none
        kind, low, high = ("continuous" if kind == "revolute" else kind), 1.0, -1.0
    axis = m.jnt_axis[j]
    # Effort and velocity: the backend's own PD law sets torques; PyBullet's motors only carry friction.
    return (
        f"<joint name={quoteattr(m.joint(j).name)} type=\"{kind}\"><parent link={quoteattr(parent_name)}/>"
        f"<child link={quoteattr(body)}/>{origin}<axis xyz=\"{axis[0]:.17g} {axis[1]:.17g} {axis[2]:.17g}\"/>"
        f'<limit lower="{low:.17g}" upper="{high:.17g}" effort="0" velocity="0"/></joint>'
    )


def _is_free(m: mujoco.MjModel, b: int) -> bool:
    return bool(m.body_jntnum[b]) and m.jnt_type[m.body_jntadr[b]] == mujoco.mjtJoint.mjJNT_FREE


def urdf_trees(m: mujoco.MjModel) -> list[UrdfTree]:
    """The fixed world tree first (if it holds anything besides the world body), then one tree per free body."""
    roots = [0] + [b for b in range(1, m.nbody) if _is_free(m, b)]
    for b in range(1, m.nbody):
        if _is_free(m, b) and m.body_parentid[b] != 0:
            raise ValueError(f"body {m.body(b).name!r}: a free joint below another body has no URDF twin")
    trees = []
    for root in roots:
        members = [root]
        for b in range(1, m.nbody):  # MuJoCo numbers parents before children
            if b not in roots and int(m.body_parentid[b]) in members:
                members.append(b)
        if root == 0 and len(members) == 1 and not np.any(m.geom_bodyid == 0):
            continue
        name = WORLD if root == 0 else m.body(root).name
        # One element a line: PyBullet's XML reader fails on long lines.
        lines = [f'<?xml version="1.0"?>\n<robot name={quoteattr(name)}>']
        lines += [_link(m, b) for b in members] + [_joint(m, b) for b in members[1:]] + ["</robot>"]
        urdf = "\n".join(lines)
        trees.append(UrdfTree(root=name, floating=root != 0, bodies=members, urdf=urdf))
    return trees
