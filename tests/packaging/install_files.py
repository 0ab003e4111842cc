#!/usr/bin/env python3
"""The package's file list cannot rot: what meson installs, configured as the
Debian build configures it (debian/rules' dh_auto_configure options on top
of debhelper's meson defaults), is exactly debian/uzswap.install, plus what
debian/rules installs itself; every path the installed units run is in the
package; and `meson install --destdir` of this build tree installs every
file it promises.

Seconds, not minutes: the Debian-configured tree is only set up (meson knows
its install list without compiling), and this tree is already built. The
full `dpkg-buildpackage` is tools/build-deb's job.

usage: install_files.py SRC_DIR BUILD_DIR
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

failures = []


def meson(*args, **kwargs):
    return subprocess.run(["meson", *args], capture_output=True, text=True, **kwargs)


def rules_configure_options(src):
    """The options after `dh_auto_configure --` in debian/rules."""
    rules = open(f"{src}/debian/rules").read()
    m = re.search(r"^\tdh_auto_configure -- (.*)$", rules, re.M)
    if not m:
        failures.append("debian/rules has no `dh_auto_configure -- OPTIONS` line; update this test")
        return []
    return shlex.split(m.group(1))


def rules_extra_installs(src):
    """Files debian/rules installs into debian/tmp itself (install -D ... debian/tmp/PATH)."""
    rules = open(f"{src}/debian/rules").read()
    return {"/" + p for p in re.findall(r"^\tinstall -D .* debian/tmp/(\S+)$", rules, re.M)}


def main():
    src, build = sys.argv[1:]
    if shutil.which("scdoc") is None:
        print("SKIP: scdoc is not installed (tools/install-deps): the Debian build needs it for the man pages")
        return 77
    src, build = os.path.abspath(src), os.path.abspath(build)
    listed = {"/" + line.strip() for line in open(f"{src}/debian/uzswap.install")
              if line.strip() and not line.startswith("#")}
    for p in listed:
        if any(c in p for c in "*?["):
            failures.append(f"debian/uzswap.install: {p} is a pattern; list files one by one")

    with tempfile.TemporaryDirectory(prefix="uzswap-pkg-") as tmp:
        # debhelper's meson build system (Debian/Debhelper/Buildsystem/meson.pm)
        # passes these, then the options from debian/rules.
        options = ["--prefix=/usr", "--sysconfdir=/etc", "--localstatedir=/var",
                   "--libdir=lib/x86_64-linux-gnu", "--buildtype=plain", "--wrap-mode=nodownload"]
        options += rules_configure_options(src)
        setup = meson("setup", *options, f"{tmp}/deb", src)
        if setup.returncode != 0:
            print(setup.stdout[-3000:], setup.stderr[-3000:])
            print("FAIL: meson setup with the Debian build's options failed")
            return 1
        installed = set(json.loads(meson("introspect", "--installed", f"{tmp}/deb").stdout).values())
        installed |= rules_extra_installs(src)
        for p in sorted(installed - listed):
            failures.append(f"{p} is installed but not in debian/uzswap.install (dh_missing would fail the build)")
        for p in sorted(listed - installed):
            failures.append(f"debian/uzswap.install lists {p}, which the build does not install (dh_install would fail)")

        # Every program a packaged unit runs is in the package (or the base system).
        for unit in ("uzswapd.service", "uzswap-prometheus.service"):
            text = open(f"{tmp}/deb/systemd/{unit}").read()
            for line in re.findall(r"^Exec\w+=(.*)$", text, re.M):
                program = line.split()[0].lstrip("-@:+!")
                # Ours must be in the package; a base-system one (/bin/sh) on the machine.
                ours = "uzswap" in program
                if (ours and program not in installed) or (not ours and not os.path.exists(program)):
                    failures.append(f"{unit} runs {program}, which the package does not ship")

        # This (plain) build installs what it promises.
        promised = json.loads(meson("introspect", "--installed", build).stdout)
        destdir = f"{tmp}/root"
        inst = meson("install", "--no-rebuild", "--quiet", "--destdir", destdir, "-C", build)
        if inst.returncode != 0:
            failures.append(f"meson install --destdir failed: {inst.stderr[-2000:]}")
        else:
            for path in sorted(promised.values()):
                if not os.path.isfile(destdir + path):
                    failures.append(f"meson install did not install {path}")
            for path in promised.values():
                if "/libexec/" in path or "/sbin/" in path or "/bin/" in path:
                    if not os.access(destdir + path, os.X_OK):
                        failures.append(f"{path} is installed without execute permission")
        # The same files, wherever the prefix puts them.
        names = sorted(os.path.basename(p) for p in promised.values())
        deb_names = sorted(os.path.basename(p) for p in installed - rules_extra_installs(src))
        if names != deb_names:
            failures.append(f"this build installs {names}, the Debian build {deb_names}")

    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print(f"ok: {len(listed)} files in debian/uzswap.install match the Debian-configured install; "
          f"meson install --destdir put all {len(promised)} files of this build in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
