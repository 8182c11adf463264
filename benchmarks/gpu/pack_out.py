#!/usr/bin/env python
"""Make a device command's ``$OUT`` fit what comes back: at most 8 files of at most 16 MiB each.

    python benchmarks/gpu/pack_out.py OUT --keep study.md study.log weights-tgo.safetensors ...
    python benchmarks/gpu/pack_out.py OUT --check        # only verify; exit 1 if over the limits

The ``--keep`` files (in priority order) stay loose where they fit; everything else under ``OUT``
(and any kept file that does not fit) goes into one ``OUT/bundle.tar.gz``. A member that would
push the bundle over the size limit is left out and named in ``bundle-manifest.txt`` inside the
bundle and on stdout. Limits carry slack (default 15 MiB and 8 files) under the hard ones.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

MiB = 2 ** 20
HARD_BYTES, HARD_FILES = 16 * MiB, 8
BUNDLE = "bundle.tar.gz"
MANIFEST = "bundle-manifest.txt"


def files_under(out: Path) -> list[Path]:
    """Every regular file under ``out`` (relative paths), sorted."""
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and not p.is_symlink())


def check(out: Path, max_bytes: int = HARD_BYTES, max_files: int = HARD_FILES) -> list[str]:
    """What breaks the limits (empty when ``out`` comes back whole)."""
    found = files_under(out)
    problems = [f"{len(found)} files (at most {max_files})"] if len(found) > max_files else []
    problems += [f"{p}: {(out / p).stat().st_size / MiB:.1f} MiB (at most {max_bytes / MiB:.0f})"
                 for p in found if (out / p).stat().st_size > max_bytes]
    problems += [f"{p}: in a folder (comes back flat only at the top)" for p in found if len(p.parts) > 1]
    return problems


def _add_bounded(tar_path: Path, members: list[tuple[Path, str]], max_bytes: int) -> list[str]:
    """Write ``members`` (path, name in the archive) to ``tar_path``, smallest first, leaving out
    those that would take it over ``max_bytes``; returns the names left out."""
    left_out: list[str] = []
    members = sorted(members, key=lambda m: m[0].stat().st_size)
    with tarfile.open(tar_path, "w:gz", compresslevel=6) as tar:
        for path, name in members:
            # the uncompressed bytes written so far plus this file bound the archive's size from
            # above (gzip grows incompressible data by well under 1%)
            if tar.fileobj.tell() + path.stat().st_size * 1.01 + 64 * 1024 > max_bytes:
                left_out.append(f"{name} ({path.stat().st_size / MiB:.1f} MiB)")
                continue
            tar.add(path, arcname=name)
        text = "\n".join(["left out (over the size limit):", *left_out] if left_out else ["complete"]) + "\n"
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))
    return left_out


def pack(out: Path, keep: list[str], max_bytes: int = 15 * MiB, max_files: int = HARD_FILES) -> dict:
    """Bundle ``out`` as described in the module docstring; returns what was kept, bundled, left out."""
    found = files_under(out)
    kept: list[Path] = []
    for name in keep:
        p = Path(name)
        if p in found and len(p.parts) == 1 and (out / p).stat().st_size <= max_bytes and len(kept) < max_files - 1:
            kept.append(p)
    rest = [p for p in found if p not in kept and p.name != BUNDLE]
    left_out: list[str] = []
    if rest:
        with tempfile.TemporaryDirectory() as tmp:
            tar_path = Path(tmp) / BUNDLE
            left_out = _add_bounded(tar_path, [(out / p, str(p)) for p in rest], max_bytes)
            for p in rest:
                (out / p).unlink()
            for d in sorted((d for d in out.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                if not any(d.iterdir()):
                    d.rmdir()
            shutil.move(str(tar_path), str(out / BUNDLE))
    return {"kept": [str(p) for p in kept], "bundled": [str(p) for p in rest], "left_out": left_out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--keep", nargs="*", default=[], help="files of OUT to keep loose, most important first")
    ap.add_argument("--max-mib", type=float, default=15.0, help="size limit with slack (hard limit 16)")
    ap.add_argument("--max-files", type=int, default=HARD_FILES)
    ap.add_argument("--check", action="store_true", help="only check the limits")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.check:
        res = pack(out, args.keep, int(args.max_mib * MiB), args.max_files)
        print(f"[pack] kept {res['kept']}; bundled {len(res['bundled'])} files into {BUNDLE}"
              + (f"; LEFT OUT (size): {res['left_out']}" if res["left_out"] else ""))
    problems = check(out, HARD_BYTES, min(args.max_files, HARD_FILES))
    total = sum((out / p).stat().st_size for p in files_under(out))
    print(f"[pack] {out}: {len(files_under(out))} files, {total / MiB:.2f} MiB in all"
          + ("; OVER THE LIMITS: " + "; ".join(problems) if problems else "; within the limits (8 files, 16 MiB each)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
