"""`python -m custom_predictor`: read settings, resolve the model and contract, serve with uvicorn.

Configuration problems (settings, model not found, invalid contract) end the process with exit code 2 and one
line naming what is wrong, never a traceback.
"""

from __future__ import annotations

import logging
import sys
import time


def main() -> int:
    started = time.perf_counter()
    from pydantic import ValidationError

    from custom_predictor.contract import ContractError
    from custom_predictor.settings import Settings
    from custom_predictor.source import SourceError

    try:
        settings = Settings()
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).upper() or "settings"
        print(f"custom_predictor: invalid settings: {field}: {first['msg']}", file=sys.stderr)
        return 2
    level = settings.log_level.upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from custom_predictor.source import fetch

    try:
        source = fetch(settings)
        fetched = time.perf_counter()
        from custom_predictor.app import create_app

        app = create_app(settings, source)
    except ContractError as e:
        print(f"custom_predictor: invalid contract: {e}", file=sys.stderr)
        return 2
    except SourceError as e:
        print(f"custom_predictor: cannot load the model: {e}", file=sys.stderr)
        return 2
    import uvicorn

    logging.getLogger("custom_predictor").info(
        "serving model=%s version=%s path=/%s/api/ port=%d (model resolved at %.2fs, app built at %.2fs)",
        app.state.source.name,
        app.state.source.version,
        app.state.service_path,
        settings.port,
        fetched - started,
        time.perf_counter() - started,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
