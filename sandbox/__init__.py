"""Anything a user sends, checked before it is decoded or run: the room for untrusted input.

- **Model files** (`model_files` reads TorchScript, `torch.export`, ONNX (`onnx_models`),
  safetensors (`safetensors_file`) and state dicts for named architectures (`named_weights`),
  behind the gate (`gate`: no pickles, no unknown operators, bounded archives; its operator
  list is `allowlist.json`). `user_models` checks an upload and accepts it.
- **Worker processes** (`worker`: the server's pool; `worker_main`: the worker's own code;
  `worker_limits`, `wire`: the pipe's format; `_forkserver`, `compat_mp`). `jobs` is every
  computation a view asks of a model (`job_answers`: what each answers), run in a worker for
  an untrusted model and in the server's process for a trusted one.
- **Pictures and names** a user sends: bounded decoding (`images`, `canvas_png`,
  `image_errors`), a workspace's `preparation`, names made plain text (`text`), and the kind of
  a model's or data set's key (`kinds`).
- **This module**: the confinement itself, below.

Never imports streamlit, `workspace` or the dashboard; it reads the zoo (`pretrained`) for the
registry's architectures.

The sandbox a worker process locks itself into before an uploaded model's code runs.

`lock_down()` installs a seccomp filter (Linux, through libseccomp and `pyseccomp`): an
allowlist of the system calls that computing with tensors needs. Everything else fails with
EPERM, so from then on the process cannot

- open, create, delete, rename or stat files (`open`, `openat`, `creat`, `unlink`, `mkdir`,
  `stat`… are not allowed; `fstat` on an already open descriptor is);
- start processes (`fork`, `vfork`, `execve`; `clone` only with CLONE_THREAD, which is how
  torch's thread pools start threads; `clone3` answers ENOSYS so glibc falls back to `clone`);
- use the network (`socket`, `connect`, `bind`… are not allowed);
- touch another process (`kill`, `ptrace`, `process_vm_*`; `tgkill` and `prlimit64` only on
  itself).

It keeps the descriptors it already has: the two pipes to the server (stdout and stderr go to
/dev/null). `limit_resources()` adds rlimits: address space (memory), CPU seconds, no file
may grow past 0 bytes, no core dumps. The seccomp filter is inherited by every thread created
afterwards and can't be removed (no_new_privs is set).

`unavailable()` says why the sandbox can't be built on this machine (not Linux, no
libseccomp), so that the server refuses uploaded programs instead of running them unconfined.
"""

from __future__ import annotations

import errno
import os
import resource
import sys

__all__ = ["ALLOWED_SYSCALLS", "limit_resources", "lock_down", "unavailable", "vm_size"]

# What a process computing with tensors on the CPU needs, and nothing that names a path.
ALLOWED_SYSCALLS = tuple(
    """
    read write readv writev pread64 pwrite64 close lseek fcntl dup dup3
    mmap munmap mprotect mremap brk madvise mlock munlock
    futex set_robust_list get_robust_list rseq set_tid_address sched_yield sched_getaffinity
    sched_getparam sched_getscheduler sched_get_priority_max sched_get_priority_min
    getpid gettid getppid getuid geteuid getgid getegid
    rt_sigaction rt_sigprocmask rt_sigreturn sigaltstack restart_syscall
    exit exit_group clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday times
    getrandom poll ppoll select pselect6 getrusage getrlimit sysinfo uname membarrier
    """.split()
)
CLONE_THREAD = 0x00010000
AT_EMPTY_PATH = 0x1000


def unavailable() -> str | None:
    """None when `lock_down` can work here, else the reason it can't, for a person to read."""
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux's seccomp, and this server runs on {sys.platform}"
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, OSError) as err:  # OSError: the package is there, libseccomp isn't
        return f"the sandbox needs libseccomp and the pyseccomp package ({err})"
    return None


def vm_size() -> int:
    """This process's virtual memory size in bytes (read from /proc, so before `lock_down`)."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def limit_resources(*, memory_bytes: int, cpu_seconds: int) -> None:
    """rlimits for what follows: `memory_bytes` of address space *more than now* (so torch's
    own mappings are not counted against the model), `cpu_seconds` of CPU in all, files may
    not grow (RLIMIT_FSIZE 0), no core dumps."""
    address_space = vm_size() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def lock_down() -> None:
    """Install the seccomp filter on this process (every thread created after this inherits
    it). Irreversible. Raises RuntimeError when the sandbox is unavailable."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    import pyseccomp as sc

    pid = os.getpid()
    f = sc.SyscallFilter(defaction=sc.ERRNO(errno.EPERM))
    for name in ALLOWED_SYSCALLS:
        try:
            f.add_rule(sc.ALLOW, name)
        except (OSError, RuntimeError, ValueError):  # a name this kernel/arch doesn't have
            pass
    f.add_rule(sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # its flags can't be inspected: use clone
    f.add_rule(sc.ALLOW, "fstat")
    f.add_rule(sc.ALLOW, "newfstatat", sc.Arg(3, sc.MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH))
    f.add_rule(sc.ALLOW, "tgkill", sc.Arg(0, sc.EQ, pid))
    f.add_rule(sc.ALLOW, "prlimit64", sc.Arg(0, sc.EQ, 0))  # its own limits only
    f.add_rule(sc.ALLOW, "sched_setaffinity", sc.Arg(0, sc.EQ, 0))
    f.load()
