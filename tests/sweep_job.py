"""A small sweep, run as a real subprocess by the kill-and-resume and multi-process tests.

    python -m tests.sweep_job OUT [DEVICES [COORDINATOR NUM_PROCESSES PROCESS_ID]]
"""

import sys

from jaxattack.runs import sweep
from tests import toys

# forward is pinned: "auto" times both forwards in each process and may choose
# differently in each, which these tests, comparing rows byte for byte, must not see.
EXPERIMENTS = sweep.grid(["toy"], pixels=[1, 2], mode=["untargeted", "all-targets"],
                         population=16, generations=8, forward="sparse")


def run(out, **kw):
    from jaxattack.classifier import predict

    clf = toys.small_cnn()
    x = toys.random_images(40, 12, 12, seed=3)
    y = predict(clf, x).argmax(-1)
    return sweep.run(EXPERIMENTS, out, images=40, load_model=lambda name: clf,
                     load_data=lambda src, split: (x, y, tuple("abcdefghij")),
                     batch_size=4, flush_every=8, progress=False, **kw)


if __name__ == "__main__":
    import jax

    jax.config.update("jax_num_cpu_devices", int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    if len(sys.argv) > 3:
        from jaxattack.runs import distributed

        coordinator, n, i = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        distributed.initialize(coordinator, n, i, cpu_collectives="gloo")
        run(sys.argv[1])
        distributed.barrier()
    else:
        run(sys.argv[1])
