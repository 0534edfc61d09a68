"""Load the charter's eBPF filter (``bpf/charter_egress.c``) with bcc and attach it at a device's TC egress.

What it needs, and what it says when it is missing (every refusal is a
:class:`~westworld.errors.KernelEnforcementUnavailable` whose ``reason`` is one of the ``REASON_*`` constants, so
the caller falls back to the userspace gate and says so):

- root (``not_root``);
- bcc's Python bindings, Debian ``python3-bpfcc`` (``no_bcc``). They live in ``/usr/lib/python3/dist-packages``,
  which the project's venv does not see; :func:`import_bcc` loads that one package from there by its path, without
  putting the rest of Debian's site-packages on ``sys.path`` (where they would shadow the venv's);
- kernel headers bcc compiles against (``no_headers``): ``/lib/modules/$(uname -r)/build`` when the running
  kernel's own are installed; otherwise any Debian ``linux-headers-<v>-<arch>`` (with its ``-common``), merged into
  one symlink tree (:func:`kernel_headers`) and passed as ``BCC_KERNEL_SOURCE``. The filter uses only UAPI headers
  (stable across kernels), so another kernel version's headers compile it correctly;
- a kernel whose verifier accepts it (``compile_failed``, ``verifier_refused``), a bpffs (mounted at ``BPFFS``) to
  hand the program to ``tc`` (``no_bpffs``), and ``tc`` to attach it (``attach_failed``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from westworld.charter import name_hash
from westworld.errors import KernelEnforcementUnavailable

SOURCE = Path(__file__).resolve().parent.parent / "bpf" / "charter_egress.c"
BCC_PATH = Path("/usr/lib/python3/dist-packages/bcc")
BPFFS = Path("/run/westworld/bpffs")  # not under /sys: `ip netns exec` remounts /sys and would hide it
HEADERS_CACHE = Path("/var/cache/westworld/kernel-headers")
FILTER_PREF = 4913  # the tc filter's preference: ours to add and delete, nobody else's filters are touched


def pref_for(port: int) -> int:
    """A tc preference per telemetry port, so gates on different ports share a device (``lo``) side by side."""
    return 20_000 + port % 40_000

REASON_NOT_ROOT = "not_root"
REASON_NO_BCC = "no_bcc"
REASON_NO_HEADERS = "no_headers"
REASON_COMPILE_FAILED = "compile_failed"
REASON_VERIFIER_REFUSED = "verifier_refused"
REASON_NO_BPFFS = "no_bpffs"
REASON_ATTACH_FAILED = "attach_failed"

STAT_NAMES = ("passed", "not_allowed", "malformed", "oversized", "fragment", "lines")


def _unavailable(reason: str, message: str) -> KernelEnforcementUnavailable:
    return KernelEnforcementUnavailable(f"kernel enforcement unavailable ({reason}): {message}", reason=reason)


def import_bcc() -> ModuleType:
    """Debian's ``bcc`` package, loaded by path when the interpreter does not see it."""
    if "bcc" in sys.modules:
        return sys.modules["bcc"]
    if importlib.util.find_spec("bcc") is not None:  # the interpreter sees it (system Python)
        return importlib.import_module("bcc")
    init = BCC_PATH / "__init__.py"
    if not init.is_file():
        raise _unavailable(REASON_NO_BCC, "bcc is not installed (apt-get install -y python3-bpfcc)")
    spec = importlib.util.spec_from_file_location("bcc", init, submodule_search_locations=[str(BCC_PATH)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # libbcc.so missing or of another ABI
        del sys.modules["bcc"]
        raise _unavailable(REASON_NO_BCC, f"bcc does not load: {err}") from err
    return module


def kernel_headers(cache: Path = HEADERS_CACHE) -> Path | None:
    """A directory bcc can compile against: the running kernel's headers, else a merged tree of Debian's newest
    ``linux-headers-*`` (built once under ``cache``). None when there are none; the value for BCC_KERNEL_SOURCE
    (None too when the running kernel's own are in place and bcc finds them itself)."""
    own = Path("/lib/modules") / platform.release() / "build"
    if (own / "include" / "linux" / "kconfig.h").is_file():
        return None
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    builds = sorted(p for p in Path("/usr/src").glob(f"linux-headers-*-{arch}") if (p / "include").is_dir())
    if not builds:
        raise _unavailable(REASON_NO_HEADERS, f"no kernel headers for {platform.release()} nor any Debian "
                           "linux-headers package (apt-get install -y linux-headers-amd64)")
    build = builds[-1]
    common = build.with_name(build.name.removesuffix(f"-{arch}") + "-common")
    target = cache / build.name
    if (target / "include" / "linux" / "kconfig.h").exists():
        return target
    kernel_arch = {"amd64": "x86", "arm64": "arm64"}.get(arch, arch)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    for src in (common, build):
        for sub in ("include", f"arch/{kernel_arch}/include"):
            if (src / sub).is_dir():
                (staging / sub).mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-rsf", f"{src / sub}/.", f"{staging / sub}/"], check=True)
    if not (staging / "include" / "linux" / "kconfig.h").exists():
        raise _unavailable(REASON_NO_HEADERS, f"{build} has no include/linux/kconfig.h (is {common.name} there?)")
    staging.rename(target) if not target.exists() else subprocess.run(["rm", "-rf", str(staging)], check=True)
    return target


@dataclass(frozen=True)
class KernelStats:
    passed: int
    not_allowed: int
    malformed: int
    oversized: int
    fragment: int
    lines: int


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


class KernelFilter:
    """The filter attached at ``device``'s egress (inside network namespace ``netns`` if given)."""

    def __init__(self, bpf: Any, device: str, netns: str | None, created_qdisc: bool, program: str,
                 pref: int = FILTER_PREF) -> None:
        self._bpf = bpf
        self.device, self.netns, self.program, self.pref = device, netns, program, pref
        self._created_qdisc = created_qdisc
        self._closed = False

    @classmethod
    def attach(cls, names: Iterable[str], *, device: str, port: int, netns: str | None = None,
               program: str = "charter_egress", headers_cache: Path = HEADERS_CACHE,
               pref: int = FILTER_PREF) -> KernelFilter:
        """Compile, load and attach; the map holds exactly ``names``. Raises KernelEnforcementUnavailable."""
        if os.geteuid() != 0:
            raise _unavailable(REASON_NOT_ROOT, "loading eBPF needs root")
        bcc = import_bcc()
        kdir = kernel_headers(headers_cache)
        if kdir is not None:
            os.environ.setdefault("BCC_KERNEL_SOURCE", str(kdir))
        try:
            bpf = bcc.BPF(src_file=str(SOURCE).encode(), cflags=[f"-DTELEMETRY_PORT={int(port)}", "-w"])
        except Exception as err:
            raise _unavailable(REASON_COMPILE_FAILED, f"{SOURCE.name} does not compile here ({err}; the "
                               "compiler's messages are on stderr)") from err
        try:
            fn = bpf.load_func(program.encode(), bcc.BPF.SCHED_CLS)
        except Exception as err:
            bpf.cleanup()
            raise _unavailable(REASON_VERIFIER_REFUSED, f"the kernel refused {program}: {err}") from err
        pinned = BPFFS / f"westworld_charter_{os.getpid()}_{id(bpf):x}"
        try:
            created = cls._attach_pinned(bcc, fn.fd, pinned, device, netns, pref)
        except KernelEnforcementUnavailable:
            bpf.cleanup()
            raise
        kf = cls(bpf, device, netns, created, program, pref)
        kf.set_names(names)
        return kf

    @staticmethod
    def _attach_pinned(bcc: Any, fd: int, pinned: Path, device: str, netns: str | None, pref: int) -> bool:
        BPFFS.mkdir(parents=True, exist_ok=True)
        if _run(["stat", "-f", "-c", "%T", str(BPFFS)]).stdout.strip() != "bpf_fs":
            mounted = _run(["mount", "-t", "bpf", "bpf", str(BPFFS)])
            if mounted.returncode != 0:
                raise _unavailable(REASON_NO_BPFFS, f"cannot mount bpffs at {BPFFS}: {mounted.stderr.strip()}")
        if bcc.libbcc.lib.bpf_obj_pin(ctypes.c_int(fd), str(pinned).encode()) != 0:
            raise _unavailable(REASON_NO_BPFFS, f"cannot pin the program at {pinned}: errno {ctypes.get_errno()}")
        prefix = ["ip", "netns", "exec", netns] if netns else []
        try:
            had = "clsact" in _run([*prefix, "tc", "qdisc", "show", "dev", device]).stdout
            if not had:
                add = _run([*prefix, "tc", "qdisc", "add", "dev", device, "clsact"])
                if add.returncode != 0:
                    raise _unavailable(REASON_ATTACH_FAILED, f"tc qdisc add clsact on {device}: {add.stderr.strip()}")
            attached = _run([*prefix, "tc", "filter", "replace", "dev", device, "egress", "pref", str(pref),
                             "handle", "1", "bpf", "direct-action", "object-pinned", str(pinned)])
            if attached.returncode != 0:
                raise _unavailable(REASON_ATTACH_FAILED, f"tc filter on {device} egress: {attached.stderr.strip()}")
            return not had
        finally:
            pinned.unlink(missing_ok=True)  # tc holds its own reference to the program

    def set_names(self, names: Iterable[str]) -> None:
        """Make the allowed map hold exactly ``names`` (a charter change): add the new, then remove the old."""
        table = self._bpf.get_table(b"allowed")
        want = {name_hash(n) for n in names}
        for h in want:
            table[table.Key(h)] = table.Leaf(1)
        for key in list(table.keys()):
            if key.value not in want:
                del table[key]

    def drops(self) -> dict[int, int]:
        """Datagrams dropped per name hash (``westworld.charter.name_hash``) since the filter was loaded."""
        return {k.value: v.value for k, v in self._bpf.get_table(b"drops").items()}

    def stats(self) -> KernelStats:
        table = self._bpf.get_table(b"stats")
        values = [table[table.Key(i)].value for i in range(len(STAT_NAMES))]
        return KernelStats(*values)

    def close(self) -> None:
        """Detach our filter (and the clsact qdisc if we added it) and free the program and maps."""
        if self._closed:
            return
        self._closed = True
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        _run([*prefix, "tc", "filter", "del", "dev", self.device, "egress", "pref", str(self.pref)])
        others = _run([*prefix, "tc", "filter", "show", "dev", self.device, "egress"]).stdout.strip()
        if self._created_qdisc and not others:  # another gate's filter may share the qdisc we added
            _run([*prefix, "tc", "qdisc", "del", "dev", self.device, "clsact"])
        self._bpf.cleanup()

    def __enter__(self) -> KernelFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
