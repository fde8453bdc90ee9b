"""`python -m experiments.hilp --help` lists every flag; see `experiments/hilp/experiment.py` and README.md."""

from experiments import cli
from experiments.hilp.experiment import RunConfig, main
from jaxrl_si.parallel import expose_cpu_cores

if __name__ == "__main__":
    cli.main(RunConfig, main, before_run=lambda run: expose_cpu_cores(run.cpu_devices))
