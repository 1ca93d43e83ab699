"""The parse cache: a Stackfile read again unchanged is not parsed again, and nothing else is
ever taken from the cache — an edit, a corrupt entry, an invalid file, no folder to write."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess
import sys

import pytest

from revostack import parsecache

STACK = '[services.web]\ncmd = "python3 -m http.server ${port}"\nport = %d\n'


def ports(folder, env=None, importtime=False):
    args = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-m", "revostack", "ports", "--json"]
    r = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    loaded = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    return r.stdout, loaded


def entries(cache):
    folder = cache / "revostack" / "parsed"
    return [p for p in folder.iterdir() if not p.name.endswith(".tmp")] if folder.is_dir() else []


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    monkeypatch.delenv("REVOSTACK_NO_CACHE", raising=False)
    return folder


def test_an_unchanged_stackfile_is_not_parsed_again(tmp_path, cache):
    (tmp_path / "Stackfile.toml").write_text(STACK % 18080)
    first, loaded = ports(tmp_path, importtime=True)
    assert "tomllib" in loaded  # parsed, and kept
    [entry] = entries(cache)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600  # a Stackfile may hold secrets
    again, loaded = ports(tmp_path, importtime=True)
    assert "tomllib" not in loaded and again == first


def test_an_edit_is_always_seen(tmp_path, cache):
    sf = tmp_path / "Stackfile.toml"
    sf.write_text(STACK % 18080)
    ports(tmp_path)
    st = sf.stat()
    sf.write_text(STACK % 18090)  # same size; and the same mtime, below
    os.utime(sf, ns=(st.st_atime_ns, st.st_mtime_ns))
    out, _ = ports(tmp_path)
    assert '"preferred": 18090' in out and "18080" not in out
    assert len(entries(cache)) == 1  # one entry per Stackfile, replaced


def test_a_corrupt_or_foreign_entry_is_ignored_and_replaced(tmp_path, cache):
    (tmp_path / "Stackfile.toml").write_text(STACK % 18080)
    good, _ = ports(tmp_path)
    [entry] = entries(cache)
    for junk in (b"", b"\0" * 64, entry.read_bytes()[:-5], parsecache.FORMAT + b"x" * 40 + b"\nnot marshal"):
        entry.write_bytes(junk)
        out, _ = ports(tmp_path)
        assert out == good
    assert entries(cache)[0].read_bytes().startswith(parsecache.FORMAT)


def test_an_invalid_file_is_not_kept_and_still_located(tmp_path, cache):
    (tmp_path / "Stackfile.toml").write_text('[services.web]\ncmd = "x\n')
    r = subprocess.run([sys.executable, "-m", "revostack", "ports"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("Stackfile.toml:2:"), r.stderr
    assert entries(cache) == []


def test_no_cache_when_turned_off_or_unwritable(tmp_path, cache):
    (tmp_path / "Stackfile.toml").write_text(STACK % 18080)
    out, _ = ports(tmp_path, env={"REVOSTACK_NO_CACHE": "1"})
    assert entries(cache) == []
    cache.write_text("a file where the cache folder would be: nobody, root included, can write under it")
    again, loaded = ports(tmp_path, importtime=True)
    assert again == out and "tomllib" in loaded
    again, loaded = ports(tmp_path, importtime=True)
    assert again == out and "tomllib" in loaded  # parsed each time, without a word


def test_values_marshal_cannot_keep_are_parsed_each_time(tmp_path, cache):
    calls = []

    def parse(text):
        calls.append(text)
        return {"when": datetime.date(2026, 11, 28)}

    path = tmp_path / "Stackfile.toml"
    assert parsecache.parsed("when = 2026-11-28", path, parse) == {"when": datetime.date(2026, 11, 28)}
    assert parsecache.parsed("when = 2026-11-28", path, parse) == {"when": datetime.date(2026, 11, 28)}
    assert len(calls) == 2 and entries(cache) == []
