"""`python -m custom_predictor.auth keygen <id> [--keys-file PATH]`: a new API key and its hashed entry.

Without --keys-file it prints two lines on stdout: the key (give it to the caller; it is shown only now) and the
line for the keys file. With --keys-file it adds the line to that file (created with mode 0600) and prints only
the key. On a cluster the keys file is a key of a Secret the InferenceService mounts (docs/security.md):

    python -m custom_predictor.auth keygen notebook --keys-file keys
    kubectl create secret generic <isvc>-api-keys --from-file=keys=keys
"""

from __future__ import annotations

import argparse
import os
import sys

from custom_predictor.auth.apikeys import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom_predictor.auth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="make an API key and its hashed entry for the keys file")
    keygen.add_argument("id", help="the key's id (lowercase letters, digits, '-'): callers are apikey:<id>")
    keygen.add_argument("--keys-file", help="add the entry to this file (created 0600) and print only the key")
    args = parser.parse_args(argv)
    try:
        key, line = generate(args.id)
    except ValueError as e:
        print(f"keygen: {e}", file=sys.stderr)
        return 2
    if args.keys_file:
        try:
            fd = os.open(args.keys_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as e:
            print(f"keygen: cannot write {args.keys_file}: {e.strerror}", file=sys.stderr)
            return 2
        print(key)
    else:
        print(key)
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
