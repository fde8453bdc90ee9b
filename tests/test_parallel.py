"""Mesh helpers: a PPO sweep sharded over 8 fake CPU devices equals the one-device run."""

import textwrap

import jax
import pytest
from cpu_devices import run_on_cpu_devices

from jaxrl_si.parallel import expose_cpu_cores, make_mesh, shard_members

SWEEP_ON_FAKE_DEVICES = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P, SingleDeviceSharding
    from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams
    from jaxrl_si.parallel import default_mesh, make_mesh, shard_members

    assert len(jax.devices()) == 8
    config = PPOConfig(env="probe:action_reward", num_envs=8, rollout_length=4, num_minibatches=2,
                       total_env_steps=32 * 6, hidden_sizes=(16,))
    members = 8
    hparams = jax.tree.map(lambda x: jnp.full((members,), x, jnp.float32), PPOHyperparams())
    hparams = hparams.replace(learning_rate=jnp.geomspace(1e-4, 1e-2, members).astype(jnp.float32))
    keys = jax.random.split(jax.random.key(0), members)
    sweep = jax.jit(jax.vmap(PPO.build(config).train))

    one_device = SingleDeviceSharding(jax.devices()[0])
    ref_state, ref_metrics = sweep(*jax.device_put((hparams, keys), one_device))
    for shape in [(8, 1), (4, 2), (2, -1)]:
        mesh = make_mesh(*shape)
        state, metrics = sweep(*shard_members((hparams, keys), mesh))
        leaf = jax.tree.leaves(state.params)[0]
        assert leaf.sharding.spec[0] == "sweep", leaf.sharding
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(metrics["loss/value"]), np.asarray(ref_metrics["loss/value"]), rtol=1e-6)
    assert [None if m is None else m.shape["sweep"] for m in map(default_mesh, (1, 6, 8, 12, 3))] == [None, 2, 8, 4, None]
    try:
        shard_members({"lr": jnp.ones(6)}, make_mesh(4, 2))  # 6 members on a 4-way sweep axis
        raise AssertionError("a member axis that does not divide the mesh must be an error")
    except ValueError as err:
        assert "does not divide" in str(err), err
    print("OK")
    """
)


def test_sweep_sharded_over_eight_fake_devices_equals_one_device():
    run_on_cpu_devices(SWEEP_ON_FAKE_DEVICES, devices=8)


def test_mesh_sizes_and_errors():
    n = len(jax.devices())
    assert make_mesh().shape == {"sweep": n, "data": 1}
    with pytest.raises(ValueError, match="needs"):
        make_mesh(n + 1, 1)
    with pytest.raises(ValueError, match="at most one"):
        make_mesh(-1, -1)


def test_member_axis_must_divide_the_sweep_axis():
    import jax.numpy as jnp

    mesh = make_mesh()
    if mesh.shape["sweep"] == 1:  # a 1-device mesh divides everything; check the scalar case
        with pytest.raises(ValueError, match="member axis"):
            shard_members({"lr": jnp.float32(1.0)}, mesh)
    else:
        with pytest.raises(ValueError, match=r"\['lr'\]"):
            shard_members({"lr": jnp.ones(mesh.shape["sweep"] + 1)}, mesh)


def test_expose_cpu_cores_after_jax_started_keeps_the_devices_and_warns_on_a_change(monkeypatch):
    import warnings

    monkeypatch.setenv("XLA_FLAGS", "")
    cpu_devices = len(jax.devices("cpu"))  # JAX has started
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expose_cpu_cores(cpu_devices)  # no change asked: silent
    with pytest.warns(UserWarning, match=f"already runs with {cpu_devices} CPU devices"):
        expose_cpu_cores(cpu_devices + 1)
    assert len(jax.devices("cpu")) == cpu_devices
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expose_cpu_cores(cpu_devices + 1)  # the flag wins: nothing to do, nothing to warn about
