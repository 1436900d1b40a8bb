"""The Android client's plain-Java core: compiled for Java 8 and tested with JUnit 4.

``android-client/core`` holds every piece of the phone app's protocol and state logic
(API client, engine, outbox, sent ids, pacing) with no Android classes, so it is built
and tested here with the JDK, Debian's ``junit4`` and the Android-compatible ``org.json``
(``libandroid-json-org-java``). Its JUnit suite includes ``ServerIntegrationTest``,
which starts a real ``connecfy serve`` (this environment's console script), pairs with a
real code, claims, reports, restarts the server and removes the device.

With ``CI`` set, a missing JDK or jar is a failure; elsewhere the tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "android-client" / "core"
MAIN = CORE / "src" / "main" / "java"
TEST = CORE / "src" / "test" / "java"
RESOURCES = CORE / "src" / "test" / "resources"  # e2e-vectors.json, on the class path as Gradle puts it
CONNECFY = Path(sys.executable).parent / "connecfy"
JARS = {
    "json": Path("/usr/share/java/json-android.jar"),
    "junit": Path("/usr/share/java/junit4.jar"),
    "hamcrest": Path("/usr/share/java/hamcrest-core.jar"),
}
JUNIT_TIMEOUT = 120

# Java 8 APIs that Android 7 (API 24, the app's minSdk) lacks, and anything Android-only
# or JDK-internal: the core must run unchanged on the phone and on this JVM.
NOT_ON_ANDROID_7 = {
    r"^\s*import\s+android\.": "Android classes belong in the app module",
    r"^\s*import\s+(com\.sun|sun)\.": "JDK-internal classes are not on Android",
    r"\bjava\.nio\.file\b": "java.nio.file arrived in API 26",
    r"\bjava\.time\b": "java.time arrived in API 26",
    r"\bjava\.util\.Base64\b": "java.util.Base64 arrived in API 26",
    r"\bString\.join\(": "String.join arrived in API 26",
    r"\bjava\.lang\.invoke\b": "method handles arrived in API 26",
}


def _toolchain() -> tuple[str, str]:
    javac, java = shutil.which("javac"), shutil.which("java")
    missing = [name for name, path in (("javac", javac), ("java", java)) if not path]
    missing += [str(jar) for jar in JARS.values() if not jar.exists()]
    if missing:
        message = (
            f"missing {', '.join(missing)}: apt-get install -y default-jdk-headless junit4 libandroid-json-org-java"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert javac and java
    return javac, java


def _sources(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.java"))


def _test_classes() -> dict[str, int]:
    """Every JUnit class under src/test with its number of @Test methods."""
    classes = {}
    for path in TEST.rglob("*Test.java"):
        count = len(re.findall(r"^\s*@Test\b", path.read_text(), re.MULTILINE))
        if count:
            classes[".".join(path.relative_to(TEST).with_suffix("").parts)] = count
    return classes


def test_core_uses_nothing_android_7_lacks() -> None:
    offences = []
    for source in _sources(MAIN):
        text = Path(source).read_text()
        for pattern, why in NOT_ON_ANDROID_7.items():
            for match in re.finditer(pattern, text, re.MULTILINE):
                line = text.count("\n", 0, match.start()) + 1
                offences.append(f"{Path(source).relative_to(ROOT)}:{line}: {why}")
    assert not offences, "\n".join(offences)
    assert _sources(MAIN), "no core sources found"


def test_core_compiles_for_java_8_and_its_junit_suite_passes(tmp_path: Path) -> None:
    javac, java = _toolchain()
    assert CONNECFY.exists(), f"no connecfy console script at {CONNECFY}"
    classpath = os.pathsep.join(str(jar) for jar in JARS.values())
    main_out, test_out = tmp_path / "main", tmp_path / "test"

    compiled = subprocess.run(
        [
            javac,
            "--release",
            "8",
            "-Xlint:all",
            "-Werror",
            "-encoding",
            "UTF-8",
            "-d",
            str(main_out),
            "-cp",
            str(JARS["json"]),
            *_sources(MAIN),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    compiled = subprocess.run(
        [
            javac,
            "--release",
            "8",
            "-encoding",
            "UTF-8",
            "-d",
            str(test_out),
            "-cp",
            os.pathsep.join([classpath, str(main_out)]),
            *_sources(TEST),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    classes = _test_classes()
    assert "com.connecfy.core.ServerIntegrationTest" in classes
    work = tmp_path / "it"
    work.mkdir()
    run = subprocess.run(
        [
            java,
            f"-Dconnecfy.bin={CONNECFY}",
            f"-Dconnecfy.work={work}",
            "-cp",
            os.pathsep.join([classpath, str(main_out), str(test_out), str(RESOURCES)]),
            "org.junit.runner.JUnitCore",
            *sorted(classes),
        ],
        capture_output=True,
        text=True,
        timeout=JUNIT_TIMEOUT,
    )
    report = run.stdout + run.stderr
    server_log = work / "server" / "server.log"
    if run.returncode != 0 and server_log.exists():
        report += "\n--- connecfy serve log (tail) ---\n" + server_log.read_text(errors="replace")[-4000:]
    assert run.returncode == 0, report
    ran = re.search(r"^OK \((\d+) tests?\)$", run.stdout, re.MULTILINE)
    assert ran, report
    assert int(ran.group(1)) == sum(classes.values()) > 0, report
