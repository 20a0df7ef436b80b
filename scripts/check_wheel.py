"""Check a built ferrograd wheel before it ships: tags, size, stripped module, licenses.

    python scripts/check_wheel.py dist/ferrograd-*.whl [--max-mib 4]

Fails (exit 1, one line per problem) unless the wheel is one stable-ABI wheel for
CPython >= 3.10 (``cp310-abi3``), manylinux 2.28 or older on Linux (auditwheel agrees,
when it is installed), at most ``--max-mib`` MiB, with a stripped extension module and
the code's and the MNIST sample's licenses in its metadata.
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

OLDEST_GLIBC = (2, 28)  # the newest manylinux a wheel of ours may need
LICENSES = ("LICENSE", "LICENSE-CC-BY-SA-3.0.txt", "README-MNIST.txt")


def elf_sections(data: bytes) -> set[str]:
    """Section names of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]  # sh_offset of the section-name string table
    names = set()
    for name_off, *_ in headers:
        start = names_at + name_off
        names.add(data[start : data.index(b"\0", start)].decode())
    return names


def check(wheel: Path, max_mib: float) -> list[str]:
    problems = []
    m = re.fullmatch(
        r"ferrograd-[^-]+-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl", wheel.name
    )
    if m is None:
        return [f"{wheel.name}: not a wheel file name"]
    if (m["py"], m["abi"]) != ("cp310", "abi3"):
        problems.append(f"tag {m['py']}-{m['abi']}: expected cp310-abi3 (one wheel, CPython 3.10+)")
    if "linux" in m["plat"]:
        glibcs = [(int(a), int(b)) for a, b in re.findall(r"manylinux_(\d+)_(\d+)", m["plat"])]
        if "manylinux2014" in m["plat"]:
            glibcs.append((2, 17))
        if not glibcs or min(glibcs) > OLDEST_GLIBC:
            problems.append(f"platform {m['plat']}: expected manylinux_2_28 or older")
    size = wheel.stat().st_size
    if size > max_mib * 2**20:
        problems.append(f"size {size / 2**20:.2f} MiB: more than {max_mib} MiB")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        modules = [n for n in names if re.fullmatch(r"ferrograd/_core\.(abi3\.so|pyd)", n)]
        if len(modules) != 1:
            problems.append(
                f"extension module: expected one ferrograd/_core.abi3.so, got {modules}"
            )
        elif modules[0].endswith(".so"):
            sections = elf_sections(zf.read(modules[0]))
            unstripped = sorted(s for s in sections if s == ".symtab" or s.startswith(".debug"))
            if unstripped:
                problems.append(f"{modules[0]} is not stripped: has {', '.join(unstripped)}")
        wheel_meta = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        tags = re.findall(r"^Tag: (.+)$", zf.read(wheel_meta).decode(), flags=re.M)
        if sorted(tags) != sorted(f"{m['py']}-{m['abi']}-{p}" for p in m["plat"].split(".")):
            problems.append(f"WHEEL tags {tags} do not match the file name")
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        if "License-Expression: MIT AND CC-BY-SA-3.0" not in metadata:
            problems.append("METADATA: License-Expression is not 'MIT AND CC-BY-SA-3.0'")
        for lic in LICENSES:
            if not any("/licenses/" in n and n.endswith("/" + lic) for n in names):
                problems.append(f"license file {lic} missing from the .dist-info")
    if "linux" in m["plat"] and shutil.which("auditwheel"):
        shown = subprocess.run(
            ["auditwheel", "show", str(wheel)], capture_output=True, text=True, check=False
        ).stdout
        policy = re.search(r'platform tag:\s+"manylinux_(\d+)_(\d+)_', " ".join(shown.split()))
        if policy is None or (int(policy[1]), int(policy[2])) > OLDEST_GLIBC:
            problems.append(f"auditwheel: {' '.join(shown.split())[:300]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="the .whl file")
    parser.add_argument("--max-mib", type=float, default=4.0, help="size limit (default: 4)")
    args = parser.parse_args()
    problems = check(args.wheel, args.max_mib)
    for problem in problems:
        print(f"check_wheel: {args.wheel.name}: {problem}", file=sys.stderr)
    if not problems:
        size = args.wheel.stat().st_size / 2**20
        print(f"wheel ok: {args.wheel.name} ({size:.2f} MiB, stripped, licenses included)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
