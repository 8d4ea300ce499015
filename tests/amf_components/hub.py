"""One process registering many components (for the RSS benchmark): their INSTANTIATE appends their
name to a queue file; the hub registers each through one handle and answers every callback."""

from __future__ import annotations

import select
import sys
import time

import openais
from openais import amf


def main(queue: str) -> int:
    """Register every name that appears in ``queue`` until the executive goes."""
    holder: list[amf.AmfHandle] = []
    h = amf.initialize(csi_set=lambda inv, *a: holder[0].response(inv),
                       csi_remove=lambda inv, *a: holder[0].response(inv),
                       component_terminate=lambda inv, *a: holder[0].response(inv))
    holder.append(h)
    seen = 0
    try:
        while True:
            with open(queue) as f:
                names = [n.strip() for n in f.read().splitlines() if n.strip()]
            for name in names[seen:]:
                for _ in range(200):
                    try:
                        h.component_register(name)
                        break
                    except openais.Exist:
                        break
                    except openais.TryAgain:
                        time.sleep(0.05)
            seen = len(names)
            if select.select([h.fileno()], [], [], 0.05)[0]:
                h.dispatch(openais.DISPATCH_ALL)
            time.sleep(0.01)
    except openais.Library:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
