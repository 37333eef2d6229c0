"""What made a result: the CPU it ran on and the commit of the code, for run directories and reports."""

import os
import platform
import subprocess

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
    """The CPU's model name as ``lscpu`` prints it (from /proc/cpuinfo), or the platform's processor field."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit(repo_dir=REPO_DIR):
    """``git rev-parse --short HEAD``, marked "+uncommitted changes" when ``git status --porcelain`` lists any.

    Markdown files do not count: they cannot change a result, and the sweep tables in ``sweeps/`` are the
    experiments' own output (one sweep's new table would otherwise mark every sweep run after it).
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changes = git("status", "--porcelain", "--", ".", ":(exclude,glob)**/*.md")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} +uncommitted changes" if changes else head
