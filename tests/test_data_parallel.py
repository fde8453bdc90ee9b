"""Data-parallel PPO on 8 fake CPU devices equals the one-device run, alone and inside a sweep.

Not bitwise: with the batch split over `data`, each device sums its slice of the gradient and
an all-reduce adds the partial sums, a different order of float32 additions than one device's
(measured: parameters differ by about 3e-8 after 4 updates).
"""

import os
import subprocess
import sys
import textwrap

DATA_PARALLEL = textwrap.dedent(
    """
    import os, re, sys, tempfile
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from jaxrl_si import sweep
    from jaxrl_si.agents.ppo import PPOConfig, PPOHyperparams, make_train, make_trainer
    from jaxrl_si.parallel import make_mesh

    config = PPOConfig(num_envs=8, rollout_length=8, num_minibatches=2, total_env_steps=64 * 4, hidden_sizes=(16,))
    hparams = jax.tree.map(jnp.float32, PPOHyperparams(learning_rate=1e-3))
    key = jax.random.key(0)

    # 1. One run, environments and minibatches over 8 devices.
    ref_state, ref_metrics = jax.jit(make_train(config))(hparams, key)
    mesh = make_mesh(1, 8)
    parallel = jax.jit(make_train(config, mesh=mesh))
    state, metrics = parallel(hparams, key)
    assert state.obs.sharding.spec == P("data"), state.obs.sharding
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for name in ("loss/value", "loss/policy", "episode/return"):
        np.testing.assert_allclose(np.asarray(metrics[name]), np.asarray(ref_metrics[name]), rtol=1e-4, atol=1e-6, err_msg=name)

    # The gradient really is computed in slices and all-reduced: the hidden layer's forward dot
    # on a minibatch has minibatch_size / 8 = 4 rows per device.
    hlo = parallel.lower(hparams, key).compile().as_text()
    assert "all-reduce(" in hlo
    assert re.search(r"= f32\\[4,16\\]\\{[^}]*\\} dot\\(", hlo), "minibatch dots are not split over data"

    # 2. A sweep through the loop: 2 settings x 2 seeds over (sweep=2, data=4) equals one device.
    spec = sweep.parse_spec("learning_rate=1e-3,3e-3")
    results = []
    for mesh in (None, make_mesh(2, 4)):
        trainer = make_trainer(config, 2, mesh=mesh)
        results.append(sweep.run(trainer, spec, base_hparams=PPOHyperparams(), seeds=2, run_dir=tempfile.mkdtemp()))
    for name, value in results[0].history.items():
        np.testing.assert_allclose(results[1].history[name], value, rtol=1e-4, atol=1e-6, err_msg=name)

    # 3. A batch the data axis does not divide is an error naming it.
    try:
        make_train(PPOConfig(num_envs=6, rollout_length=8, num_minibatches=2), mesh=make_mesh(2, 4))(hparams, key)
        raise AssertionError("num_envs=6 on a 4-device data axis must be an error")
    except ValueError as error:
        assert "num_envs" in str(error) and "4 devices" in str(error), error
    print("OK")
    """
)


def test_data_parallel_ppo_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", DATA_PARALLEL], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]
