"""The phone app's build instructions hold together: the GitHub workflow that builds the
APK (.github/workflows/android.yml, not run by .ci/run: no Android SDK here), the Gradle
files and docs/android.md name the same JDK, Gradle and Android SDK platform."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "android-client"


def _gradle_files() -> tuple[str, str, str]:
    """(the wrapper's Gradle version, compileSdk, targetSdk) as the Gradle files say."""
    wrapper = (APP / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    [gradle] = re.findall(r"gradle-([0-9.]+)-bin\.zip", wrapper)
    build = (APP / "app" / "build.gradle").read_text()
    [compile_sdk] = re.findall(r"compileSdk (\d+)", build)
    [target_sdk] = re.findall(r"targetSdk (\d+)", build)
    return gradle, compile_sdk, target_sdk


def test_the_workflow_builds_with_the_versions_the_gradle_files_and_the_guide_name() -> None:
    gradle, compile_sdk, target_sdk = _gradle_files()
    assert compile_sdk == target_sdk
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "android.yml").read_text())
    [job] = workflow["jobs"].values()
    steps = job["steps"]
    java = [s["with"]["java-version"] for s in steps if s.get("uses", "").startswith("actions/setup-java@")]
    gradles = [
        s["with"]["gradle-version"] for s in steps if s.get("uses", "").startswith("gradle/actions/setup-gradle@")
    ]
    commands = " ".join(s.get("run", "") for s in steps)
    assert java == ["17"] and gradles == [gradle]
    assert f'"platforms;android-{compile_sdk}"' in commands
    assert ":core:test" in commands and ":app:assembleDebug" in commands
    [upload] = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"] == "android-client/app/build/outputs/apk/debug/app-debug.apk"
    guide = (ROOT / "docs" / "android.md").read_text()
    assert f"Gradle {gradle}" in guide and "JDK 17" in guide and f"platform {compile_sdk}" in guide
    assert ".github/workflows/android.yml" in guide
