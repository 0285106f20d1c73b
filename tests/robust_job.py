"""A small robustness evaluation, also run as a real subprocess by the kill-and-resume test.

    python -m tests.robust_job OUT
"""

import sys

from jaxattack.runs import robust
from tests import toys

ATTACKS = ("sparse-rs:40", "de:400", "oracle")


def evaluate(out, **kw):
    from jaxattack.classifier import predict

    clf = toys.linear(seed=1)
    x = toys.random_images(24, 8, 8, seed=5)
    y = predict(clf, x).argmax(-1)
    y[:3] = (y[:3] + 1) % 10  # three images the model gets wrong
    return robust.evaluate("toy", "toy-data", out=out, images=24, ks=(1, 2),
                           attacks=ATTACKS, load_model=lambda name, **o: clf,
                           load_data=lambda src, split, **o: (x, y, tuple("abcdefghij")),
                           batch_size=4, flush_every=2, **kw)


if __name__ == "__main__":
    import jax

    jax.config.update("jax_num_cpu_devices", 2)
    evaluate(sys.argv[1])
