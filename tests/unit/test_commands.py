"""``faust -A app hash-key``: the entry it prints accepts the key and nothing else; bad input is
one line and exit code 2. (The commands that read topics are tested against a real broker in
tests/integration/test_cli.py.)"""

import subprocess
import sys
from pathlib import Path

from app.ingest.keys import match, parse

FAUST = str(Path(sys.executable).parent / "faust")


def hash_key(*args: str, given: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FAUST, "-A", "app", "hash-key", *args], input=given, capture_output=True, text=True,
        timeout=60, env={"PATH": "/usr/bin:/bin", "FAUST_LOOP": "aio"},
    )  # fmt: skip


def test_the_printed_entry_accepts_the_key_and_nothing_else():
    done = hash_key("--name", "tenant-a", given="s3cret-Key\n")
    assert done.returncode == 0, done.stderr
    entry = done.stdout.strip()
    assert entry.startswith("tenant-a=sha256:") and "s3cret" not in done.stdout + done.stderr
    key = parse(entry)
    assert match("s3cret-Key", [key]) is key and match("s3cret-key", [key]) is None


def test_no_key_or_a_bad_name_is_one_line_and_exit_code_2():
    for args, given, problem in [
        ((), "\n", "give the key on standard input"),
        ((), "a,b\n", "no comma"),
        (("--name", "9lives"), "k\n", "--name: a letter"),
    ]:
        done = hash_key(*args, given=given)
        assert done.returncode == 2, (args, done.stderr)
        assert problem in done.stderr and "Traceback" not in done.stderr, done.stderr
