"""The self-improvement agent split over the mesh's `data` axis (4 fake CPU devices) equals its
one-device run: the P x K samples, the minibatch rows and the evaluation prompts are split
(`batch_constraint`), the parameters replicated. Not bitwise (gradients are all-reduced in
another order), so to float32 rounding over two iterations."""

import textwrap

from cpu_devices import FAST_COMPILE_FLAGS, run_on_cpu_devices

SELF_IMPROVE_DATA_PARALLEL = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jaxrl_si.agents.self_improve import SelfImprove, SelfImproveConfig, SelfImproveHyperparams
    from jaxrl_si.parallel import batch_constraint, make_mesh

    sizes = dict(task_size=2, num_layers=1, width=32, num_heads=2, prompts_per_iteration=8, samples_per_prompt=4,
                 epochs=1, minibatches=2, eval_prompts=8, warm_start_batch=8, iterations=2, judge="bt")
    mesh = make_mesh(1, 4)
    for method in ("dpo", "grpo"):
        config = SelfImproveConfig(method=method, **sizes)
        hparams = jax.tree.map(jnp.float32, SelfImproveHyperparams.for_method(method, learning_rate=1e-3))
        reference = jax.jit(SelfImprove.build(config).train)(hparams, jax.random.key(0))
        agent = SelfImprove.build(config, constrain=batch_constraint(mesh))
        assert all(size % 4 == 0 for size in agent.data_parallel_sizes.values())
        state, metrics = jax.jit(agent.train)(hparams, jax.random.key(0))
        np.testing.assert_array_equal(np.asarray(state.samples.responses), np.asarray(reference[0].samples.responses))
        for a, b in zip(jax.tree.leaves((state.params, metrics)), jax.tree.leaves((reference[0].params, reference[1])), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
        assert "sharding_constraint" in str(jax.make_jaxpr(agent.train)(hparams, jax.random.key(0)))
    print("OK")
    """
)


def test_self_improvement_split_over_data_equals_one_device():
    run_on_cpu_devices(SELF_IMPROVE_DATA_PARALLEL, devices=4, xla_flags=FAST_COMPILE_FLAGS)  # compile-bound
