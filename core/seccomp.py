"""bottle's one syscall policy, as data, and the seccomp profile it renders to.

Every container of a bottle runs under this policy on every engine, instead
of whichever default profile the engine and its version happen to ship (they
disagree: Docker 20.10 lets io_uring through, Podman 4.3 lets a process make
a user namespace and reach the kernel keyring).

The policy is an allowlist (``BASE_RULES``: what ordinary programs need,
checked against the engines' own defaults, moby's ``profiles/seccomp`` being
the best kept) plus named **groups** of refused calls, each with the reason
and the errno the caller gets. Nothing is ever killed: a refused call fails
with an errno so a program that probes for a feature falls back.

- ``ENOSYS`` ("not implemented") where libraries fall back only on that
  answer: ``clone3`` (glibc then uses ``clone``, whose flags the filter can
  read; ``clone3`` takes them in memory the filter cannot see) and io_uring
  (libuv, tokio and liburing users fall back to epoll and threads).
- ``EPERM`` everywhere else, which is also what every call missing from the
  allowlist gets (the profile's default action).

An agent may have a group back (``bottle.syscalls.allow`` in its manifest);
``FIXED`` groups only work with capabilities no bottle has, so they cannot
be asked for. Sidecars always get the policy with nothing allowed back.

``render_profile`` turns (policy, allowed groups) into the OCI/Docker
seccomp JSON that both Docker (``--security-opt seccomp=``) and Podman
(``seccomp_profile_path``) accept. Rules use no capability or kernel-version
conditions (Podman 4.3 ignores ``minKernel``, and bottle's containers hold
no capabilities): the same JSON means the same filter on every engine. Only
architecture conditions remain, as in the engines' own profiles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from bottle.core.errors import BottleError, did_you_mean

__all__ = [
    "DEFAULT_POLICY",
    "ENOSYS",
    "EPERM",
    "ERRNO_NAMES",
    "POLICY_NAME",
    "ArgTest",
    "Rule",
    "SyscallGroup",
    "SyscallPlan",
    "SyscallPolicy",
    "allowable_groups",
    "normalise_allow",
    "profile_digest",
    "refused_calls",
    "render_profile",
    "syscall_plan",
]

EPERM = 1
ENOSYS = 38
ERRNO_NAMES = {EPERM: "EPERM", ENOSYS: "ENOSYS"}

POLICY_NAME = "bottle-v1"

# Namespace flags of clone(2)/unshare(2). clone() keeps its exit signal in the
# low byte, where CLONE_NEWTIME (0x80) would be, so only unshare checks that one.
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NAMESPACES = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)
UNSHARE_NAMESPACES = CLONE_NAMESPACES | CLONE_NEWTIME

# Socket families refused by ``socket()``: AF_ALG (the kernel's crypto API,
# a steady source of memory-safety bugs) and AF_VSOCK (host/VM channels).
AF_ALG = 38
AF_VSOCK = 40

# personality(2) values programs really use: PER_LINUX, PER_LINUX32, UNAME26
# with either, and 0xffffffff (query only). Anything else (ADDR_NO_RANDOMIZE,
# READ_IMPLIES_EXEC, ...) weakens the process's own hardening.
PERSONALITY_VALUES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

CompareOp = Literal[
    "SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ"
]


class ArgTest(msgspec.Struct, frozen=True):
    """A test on argument ``index`` of a call (``MASKED_EQ``: ``arg & value == value_two``)."""

    index: int
    op: CompareOp
    value: int
    value_two: int = 0


class Rule(msgspec.Struct, frozen=True):
    """``names`` are allowed (``errno`` None) or answer ``errno``, when every arg test holds.

    ``arches`` / ``not_arches`` restrict the rule to (or away from) the
    engines' native architecture names (``amd64``, ``arm64``, ``s390x``...).
    """

    names: tuple[str, ...]
    errno: int | None = None
    args: tuple[ArgTest, ...] = ()
    arches: tuple[str, ...] = ()
    not_arches: tuple[str, ...] = ()


class SyscallGroup(msgspec.Struct, frozen=True):
    """Calls refused together, for one reason, and what having them back means.

    ``refused`` are the rules while the group is refused (explicit errno
    rules; calls refused only for some arguments are allowed for the rest
    here and fall to the default ``EPERM`` otherwise). ``allowed`` replace
    them when a manifest asks for the group. ``calls`` names every call
    the group is about, for people (docs, ``bottle doctor``).
    """

    name: str
    calls: tuple[str, ...]
    why: str
    needed_by: str
    refused: tuple[Rule, ...]
    allowed: tuple[Rule, ...] = ()
    fixed: bool = False


class SyscallPolicy(msgspec.Struct, frozen=True):
    """The allowlist (``base``), the refused ``groups`` and the errno of every call on neither."""

    name: str
    base: tuple[Rule, ...]
    groups: tuple[SyscallGroup, ...]
    default_errno: int = EPERM

    def group(self, name: str) -> SyscallGroup | None:
        return next((g for g in self.groups if g.name == name), None)


# -- the allowlist ----------------------------------------------------------

# What ordinary programs need, by theme. Calls the engines gate on a
# capability (mount, chroot, ptrace's older cousins, clock setting...) are not
# here: bottle's containers hold no capabilities, so they would fail anyway.
_FILES = """
access chdir chmod chown chown32 close close_range copy_file_range creat dup dup2 dup3
faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2
fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fremovexattr fsetxattr
fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futimesat getcwd getdents getdents64
getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch lchown lchown32
lgetxattr link linkat listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
mkdir mkdirat mknod mknodat newfstatat open openat openat2 pread64 preadv preadv2 pwrite64 pwritev pwritev2
read readahead readlink readlinkat readv removexattr removexattrat rename renameat renameat2 rmdir
sendfile sendfile64 setxattr setxattrat splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs tee truncate truncate64 umask unlink unlinkat utime utimensat utimensat_time64
utimes vmsplice write writev listmount statmount cachestat
"""
_EVENTS = """
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old
eventfd eventfd2 poll ppoll ppoll_time64 pselect6 pselect6_time64 select _newselect signalfd signalfd4
timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64
io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit ioctl
"""
_MEMORY = """
brk madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mlock mlock2 mlockall mmap mmap2
mprotect mremap mseal msync munlock munlockall munmap pkey_alloc pkey_free pkey_mprotect remap_file_pages
"""
_PROCESSES = """
capget capset execve execveat exit exit_group fork vfork getcpu getegid getegid32 geteuid geteuid32
getgid getgid32 getgroups getgroups32 getpgid getpgrp getpid getppid getpriority getresgid getresgid32
getresuid getresuid32 getrlimit get_robust_list getrusage getsid get_thread_area gettid getuid getuid32
ioprio_get ioprio_set kill landlock_add_rule landlock_create_ruleset landlock_restrict_self
pidfd_open pidfd_send_signal prctl prlimit64 process_mrelease rseq restart_syscall
sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp setfsgid setfsgid32 setfsuid setfsuid32 setgid
setgid32 setgroups setgroups32 setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid
setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid set_thread_area set_tid_address setuid
setuid32 tgkill tkill ugetrlimit uname wait4 waitid waitpid sysinfo times uretprobe riscv_hwprobe
ptrace process_vm_readv process_vm_writev
"""
_SIGNALS_AND_TIME = """
alarm pause rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaltstack sigprocmask sigreturn
adjtimex clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 getitimer gettimeofday nanosleep setitimer time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake getrandom
"""
_NETWORK_AND_IPC = """
accept accept4 bind connect getpeername getsockname getsockopt listen recv recvfrom recvmmsg
recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt shutdown socketpair socketcall
pipe pipe2 ipc mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd semctl semget semop semtimedop
semtimedop_time64 shmat shmctl shmdt shmget
"""


def _names(*blocks: str) -> tuple[str, ...]:
    return tuple(sorted({name for block in blocks for name in block.split()}))


def _allow(*names: str, args: tuple[ArgTest, ...] = (), arches: tuple[str, ...] = (), not_arches: tuple[str, ...] = ()) -> Rule:
    return Rule(tuple(names), None, args, arches, not_arches)


def _refuse(errno: int, *names: str) -> Rule:
    return Rule(tuple(names), errno)


# s390 passes clone()'s flags second (stack first); every other arch first.
_S390 = ("s390", "s390x")


def _clone_without(mask: int) -> tuple[Rule, ...]:
    return (
        _allow("clone", args=(ArgTest(0, "SCMP_CMP_MASKED_EQ", mask, 0),), not_arches=_S390),
        _allow("clone", args=(ArgTest(1, "SCMP_CMP_MASKED_EQ", mask, 0),), arches=_S390),
    )


BASE_RULES: tuple[Rule, ...] = (
    _allow(*_names(_FILES, _EVENTS, _MEMORY, _PROCESSES, _SIGNALS_AND_TIME, _NETWORK_AND_IPC)),
    # Every socket family but AF_ALG and AF_VSOCK (see above).
    _allow("socket", args=(ArgTest(0, "SCMP_CMP_LT", AF_ALG),)),
    _allow("socket", args=(ArgTest(0, "SCMP_CMP_EQ", AF_ALG + 1),)),
    _allow("socket", args=(ArgTest(0, "SCMP_CMP_GT", AF_VSOCK),)),
    # Calls that exist on some architectures only.
    _allow("arch_prctl", arches=("amd64", "x32")),
    _allow("modify_ldt", arches=("amd64", "x32", "x86")),
    _allow("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls",
           arches=("arm", "arm64")),
    _allow("sync_file_range2", "swapcontext", arches=("ppc64le",)),
    _allow("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr", arches=_S390),
    _allow("riscv_flush_icache", arches=("riscv64",)),
)

# Which architectures a filter covers, per native one (the engines pick the
# entry of the host's): 32-bit programs on a 64-bit kernel go through the
# same rules instead of around them.
ARCH_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_PPC64LE", ()),
    ("SCMP_ARCH_RISCV64", ()),
)

# -- the refused groups -----------------------------------------------------

_MOUNTS = ("mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
           "move_mount", "open_tree", "mount_setattr")

def _plain(name: str, calls: tuple[str, ...], errno: int, why: str, needed_by: str, fixed: bool = False) -> SyscallGroup:
    """A group whose calls are refused outright with ``errno``, and allowed outright when given back."""
    allowed = () if fixed else (_allow(*calls),)
    return SyscallGroup(name, calls, why, needed_by, refused=(_refuse(errno, *calls),), allowed=allowed, fixed=fixed)


_NO_BOTTLE = "nothing that can run in a bottle"

GROUPS: tuple[SyscallGroup, ...] = (
    _plain(
        "io_uring", ("io_uring_setup", "io_uring_enter", "io_uring_register"), ENOSYS,
        why="a second system-call interface, out of seccomp's sight operation by operation, and the entry point "
        "of a long series of kernel escalations (Docker refuses it since version 25; Google turned it off on "
        "ChromeOS, Android and its servers)",
        needed_by="databases and runtimes built on io_uring; libuv and tokio fall back to epoll by themselves",
    ),
    SyscallGroup(
        name="namespaces",
        calls=("unshare", "clone", "clone3", "setns", *_MOUNTS),
        why="a user namespace makes a process root inside it and opens kernel code only root could reach "
        "(netfilter, mounts); nf_tables exploits such as CVE-2024-1086 start there",
        needed_by="nested sandboxes (bubblewrap, Chrome's sandbox, Podman inside the bottle), unshare, nsenter",
        # unshare and clone stay allowed without a namespace flag; with one they
        # fall to the default EPERM. The mount calls are simply not allowed.
        refused=(
            _allow("unshare", args=(ArgTest(0, "SCMP_CMP_MASKED_EQ", UNSHARE_NAMESPACES, 0),)),
            *_clone_without(CLONE_NAMESPACES),
            _refuse(ENOSYS, "clone3"),
            _refuse(EPERM, "setns"),
        ),
        allowed=(_allow("unshare", "clone", "clone3", "setns", *_MOUNTS),),
    ),
    _plain(
        "keyring", ("keyctl", "add_key", "request_key"), EPERM,
        why="the kernel keyring is not namespaced (keys are shared with the host's user) and has had "
        "use-after-free escalations (CVE-2016-0728)",
        needed_by="Kerberos, ecryptfs and systemd tools that keep credentials in the kernel keyring",
    ),
    _plain(
        "bpf", ("bpf",), EPERM,
        why="loads programs into the kernel, whose verifier has been bypassed many times (CVE-2021-3490)",
        needed_by="eBPF tools (bpftrace, bcc), which most hosts also refuse to unprivileged users",
    ),
    _plain(
        "perf_event", ("perf_event_open",), EPERM,
        why="performance counters feed side channels and have had escalations of their own (CVE-2023-6931)",
        needed_by="profilers on hardware counters (perf)",
    ),
    _plain(
        "userfaultfd", ("userfaultfd",), EPERM,
        why="lets a process stall the kernel in the middle of a copy, which turns kernel races into reliable exploits",
        needed_by="checkpointing and live migration (CRIU), some garbage collectors",
    ),
    SyscallGroup(
        name="personality",
        calls=("personality",),
        why="values beyond the usual ones switch off a process's own hardening (address randomisation, "
        "non-executable data)",
        needed_by="debuggers that turn off address randomisation (gdb, rr), setarch -R",
        refused=tuple(_allow("personality", args=(ArgTest(0, "SCMP_CMP_EQ", value),)) for value in PERSONALITY_VALUES),
        allowed=(_allow("personality"),),
    ),
    _plain(
        "kernel_modules", ("init_module", "finit_module", "delete_module"), EPERM,
        why="loads code into the kernel; needs CAP_SYS_MODULE, which no bottle has",
        needed_by=_NO_BOTTLE, fixed=True,
    ),
    _plain(
        "kexec_reboot", ("kexec_load", "kexec_file_load", "reboot"), EPERM,
        why="replaces or restarts the kernel; needs CAP_SYS_BOOT, which no bottle has",
        needed_by=_NO_BOTTLE, fixed=True,
    ),
    _plain(
        "file_handles", ("open_by_handle_at", "name_to_handle_at"), EPERM,
        why="opens files by handle, skipping the path walk and with it the container's view of the "
        "filesystem (the 'shocker' escape); needs CAP_DAC_READ_SEARCH, which no bottle has",
        needed_by=_NO_BOTTLE, fixed=True,
    ),
)

DEFAULT_POLICY = SyscallPolicy(name=POLICY_NAME, base=BASE_RULES, groups=GROUPS)


def allowable_groups(policy: SyscallPolicy = DEFAULT_POLICY) -> tuple[str, ...]:
    """Names of the groups a manifest may ask to have back, in policy order."""
    return tuple(g.name for g in policy.groups if not g.fixed)


def normalise_allow(names: Iterable[str], policy: SyscallPolicy = DEFAULT_POLICY) -> tuple[str, ...]:
    """``names`` in policy order without repeats; ``ValueError`` saying what is wrong with a name.

    A name that is no group gets the known ones (and a likely typo's
    correction); a fixed group says why it cannot be had back.
    """
    wanted = list(names)
    for name in wanted:
        group = policy.group(name)
        if group is None:
            suggestion = did_you_mean(name, [g.name for g in policy.groups])
            hint = f" (did you mean `{suggestion}`?)" if suggestion else ""
            raise ValueError(
                f"unknown syscall group `{name}`; expected one of: {', '.join(allowable_groups(policy))}{hint}"
            )
        if group.fixed:
            raise ValueError(f"syscall group `{name}` cannot be allowed: {group.why}")
    return tuple(g.name for g in policy.groups if g.name in wanted)


def _rules(policy: SyscallPolicy, allow: Sequence[str]) -> list[Rule]:
    chosen = set(normalise_allow(allow, policy))
    rules = list(policy.base)
    for group in policy.groups:
        rules.extend(group.allowed if group.name in chosen else group.refused)
    return rules


def _rule_json(rule: Rule) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "names": list(rule.names),
        "action": "SCMP_ACT_ALLOW" if rule.errno is None else "SCMP_ACT_ERRNO",
    }
    if rule.errno is not None:
        entry["errnoRet"] = rule.errno
    if rule.args:
        entry["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op} for a in rule.args]
    if rule.arches:
        entry["includes"] = {"arches": list(rule.arches)}
    if rule.not_arches:
        entry["excludes"] = {"arches": list(rule.not_arches)}
    return entry


def render_profile(allow: Sequence[str] = (), policy: SyscallPolicy = DEFAULT_POLICY) -> str:
    """The seccomp profile (OCI/Docker JSON) of ``policy`` with the groups in ``allow`` given back.

    Deterministic: the same policy and groups always give the same text
    (and so the same ``profile_digest``). ``ValueError`` for a group that
    does not exist or cannot be allowed.
    """
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        # Docker 20.10 ignores this key and uses runc's default, also EPERM.
        "defaultErrnoRet": policy.default_errno,
        "archMap": [{"architecture": arch, "subArchitectures": list(subs)} for arch, subs in ARCH_MAP],
        "syscalls": [_rule_json(rule) for rule in _rules(policy, allow)],
    }
    return json.dumps(profile, separators=(",", ":"), sort_keys=True)


def profile_digest(allow: Sequence[str] = (), policy: SyscallPolicy = DEFAULT_POLICY) -> str:
    """``sha256:<hex>`` of ``render_profile(allow, policy)``: names the exact filter a container gets."""
    return _digest(render_profile(allow, policy))


def _digest(profile: str) -> str:
    return "sha256:" + hashlib.sha256(profile.encode("utf-8")).hexdigest()


def refused_calls(allow: Sequence[str] = (), policy: SyscallPolicy = DEFAULT_POLICY) -> dict[str, int]:
    """Every call of a group still refused, and the errno it answers when refused.

    Calls refused only for some arguments (``unshare``, ``clone`` with a
    namespace flag, ``personality`` beyond the usual values) answer the
    policy's default errno then.
    """
    chosen = set(normalise_allow(allow, policy))
    answers: dict[str, int] = {}
    for group in policy.groups:
        if group.name in chosen:
            continue
        explicit = {name: rule.errno for rule in group.refused if rule.errno is not None for name in rule.names}
        for call in group.calls:
            answers[call] = explicit.get(call, policy.default_errno)
    return answers


class SyscallPlan(msgspec.Struct, frozen=True):
    """Which syscall policy a container runs under: its name, the groups given back, the profile's digest."""

    name: str
    digest: str
    allowed: tuple[str, ...] = ()

    def profile(self) -> str:
        """The profile JSON to hand the engine; ``BottleError`` if it is not the one this plan names."""
        text = render_profile(self.allowed) if self.name == POLICY_NAME else ""
        if _digest(text) != self.digest:
            raise BottleError(
                f"the launch plan names syscall policy {self.name} {self.digest}, which this bottle cannot render",
                hint="make the plan again with this version of bottle",
            )
        return text


def syscall_plan(allow: Sequence[str] = ()) -> SyscallPlan:
    """The default policy with ``allow`` given back, as a plan names it."""
    allowed = normalise_allow(allow)
    return SyscallPlan(POLICY_NAME, profile_digest(allowed), allowed)
