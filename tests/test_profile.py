"""The SLURM profile: every GPU rule routed to the GPU partition, and its install under a name."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
LAUNCHER = ROOT / ".venv-slurm" / "bin" / "snakemake"  # built by tests/slurm/run.sh


def planned_resources(tmp_path, *overlays: dict) -> dict[str, dict[str, str]]:
    """Each rule's resources in a dry run of the .test grid (with ``overlays`` on its config)."""
    files = []
    for i, overlay in enumerate(overlays):
        files.append(tmp_path / f"overlay{i}.yaml")
        files[-1].write_text(yaml.safe_dump(overlay))
    result = subprocess.run(
        [
            "snakemake",
            "-n",
            "--snakefile",
            str(ROOT / "workflow" / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(ROOT / ".test" / "config.yaml"),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resources, rule = {}, None
    for line in result.stdout.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):", line):
            rule = match.group(1)
        elif line.strip().startswith("resources:") and rule:
            resources[rule] = dict(
                item.split("=", 1) for item in line.split(":", 1)[1].split(", ") if "=" in item
            )
    return resources


def test_every_rule_that_asks_for_a_gpu_is_routed_to_the_gpu_partition_and_no_other(tmp_path):
    profile = yaml.safe_load(PROFILE.read_text())
    routed = {rule for rule, res in profile["set-resources"].items() if "gpu_model" in res}
    gpu_partition = {profile["set-resources"][rule]["slurm_partition"] for rule in routed}
    assert gpu_partition != {profile["default-resources"]["slurm_partition"]}
    # Cellpose (the paper's backend) puts the segmentation rules on the GPU as well.
    planned = planned_resources(tmp_path, {"segmentation": {"backend": "cellpose"}})
    asking = {rule for rule, res in planned.items() if res.get("gpu") == "1"}
    assert {"train", "infer", "infer_screen", "segment_real", "segment_screen"} <= asking
    assert asking == routed, (
        f"GPU rules not routed: {asking - routed}; routed CPU rules: {routed - asking}"
    )
    assert (
        planned["screen_reference"].get("gpu", "0") == "0"
    )  # it measures masks segment_screen wrote


def install(home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"} | {"HOME": str(home)}
    return subprocess.run(
        ["bash", str(ROOT / "profiles" / "install.sh")], env=env, capture_output=True, text=True
    )


@pytest.mark.slow  # three Snakemake plans: 20 s
def test_the_installed_profile_is_found_by_name_and_a_second_install_refuses(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"} | {"HOME": str(home)}
    launcher = str(LAUNCHER) if LAUNCHER.exists() else shutil.which("snakemake")
    command = [
        launcher,
        "--profile",
        "slurm",
        "-n",
        "--snakefile",
        str(ROOT / "workflow" / "Snakefile"),
        "--configfile",
        str(ROOT / ".test" / "config.yaml"),
        "--directory",
        str(tmp_path / "w"),
    ]

    def plan():
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    before = plan()
    assert before.returncode != 0 and "no profile.yaml (or config.yaml) found" in before.stderr

    first = install(home)
    assert first.returncode == 0, first.stderr
    installed = home / ".config" / "snakemake" / "slurm" / "config.yaml"
    assert installed.read_text() == PROFILE.read_text()
    after = plan()
    if LAUNCHER.exists():  # the launcher environment, with the SLURM plugin: the plan itself
        assert after.returncode == 0 and "This was a dry-run" in after.stdout, after.stderr[-3000:]
    else:  # without the plugin the profile is found and its `executor: slurm` is what fails
        assert "invalid choice: 'slurm'" in after.stderr, after.stderr[-3000:]

    installed.write_text("# my edits\n" + installed.read_text())
    second = install(home)
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
    assert "exists" in second.stderr and installed.read_text().startswith("# my edits")
