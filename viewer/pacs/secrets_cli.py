"""``mifas-pacs secret``: put a password, token or client secret into the OS keyring, under the name a node's
``auth`` settings use as its ``secret`` (viewer.secrets).  The value is read from the terminal without echo
(asked twice), or as one line from standard input when that is not a terminal (for IT's scripts):

    mifas-pacs secret set pacs-web/password          # asks for it
    printf '%s\\n' "$TOKEN" | mifas-pacs secret set pacs-web/token
    mifas-pacs secret check pacs-web/password        # exit 0 when it is there; never prints it
    mifas-pacs secret delete pacs-web/password

There is no ``get``: nothing we write ever shows a secret.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from viewer.secrets import SECRET_LENGTH_MAX, SecretStoreError, delete_secret, has_secret, store_secret

EXIT_OK, EXIT_FAILED = 0, 1


def add_secret_commands(commands: Any) -> None:
    """Register ``secret`` on mifas-pacs's subcommand parsers."""
    secret = commands.add_parser("secret", help="keep a password or token in the OS keyring (settings name it)")
    secret.add_argument("action", choices=("set", "check", "delete"))
    secret.add_argument("name", help="the keyring entry's name, as the node's auth \"secret\" names it")
    secret.add_argument("-v", "--verbose", action="store_true", help="log what happens to stderr")


def run_secret_command(args: argparse.Namespace) -> int:
    name = args.name
    if args.action == "set":
        store_secret(name, _read_value(name))
        print(f"The secret '{name}' is stored in the OS keyring.")
        return EXIT_OK
    if args.action == "check":
        if has_secret(name):
            print(f"The OS keyring holds a secret named '{name}'.")
            return EXIT_OK
        print(f"The OS keyring holds no secret named '{name}'.")
        return EXIT_FAILED
    if delete_secret(name):
        print(f"The secret '{name}' was removed from the OS keyring.")
        return EXIT_OK
    print(f"The OS keyring held no secret named '{name}'.")
    return EXIT_FAILED


def _read_value(name: str) -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(f"Secret for '{name}': ")
        if getpass.getpass("The same again: ") != first:
            raise SecretStoreError("The two entries differ; nothing was stored.")
        return first
    if sys.stdin is None:
        raise SecretStoreError("No secret given: type it at a terminal, or pipe it as one line on standard input.")
    value = sys.stdin.readline(SECRET_LENGTH_MAX + 2)
    return value[:-1] if value.endswith("\n") else value
