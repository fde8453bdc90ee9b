"""Data-parallel PPO on 8 fake CPU devices equals the one-device run, alone and inside a sweep.

Not bitwise: with the batch split over `data`, each device sums its slice of the gradient (and of
the observation statistics and advantage moments) and an all-reduce adds the partial sums, a
different order of float32 additions than one device's. Over these 3 updates the differences
stay at float32 rounding (at most a third of rtol 1e-5 + atol 1e-6, measured).

One subprocess (the device count is fixed when JAX starts) runs every layout; each call blocks
on its result, so no queue of collective calls builds up (on XLA:CPU host devices, about a
hundred unblocked calls that each hold a collective deadlock in XLA's rendezvous).
Compilation dominates the time: LLVM's optimisation is off (about half the compile time); the
SPMD partitioning under test is an HLO pass and the same flags build the reference programs.
"""

import textwrap

from cpu_devices import FAST_COMPILE_FLAGS, run_on_cpu_devices

DATA_PARALLEL = textwrap.dedent(
    """
    import dataclasses, re, tempfile
    import flax.struct, jax, jax.numpy as jnp, numpy as np
    from jaxrl_si import envs, loop
    from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams
    from jaxrl_si.parallel import batch_constraint, make_mesh, shard_members, vmap_members

    config = PPOConfig(num_envs=8, rollout_length=8, num_minibatches=2, total_env_steps=64 * 3,
                       hidden_sizes=(16,), normalize_observations=True)  # CartPole: obs 4, 2 actions
    hparams = jax.tree.map(jnp.float32, PPOHyperparams(learning_rate=1e-3))
    key = jax.random.key(0)

    def assert_close(actual, expected):
        for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

    def data_parallel(config, size, env=None):
        mesh = make_mesh(1, size, devices=jax.devices()[:size])
        agent = PPO.build(config, constrain=batch_constraint(mesh))
        return agent if env is None else PPO(config, env, agent.network, agent.constrain)

    # 1. One run over data axes of 8, 4 and 2 devices equals the run without a mesh.
    ref_state, ref_metrics = jax.jit(PPO.build(config).train)(hparams, key)
    for size in (2, 4, 8):
        compiled = jax.jit(data_parallel(config, size).train).lower(hparams, key).compile()
        state, metrics = compiled(hparams, key)
        assert_close((state.params, state.opt_state, metrics), (ref_state.params, ref_state.opt_state, ref_metrics))
        assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves((state.params, state.opt_state)))
        assert all(x.sharding.spec[0] == "data" for x in jax.tree.leaves((state.obs, state.env_state.env_state)))
        assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state.env_state.obs_stats))

    # 2. The HLO of the 8-way run: parameter gradients are all-reduced, and each device runs the
    # minibatch's forward pass on its 32 / 8 = 4 rows and gathers only its rows of the shuffle.
    hlo = compiled.as_text()
    gradient_all_reduce = r"all-reduce\\(.*f32\\[(16,4|4,16)\\]|f32\\[(16,4|4,16)\\].*all-reduce\\("
    assert any(re.search(gradient_all_reduce, line) for line in hlo.splitlines()), "no gradient all-reduce"
    assert re.search(r"= f32\\[4,2\\]\\{[^}]*\\} dot\\(", hlo), "the minibatch's logits are not split over data"
    assert not re.search(r"= f32\\[32,\\d+\\]\\{[^}]*\\} dot\\(", hlo), "a whole minibatch is computed per device"
    assert not re.search(r"= f32\\[64,1,4\\]\\{[^}]*\\} gather\\(", hlo), "every device shuffles the whole batch"

    # A 1-device data axis leaves the program unchanged.
    one_device_hook = PPO.build(config, constrain=batch_constraint(make_mesh(8, 1)))
    assert "sharding_constraint" not in str(jax.make_jaxpr(one_device_hook.train)(hparams, key))

    # 3. A wrapper of our own outside VectorEnv with pooled state (a running reward scale shared by
    # the batch) and per-env state (each env's discounted return): it declares which is which,
    # and data-parallel PPO equals the one-device run with the pooled leaves left whole.
    class ScaleReward(envs.Wrapper):
        class State(flax.struct.PyTreeNode):
            env_state: object
            discounted: jax.Array  # [num_envs] per-env running discounted return
            stats: envs.RunningMeanStd  # pooled over the batch

        def reset(self, key):
            env_state, ts = self.env.reset(key)
            return self.State(env_state, jnp.zeros(self.num_envs), envs.RunningMeanStd.zeros(())), ts

        def step(self, state, action, key):
            env_state, ts = self.env.step(state.env_state, action, key)
            discounted = jnp.where(ts.done, 0.0, 0.99 * state.discounted + ts.reward)
            stats = state.stats.update(discounted)
            return self.State(env_state, discounted, stats), ts.replace(reward=ts.reward / jnp.sqrt(stats.var + 1e-8))

        def env_axis_leaves(self, state):
            pooled = jax.tree.map(lambda _: False, state.stats)
            return self.State(self.env.env_axis_leaves(state.env_state), True, pooled)

    plain = dataclasses.replace(config, normalize_observations=False)
    scaled_env = ScaleReward(PPO.build(plain).env)
    reference = PPO(plain, scaled_env, PPO.build(plain).network)
    ref_state, ref_metrics = jax.jit(reference.train)(hparams, key)
    state, metrics = jax.jit(data_parallel(plain, 8, env=scaled_env).train)(hparams, key)
    assert_close((state.params, metrics), (ref_state.params, ref_metrics))
    assert state.env_state.discounted.sharding.spec[0] == "data"
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state.env_state.stats))

    # A wrapper with state of its own that does not declare its leaves is an error, not a guess.
    class Undeclared(envs.Wrapper):
        def reset(self, key):
            env_state, ts = self.env.reset(key)
            return (env_state, jnp.zeros(())), ts

        def step(self, state, action, key):
            env_state, ts = self.env.step(state[0], action, key)
            return (env_state, state[1] + 1.0), ts
    try:
        jax.jit(data_parallel(plain, 8, env=Undeclared(PPO.build(plain).env)).train)(hparams, key)
        raise AssertionError("an undeclared wrapper state must be an error")
    except NotImplementedError as error:
        assert "Undeclared keeps a state of its own" in str(error), error

    # 4. A sweep of 4 learning rates over (sweep, data) = (4, 2), and through the iteration loop
    # (what the CLI runs) over (2, 4), equals the sweep on one device.
    members = 4
    sweep_hparams = jax.tree.map(lambda x: jnp.full((members,), x, jnp.float32), PPOHyperparams())
    sweep_hparams = sweep_hparams.replace(learning_rate=jnp.geomspace(3e-4, 3e-3, members).astype(jnp.float32))
    keys = jax.random.split(key, members)
    ref_state, ref_metrics = jax.jit(jax.vmap(PPO.build(config).train))(sweep_hparams, keys)
    mesh = make_mesh(4, 2)
    sweep = jax.jit(vmap_members(PPO.build(config, constrain=batch_constraint(mesh)).train, mesh))
    state, metrics = sweep(*shard_members((sweep_hparams, keys), mesh))
    assert_close((state.params, metrics), (ref_state.params, ref_metrics))
    trainer = loop.Trainer.build(PPO.build, config, config.num_updates, mesh=make_mesh(2, 4))
    result = loop.run(trainer, sweep_hparams, keys, run_dir=tempfile.mkdtemp())
    assert_close((result.state.params, {k: result.history[k] for k in ref_metrics}), (ref_state.params, ref_metrics))
    for final in (state, result.state):
        assert all(x.sharding.spec[0] == "sweep" for x in jax.tree.leaves(final.params))
        assert final.obs.sharding.spec[:2] == ("sweep", "data"), final.obs.sharding

    # 5. A batch that the data axis does not divide is an error naming it, never a replication.
    for bad, name in ((dict(num_envs=6), "num_envs"), (dict(num_envs=4, num_minibatches=16), "minibatch_size")):
        try:
            loop.Trainer.build(PPO.build, PPOConfig(rollout_length=8, **bad), 1, mesh=make_mesh(2, 4))
            raise AssertionError(f"{bad} on a 4-device data axis must be an error")
        except ValueError as error:
            assert name in str(error) and "4 devices" in str(error), error
    try:  # the agent alone, without the trainer's check: the layout hook names the array
        jax.eval_shape(data_parallel(PPOConfig(rollout_length=8, num_envs=6), 4).train, hparams, key)
        raise AssertionError("6 envs on a 4-device data axis must be an error")
    except ValueError as error:
        assert "(6," in str(error) and "4 devices" in str(error), error
    print("OK")
    """
)


def test_data_parallel_ppo_equals_one_device():
    run_on_cpu_devices(DATA_PARALLEL, devices=8, xla_flags=FAST_COMPILE_FLAGS)
