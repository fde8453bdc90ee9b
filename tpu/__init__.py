"""Scripts that run the experiments on Cloud TPU VMs and pod slices (`python -m tpu.pod`); see README.md."""
