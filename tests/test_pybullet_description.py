"""One description, two engines: the URDF PyBullet loads (generated from the MJCF) against MuJoCo's compiled
model. Masses, inertias, link frames (so link lengths), joint axes and ranges agree within 1%."""

import mujoco
import numpy as np
import pybullet as p
import pytest

from sim.mujoco_backend import MujocoBackend
from sim.pybullet_backend import PybulletBackend
from sim.randomization import sample
from sim.task import TaskSpec
from sim.urdf_from_mjcf import quat_to_rpy, urdf_trees

TASKS = ["quadruped_walk", "claw_turn"]
REL = 0.01


@pytest.fixture(scope="module", params=TASKS)
def engines(request):
    task = TaskSpec.load(request.param)
    spec = task.load_robot()
    mj, pb = MujocoBackend(spec), PybulletBackend(spec)
    yield task, mj, pb
    mj.close()
    pb.close()


def _rotation(quat_xyzw):
    return np.array(p.getMatrixFromQuaternion(quat_xyzw)).reshape(3, 3)


def _mj_rotation(quat_wxyz):
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, np.asarray(quat_wxyz, dtype=np.float64))
    return rot.reshape(3, 3)


def _bodies(mj):
    return [mj.model.body(b).name for b in range(1, mj.model.nbody)]


def test_masses_and_inertia_tensors_agree(engines):
    _, mj, pb = engines
    m, c = mj.model, pb.client
    for name in _bodies(mj):
        b = m.body(name).id
        mass, _, diagonal, local_pos, local_orn = p.getDynamicsInfo(*pb.bullet_link(name), physicsClientId=c)[:5]
        assert mass == pytest.approx(m.body_mass[b], rel=REL), name
        if m.body_mass[b] == 0:
            continue
        np.testing.assert_allclose(local_pos, m.body_ipos[b], atol=1e-6, err_msg=name)
        # Inertia tensors in the body frame: principal values turned by each engine's inertial frame.
        rot_mj, rot_pb = _mj_rotation(m.body_iquat[b]), _rotation(local_orn)
        tensor_mj = rot_mj @ np.diag(m.body_inertia[b]) @ rot_mj.T
        tensor_pb = rot_pb @ np.diag(diagonal) @ rot_pb.T
        np.testing.assert_allclose(tensor_pb, tensor_mj, atol=REL * np.abs(tensor_mj).max(), err_msg=name)


def test_total_mass_agrees(engines):
    _, mj, pb = engines
    c = pb.client
    total_pb = sum(p.getDynamicsInfo(*pb.bullet_link(name), physicsClientId=c)[0] for name in _bodies(mj))
    assert total_pb == pytest.approx(mj.model.body_mass.sum(), rel=REL)
    expected = {"quadruped": 4.3, "claw": 3 * (0.082 + 0.1 + 0.05) + 0.09}[mj.robot_spec.name]
    assert total_pb == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("pose", ["zero", "start"])
def test_link_frames_and_joint_axes_agree(engines, pose):
    _, mj, pb = engines
    spec, m = mj.robot_spec, mj.model
    q = np.zeros(spec.num_joints) if pose == "zero" else spec.start
    q = np.clip(q, spec.lower, spec.upper)
    mj.reset(mj.params, q)
    pb.reset(pb.params, q)
    d = mj.data
    for name in _bodies(mj):
        b = m.body(name).id
        pos, rot = pb.body_frame(name)
        # Body frames in the world at the same joint angles: every link's length and offset.
        np.testing.assert_allclose(pos, d.xpos[b], atol=1e-6, err_msg=name)
        np.testing.assert_allclose(rot, d.xmat[b].reshape(3, 3), atol=1e-6, err_msg=name)
    c = pb.client
    hinges = [j for j in range(m.njnt) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE]
    assert len(hinges) >= spec.num_joints
    for j in hinges:
        name = m.joint(j).name
        uid, link = pb.bullet_joint(name)
        axis_local = np.array(p.getJointInfo(uid, link, physicsClientId=c)[13])
        # Bullet gives the axis in the child link's centre-of-mass frame.
        inertial_orn = p.getLinkState(uid, link, computeForwardKinematics=1, physicsClientId=c)[1]
        np.testing.assert_allclose(_rotation(inertial_orn) @ axis_local, d.xaxis[j], atol=1e-6, err_msg=name)


def test_link_lengths_agree_pairwise(engines):
    """Distance between each body's frame and its parent's, at the start pose, within 1%."""
    _, mj, pb = engines
    m = mj.model
    mj.reset(mj.params)
    pb.reset(pb.params)
    for name in _bodies(mj):
        b = m.body(name).id
        parent = int(m.body_parentid[b])
        if parent == 0:
            continue
        length_mj = np.linalg.norm(mj.data.xpos[b] - mj.data.xpos[parent])
        length_pb = np.linalg.norm(pb.body_frame(name)[0] - pb.body_frame(m.body(parent).name)[0])
        assert length_pb == pytest.approx(length_mj, rel=REL, abs=1e-9), name


def test_joint_ranges_come_from_the_spec_in_both_engines(engines):
    _, mj, pb = engines
    spec, c = mj.robot_spec, pb.client
    for i, name in enumerate(spec.joint_names):
        uid, link = pb.bullet_joint(name)
        low, high = p.getJointInfo(uid, link, physicsClientId=c)[8:10]
        mj_low, mj_high = mj.model.jnt_range[mj.model.joint(name).id]
        assert (low, high) == pytest.approx((mj_low, mj_high), rel=REL, abs=1e-6), name
        assert (low, high) == pytest.approx((spec.lower[i], spec.upper[i]), abs=1e-6), name


def test_randomized_masses_agree_body_by_body(engines):
    task, mj, pb = engines
    rng = np.random.default_rng(7)
    params = sample(task.randomization, len(mj.body_names), mj.robot_spec.num_joints, rng)
    assert mj.body_names == pb.body_names
    mj.reset(params)
    pb.reset(params)
    c = pb.client
    for name in mj.body_names:
        b = mj.model.body(name).id
        mass_pb = p.getDynamicsInfo(*pb.bullet_link(name), physicsClientId=c)[0]
        assert mass_pb == pytest.approx(mj.model.body_mass[b], rel=1e-6), name
    assert not np.allclose(params.mass_scale, 1.0)


def test_rpy_conversion_round_trips_including_gimbal_lock():
    rng = np.random.default_rng(0)
    quats = list(rng.normal(size=(20, 4))) + [np.array([0, 0.7071, 0, 0.7071]), np.array([0.7071, 0, -0.7071, 0])]
    for quat in quats:
        quat = quat / np.linalg.norm(quat)
        x, y, z, w = p.getQuaternionFromEuler(quat_to_rpy(quat))
        back = np.array([w, x, y, z])
        assert min(np.abs(back - quat).max(), np.abs(back + quat).max()) < 1e-9


def _model(body: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(f"<mujoco><worldbody>{body}</worldbody></mujoco>")


def test_features_urdf_cannot_carry_are_refused_by_name():
    with pytest.raises(ValueError, match=r"geom 'egg' of body 'b': type .* has no URDF twin"):
        urdf_trees(
            _model('<body name="b"><joint type="hinge"/><geom name="egg" type="ellipsoid" size="1 2 3"/></body>')
        )
    with pytest.raises(ValueError, match=r"joint 'j' of body 'b': type .* has no URDF twin"):
        urdf_trees(_model('<body name="b"><joint name="j" type="ball"/><geom size="1"/></body>'))
    with pytest.raises(ValueError, match=r"body 'b': 2 joints"):
        urdf_trees(_model('<body name="b"><joint type="hinge"/><joint type="slide"/><geom size="1"/></body>'))
    with pytest.raises(ValueError, match=r"joint 'j': anchored off its body's origin"):
        urdf_trees(_model('<body name="b"><joint name="j" type="hinge" pos="0 0 1"/><geom size="1"/></body>'))


def test_trees_split_at_free_joints_and_keep_the_world():
    m = _model(
        '<geom type="plane" size="1 1 1"/>'
        '<body name="arm"><joint type="hinge"/><geom size="0.1"/></body>'
        '<body name="ball" pos="0 0 1"><freejoint/><geom size="0.1"/>'
        '<body name="flap"><joint type="hinge"/><geom size="0.1"/></body></body>'
    )
    trees = urdf_trees(m)
    assert [(t.root, t.floating) for t in trees] == [("world", False), ("ball", True)]
    assert [m.body(b).name for b in trees[0].bodies] == ["world", "arm"]
    assert [m.body(b).name for b in trees[1].bodies] == ["ball", "flap"]
    assert "<plane" in trees[0].urdf and "<plane" not in trees[1].urdf
