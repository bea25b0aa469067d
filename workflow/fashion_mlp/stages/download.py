"""Stage `download`: fetch the four Fashion-MNIST archives from the first mirror that verifies.

Each file is written to a temporary name in the output directory, its
decompressed SHA-256 checked against the pinned value, and only then renamed
into place; a failed or mismatched file moves on to the next mirror.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fashion_mlp import PipelineError
from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.data import RAW_FILES, DataError, sha256_gunzipped
from fashion_mlp.io import atomic_output, remove_stale_temporaries

CHUNK = 1 << 16


class DownloadError(PipelineError):
    """No mirror could serve a verified copy of a file."""


def source_url(mirror: str, filename: str) -> str:
    """Join a mirror (http(s) base URL, file:// URL or plain directory) and a file name."""
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + filename
    return Path(mirror).expanduser().resolve().joinpath(filename).as_uri()


def fetch(url: str, dest: Path, timeout: float) -> None:
    """Copy `url` to `dest`; http(s) downloads show a progress bar on stderr."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), dest)
        return
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "fashion-mlp"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        name = Path(urllib.parse.urlparse(url).path).name  # not our temporary file's name
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, mininterval=1.0, file=sys.stderr) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
        if total is not None and bar.n != total:
            raise DataError(f"received {bar.n} of {total} bytes")  # the caller names the URL


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable ({exc.reason})"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _unreachable(exc: BaseException) -> bool:
    """A failure of the host, not of one file: later files need not try it again."""
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)
    )


def download_file(
    filename: str, sha256: str, mirrors: list[str], out_dir: Path, timeout: float, dead: dict[str, str] | None = None
) -> str:
    """Place a verified `filename` in `out_dir`; return the URL that served it.

    `dead` maps mirrors found unreachable to the reason, and is updated, so a
    host that is down costs one timeout rather than one per file. Raises
    DownloadError listing every mirror and why it failed.
    """
    dead = {} if dead is None else dead
    target = out_dir / filename
    failures = []
    for mirror in mirrors:
        if mirror in dead:
            failures.append(f"{mirror}: skipped, {dead[mirror]} earlier")
            continue
        try:
            url = source_url(mirror, filename)
        except (OSError, ValueError) as exc:
            failures.append(f"{mirror}: {exc}")
            continue
        try:
            with atomic_output(target) as tmp:
                fetch(url, tmp, timeout)
                try:
                    actual = sha256_gunzipped(tmp)
                except DataError as exc:  # name the URL, not our temporary file
                    raise DataError(str(exc).replace(f"{tmp}: ", "")) from None
                if actual != sha256:
                    raise DataError(f"SHA-256 of the decompressed data is {actual}, expected {sha256}")
            return url
        except Exception as exc:  # any mirror failure means: try the next one
            failures.append(f"{url}: {_reason(exc)}")
            if _unreachable(exc):
                dead[mirror] = _reason(exc)
            print(f"download: {filename}: {failures[-1]}; trying the next mirror", file=sys.stderr)
    raise DownloadError(f"no mirror served a verified {filename}:\n" + "\n".join(f"  - {line}" for line in failures))


def download_all(
    mirrors: list[str], out_dir: Path, timeout: float, files: dict[str, str] = RAW_FILES
) -> dict[str, str]:
    """Download every file of `files` ({name: decompressed sha256}); return {name: source URL}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    sources: dict[str, str] = {}
    dead: dict[str, str] = {}
    for filename, sha256 in files.items():
        target = out_dir / filename
        if target.exists():
            try:
                if sha256_gunzipped(target) == sha256:
                    sources[filename] = "(already present and verified)"
                    continue
            except DataError:
                pass  # corrupt leftover: fetch a fresh copy, the rename replaces it
        sources[filename] = download_file(filename, sha256, mirrors, out_dir, timeout, dead)
        print(f"download: {filename} <- {sources[filename]}", file=sys.stderr)
    return sources


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp download", description=__doc__.splitlines()[0])
    add_section_flags(parser, "data")
    parser.add_argument("--out_dir", type=Path, required=True, help="where the four .gz files go")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate_section("data", section_from_args(args, "data"))
    download_all(args.mirrors, args.out_dir, args.timeout)


if __name__ == "__main__":
    main()
