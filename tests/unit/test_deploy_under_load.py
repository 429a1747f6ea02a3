"""benchmarks/deploy_under_load.py: its control run's CPU burn, its options, its ratio."""

import argparse
import resource
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import deploy_under_load as dul  # noqa: E402


def test_the_burn_uses_its_share_of_a_cpu_at_the_lowest_priority():
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-c", dul.BURN.format(duty=0.3, seconds=2)
         + "print(os.getpriority(os.PRIO_PROCESS, 0))"],
        capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert out.stdout.split() == ["19"]
    # 0.3 s of CPU in each second it starts (one or two: the second starts after
    # at least 1 s), however busy the machine; and the interpreter's start.
    assert 0.3 <= cpu <= 0.9, cpu


@pytest.mark.parametrize("text", ["0", "1", "1.5", "-0.2"])
def test_a_duty_outside_0_1_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="between 0 and 1"):
        dul.duty(text)
    assert dul.duty("0.4") == 0.4


def test_the_p99_ratio_is_of_the_period_against_idle():
    report = {"idle": {"p99": 0.02}, "deploy": {"p99": 0.05}}
    assert dul.p99_ratio(report, "deploy") == 2.5
    assert dul.p99_ratio(report, "burn") is None
