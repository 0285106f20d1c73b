"""Same attack, 4 slots vs 1 slot on CPU (the default): wall time, same queries.

    python benchmarks/slot_count.py
"""

import jaxattack as ja
from jaxattack import data, models
from jaxattack.data import select_images

clf = models.load("tiny")
x, y, _ = data.load("sample")
sel = select_images(y, 6)
x, y = x[sel], y[sel]
for bs in (4, 1, 4, 1):
    r = ja.attack(clf, x, y, ja.AttackConfig(batch_size=bs), image_ids=sel)
    print(f"slots {bs}: {r.seconds:.1f} s, {r.queries.sum()} queries, "
          f"{r.success.sum()} fooled", flush=True)
