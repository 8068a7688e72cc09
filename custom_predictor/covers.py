"""`python -m custom_predictor.covers [IMAGE]`: this image's entry for the adapter's PREDICTOR_IMAGES catalog.

Prints one JSON object: the image reference (the argument, or "IMAGE"), the MLflow flavors this environment
serves (python_function, plus each flavor whose library is installed), and every installed distribution as
`name==version`. Run inside an image: `docker run --rm --entrypoint python IMAGE -m custom_predictor.covers IMAGE`.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata

from custom_predictor.backends import BY_FLAVOR
from custom_predictor.requirements import FLAVOR_LIBRARIES, installed_version


def entry(image: str) -> dict[str, object]:
    flavors = ["python_function"] + [f for f in BY_FLAVOR if installed_version(FLAVOR_LIBRARIES[f]) is not None]
    libraries = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions()})
    return {"image": image, "flavors": flavors, "libraries": libraries}


if __name__ == "__main__":
    print(json.dumps(entry(sys.argv[1] if len(sys.argv) > 1 else "IMAGE"), indent=1))
