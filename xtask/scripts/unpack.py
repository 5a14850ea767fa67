"""Fetches and unpacks the archives of `cargo xtask setup` with Python's standard library only,
so that the set-up needs no tar, gzip, unzip, dpkg-deb or curl on the machine.

Usage:
  python3 unpack.py zip ARCHIVE MEMBER OUT          one member of a zip archive (a wheel) to OUT
  python3 unpack.py zip-tree ARCHIVE PREFIX OUTDIR  every member under PREFIX/, paths kept below it
  python3 unpack.py tgz ARCHIVE OUTDIR              a gzipped tarball (an npm package)
  python3 unpack.py gunzip IN OUT                   a gzipped file
  python3 unpack.py deb ARCHIVE OUTDIR              the files of a Debian package (an `ar` archive
                                                    holding data.tar.xz, .gz, .bz2 or uncompressed)
  python3 unpack.py fetch URL OUT                   an HTTP(S) download, with progress on stderr

Every output is written beside its target and renamed into place, so an interrupted run leaves
no partial file under the final name.
"""

import gzip
import io
import os
import shutil
import sys
import tarfile
import time
import urllib.request
import zipfile


def zip_member(archive, member, out):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with zipfile.ZipFile(archive) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(out + ".part", out)


def zip_tree(archive, prefix, outdir):
    prefix = prefix.rstrip("/") + "/"
    count = 0
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            relative = info.filename[len(prefix):]
            if relative.startswith("/") or ".." in relative.split("/"):
                sys.exit(f"{archive}: unsafe member path {info.filename!r}")
            target = os.path.join(outdir, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target + ".part", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(target + ".part", target)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode)
            count += 1
    if count == 0:
        sys.exit(f"{archive}: nothing under {prefix}")


def extract_tar(tar, outdir):
    os.makedirs(outdir, exist_ok=True)
    if hasattr(tarfile, "data_filter"):
        tar.extractall(outdir, filter="data")
    else:
        for member in tar.getmembers():
            if member.name.startswith("/") or ".." in member.name.split("/"):
                sys.exit(f"unsafe member path {member.name!r}")
        tar.extractall(outdir)


def tgz(archive, outdir):
    with tarfile.open(archive, "r:gz") as tar:
        extract_tar(tar, outdir)


def gunzip(src, out):
    with gzip.open(src, "rb") as s, open(out + ".part", "wb") as d:
        shutil.copyfileobj(s, d)
    os.replace(out + ".part", out)


def deb(archive, outdir):
    with open(archive, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            sys.exit(f"{archive}: not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                sys.exit(f"{archive}: no data.tar member")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            body = f.read(size)
            if size % 2:
                f.read(1)
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                    extract_tar(tar, outdir)
                return


def fetch(url, out):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with urllib.request.urlopen(url, timeout=120) as response, open(out + ".part", "wb") as dst:
        total = int(response.headers.get("Content-Length") or 0)
        done, start, shown = 0, time.monotonic(), 0.0
        while True:
            chunk = response.read(1 << 16)
            if not chunk:
                break
            dst.write(chunk)
            done += len(chunk)
            now = time.monotonic()
            if sys.stderr.isatty() and (now - shown > 0.2 or done == total):
                shown = now
                rate = done / max(now - start, 1e-6)
                eta = (total - done) / rate if total and rate else 0
                sys.stderr.write(f"\r    {done / 1e6:6.1f} / {total / 1e6:.1f} MB  {rate / 1e6:5.1f} MB/s  eta {eta:3.0f} s ")
                sys.stderr.flush()
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    os.replace(out + ".part", out)


COMMANDS = {"zip": zip_member, "zip-tree": zip_tree, "tgz": tgz, "gunzip": gunzip, "deb": deb, "fetch": fetch}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command = COMMANDS[sys.argv[1]]
    if len(sys.argv) - 2 != command.__code__.co_argcount:
        sys.exit(__doc__)
    command(*sys.argv[2:])
