#!/usr/bin/env python3
"""Writes the rethread-proxy wheel for one Linux architecture around a static rethread binary.

A wheel is a zip with the package, its metadata and a RECORD of hashes (PEP 427). The binary is
static (musl), so one wheel serves glibc and musl systems alike: it carries both platform tags,
and pip on either installs it. Usage: wheel.py VERSION ARCH BINARY OUT_DIR (ARCH: x86_64|aarch64).
"""

import base64
import hashlib
import stat
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
NAME = "rethread_proxy"


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def main() -> None:
    version, arch, binary, out = sys.argv[1:5]
    tag = f"py3-none-manylinux_2_17_{arch}.manylinux2014_{arch}.musllinux_1_1_{arch}"
    dist_info = f"{NAME}-{version}.dist-info"
    readme = (HERE / "python" / "README.md").read_text()
    files: list[tuple[str, bytes, int]] = []
    for source in sorted((HERE / "python" / NAME).iterdir()):
        if source.is_file() and source.suffix in (".py", ".typed"):
            text = source.read_bytes()
            if source.name == "__init__.py":
                text = text.replace(b'__version__ = "0.1.0"', f'__version__ = "{version}"'.encode())
            files.append((f"{NAME}/{source.name}", text, 0o644))
    files.append((f"{NAME}/bin/rethread", Path(binary).read_bytes(), 0o755))
    metadata = f"""Metadata-Version: 2.1
Name: rethread-proxy
Version: {version}
Summary: A reverse proxy that makes OpenAI Responses API follow-ups whole (the rethread binary and a start() for Python).
License: Apache-2.0
Requires-Python: >=3.9
Description-Content-Type: text/markdown

{readme}"""
    files.append((f"{dist_info}/METADATA", metadata.encode(), 0o644))
    files.append((
        f"{dist_info}/WHEEL",
        f"Wheel-Version: 1.0\nGenerator: rethread packaging/wheel.py\nRoot-Is-Purelib: false\n"
        f"Tag: {tag}\n".encode(),
        0o644,
    ))
    files.append((
        f"{dist_info}/entry_points.txt",
        b"[console_scripts]\nrethread = rethread_proxy.__main__:main\n\n"
        b"[pytest11]\nrethread_proxy = rethread_proxy.pytest_plugin\n",
        0o644,
    ))
    record = [record_line(p, d) for p, d, _ in files] + [f"{dist_info}/RECORD,,"]
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode(), 0o644))
    path = Path(out) / f"{NAME}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for name, data, mode in files:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(info, data)
    print(path)


if __name__ == "__main__":
    main()
