"""What made a result: the CPU it ran on and the commit of the code, for run directories and reports."""

import os
import platform
import subprocess

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Instruction sets that compute bfloat16 natively (AVX-512 BF16 on Zen 4+ and Cooper Lake+; AMX tiles on Sapphire
# Rapids+): where neither is present, bfloat16 is emulated and slower than float32.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo():
    """The first processor's fields of /proc/cpuinfo (``{"model name": ..., "cpu family": ..., ...}``), or {}."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model():
    """The CPU's model name as ``lscpu`` prints it (from /proc/cpuinfo), or the platform's processor field."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown CPU"


def cpu_description():
    """The CPU as a speed figure needs it named: model name, family and model numbers (a virtual machine's model
    name may be only "AMD EPYC", shared by generations that differ in speed), and its native bfloat16 flags."""
    info = _cpuinfo()
    flags = [flag for flag in BFLOAT16_FLAGS if flag in info.get("flags", "").split()]
    return (f"{cpu_model()}, family {info.get('cpu family', '?')} model {info.get('model', '?')}, "
            f"{'+'.join(flags) if flags else 'no native bfloat16'}")


def native_bfloat16_cpu():
    """Whether the CPU computes bfloat16 natively (``BFLOAT16_FLAGS``)."""
    return bool(set(_cpuinfo().get("flags", "").split()) & set(BFLOAT16_FLAGS))


def git_commit(repo_dir=REPO_DIR):
    """``git rev-parse --short HEAD``, marked "+uncommitted changes" when ``git status --porcelain`` lists any.

    Markdown files and ``sweeps/runs/`` do not count: they cannot change a result, and they are the experiments'
    own output (the tables and the run files behind them; one finished run would otherwise mark every run after
    it).
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changes = git("status", "--porcelain", "--", ".", ":(exclude,glob)**/*.md", ":(exclude)sweeps/runs")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} +uncommitted changes" if changes else head
