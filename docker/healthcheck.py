"""Container health check: exit 0 when ``GET /health`` on the local API answers 200, else 1.

Run by the Dockerfile's ``HEALTHCHECK`` and by ``docker-compose.yml``. The port
comes from ``RAG_API__PORT`` (default 8000). Standard library only: the image
has no curl. Proxy variables are ignored, so the check always reaches the
process in this container.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def check(port: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """Ask the API on 127.0.0.1:``port`` for ``/health``; ``(healthy, what happened)``."""
    url = f"http://127.0.0.1:{port}/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url} unreachable: {exc}"
    return status == 200, f"{url} answered {status}"


def main() -> int:
    healthy, message = check(os.environ.get("RAG_API__PORT", "8000"))
    print(message, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
